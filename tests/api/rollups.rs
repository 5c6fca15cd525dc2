//! The rollups stay equal to a recomputation from the rows through random writes: single and batch
//! ingest, scores arriving later, re-scoring, segment changes, deleted customers, and folds at random
//! moments (besides the node's own folding every 50 ms).

use insights::store::fields::FieldKeys;
use std::time::Duration;

use chrono::{DateTime, Utc};
use insights::domain::OrganizationId;
use insights::domain::interaction::Channel;
use insights::store::filter::InteractionFilter;
use insights::store::insights::{Dashboard, Interval, dashboard_from};
use insights::store::rollups::{self, Range, Source};
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::spawn_with;

/// A small deterministic generator, so a failure replays.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }

    fn score(&mut self) -> f32 {
        (self.below(2001) as f32 - 1000.0) / 1000.0
    }
}

fn base() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-05T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

const CHANNELS: [&str; 5] = ["web", "mobile", "email", "chat", "phone"];

/// Writes scores as the model would, on `id`.
async fn score(pool: &PgPool, id: uuid::Uuid, s: f32) {
    let (pos, neg) = if s >= 0.0 { (s, 0.0) } else { (0.0, -s) };
    let label = if s > 0.05 {
        "positive"
    } else if s < -0.05 {
        "negative"
    } else {
        "neutral"
    };
    sqlx::query(
        "UPDATE customer_interactions SET sentiment_positive = $2, sentiment_negative = $3,
             sentiment_neutral = $4, sentiment_score = $5, sentiment_label = $6::text::sentiment_label,
             sentiment_confidence = $4, model_version = 'test', processed_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(pos)
    .bind(neg)
    .bind(1.0 - pos - neg)
    .bind(s)
    .bind(label)
    .execute(pool)
    .await
    .unwrap();
}

async fn some_row(pool: &PgPool, org: OrganizationId, scored: bool, pick: u64) -> Option<uuid::Uuid> {
    sqlx::query_scalar(
        "SELECT id FROM customer_interactions WHERE organization_id = $1 AND content IS NOT NULL
             AND (sentiment_score IS NOT NULL) = $2
         ORDER BY id OFFSET $3 LIMIT 1",
    )
    .bind(org.as_uuid())
    .bind(scored)
    .bind((pick % 7) as i64)
    .fetch_optional(pool)
    .await
    .unwrap()
}

fn same_average(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() < 1e-9,
        _ => false,
    }
}

/// Everything but `generatedAt` and float noise is equal.
fn assert_same(rolled: &Dashboard, rows: &Dashboard, what: &str) {
    let (a, b) = (&rolled.totals, &rows.totals);
    assert_eq!(
        (a.interactions, a.customers, a.scored, a.unscored),
        (b.interactions, b.customers, b.scored, b.unscored),
        "totals of {what}"
    );
    assert!(
        same_average(a.average_sentiment, b.average_sentiment),
        "average of {what}"
    );
    assert!(
        same_average(a.negative_share, b.negative_share),
        "negative share of {what}"
    );
    for (x, y) in rolled.by_channel.iter().zip(&rows.by_channel) {
        assert_eq!(
            (x.channel, x.interactions, x.scored, x.negative),
            (y.channel, y.interactions, y.scored, y.negative),
            "channels of {what}"
        );
        assert!(
            same_average(x.average_sentiment, y.average_sentiment),
            "channel average of {what}"
        );
    }
    let (s, t) = (&rolled.sentiment, &rows.sentiment);
    assert_eq!(
        (s.positive, s.negative, s.neutral, s.unscored),
        (t.positive, t.negative, t.neutral, t.unscored),
        "labels of {what}"
    );
    assert_eq!(s.histogram, t.histogram, "histogram of {what}");
    assert_eq!(rolled.volume.len(), rows.volume.len(), "buckets of {what}");
    for (p, q) in rolled.volume.iter().zip(&rows.volume) {
        assert_eq!(
            (
                p.bucket,
                p.interactions,
                p.scored,
                p.positive,
                p.negative,
                p.neutral
            ),
            (
                q.bucket,
                q.interactions,
                q.scored,
                q.positive,
                q.negative,
                q.neutral
            ),
            "volume of {what}"
        );
        assert!(
            same_average(p.average_sentiment, q.average_sentiment),
            "volume average of {what}"
        );
    }
    let ids = |d: &Dashboard| {
        d.top_negative_customers
            .iter()
            .map(|c| (c.customer_id, c.interactions, c.negative))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(rolled), ids(rows), "most negative customers of {what}");
}

