//! Rollups of interactions maintained as data arrives (R5, R8.6, R8.8, R14). The migration
//! `20261203000001_rollups.sql` says how they are kept: every write appends its net change to
//! `interaction_deltas` in its own transaction, and [`fold`] moves the deltas into hourly and daily buckets
//! per (organization, channel, segment) and daily figures per customer; a trigger of the migration
//! `20261204000001_customer_spans.sql` keeps per-customer figures over aligned spans of days from those.
//!
//! Reading a range adds, in one snapshot, the daily buckets of its whole days, the hourly buckets of its
//! other whole hours, the deltas not folded yet, and the raw rows of the partial hours at its edges: exact
//! at any moment, and proportional to the number of buckets rather than of interactions. Filters the
//! buckets cannot answer (a sentiment range, a customer, full text) are read from the rows instead
//! ([`Source::Rows`]), with the same results. Distinct and most negative customers over whole days come
//! from at most 11 runs of customer spans ([`span_cover`]): O(customers × log(days)).

use chrono::{DateTime, Duration, DurationRound as _, Utc};
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, Row as _};

use super::filter::{InteractionFilter, push_interaction_filters};
use crate::domain::interaction::Channel;
use crate::domain::{CustomerId, OrganizationId};
use crate::error::Error;

/// A time range, half-open: `from <= occurred_at < to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Buckets of the score histogram over [-1, 1], of width 0.2 (the last one includes 1).
pub const HISTOGRAM_BUCKETS: usize = 10;

/// Counts and sums of a set of interactions.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    pub interactions: i64,
    pub scored: i64,
    /// Sum of the scores of the scored ones.
    pub score_sum: f64,
    pub positive: i64,
    pub negative: i64,
    pub neutral: i64,
    pub histogram: [i64; HISTOGRAM_BUCKETS],
}

impl Figures {
    /// Adds `other` to these figures.
    pub fn add(&mut self, other: &Figures) {
        self.interactions += other.interactions;
        self.scored += other.scored;
        self.score_sum += other.score_sum;
        self.positive += other.positive;
        self.negative += other.negative;
        self.neutral += other.neutral;
        for (a, b) in self.histogram.iter_mut().zip(other.histogram) {
            *a += b;
        }
    }

    /// The mean score of the scored ones; `None` when none is scored.
    pub fn average(&self) -> Option<f64> {
        (self.scored > 0).then(|| self.score_sum / self.scored as f64)
    }

    /// Reads the 16 figure columns starting at column `first`.
    fn read(row: &sqlx::postgres::PgRow, first: usize) -> Result<Self, sqlx::Error> {
        let mut histogram = [0; HISTOGRAM_BUCKETS];
        for (i, h) in histogram.iter_mut().enumerate() {
            *h = row.try_get(first + 6 + i)?;
        }
        Ok(Self {
            interactions: row.try_get(first)?,
            scored: row.try_get(first + 1)?,
            score_sum: row.try_get(first + 2)?,
            positive: row.try_get(first + 3)?,
            negative: row.try_get(first + 4)?,
            neutral: row.try_get(first + 5)?,
            histogram,
        })
    }
}

/// The figures of one hour or day and channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// Start of the hour or day (UTC). Days are only used when the caller asked for them.
    pub start: DateTime<Utc>,
    pub channel: Channel,
    pub figures: Figures,
}

/// A customer's figures over a range.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerFigures {
    pub customer_id: CustomerId,
    pub external_id: String,
    pub name: Option<String>,
    pub segment: Option<String>,
    pub interactions: i64,
    pub negative: i64,
    pub average_sentiment: f64,
}

/// Where a summary is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The rollups, the pending deltas and the rows of partial hours: for filters by range, channel and
    /// segment, which are the rollups' dimensions.
    Rollups,
    /// Every matching row: for filters by sentiment range, customer or text.
    Rows,
}

