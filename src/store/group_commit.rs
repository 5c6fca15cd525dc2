//! Group commit of single interactions (R8.2, R2.4–2.6): the single ingests of every organization a node
//! owns share transactions, so one WAL flush acknowledges many of them.
//!
//! A customer's actor hands its interaction to the node's [`GroupCommit`] and waits for the answer.
//! `writers` tasks take what is queued: each waits for the first interaction (so an idle node adds no
//! delay), takes whatever else is waiting (up to `max_group`), and stores the group in one transaction:
//! each organization fenced at its owner's epoch, the rows in one multi-row statement, each customer's
//! counters once, one commit. While one writer commits, the next group gathers behind it. Everyone in a
//! group is answered only after the commit that contains its row.
//!
//! A failure stays with its cause: an organization whose lease ended fails only its own rows (nothing
//! of it is written); a row the database refuses makes the group go again one row at a time, each in a
//! savepoint, so only that row fails; a deadlock is retried; a connection lost fails the group, whose
//! rows were then never committed (503, as for a single transaction).

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::cache::Cache;
use super::interactions::{self, Row};
use super::org_tx::GroupTx;
use crate::domain::OrganizationId;
use crate::domain::enrichment::Enrichment;
use crate::domain::interaction::{IngestOutcome, NewInteraction};
use crate::error::Error;
use crate::metrics::Metrics;

/// How a node groups its single ingests.
#[derive(Debug, Clone, Copy)]
pub struct GroupSettings {
    /// Most interactions in one transaction; 1 stores each in a transaction of its own.
    pub max_group: usize,
    /// Groups in flight at once (one connection each).
    pub writers: usize,
}

/// The node's group committer; cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Pending>,
}

struct Pending {
    org: OrganizationId,
    epoch: i64,
    new: NewInteraction,
    enrichment: Enrichment,
    reply: oneshot::Sender<Result<IngestOutcome, Error>>,
}

impl Pending {
    /// The row this interaction is stored as.
    fn row(&self) -> Row<'_> {
        Row {
            org: self.org,
            new: &self.new,
            enrichment: &self.enrichment,
        }
    }
}

/// How many times a group is tried when its transaction fails for a transient reason (a deadlock).
const GROUP_ATTEMPTS: u32 = 3;

impl GroupCommit {
    /// Starts the writers. They end when the last handle is dropped.
    pub fn start(pool: PgPool, cache: Cache, settings: GroupSettings, metrics: Metrics) -> Self {
        let max_group = settings.max_group.max(1);
        let writers = settings.writers.max(1);
        // Every sender waits for its answer, so what is queued is bounded by the requests in flight
        // (org_max_inflight per organization); the bound only keeps a burst from queueing without one.
        let (queue, rx) = mpsc::channel(max_group * writers * 8);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..writers {
            let (rx, pool, cache, metrics) = (rx.clone(), pool.clone(), cache.clone(), metrics.clone());
            tokio::spawn(async move {
                loop {
                    let group = {
                        let mut rx = rx.lock().await;
                        let Some(first) = rx.recv().await else { return };
                        let mut group = vec![first];
                        while group.len() < max_group {
                            match rx.try_recv() {
                                Ok(next) => group.push(next),
                                Err(_) => break,
                            }
                        }
                        group
                    };
                    metrics
                        .ingest_group_size
                        .with_label_values(&["single"])
                        .observe(group.len() as f64);
                    // In a task of its own: a panic in one group answers its senders 503 (their replies
                    // are dropped) and leaves the writer serving the next groups.
                    let (pool, cache) = (pool.clone(), cache.clone());
                    let stored = tokio::spawn(async move { commit_group(&pool, &cache, group).await });
                    if let Err(e) = stored.await {
                        tracing::error!(error = %e, "a commit group failed unexpectedly; its requests were answered 503");
                    }
                }
            });
        }
        Self { queue }
    }

    /// Stores one interaction of `org` (as its owner at lease `epoch`) in the next group, and answers
    /// once that group committed: `Created`, `Duplicate` (its idempotency key was used before, or by an
    /// earlier interaction of the same group), or why it was not stored.
    pub async fn insert(
        &self,
        org: OrganizationId,
        epoch: i64,
        new: NewInteraction,
        enrichment: Enrichment,
    ) -> Result<IngestOutcome, Error> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending {
                org,
                epoch,
                new,
                enrichment,
                reply,
            })
            .await
            .map_err(|_| Error::Unavailable("group commit"))?;
        answer.await.map_err(|_| Error::Unavailable("group commit"))?
    }
}