/// Compares every summary the rollups answer with the same summary read from the rows.
async fn compare(pool: &PgPool, keys: &FieldKeys, org: OrganizationId, rng: &mut Lcg) -> usize {
    let hour = chrono::Duration::hours(1);
    let mut ranges = vec![
        // Everything, whole days, and whole hours.
        Range {
            from: base() - chrono::Duration::days(2),
            to: base() + chrono::Duration::days(6),
        },
        Range {
            from: base(),
            to: base() + chrono::Duration::days(2),
        },
        // A month: spans of 1, 4 and 16 days for the customers.
        Range {
            from: base() - chrono::Duration::days(10),
            to: base() + chrono::Duration::days(20),
        },
        Range {
            from: base() + hour * 5,
            to: base() + hour * 29,
        },
        // Inside one hour.
        Range {
            from: base() + hour * 7 + chrono::Duration::minutes(10),
            to: base() + hour * 7 + chrono::Duration::minutes(40),
        },
    ];
    for _ in 0..6 {
        let from = base() + chrono::Duration::seconds(rng.below(3 * 86_400) as i64 - 3600);
        let to = from + chrono::Duration::seconds(1 + rng.below(2 * 86_400) as i64);
        ranges.push(Range { from, to });
    }
    let filters = [
        InteractionFilter::default(),
        InteractionFilter {
            channels: vec![Channel::Web, Channel::Chat],
            ..InteractionFilter::default()
        },
        InteractionFilter {
            segments: vec!["smb".to_owned()],
            ..InteractionFilter::default()
        },
        InteractionFilter {
            channels: vec![Channel::Email],
            segments: vec!["enterprise".to_owned(), "smb".to_owned()],
            ..InteractionFilter::default()
        },
    ];
    let mut compared = 0;
    for range in &ranges {
        for filter in &filters {
            for interval in [Interval::Hour, Interval::Day, Interval::Week] {
                let what = format!("{range:?} {filter:?} {interval:?}");
                let rolled = dashboard_from(pool, keys, org, filter, *range, interval, 3, Source::Rollups)
                    .await
                    .unwrap();
                let rows = dashboard_from(pool, keys, org, filter, *range, interval, 3, Source::Rows)
                    .await
                    .unwrap();
                assert_same(&rolled, &rows, &what);
                compared += 1;
            }
        }
    }
    compared
}

/// How many rows `rollup` and `recomputed` (two SELECTs over organization `$1`) do not share.
async fn rows_differing(pool: &PgPool, org: OrganizationId, rollup: &str, recomputed: &str) -> i64 {
    let statement = format!(
        "WITH r AS ({rollup}), raw AS ({recomputed})
         SELECT (SELECT count(*) FROM (SELECT * FROM r EXCEPT SELECT * FROM raw) x)
              + (SELECT count(*) FROM (SELECT * FROM raw EXCEPT SELECT * FROM r) y)"
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(statement))
        .bind(org.as_uuid())
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The per-customer figures of the rows, as a rollup keeps them.
const CUSTOMER_FIGURES: &str = "customer_id, count(*), count(sentiment_score), \
     round(coalesce(sum(sentiment_score::float8), 0)::numeric, 6), count(*) FILTER (WHERE sentiment_label = 'negative')";

/// Every rollup row equals the same grouping of the rows, once every delta is folded.
async fn assert_folded_equal(pool: &PgPool, org: OrganizationId) {
    rollups::fold_all(pool, 1000).await.unwrap();
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM interaction_deltas WHERE organization_id = $1")
            .bind(org.as_uuid())
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(pending, 0);
    // The histograms are compared through the dashboards; every other column here.
    for (table, bucket) in [("interaction_hourly", "hour"), ("interaction_daily", "day")] {
        let rollup = format!(
            "SELECT {bucket} AS t, channel, segment, n, scored, round(score_sum::numeric, 6) AS s,
                    positive, negative, neutral
             FROM {table} WHERE organization_id = $1"
        );
        let recomputed = format!(
            "SELECT date_bin('1 {bucket}', occurred_at, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS t,
                    channel, segment, count(*) AS n, count(sentiment_score) AS scored,
                    round(coalesce(sum(sentiment_score::float8), 0)::numeric, 6) AS s,
                    count(*) FILTER (WHERE sentiment_label = 'positive') AS positive,
                    count(*) FILTER (WHERE sentiment_label = 'negative') AS negative,
                    count(*) FILTER (WHERE sentiment_label = 'neutral') AS neutral
             FROM customer_interactions WHERE organization_id = $1 GROUP BY 1, 2, 3"
        );
        let differing = rows_differing(pool, org, &rollup, &recomputed).await;
        assert_eq!(differing, 0, "{table} differs from the rows");
    }
    let differing = rows_differing(
        pool,
        org,
        "SELECT day, channel, segment, customer_id, n, scored, round(score_sum::numeric, 6), negative
         FROM customer_daily WHERE organization_id = $1",
        &format!(
            "SELECT date_bin('1 day', occurred_at, TIMESTAMPTZ '2000-01-03 00:00:00+00'), channel, segment,
                    {CUSTOMER_FIGURES}
             FROM customer_interactions WHERE organization_id = $1 GROUP BY 1, 2, 3, 4"
        ),
    )
    .await;
    assert_eq!(differing, 0, "customer_daily differs from the rows");
    let differing = rows_differing(
        pool,
        org,
        "SELECT width, start, customer_id, n, scored, round(score_sum::numeric, 6), negative
         FROM customer_spans WHERE organization_id = $1",
        &format!(
            "SELECT w.width, date_bin(make_interval(days => w.width), occurred_at,
                    TIMESTAMPTZ '2000-01-03 00:00:00+00'), {CUSTOMER_FIGURES}
             FROM customer_interactions CROSS JOIN unnest('{{1, 4, 16, 64, 256, 1024}}'::int2[]) AS w (width)
             WHERE organization_id = $1 GROUP BY 1, 2, 3"
        ),
    )
    .await;
    assert_eq!(differing, 0, "customer_spans differ from the rows");
}

