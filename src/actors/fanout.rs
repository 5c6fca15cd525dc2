//! The delivery of an organization's events to the live sessions of this node (R6.2).
//!
//! The owner's organization actor publishes each numbered event once; [`Fanout`] hands it to every
//! session of the organization that subscribed on this node, in publication order (one sender, one
//! mailbox per session). Subscribers are held as `DerivedActorRef<Wire<OrgEvent>>`, so the organization
//! actor never sees the session's message type, and the registry belongs to the node (an `App`), not to
//! the process: two nodes in one test process do not see each other's sessions.
//!
//! In a cluster the owner also casts each event to the gateway of every reachable peer, which hands it
//! to its own sessions ([`Fanout::deliver`]): one sender (the owner's organization actor) and one link
//! per peer, so every session on every node receives the owner's events in order
//! (`../shared/CLUSTER.md` §3.8). An event lost on the way (a peer reconnecting) shows as a gap in `prev`,
//! which the session fills by replay from the owner or answers with `resync`.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use ractor::{ActorId, DerivedActorRef};

use crate::cluster::gateway::GatewayMsg;
use crate::cluster::node::Peers;
use crate::domain::event::OrgEvent;
use crate::domain::{OrganizationId, Wire};

/// A subscriber: the part of a session that receives events.
pub type Subscriber = DerivedActorRef<Wire<OrgEvent>>;

/// The live sessions of this node, by organization. Cheap to clone.
#[derive(Clone, Default)]
pub struct Fanout {
    subscribers: Arc<RwLock<HashMap<OrganizationId, Vec<Subscriber>>>>,
    peers: Peers,
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

    /// The fan-out of a node that also relays its events to `peers` (empty when standalone).
    pub fn new(peers: Peers) -> Self {
        Self {
            subscribers: Arc::default(),
            peers,
        }
    }

    /// Publishes an event of an organization this node owns: to its sessions here and to every
    /// reachable peer's gateway.
    pub fn publish(&self, org: OrganizationId, event: &OrgEvent) {
        for gateway in self.peers.gateways() {
            let _ = gateway.cast(GatewayMsg::Events(Wire::new((org, vec![event.clone()]))));
        }
        self.deliver(org, event);
    }

    /// Hands an event to this node's sessions of the organization; a session that has ended meanwhile
    /// is forgotten.
    pub fn deliver(&self, org: OrganizationId, event: &OrgEvent) {
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
