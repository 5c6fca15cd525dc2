//! The root supervisor of a node. It owns the node's actor subtrees and handles their failures itself:
//! ractor's default would stop the root when any child exits, taking the whole node down with it.

use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use ractor_cluster::RactorMessage;

use super::names;
use super::org_supervisor::{OrgSupervisor, OrgSupervisorArgs, SupervisorSlot};
use crate::metrics::Metrics;

/// The root supervisor (the struct holds no state; see `RootState`).
pub struct RootSupervisor;

/// What starts the root.
pub struct RootArgs {
    pub node_name: String,
    pub metrics: Metrics,
    /// Where the organization supervisor the root starts (and restarts) is published.
    pub orgs: SupervisorSlot,
}

/// The root's state.
pub struct RootState {
    node_name: String,
    started: Instant,
    metrics: Metrics,
    orgs: SupervisorSlot,
}

/// Messages to the root; cluster-ready, so a peer node can ask for them.
#[derive(RactorMessage)]
pub enum RootMsg {
    /// Returns the node's name.
    NodeName(RpcReplyPort<String>),
    /// Returns how long the node has been up, in seconds.
    UptimeSecs(RpcReplyPort<u64>),
}

impl Actor for RootSupervisor {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = RootArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<RootMsg>,
        args: RootArgs,
    ) -> Result<RootState, ActorProcessingErr> {
        tracing::info!(node = %args.node_name, "root supervisor started");
        Ok(RootState {
            node_name: args.node_name,
            started: Instant::now(),
            metrics: args.metrics,
            orgs: args.orgs,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<RootMsg>,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        start_org_supervisor(&myself, state).await
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<RootMsg>,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        tracing::info!(node = %state.node_name, "root supervisor stopped");
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<RootMsg>,
        msg: RootMsg,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RootMsg::NodeName(reply) => {
                let _ = reply.send(state.node_name.clone());
            }
            RootMsg::UptimeSecs(reply) => {
                let _ = reply.send(state.started.elapsed().as_secs());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RootMsg>,
        event: SupervisionEvent,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(child, reason) => {
                state.metrics.actor_restarts.with_label_values(&["root"]).inc();
                tracing::error!(child = %child.get_id(), error = ?reason, "child of the root failed; restarting it");
                if state.orgs.get().is_some_and(|s| s.get_id() == child.get_id()) {
                    // The organization actors it supervised are stopped; they restart on their next request.
                    for handle in state.orgs.registry.drain() {
                        handle.actor.stop(Some("supervisor restarted".to_owned()));
                    }
                    state.orgs.set(None);
                    start_org_supervisor(&myself, state).await?;
                }
            }
            SupervisionEvent::ActorTerminated(child, _, reason) => {
                tracing::info!(child = %child.get_id(), reason = ?reason, "child of the root stopped");
            }
            _ => {}
        }
        Ok(())
    }
}

async fn start_org_supervisor(
    myself: &ActorRef<RootMsg>,
    state: &mut RootState,
) -> Result<(), ActorProcessingErr> {
    let args = OrgSupervisorArgs {
        registry: state.orgs.registry.clone(),
        metrics: state.metrics.clone(),
    };
    let name = names::org_supervisor(&state.node_name);
    let (supervisor, _) = Actor::spawn_linked(Some(name), OrgSupervisor, args, myself.get_cell()).await?;
    state.orgs.set(Some(supervisor));
    Ok(())
}
