//! Storing interactions, always set-based: the single interactions of a commit group
//! (`group_commit`) and each chunk of a batch go in as one multi-row statement with one counter update
//! per customer. Their scores are in `scores`, reading them in bulk in `listing`.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::cache::Cache;
use super::org_tx::OrgTx;
use crate::domain::enrichment::{Enrichment, OrgContext};
use crate::domain::interaction::{Channel, IngestOutcome, InteractionRecord, NewInteraction};
use crate::domain::{CustomerId, FieldError, InteractionId, OrganizationId};
use crate::error::Error;

/// One interaction to store, with the organization it belongs to and the enrichment it is stored with.
pub struct Row<'a> {
    pub org: OrganizationId,
    pub new: &'a NewInteraction,
    pub enrichment: &'a Enrichment,
}

/// Inserts rows (of one or several organizations) in one statement and bumps their customers' counters
/// once per customer, inside `tx` (R2.4–2.6, R15.1). Returns each row's outcome, in order: a repeated
/// idempotency key (stored before, or used by an earlier row of the same call) returns the first row and
/// changes nothing. One bad row fails the statement, and so the caller's transaction or savepoint.
pub async fn insert_rows(tx: &mut sqlx::PgConnection, rows: &[Row<'_>]) -> Result<Vec<IngestOutcome>, Error> {
    let outcomes = insert_only(tx, rows).await?;
    bump_created(tx, &outcomes).await?;
    Ok(outcomes)
}

/// The multi-row insert of [`insert_rows`] without the counters.
pub(super) async fn insert_only(
    tx: &mut sqlx::PgConnection,
    rows: &[Row<'_>],
) -> Result<Vec<IngestOutcome>, Error> {
    let n = rows.len();
    // The ids are chosen here, so each returned row is matched to its item whatever order RETURNING
    // gives them in.
    let ids: Vec<uuid::Uuid> = (0..n).map(|_| uuid::Uuid::new_v4()).collect();
    let mut orgs = Vec::with_capacity(n);
    let mut customers = Vec::with_capacity(n);
    let mut channels = Vec::with_capacity(n);
    let mut event_types = Vec::with_capacity(n);
    let mut contents: Vec<Option<String>> = Vec::with_capacity(n);
    let mut occurred = Vec::with_capacity(n);
    let mut metadata = Vec::with_capacity(n);
    let mut enrichments = Vec::with_capacity(n);
    let mut segments: Vec<Option<String>> = Vec::with_capacity(n);
    let mut keys: Vec<Option<String>> = Vec::with_capacity(n);
    for row in rows {
        orgs.push(row.org.as_uuid());
        customers.push(row.new.customer_id.as_uuid());
        channels.push(row.new.channel.as_str().to_owned());
        event_types.push(row.new.event_type.clone());
        contents.push(row.new.content.clone());
        occurred.push(row.new.occurred_at);
        metadata.push(row.new.metadata.clone());
        enrichments.push(row.enrichment.to_json());
        segments.push(row.enrichment.segment.clone());
        keys.push(row.new.idempotency_key.clone());
    }
    // In item order (WITH ORDINALITY), so of two items with the same key the first is stored.
    let inserted = sqlx::query_as!(
        InteractionRecord,
        r#"INSERT INTO customer_interactions
               (id, organization_id, customer_id, channel, event_type, content, occurred_at, metadata, enrichment,
                segment, idempotency_key)
           SELECT v.id, v.org, v.customer, v.channel::interaction_channel, v.event_type, v.content, v.occurred_at,
                  v.metadata::jsonb, v.enrichment::jsonb, v.segment, v.key
           FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
                       $8::text[], $9::text[], $10::text[], $11::text[])
                WITH ORDINALITY AS v(id, org, customer, channel, event_type, content, occurred_at, metadata,
                                     enrichment, segment, key, ord)
           ORDER BY v.ord
           ON CONFLICT (organization_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
           RETURNING id AS "id: InteractionId", organization_id AS "organization_id: OrganizationId",
                     customer_id AS "customer_id: CustomerId", channel AS "channel: Channel", event_type, content,
                     occurred_at, metadata::text AS "metadata!", enrichment::text AS "enrichment!", segment,
                     idempotency_key, sentiment_positive, sentiment_negative, sentiment_neutral, sentiment_score,
                     sentiment_label::text AS sentiment_label, sentiment_confidence, processed_at, created_at"#,
        &ids,
        &orgs,
        &customers,
        &channels,
        &event_types,
        &contents as &[Option<String>],
        &occurred,
        &metadata,
        &enrichments,
        &segments as &[Option<String>],
        &keys as &[Option<String>]
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut created: HashMap<uuid::Uuid, InteractionRecord> =
        inserted.into_iter().map(|r| (r.id.as_uuid(), r)).collect();
    // ON CONFLICT only skips a row whose idempotency key was used before (in this call or earlier): those
    // are answered with the first row, all read in one statement.
    let skipped: Vec<usize> = (0..n).filter(|i| !created.contains_key(&ids[*i])).collect();
    let mut firsts: HashMap<(OrganizationId, String), InteractionRecord> = HashMap::new();
    if !skipped.is_empty() {
        let skipped_orgs: Vec<uuid::Uuid> = skipped.iter().map(|i| orgs[*i]).collect();
        let skipped_keys: Vec<String> = skipped
            .iter()
            .map(|i| keys[*i].clone().unwrap_or_default())
            .collect();
        firsts = sqlx::query_as!(
            InteractionRecord,
            r#"SELECT id AS "id: InteractionId", organization_id AS "organization_id: OrganizationId",
                      customer_id AS "customer_id: CustomerId", channel AS "channel: Channel", event_type, content,
                      occurred_at, metadata::text AS "metadata!", enrichment::text AS "enrichment!", segment,
                      idempotency_key, sentiment_positive, sentiment_negative, sentiment_neutral, sentiment_score,
                      sentiment_label::text AS sentiment_label, sentiment_confidence, processed_at, created_at
               FROM customer_interactions
               WHERE (organization_id, idempotency_key) IN (SELECT * FROM UNNEST($1::uuid[], $2::text[]))"#,
            &skipped_orgs,
            &skipped_keys
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| ((r.organization_id, r.idempotency_key.clone().unwrap_or_default()), r))
        .collect();
    }
    let mut outcomes = Vec::with_capacity(n);
    for (i, row) in rows.iter().enumerate() {
        if let Some(record) = created.remove(&ids[i]) {
            outcomes.push(IngestOutcome::Created(record));
            continue;
        }
        let key = (row.org, row.new.idempotency_key.clone().unwrap_or_default());
        match firsts.get(&key) {
            Some(first) => outcomes.push(IngestOutcome::Duplicate(first.clone())),
            None => {
                return Err(Error::internal(anyhow::anyhow!(
                    "an interaction was neither inserted nor found by its idempotency key"
                )));
            }
        }
    }
    Ok(outcomes)
}

/// Adds the created rows of `outcomes` to their customers' counters: once per customer, however many
/// rows it got.
pub(super) async fn bump_created(
    tx: &mut sqlx::PgConnection,
    outcomes: &[IngestOutcome],
) -> Result<(), Error> {
    let mut bumps: BTreeMap<(uuid::Uuid, uuid::Uuid), (i64, DateTime<Utc>)> = BTreeMap::new();
    for outcome in outcomes {
        if let IngestOutcome::Created(r) = outcome {
            let entry = bumps
                .entry((r.organization_id.as_uuid(), r.customer_id.as_uuid()))
                .or_insert((0, r.occurred_at));
            entry.0 += 1;
            entry.1 = entry.1.max(r.occurred_at);
        }
    }
    if bumps.is_empty() {
        return Ok(());
    }
    let mut orgs = Vec::with_capacity(bumps.len());
    let mut ids = Vec::with_capacity(bumps.len());
    let mut counts = Vec::with_capacity(bumps.len());
    let mut seen = Vec::with_capacity(bumps.len());
    for ((org, id), (n, at)) in bumps {
        orgs.push(org);
        ids.push(id);
        counts.push(n);
        seen.push(at);
    }
    bump_customers(tx, &orgs, &ids, &counts, &seen).await
}

/// Adds `counts[i]` interactions to customer `ids[i]` of organization `orgs[i]` and moves its
/// last_seen_at forward to `seen[i]`.
///
/// Every writer of several customer rows (groups of single ingests, batch chunks, scores) locks them in
/// (organization, id) order first, so two transactions never wait on each other in a cycle (a deadlock
/// would roll one back).
async fn bump_customers(
    tx: &mut sqlx::PgConnection,
    orgs: &[uuid::Uuid],
    ids: &[uuid::Uuid],
    counts: &[i64],
    seen: &[DateTime<Utc>],
) -> Result<(), Error> {
    if ids.len() > 1 {
        lock_customers(tx, orgs, ids).await?;
    }
    sqlx::query!(
        "UPDATE customers c SET interaction_count = c.interaction_count + v.n,
                last_seen_at = GREATEST(c.last_seen_at, v.seen)
         FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::timestamptz[]) AS v(org, id, n, seen)
         WHERE c.organization_id = v.org AND c.id = v.id",
        orgs,
        ids,
        counts,
        seen
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Locks customer rows in (organization, id) order (see [`bump_customers`]).
pub(super) async fn lock_customers(
    tx: &mut sqlx::PgConnection,
    orgs: &[uuid::Uuid],
    ids: &[uuid::Uuid],
) -> Result<(), Error> {
    sqlx::query!(
        "SELECT c.id FROM customers c JOIN UNNEST($1::uuid[], $2::uuid[]) AS v(org, id)
             ON c.organization_id = v.org AND c.id = v.id
         ORDER BY c.organization_id, c.id FOR NO KEY UPDATE OF c",
        orgs,
        ids
    )
    .fetch_all(&mut *tx)
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
    let enrichments: Vec<Enrichment> = items
        .iter()
        .map(|(_, new, segment)| Enrichment {
            organization: org.clone(),
            segment: segment.clone(),
            device: new.device.clone(),
            geo: new.geo.clone(),
        })
        .collect();
    let rows: Vec<Row<'_>> = items
        .iter()
        .zip(&enrichments)
        .map(|((_, new, _), enrichment)| Row {
            org: org.id,
            new,
            enrichment,
        })
        .collect();
    let outcomes = insert_rows(&mut tx, &rows).await?;
    tx.commit().await?;
    Ok(items.iter().map(|(index, _, _)| *index).zip(outcomes).collect())
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
pub(super) fn is_transient(e: &Error) -> bool {
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
