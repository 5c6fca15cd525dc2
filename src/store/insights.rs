//! Summaries of an organization's interactions: the dashboard's totals, channels, sentiment distribution,
//! volume over time and most negative customers, and sentiment trends (R5, R8.6, R8.8).
//!
//! Every summary reads one snapshot (a read-only `REPEATABLE READ` transaction), so its parts agree with
//! each other: the channels add up to the total, the buckets to the channels. The figures come from the
//! rollups (`rollups`), or from the rows for filters the rollups cannot answer; either way they are exact.

use chrono::{DateTime, Datelike as _, DurationRound as _, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres};
use utoipa::ToSchema;

use super::filter::InteractionFilter;
use super::rollups::{self, Bucket, CustomerFigures, Figures, HISTOGRAM_BUCKETS, Range, Source};
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

    /// The API name.
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

    /// The start of the bucket holding `t` (UTC; weeks start on Monday).
    pub fn start(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let day = t.duration_trunc(chrono::Duration::days(1)).unwrap_or(t);
        match self {
            Self::Hour => t.duration_trunc(chrono::Duration::hours(1)).unwrap_or(t),
            Self::Day => day,
            Self::Week => day - chrono::Duration::days(i64::from(day.weekday().num_days_from_monday())),
        }
    }

    /// How many buckets `[from, to)` spans (an upper bound: the first bucket starts at or before `from`).
    pub fn buckets(self, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
        let span = (to - from).num_seconds().max(0);
        span / self.length().num_seconds() + 2
    }
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

async fn snapshot(pool: &PgPool) -> Result<sqlx::Transaction<'static, Postgres>, Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Computes the dashboard, from the rollups where the filter allows (see [`Source::for_filter`]).
pub async fn dashboard(
    pool: &PgPool,
    keys: &super::fields::FieldKeys,
    org: OrganizationId,
    filter: &InteractionFilter,
    range: Range,
    interval: Interval,
    top: i64,
) -> Result<Dashboard, Error> {
    dashboard_from(
        pool,
        keys,
        org,
        filter,
        range,
        interval,
        top,
        Source::for_filter(filter),
    )
    .await
}

/// Computes the dashboard from `source`.
// The dashboard's own parameters plus where to read them; a struct for them would only be unpacked here.
#[allow(clippy::too_many_arguments)]
pub async fn dashboard_from(
    pool: &PgPool,
    keys: &super::fields::FieldKeys,
    org: OrganizationId,
    filter: &InteractionFilter,
    range: Range,
    interval: Interval,
    top: i64,
    source: Source,
) -> Result<Dashboard, Error> {
    let mut tx = snapshot(pool).await?;
    let buckets = rollups::buckets(&mut tx, org, filter, range, interval != Interval::Hour, source).await?;
    let (customers, negative) = rollups::customers(&mut tx, keys, org, filter, range, top, source).await?;
    tx.commit().await?;
    let mut all = Figures::default();
    let mut channels = [Figures::default(); Channel::ALL.len()];
    for b in &buckets {
        all.add(&b.figures);
        if let Some(i) = Channel::ALL.iter().position(|c| *c == b.channel) {
            channels[i].add(&b.figures);
        }
    }
    let totals = Totals {
        interactions: all.interactions,
        customers,
        scored: all.scored,
        unscored: all.interactions - all.scored,
        average_sentiment: all.average(),
        negative_share: (all.scored > 0).then(|| all.negative as f64 / all.scored as f64),
    };
    let by_channel = Channel::ALL
        .iter()
        .zip(channels)
        .map(|(&channel, f)| ChannelSummary {
            channel,
            interactions: f.interactions,
            scored: f.scored,
            negative: f.negative,
            average_sentiment: f.average(),
        })
        .collect();
    let width = 2.0 / HISTOGRAM_BUCKETS as f64;
    let sentiment = SentimentDistribution {
        positive: all.positive,
        negative: all.negative,
        neutral: all.neutral,
        unscored: all.interactions - all.scored,
        histogram: all
            .histogram
            .iter()
            .enumerate()
            .map(|(i, &count)| HistogramBucket {
                from: round2(-1.0 + i as f64 * width),
                to: round2(-1.0 + (i + 1) as f64 * width),
                count,
            })
            .collect(),
    };
    Ok(Dashboard {
        from: range.from,
        to: range.to,
        interval,
        totals,
        by_channel,
        sentiment,
        volume: points(&buckets, range, interval),
        top_negative_customers: negative.into_iter().map(NegativeCustomer::from).collect(),
        generated_at: Utc::now(),
    })
}

/// Computes sentiment trends, from the rollups where the filter allows.
pub async fn trends(
    pool: &PgPool,
    org: OrganizationId,
    filter: &InteractionFilter,
    range: Range,
    interval: Interval,
) -> Result<Trends, Error> {
    let mut tx = snapshot(pool).await?;
    let source = Source::for_filter(filter);
    let buckets = rollups::buckets(&mut tx, org, filter, range, interval != Interval::Hour, source).await?;
    tx.commit().await?;
    Ok(Trends {
        from: range.from,
        to: range.to,
        interval,
        points: points(&buckets, range, interval),
        generated_at: Utc::now(),
    })
}

impl From<CustomerFigures> for NegativeCustomer {
    fn from(c: CustomerFigures) -> Self {
        Self {
            customer_id: c.customer_id,
            external_id: c.external_id,
            name: c.name,
            segment: c.segment,
            interactions: c.interactions,
            negative: c.negative,
            average_sentiment: c.average_sentiment,
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Every bucket of `interval` over the range, empty ones included, from hourly or daily figures.
fn points(buckets: &[Bucket], range: Range, interval: Interval) -> Vec<TrendPoint> {
    let mut starts = Vec::new();
    let mut start = interval.start(range.from);
    while start < range.to {
        starts.push(start);
        start = interval.start(start + interval.length());
    }
    let mut figures = vec![Figures::default(); starts.len()];
    for b in buckets {
        let s = interval.start(b.start);
        if let Ok(i) = starts.binary_search(&s) {
            figures[i].add(&b.figures);
        }
    }
    starts
        .into_iter()
        .zip(figures)
        .map(|(bucket, f)| TrendPoint {
            bucket,
            interactions: f.interactions,
            scored: f.scored,
            positive: f.positive,
            negative: f.negative,
            neutral: f.neutral,
            average_sentiment: f.average(),
        })
        .collect()
}
