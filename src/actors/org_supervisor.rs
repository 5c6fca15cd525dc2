//! Supervises the organization actors. They start on first use (through the router, `actors::route`) and
//! are linked here; when one fails, it is dropped from the registry and the next request for that
//! organization starts a fresh one, rebuilt from PostgreSQL.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use ractor_cluster::RactorMessage;
use tokio::sync::Semaphore;

use super::org::{OrgActor, OrgArgs, OrgMsg};
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

/// The organizations with a live actor on this node. Only the organization supervisor (and the root,
/// when that supervisor fails) writes it; the request path reads it, under a lock that is never held
/// across an await.
#[derive(Clone, Default)]
pub struct OrgRegistry(Arc<std::sync::RwLock<HashMap<OrganizationId, OrgHandle>>>);

impl OrgRegistry {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<OrganizationId, OrgHandle>> {
        // Writers only insert or remove whole entries: a poisoned lock holds a consistent map.
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<OrganizationId, OrgHandle>> {
        self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The organization's live actor, if any: running, or still in `post_start` (ractor reports
    /// `Starting` until it returns; messages sent meanwhile wait in its mailbox). Treating a starting
    /// actor as absent would start a second actor of the organization on this node.
    pub fn get(&self, org: OrganizationId) -> Option<OrgHandle> {
        self.read()
            .get(&org)
            .filter(|h| ractor::ACTIVE_STATES.contains(&h.actor.get_status()))
            .cloned()
    }

    /// The organizations with a live actor.
    pub fn ids(&self) -> Vec<OrganizationId> {
        self.read().keys().copied().collect()
    }

    /// How many organization actors are live.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Tells whether no organization actor is live.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Removes the organization whose actor has this id; returns which one it was.
    fn remove_actor(&self, actor: ractor::ActorId) -> Option<OrganizationId> {
        let mut map = self.write();
        let org = map
            .iter()
            .find(|(_, h)| h.actor.get_id() == actor)
            .map(|(org, _)| *org)?;
        map.remove(&org);
        Some(org)
    }

    /// Takes every entry out (the supervisor failed: its children are stopped).
    pub(super) fn drain(&self) -> Vec<OrgHandle> {
        self.write().drain().map(|(_, h)| h).collect()
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
    /// Returns the organization's actor, starting it (from these arguments) if none is live. Starts are
    /// handled one at a time here, so an organization never gets two actors on a node.
    Start(Box<OrgArgs>, RpcReplyPort<Result<OrgHandle, String>>),
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
        myself: ActorRef<OrgSupervisorMsg>,
        msg: OrgSupervisorMsg,
        state: &mut OrgSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            OrgSupervisorMsg::LiveOrganizations(reply) => {
                let _ = reply.send(state.registry.len() as u64);
            }
            OrgSupervisorMsg::Start(args, reply) => {
                let org = args.org.id;
                if let Some(handle) = state.registry.get(org) {
                    let _ = reply.send(Ok(handle));
                    return Ok(());
                }
                let (permits, epoch) = (args.config.org_max_inflight, args.epoch);
                let started = Actor::spawn_linked(None, OrgActor, *args, myself.get_cell())
                    .await
                    .map(|(actor, _)| OrgHandle {
                        actor,
                        permits: Arc::new(Semaphore::new(permits)),
                        epoch,
                    })
                    .map_err(|e| format!("cannot start organization actor: {e}"));
                if let Ok(handle) = &started {
                    state.registry.write().insert(org, handle.clone());
                }
                let _ = reply.send(started);
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
                if let Some(org) = state.registry.remove_actor(cell.get_id()) {
                    state
                        .metrics
                        .actor_restarts
                        .with_label_values(&["org_supervisor"])
                        .inc();
                    tracing::error!(%org, error = ?reason, "organization actor failed; it restarts on the next request");
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.registry.remove_actor(cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}
