//! The one way to reach an organization's actor (`../shared/CLUSTER.md` §3.6). [`Router::place`] says
//! where an organization is served:
//! - here, when this node runs its actor, or takes the organization's lease now and starts its actor
//!   under the organization supervisor;
//! - at its live owner, reached through that node's gateway (at most one hop: the receiver serves only
//!   as the owner, else it answers who the owner is and the sender re-routes once);
//! - for an organization nobody owns, at its rendezvous home among this node (if it takes
//!   organizations) and the reachable members with the `actors` role; the home takes it on arrival.
//!
//! Nobody takes an organization from a live owner. While the owner is unreachable (crashed, or cut off)
//! a request waits, at most `failover_wait`, for its lease to expire and a live node to take over; then
//! it is answered 503 `node_unavailable`. A standalone node never forwards: an organization a live
//! other node owns is answered 503 `owned_elsewhere`.
//! HTTP ingest, batches, session replay, score delivery and customer changes all go through here.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};
use sqlx::PgPool;

use super::fanout::Fanout;
use super::org::{OrgArgs, OrgMsg};
use super::org_supervisor::{OrgHandle, OrgSupervisorMsg, SupervisorSlot};
use super::scorer::Scorer;
use crate::cluster::gateway::{Failure, Forwarded, GatewayMsg, Routed};
use crate::cluster::node::Peers;
use crate::cluster::placement::{self, Member, ShardKey};
use crate::cluster::{Claim, Ownership};
use crate::config::{ClusterConfig, IngestConfig};
use crate::domain::enrichment::OrgContext;
use crate::domain::event::{EventsAfter, HandOff};
use crate::domain::interaction::ScoredInteraction;
use crate::domain::{CustomerId, OrganizationId, Wire};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::store::cache::Cache;
use crate::store::group_commit::GroupCommit;
use crate::store::interactions;

/// Routes to the organization actors of this node; cheap to clone.
#[derive(Clone)]
pub struct Router {
    orgs: SupervisorSlot,
    pool: PgPool,
    config: IngestConfig,
    scorer: Scorer,
    cache: Cache,
    metrics: Metrics,
    fault_injection: bool,
    ownership: Ownership,
    fanout: Fanout,
    peers: Peers,
    cluster: ClusterConfig,
    /// Where organizations this node does not own were last found (a cache of `org_ownership`).
    directory: Arc<RwLock<HashMap<OrganizationId, String>>>,
    /// Organizations being handed off from this node.
    moving: Arc<Mutex<HashSet<OrganizationId>>>,
    /// Tells the scoring sweep that this node took an organization over.
    takeovers: Option<tokio::sync::mpsc::Sender<()>>,
    commits: GroupCommit,
}

/// Where an organization is served.
pub enum Place {
    /// Here, by this actor.
    Local(OrgHandle),
    /// At `node`, through its gateway.
    Remote {
        node: String,
        gateway: ActorRef<GatewayMsg>,
    },
}

/// A forwarded request that got no answer: its node crashed or is cut off, so whether it was served is
/// unknown.
#[derive(Debug)]
pub struct Lost {
    pub node: String,
    pub why: String,
}

impl Lost {
    /// The client's answer: 503 `node_unavailable` (a retry is safe with an idempotency key only).
    pub fn into_error(self) -> Error {
        Error::NodeUnavailable(format!(
            "the node that owns this organization ({}) stopped answering ({}); the request may or may not have been stored: retry it with its idempotency key",
            self.node, self.why
        ))
    }
}

/// See [`Router::retry`].
pub struct Retry {
    deadline: tokio::time::Instant,
    attempts: u32,
}

impl Retry {
    /// Waits before the next attempt; false once the time is up (at least two attempts are made).
    pub async fn again(&mut self) -> bool {
        self.attempts += 1;
        if self.attempts == 1 {
            return true;
        }
        if self.attempts > 2 && tokio::time::Instant::now() >= self.deadline {
            return false;
        }
        tokio::time::sleep(FAILOVER_POLL).await;
        true
    }
}

/// How often a request waiting for an unreachable owner's organization checks again.
const FAILOVER_POLL: Duration = Duration::from_millis(250);

/// How often a request for an organization being handed off checks again.
const MOVING_POLL: Duration = Duration::from_millis(20);

