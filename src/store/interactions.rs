//! Interactions: stored one at a time by their customer's actor, or in transactions of a batch chunk.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::cache::Cache;
use super::org_tx::OrgTx;
use crate::domain::enrichment::{Enrichment, OrgContext};
use crate::domain::interaction::{
    Channel, IngestOutcome, InteractionRecord, NewInteraction, PendingScore, ScoredInteraction,
};
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

/// Stores the model's scores on an interaction not scored yet, and recomputes its customer's average
/// sentiment over every scored interaction (R12.5, R12.8–12.10), inside `tx`. Returns the updated row,
/// or `None` when it was scored already (a replayed hand-off changes nothing).
pub async fn apply_scores(tx: &mut OrgTx, s: &ScoredInteraction) -> Result<Option<InteractionRecord>, Error> {
    let org = tx.org();
    let tx: &mut sqlx::PgConnection = tx;
    let label = crate::domain::sentiment::Scores {
        positive: s.positive,
        negative: s.negative,
        neutral: s.neutral,
    };
    let updated = sqlx::query_as!(
        InteractionRecord,
        r#"UPDATE customer_interactions SET
               sentiment_positive = $3, sentiment_negative = $4, sentiment_neutral = $5,
               sentiment_score = $6, sentiment_label = $7::text::sentiment_label, sentiment_confidence = $8,
               model_version = $9, processed_at = now()
           WHERE organization_id = $1 AND id = $2 AND processed_at IS NULL
           RETURNING id AS "id: InteractionId", organization_id AS "organization_id: OrganizationId",
                     customer_id AS "customer_id: CustomerId", channel AS "channel: Channel", event_type, content,
                     occurred_at, metadata::text AS "metadata!", enrichment::text AS "enrichment!", segment,
                     idempotency_key, sentiment_positive, sentiment_negative, sentiment_neutral, sentiment_score,
                     sentiment_label::text AS sentiment_label, sentiment_confidence, processed_at, created_at"#,
        org.as_uuid(),
        s.interaction_id.as_uuid(),
        s.positive,
        s.negative,
        s.neutral,
        label.score(),
        label.label(),
        label.confidence(),
        s.model
    )
    .fetch_optional(&mut *tx)
    .await?;
    if updated.is_some() {
        sqlx::query!(
            "UPDATE customers c SET (average_sentiment, scored_count) = (
                 SELECT avg(i.sentiment_score)::double precision, count(i.sentiment_score)
                 FROM customer_interactions i
                 WHERE i.organization_id = c.organization_id AND i.customer_id = c.id)
             WHERE c.organization_id = $1 AND c.id = $2",
            org.as_uuid(),
            s.customer_id.as_uuid()
        )
        .execute(&mut *tx)
        .await?;
    }
    Ok(updated)
}

/// Returns up to `limit` interactions with text that were never scored, oldest first, after `after`.
///
/// Rows of organizations that a live other node owns are left to that node (`node` is this node's name,
/// `lease_ttl` how long a lease outlives its owner's heartbeat), so no row is scored twice.
pub async fn unscored(
    pool: &PgPool,
    after: Option<(DateTime<Utc>, InteractionId)>,
    limit: i64,
    node: &str,
    lease_ttl: std::time::Duration,
) -> Result<Vec<(DateTime<Utc>, PendingScore)>, Error> {
    let (at, id) = after.map_or((None, None), |(a, i)| (Some(a), Some(i.as_uuid())));
    let rows = sqlx::query!(
        r#"SELECT ci.id AS "id: InteractionId", ci.organization_id AS "organization_id: OrganizationId",
                  ci.customer_id AS "customer_id: CustomerId", ci.content AS "content!", ci.created_at
           FROM customer_interactions ci
           WHERE ci.processed_at IS NULL AND ci.content IS NOT NULL
             AND ($1::timestamptz IS NULL OR (ci.created_at, ci.id) > ($1, $2))
             AND NOT EXISTS (
                 SELECT 1 FROM org_ownership o JOIN cluster_nodes n ON n.name = o.owner_node
                  WHERE o.organization_id = ci.organization_id AND NOT o.released
                    AND o.owner_node <> $4 AND n.incarnation = o.owner_incarnation
                    AND n.state <> 'down' AND n.heartbeat_at > now() - make_interval(secs => $5))
           ORDER BY ci.created_at, ci.id LIMIT $3"#,
        at,
        id,
        limit,
        node,
        lease_ttl.as_secs_f64()
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.created_at,
                PendingScore {
                    organization_id: r.organization_id,
                    interaction_id: r.id,
                    customer_id: r.customer_id,
                    content: r.content,
                },
            )
        })
        .collect())
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

