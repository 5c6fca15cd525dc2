//! The node in a cluster (`../shared/CLUSTER.md` §3.3–3.4): its `ractor_cluster` NodeServer, the
//! sessions to the other members of its file, and the [`Peers`] the router forwards through.
//!
//! ractor_cluster authenticates peers (the cookie) and carries messages, but it does not know who the
//! members are, does not reconnect, and has no ping timeout. The membership actor here does all three:
//! - it dials each member of the file it should dial (the lower name dials, so a pair has one link),
//!   with backoff from 200 ms to 5 s and jitter, and drops sessions of nodes the file does not list;
//! - it pings each connected member's gateway every `ping_interval` with that as the timeout: a peer
//!   that misses `ping_misses` in a row (a silent partition, a paused process) loses its session and is
//!   redialled; a peer that answers another [`WIRE_VERSION`] is disconnected;
//! - a peer is usable (in [`Peers`]) from its first good ping until its session ends, so a crashed
//!   peer (its TCP connection reset) is dropped at once and calls in flight to it fail fast.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use ractor_cluster::node::{NodeConnectionMode, NodeServerSessionInformation};
use ractor_cluster::{NodeServer, NodeServerMessage, RactorMessage};
use rand::Rng as _;

use super::Ownership;
use super::gateway::{self, GatewayMsg, PingInfo, WIRE_VERSION};
use super::transport::{self, ClusterTls};
use super::view::MemberState;
use super::watch::Membership;
use crate::config::ClusterConfig;
use crate::domain::Wire;

const DIAL_BACKOFF_MIN: Duration = Duration::from_millis(200);
const DIAL_BACKOFF_MAX: Duration = Duration::from_secs(5);
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// A member this node can reach now.
#[derive(Clone)]
pub struct Peer {
    pub gateway: ActorRef<GatewayMsg>,
    /// What it said in its last ping.
    pub info: PingInfo,
    /// Since when it has been reachable without a break.
    pub since: Instant,
}

/// The members this node can reach, by name; empty on a standalone node. Cheap to clone.
#[derive(Clone, Default)]
pub struct Peers {
    inner: Arc<RwLock<HashMap<String, Peer>>>,
    clustered: bool,
}

impl Peers {
    /// The peers of a clustered node (filled by [`start`]).
    pub fn clustered() -> Self {
        Self {
            inner: Arc::default(),
            clustered: true,
        }
    }

    /// Whether this node is joined to a cluster (else requests are never forwarded).
    pub fn is_clustered(&self) -> bool {
        self.clustered
    }

    /// The gateway of `node`, if it is reachable now.
    pub fn gateway(&self, node: &str) -> Option<ActorRef<GatewayMsg>> {
        self.read().get(node).map(|p| p.gateway.clone())
    }

    /// The gateways of every reachable peer.
    pub fn gateways(&self) -> Vec<ActorRef<GatewayMsg>> {
        self.read().values().map(|p| p.gateway.clone()).collect()
    }

    /// The names of the peers reachable without a break for at least `grace`, sorted: those that may
    /// receive organizations by hand-off (a peer that flaps gets none).
    pub fn settled(&self, grace: Duration) -> Vec<String> {
        let mut names: Vec<String> = self
            .read()
            .iter()
            .filter(|(_, p)| p.since.elapsed() >= grace)
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }

    /// The names of the reachable peers, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read().keys().cloned().collect();
        names.sort();
        names
    }

    fn since(&self, node: &str) -> Option<Instant> {
        self.read().get(node).map(|p| p.since)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Peer>> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, name: &str, peer: Option<Peer>) {
        let mut all = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        match peer {
            Some(p) => {
                all.insert(name.to_owned(), p);
            }
            None => {
                all.remove(name);
            }
        }
    }
}

/// How the node finds and checks its peers.
#[derive(Debug, Clone)]
pub struct Liveness {
    pub ping_interval: Duration,
    pub ping_misses: u32,
    /// Where the listener binds instead of the node's address in the file.
    pub listen: Option<SocketAddr>,
    /// The wire version this node announces and expects.
    pub wire_version: u32,
}

impl From<&ClusterConfig> for Liveness {
    fn from(c: &ClusterConfig) -> Self {
        Self {
            ping_interval: c.ping_interval,
            ping_misses: c.ping_misses,
            listen: c.listen,
            wire_version: c.wire_version.unwrap_or(WIRE_VERSION),
        }
    }
}

