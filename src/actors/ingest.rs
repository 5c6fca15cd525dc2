//! The front door of ingestion: reaches the organization's actor through the [`Router`], admits a
//! request only while the organization has fewer than `org_max_inflight` in flight (so no mailbox grows
//! without bound: a full one answers 503), and stores batches in transactions of `batch_chunk` through
//! their own pool.

use ractor::RpcReplyPort;
use ractor::rpc::CallResult;
use sqlx::PgPool;

use super::org::OrgMsg;
use super::org_supervisor::OrgHandle;
use super::route::{Place, Router};
use super::scorer::Scorer;
use crate::cluster::gateway::{BatchItems, Failure, Forwarded, GatewayMsg, Routed};
use crate::config::IngestConfig;
use crate::domain::interaction::{BatchItem, IngestFailure, IngestOutcome, NewInteraction};
use crate::domain::{FieldError, OrganizationId, Wire};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::store::cache::Cache;
use crate::store::interactions::{self, ItemOutcome};

/// Handle to the ingestion of this node; cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    router: Router,
    batch_pool: PgPool,
    config: IngestConfig,
    scorer: Scorer,
    cache: Cache,
    metrics: Metrics,
}

impl Ingest {
    /// Builds the handle; batches write through `batch_pool`.
    pub fn new(
        router: Router,
        batch_pool: PgPool,
        config: IngestConfig,
        scorer: Scorer,
        cache: Cache,
        metrics: Metrics,
    ) -> Self {
        Self {
            router,
            batch_pool,
            config,
            scorer,
            cache,
            metrics,
        }
    }

    /// Stores one interaction through its customer's actor (R2.4–2.9), on this node or at the
    /// organization's owner. A forward that gets no answer (the owner crashed or is cut off) is retried
    /// once the organization is served again only when the interaction has an idempotency key: the
    /// retry then returns the original row if the first attempt was stored. Without a key the answer
    /// is 503 `node_unavailable`, never a silent duplicate.
    pub async fn ingest(&self, org: OrganizationId, new: NewInteraction) -> Result<IngestOutcome, Error> {
        self.ingest_at(org, new, false).await
    }

    /// Stores an interaction another node forwarded: only as the organization's owner.
    pub async fn ingest_forwarded(
        &self,
        org: OrganizationId,
        new: NewInteraction,
    ) -> Result<IngestOutcome, Error> {
        self.ingest_at(org, new, true).await
    }

    async fn ingest_at(
        &self,
        org: OrganizationId,
        new: NewInteraction,
        forwarded: bool,
    ) -> Result<IngestOutcome, Error> {
        let keyed = new.idempotency_key.is_some();
        self.routed(
            org,
            new,
            forwarded,
            keyed,
            |handle, new| self.ingest_here(org, handle, new),
            GatewayMsg::Ingest,
        )
        .await
    }

