//! The cluster: which node owns which organization. Placement (`cluster::placement`) says where an
//! organization should live; ownership (`store::leases`, run by [`Ownership`]) is decided in PostgreSQL with a fencing token, so
//! there is never a second effective owner whatever the network does. The design, and the facts about
//! ractor_cluster it rests on: `../shared/CLUSTER.md`.

pub mod file;
pub mod gateway;
pub mod node;
pub mod placement;
pub mod remote_ml;
pub mod transport;
pub mod view;
pub mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use self::file::{Mode, Role};
use self::view::ClusterView;
use self::watch::Membership;
use crate::config::ClusterConfig;
use crate::domain::OrganizationId;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::store::leases::{self as lease, Acquired, NodeIdentity};

/// The outcome of [`Ownership::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This node owns the organization at `epoch` (the fencing token of its writes); `takeover` when it
    /// just took it from an owner whose lease had expired (a crashed or cut-off node).
    Owned { epoch: i64, takeover: bool },
    /// A live other node owns it.
    HeldBy(String),
    /// This node takes no organizations (it is leaving, or has no `actors` role).
    Refused,
    /// The organization is changing hands (an old owner's write is still open): ask again shortly.
    Busy,
}

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
    membership: Membership,
    view: std::sync::RwLock<Arc<ClusterView>>,
    metrics: Metrics,
}

impl Ownership {
    /// Registers the node (a new incarnation) with the roles and config hash of its membership, and keeps
    /// its heartbeat until `shutdown`.
    pub async fn start(
        pool: PgPool,
        membership: Membership,
        config: &ClusterConfig,
        metrics: Metrics,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Self, Error> {
        let entry = membership.entry();
        let sent = Instant::now();
        let node = lease::register(
            &pool,
            &entry.name,
            &entry.address,
            &entry.role_names(),
            &membership.hash(),
        )
        .await?;
        let clock = LeaseClock::default();
        clock.renewed(sent, config.lease_ttl, config.heartbeat);
        tracing::info!(node = %node.name, incarnation = node.incarnation, "node registered");
        let view = ClusterView::new(&membership.file(), &[], &node.name, mode_name(&membership), true);
        let ownership = Self {
            inner: Arc::new(OwnershipInner {
                pool,
                node,
                config: config.clone(),
                clock,
                membership,
                view: std::sync::RwLock::new(Arc::new(view)),
                metrics,
            }),
        };
        ownership.refresh_view().await;
        let beating = ownership.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(beating.inner.config.heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut changes = beating.inner.membership.changes();
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    // A new membership is published at once, not at the next tick.
                    Ok(()) = changes.changed() => {}
                    _ = shutdown.changed() => break,
                }
                // A PostgreSQL that stops answering must not stall the loop: the lease clock runs out
                // by itself, and the next tick tries again.
                let budget = beating.inner.config.lease_ttl;
                if tokio::time::timeout(budget, beating.beat()).await.is_err() {
                    tracing::warn!("heartbeat timed out");
                }
                let _ = tokio::time::timeout(budget, beating.refresh_view()).await;
            }
        });
        Ok(ownership)
    }

    async fn beat(&self) {
        let i = &self.inner;
        let sent = Instant::now();
        let entry = i.membership.entry();
        let roles = entry.role_names();
        let hash = i.membership.hash();
        let published = lease::Published {
            config_hash: &hash,
            roles: &roles,
            state: if i.membership.leaving() { "leaving" } else { "up" },
        };
        match lease::heartbeat(&i.pool, &i.node, &published).await {
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

    /// Re-reads the nodes' rows and publishes the view of the cluster.
    async fn refresh_view(&self) {
        let i = &self.inner;
        let rows = match lease::nodes(&i.pool, i.config.lease_ttl).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::debug!(error = %e, "cluster view not refreshed");
                return;
            }
        };
        let view = ClusterView::new(
            &i.membership.file(),
            &rows,
            &i.node.name,
            mode_name(&i.membership),
            i.membership.valid(),
        );
        for (state, n) in view.counts() {
            i.metrics
                .cluster_members
                .with_label_values(&[state.as_str()])
                .set(n);
        }
        *i.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
    }

    /// The cluster as of the last heartbeat.
    pub fn view(&self) -> Arc<ClusterView> {
        self.inner.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The membership this node runs with.
    pub fn membership(&self) -> &Membership {
        &self.inner.membership
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

    /// Takes the organization for this node if it is free, or says who holds it (see [`Claim`]).
    pub async fn claim(&self, org: OrganizationId) -> Result<Claim, Error> {
        if !self.valid() {
            return Err(Error::OwnedElsewhere);
        }
        if !self.takes_organizations() {
            return Ok(Claim::Refused);
        }
        let i = &self.inner;
        match lease::acquire(&i.pool, org, &i.node, i.config.lease_ttl).await? {
            Acquired::Owned { epoch, reason } => Ok(Claim::Owned {
                epoch,
                takeover: reason == Some(lease::Reason::Takeover),
            }),
            Acquired::HeldBy { owner } => {
                tracing::debug!(org = %org, owner, "organization owned by another live node");
                Ok(Claim::HeldBy(owner))
            }
            Acquired::Busy => Ok(Claim::Busy),
        }
    }

    /// The organization's live owner, without taking it.
    pub async fn live_owner(&self, org: OrganizationId) -> Result<Option<String>, Error> {
        lease::live_owner(&self.inner.pool, org, self.inner.config.lease_ttl).await
    }

    /// Gives an organization up (a hand-off): from now on this node's writes at `epoch` fail the fence
    /// and any node may take it.
    pub async fn release(&self, org: OrganizationId, epoch: i64) -> Result<(), Error> {
        lease::release(&self.inner.pool, org, epoch).await?;
        Ok(())
    }

    /// Whether this node may take organizations: it has the `actors` role and is not leaving.
    pub fn takes_organizations(&self) -> bool {
        let m = &self.inner.membership;
        !m.leaving() && m.entry().has(Role::Actors)
    }

    /// Ends this node's leases now (a graceful stop), so another node may take over at once.
    pub async fn stop(&self) {
        self.inner.clock.revoke();
        if let Err(e) = lease::mark_down(&self.inner.pool, &self.inner.node).await {
            tracing::warn!(error = %e, "could not mark the node down; its leases end with the TTL");
        }
    }
}

fn mode_name(m: &Membership) -> &'static str {
    match m.mode() {
        Mode::Standalone => "standalone",
        Mode::Clustered => "clustered",
    }
}

