//! Summaries of an organization's interactions: the dashboard's totals, channels, sentiment distribution,
//! volume over time and most negative customers, and sentiment trends (R5, R8.6, R8.8).
//!
//! Every summary reads one snapshot (a read-only `REPEATABLE READ` transaction), so its parts agree with
//! each other: the channels add up to the total, the buckets to the channels.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use utoipa::ToSchema;

use super::interactions::{InteractionFilter, push_interaction_filters};
use crate::domain::interaction::Channel;
use crate::domain::{CustomerId, OrganizationId};
use crate::error::Error;

/// The width of a time bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    Hour,
    Day,
    Week,
}

impl Interval {
    /// Every interval, finest first.
    pub const ALL: [Interval; 3] = [Self::Hour, Self::Day, Self::Week];

    /// Parses the API name.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|i| i.sql() == s)
            .ok_or_else(|| "must be hour, day or week".to_owned())
    }

    /// Returns the API name.
    pub fn as_str(self) -> &'static str {
        self.sql()
    }

    /// The coarsest interval that still shows the shape of `range`: hours up to two days, days up to
    /// ninety, weeks beyond.
    pub fn for_range(range: chrono::Duration) -> Self {
        if range <= chrono::Duration::days(2) {
            Self::Hour
        } else if range <= chrono::Duration::days(90) {
            Self::Day
        } else {
            Self::Week
        }
    }

    /// The `date_trunc` field name: a fixed literal, never user text.
    fn sql(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
        }
    }

    fn length(self) -> chrono::Duration {
        match self {
            Self::Hour => chrono::Duration::hours(1),
            Self::Day => chrono::Duration::days(1),
            Self::Week => chrono::Duration::weeks(1),
        }
    }

    /// How many buckets `[from, to)` spans (an upper bound: the first bucket starts at or before `from`).
    pub fn buckets(self, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
        let span = (to - from).num_seconds().max(0);
        span / self.length().num_seconds() + 2
    }
}

/// A summary's time range, half-open: `from <= occurred_at < to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Counts and the average score of a set of interactions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub interactions: i64,
    /// Distinct customers among them.
    pub customers: i64,
    pub scored: i64,
    pub unscored: i64,
    /// Mean sentiment score of the scored ones, -1 to 1; null when none is scored.
    pub average_sentiment: Option<f64>,
    /// Share of the scored ones labelled negative, 0 to 1; null when none is scored.
    pub negative_share: Option<f64>,
}

/// One channel's part.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelSummary {
    pub channel: Channel,
    pub interactions: i64,
    pub scored: i64,
    pub negative: i64,
    pub average_sentiment: Option<f64>,
}

/// Labels and a histogram of scores.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SentimentDistribution {
    pub positive: i64,
    pub negative: i64,
    pub neutral: i64,
    pub unscored: i64,
    /// Ten buckets of width 0.2 from -1 to 1 (the last one includes 1).
    pub histogram: Vec<HistogramBucket>,
}

/// Scores in `[from, to)`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HistogramBucket {
    pub from: f64,
    pub to: f64,
    pub count: i64,
}

/// One time bucket.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrendPoint {
    /// Start of the bucket (UTC; weeks start on Monday).
    pub bucket: DateTime<Utc>,
    pub interactions: i64,
    pub scored: i64,
    pub positive: i64,
    pub negative: i64,
    pub neutral: i64,
    pub average_sentiment: Option<f64>,
}

/// A customer whose interactions in the range are negative on average.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NegativeCustomer {
    #[schema(value_type = String, format = Uuid)]
    pub customer_id: CustomerId,
    pub external_id: String,
    pub name: Option<String>,
    pub segment: Option<String>,
    pub interactions: i64,
    pub negative: i64,
    pub average_sentiment: f64,
}

/// What `/insights/dashboard` shows.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dashboard {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub interval: Interval,
    pub totals: Totals,
    /// Every channel, in the order web, mobile, email, chat, phone, with zeros where nothing happened.
    pub by_channel: Vec<ChannelSummary>,
    pub sentiment: SentimentDistribution,
    /// Every bucket of the range, empty ones included.
    pub volume: Vec<TrendPoint>,
    pub top_negative_customers: Vec<NegativeCustomer>,
    pub generated_at: DateTime<Utc>,
}

/// What `/insights/trends` shows.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trends {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub interval: Interval,
    /// Every bucket of the range, empty ones included.
    pub points: Vec<TrendPoint>,
    pub generated_at: DateTime<Utc>,
}