    /// Serves a request for `org` here (`here`) or at its owner (`remote` builds the gateway message),
    /// placing it again while its owner changes (a fenced local write stored nothing). A forward that
    /// got no answer is retried only when the request is `keyed` (idempotent); otherwise its outcome is
    /// unknown and the answer is 503 `node_unavailable`.
    async fn routed<B, R, Here, Fut, Remote>(
        &self,
        org: OrganizationId,
        body: B,
        forwarded: bool,
        keyed: bool,
        here: Here,
        remote: Remote,
    ) -> Result<R, Error>
    where
        B: Clone,
        R: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
        Here: Fn(OrgHandle, B) -> Fut,
        Fut: std::future::Future<Output = Result<R, Error>>,
        Remote: Fn(Wire<Forwarded<B>>, RpcReplyPort<Wire<Routed<R>>>) -> GatewayMsg,
    {
        let mut last = Error::OwnedElsewhere;
        let mut retry = self.router.retry();
        while retry.again().await {
            let placed = self.router.place(org, forwarded).await;
            if let Err(e) = &placed {
                tracing::debug!(org = %org, forwarded, error = %e, "not placed");
            }
            let (node, gateway) = match placed? {
                Place::Local(handle) => match here(handle.clone(), body.clone()).await {
                    // Fenced (nothing stored): the organization moved on, so it is placed again.
                    Err(Error::OwnedElsewhere) if !forwarded && self.router.peers().is_clustered() => {
                        tracing::debug!(org = %org, "a local write was fenced; placing again");
                        self.router.gone(org, &handle).await;
                        continue;
                    }
                    other => return other,
                },
                Place::Remote { node, gateway } => (node, gateway),
            };
            let wrapped = self.router.forwarded(org, body.clone());
            match self
                .router
                .forward(org, &node, &gateway, |reply| remote(wrapped, reply))
                .await
            {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(Failure::NotOwner { owner })) => {
                    tracing::debug!(org = %org, node = %node, ?owner, "forwarded to a node that is not the owner; placing again");
                    if let Some(owner) = owner.filter(|o| *o != node) {
                        self.router.remember(org, &owner);
                    }
                    last = Error::OwnedElsewhere;
                }
                Ok(Err(f)) => {
                    tracing::debug!(org = %org, node = %node, failure = ?f, "the owner refused a forwarded request");
                    return Err(f.into_error());
                }
                Err(lost) => {
                    tracing::warn!(org = %org, node = %lost.node, why = %lost.why, keyed, "forwarded request lost");
                    last = lost.into_error();
                    if !keyed {
                        return Err(last);
                    }
                }
            }
        }
        // A clustered node forwards rather than answering "owned elsewhere": out of time, the owner
        // was not reachable.
        if matches!(last, Error::OwnedElsewhere) && !forwarded && self.router.peers().is_clustered() {
            last = Error::NodeUnavailable(
                "the organization is changing owner and was not served in time; retry shortly".to_owned(),
            );
        }
        Err(last)
    }

    async fn ingest_here(
        &self,
        org: OrganizationId,
        handle: OrgHandle,
        new: NewInteraction,
    ) -> Result<IngestOutcome, Error> {
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
                |reply| OrgMsg::Ingest(Wire::new(new), crate::domain::trace::current(), reply),
                Some(self.config.call_timeout),
            )
            .await
            .map_err(|e| Error::internal(anyhow::anyhow!("organization actor unreachable: {e}")))?;
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
                self.router.lost(org, &handle);
                Err(Error::OwnedElsewhere)
            }
            CallResult::Success(Wire(Ok(Err(IngestFailure::Internal(e))))) => {
                Err(Error::internal(anyhow::anyhow!("interaction not stored: {e}")))
            }
            CallResult::Success(Wire(Err(e))) => {
                Err(Error::internal(anyhow::anyhow!("undecodable reply: {e}")))
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
    /// which commits or rolls back on its own, on this node or at the organization's owner (a lost
    /// forward is retried only when every item has an idempotency key, as for single ingests). `items`
    /// holds each item's validation result in order.
    pub async fn ingest_batch(
        &self,
        org: OrganizationId,
        items: BatchItems,
    ) -> Result<Vec<BatchItem>, Error> {
        self.batch_at(org, items, false).await
    }

    /// Stores a batch another node forwarded: only as the organization's owner.
    pub async fn batch_forwarded(
        &self,
        org: OrganizationId,
        items: BatchItems,
    ) -> Result<Vec<BatchItem>, Error> {
        self.batch_at(org, items, true).await
    }

    async fn batch_at(
        &self,
        org: OrganizationId,
        items: BatchItems,
        forwarded: bool,
    ) -> Result<Vec<BatchItem>, Error> {
        let keyed = items
            .iter()
            .all(|i| i.as_ref().map_or(true, |n| n.idempotency_key.is_some()));
        self.routed(
            org,
            items,
            forwarded,
            keyed,
            |handle, items| self.batch_here(org, handle, items),
            GatewayMsg::Batch,
        )
        .await
    }

    async fn batch_here(
        &self,
        org: OrganizationId,
        owner: OrgHandle,
        items: BatchItems,
    ) -> Result<Vec<BatchItem>, Error> {
        let context = self.router.org_context(org).await?;
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
                    self.router.lost(org, &owner);
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
        if !created.is_empty() {
            // Live dashboards and live customer actors learn of the rows; the rows are already durable.
            // Scoring follows, so `sentiment.scored` comes after `interaction.created` here too.
            let _ = owner.actor.cast(OrgMsg::BatchStored(Wire::new(created.clone())));
        }
        for record in &created {
            self.scorer.hand_off(record);
        }
        let missing = vec![FieldError::new("", "item was not processed")];
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| BatchItem::Failed(missing.clone())))
            .collect())
    }
}
