//! The cluster: which node owns which organization. Placement (`cluster::placement`) says where an
//! organization should live; ownership (`cluster::lease`) is decided in PostgreSQL with a fencing token, so
//! there is never a second effective owner whatever the network does. The design, and the facts about
//! ractor_cluster it rests on: `../shared/CLUSTER.md`.

pub mod lease;
pub mod placement;

use std::sync::Arc;
use std::time::Instant;

use sqlx::PgPool;
use tokio::sync::watch;

use crate::config::ClusterConfig;
use crate::domain::OrganizationId;
use crate::error::Error;
use lease::{Acquired, LeaseClock, NodeIdentity};

/// This node's side of ownership: its registration, the heartbeat that keeps its leases, and the
/// acquisition of the organizations it serves. Cheap to clone.
#[derive(Clone)]
pub struct Ownership {
    inner: Arc<OwnershipInner>,
}

struct OwnershipInner {
    pool: PgPool,
    node: NodeIdentity,
    config: ClusterConfig,
    clock: LeaseClock,
}

impl Ownership {
    /// Registers the node (a new incarnation) and keeps its heartbeat until `shutdown`.
    pub async fn start(
        pool: PgPool,
        node_name: &str,
        address: &str,
        config: &ClusterConfig,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<Self, Error> {
        let roles = ["api", "actors", "ml"].map(str::to_owned);
        let sent = Instant::now();
        let node = lease::register(&pool, node_name, address, &roles, "standalone").await?;
        let clock = LeaseClock::default();
        clock.renewed(sent, config.lease_ttl, config.heartbeat);
        tracing::info!(node = %node.name, incarnation = node.incarnation, "node registered");
        let ownership = Self {
            inner: Arc::new(OwnershipInner {
                pool,
                node,
                config: config.clone(),
                clock,
            }),
        };
        let beating = ownership.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(beating.inner.config.heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => beating.beat().await,
                    _ = shutdown.changed() => break,
                }
            }
        });
        Ok(ownership)
    }

    async fn beat(&self) {
        let i = &self.inner;
        let sent = Instant::now();
        match lease::heartbeat(&i.pool, &i.node).await {
            Ok(true) => i.clock.renewed(sent, i.config.lease_ttl, i.config.heartbeat),
            Ok(false) => {
                if i.clock.valid() {
                    tracing::error!(node = %i.node.name, incarnation = i.node.incarnation, "another process registered under this node's name: this one stops owning");
                }
                i.clock.revoke();
            }
            // The lease clock runs out by itself if this goes on.
            Err(e) => tracing::warn!(error = %e, "heartbeat not renewed"),
        }
    }

    /// This node's name and incarnation.
    pub fn node(&self) -> &NodeIdentity {
        &self.inner.node
    }

    /// How long a lease outlives its owner's last heartbeat.
    pub fn lease_ttl(&self) -> std::time::Duration {
        self.inner.config.lease_ttl
    }

    /// Tells whether this node's leases are still valid (its heartbeat is fresh enough).
    pub fn valid(&self) -> bool {
        self.inner.clock.valid()
    }

    /// Acquires the organization for this node and returns the epoch to fence its writes with, or
    /// [`Error::OwnedElsewhere`] when a live other node owns it (or this node's leases have run out).
    pub async fn acquire(&self, org: OrganizationId) -> Result<i64, Error> {
        if !self.valid() {
            return Err(Error::OwnedElsewhere);
        }
        let i = &self.inner;
        match lease::acquire(&i.pool, org, &i.node, i.config.lease_ttl).await? {
            Acquired::Owned { epoch, .. } => Ok(epoch),
            Acquired::HeldBy { owner } => {
                tracing::info!(org = %org, owner, "organization owned by another live node");
                Err(Error::OwnedElsewhere)
            }
        }
    }

    /// Ends this node's leases now (a graceful stop), so another node may take over at once.
    pub async fn stop(&self) {
        self.inner.clock.revoke();
        if let Err(e) = lease::mark_down(&self.inner.pool, &self.inner.node).await {
            tracing::warn!(error = %e, "could not mark the node down; its leases end with the TTL");
        }
    }
}