/// Starts the NodeServer on this node's cluster address and the membership actor that connects it to
/// the file's other members. `peers` fills as they become reachable.
pub async fn start(
    membership: Membership,
    ownership: Ownership,
    cookie: &str,
    peers: Peers,
    liveness: Liveness,
    tls: Option<ClusterTls>,
) -> Result<ActorRef<MembershipMsg>, String> {
    let me = membership.entry();
    transport::check(&membership.file(), tls.is_some())?;
    let addr = match liveness.listen {
        Some(addr) => addr,
        None => resolve(&me.address).await?,
    };
    let host = me
        .address
        .rsplit_once(':')
        .map_or("localhost", |(h, _)| h)
        .to_owned();
    let (server, listener) = match &tls {
        None => {
            // The NodeServer's listener reports a bind failure only in its log: try the address first.
            drop(
                std::net::TcpListener::bind(addr)
                    .map_err(|e| format!("cannot listen on the cluster address {addr}: {e}"))?,
            );
            let server = NodeServer::new(
                addr.port(),
                cookie.to_owned(),
                me.name.clone(),
                host,
                None,
                Some(NodeConnectionMode::Isolated),
            )
            .with_listen_addr(addr.ip());
            (server, None)
        }
        Some(tls) => {
            // Our own accept loop (handshakes bounded in time) takes the address; the NodeServer's
            // listener, TLS-only too, sits on an unused loopback port.
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on the cluster address {addr}: {e}"))?;
            let server = NodeServer::new(
                0,
                cookie.to_owned(),
                me.name.clone(),
                host,
                Some(ractor_cluster::IncomingEncryptionMode::Tls(tls.acceptor.clone())),
                Some(NodeConnectionMode::Isolated),
            )
            .with_listen_addr(std::net::IpAddr::from([127, 0, 0, 1]));
            (server, Some(listener))
        }
    };
    let (node_server, _) = Actor::spawn(Some(format!("{}/node", me.name)), server, ())
        .await
        .map_err(|e| format!("cannot start the cluster listener: {e}"))?;
    if let (Some(listener), Some(tls)) = (listener, &tls) {
        transport::spawn_acceptor(listener, tls.acceptor.clone(), node_server.clone());
    }
    let (actor, _) = Actor::spawn(
        Some(format!("{}/membership", me.name)),
        MembershipActor,
        MembershipArgs {
            membership,
            ownership,
            node_server: node_server.clone(),
            peers,
            liveness,
            connector: tls.map(|t| t.connector),
        },
    )
    .await
    .map_err(|e| format!("cannot start the membership actor: {e}"))?;
    node_server
        .cast(NodeServerMessage::SubscribeToEvents {
            id: "membership".to_owned(),
            subscription: Box::new(SessionEvents(actor.clone())),
        })
        .map_err(|e| format!("cannot subscribe to the cluster's sessions: {e}"))?;
    tracing::info!(node = %me.name, %addr, "cluster listener up");
    Ok(actor)
}

async fn resolve(address: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = address.parse::<SocketAddr>() {
        return Ok(a);
    }
    tokio::net::lookup_host(address)
        .await
        .map_err(|e| format!("cannot resolve the cluster address {address}: {e}"))?
        .next()
        .ok_or_else(|| format!("the cluster address {address} resolves to nothing"))
}

/// The membership actor's messages (node-local).
#[derive(RactorMessage)]
pub enum MembershipMsg {
    /// Dial and ping what is due.
    Tick,
    Authenticated(NodeServerSessionInformation),
    Ready(NodeServerSessionInformation),
    Disconnected(NodeServerSessionInformation),
    DialFailed(String),
    Pinged {
        peer: String,
        session: ractor::ActorId,
        result: Result<Peer, String>,
    },
}

/// Forwards the NodeServer's session events to the membership actor (they are synchronous callbacks:
/// they only cast).
struct SessionEvents(ActorRef<MembershipMsg>);

impl ractor_cluster::NodeEventSubscription for SessionEvents {
    fn node_session_opened(&self, _ses: NodeServerSessionInformation) {}

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.cast(MembershipMsg::Disconnected(ses));
    }

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.cast(MembershipMsg::Authenticated(ses));
    }

    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.cast(MembershipMsg::Ready(ses));
    }
}

