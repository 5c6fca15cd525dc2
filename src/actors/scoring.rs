//! The scoring pipeline (R2.10, R12.8–12.10): every stored interaction with text is scored by the model,
//! in batches of whatever is waiting; the organization's actor stores the scores of a batch in one
//! transaction, moves each customer's average sentiment forward once, and announces `sentiment.scored`.
//!
//! Hand-offs arrive on a bounded queue; when it is full, or the node restarts, or scoring fails, the row
//! simply stays `processed_at IS NULL`: a sweep at start and then periodically feeds every such row back
//! in, so none stays unscored. Storing scores is idempotent (only an unscored row is updated).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::route::Router;
use super::scorer::ScoringQueue;
use super::sentiment::Ml;
use crate::cluster::remote_ml::RemoteMl;
use crate::domain::OrganizationId;
use crate::domain::interaction::{PendingScore, ScoredInteraction};
use crate::domain::sentiment::Scores;
use crate::ml::model::MODEL_NAME;
use crate::store::scores;

/// Rows read per page by the sweep.
const SWEEP_PAGE: i64 = 500;
/// How long a new row is left to the live hand-off before a periodic sweep takes it.
const SWEEP_GRACE: Duration = Duration::from_secs(30);

/// Where texts are scored: this node's model, or (without one, in a cluster) the members with the `ml`
/// role.
#[derive(Clone)]
pub enum Model {
    Local(Ml),
    Remote(RemoteMl),
}

impl Model {
    fn max_batch(&self, local: usize) -> usize {
        match self {
            Self::Local(ml) => ml.config.max_batch,
            Self::Remote(_) => local,
        }
    }

    async fn score(&self, texts: Vec<String>) -> Result<Vec<Scores>, crate::error::Error> {
        match self {
            Self::Local(ml) => Ok(ml
                .predict(&texts)
                .await?
                .into_iter()
                .map(|p| Scores {
                    positive: p.positive,
                    negative: p.negative,
                    neutral: p.neutral,
                })
                .collect()),
            Self::Remote(remote) => remote.score(texts).await,
        }
    }
}

/// Starts the pipeline: the consumer of the queue and the sweep. Both end when `shutdown` turns true.
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    queue: ScoringQueue,
    feed: mpsc::Sender<PendingScore>,
    ml: Model,
    max_batch: usize,
    router: Router,
    pool: sqlx::PgPool,
    sweep_every: Duration,
    takeovers: mpsc::Receiver<()>,
    shutdown: watch::Receiver<bool>,
) {
    let owner = router.ownership().clone();
    tokio::spawn(consume(queue, ml, max_batch, router, shutdown.clone()));
    tokio::spawn(sweep(feed, pool, owner, sweep_every, takeovers, shutdown));
}

/// Scores what the queue holds, in batches of whatever is waiting (up to the model's batch size).
async fn consume(
    mut queue: ScoringQueue,
    ml: Model,
    max_batch: usize,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let max = ml.max_batch(max_batch);
    loop {
        let first = tokio::select! {
            item = queue.0.recv() => match item { Some(item) => item, None => return },
            _ = shutdown.changed() => return,
        };
        let mut batch = vec![first];
        while batch.len() < max {
            match queue.0.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        router
            .metrics()
            .ml_queue_depth
            .with_label_values(&["scoring"])
            .set(queue.0.len() as i64);
        let texts: Vec<String> = batch.iter().map(|p| p.content.clone()).collect();
        tracing::debug!(texts = texts.len(), "scoring a batch of stored interactions");
        let n = texts.len();
        match ml.score(texts).await {
            Ok(predictions) => {
                // The scores of a batch are stored together: one transaction per organization.
                let mut by_org: BTreeMap<OrganizationId, Vec<ScoredInteraction>> = BTreeMap::new();
                for (pending, p) in batch.into_iter().zip(predictions) {
                    by_org
                        .entry(pending.organization_id)
                        .or_default()
                        .push(ScoredInteraction {
                            interaction_id: pending.interaction_id,
                            customer_id: pending.customer_id,
                            positive: p.positive,
                            negative: p.negative,
                            neutral: p.neutral,
                            model: MODEL_NAME.to_owned(),
                        });
                }
                for (org, scored) in by_org {
                    let rows = scored.len();
                    if let Err(e) = router.scored(org, scored, false).await {
                        tracing::warn!(org = %org, rows, error = %e, "scores not delivered; the sweep retries");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(texts = n, error = %e, "scoring failed; the sweep retries these rows");
                // Do not spin while the model is unavailable.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Feeds every unscored row of the organizations this node owns or may take (not those of a live other
/// node) into the queue: all of them at start and after this node took an organization over from a
/// crashed owner (`takeovers`: its rows waited for a dead node), then rows older than a grace period every
/// `sweep_every`.
async fn sweep(
    feed: mpsc::Sender<PendingScore>,
    pool: sqlx::PgPool,
    owner: crate::cluster::Ownership,
    every: Duration,
    mut takeovers: mpsc::Receiver<()>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut first = true;
    loop {
        // While the queue still holds work, a periodic sweep would only queue the same rows again.
        if !first && feed.capacity() < feed.max_capacity() {
            tokio::select! {
                _ = tokio::time::sleep(every) => continue,
                Some(()) = takeovers.recv() => first = true,
                _ = shutdown.changed() => return,
            }
        }
        let cutoff = if first {
            None
        } else {
            Some(chrono::Utc::now() - SWEEP_GRACE)
        };
        let mut after = None;
        let mut fed = 0usize;
        loop {
            let page = match scores::unscored(&pool, after, SWEEP_PAGE, &owner.node().name, owner.lease_ttl())
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "scoring sweep cannot read unscored rows; retrying later");
                    break;
                }
            };
            let Some((last_at, last)) = page.last().map(|(at, p)| (*at, p.interaction_id)) else {
                break;
            };
            let done = page.len() < SWEEP_PAGE as usize;
            for (created_at, pending) in page {
                if cutoff.is_some_and(|c| created_at > c) {
                    continue;
                }
                if feed.send(pending).await.is_err() {
                    return;
                }
                fed += 1;
            }
            if done {
                break;
            }
            after = Some((last_at, last));
        }
        if fed > 0 {
            tracing::info!(rows = fed, "scoring sweep queued unscored interactions");
        }
        first = false;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            Some(()) = takeovers.recv() => first = true,
            _ = shutdown.changed() => return,
        }
    }
}
