//! The delivery of an organization's events to the live sessions of this node (R6.2).
//!
//! The owner's organization actor publishes each numbered event once; [`Fanout`] hands it to every
//! session of the organization that subscribed on this node, in publication order (one sender, one
//! mailbox per session). Subscribers are held as `DerivedActorRef<Wire<OrgEvent>>`, so the organization
//! actor never sees the session's message type, and the registry belongs to the node (an `App`), not to
//! the process: two nodes in one test process do not see each other's sessions. Events of organizations
//! owned elsewhere will reach this registry through the node's gateway (`../shared/CLUSTER.md` §3.8).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use ractor::{ActorId, DerivedActorRef};

use crate::domain::event::OrgEvent;
use crate::domain::{OrganizationId, Wire};

/// A subscriber: the part of a session that receives events.
pub type Subscriber = DerivedActorRef<Wire<OrgEvent>>;

/// The live sessions of this node, by organization. Cheap to clone.
#[derive(Clone, Default)]
pub struct Fanout {
    subscribers: Arc<RwLock<HashMap<OrganizationId, Vec<Subscriber>>>>,
}

impl Fanout {
    /// Adds a session; every event published after this call reaches it.
    pub fn subscribe(&self, org: OrganizationId, subscriber: Subscriber) {
        self.subscribers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(org)
            .or_default()
            .push(subscriber);
    }

    /// Removes a session (it ended).
    pub fn unsubscribe(&self, org: OrganizationId, session: ActorId) {
        let mut all = self.subscribers.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(list) = all.get_mut(&org) {
            list.retain(|s| s.get_id() != session);
            if list.is_empty() {
                all.remove(&org);
            }
        }
    }

    /// Hands an event to every session of the organization; a session that has ended meanwhile is
    /// forgotten.
    pub fn publish(&self, org: OrganizationId, event: &OrgEvent) {
        let mut gone = Vec::new();
        {
            let all = self.subscribers.read().unwrap_or_else(PoisonError::into_inner);
            let Some(list) = all.get(&org) else {
                return;
            };
            for subscriber in list {
                if subscriber.send_message(Wire::new(event.clone())).is_err() {
                    gone.push(subscriber.get_id());
                }
            }
        }
        for session in gone {
            self.unsubscribe(org, session);
        }
    }

    /// How many sessions of the organization are subscribed on this node.
    pub fn sessions(&self, org: OrganizationId) -> usize {
        self.subscribers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&org)
            .map_or(0, Vec::len)
    }
}