struct MembershipActor;

struct MembershipArgs {
    membership: Membership,
    ownership: Ownership,
    node_server: ActorRef<NodeServerMessage>,
    peers: Peers,
    liveness: Liveness,
    /// Dials peers over mutual TLS when set.
    connector: Option<tokio_rustls::TlsConnector>,
}

struct MembershipState {
    args: MembershipArgs,
    links: BTreeMap<String, Link>,
    /// Nodes removed from the file seen running as `leaving`, by name, with their addresses.
    draining: BTreeMap<String, String>,
}

/// This node's link to one member of its file.
#[derive(Default)]
struct Link {
    session: Option<NodeServerSessionInformation>,
    dialing: bool,
    next_dial: Option<Instant>,
    backoff: Duration,
    pinging: bool,
    next_ping: Option<Instant>,
    misses: u32,
}

/// The peer's node name, from the `name@host` a session carries.
fn peer_name(ses: &NodeServerSessionInformation) -> Option<String> {
    ses.peer_name
        .as_ref()
        .map(|n| n.name.split('@').next().unwrap_or_default().to_owned())
}

impl Actor for MembershipActor {
    type Msg = MembershipMsg;
    type State = MembershipState;
    type Arguments = MembershipArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<MembershipMsg>,
        args: MembershipArgs,
    ) -> Result<MembershipState, ActorProcessingErr> {
        let every = (args.liveness.ping_interval / 4).max(Duration::from_millis(50));
        myself.send_interval(every, || MembershipMsg::Tick);
        Ok(MembershipState {
            args,
            links: BTreeMap::new(),
            draining: BTreeMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<MembershipMsg>,
        msg: MembershipMsg,
        state: &mut MembershipState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MembershipMsg::Tick => tick(&myself, state),
            MembershipMsg::Authenticated(ses) => {
                let name = peer_name(&ses).unwrap_or_default();
                if !wanted(&state.args, &mut state.draining).accepts(&name) {
                    tracing::warn!(peer = %name, addr = %ses.peer_addr, "refused a cluster session: the node is not in the cluster file");
                    ses.actor.stop(Some("not a member".to_owned()));
                }
            }
            MembershipMsg::Ready(ses) => {
                let Some(name) = peer_name(&ses) else {
                    return Ok(());
                };
                if !wanted(&state.args, &mut state.draining).accepts(&name) {
                    tracing::warn!(peer = %name, addr = %ses.peer_addr, "refused a cluster session: the node is not in the cluster file");
                    ses.actor.stop(Some("not a member".to_owned()));
                    return Ok(());
                }
                tracing::info!(peer = %name, addr = %ses.peer_addr, "cluster session ready");
                let link = state.links.entry(name).or_default();
                link.session = Some(ses);
                link.dialing = false;
                link.backoff = DIAL_BACKOFF_MIN;
                link.misses = 0;
                link.next_ping = Some(Instant::now());
            }
            MembershipMsg::Disconnected(ses) => {
                let Some(name) = peer_name(&ses) else {
                    return Ok(());
                };
                let Some(link) = state.links.get_mut(&name) else {
                    return Ok(());
                };
                let current = link
                    .session
                    .as_ref()
                    .is_some_and(|s| s.actor.get_id() == ses.actor.get_id());
                if current {
                    tracing::warn!(peer = %name, "cluster session ended");
                    link.session = None;
                    link.pinging = false;
                    link.next_dial = Some(Instant::now() + jitter(link.backoff));
                    state.args.peers.set(&name, None);
                }
            }
            MembershipMsg::DialFailed(name) => {
                if let Some(link) = state.links.get_mut(&name) {
                    link.dialing = false;
                    link.backoff = (link.backoff * 2).clamp(DIAL_BACKOFF_MIN, DIAL_BACKOFF_MAX);
                    link.next_dial = Some(Instant::now() + jitter(link.backoff));
                }
            }
            MembershipMsg::Pinged {
                peer,
                session,
                result,
            } => pinged(state, &peer, session, result),
        }
        Ok(())
    }
}

fn jitter(d: Duration) -> Duration {
    let ms = d.as_millis() as u64;
    Duration::from_millis(ms / 2 + rand::rng().random_range(0..=ms / 2 + 1))
}