/// What [`Router::claim`] found.
enum Claimed {
    /// This node's actor of the organization (started if it was not running).
    Mine(OrgHandle),
    /// A live other node owns it.
    HeldBy(String),
    /// This node takes no organizations.
    Refused,
    /// The organization is changing hands: an old owner's write is still open.
    Busy,
}

/// The answer while an organization changes hands (503, retried by the caller).
const CHANGING_HANDS: Error = Error::Overloaded("the organization is changing owner; retry shortly");

/// How long an organization actor may take to drain for a hand-off.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything [`Router::new`] needs.
pub struct RouterParts {
    pub orgs: SupervisorSlot,
    pub pool: PgPool,
    pub config: IngestConfig,
    pub scorer: Scorer,
    pub cache: Cache,
    pub metrics: Metrics,
    pub fault_injection: bool,
    /// This node's leases: organization actors start only on organizations it owns.
    pub ownership: Ownership,
    /// Where the organization actors publish their events for this node's sessions.
    pub fanout: Fanout,
    /// The members this node can forward to (none when standalone).
    pub peers: Peers,
    pub cluster: ClusterConfig,
    /// Where takeovers are announced to the scoring sweep (when the node scores).
    pub takeovers: Option<tokio::sync::mpsc::Sender<()>>,
    /// The node's group committer of single interactions.
    pub commits: GroupCommit,
}

impl Router {
    /// Builds the router.
    pub fn new(p: RouterParts) -> Self {
        Self {
            orgs: p.orgs,
            pool: p.pool,
            config: p.config,
            scorer: p.scorer,
            cache: p.cache,
            metrics: p.metrics,
            fault_injection: p.fault_injection,
            ownership: p.ownership,
            fanout: p.fanout,
            peers: p.peers,
            cluster: p.cluster,
            directory: Arc::default(),
            moving: Arc::default(),
            takeovers: p.takeovers,
            commits: p.commits,
        }
    }

