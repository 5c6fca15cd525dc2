//! Sentiment scores on stored interactions: applying the model's scores of a scored batch (and the
//! customers' averages) in one transaction, and finding the interactions still waiting for them.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::org_tx::OrgTx;
use crate::domain::interaction::{Channel, InteractionRecord, PendingScore, ScoredInteraction};
use crate::domain::{CustomerId, InteractionId, OrganizationId};
use crate::error::Error;

/// Stores the model's scores on the interactions among `scored` not scored yet, in one statement, and
/// moves each customer's average sentiment and scored count forward once by the rows it got (R12.5,
/// R12.8–12.10), inside `tx`. Returns the updated rows and the customers' new averages; an interaction
/// scored already is left as it is (a replayed hand-off changes nothing).
///
/// The average is kept incrementally, `(average × count + sum of the new scores) / (count + new)`, so
/// scoring costs O(rows scored), not a scan of each customer's history; it equals `avg(sentiment_score)`
/// over the customer's rows up to floating-point rounding.
pub async fn apply_many(
    tx: &mut OrgTx,
    scored: &[ScoredInteraction],
) -> Result<(Vec<InteractionRecord>, HashMap<CustomerId, Option<f64>>), Error> {
    let org = tx.org();
    let tx: &mut sqlx::PgConnection = tx;
    let n = scored.len();
    let (mut ids, mut pos, mut neg, mut neu) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut score, mut label, mut confidence, mut model) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for s in scored {
        let scores = crate::domain::sentiment::Scores {
            positive: s.positive,
            negative: s.negative,
            neutral: s.neutral,
        };
        ids.push(s.interaction_id.as_uuid());
        pos.push(s.positive);
        neg.push(s.negative);
        neu.push(s.neutral);
        score.push(scores.score());
        label.push(scores.label().to_owned());
        confidence.push(scores.confidence());
        model.push(s.model.clone());
    }
    let updated = sqlx::query_as!(
        InteractionRecord,
        r#"UPDATE customer_interactions ci SET
               sentiment_positive = v.pos, sentiment_negative = v.neg, sentiment_neutral = v.neu,
               sentiment_score = v.score, sentiment_label = v.label::sentiment_label,
               sentiment_confidence = v.confidence, model_version = v.model, processed_at = now()
           FROM UNNEST($2::uuid[], $3::real[], $4::real[], $5::real[], $6::real[], $7::text[], $8::real[],
                       $9::text[]) AS v(id, pos, neg, neu, score, label, confidence, model)
           WHERE ci.organization_id = $1 AND ci.id = v.id AND ci.processed_at IS NULL
           RETURNING ci.id AS "id: InteractionId", ci.organization_id AS "organization_id: OrganizationId",
                     ci.customer_id AS "customer_id: CustomerId", ci.channel AS "channel: Channel",
                     ci.event_type, ci.content, ci.occurred_at, ci.metadata::text AS "metadata!",
                     ci.enrichment::text AS "enrichment!", ci.segment, ci.idempotency_key,
                     ci.sentiment_positive, ci.sentiment_negative, ci.sentiment_neutral, ci.sentiment_score,
                     ci.sentiment_label::text AS sentiment_label, ci.sentiment_confidence, ci.processed_at,
                     ci.created_at"#,
        org.as_uuid(),
        &ids,
        &pos,
        &neg,
        &neu,
        &score,
        &label,
        &confidence,
        &model
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut per_customer: BTreeMap<uuid::Uuid, (i64, f64)> = BTreeMap::new();
    for record in &updated {
        let entry = per_customer.entry(record.customer_id.as_uuid()).or_default();
        entry.0 += 1;
        entry.1 += f64::from(record.sentiment_score.unwrap_or_default());
    }
    let mut averages = HashMap::with_capacity(per_customer.len());
    if per_customer.is_empty() {
        return Ok((updated, averages));
    }
    let customers: Vec<uuid::Uuid> = per_customer.keys().copied().collect();
    let counts: Vec<i64> = per_customer.values().map(|(n, _)| *n).collect();
    let sums: Vec<f64> = per_customer.values().map(|(_, sum)| *sum).collect();
    if customers.len() > 1 {
        let orgs = vec![org.as_uuid(); customers.len()];
        super::interactions::lock_customers(&mut *tx, &orgs, &customers).await?;
    }
    let rows = sqlx::query!(
        r#"UPDATE customers c SET
               average_sentiment = LEAST(1, GREATEST(-1,
                   (coalesce(c.average_sentiment, 0) * c.scored_count + v.total) / (c.scored_count + v.n))),
               scored_count = c.scored_count + v.n
           FROM UNNEST($2::uuid[], $3::bigint[], $4::double precision[]) AS v(id, n, total)
           WHERE c.organization_id = $1 AND c.id = v.id
           RETURNING c.id AS "id: CustomerId", c.average_sentiment"#,
        org.as_uuid(),
        &customers,
        &counts,
        &sums
    )
    .fetch_all(&mut *tx)
    .await?;
    for row in rows {
        averages.insert(row.id, row.average_sentiment);
    }
    Ok((updated, averages))
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
