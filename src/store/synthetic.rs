//! Bulk synthetic interactions generated inside PostgreSQL, for the scale tests and the query benchmark
//! (hundreds of thousands of rows in seconds). Scores are written as if the model had run; nothing goes
//! through the actors or the model. (The demo's data goes through the API and the real model instead.)

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::domain::OrganizationId;
use crate::error::Error;

/// What to generate for one organization.
#[derive(Debug, Clone)]
pub struct Synthetic {
    pub customers: i64,
    pub interactions: i64,
    /// Interactions are spread evenly over `[end - days, end)`.
    pub days: i64,
    pub end: DateTime<Utc>,
}

/// Texts the generated interactions cycle through (every seventh row the next, so a text is spread over
/// every channel and customer rather than tied to one); `kangaroo` appears in one row in ten thousand, a
/// rare term for full-text plans.
const TEXTS: &str = "ARRAY['the delivery was late again','great support from the team, thank you',\
'the app keeps crashing on login','thanks for the quick refund','a question about my last invoice',\
'love the new dashboard','cannot log in since the update','the order arrived damaged',\
'very helpful chat agent','please cancel my subscription']";

/// Creates `customers` customers (`synthetic-0` …, segments smb/enterprise/consumer, no names) and `interactions`
/// interactions for them, with scores on all but one in twenty, then sets the customers' aggregates,
/// folds the rollups and vacuums and analyzes the tables. Returns the number of interactions inserted.
pub async fn generate(pool: &PgPool, org: OrganizationId, s: &Synthetic) -> Result<u64, Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        // No name: names are sealed by the node (store::fields), which SQL alone cannot do.
        "INSERT INTO customers (organization_id, external_id, segment)
         SELECT $1, 'synthetic-' || n, (ARRAY['smb','enterprise','consumer'])[1 + n % 3]
         FROM generate_series(0, $2 - 1) AS n
         ON CONFLICT (organization_id, external_id) DO NOTHING",
    )
    .bind(org.as_uuid())
    .bind(s.customers)
    .execute(&mut *tx)
    .await?;
    let statement = format!(
        "WITH c AS (
             SELECT id, segment, substr(external_id, 11)::bigint AS n FROM customers
             WHERE organization_id = $1 AND external_id LIKE 'synthetic-%'),
         g AS (
             SELECT i, ((i * 7919) % 2001 - 1000) / 1000.0 AS score FROM generate_series(0, $2 - 1) AS i)
         INSERT INTO customer_interactions (organization_id, customer_id, channel, event_type, content,
             occurred_at, metadata, enrichment, segment, sentiment_positive, sentiment_negative,
             sentiment_neutral, sentiment_score, sentiment_label, sentiment_confidence, model_version,
             processed_at)
         SELECT $1, c.id, (enum_range(NULL::interaction_channel))[1 + g.i % 5], 'message',
             ({TEXTS})[1 + (g.i / 7) % 10] || CASE WHEN g.i % 10000 = 7 THEN ' kangaroo' ELSE '' END || ' #' || g.i,
             $3::timestamptz - make_interval(secs => ($4::float8 * 86400) * (g.i + 0.5) / $2),
             jsonb_build_object('source', 'synthetic', 'n', g.i),
             jsonb_build_object('segment', c.segment),
             c.segment,
             s.pos, s.neg, 1 - s.pos - s.neg, s.score, s.label::sentiment_label, 0.5 + abs(s.score) / 2,
             s.model, s.processed
         FROM g
         JOIN c ON c.n = g.i % $5
         CROSS JOIN LATERAL (
             SELECT CASE WHEN g.i % 20 = 0 THEN NULL ELSE g.score::real END AS score,
                    CASE WHEN g.i % 20 = 0 THEN NULL ELSE greatest(g.score, 0)::real END AS pos,
                    CASE WHEN g.i % 20 = 0 THEN NULL ELSE greatest(-g.score, 0)::real END AS neg,
                    CASE WHEN g.i % 20 = 0 THEN NULL
                         WHEN g.score > 0.05 THEN 'positive' WHEN g.score < -0.05 THEN 'negative'
                         ELSE 'neutral' END AS label,
                    CASE WHEN g.i % 20 = 0 THEN NULL ELSE 'synthetic' END AS model,
                    CASE WHEN g.i % 20 = 0 THEN NULL ELSE now() END AS processed) s"
    );
    let inserted = sqlx::query(sqlx::AssertSqlSafe(statement))
        .bind(org.as_uuid())
        .bind(s.interactions)
        .bind(s.end)
        .bind(s.days as f64)
        .bind(s.customers)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query(
        "UPDATE customers c SET interaction_count = a.n, scored_count = a.scored, average_sentiment = a.average,
             last_seen_at = a.last
         FROM (SELECT customer_id, count(*) AS n, count(sentiment_score) AS scored,
                      avg(sentiment_score)::float8 AS average, max(occurred_at) AS last
               FROM customer_interactions WHERE organization_id = $1 GROUP BY customer_id) a
         WHERE c.organization_id = $1 AND c.id = a.customer_id",
    )
    .bind(org.as_uuid())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    // The rows' deltas are folded now rather than by the nodes' next folds, so a benchmark starts from
    // compact rollups.
    super::rollups::fold_all(pool, 200_000).await?;
    // A bulk load leaves every delta and most rollup versions dead: vacuumed now, or the first reads
    // walk millions of dead index entries until autovacuum comes by.
    sqlx::query(
        "VACUUM (ANALYZE) customer_interactions, customers, interaction_deltas, interaction_hourly, \
         interaction_daily, customer_daily, customer_spans",
    )
    .execute(pool)
    .await?;
    Ok(inserted)
}