    /// Where the organization is served now (see the module docs). `forwarded` requests (from another
    /// node) are served only here, as the owner: anything else is [`Error::OwnedElsewhere`].
    pub async fn place(&self, org: OrganizationId, forwarded: bool) -> Result<Place, Error> {
        // A node whose heartbeat could not be renewed stops acting as an owner by itself; it still
        // forwards (see `fenced_place`).
        if !self.ownership.valid() {
            if forwarded || !self.peers.is_clustered() {
                return Err(Error::OwnedElsewhere);
            }
            // Waits (bounded) for a member to forward to, or for the heartbeat to be renewed.
            let deadline = tokio::time::Instant::now() + self.cluster.failover_wait;
            while !self.ownership.valid() {
                if let Some(place) = self.fenced_place(org) {
                    return Ok(place);
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(Error::NodeUnavailable(
                        "this node cannot reach PostgreSQL nor a member that can; retry shortly".to_owned(),
                    ));
                }
                tokio::time::sleep(FAILOVER_POLL).await;
            }
        }
        self.settled(org).await;
        if let Some(handle) = self.orgs.registry.get(org) {
            return Ok(Place::Local(handle));
        }
        if forwarded || !self.peers.is_clustered() {
            return self.route(org).await.map(Place::Local);
        }
        if let Some(owner) = self.known_owner(org)
            && let Some(gateway) = self.peers.gateway(&owner)
        {
            return Ok(Place::Remote { node: owner, gateway });
        }
        let deadline = tokio::time::Instant::now() + self.cluster.failover_wait;
        loop {
            let me = self.ownership.node().name.clone();
            let target = match self.ownership.live_owner(org).await? {
                Some(owner) => owner,
                None => self.home(org).unwrap_or_else(|| me.clone()),
            };
            if target == me {
                match self.claim(org).await? {
                    Claimed::Mine(handle) => return Ok(Place::Local(handle)),
                    Claimed::HeldBy(owner) if owner != me => {
                        if let Some(gateway) = self.peers.gateway(&owner) {
                            self.remember(org, &owner);
                            return Ok(Place::Remote { node: owner, gateway });
                        }
                    }
                    // Held by an unreachable node, changing hands, or not for this node: wait.
                    Claimed::HeldBy(_) | Claimed::Busy | Claimed::Refused => {}
                }
            } else if let Some(gateway) = self.peers.gateway(&target) {
                self.remember(org, &target);
                return Ok(Place::Remote {
                    node: target,
                    gateway,
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::NodeUnavailable(format!(
                    "the node that serves this organization ({target}) is unreachable and its lease has not expired yet; retry shortly"
                )));
            }
            tokio::time::sleep(FAILOVER_POLL).await;
        }
    }

    /// Where a node that cannot renew its heartbeat sends a request: to the owner it knows, or else (PostgreSQL
    /// says who owns it, and it cannot be read from here) to the organization's home among the other
    /// reachable members, which serves it, takes it over once this node's lease expired, or names the owner.
    fn fenced_place(&self, org: OrganizationId) -> Option<Place> {
        let reach = |node: String| {
            let gateway = self.peers.gateway(&node)?;
            Some(Place::Remote { node, gateway })
        };
        self.known_owner(org)
            .and_then(reach)
            .or_else(|| reach(self.home_among(org, &self.peers.names(), false)?))
    }

    /// The rendezvous home of an organization nobody owns, among this node (when it takes
    /// organizations) and the reachable members with the `actors` role.
    fn home(&self, org: OrganizationId) -> Option<String> {
        self.home_among(org, &self.peers.names(), true)
    }

    /// Where the organization should live: its rendezvous home among this node (when it takes
    /// organizations) and the members with the `actors` role reachable for at least `grace`.
    pub fn target(&self, org: OrganizationId, grace: Duration) -> Option<String> {
        self.home_among(org, &self.peers.settled(grace), true)
    }

    /// The organizations whose actors run here.
    pub fn local_orgs(&self) -> Vec<OrganizationId> {
        self.orgs.registry.ids()
    }

    /// Candidates are this node (if it takes organizations) and the reachable members whose heartbeat
    /// is fresh (a member cut from PostgreSQL is reachable but fenced: it could not take anything);
    /// this node only when `with_me`.
    fn home_among(&self, org: OrganizationId, reachable: &[String], with_me: bool) -> Option<String> {
        let file = self.ownership.membership().file();
        let me = self.ownership.node().name.as_str();
        let view = self.ownership.view();
        let up = |name: &str| {
            view.members
                .iter()
                .any(|m| m.name == name && m.state == crate::cluster::view::MemberState::Up)
        };
        let members: Vec<Member> = file
            .nodes
            .iter()
            .filter(|n| {
                if n.name == me {
                    with_me && self.ownership.takes_organizations()
                } else {
                    reachable.contains(&n.name) && up(&n.name)
                }
            })
            .map(|n| Member {
                name: n.name.clone(),
                weight: n.weight,
                actors: n.has(crate::cluster::file::Role::Actors),
            })
            .collect();
        placement::home(ShardKey::org(org), &members).map(str::to_owned)
    }

    /// Who owns the organization as far as this node knows (for a peer that asked the wrong node).
    pub fn owner_hint(&self, org: OrganizationId) -> Option<String> {
        self.known_owner(org)
    }

    fn known_owner(&self, org: OrganizationId) -> Option<String> {
        self.directory
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&org)
            .cloned()
    }

    /// Notes who owns the organization (learnt from PostgreSQL, or named by a peer asked wrongly).
    pub fn remember(&self, org: OrganizationId, owner: &str) {
        self.directory
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(org, owner.to_owned());
    }