/// The columns of an [`InteractionRecord`], for dynamic queries.
const RECORD_COLUMNS: &str = "id, organization_id, customer_id, channel, event_type, content, occurred_at, \
     metadata::text AS metadata, enrichment::text AS enrichment, segment, idempotency_key, sentiment_positive, \
     sentiment_negative, sentiment_neutral, sentiment_score, sentiment_label::text AS sentiment_label, \
     sentiment_confidence, processed_at, created_at";

/// The filters shared by listings, summaries and exports (R5.1–5.4). Channels and segments are kept
/// sorted and unique, so equal filters compare (and hash into cache keys) equal.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InteractionFilter {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub channels: Vec<Channel>,
    pub sentiment_min: Option<f32>,
    pub sentiment_max: Option<f32>,
    pub segments: Vec<String>,
    pub customer: Option<CustomerId>,
    pub text: Option<String>,
}

/// Filters, sort and page of an interaction listing (R5.1–5.8, R5.10).
#[derive(Debug, Clone, Default)]
pub struct InteractionQuery {
    pub filter: InteractionFilter,
    pub sort: InteractionSort,
    pub descending: bool,
    pub limit: i64,
    pub offset: i64,
    /// Keyset paging: only rows after this one in the sort order (then `offset` is 0).
    pub after: Option<SortKey>,
}

/// Where a page ended: the sort key and id of its last row, the position a cursor resumes from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "k", content = "v")]
pub enum SortKey {
    #[serde(rename = "t")]
    Timestamp(DateTime<Utc>, uuid::Uuid),
    #[serde(rename = "s")]
    Sentiment(Option<f32>, uuid::Uuid),
    #[serde(rename = "c")]
    Channel(Channel, uuid::Uuid),
    #[serde(rename = "a")]
    CreatedAt(DateTime<Utc>, uuid::Uuid),
}

impl SortKey {
    /// The key of `row` under `sort`.
    pub fn of(sort: InteractionSort, row: &InteractionRecord) -> Self {
        match sort {
            InteractionSort::Timestamp => Self::Timestamp(row.occurred_at, row.id.as_uuid()),
            InteractionSort::Sentiment => Self::Sentiment(row.sentiment_score, row.id.as_uuid()),
            InteractionSort::Channel => Self::Channel(row.channel, row.id.as_uuid()),
            InteractionSort::CreatedAt => Self::CreatedAt(row.created_at, row.id.as_uuid()),
        }
    }

    /// The sort this key belongs to.
    pub fn sort(&self) -> InteractionSort {
        match self {
            Self::Timestamp(..) => InteractionSort::Timestamp,
            Self::Sentiment(..) => InteractionSort::Sentiment,
            Self::Channel(..) => InteractionSort::Channel,
            Self::CreatedAt(..) => InteractionSort::CreatedAt,
        }
    }
}

/// The sort keys of a listing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum InteractionSort {
    #[default]
    Timestamp,
    Sentiment,
    Channel,
    CreatedAt,
}

impl InteractionSort {
    /// Every sort key, in API order (the first is the default).
    pub const ALL: [InteractionSort; 4] = [Self::Timestamp, Self::Sentiment, Self::Channel, Self::CreatedAt];

    /// Parses the API name.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
            format!("must be one of {}", names.join(", "))
        })
    }

    /// Returns the API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timestamp => "timestamp",
            Self::Sentiment => "sentiment",
            Self::Channel => "channel",
            Self::CreatedAt => "createdAt",
        }
    }

    /// The SQL column: a fixed identifier from this enum, never user text.
    fn column(self) -> &'static str {
        match self {
            Self::Timestamp => "occurred_at",
            Self::Sentiment => "sentiment_score",
            Self::Channel => "channel",
            Self::CreatedAt => "created_at",
        }
    }
}

