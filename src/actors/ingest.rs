//! The front door of ingestion: finds (or starts) the organization's actor, admits a request only while
//! the organization has fewer than `org_max_inflight` in flight (so no mailbox grows without bound: a
//! full one answers 503), and stores batches in transactions of `batch_chunk` through their own pool.

use ractor::rpc::CallResult;
use sqlx::PgPool;

use super::org::{OrgArgs, OrgMsg};
use super::org_supervisor::{OrgHandle, OrgSupervisorMsg, SupervisorSlot};
use crate::config::IngestConfig;
use crate::domain::enrichment::OrgContext;
use crate::domain::event::EventsAfter;
use crate::domain::interaction::{
    IngestFailure, IngestOutcome, InteractionRecord, NewInteraction, ScoredInteraction,
};
use crate::domain::{CustomerId, FieldError, OrganizationId, Wire};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::ml::Scorer;
use crate::store::cache::Cache;
use crate::store::interactions::{self, ItemOutcome};

/// Handle to the ingestion actors of this node; cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    orgs: SupervisorSlot,
    pool: PgPool,
    batch_pool: PgPool,
    config: IngestConfig,
    scorer: Scorer,
    cache: Cache,
    metrics: Metrics,
    fault_injection: bool,
    ownership: crate::cluster::Ownership,
}

/// The result of one batch item.
#[derive(Debug, Clone)]
pub enum BatchItem {
    Created(InteractionRecord),
    Duplicate(InteractionRecord),
    Failed(Vec<FieldError>),
}

/// Everything [`Ingest::new`] needs.
pub struct IngestParts {
    pub orgs: SupervisorSlot,
    pub pool: PgPool,
    pub batch_pool: PgPool,
    pub config: IngestConfig,
    pub scorer: Scorer,
    pub cache: Cache,
    pub metrics: Metrics,
    pub fault_injection: bool,
    /// This node's leases: organization actors start only on organizations it owns.
    pub ownership: crate::cluster::Ownership,
}

impl Ingest {
    /// Builds the handle.
    pub fn new(p: IngestParts) -> Self {
        Self {
            orgs: p.orgs,
            pool: p.pool,
            batch_pool: p.batch_pool,
            config: p.config,
            scorer: p.scorer,
            cache: p.cache,
            metrics: p.metrics,
            fault_injection: p.fault_injection,
            ownership: p.ownership,
        }
    }