impl Source {
    /// The cheapest source that answers `filter` exactly.
    pub fn for_filter(filter: &InteractionFilter) -> Self {
        if filter.sentiment_min.is_none()
            && filter.sentiment_max.is_none()
            && filter.customer.is_none()
            && filter.text.is_none()
        {
            Self::Rollups
        } else {
            Self::Rows
        }
    }
}

/// A half-open span of time.
pub type Span = (DateTime<Utc>, DateTime<Utc>);

/// How a range is read from the rollups: its whole days (when days are wanted), its other whole hours, and
/// the partial hours at its edges. Together they cover the range exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub days: Option<Span>,
    pub hours: Vec<Span>,
    /// Every whole hour of the range (days included): where pending deltas are read.
    pub rolled: Option<Span>,
    pub rows: Vec<Span>,
}

fn floor(t: DateTime<Utc>, unit: Duration) -> DateTime<Utc> {
    // Units of an hour or a day divide the Unix epoch's day exactly, so this cannot fail.
    t.duration_trunc(unit).unwrap_or(t)
}

fn ceil(t: DateTime<Utc>, unit: Duration) -> DateTime<Utc> {
    let f = floor(t, unit);
    if f < t { f + unit } else { f }
}

/// The whole `unit`s inside `[from, to)` and the partial ones at its edges.
fn split(from: DateTime<Utc>, to: DateTime<Utc>, unit: Duration) -> (Option<Span>, Vec<Span>) {
    if from >= to {
        return (None, Vec::new());
    }
    let (a, b) = (ceil(from, unit), floor(to, unit));
    if a >= b {
        return (None, vec![(from, to)]);
    }
    let edges = [(from, a), (b, to)].into_iter().filter(|(x, y)| x < y).collect();
    (Some((a, b)), edges)
}

impl Plan {
    /// The plan for `range`; `days` allows the daily buckets (not for hourly series).
    pub fn new(range: Range, days: bool) -> Self {
        let (rolled, rows) = split(range.from, range.to, Duration::hours(1));
        let Some((h0, h1)) = rolled else {
            return Self {
                days: None,
                hours: Vec::new(),
                rolled,
                rows,
            };
        };
        let (whole_days, hours) = if days {
            split(h0, h1, Duration::days(1))
        } else {
            (None, vec![(h0, h1)])
        };
        Self {
            days: whole_days,
            hours,
            rolled,
            rows,
        }
    }
}

/// `AND channel = ANY(…) AND segment = ANY(…)` for the filter's channels and segments.
fn push_dimensions(qb: &mut QueryBuilder<Postgres>, filter: &InteractionFilter) {
    if !filter.channels.is_empty() {
        let names: Vec<String> = filter.channels.iter().map(|c| c.as_str().to_owned()).collect();
        qb.push(" AND channel = ANY(")
            .push_bind(names)
            .push("::text[]::interaction_channel[])");
    }
    if !filter.segments.is_empty() {
        qb.push(" AND segment = ANY(")
            .push_bind(filter.segments.clone())
            .push("::text[])");
    }
}

/// `AND (column >= a AND column < b OR …)` over `spans` (not empty).
fn push_spans(qb: &mut QueryBuilder<Postgres>, column: &str, spans: &[Span]) {
    qb.push(" AND (");
    for (i, (a, b)) in spans.iter().enumerate() {
        if i > 0 {
            qb.push(" OR ");
        }
        qb.push(format!("{column} >= "))
            .push_bind(*a)
            .push(format!(" AND {column} < "))
            .push_bind(*b);
    }
    qb.push(")");
}

/// The filter without its own range: the spans of a plan bound the rows instead.
fn unranged(filter: &InteractionFilter) -> InteractionFilter {
    InteractionFilter {
        from: None,
        to: None,
        ..filter.clone()
    }
}

fn ranged(filter: &InteractionFilter, range: Range) -> InteractionFilter {
    InteractionFilter {
        from: Some(range.from),
        to: Some(range.to),
        ..filter.clone()
    }
}

/// The origin of every bucket: a Monday at midnight UTC, as in the migration.
const ORIGIN: &str = "TIMESTAMPTZ '2000-01-03 00:00:00+00'";