/// The nodes this one links to, with their cluster addresses: the other members of its file, and
/// nodes removed from it that still run. A removed node that runs as `leaving` (it hands its
/// organizations off over these links) is dialled and accepted, and stays `draining` until its
/// heartbeat shows it stopped, so a view refreshed mid-change never cuts a hand-off in half; one that
/// still runs as `up` (its own file not yet re-read) keeps an existing session but gets no new one. A
/// node that stopped is refused like any stranger.
struct Wanted {
    /// Dialled, accepted and kept.
    links: Vec<(String, String)>,
    /// Kept if connected, never dialled or accepted.
    kept: Vec<String>,
}

fn wanted(args: &MembershipArgs, draining: &mut BTreeMap<String, String>) -> Wanted {
    let me = args.membership.me();
    let mut links: Vec<(String, String)> = args
        .membership
        .file()
        .nodes
        .iter()
        .filter(|n| n.name != me)
        .map(|n| (n.name.clone(), n.address.clone()))
        .collect();
    let view = args.ownership.view();
    let mut kept = Vec::new();
    for m in view.members.iter().filter(|m| !m.configured && m.name != me) {
        match m.state {
            MemberState::Leaving => {
                draining.insert(m.name.clone(), m.address.clone());
            }
            MemberState::Up => kept.push(m.name.clone()),
            MemberState::Down | MemberState::Unknown => {
                draining.remove(&m.name);
            }
        }
    }
    draining.retain(|name, _| view.members.iter().any(|m| m.name == *name));
    for (name, address) in draining.iter() {
        if !links.iter().any(|(n, _)| n == name) {
            links.push((name.clone(), address.clone()));
        }
    }
    Wanted { links, kept }
}

impl Wanted {
    fn accepts(&self, name: &str) -> bool {
        self.links.iter().any(|(n, _)| n == name)
    }

    fn keeps(&self, name: &str) -> bool {
        self.accepts(name) || self.kept.iter().any(|n| n == name)
    }
}

fn tick(myself: &ActorRef<MembershipMsg>, state: &mut MembershipState) {
    let me = state.args.membership.me().to_owned();
    let wanted = wanted(&state.args, &mut state.draining);
    // Members removed from the file (and not draining) lose their session and are not dialled again.
    let removed: Vec<String> = state.links.keys().filter(|n| !wanted.keeps(n)).cloned().collect();
    for name in removed {
        if let Some(link) = state.links.remove(&name)
            && let Some(ses) = link.session
        {
            tracing::info!(peer = %name, "member removed from the cluster file (and not draining): its session ends");
            ses.actor.stop(Some("not a member".to_owned()));
        }
        state.args.peers.set(&name, None);
    }
    let now = Instant::now();
    for (name, address) in &wanted.links {
        let link = state.links.entry(name.clone()).or_insert_with(|| Link {
            backoff: DIAL_BACKOFF_MIN,
            ..Link::default()
        });
        match &link.session {
            None => {
                // The lower name dials, so a pair of nodes keeps one link.
                let due = link.next_dial.is_none_or(|t| now >= t);
                if me < *name && !link.dialing && due {
                    link.dialing = true;
                    link.next_dial = Some(now + DIAL_TIMEOUT + jitter(link.backoff));
                    let (server, address, name, back) = (
                        state.args.node_server.clone(),
                        address.clone(),
                        name.clone(),
                        myself.clone(),
                    );
                    let connector = state.args.connector.clone();
                    tokio::spawn(async move {
                        let dial = async {
                            match connector {
                                Some(c) => transport::dial(&server, &address, &name, c).await,
                                None => ractor_cluster::client_connect(&server, address.as_str())
                                    .await
                                    .map_err(|e| format!("{e:?}")),
                            }
                        };
                        match tokio::time::timeout(DIAL_TIMEOUT, dial).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => {
                                tracing::debug!(peer = %name, error = %e, "dial failed");
                                let _ = back.cast(MembershipMsg::DialFailed(name));
                            }
                            Err(_) => {
                                tracing::debug!(peer = %name, "dial timed out");
                                let _ = back.cast(MembershipMsg::DialFailed(name));
                            }
                        }
                    });
                } else if link.dialing && link.next_dial.is_some_and(|t| now >= t) {
                    // Connected but never ready (a stalled handshake): dial again.
                    link.dialing = false;
                }
            }
            Some(ses) => {
                if !link.pinging && link.next_ping.is_none_or(|t| now >= t) {
                    link.pinging = true;
                    link.next_ping = Some(now + state.args.liveness.ping_interval);
                    spawn_ping(myself, &state.args, name.clone(), ses.actor.get_id());
                }
            }
        }
    }
}