/// Adds `WHERE organization_id = … AND <filters>` with every value bound.
pub(crate) fn push_interaction_filters(
    qb: &mut sqlx::QueryBuilder<sqlx::Postgres>,
    org: OrganizationId,
    q: &InteractionFilter,
) {
    qb.push(" WHERE organization_id = ").push_bind(org.as_uuid());
    if let Some(from) = q.from {
        qb.push(" AND occurred_at >= ").push_bind(from);
    }
    if let Some(to) = q.to {
        qb.push(" AND occurred_at < ").push_bind(to);
    }
    if !q.channels.is_empty() {
        let names: Vec<String> = q.channels.iter().map(|c| c.as_str().to_owned()).collect();
        qb.push(" AND channel = ANY(")
            .push_bind(names)
            .push("::text[]::interaction_channel[])");
    }
    if let Some(min) = q.sentiment_min {
        qb.push(" AND sentiment_score >= ").push_bind(min);
    }
    if let Some(max) = q.sentiment_max {
        qb.push(" AND sentiment_score <= ").push_bind(max);
    }
    if !q.segments.is_empty() {
        qb.push(" AND segment = ANY(")
            .push_bind(q.segments.clone())
            .push("::text[])");
    }
    if let Some(customer) = q.customer {
        qb.push(" AND customer_id = ").push_bind(customer.as_uuid());
    }
    if let Some(text) = &q.text {
        qb.push(" AND content_tsv @@ plainto_tsquery('english', ")
            .push_bind(text.clone())
            .push(")");
    }
}

/// Adds the keyset condition "after `key`" for the order `ORDER BY col dir nulls, id dir` that [`list`]
/// uses: `DESC NULLS LAST` or `ASC NULLS FIRST`, so only the sentiment score (nullable) needs the null cases.
fn push_after(qb: &mut sqlx::QueryBuilder<sqlx::Postgres>, key: &SortKey, descending: bool) {
    let op = if descending { "<" } else { ">" };
    match key {
        SortKey::Timestamp(t, id) => {
            qb.push(format!(" AND (occurred_at, id) {op} ("))
                .push_bind(*t)
                .push(", ")
                .push_bind(*id)
                .push(")");
        }
        SortKey::CreatedAt(t, id) => {
            qb.push(format!(" AND (created_at, id) {op} ("))
                .push_bind(*t)
                .push(", ")
                .push_bind(*id)
                .push(")");
        }
        SortKey::Channel(c, id) => {
            qb.push(format!(" AND (channel, id) {op} ("))
                .push_bind(c.as_str())
                .push("::interaction_channel, ")
                .push_bind(*id)
                .push(")");
        }
        SortKey::Sentiment(Some(score), id) => {
            qb.push(format!(" AND ((sentiment_score, id) {op} ("))
                .push_bind(*score)
                .push(", ")
                .push_bind(*id)
                .push(")");
            // Descending puts the unscored rows last: they all still follow.
            qb.push(if descending {
                " OR sentiment_score IS NULL)"
            } else {
                ")"
            });
        }
        SortKey::Sentiment(None, id) => {
            qb.push(format!(" AND ((sentiment_score IS NULL AND id {op} "))
                .push_bind(*id)
                .push(")");
            // Ascending puts the unscored rows first: every scored row still follows.
            qb.push(if descending {
                ")"
            } else {
                " OR sentiment_score IS NOT NULL)"
            });
        }
    }
}

/// Lists interactions with filters, sort and paging, and counts every match (regardless of the cursor).
/// The id is the final sort key, so identical queries return identical pages (R5.10). Returns up to
/// `limit + 1` rows: the extra one only tells the caller that another page follows.
pub async fn list(
    pool: &PgPool,
    org: OrganizationId,
    q: &InteractionQuery,
) -> Result<(Vec<InteractionRecord>, i64), Error> {
    let rows = page_statement("", org, q)
        .build_query_as::<InteractionRecord>()
        .fetch_all(pool)
        .await?;
    let total: i64 = count_statement("", org, &q.filter)
        .build_query_scalar()
        .fetch_one(pool)
        .await?;
    Ok((rows, total))
}

