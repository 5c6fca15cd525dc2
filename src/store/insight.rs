//! What the insight alerts read and keep (issue 18): each organization's hourly buckets for the whole
//! organization, each channel and each segment, from the rollups in one grouped scan (O(hours ×
//! dimensions), whatever the volume), and its alert rules.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row as _};

use crate::domain::insight::{Dimension, HourBucket, InsightRules};
use crate::domain::{OrganizationId, UserId};
use crate::error::Error;

/// The organization's hourly buckets since `since`, by dimension (segments with a name only).
pub async fn hourly_dimensions(
    pool: &PgPool,
    org: OrganizationId,
    since: DateTime<Utc>,
) -> Result<BTreeMap<Dimension, Vec<HourBucket>>, Error> {
    let rows = sqlx::query(
        "SELECT hour, channel::text AS channel, segment, GROUPING(channel) AS no_channel,
                GROUPING(segment) AS no_segment,
                sum(n)::bigint AS n, sum(scored)::bigint AS scored, sum(score_sum)::float8 AS score_sum,
                sum(negative)::bigint AS negative,
                sum(h1)::bigint AS h1, sum(h2)::bigint AS h2, sum(h3)::bigint AS h3, sum(h4)::bigint AS h4,
                sum(h5)::bigint AS h5, sum(h6)::bigint AS h6, sum(h7)::bigint AS h7, sum(h8)::bigint AS h8,
                sum(h9)::bigint AS h9, sum(h10)::bigint AS h10
           FROM interaction_hourly
          WHERE organization_id = $1 AND hour >= $2
          GROUP BY GROUPING SETS ((hour), (hour, channel), (hour, segment))",
    )
    .bind(org.as_uuid())
    .bind(since)
    .fetch_all(pool)
    .await?;
    let mut out: BTreeMap<Dimension, Vec<HourBucket>> = BTreeMap::new();
    for r in &rows {
        let no_channel: i32 = r.try_get("no_channel")?;
        let no_segment: i32 = r.try_get("no_segment")?;
        let dimension = match (no_channel, no_segment) {
            (1, 1) => Dimension::Overall,
            (0, _) => Dimension::Channel(r.try_get("channel")?),
            _ => match r.try_get::<Option<String>, _>("segment")? {
                Some(s) => Dimension::Segment(s),
                None => continue,
            },
        };
        let count = |c: &str| -> Result<u64, Error> { Ok(r.try_get::<i64, _>(c)?.max(0) as u64) };
        let mut histogram = [0u64; 10];
        for (i, h) in histogram.iter_mut().enumerate() {
            *h = count(&format!("h{}", i + 1))?;
        }
        out.entry(dimension).or_default().push(HourBucket {
            hour: r.try_get("hour")?,
            interactions: count("n")?,
            scored: count("scored")?,
            score_sum: r.try_get("score_sum")?,
            negative: count("negative")?,
            histogram,
        });
    }
    Ok(out)
}

/// The organization's rules, or the defaults.
pub async fn rules(pool: &PgPool, org: OrganizationId) -> Result<InsightRules, Error> {
    let stored: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT rules FROM alert_rules WHERE organization_id = $1")
            .bind(org.as_uuid())
            .fetch_optional(pool)
            .await?;
    Ok(stored
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default())
}

/// Stores the organization's rules.
pub async fn save_rules(
    pool: &PgPool,
    org: OrganizationId,
    rules: &InsightRules,
    by: UserId,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO alert_rules (organization_id, rules, updated_by) VALUES ($1, $2, $3)
         ON CONFLICT (organization_id) DO UPDATE SET rules = EXCLUDED.rules, updated_by = EXCLUDED.updated_by,
             updated_at = now()",
    )
    .bind(org.as_uuid())
    .bind(serde_json::to_value(rules).map_err(Error::internal)?)
    .bind(by.as_uuid())
    .execute(pool)
    .await?;
    Ok(())
}