    /// Returns the organization's actor, starting it on first use.
    async fn org(&self, org: OrganizationId) -> Result<OrgHandle, Error> {
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

    /// Stops an organization actor whose lease ended; its supervisor then forgets it, and the next
    /// request acquires the organization again (or learns who owns it).
    async fn drop_org(&self, _org: OrganizationId, handle: &OrgHandle) {
        handle.actor.stop(Some("lease lost".to_owned()));
    }

    async fn org_context(&self, org: OrganizationId) -> Result<OrgContext, Error> {
        let name = interactions::org_name(&self.pool, org)
            .await?
            .ok_or(Error::NotFound("organization"))?;
        Ok(OrgContext { id: org, name })
    }

    /// This node's leases.
    pub fn ownership(&self) -> &crate::cluster::Ownership {
        &self.ownership
    }

    /// Stores one interaction through its customer's actor (R2.4–2.9).
    pub async fn ingest(&self, org: OrganizationId, new: NewInteraction) -> Result<IngestOutcome, Error> {
        let handle = self.org(org).await?;
        let Ok(_permit) = handle.permits.clone().try_acquire_owned() else {
            self.metrics
                .ingest_rejected
                .with_label_values(&["overloaded"])
                .inc();
            return Err(Error::Overloaded(
                "the organization's ingest queue is full; retry shortly",
            ));
        };
        let call = handle
            .actor
            .call(
                |reply| OrgMsg::Ingest(Wire::new(new), reply),
                Some(self.config.call_timeout),
            )
            .await
            .map_err(|e| Error::Internal(anyhow::anyhow!("organization actor unreachable: {e}")))?;
        match call {
            CallResult::Success(Wire(Ok(Ok(outcome)))) => Ok(outcome),
            CallResult::Success(Wire(Ok(Err(IngestFailure::CustomerNotFound)))) => {
                Err(Error::NotFound("customer"))
            }
            CallResult::Success(Wire(Ok(Err(IngestFailure::Unavailable)))) => {
                Err(Error::Unavailable("database"))
            }
            CallResult::Success(Wire(Ok(Err(IngestFailure::NotOwner)))) => {
                // The lease moved on: this actor must not serve again; the next request re-acquires.
                self.drop_org(org, &handle).await;
                Err(Error::OwnedElsewhere)
            }
            CallResult::Success(Wire(Ok(Err(IngestFailure::Internal(e))))) => {
                Err(Error::Internal(anyhow::anyhow!("interaction not stored: {e}")))
            }
            CallResult::Success(Wire(Err(e))) => {
                Err(Error::Internal(anyhow::anyhow!("undecodable reply: {e}")))
            }
            // The customer's actor ended before answering (it crashed): nothing was acknowledged, and the
            // next attempt reaches a fresh actor.
            CallResult::SenderError => Err(Error::Overloaded(
                "the customer's actor restarted; retry the request",
            )),
            CallResult::Timeout => Err(Error::Overloaded(
                "the customer's actor did not answer in time; retry",
            )),
        }
    }

    /// Stores a batch (R2.11, R15.1–15.6): the valid items in transactions of `batch_chunk`, each of
    /// which commits or rolls back on its own. `items` holds each item's validation result in order.
    pub async fn ingest_batch(
        &self,
        org: OrganizationId,
        items: Vec<Result<NewInteraction, Vec<FieldError>>>,
    ) -> Result<Vec<BatchItem>, Error> {
        let context = self.org_context(org).await?;
        let owner = self.org(org).await?;
        let mut results: Vec<Option<BatchItem>> = vec![None; items.len()];
        let mut valid = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            match item {
                Ok(new) => valid.push((index, new)),
                Err(errors) => results[index] = Some(BatchItem::Failed(errors)),
            }
        }
        let total_chunks = valid.len().div_ceil(self.config.batch_chunk);
        let mut chunks = valid.into_iter().peekable();
        let mut created = Vec::new();
        let mut done = 0;
        while chunks.peek().is_some() {
            let chunk: Vec<(usize, NewInteraction)> = chunks.by_ref().take(self.config.batch_chunk).collect();
            let indexes: Vec<usize> = chunk.iter().map(|(i, _)| *i).collect();
            let outcomes = match interactions::store_chunk(
                &self.batch_pool,
                &self.cache,
                &context,
                chunk,
                Some(owner.epoch),
            )
            .await
            {
                Ok(outcomes) => outcomes,
                // Nothing is committed yet: the whole request can honestly be answered 503.
                Err(Error::Unavailable(what)) if done == 0 => return Err(Error::Unavailable(what)),
                Err(Error::OwnedElsewhere) if done == 0 => {
                    self.drop_org(org, &owner).await;
                    return Err(Error::OwnedElsewhere);
                }
                Err(e) => {
                    let reason = format!("not stored: {e}; retry this item");
                    indexes
                        .into_iter()
                        .map(|i| (i, ItemOutcome::Failed(vec![FieldError::new("", reason.clone())])))
                        .collect()
                }
            };
            for (index, outcome) in outcomes {
                results[index] = Some(match outcome {
                    ItemOutcome::Stored(stored) => match *stored {
                        IngestOutcome::Created(record) => {
                            created.push(record.clone());
                            BatchItem::Created(record)
                        }
                        IngestOutcome::Duplicate(record) => BatchItem::Duplicate(record),
                    },
                    ItemOutcome::Failed(errors) => BatchItem::Failed(errors),
                });
            }
            done += 1;
            tracing::debug!(org = %org, chunk = done, chunks = total_chunks, "batch chunk stored");
        }
        for record in &created {
            self.scorer.hand_off(record);
        }
        if !created.is_empty() {
            // Live dashboards and live customer actors learn of the rows; the rows are already durable.
            let _ = owner.actor.cast(OrgMsg::BatchStored(Wire::new(created)));
        }
        let missing = vec![FieldError::new("", "item was not processed")];
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| BatchItem::Failed(missing.clone())))
            .collect())
    }

    /// Hands the model's scores to the organization's actor, which routes them to the customer's.
    pub async fn scored(&self, org: OrganizationId, scored: ScoredInteraction) -> Result<(), Error> {
        let handle = self.org(org).await?;
        handle
            .actor
            .cast(OrgMsg::Scored(Wire::new(scored)))
            .map_err(|e| Error::Internal(anyhow::anyhow!("organization actor unreachable: {e}")))
    }

    /// Tells the customer's live actor (if any) that its row changed.
    pub async fn customer_changed(&self, org: OrganizationId, customer: CustomerId) {
        if let Some(handle) = self.orgs.registry.get(org) {
            let _ = handle.actor.cast(OrgMsg::CustomerChanged(customer.to_string()));
        }
    }

    /// Returns the organization's buffered events after `after`.
    pub async fn events_after(&self, org: OrganizationId, after: u64) -> Result<EventsAfter, Error> {
        let handle = self.org(org).await?;
        let reply = ractor::call_t!(handle.actor, OrgMsg::EventsAfter, 5_000, after)
            .map_err(|e| Error::Internal(anyhow::anyhow!("organization actor unreachable: {e}")))?;
        reply.0.map_err(|e| Error::Internal(anyhow::anyhow!(e)))
    }

    /// Returns how many customer actors of the organization are live.
    pub async fn live_customers(&self, org: OrganizationId) -> Result<u64, Error> {
        let handle = self.org(org).await?;
        ractor::call_t!(handle.actor, OrgMsg::LiveCustomers, 5_000)
            .map_err(|e| Error::Internal(anyhow::anyhow!("organization actor unreachable: {e}")))
    }

    /// Makes a live customer actor panic, when fault injection is enabled (crash tests).
    pub async fn inject_customer_panic(
        &self,
        org: OrganizationId,
        customer: CustomerId,
    ) -> Result<(), Error> {
        let handle = self.org(org).await?;
        let _ = handle
            .actor
            .cast(OrgMsg::InjectCustomerPanic(customer.to_string()));
        Ok(())
    }
}