/// How long this node may still act as an owner without a fresh heartbeat, on the monotonic clock.
/// Each successful heartbeat sent at `t` extends it to `t + ttl - margin`, which ends before any other
/// node can see the heartbeat as older than the TTL; a paused or partitioned node therefore stops
/// publishing before anyone may take over.
#[derive(Debug, Clone)]
pub struct LeaseClock {
    origin: Instant,
    /// Milliseconds after `origin` until which leases are valid; 0 = never renewed.
    valid_until_ms: Arc<AtomicU64>,
}

impl Default for LeaseClock {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            valid_until_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl LeaseClock {
    /// Records a heartbeat that was sent at `sent` and succeeded.
    pub fn renewed(&self, sent: Instant, ttl: Duration, margin: Duration) {
        let until = sent.saturating_duration_since(self.origin) + ttl.saturating_sub(margin);
        self.valid_until_ms
            .fetch_max(until.as_millis() as u64, Ordering::AcqRel);
    }

    /// Ends every lease now (a later incarnation took the name, or the node is stopping).
    pub fn revoke(&self) {
        self.valid_until_ms.store(0, Ordering::Release);
    }

    /// Tells whether this node may still act as an owner.
    pub fn valid(&self) -> bool {
        let now = self.origin.elapsed().as_millis() as u64;
        now < self.valid_until_ms.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_clock_runs_out_a_margin_before_the_ttl() {
        let clock = LeaseClock::default();
        assert!(!clock.valid(), "never renewed");
        clock.renewed(Instant::now(), Duration::from_secs(6), Duration::from_secs(1));
        assert!(clock.valid());
        // A renewal sent long ago (a paused process) cannot extend the lease.
        let old = LeaseClock::default();
        old.renewed(old.origin, Duration::from_millis(5), Duration::from_millis(5));
        assert!(!old.valid(), "sent at the start, valid for ttl - margin = 0");
        clock.revoke();
        assert!(!clock.valid());
    }
}
