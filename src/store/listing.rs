//! Reading interactions in bulk: the filters shared by listings, summaries and exports, the sort keys
//! and keyset positions, the page and its total, and the export cursor (R5).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::filter::{
    InteractionFilter, TextMatch, push_interaction_filters, push_interaction_filters_matching,
};
use super::rollups::{self, Source};
use crate::domain::OrganizationId;
use crate::domain::interaction::{Channel, InteractionRecord};
use crate::error::Error;

/// The columns of an [`InteractionRecord`], for dynamic queries.
const RECORD_COLUMNS: &str = "id, organization_id, customer_id, channel, event_type, content, occurred_at, \
     metadata::text AS metadata, enrichment::text AS enrichment, segment, idempotency_key, sentiment_positive, \
     sentiment_negative, sentiment_neutral, sentiment_score, sentiment_label::text AS sentiment_label, \
     sentiment_confidence, processed_at, created_at";

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
    /// Within a channel, by time: the channel index then serves the order.
    #[serde(rename = "c")]
    Channel(Channel, DateTime<Utc>, uuid::Uuid),
    #[serde(rename = "a")]
    CreatedAt(DateTime<Utc>, uuid::Uuid),
}

impl SortKey {
    /// The key of `row` under `sort`.
    pub fn of(sort: InteractionSort, row: &InteractionRecord) -> Self {
        match sort {
            InteractionSort::Timestamp => Self::Timestamp(row.occurred_at, row.id.as_uuid()),
            InteractionSort::Sentiment => Self::Sentiment(row.sentiment_score, row.id.as_uuid()),
            InteractionSort::Channel => Self::Channel(row.channel, row.occurred_at, row.id.as_uuid()),
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
        SortKey::Channel(c, t, id) => {
            qb.push(format!(" AND (channel, occurred_at, id) {op} ("))
                .push_bind(c.as_str())
                .push("::interaction_channel, ")
                .push_bind(*t)
                .push(", ")
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

/// Whether a listing's total counts every match or only says "at least".
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TotalRelation {
    /// The total is exact.
    Eq,
    /// At least this many match (a filter counted up to the bound, R5.12).
    Gte,
}

/// A listing's total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Total {
    pub count: i64,
    pub relation: TotalRelation,
}

/// Counts the matches of `filter`: exactly from the rollups for the filters they answer (range, channels,
/// segments), else exactly up to `bound` rows and beyond that as the lower bound `bound` (R5.12), so a
/// count never reads more than `bound` rows.
pub async fn total(
    pool: &PgPool,
    org: OrganizationId,
    filter: &InteractionFilter,
    bound: i64,
) -> Result<Total, Error> {
    if Source::for_filter(filter) == Source::Rollups {
        let mut conn = pool.acquire().await?;
        let count = rollups::count(&mut conn, org, filter).await?;
        return Ok(Total {
            count,
            relation: TotalRelation::Eq,
        });
    }
    let count: i64 = bounded_count_statement("", org, filter, bound)
        .build_query_scalar()
        .fetch_one(pool)
        .await?;
    Ok(if count > bound {
        Total {
            count: bound,
            relation: TotalRelation::Gte,
        }
    } else {
        Total {
            count,
            relation: TotalRelation::Eq,
        }
    })
}

/// Lists interactions with filters, sort and paging, given their [`total`] (which decides how a text
/// filter is read). The id is the final sort key, so identical queries return identical pages (R5.10).
/// Returns up to `limit + 1` rows: the extra one only tells the caller that another page follows.
pub async fn page(
    pool: &PgPool,
    org: OrganizationId,
    q: &InteractionQuery,
    total: Total,
) -> Result<Vec<InteractionRecord>, Error> {
    Ok(page_statement("", org, q, text_match(total))
        .build_query_as::<InteractionRecord>()
        .fetch_all(pool)
        .await?)
}

/// [`total`] and [`page`] together.
pub async fn list(
    pool: &PgPool,
    org: OrganizationId,
    q: &InteractionQuery,
    bound: i64,
) -> Result<(Vec<InteractionRecord>, Total), Error> {
    let total = total(pool, org, &q.filter, bound).await?;
    Ok((page(pool, org, q, total).await?, total))
}

/// A full-text filter with at most `bound` matches is answered from the GIN index; one with more (a
/// frequent term) by reading the sort order's index and testing each row.
fn text_match(total: Total) -> TextMatch {
    match total.relation {
        TotalRelation::Eq => TextMatch::Index,
        TotalRelation::Gte => TextMatch::Scan,
    }
}

fn page_statement(
    prefix: &str,
    org: OrganizationId,
    q: &InteractionQuery,
    text_match: TextMatch,
) -> sqlx::QueryBuilder<sqlx::Postgres> {
    // Few matches of a full-text search are collected from the GIN index first. Left to itself,
    // PostgreSQL often walks the time index newest-first and tests every row against the query,
    // expecting to find a page of matches soon; for a rare term that reads the whole organization.
    // Materializing the matches rules that plan out.
    let collect = q.filter.text.is_some() && text_match == TextMatch::Index;
    let mut qb = sqlx::QueryBuilder::new(if collect {
        format!("{prefix}WITH matches AS MATERIALIZED (SELECT {RECORD_COLUMNS} FROM customer_interactions")
    } else {
        format!("{prefix}SELECT {RECORD_COLUMNS} FROM customer_interactions")
    });
    push_interaction_filters_matching(&mut qb, org, &q.filter, text_match);
    if let Some(after) = &q.after {
        push_after(&mut qb, after, q.descending);
    }
    if collect {
        qb.push(") SELECT * FROM matches");
    }
    push_order(&mut qb, q.sort, q.descending);
    qb.push(" LIMIT ")
        .push_bind(q.limit + 1)
        .push(" OFFSET ")
        .push_bind(q.offset);
    qb
}

/// Counts the matches, reading at most `bound + 1` of them.
fn bounded_count_statement(
    prefix: &str,
    org: OrganizationId,
    filter: &InteractionFilter,
    bound: i64,
) -> sqlx::QueryBuilder<sqlx::Postgres> {
    let mut qb = sqlx::QueryBuilder::new(format!(
        "{prefix}SELECT count(*) FROM (SELECT 1 FROM customer_interactions"
    ));
    push_interaction_filters(&mut qb, org, filter);
    qb.push(" LIMIT ").push_bind(bound + 1).push(") AS m");
    qb
}

/// The plans PostgreSQL chooses for the statements of [`list`] (the page, and the count when the
/// rollups do not answer it), as `EXPLAIN (FORMAT JSON)` documents: for checking that a listing is served
/// by indexes (R5.11). The total is computed first, as [`list`] does, since it decides the page's plan.
pub async fn explain_list(
    pool: &PgPool,
    org: OrganizationId,
    q: &InteractionQuery,
    bound: i64,
    analyze: bool,
) -> Result<Vec<serde_json::Value>, Error> {
    let explain = if analyze {
        "EXPLAIN (ANALYZE, FORMAT JSON) "
    } else {
        "EXPLAIN (FORMAT JSON) "
    };
    let total = total(pool, org, &q.filter, bound).await?;
    let mut plans = vec![
        page_statement(explain, org, q, text_match(total))
            .build_query_scalar()
            .fetch_one(pool)
            .await?,
    ];
    if Source::for_filter(&q.filter) == Source::Rows {
        plans.push(
            bounded_count_statement(explain, org, &q.filter, bound)
                .build_query_scalar()
                .fetch_one(pool)
                .await?,
        );
    }
    Ok(plans)
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
    // Within a channel, newest (or oldest) first: the (organization, channel, occurred_at, id) index.
    let then = if sort == InteractionSort::Channel {
        format!(", occurred_at {direction}")
    } else {
        String::new()
    };
    qb.push(format!(
        " ORDER BY {} {direction}{nulls}{then}, id {direction}",
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
