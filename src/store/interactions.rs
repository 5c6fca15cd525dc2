//! Storing interactions: one at a time by their customer's actor, or a batch chunk in one transaction. Their
//! scores are in `scores`, reading them in bulk in `listing`.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::cache::Cache;
use super::org_tx::OrgTx;
use crate::domain::enrichment::{Enrichment, OrgContext};
use crate::domain::interaction::{Channel, IngestOutcome, InteractionRecord, NewInteraction};
use crate::domain::{CustomerId, FieldError, InteractionId, OrganizationId};
use crate::error::Error;

/// Inserts one interaction and bumps its customer's counters, inside `tx` (R2.4–2.6). A repeated
/// idempotency key returns the first interaction and changes nothing.
pub async fn insert(
    tx: &mut OrgTx,
    new: &NewInteraction,
    enrichment: &Enrichment,
) -> Result<IngestOutcome, Error> {
    let org = tx.org();
    let tx: &mut sqlx::PgConnection = tx;
    let outcome = insert_row(tx, org, new, enrichment).await?;
    if matches!(outcome, IngestOutcome::Created(_)) {
        bump_customers(tx, org, &[new.customer_id], &[1], &[new.occurred_at]).await?;
    }
    Ok(outcome)
}

async fn by_idempotency_key(
    tx: &mut sqlx::PgConnection,
    org: OrganizationId,
    key: &str,
) -> Result<InteractionRecord, Error> {
    Ok(sqlx::query_as!(
        InteractionRecord,
        r#"SELECT id AS "id: InteractionId", organization_id AS "organization_id: OrganizationId",
                  customer_id AS "customer_id: CustomerId", channel AS "channel: Channel", event_type, content,
                  occurred_at, metadata::text AS "metadata!", enrichment::text AS "enrichment!", segment,
                  idempotency_key, sentiment_positive, sentiment_negative, sentiment_neutral, sentiment_score,
                  sentiment_label::text AS sentiment_label, sentiment_confidence, processed_at, created_at
           FROM customer_interactions WHERE organization_id = $1 AND idempotency_key = $2"#,
        org.as_uuid(),
        key
    )
    .fetch_one(tx)
    .await?)
}