/// The figure columns of a rollup or delta row.
const COLUMNS: &str =
    "n, scored, score_sum, positive, negative, neutral, h1, h2, h3, h4, h5, h6, h7, h8, h9, h10";

/// The sums of [`COLUMNS`], as the types [`Figures::read`] reads.
const FIGURES: &str = "sum(n)::int8, sum(scored)::int8, sum(score_sum)::float8, sum(positive)::int8, \
     sum(negative)::int8, sum(neutral)::int8, sum(h1)::int8, sum(h2)::int8, sum(h3)::int8, sum(h4)::int8, \
     sum(h5)::int8, sum(h6)::int8, sum(h7)::int8, sum(h8)::int8, sum(h9)::int8, sum(h10)::int8";

/// The same figures computed from interaction rows. (Not `least(width_bucket(…), 10)` for the last bucket:
/// `least` ignores a NULL, which would put every unscored row there.)
const ROW_FIGURES: &str = "count(*), count(sentiment_score), coalesce(sum(sentiment_score::float8), 0), \
     count(*) FILTER (WHERE sentiment_label = 'positive'), count(*) FILTER (WHERE sentiment_label = 'negative'), \
     count(*) FILTER (WHERE sentiment_label = 'neutral'), \
     count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 1), \
     count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 2), \
     count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 3), \
     count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 4), \
     count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 5), \
     count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 6), \
     count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 7), \
     count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 8), \
     count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) = 9), \
     count(*) FILTER (WHERE width_bucket(sentiment_score, -1, 1, 10) >= 10)";

