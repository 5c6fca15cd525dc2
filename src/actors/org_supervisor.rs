//! Supervises the organization actors. They start on first use (through [`super::ingest::Ingest`]) and
//! are linked here; when one fails, it is dropped from the registry and the next request for that
//! organization starts a fresh one, rebuilt from PostgreSQL.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use ractor_cluster::RactorMessage;
use tokio::sync::{Mutex, Semaphore};

use super::org::OrgMsg;
use crate::domain::OrganizationId;
use crate::metrics::Metrics;

/// A live organization actor and the permits that bound its in-flight requests.
#[derive(Clone)]
pub struct OrgHandle {
    pub actor: ActorRef<OrgMsg>,
    /// One permit per request in flight; none left means the organization's mailboxes are full (503).
    pub permits: Arc<Semaphore>,
    /// The lease epoch the organization was acquired at on this node.
    pub epoch: i64,
}

/// The organizations with a live actor on this node.
#[derive(Clone, Default)]
pub struct OrgRegistry(pub Arc<Mutex<HashMap<OrganizationId, OrgHandle>>>);

impl OrgRegistry {
    /// Removes the organization whose actor has this id; returns which one it was.
    pub async fn remove_actor(&self, actor: ractor::ActorId) -> Option<OrganizationId> {
        let mut map = self.0.lock().await;
        let org = map
            .iter()
            .find(|(_, h)| h.actor.get_id() == actor)
            .map(|(org, _)| *org)?;
        map.remove(&org);
        Some(org)
    }
}

/// Where the current organization supervisor is found; the root replaces it if it ever fails.
#[derive(Clone, Default)]
pub struct SupervisorSlot {
    pub registry: OrgRegistry,
    current: Arc<std::sync::RwLock<Option<ActorRef<OrgSupervisorMsg>>>>,
}

impl SupervisorSlot {
    /// Returns the live supervisor, if one is running.
    pub fn get(&self) -> Option<ActorRef<OrgSupervisorMsg>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Records the supervisor now in charge.
    pub fn set(&self, supervisor: Option<ActorRef<OrgSupervisorMsg>>) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = supervisor;
    }
}

/// The organization supervisor.
pub struct OrgSupervisor;

/// What the supervisor starts from.
pub struct OrgSupervisorArgs {
    pub registry: OrgRegistry,
    pub metrics: Metrics,
}

/// The supervisor's state.
pub struct OrgSupervisorState {
    registry: OrgRegistry,
    metrics: Metrics,
}

/// Messages to the organization supervisor.
#[derive(RactorMessage)]
pub enum OrgSupervisorMsg {
    /// Returns how many organization actors are live.
    LiveOrganizations(RpcReplyPort<u64>),
}

impl Actor for OrgSupervisor {
    type Msg = OrgSupervisorMsg;
    type State = OrgSupervisorState;
    type Arguments = OrgSupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<OrgSupervisorMsg>,
        args: OrgSupervisorArgs,
    ) -> Result<OrgSupervisorState, ActorProcessingErr> {
        Ok(OrgSupervisorState {
            registry: args.registry,
            metrics: args.metrics,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<OrgSupervisorMsg>,
        msg: OrgSupervisorMsg,
        state: &mut OrgSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            OrgSupervisorMsg::LiveOrganizations(reply) => {
                let _ = reply.send(state.registry.0.lock().await.len() as u64);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<OrgSupervisorMsg>,
        event: SupervisionEvent,
        state: &mut OrgSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, reason) => {
                if let Some(org) = state.registry.remove_actor(cell.get_id()).await {
                    state
                        .metrics
                        .actor_restarts
                        .with_label_values(&["org_supervisor"])
                        .inc();
                    tracing::error!(%org, %reason, "organization actor failed; it restarts on the next request");
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.registry.remove_actor(cell.get_id()).await;
            }
            _ => {}
        }
        Ok(())
    }
}