#[tokio::test]
async fn rollups_equal_a_recomputation_from_the_rows_after_random_writes() {
    let app = spawn_with(|c| c.query.rollup_fold_every = Duration::from_millis(50)).await;
    let keys = FieldKeys::new(app.config.data_key.as_ref().unwrap(), None).unwrap();
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let token = admin.access.as_str();
    let segments = [Some("smb"), Some("enterprise"), None];
    let mut customers = Vec::new();
    for i in 0..6 {
        let c = app.customer(token, &format!("c{i}"), segments[i % 3]).await;
        customers.push(c["id"].as_str().unwrap().to_owned());
    }
    let mut rng = Lcg(15);
    let mut compared = 0;
    let body = |rng: &mut Lcg, customers: &[String]| {
        let at = base() + chrono::Duration::milliseconds(rng.below(3 * 86_400_000) as i64);
        let mut b = json!({
            "customerId": customers[rng.below(customers.len() as u64) as usize],
            "channel": CHANNELS[rng.below(5) as usize],
            "eventType": "message",
            "timestamp": at.to_rfc3339(),
        });
        // Web and mobile events may come without text; the others carry some.
        if b["channel"] != "web" && b["channel"] != "mobile" || rng.below(2) > 0 {
            b["content"] = json!(format!("text {}", rng.below(1000)));
        }
        b
    };
    for step in 0..400 {
        match rng.below(12) {
            0..=3 => {
                let b = body(&mut rng, &customers);
                app.post("/api/v1/interactions", Some(token), b).await.expect(201);
            }
            4 => {
                let items: Vec<_> = (0..1 + rng.below(20))
                    .map(|_| body(&mut rng, &customers))
                    .collect();
                app.post(
                    "/api/v1/interactions/batch",
                    Some(token),
                    json!({"interactions": items}),
                )
                .await
                .expect(200);
            }
            5 | 6 => {
                // A score arriving later.
                let pick = rng.below(100);
                if let Some(id) = some_row(&app.pool, org.id, false, pick).await {
                    score(&app.pool, id, rng.score()).await;
                }
            }
            7 => {
                // Re-scoring: a scored row gets another score (another label and bucket, often).
                let pick = rng.below(100);
                if let Some(id) = some_row(&app.pool, org.id, true, pick).await {
                    score(&app.pool, id, rng.score()).await;
                }
            }
            8 => {
                // A segment change: the customer's later interactions carry the new segment.
                let c = &customers[rng.below(customers.len() as u64) as usize];
                let segment = segments[rng.below(3) as usize];
                app.call(
                    reqwest::Method::PATCH,
                    &format!("/api/v1/customers/{c}"),
                    Some(token),
                    Some(json!({"segment": segment})),
                )
                .await
                .expect(200);
            }
            9 if step > 150 && customers.len() > 3 => {
                // A deleted customer takes its interactions with it.
                let c = customers.remove(rng.below(customers.len() as u64) as usize);
                sqlx::query("DELETE FROM customers WHERE id = $1::uuid")
                    .bind(&c)
                    .execute(&app.pool)
                    .await
                    .unwrap();
            }
            _ => {
                rollups::fold(&app.pool, 1 + rng.below(40) as i64).await.unwrap();
            }
        }
        if step % 75 == 74 {
            compared += compare(&app.pool, &keys, org.id, &mut rng).await;
        }
    }
    compared += compare(&app.pool, &keys, org.id, &mut rng).await;
    assert_folded_equal(&app.pool, org.id).await;
    compared += compare(&app.pool, &keys, org.id, &mut rng).await;
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM customer_interactions WHERE organization_id = $1")
            .bind(org.id.as_uuid())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(rows > 100, "the random writes stored {rows} rows");
    assert!(compared > 500, "{compared} comparisons");
    // The node folded too (every 50 ms), and says how much.
    assert!(app.metric("insights_rollup_deltas_folded_total").await > 0.0);
    assert_eq!(app.metric("insights_rollup_fold_failures_total").await, 0.0);
}