/// Figures per hour (or day, where `days` allows and the range covers whole days) and channel, for the
/// interactions matching `filter` in `range`. Run inside a snapshot, the result is exact.
pub async fn buckets(
    db: &mut PgConnection,
    org: OrganizationId,
    filter: &InteractionFilter,
    range: Range,
    days: bool,
    source: Source,
) -> Result<Vec<Bucket>, Error> {
    let mut qb = match source {
        Source::Rows => {
            let mut qb = QueryBuilder::new(format!(
                "SELECT date_bin('1 hour', occurred_at, {ORIGIN}), channel, {ROW_FIGURES} FROM customer_interactions"
            ));
            push_interaction_filters(&mut qb, org, &ranged(filter, range));
            qb.push(" GROUP BY 1, 2");
            qb
        }
        Source::Rollups => rollup_buckets(org, filter, &Plan::new(range, days)),
    };
    let rows = qb.build().fetch_all(&mut *db).await?;
    rows.iter()
        .map(|row| {
            Ok(Bucket {
                start: row.try_get(0)?,
                channel: row.try_get(1)?,
                figures: Figures::read(row, 2)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Error::from)
}

fn rollup_buckets(org: OrganizationId, filter: &InteractionFilter, plan: &Plan) -> QueryBuilder<Postgres> {
    let mut qb = QueryBuilder::new(format!("SELECT t, channel, {FIGURES} FROM ("));
    let mut parts = 0;
    let mut union = |qb: &mut QueryBuilder<Postgres>| {
        if parts > 0 {
            qb.push(" UNION ALL ");
        }
        parts += 1;
    };
    if let Some(days) = plan.days {
        union(&mut qb);
        qb.push(format!(
            "SELECT day AS t, channel, {COLUMNS} FROM interaction_daily WHERE organization_id = "
        ))
        .push_bind(org.as_uuid());
        push_spans(&mut qb, "day", &[days]);
        push_dimensions(&mut qb, filter);
    }
    if !plan.hours.is_empty() {
        union(&mut qb);
        qb.push(format!(
            "SELECT hour, channel, {COLUMNS} FROM interaction_hourly WHERE organization_id = "
        ))
        .push_bind(org.as_uuid());
        push_spans(&mut qb, "hour", &plan.hours);
        push_dimensions(&mut qb, filter);
    }
    if let Some(rolled) = plan.rolled {
        union(&mut qb);
        qb.push(format!(
            "SELECT hour, channel, {COLUMNS} FROM interaction_deltas WHERE organization_id = "
        ))
        .push_bind(org.as_uuid());
        push_spans(&mut qb, "hour", &[rolled]);
        push_dimensions(&mut qb, filter);
    }
    if !plan.rows.is_empty() {
        union(&mut qb);
        qb.push(format!(
            "SELECT date_bin('1 hour', occurred_at, {ORIGIN}), channel, {ROW_FIGURES} FROM customer_interactions"
        ));
        push_interaction_filters(&mut qb, org, &unranged(filter));
        push_spans(&mut qb, "occurred_at", &plan.rows);
        qb.push(" GROUP BY 1, 2");
    }
    if parts == 0 {
        // An empty range: no part, and no row.
        qb.push("SELECT NULL::timestamptz AS t, NULL::interaction_channel AS channel, ")
            .push(
                COLUMNS
                    .split(", ")
                    .map(|c| format!("0 AS {c}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            )
            .push(" WHERE false");
    }
    qb.push(") AS s (t, channel, ")
        .push(COLUMNS)
        .push(") GROUP BY t, channel");
    qb
}

/// How many distinct customers have interactions matching `filter` in `range`, and the `top` of them
/// whose average score there is the most negative (ties: more negatives first, then by id).
pub async fn customers(
    db: &mut PgConnection,
    keys: &super::fields::FieldKeys,
    org: OrganizationId,
    filter: &InteractionFilter,
    range: Range,
    top: i64,
    source: Source,
) -> Result<(i64, Vec<CustomerFigures>), Error> {
    let mut qb = QueryBuilder::new("WITH c (customer_id, n, scored, score_sum, negative) AS (");
    match source {
        Source::Rows => {
            qb.push(
                "SELECT customer_id, count(*), count(sentiment_score), coalesce(sum(sentiment_score::float8), 0), \
                 count(*) FILTER (WHERE sentiment_label = 'negative') FROM customer_interactions",
            );
            push_interaction_filters(&mut qb, org, &ranged(filter, range));
            qb.push(" GROUP BY customer_id");
        }
        Source::Rollups => push_rollup_customers(&mut qb, org, filter, range),
    }
    qb.push(
        "), per AS (SELECT customer_id, sum(n)::int8 AS n, sum(scored)::int8 AS scored, \
         sum(score_sum)::float8 AS score_sum, sum(negative)::int8 AS negative FROM c GROUP BY customer_id \
         HAVING sum(n) > 0) \
         SELECT k.customers, t.id, t.external_id, t.name_sealed, t.segment, t.n, t.negative, t.average \
         FROM (SELECT count(*)::int8 AS customers FROM per) AS k LEFT JOIN LATERAL ( \
             SELECT cu.id, cu.external_id, cu.name_sealed, cu.segment, p.n, p.negative, p.average \
             FROM (SELECT customer_id, n, negative, score_sum / scored AS average FROM per \
                   WHERE scored > 0 AND score_sum / scored < 0 \
                   ORDER BY score_sum / scored, negative DESC, customer_id LIMIT ",
    )
    .push_bind(top)
    // Only the top few are joined to their customers (a customer in `per` has rows, so it exists).
    .push(") AS p JOIN customers cu ON cu.organization_id = ")
    .push_bind(org.as_uuid())
    .push(" AND cu.id = p.customer_id) AS t ON true ORDER BY t.average, t.negative DESC, t.id");
    let rows = qb.build().fetch_all(&mut *db).await?;
    let mut count = 0;
    let mut list = Vec::new();
    for row in &rows {
        count = row.try_get(0)?;
        let id: Option<CustomerId> = row.try_get(1)?;
        if let Some(customer_id) = id {
            let sealed: Option<Vec<u8>> = row.try_get(3)?;
            list.push(CustomerFigures {
                customer_id,
                external_id: row.try_get(2)?,
                name: keys.open_text(
                    org.as_uuid(),
                    customer_id.as_uuid(),
                    super::fields::Column::Name,
                    sealed.as_deref(),
                )?,
                segment: row.try_get(4)?,
                interactions: row.try_get(5)?,
                negative: row.try_get(6)?,
                average_sentiment: row.try_get(7)?,
            });
        }
    }
    Ok((count, list))
}

/// The per-customer parts of `range`: the daily customer figures of its whole days, the deltas of those
/// days, and the rows of its partial days.
fn push_rollup_customers(
    qb: &mut QueryBuilder<Postgres>,
    org: OrganizationId,
    filter: &InteractionFilter,
    range: Range,
) {
    let (days, rows) = split(range.from, range.to, Duration::days(1));
    let mut parts = 0;
    if let Some(days) = days {
        if filter.channels.is_empty() && filter.segments.is_empty() {
            push_customer_spans(qb, org, days);
        } else {
            // The spans keep no channel or segment: a filtered dashboard reads the days it covers.
            qb.push(
                "SELECT customer_id, n, scored, score_sum, negative FROM customer_daily WHERE organization_id = ",
            )
            .push_bind(org.as_uuid());
            push_spans(qb, "day", &[days]);
            push_dimensions(qb, filter);
        }
        qb.push(
            " UNION ALL SELECT customer_id, n, scored, score_sum, negative FROM interaction_deltas \
             WHERE organization_id = ",
        )
        .push_bind(org.as_uuid());
        push_spans(qb, "hour", &[days]);
        push_dimensions(qb, filter);
        parts += 1;
    }
    if !rows.is_empty() {
        if parts > 0 {
            qb.push(" UNION ALL ");
        }
        qb.push(
            "SELECT customer_id, count(*), count(sentiment_score), coalesce(sum(sentiment_score::float8), 0), \
             count(*) FILTER (WHERE sentiment_label = 'negative') FROM customer_interactions",
        );
        push_interaction_filters(qb, org, &unranged(filter));
        push_spans(qb, "occurred_at", &rows);
        qb.push(" GROUP BY customer_id");
        parts += 1;
    }
    if parts == 0 {
        qb.push("SELECT NULL::uuid, 0::int8, 0::int8, 0::float8, 0::int8 WHERE false");
    }
}

/// Widths, in days, of the per-customer spans (`customer_spans` in the migration
/// `20261204000001_customer_spans.sql`); each divides the next.
pub const SPAN_WIDTHS: [i64; 6] = [1, 4, 16, 64, 256, 1024];

/// Consecutive spans of one width, as days counted from the origin: those starting at `from`, `from +
/// width`, … before `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanRun {
    pub width: i64,
    pub from: i64,
    pub to: i64,
}

/// Covers the days `[a, b)` (counted from the origin) exactly once with aligned spans: from each day, the
/// widest span that starts there and ends by `b`. That climbs to the widest width that fits and comes down
/// again, so at most three spans of each narrower width are used at either end: at most 11 runs, whatever
/// the length.
pub fn span_cover(a: i64, b: i64) -> Vec<SpanRun> {
    let mut runs: Vec<SpanRun> = Vec::new();
    let mut day = a;
    while day < b {
        let width = SPAN_WIDTHS
            .iter()
            .rev()
            .copied()
            .find(|w| day.rem_euclid(*w) == 0 && day + w <= b)
            .unwrap_or(1);
        match runs.last_mut() {
            Some(run) if run.width == width && run.to == day => run.to += width,
            _ => runs.push(SpanRun {
                width,
                from: day,
                to: day + width,
            }),
        }
        day += width;
    }
    runs
}

fn origin() -> DateTime<Utc> {
    DateTime::from_timestamp(946_857_600, 0).unwrap_or_default()
}

/// The customer spans covering the whole days `days`, with the deltas not folded into them yet.
fn push_customer_spans(qb: &mut QueryBuilder<Postgres>, org: OrganizationId, days: Span) {
    let index = |t: DateTime<Utc>| (t - origin()).num_days();
    let day = |i: i64| origin() + Duration::days(i);
    // One index-only range scan per run (an OR of the runs would become a bitmap scan of the heap).
    for (i, run) in span_cover(index(days.0), index(days.1)).iter().enumerate() {
        if i > 0 {
            qb.push(" UNION ALL ");
        }
        qb.push(
            "SELECT customer_id, n, scored, score_sum, negative FROM customer_spans WHERE organization_id = ",
        )
        .push_bind(org.as_uuid())
        .push(" AND width = ")
        .push_bind(run.width as i16)
        .push(" AND start >= ")
        .push_bind(day(run.from))
        .push(" AND start < ")
        .push_bind(day(run.to));
    }
}

/// How many interactions match `filter` in `range` (unbounded ends allowed), from the rollups: exact,
/// for the filters [`Source::Rollups`] answers.
pub async fn count(
    db: &mut PgConnection,
    org: OrganizationId,
    filter: &InteractionFilter,
) -> Result<i64, Error> {
    // An open end is the whole history: from year 1 (RFC 3339 has no earlier) to year 10,000 (no
    // RFC 3339 time reaches it), both whole days, so only the daily rollups and the deltas are read.
    let day = |y: i32| {
        chrono::NaiveDate::from_ymd_opt(y, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
    };
    let (Some(first), Some(last)) = (day(1), day(10_000)) else {
        return Err(Error::internal(anyhow::anyhow!(
            "the calendar has no year 1 or 10,000"
        )));
    };
    let range = Range {
        from: filter.from.unwrap_or(first),
        to: filter.to.unwrap_or(last),
    };
    let rows = buckets(db, org, filter, range, true, Source::Rollups).await?;
    Ok(rows.iter().map(|b| b.figures.interactions).sum())
}

/// Folds at most `batch` deltas into the rollups, in one transaction; returns how many, or `None` when
/// another node is folding right now (one at a time, so two folds never wait on each other's rows).
pub async fn fold(pool: &PgPool, batch: i64) -> Result<Option<u64>, Error> {
    let mut tx = pool.begin().await?;
    // The two-key form lives apart from the organizations' one-key locks.
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(1229869897, 15)")
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(None);
    }
    let (folded, shrunk): (i64, Vec<uuid::Uuid>) =
        sqlx::query_as(FOLD).bind(batch).fetch_one(&mut *tx).await?;
    if !shrunk.is_empty() {
        // Only deletions make counts fall (a score or an enrichment changes no bucket's count): the
        // organizations that had some lose the buckets that fell to zero.
        // customer_spans last: deleting from customer_daily writes to it.
        for table in [
            "interaction_hourly",
            "interaction_daily",
            "customer_daily",
            "customer_spans",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE organization_id = ANY($1) AND n = 0"
            )))
            .bind(&shrunk)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(Some(folded as u64))
}

/// Folds until no delta is left (waiting while another node folds); returns how many were folded.
pub async fn fold_all(pool: &PgPool, batch: i64) -> Result<u64, Error> {
    let mut total = 0;
    loop {
        match fold(pool, batch).await? {
            Some(0) => return Ok(total),
            Some(n) => total += n,
            None => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
}

/// Folds deltas every `every` until `shutdown`, `batch` at a time; a failed fold is logged and retried at
/// the next tick (the deltas stay, so nothing is lost).
pub async fn fold_forever(
    pool: PgPool,
    every: std::time::Duration,
    batch: i64,
    metrics: crate::metrics::Metrics,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        loop {
            match fold(&pool, batch).await {
                Ok(Some(n)) => {
                    metrics.rollup_deltas_folded.inc_by(n);
                    // A full batch: more may be waiting.
                    if (n as i64) < batch {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    metrics.rollup_fold_failures.inc();
                    tracing::warn!(error = %e, "folding the rollup deltas failed; retrying at the next tick");
                    break;
                }
            }
        }
    }
}

/// Moves the oldest `$1` deltas into the hourly, daily and per-customer rollups, in one statement; returns
/// how many, and the organizations with negative deltas (deletions).
const FOLD: &str = "WITH d AS (\
        DELETE FROM interaction_deltas WHERE id IN (SELECT id FROM interaction_deltas ORDER BY id LIMIT $1) \
        RETURNING *), \
    hourly AS (INSERT INTO interaction_hourly AS r (organization_id, hour, channel, segment, n, scored, score_sum, positive, negative, neutral, h1, h2, h3, h4, h5, h6, h7, h8, h9, h10) \
        SELECT organization_id, hour, channel, segment, sum(n), sum(scored), sum(score_sum), sum(positive), sum(negative), sum(neutral), sum(h1), sum(h2), sum(h3), sum(h4), sum(h5), sum(h6), sum(h7), sum(h8), sum(h9), sum(h10) FROM d GROUP BY 1, 2, 3, 4 \
        ON CONFLICT (organization_id, hour, channel, segment) DO UPDATE SET n = r.n + excluded.n, scored = r.scored + excluded.scored, score_sum = r.score_sum + excluded.score_sum, positive = r.positive + excluded.positive, negative = r.negative + excluded.negative, neutral = r.neutral + excluded.neutral, h1 = r.h1 + excluded.h1, h2 = r.h2 + excluded.h2, h3 = r.h3 + excluded.h3, h4 = r.h4 + excluded.h4, h5 = r.h5 + excluded.h5, h6 = r.h6 + excluded.h6, h7 = r.h7 + excluded.h7, h8 = r.h8 + excluded.h8, h9 = r.h9 + excluded.h9, h10 = r.h10 + excluded.h10), \
    daily AS (INSERT INTO interaction_daily AS r (organization_id, day, channel, segment, n, scored, score_sum, positive, negative, neutral, h1, h2, h3, h4, h5, h6, h7, h8, h9, h10) \
        SELECT organization_id, date_bin('1 day', hour, TIMESTAMPTZ '2000-01-03 00:00:00+00'), channel, segment, sum(n), sum(scored), sum(score_sum), sum(positive), sum(negative), sum(neutral), sum(h1), sum(h2), sum(h3), sum(h4), sum(h5), sum(h6), sum(h7), sum(h8), sum(h9), sum(h10) FROM d GROUP BY 1, 2, 3, 4 \
        ON CONFLICT (organization_id, day, channel, segment) DO UPDATE SET n = r.n + excluded.n, scored = r.scored + excluded.scored, score_sum = r.score_sum + excluded.score_sum, positive = r.positive + excluded.positive, negative = r.negative + excluded.negative, neutral = r.neutral + excluded.neutral, h1 = r.h1 + excluded.h1, h2 = r.h2 + excluded.h2, h3 = r.h3 + excluded.h3, h4 = r.h4 + excluded.h4, h5 = r.h5 + excluded.h5, h6 = r.h6 + excluded.h6, h7 = r.h7 + excluded.h7, h8 = r.h8 + excluded.h8, h9 = r.h9 + excluded.h9, h10 = r.h10 + excluded.h10), \
    customers AS (INSERT INTO customer_daily AS r (organization_id, day, channel, segment, customer_id, n, scored, score_sum, negative) \
        SELECT organization_id, date_bin('1 day', hour, TIMESTAMPTZ '2000-01-03 00:00:00+00'), channel, segment, customer_id, \
            sum(n), sum(scored), sum(score_sum), sum(negative) FROM d GROUP BY 1, 2, 3, 4, 5 \
        ON CONFLICT (organization_id, day, channel, segment, customer_id) DO UPDATE SET \
            n = r.n + excluded.n, scored = r.scored + excluded.scored, score_sum = r.score_sum + excluded.score_sum, \
            negative = r.negative + excluded.negative) \
    SELECT count(*), coalesce(array_agg(DISTINCT organization_id) FILTER (WHERE n < 0), '{}') FROM d";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn covered(plan: &Plan) -> Vec<Span> {
        let mut spans: Vec<Span> = plan
            .days
            .iter()
            .copied()
            .chain(plan.hours.iter().copied())
            .chain(plan.rows.iter().copied())
            .collect();
        spans.sort();
        spans
    }

    proptest! {
        #[test]
        fn a_plan_covers_its_range_exactly_once(from in 0i64..10_000_000, len in 0i64..5_000_000, days: bool) {
            let range = Range { from: at(from), to: at(from + len) };
            let plan = Plan::new(range, days);
            let spans = covered(&plan);
            // Contiguous, in order, from `from` to `to`, each non-empty.
            let mut cursor = range.from;
            for (a, b) in &spans {
                prop_assert_eq!(*a, cursor);
                prop_assert!(a < b);
                cursor = *b;
            }
            prop_assert_eq!(cursor, if spans.is_empty() { range.from } else { range.to });
            prop_assert_eq!(spans.is_empty(), len == 0);
            // Rolled-up spans are whole units; rows only partial hours at the edges.
            let hour = Duration::hours(1);
            for (a, b) in plan.hours.iter().chain(plan.rolled.iter()) {
                prop_assert_eq!(floor(*a, hour), *a);
                prop_assert_eq!(floor(*b, hour), *b);
            }
            if let Some((a, b)) = plan.days {
                prop_assert!(days);
                prop_assert_eq!(floor(a, Duration::days(1)), a);
                prop_assert_eq!(floor(b, Duration::days(1)), b);
            }
            prop_assert!(plan.rows.len() <= 2);
            for (a, b) in &plan.rows {
                prop_assert!(*b - *a < hour || plan.rolled.is_none());
            }
        }
    }

    proptest! {
        #[test]
        fn a_span_cover_covers_its_days_exactly_once_with_few_aligned_runs(a in -5_000i64..20_000, len in 0i64..6_000) {
            let runs = span_cover(a, a + len);
            let mut cursor = a;
            for run in &runs {
                prop_assert_eq!(run.from, cursor);
                prop_assert!(run.from < run.to);
                prop_assert!(SPAN_WIDTHS.contains(&run.width));
                prop_assert_eq!(run.from.rem_euclid(run.width), 0);
                prop_assert_eq!((run.to - run.from) % run.width, 0);
                // Narrower widths: at most three spans at either end (six where the ends meet).
                prop_assert!(run.width == 1024 || (run.to - run.from) / run.width <= 6);
                cursor = run.to;
            }
            prop_assert_eq!(cursor, a + len);
            prop_assert!(runs.len() <= 11, "{} runs", runs.len());
        }
    }

    #[test]
    fn the_span_origin_is_the_rollups_origin() {
        assert_eq!(origin().to_rfc3339(), "2000-01-03T00:00:00+00:00");
        // Thirty days: three single days, a span of 4, one of 16, one of 4, three single days.
        let run = |width, from, to| SpanRun { width, from, to };
        assert_eq!(
            span_cover(9497, 9527),
            vec![
                run(1, 9497, 9500),
                run(4, 9500, 9504),
                run(16, 9504, 9520),
                run(4, 9520, 9524),
                run(1, 9524, 9527)
            ]
        );
    }

    #[test]
    fn a_range_inside_one_hour_is_read_from_rows() {
        let range = Range {
            from: at(3600 + 60),
            to: at(3600 + 120),
        };
        let plan = Plan::new(range, true);
        assert_eq!(plan.rolled, None);
        assert_eq!(plan.rows, vec![(range.from, range.to)]);
    }

    #[test]
    fn only_range_channel_and_segment_filters_use_the_rollups() {
        let mut f = InteractionFilter {
            channels: vec![Channel::Chat],
            segments: vec!["smb".to_owned()],
            from: Some(at(0)),
            ..InteractionFilter::default()
        };
        assert_eq!(Source::for_filter(&f), Source::Rollups);
        f.sentiment_min = Some(-0.5);
        assert_eq!(Source::for_filter(&f), Source::Rows);
        f.sentiment_min = None;
        f.text = Some("refund".to_owned());
        assert_eq!(Source::for_filter(&f), Source::Rows);
    }
}
