//! The node's gateway: the one actor other nodes can reach (`../shared/CLUSTER.md` §3.5; the messages
//! are `cluster::gateway`). It serves forwarded requests as the organization's owner, answers pings,
//! and hands the owners' events to this node's sessions.
//!
//! One mailbox serves every peer, so the handler never awaits work: a request runs in a task that owns
//! its reply port. Events are handled inline, in the order they arrive, so each session sees an
//! owner's events in that owner's order.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::ingest::Ingest;
use super::route::Router;
use crate::cluster::gateway::{self, Failure, Forwarded, GatewayMsg, PingInfo, Routed};
use crate::domain::{OrganizationId, Wire};
use crate::error::Error;

/// The gateway actor.
pub struct Gateway;

/// What it serves requests with.
pub struct GatewayArgs {
    pub ingest: Ingest,
    pub router: Router,
    /// This node's model, which serves other nodes' scoring when it has the `ml` role.
    pub ml: super::sentiment::Ml,
    /// The wire version this node announces (the build's own, [`gateway::WIRE_VERSION`], unless overridden for a
    /// compatibility test).
    pub wire_version: u32,
}

/// Starts this node's gateway and makes it reachable from the other nodes.
pub async fn start(args: GatewayArgs) -> Result<ActorRef<GatewayMsg>, ActorProcessingErr> {
    let name = gateway::gateway_name(&args.router.ownership().node().name);
    let (gateway, _) = Actor::spawn(Some(name), Gateway, args).await?;
    Ok(gateway)
}

impl Actor for Gateway {
    type Msg = GatewayMsg;
    type State = GatewayArgs;
    type Arguments = GatewayArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<GatewayMsg>,
        args: GatewayArgs,
    ) -> Result<GatewayArgs, ActorProcessingErr> {
        ractor::pg::join_scoped(
            gateway::SCOPE.to_owned(),
            gateway::GROUP.to_owned(),
            vec![myself.get_cell()],
        );
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<GatewayMsg>,
        msg: GatewayMsg,
        state: &mut GatewayArgs,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            GatewayMsg::Ping(Wire(theirs), reply) => {
                if let Ok(info) = &theirs
                    && info.wire_version != state.wire_version
                {
                    tracing::error!(peer = %info.node, theirs = info.wire_version, ours = state.wire_version, "a peer speaks another wire version");
                }
                let ownership = state.router.ownership();
                let _ = reply.send(Wire::new(PingInfo {
                    wire_version: state.wire_version,
                    node: ownership.node().name.clone(),
                    incarnation: ownership.node().incarnation,
                    config_hash: ownership.membership().hash(),
                }));
            }
            GatewayMsg::Ingest(Wire(request), reply) => {
                let ingest = state.ingest.clone();
                serve(&state.router, request, reply, move |f| async move {
                    ingest.ingest_forwarded(f.org, f.body).await
                });
            }
            GatewayMsg::Batch(Wire(request), reply) => {
                let ingest = state.ingest.clone();
                serve(&state.router, request, reply, move |f| async move {
                    ingest.batch_forwarded(f.org, f.body).await
                });
            }
            GatewayMsg::EventsAfter(Wire(request), reply) => {
                let router = state.router.clone();
                serve(&state.router, request, reply, move |f| async move {
                    router.events_after(f.org, f.body, true).await
                });
            }
            GatewayMsg::TakeOver(Wire(request), reply) => {
                let router = state.router.clone();
                serve(&state.router, request, reply, move |f| async move {
                    router.take_over(f.org, f.body).await
                });
            }
            GatewayMsg::Score(Wire(texts), reply) => {
                let serves = state
                    .router
                    .ownership()
                    .membership()
                    .entry()
                    .has(crate::cluster::file::Role::Ml);
                let ml = state.ml.clone();
                tokio::spawn(async move {
                    let answer = match texts {
                        Err(e) => Err(format!("undecodable texts: {e}")),
                        Ok(_) if !serves => Err("this node does not have the ml role".to_owned()),
                        Ok(texts) => ml
                            .predict(&texts)
                            .await
                            .map(|ps| {
                                ps.into_iter()
                                    .map(|p| crate::domain::sentiment::Scores {
                                        positive: p.positive,
                                        negative: p.negative,
                                        neutral: p.neutral,
                                    })
                                    .collect()
                            })
                            .map_err(|e| e.to_string()),
                    };
                    let _ = reply.send(Wire::new(answer));
                });
            }
            GatewayMsg::Scored(Wire(Ok(f))) => {
                let router = state.router.clone();
                tokio::spawn(async move {
                    if let Err(e) = router.scored(f.org, f.body, true).await {
                        tracing::warn!(org = %f.org, from = %f.from, error = %e, "forwarded scores not delivered; the owner's sweep scores the row again");
                    }
                });
            }
            GatewayMsg::CustomerChanged(Wire(Ok(f))) => {
                // Only the local actor: a forwarded change is never forwarded again.
                if let Some(handle) = state.router.local(f.org) {
                    let _ = handle
                        .actor
                        .cast(super::org::OrgMsg::CustomerChanged(f.body.to_string()));
                }
            }
            GatewayMsg::Events(Wire(Ok((org, events)))) => {
                let fanout = state.router.fanout();
                for event in &events {
                    fanout.deliver(org, event);
                }
            }
            GatewayMsg::Scored(Wire(Err(e)))
            | GatewayMsg::CustomerChanged(Wire(Err(e)))
            | GatewayMsg::Events(Wire(Err(e))) => {
                tracing::warn!(error = %e, "undecodable message from a peer dropped");
            }
        }
        Ok(())
    }
}

/// Runs a forwarded request in its own task and answers it; a request for an organization this node
/// does not own is answered with the owner it knows of.
fn serve<T, R, F, Fut>(
    router: &Router,
    request: Result<Forwarded<T>, String>,
    reply: RpcReplyPort<Wire<Routed<R>>>,
    work: F,
) where
    T: Send + 'static,
    R: Send + 'static,
    F: FnOnce(Forwarded<T>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<R, Error>> + Send,
{
    let f = match request {
        Ok(f) => f,
        Err(e) => {
            let _ = reply.send(Wire::new(Err(Failure::Internal(format!(
                "undecodable request: {e}"
            )))));
            return;
        }
    };
    let router = router.clone();
    // The forwarding node's request id: the owner's log events of this work name the same request.
    let request_id = f.request_id.clone();
    tokio::spawn(crate::domain::trace::scope(request_id, async move {
        let org: OrganizationId = f.org;
        let answer = work(f).await.map_err(|e| match e {
            Error::OwnedElsewhere => Failure::NotOwner {
                owner: router.owner_hint(org),
            },
            other => Failure::from_error(&other),
        });
        let _ = reply.send(Wire::new(answer));
    }));
}