fn page_statement(
    prefix: &str,
    org: OrganizationId,
    q: &InteractionQuery,
) -> sqlx::QueryBuilder<sqlx::Postgres> {
    // A full-text search is answered from the GIN index first. Left to itself, PostgreSQL often walks
    // the time index newest-first and tests every row against the query, expecting to find a page of
    // matches soon; for a rare term that reads the whole organization. Materializing the matches rules
    // that plan out.
    let text_search = q.filter.text.is_some();
    let mut qb = sqlx::QueryBuilder::new(if text_search {
        format!("{prefix}WITH matches AS MATERIALIZED (SELECT {RECORD_COLUMNS} FROM customer_interactions")
    } else {
        format!("{prefix}SELECT {RECORD_COLUMNS} FROM customer_interactions")
    });
    push_interaction_filters(&mut qb, org, &q.filter);
    if let Some(after) = &q.after {
        push_after(&mut qb, after, q.descending);
    }
    if text_search {
        qb.push(") SELECT * FROM matches");
    }
    push_order(&mut qb, q.sort, q.descending);
    qb.push(" LIMIT ")
        .push_bind(q.limit + 1)
        .push(" OFFSET ")
        .push_bind(q.offset);
    qb
}

fn count_statement(
    prefix: &str,
    org: OrganizationId,
    filter: &InteractionFilter,
) -> sqlx::QueryBuilder<sqlx::Postgres> {
    let mut qb = sqlx::QueryBuilder::new(format!("{prefix}SELECT count(*) FROM customer_interactions"));
    push_interaction_filters(&mut qb, org, filter);
    qb
}

/// The plans PostgreSQL chooses for the two statements of [`list`] (the page and the count), as
/// `EXPLAIN (FORMAT JSON)` documents: for checking that a listing is served by indexes (R5.11).
pub async fn explain_list(
    pool: &PgPool,
    org: OrganizationId,
    q: &InteractionQuery,
) -> Result<[serde_json::Value; 2], Error> {
    const EXPLAIN: &str = "EXPLAIN (FORMAT JSON) ";
    let page: serde_json::Value = page_statement(EXPLAIN, org, q)
        .build_query_scalar()
        .fetch_one(pool)
        .await?;
    let count: serde_json::Value = count_statement(EXPLAIN, org, &q.filter)
        .build_query_scalar()
        .fetch_one(pool)
        .await?;
    Ok([page, count])
}

fn push_order(qb: &mut sqlx::QueryBuilder<sqlx::Postgres>, sort: InteractionSort, descending: bool) {
    let direction = if descending { "DESC" } else { "ASC" };
    // Only the score can be null: unscored rows come last when descending, first when ascending. The
    // other keys are NOT NULL and get no NULLS clause, which would stop PostgreSQL from reading their
    // index backwards for the (default) newest-first order.
    let nulls = match (sort, descending) {
        (InteractionSort::Sentiment, true) => " NULLS LAST",
        (InteractionSort::Sentiment, false) => " NULLS FIRST",
        _ => "",
    };
    qb.push(format!(
        " ORDER BY {} {direction}{nulls}, id {direction}",
        sort.column()
    ));
}

/// `DECLARE <name> NO SCROLL CURSOR FOR` every matching row in the requested order, for an export that
/// then reads it with `FETCH` inside the same transaction.
pub fn export_cursor(
    name: &'static str,
    org: OrganizationId,
    filter: &InteractionFilter,
    sort: InteractionSort,
    descending: bool,
) -> sqlx::QueryBuilder<sqlx::Postgres> {
    let mut qb = sqlx::QueryBuilder::new(format!(
        "DECLARE {name} NO SCROLL CURSOR FOR SELECT {RECORD_COLUMNS} FROM customer_interactions"
    ));
    push_interaction_filters(&mut qb, org, filter);
    push_order(&mut qb, sort, descending);
    qb
}