/// Adds `counts[i]` interactions to customer `ids[i]` and moves its last_seen_at forward to `seen[i]`.
async fn bump_customers(
    tx: &mut sqlx::PgConnection,
    org: OrganizationId,
    ids: &[CustomerId],
    counts: &[i64],
    seen: &[DateTime<Utc>],
) -> Result<(), Error> {
    let ids: Vec<uuid::Uuid> = ids.iter().map(CustomerId::as_uuid).collect();
    if ids.len() > 1 {
        // Concurrent batches touch overlapping customers: taking the row locks in id order first means
        // two transactions never wait on each other in a cycle (a deadlock would roll a chunk back).
        sqlx::query!(
            "SELECT id FROM customers WHERE organization_id = $1 AND id = ANY($2) ORDER BY id FOR NO KEY UPDATE",
            org.as_uuid(),
            &ids
        )
        .fetch_all(&mut *tx)
        .await?;
    }
    sqlx::query!(
        "UPDATE customers c SET interaction_count = c.interaction_count + v.n,
                last_seen_at = GREATEST(c.last_seen_at, v.seen)
         FROM UNNEST($2::uuid[], $3::bigint[], $4::timestamptz[]) AS v(id, n, seen)
         WHERE c.organization_id = $1 AND c.id = v.id",
        org.as_uuid(),
        &ids,
        counts,
        seen
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Returns one interaction of this organization.
pub async fn get(
    pool: &PgPool,
    org: OrganizationId,
    id: InteractionId,
) -> Result<Option<InteractionRecord>, Error> {
    Ok(sqlx::query_as!(
        InteractionRecord,
        r#"SELECT id AS "id: InteractionId", organization_id AS "organization_id: OrganizationId",
                  customer_id AS "customer_id: CustomerId", channel AS "channel: Channel", event_type, content,
                  occurred_at, metadata::text AS "metadata!", enrichment::text AS "enrichment!", segment,
                  idempotency_key, sentiment_positive, sentiment_negative, sentiment_neutral, sentiment_score,
                  sentiment_label::text AS sentiment_label, sentiment_confidence, processed_at, created_at
           FROM customer_interactions WHERE organization_id = $1 AND id = $2"#,
        org.as_uuid(),
        id.as_uuid()
    )
    .fetch_optional(pool)
    .await?)
}

/// Returns the organization's name, for the enrichment's organization context.
pub async fn org_name(pool: &PgPool, org: OrganizationId) -> Result<Option<String>, Error> {
    Ok(
        sqlx::query_scalar!("SELECT name FROM organizations WHERE id = $1", org.as_uuid())
            .fetch_optional(pool)
            .await?,
    )
}

/// The outcome of one item of a batch.
#[derive(Debug, Clone)]
pub enum ItemOutcome {
    Stored(Box<IngestOutcome>),
    Failed(Vec<FieldError>),
}

/// Stores one chunk of a batch (at most `batch_chunk` items) in a single transaction (R15.1–15.3).
///
/// Items naming a customer that does not exist fail on their own; the others are inserted together. If
/// the transaction fails, nothing of it remains, and every item that was part of it is reported failed
/// with the reason.
pub async fn store_chunk(
    pool: &PgPool,
    cache: &Cache,
    org: &OrgContext,
    items: Vec<(usize, NewInteraction)>,
    fence: Option<i64>,
) -> Result<Vec<(usize, ItemOutcome)>, Error> {
    let wanted: Vec<uuid::Uuid> = items
        .iter()
        .map(|(_, n)| n.customer_id.as_uuid())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let segments: HashMap<CustomerId, Option<String>> = sqlx::query!(
        r#"SELECT id AS "id: CustomerId", segment FROM customers WHERE organization_id = $1 AND id = ANY($2)"#,
        org.id.as_uuid(),
        &wanted
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.id, r.segment))
    .collect();

    let mut outcomes = Vec::with_capacity(items.len());
    let mut known = Vec::with_capacity(items.len());
    for (index, new) in items {
        match segments.get(&new.customer_id) {
            Some(segment) => known.push((index, new, segment.clone())),
            None => outcomes.push((
                index,
                ItemOutcome::Failed(vec![FieldError::new("customerId", "customer not found")]),
            )),
        }
    }
    if known.is_empty() {
        return Ok(outcomes);
    }

    let mut attempt = 1;
    let result = loop {
        match insert_all(pool, cache, org, &known, fence).await {
            // A deadlock or serialization failure is another transaction's timing, not this data's
            // fault: the whole chunk is simply tried again.
            Err(e) if is_transient(&e) && attempt < CHUNK_ATTEMPTS => {
                tracing::info!(org = %org.id, attempt, "batch chunk hit a transient conflict; retrying");
                attempt += 1;
            }
            other => break other,
        }
    };
    match result {
        // This node lost the organization: nothing of the chunk was stored, and the caller says so.
        Err(Error::OwnedElsewhere) => return Err(Error::OwnedElsewhere),
        Ok(stored) => outcomes.extend(
            stored
                .into_iter()
                .map(|(i, s)| (i, ItemOutcome::Stored(Box::new(s)))),
        ),
        Err(e) => {
            let reason = rollback_reason(&e);
            tracing::warn!(org = %org.id, items = known.len(), error = ?e, "batch chunk rolled back");
            outcomes.extend(known.iter().map(|(index, _, _)| {
                (
                    *index,
                    ItemOutcome::Failed(vec![FieldError::new("", reason.clone())]),
                )
            }));
        }
    }
    outcomes.sort_by_key(|(i, _)| *i);
    Ok(outcomes)
}

async fn insert_all(
    pool: &PgPool,
    cache: &Cache,
    org: &OrgContext,
    items: &[(usize, NewInteraction, Option<String>)],
    fence: Option<i64>,
) -> Result<Vec<(usize, IngestOutcome)>, Error> {
    let mut tx = match fence {
        Some(epoch) => OrgTx::owner(pool, cache, org.id, epoch).await?,
        None => OrgTx::unowned(pool, cache, org.id).await?,
    };
    let mut stored = Vec::with_capacity(items.len());
    let mut bumps: HashMap<CustomerId, (i64, DateTime<Utc>)> = HashMap::new();
    for (index, new, segment) in items {
        let enrichment = Enrichment {
            organization: org.clone(),
            segment: segment.clone(),
            device: new.device.clone(),
            geo: new.geo.clone(),
        };
        let outcome = insert_row(&mut tx, org.id, new, &enrichment).await?;
        if matches!(outcome, IngestOutcome::Created(_)) {
            let entry = bumps.entry(new.customer_id).or_insert((0, new.occurred_at));
            entry.0 += 1;
            entry.1 = entry.1.max(new.occurred_at);
        }
        stored.push((*index, outcome));
    }
    let mut ids = Vec::with_capacity(bumps.len());
    let mut counts = Vec::with_capacity(bumps.len());
    let mut seen = Vec::with_capacity(bumps.len());
    for (id, (n, at)) in bumps {
        ids.push(id);
        counts.push(n);
        seen.push(at);
    }
    bump_customers(&mut tx, org.id, &ids, &counts, &seen).await?;
    tx.commit().await?;
    Ok(stored)
}

/// Inserts one row, or finds the first row with its idempotency key; the caller updates the counters
/// (once per row for single ingest, once per chunk for batches).
async fn insert_row(
    tx: &mut sqlx::PgConnection,
    org: OrganizationId,
    new: &NewInteraction,
    enrichment: &Enrichment,
) -> Result<IngestOutcome, Error> {
    let inserted = sqlx::query_as!(
        InteractionRecord,
        r#"INSERT INTO customer_interactions
               (organization_id, customer_id, channel, event_type, content, occurred_at, metadata, enrichment,
                segment, idempotency_key)
           VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8::text::jsonb, $9, $10)
           ON CONFLICT (organization_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
           RETURNING id AS "id: InteractionId", organization_id AS "organization_id: OrganizationId",
                     customer_id AS "customer_id: CustomerId", channel AS "channel: Channel", event_type, content,
                     occurred_at, metadata::text AS "metadata!", enrichment::text AS "enrichment!", segment,
                     idempotency_key, sentiment_positive, sentiment_negative, sentiment_neutral, sentiment_score,
                     sentiment_label::text AS sentiment_label, sentiment_confidence, processed_at, created_at"#,
        org.as_uuid(),
        new.customer_id.as_uuid(),
        new.channel as Channel,
        new.event_type,
        new.content.as_deref(),
        new.occurred_at,
        new.metadata,
        enrichment.to_json(),
        enrichment.segment.as_deref(),
        new.idempotency_key.as_deref()
    )
    .fetch_optional(&mut *tx)
    .await?;
    match inserted {
        Some(record) => Ok(IngestOutcome::Created(record)),
        // ON CONFLICT only skips a row whose idempotency key was used before.
        None => {
            let first =
                by_idempotency_key(tx, org, new.idempotency_key.as_deref().unwrap_or_default()).await?;
            Ok(IngestOutcome::Duplicate(first))
        }
    }
}

/// How many times a chunk is tried when its transaction fails for a transient reason.
const CHUNK_ATTEMPTS: u32 = 3;

/// The database error code of an internal error, if it came from PostgreSQL.
fn db_code(e: &Error) -> Option<String> {
    match e {
        Error::Internal(cause) => cause
            .downcast_ref::<sqlx::Error>()
            .and_then(|s| s.as_database_error())
            .and_then(|d| d.code().map(|c| c.into_owned())),
        _ => None,
    }
}

/// Deadlocks (40P01) and serialization failures (40001) succeed when simply retried.
fn is_transient(e: &Error) -> bool {
    matches!(db_code(e).as_deref(), Some("40P01" | "40001"))
}

/// Says why a chunk's transaction failed, in terms a client can act on, without leaking SQL.
fn rollback_reason(e: &Error) -> String {
    match e {
        Error::Unavailable(_) => {
            "database unavailable; this item's transaction of its chunk was rolled back, retry it".to_owned()
        }
        Error::Conflict(_) => "a conflicting write rolled back this item's chunk; retry it".to_owned(),
        Error::Internal(cause) => match cause
            .downcast_ref::<sqlx::Error>()
            .and_then(|s| s.as_database_error())
        {
            Some(db) => format!(
                "the database rejected this item's chunk ({}); no item of the chunk was stored",
                db.constraint().map_or_else(
                    || "constraint violation".to_owned(),
                    |c| format!("constraint {c}")
                )
            ),
            None => "internal error; no item of this chunk was stored".to_owned(),
        },
        other => format!("{other}; no item of this chunk was stored"),
    }
}