/// The filter with the range applied.
fn ranged(filter: &InteractionFilter, range: Range) -> InteractionFilter {
    InteractionFilter {
        from: Some(range.from),
        to: Some(range.to),
        ..filter.clone()
    }
}

async fn snapshot(pool: &PgPool) -> Result<sqlx::Transaction<'static, Postgres>, Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Computes the dashboard.
pub async fn dashboard(
    pool: &PgPool,
    org: OrganizationId,
    filter: &InteractionFilter,
    range: Range,
    interval: Interval,
    top: i64,
) -> Result<Dashboard, Error> {
    let filter = ranged(filter, range);
    let mut tx = snapshot(pool).await?;
    let totals = totals(&mut tx, org, &filter).await?;
    let by_channel = by_channel(&mut tx, org, &filter).await?;
    let sentiment = distribution(&mut tx, org, &filter).await?;
    let volume = points(&mut tx, org, &filter, range, interval).await?;
    let top_negative_customers = negative_customers(&mut tx, org, &filter, top).await?;
    tx.commit().await?;
    Ok(Dashboard {
        from: range.from,
        to: range.to,
        interval,
        totals,
        by_channel,
        sentiment,
        volume,
        top_negative_customers,
        generated_at: Utc::now(),
    })
}

/// Computes sentiment trends.
pub async fn trends(
    pool: &PgPool,
    org: OrganizationId,
    filter: &InteractionFilter,
    range: Range,
    interval: Interval,
) -> Result<Trends, Error> {
    let filter = ranged(filter, range);
    let mut tx = snapshot(pool).await?;
    let points = points(&mut tx, org, &filter, range, interval).await?;
    tx.commit().await?;
    Ok(Trends {
        from: range.from,
        to: range.to,
        interval,
        points,
        generated_at: Utc::now(),
    })
}

fn filtered(org: OrganizationId, filter: &InteractionFilter, select: &str) -> QueryBuilder<Postgres> {
    let mut qb = QueryBuilder::new(format!("{select} FROM customer_interactions"));
    push_interaction_filters(&mut qb, org, filter);
    qb
}

async fn totals(
    db: &mut PgConnection,
    org: OrganizationId,
    filter: &InteractionFilter,
) -> Result<Totals, Error> {
    let mut qb = filtered(
        org,
        filter,
        "SELECT count(*), count(DISTINCT customer_id), count(sentiment_score), \
         avg(sentiment_score)::float8, count(*) FILTER (WHERE sentiment_label = 'negative')",
    );
    let (interactions, customers, scored, average, negative): (i64, i64, i64, Option<f64>, i64) =
        qb.build_query_as().fetch_one(&mut *db).await?;
    Ok(Totals {
        interactions,
        customers,
        scored,
        unscored: interactions - scored,
        average_sentiment: average,
        negative_share: (scored > 0).then(|| negative as f64 / scored as f64),
    })
}

async fn by_channel(
    db: &mut PgConnection,
    org: OrganizationId,
    filter: &InteractionFilter,
) -> Result<Vec<ChannelSummary>, Error> {
    let mut qb = filtered(
        org,
        filter,
        "SELECT channel, count(*), count(sentiment_score), \
         count(*) FILTER (WHERE sentiment_label = 'negative'), avg(sentiment_score)::float8",
    );
    qb.push(" GROUP BY channel");
    let rows: Vec<(Channel, i64, i64, i64, Option<f64>)> = qb.build_query_as().fetch_all(&mut *db).await?;
    Ok(Channel::ALL
        .iter()
        .map(|&channel| {
            let found = rows.iter().find(|r| r.0 == channel);
            ChannelSummary {
                channel,
                interactions: found.map_or(0, |r| r.1),
                scored: found.map_or(0, |r| r.2),
                negative: found.map_or(0, |r| r.3),
                average_sentiment: found.and_then(|r| r.4),
            }
        })
        .collect())
}

/// Histogram buckets over [-1, 1].
const HISTOGRAM_BUCKETS: i32 = 10;

