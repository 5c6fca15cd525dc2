//! The one way to reach an organization's actor. [`Router::route`] returns the running actor of an
//! organization this node owns, or acquires the organization's lease and starts its actor under the
//! organization supervisor; an organization a live other node owns is answered
//! [`Error::OwnedElsewhere`] (503 `owned_elsewhere`). HTTP ingest, session replay and score delivery all
//! go through it, so there is one place where forwarding to the owner will go (`../shared/CLUSTER.md`
//! §3.6).

use sqlx::PgPool;

use super::fanout::Fanout;
use super::org::{OrgArgs, OrgMsg};
use super::org_supervisor::{OrgHandle, OrgSupervisorMsg, SupervisorSlot};
use super::scorer::Scorer;
use crate::cluster::Ownership;
use crate::config::IngestConfig;
use crate::domain::enrichment::OrgContext;
use crate::domain::event::EventsAfter;
use crate::domain::interaction::ScoredInteraction;
use crate::domain::{CustomerId, OrganizationId, Wire};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::store::cache::Cache;
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
}

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
        }
    }

    /// Returns the organization's actor, acquiring the organization and starting its actor on first use.
    pub async fn route(&self, org: OrganizationId) -> Result<OrgHandle, Error> {
        // A node whose heartbeat could not be renewed stops acting as an owner by itself.
        if !self.ownership.valid() {
            return Err(Error::OwnedElsewhere);
        }
        if let Some(handle) = self.orgs.registry.get(org) {
            return Ok(handle);
        }
        // The database is read before the supervisor is asked, so a slow or unreachable PostgreSQL
        // delays only the requests of organizations that are starting, not every request of the node.
        let context = self.org_context(org).await?;
        // Never a second owner: a live other node's organization is answered 503 `owned_elsewhere`.
        let epoch = self.ownership.acquire(org).await?;
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
        };
        let supervisor = self.orgs.get().ok_or(Error::Unavailable("actor system"))?;
        let started = ractor::call_t!(
            supervisor,
            OrgSupervisorMsg::Start,
            self.config.call_timeout.as_millis() as u64,
            Box::new(args)
        )
        .map_err(|e| Error::Internal(anyhow::anyhow!("organization supervisor unreachable: {e}")))?;
        started.map_err(|e| Error::Internal(anyhow::anyhow!(e)))
    }

    /// The organization's actor if it runs on this node; never starts one.
    pub fn local(&self, org: OrganizationId) -> Option<OrgHandle> {
        self.orgs.registry.get(org)
    }

    /// Stops an organization actor whose lease ended (its write was fenced); its supervisor then forgets
    /// it, and the next request acquires the organization again or learns who owns it.
    pub fn lost(&self, handle: &OrgHandle) {
        handle.actor.stop(Some("lease lost".to_owned()));
    }

    /// The organization's name and id, as its rows are enriched with; 404 for an unknown organization.
    pub async fn org_context(&self, org: OrganizationId) -> Result<OrgContext, Error> {
        let name = interactions::org_name(&self.pool, org)
            .await?
            .ok_or(Error::NotFound("organization"))?;
        Ok(OrgContext { id: org, name })
    }

    /// This node's leases.
    pub fn ownership(&self) -> &Ownership {
        &self.ownership
    }

    /// This node's sessions, by organization.
    pub fn fanout(&self) -> &Fanout {
        &self.fanout
    }

    /// Hands the model's scores to the organization's actor, which routes them to the customer's.
    pub async fn scored(&self, org: OrganizationId, scored: ScoredInteraction) -> Result<(), Error> {
        let handle = self.route(org).await?;
        handle
            .actor
            .cast(OrgMsg::Scored(Wire::new(scored)))
            .map_err(|e| Error::Internal(anyhow::anyhow!("organization actor unreachable: {e}")))
    }

    /// Tells the customer's live actor (if any) that its row changed.
    pub fn customer_changed(&self, org: OrganizationId, customer: CustomerId) {
        if let Some(handle) = self.local(org) {
            let _ = handle.actor.cast(OrgMsg::CustomerChanged(customer.to_string()));
        }
    }

    /// Returns the organization's buffered events after `after` (a session's replay).
    pub async fn events_after(&self, org: OrganizationId, after: u64) -> Result<EventsAfter, Error> {
        let handle = self.route(org).await?;
        let reply = ractor::call_t!(handle.actor, OrgMsg::EventsAfter, 5_000, after)
            .map_err(|e| Error::Internal(anyhow::anyhow!("organization actor unreachable: {e}")))?;
        reply.0.map_err(|e| Error::Internal(anyhow::anyhow!(e)))
    }

    /// Returns how many customer actors of the organization are live.
    pub async fn live_customers(&self, org: OrganizationId) -> Result<u64, Error> {
        let handle = self.route(org).await?;
        ractor::call_t!(handle.actor, OrgMsg::LiveCustomers, 5_000)
            .map_err(|e| Error::Internal(anyhow::anyhow!("organization actor unreachable: {e}")))
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