/// Stores a group and answers each of its senders.
async fn commit_group(pool: &PgPool, cache: &Cache, group: Vec<Pending>) {
    let mut attempt = 1;
    let results = loop {
        match try_group(pool, cache, &group).await {
            Ok(results) => break results,
            Err(e) if interactions::is_transient(&e) && attempt < GROUP_ATTEMPTS => {
                tracing::info!(
                    attempt,
                    rows = group.len(),
                    "commit group hit a transient conflict; retrying"
                );
                attempt += 1;
            }
            // The database refused a row: one at a time, so that only the row at fault fails.
            Err(e) if group.len() > 1 && refused_by_data(&e) => {
                tracing::warn!(rows = group.len(), error = ?e, "commit group refused; storing its rows one at a time");
                break match one_by_one(pool, cache, &group).await {
                    Ok(results) => results,
                    Err(e) => group.iter().map(|_| Err(share(&e))).collect(),
                };
            }
            Err(e) => {
                if !matches!(e, Error::Unavailable(_)) {
                    tracing::error!(rows = group.len(), error = ?e, "commit group rolled back");
                }
                break group.iter().map(|_| Err(share(&e))).collect();
            }
        }
    };
    for (pending, result) in group.into_iter().zip(results) {
        let _ = pending.reply.send(result);
    }
}

/// One transaction for the whole group; an organization whose lease ended gets `OwnedElsewhere` for its
/// rows and nothing of it is written.
async fn try_group(
    pool: &PgPool,
    cache: &Cache,
    group: &[Pending],
) -> Result<Vec<Result<IngestOutcome, Error>>, Error> {
    let mut tx = GroupTx::begin(pool, cache).await?;
    let mut owned = Vec::with_capacity(group.len());
    for p in group {
        owned.push(tx.fence(p.org, p.epoch).await?);
    }
    let rows: Vec<Row<'_>> = group
        .iter()
        .zip(&owned)
        .filter(|(_, owned)| **owned)
        .map(|(p, _)| p.row())
        .collect();
    let mut stored = if rows.is_empty() {
        Vec::new()
    } else {
        interactions::insert_rows(&mut tx, &rows).await?
    }
    .into_iter();
    tx.commit().await?;
    Ok(owned
        .into_iter()
        .map(|owned| match owned {
            true => stored
                .next()
                .ok_or_else(|| Error::internal(anyhow::anyhow!("a group row has no outcome"))),
            false => Err(Error::OwnedElsewhere),
        })
        .collect())
}

/// The group again, each row in a savepoint of one transaction: a refused row rolls back only itself.
async fn one_by_one(
    pool: &PgPool,
    cache: &Cache,
    group: &[Pending],
) -> Result<Vec<Result<IngestOutcome, Error>>, Error> {
    let mut tx = GroupTx::begin(pool, cache).await?;
    let mut results = Vec::with_capacity(group.len());
    for p in group {
        if !tx.fence(p.org, p.epoch).await? {
            results.push(Err(Error::OwnedElsewhere));
            continue;
        }
        sqlx::query("SAVEPOINT group_row").execute(&mut *tx).await?;
        match interactions::insert_only(&mut tx, &[p.row()]).await {
            Ok(mut outcome) => {
                sqlx::query("RELEASE SAVEPOINT group_row")
                    .execute(&mut *tx)
                    .await?;
                results.push(
                    outcome
                        .pop()
                        .ok_or_else(|| Error::internal(anyhow::anyhow!("a row has no outcome"))),
                );
            }
            Err(e) if refused_by_data(&e) => {
                sqlx::query("ROLLBACK TO SAVEPOINT group_row")
                    .execute(&mut *tx)
                    .await?;
                tracing::warn!(org = %p.org, customer = %p.new.customer_id, error = ?e, "interaction refused by the database");
                results.push(Err(e));
            }
            Err(e) => return Err(e),
        }
    }
    let created: Vec<IngestOutcome> = results.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
    interactions::bump_created(&mut tx, &created).await?;
    tx.commit().await?;
    Ok(results)
}

/// Tells whether the database refused the data of a statement (a constraint, a missing customer), as
/// opposed to being unreachable, fenced, or in a transient conflict.
fn refused_by_data(e: &Error) -> bool {
    match e {
        Error::Conflict(_) => true,
        Error::Internal(_) => !interactions::is_transient(e),
        _ => false,
    }
}

/// The same failure for each row of a group (an [`Error`] has one owner; its cause stays in the log).
fn share(e: &Error) -> Error {
    match e {
        Error::Unavailable(what) => Error::Unavailable(what),
        Error::OwnedElsewhere => Error::OwnedElsewhere,
        Error::Conflict(m) => Error::Conflict(m.clone()),
        other => Error::internal(anyhow::anyhow!("the interaction's commit group failed: {other}")),
    }
}