async fn distribution(
    db: &mut PgConnection,
    org: OrganizationId,
    filter: &InteractionFilter,
) -> Result<SentimentDistribution, Error> {
    let mut qb = filtered(
        org,
        filter,
        "SELECT count(*) FILTER (WHERE sentiment_label = 'positive'), \
         count(*) FILTER (WHERE sentiment_label = 'negative'), \
         count(*) FILTER (WHERE sentiment_label = 'neutral'), count(*) FILTER (WHERE sentiment_score IS NULL)",
    );
    let (positive, negative, neutral, unscored): (i64, i64, i64, i64) =
        qb.build_query_as().fetch_one(&mut *db).await?;
    let mut qb = filtered(
        org,
        filter,
        &format!(
            "SELECT least(width_bucket(sentiment_score, -1, 1, {HISTOGRAM_BUCKETS}), {HISTOGRAM_BUCKETS}), count(*)"
        ),
    );
    qb.push(" AND sentiment_score IS NOT NULL GROUP BY 1");
    let rows: Vec<(i32, i64)> = qb.build_query_as().fetch_all(&mut *db).await?;
    let width = 2.0 / f64::from(HISTOGRAM_BUCKETS);
    let histogram = (1..=HISTOGRAM_BUCKETS)
        .map(|b| HistogramBucket {
            from: round2(-1.0 + f64::from(b - 1) * width),
            to: round2(-1.0 + f64::from(b) * width),
            count: rows.iter().find(|r| r.0 == b).map_or(0, |r| r.1),
        })
        .collect();
    Ok(SentimentDistribution {
        positive,
        negative,
        neutral,
        unscored,
        histogram,
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Counts per bucket of `interval` over the whole range, empty buckets included. Buckets are computed on
/// UTC wall time, so the result does not depend on the server's time zone.
async fn points(
    db: &mut PgConnection,
    org: OrganizationId,
    filter: &InteractionFilter,
    range: Range,
    interval: Interval,
) -> Result<Vec<TrendPoint>, Error> {
    let unit = interval.sql();
    let mut qb = QueryBuilder::new(format!(
        "WITH f AS (SELECT date_trunc('{unit}', occurred_at AT TIME ZONE 'UTC') AS bucket, sentiment_score, \
         sentiment_label FROM customer_interactions"
    ));
    push_interaction_filters(&mut qb, org, filter);
    qb.push(format!("), b AS (SELECT generate_series(date_trunc('{unit}', "))
        .push_bind(range.from)
        .push(" AT TIME ZONE 'UTC'), ")
        .push_bind(range.to)
        .push(format!(
            " AT TIME ZONE 'UTC' - interval '1 microsecond', interval '1 {unit}') AS bucket) \
         SELECT b.bucket AT TIME ZONE 'UTC', count(f.bucket), count(f.sentiment_score), \
         count(*) FILTER (WHERE f.sentiment_label = 'positive'), \
         count(*) FILTER (WHERE f.sentiment_label = 'negative'), \
         count(*) FILTER (WHERE f.sentiment_label = 'neutral'), avg(f.sentiment_score)::float8 \
         FROM b LEFT JOIN f ON f.bucket = b.bucket GROUP BY b.bucket ORDER BY b.bucket"
        ));
    type Row = (DateTime<Utc>, i64, i64, i64, i64, i64, Option<f64>);
    let rows: Vec<Row> = qb.build_query_as().fetch_all(&mut *db).await?;
    Ok(rows
        .into_iter()
        .map(
            |(bucket, interactions, scored, positive, negative, neutral, average_sentiment)| TrendPoint {
                bucket,
                interactions,
                scored,
                positive,
                negative,
                neutral,
                average_sentiment,
            },
        )
        .collect())
}

async fn negative_customers(
    db: &mut PgConnection,
    org: OrganizationId,
    filter: &InteractionFilter,
    top: i64,
) -> Result<Vec<NegativeCustomer>, Error> {
    let mut qb = QueryBuilder::new(
        "WITH f AS (SELECT customer_id, count(*) AS n, \
         count(*) FILTER (WHERE sentiment_label = 'negative') AS negative, \
         avg(sentiment_score)::float8 AS average FROM customer_interactions",
    );
    push_interaction_filters(&mut qb, org, filter);
    qb.push(" GROUP BY customer_id HAVING avg(sentiment_score) < 0) ")
        .push(
            "SELECT c.id, c.external_id, c.name, c.segment, f.n, f.negative, f.average FROM f \
             JOIN customers c ON c.organization_id = ",
        )
        .push_bind(org.as_uuid())
        .push(" AND c.id = f.customer_id ORDER BY f.average ASC, f.negative DESC, c.id LIMIT ")
        .push_bind(top);
    type Row = (CustomerId, String, Option<String>, Option<String>, i64, i64, f64);
    let rows: Vec<Row> = qb.build_query_as().fetch_all(&mut *db).await?;
    Ok(rows
        .into_iter()
        .map(
            |(customer_id, external_id, name, segment, interactions, negative, average_sentiment)| {
                NegativeCustomer {
                    customer_id,
                    external_id,
                    name,
                    segment,
                    interactions,
                    negative,
                    average_sentiment,
                }
            },
        )
        .collect())
}
