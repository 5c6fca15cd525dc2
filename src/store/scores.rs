//! Sentiment scores on stored interactions: applying the model's scores (and the customer's average) and
//! finding the interactions still waiting for them.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::org_tx::OrgTx;
use crate::domain::interaction::{Channel, InteractionRecord, PendingScore, ScoredInteraction};
use crate::domain::{CustomerId, InteractionId, OrganizationId};
use crate::error::Error;

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
