//! Reading interactions in bulk: the filters shared by listings, summaries and exports, the sort keys
//! and keyset positions, the page and its total, and the export cursor (R5).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::domain::interaction::{Channel, InteractionRecord};
use crate::domain::{CustomerId, OrganizationId};
use crate::error::Error;

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