    /// Forgets where the organization was served (a forward failed or was answered "not the owner").
    pub fn forget(&self, org: OrganizationId) {
        self.directory
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&org);
    }

    /// Sends a request to `gateway` and waits for the owner's answer, at most `forward_timeout`.
    /// A wrong guess ([`Failure::NotOwner`]) forgets the directory entry; so does a lost call.
    pub async fn forward<T, F>(
        &self,
        org: OrganizationId,
        node: &str,
        gateway: &ActorRef<GatewayMsg>,
        make: F,
    ) -> Result<Routed<T>, Lost>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
        F: FnOnce(RpcReplyPort<Wire<Routed<T>>>) -> GatewayMsg,
    {
        let lost = |why: String| {
            self.forget(org);
            Lost {
                node: node.to_owned(),
                why,
            }
        };
        match gateway.call(make, Some(self.cluster.forward_timeout)).await {
            Ok(CallResult::Success(Wire(Ok(routed)))) => {
                if matches!(routed, Err(Failure::NotOwner { .. })) {
                    self.forget(org);
                }
                Ok(routed)
            }
            Ok(CallResult::Success(Wire(Err(e)))) => Err(lost(format!("undecodable answer: {e}"))),
            Ok(CallResult::Timeout) => Err(lost("no answer in time".to_owned())),
            Ok(CallResult::SenderError) => Err(lost("its session ended".to_owned())),
            Err(e) => Err(lost(format!("cannot send: {e}"))),
        }
    }

    /// Wraps a body for the owner.
    pub fn forwarded<T>(&self, org: OrganizationId, body: T) -> Wire<Forwarded<T>> {
        Wire::new(Forwarded {
            org,
            from: self.ownership.node().name.clone(),
            request_id: crate::domain::trace::current(),
            body,
        })
    }

    /// This node's organization actor, acquiring the organization and starting its actor if it is free;
    /// [`Error::OwnedElsewhere`] when a live other node owns it (or this node takes no organizations).
    pub async fn route(&self, org: OrganizationId) -> Result<OrgHandle, Error> {
        match self.claim(org).await? {
            Claimed::Mine(handle) => Ok(handle),
            Claimed::HeldBy(_) | Claimed::Refused => Err(Error::OwnedElsewhere),
            Claimed::Busy => Err(CHANGING_HANDS),
        }
    }

    /// This node's organization actor, or why not.
    async fn claim(&self, org: OrganizationId) -> Result<Claimed, Error> {
        self.claim_with(org, None).await
    }

    async fn claim_with(&self, org: OrganizationId, handoff: Option<HandOff>) -> Result<Claimed, Error> {
        if !self.ownership.valid() {
            return Err(Error::OwnedElsewhere);
        }
        if let Some(handle) = self.orgs.registry.get(org) {
            return Ok(Claimed::Mine(handle));
        }
        // The database is read before the supervisor is asked, so a slow or unreachable PostgreSQL
        // delays only the requests of organizations that are starting, not every request of the node.
        let context = self.org_context(org).await?;
        // Never a second owner: nobody takes an organization from a live owner.
        let epoch = match self.ownership.claim(org).await? {
            Claim::Owned { epoch, takeover } => {
                if takeover && let Some(kick) = &self.takeovers {
                    // The crashed owner's unscored rows are swept at once, not after the grace period.
                    let _ = kick.try_send(());
                }
                epoch
            }
            Claim::HeldBy(owner) => {
                self.remember(org, &owner);
                return Ok(Claimed::HeldBy(owner));
            }
            Claim::Refused => return Ok(Claimed::Refused),
            Claim::Busy => return Ok(Claimed::Busy),
        };
        let args = OrgArgs {
            org: context,
            pool: self.pool.clone(),
            config: self.config.clone(),
            scorer: self.scorer.clone(),
            cache: self.cache.clone(),
            metrics: self.metrics.clone(),
            fault_injection: self.fault_injection,
            epoch,
            fanout: self.fanout.clone(),
            handoff,
            commits: self.commits.clone(),
        };
        let supervisor = self.orgs.get().ok_or(Error::Unavailable("actor system"))?;
        let started = ractor::call_t!(
            supervisor,
            OrgSupervisorMsg::Start,
            self.config.call_timeout.as_millis() as u64,
            Box::new(args)
        )
        .map_err(|e| Error::internal(anyhow::anyhow!("organization supervisor unreachable: {e}")))?;
        started
            .map(Claimed::Mine)
            .map_err(|e| Error::internal(anyhow::anyhow!(e)))
    }

    /// The organization's actor if it runs on this node; never starts one.
    pub fn local(&self, org: OrganizationId) -> Option<OrgHandle> {
        self.orgs.registry.get(org)
    }

    /// Stops an organization actor whose lease ended (its write was fenced); its supervisor then forgets
    /// it, and the next request acquires the organization again or learns who owns it.
    pub fn lost(&self, org: OrganizationId, handle: &OrgHandle) {
        // An organization being handed off answers "not the owner" by design while it drains.
        if self.moving(org) {
            return;
        }
        handle.actor.stop(Some("lease lost".to_owned()));
    }

    /// Waits (briefly) until this actor of the organization is no longer the one the registry holds.
    pub async fn gone(&self, org: OrganizationId, handle: &OrgHandle) {
        let actor = handle.actor.get_id();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while self.local(org).is_some_and(|h| h.actor.get_id() == actor)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(MOVING_POLL).await;
        }
    }

    fn moving(&self, org: OrganizationId) -> bool {
        self.moving
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&org)
    }

    /// Waits (at most `failover_wait`) while the organization is being handed off from this node.
    async fn settled(&self, org: OrganizationId) {
        let deadline = tokio::time::Instant::now() + self.cluster.failover_wait;
        while self.moving(org) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(MOVING_POLL).await;
        }
    }

    /// Hands an organization this node owns to `to` (`../shared/CLUSTER.md` §4.5): its actor drains
    /// (each customer finishes its write) and stops, its lease is released, and `to` takes it over with
    /// its numbering and replay buffer, so dashboards continue without a resync. Requests that arrive
    /// meanwhile wait, then go to the new owner. If `to` does not take it, the organization is left free
    /// and the next request places it.
    pub async fn hand_off(&self, org: OrganizationId, to: &str) -> Result<i64, Error> {
        let Some(gateway) = self.peers.gateway(to) else {
            return Err(Error::NodeUnavailable(format!("{to} is not reachable")));
        };
        let Some(handle) = self.local(org) else {
            return Err(Error::OwnedElsewhere);
        };
        if !self
            .moving
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(org)
        {
            return Err(Error::Overloaded("the organization is already being handed off"));
        }
        let result = self.hand_off_moving(org, to, &gateway, &handle).await;
        self.moving
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&org);
        match &result {
            Ok(epoch) => tracing::info!(org = %org, to, epoch, "organization handed off"),
            Err(e) => {
                tracing::warn!(org = %org, to, error = %e, "hand-off failed; the organization is free for the next request")
            }
        }
        result
    }

    async fn hand_off_moving(
        &self,
        org: OrganizationId,
        to: &str,
        gateway: &ActorRef<GatewayMsg>,
        handle: &OrgHandle,
    ) -> Result<i64, Error> {
        let state = match handle.actor.call(OrgMsg::HandOff, Some(HANDOFF_TIMEOUT)).await {
            Ok(CallResult::Success(Wire(Ok(state)))) => state,
            other => {
                handle.actor.stop(Some("hand-off failed".to_owned()));
                return Err(Error::internal(anyhow::anyhow!(
                    "the organization actor did not hand off: {other:?}"
                )));
            }
        };
        // The actor stops right after answering; the supervisor then forgets it.
        let stopped = handle.actor.get_id();
        let deadline = tokio::time::Instant::now() + HANDOFF_TIMEOUT;
        while self.local(org).is_some_and(|h| h.actor.get_id() == stopped)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(MOVING_POLL).await;
        }
        self.ownership.release(org, handle.epoch).await?;
        self.remember(org, to);
        let body = self.forwarded(org, state);
        match self
            .forward(org, to, gateway, |reply| GatewayMsg::TakeOver(body, reply))
            .await
        {
            Ok(Ok(epoch)) => {
                self.remember(org, to);
                Ok(epoch)
            }
            Ok(Err(f)) => Err(f.into_error()),
            Err(lost) => Err(lost.into_error()),
        }
    }

    /// Takes over an organization another node handed to this one, continuing from its state.
    pub async fn take_over(&self, org: OrganizationId, state: HandOff) -> Result<i64, Error> {
        match self.claim_with(org, Some(state)).await? {
            Claimed::Mine(handle) => Ok(handle.epoch),
            Claimed::HeldBy(_) => Err(Error::OwnedElsewhere),
            Claimed::Refused => Err(Error::Overloaded("this node takes no organizations")),
            Claimed::Busy => Err(CHANGING_HANDS),
        }
    }

    /// The organization's name and id, as its rows are enriched with; 404 for an unknown organization.
    pub async fn org_context(&self, org: OrganizationId) -> Result<OrgContext, Error> {
        let name = interactions::org_name(&self.pool, org)
            .await?
            .ok_or(Error::NotFound("organization"))?;
        Ok(OrgContext { id: org, name })
    }

    /// This node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// This node's leases.
    pub fn ownership(&self) -> &Ownership {
        &self.ownership
    }

    /// This node's sessions, by organization.
    pub fn fanout(&self) -> &Fanout {
        &self.fanout
    }

    /// Hands the model's scores of some of an organization's interactions to its actor, which stores them
    /// together.
    pub async fn scored(
        &self,
        org: OrganizationId,
        scored: Vec<ScoredInteraction>,
        forwarded: bool,
    ) -> Result<(), Error> {
        match self.place(org, forwarded).await? {
            Place::Local(handle) => handle
                .actor
                .cast(OrgMsg::Scored(Wire::new(scored)))
                .map_err(|e| Error::internal(anyhow::anyhow!("organization actor unreachable: {e}"))),
            // Best effort, like the local cast: a score lost on the way leaves the row unscored, and the
            // owner's sweep scores it again.
            Place::Remote { gateway, .. } => gateway
                .cast(GatewayMsg::Scored(self.forwarded(org, scored)))
                .map_err(|e| Error::internal(anyhow::anyhow!("gateway unreachable: {e}"))),
        }
    }

    /// Tells the customer's live actor (if any, here or at the owner) that its row changed.
    pub fn customer_changed(&self, org: OrganizationId, customer: CustomerId) {
        if let Some(handle) = self.local(org) {
            let _ = handle.actor.cast(OrgMsg::CustomerChanged(customer.to_string()));
        } else if let Some(owner) = self.known_owner(org)
            && let Some(gateway) = self.peers.gateway(&owner)
        {
            let _ = gateway.cast(GatewayMsg::CustomerChanged(self.forwarded(org, customer)));
        }
    }

    /// Returns the organization's buffered events after `after` (a session's replay), from its owner.
    pub async fn events_after(
        &self,
        org: OrganizationId,
        after: u64,
        forwarded: bool,
    ) -> Result<EventsAfter, Error> {
        let mut retry = self.retry();
        while retry.again().await {
            match self.place(org, forwarded).await? {
                Place::Local(handle) => {
                    let reply =
                        ractor::call_t!(handle.actor, OrgMsg::EventsAfter, 5_000, after).map_err(|e| {
                            Error::internal(anyhow::anyhow!("organization actor unreachable: {e}"))
                        })?;
                    return reply.0.map_err(|e| Error::internal(anyhow::anyhow!(e)));
                }
                Place::Remote { node, gateway } => {
                    let body = self.forwarded(org, after);
                    match self
                        .forward(org, &node, &gateway, |reply| GatewayMsg::EventsAfter(body, reply))
                        .await
                    {
                        Ok(Ok(events)) => return Ok(events),
                        Ok(Err(Failure::NotOwner { .. })) => continue,
                        Ok(Err(f)) => return Err(f.into_error()),
                        Err(lost) => return Err(lost.into_error()),
                    }
                }
            }
        }
        Err(Error::OwnedElsewhere)
    }

    /// The attempts of a request whose owner keeps changing (a node fenced, an organization moving):
    /// the first at once, then every 250 ms until `failover_wait` has passed.
    pub fn retry(&self) -> Retry {
        Retry {
            deadline: tokio::time::Instant::now() + self.cluster.failover_wait,
            attempts: 0,
        }
    }

    /// The members this node forwards to.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// Returns how many customer actors of the organization are live.
    pub async fn live_customers(&self, org: OrganizationId) -> Result<u64, Error> {
        let handle = self.route(org).await?;
        ractor::call_t!(handle.actor, OrgMsg::LiveCustomers, 5_000)
            .map_err(|e| Error::internal(anyhow::anyhow!("organization actor unreachable: {e}")))
    }

    /// Makes a live customer actor panic, when fault injection is enabled (crash tests).
    pub async fn inject_customer_panic(
        &self,
        org: OrganizationId,
        customer: CustomerId,
    ) -> Result<(), Error> {
        let handle = self.route(org).await?;
        let _ = handle
            .actor
            .cast(OrgMsg::InjectCustomerPanic(customer.to_string()));
        Ok(())
    }
}