fn spawn_ping(
    myself: &ActorRef<MembershipMsg>,
    args: &MembershipArgs,
    peer: String,
    session: ractor::ActorId,
) {
    let back = myself.clone();
    let timeout = args.liveness.ping_interval;
    let mine = PingInfo {
        wire_version: args.liveness.wire_version,
        node: args.membership.me().to_owned(),
        incarnation: args.ownership.node().incarnation,
        config_hash: args.membership.hash(),
    };
    tokio::spawn(async move {
        let result = match remote_gateway(&peer) {
            None => Err("its gateway is not known yet".to_owned()),
            Some(gateway) => match gateway
                .call(|reply| GatewayMsg::Ping(Wire::new(mine), reply), Some(timeout))
                .await
            {
                Ok(ractor::rpc::CallResult::Success(Wire(Ok(info)))) => Ok(Peer {
                    gateway,
                    info,
                    since: Instant::now(),
                }),
                Ok(ractor::rpc::CallResult::Success(Wire(Err(e)))) => Err(format!("undecodable ping: {e}")),
                Ok(ractor::rpc::CallResult::Timeout) => Err("no answer in time".to_owned()),
                Ok(ractor::rpc::CallResult::SenderError) => Err("the session ended".to_owned()),
                Err(e) => Err(format!("cannot send: {e}")),
            },
        };
        let _ = back.cast(MembershipMsg::Pinged {
            peer,
            session,
            result,
        });
    });
}

/// The remote gateway of `node`, from the process group (remote actors are not in the name registry).
fn remote_gateway(node: &str) -> Option<ActorRef<GatewayMsg>> {
    let name = gateway::gateway_name(node);
    ractor::pg::get_scoped_members(&gateway::SCOPE.to_owned(), &gateway::GROUP.to_owned())
        .into_iter()
        .find(|cell: &ActorCell| {
            !cell.get_id().is_local() && cell.get_name().as_deref() == Some(name.as_str())
        })
        .map(ActorRef::from)
}

fn pinged(state: &mut MembershipState, peer: &str, session: ractor::ActorId, result: Result<Peer, String>) {
    let Some(link) = state.links.get_mut(peer) else {
        return;
    };
    link.pinging = false;
    let Some(ses) = link.session.clone().filter(|s| s.actor.get_id() == session) else {
        return;
    };
    match result {
        Ok(p) if p.info.wire_version != state.args.liveness.wire_version => {
            tracing::error!(
                peer,
                theirs = p.info.wire_version,
                ours = state.args.liveness.wire_version,
                "peer speaks another wire version: disconnected"
            );
            ses.actor.stop(Some("incompatible wire version".to_owned()));
            link.session = None;
            link.backoff = DIAL_BACKOFF_MAX;
            link.next_dial = Some(Instant::now() + DIAL_BACKOFF_MAX);
            state.args.peers.set(peer, None);
        }
        Ok(mut p) => {
            match state.args.peers.since(peer) {
                Some(since) => p.since = since,
                None => tracing::info!(peer, incarnation = p.info.incarnation, "peer reachable"),
            }
            link.misses = 0;
            state.args.peers.set(peer, Some(p));
        }
        Err(why) => {
            link.misses += 1;
            tracing::debug!(peer, misses = link.misses, why, "ping missed");
            if link.misses >= state.args.liveness.ping_misses {
                tracing::warn!(
                    peer,
                    misses = link.misses,
                    why,
                    "peer missed its pings: its session is dropped and redialled"
                );
                ses.actor.stop(Some("ping timeout".to_owned()));
                link.session = None;
                link.misses = 0;
                link.next_dial = Some(Instant::now() + jitter(link.backoff));
                state.args.peers.set(peer, None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_the_backoff() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(400));
            assert!(
                j >= Duration::from_millis(200) && j <= Duration::from_millis(401),
                "{j:?}"
            );
        }
    }
}
