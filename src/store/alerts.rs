//! Alerts in `alerts` (R11.11): one firing row per condition while it lasts (the partial unique index on
//! the fingerprint makes a second evaluation, a restart or another node find the same row), resolved once
//! the condition ends. Every change is announced with `NOTIFY insights_alerts` (the alert's id), so each
//! node pushes it to its own dashboard connections whichever node found it.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row as _};
use uuid::Uuid;

use crate::domain::OrganizationId;
use crate::domain::alert::{Alert, AlertKind, AlertState, Severity};
use crate::error::Error;

/// The channel every change of an alert is announced on.
pub const CHANNEL: &str = "insights_alerts";

/// A condition to record as firing.
#[derive(Debug, Clone)]
pub struct NewAlert<'a> {
    pub organization_id: Option<OrganizationId>,
    pub kind: AlertKind,
    pub rule: &'a str,
    pub severity: Severity,
    pub fingerprint: &'a str,
    pub summary: &'a str,
    pub details: &'a Value,
    pub node: Option<&'a str>,
}

const COLUMNS: &str =
    "id, kind, rule, severity, state, summary, details, node, organization_id, started_at, resolved_at";

fn alert(row: &PgRow) -> Result<Alert, Error> {
    let kind: String = row.try_get("kind")?;
    let severity: String = row.try_get("severity")?;
    let state: String = row.try_get("state")?;
    let organization: Option<Uuid> = row.try_get("organization_id")?;
    Ok(Alert {
        id: row.try_get("id")?,
        kind: AlertKind::parse(&kind)
            .map_err(|e| Error::internal(anyhow::anyhow!("alerts.kind {kind}: {e}")))?,
        rule: row.try_get("rule")?,
        severity: Severity::parse(&severity)
            .ok_or_else(|| Error::internal(anyhow::anyhow!("alerts.severity {severity}")))?,
        state: AlertState::parse(&state)
            .map_err(|e| Error::internal(anyhow::anyhow!("alerts.state {state}: {e}")))?,
        summary: row.try_get("summary")?,
        details: row.try_get("details")?,
        node: row.try_get("node")?,
        organization_id: organization.map(OrganizationId::from),
        started_at: row.try_get::<DateTime<Utc>, _>("started_at")?,
        resolved_at: row.try_get("resolved_at")?,
    })
}

async fn announce(pool: &PgPool, id: Uuid) -> Result<(), Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(id.to_string())
        .execute(pool)
        .await?;
    Ok(())
}

/// Records the condition as firing; `(alert, true)` when it starts now, `(alert, false)` when it was
/// already firing (found by another evaluation, a previous run or another node).
pub async fn fire(pool: &PgPool, new: &NewAlert<'_>) -> Result<(Alert, bool), Error> {
    let inserted = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO alerts (organization_id, kind, rule, severity, state, fingerprint, summary, details, node)
         VALUES ($1, $2, $3, $4, 'firing', $5, $6, $7, $8)
         ON CONFLICT (fingerprint) WHERE state = 'firing' DO NOTHING
         RETURNING {COLUMNS}"
    )))
    .bind(new.organization_id.map(|o| o.as_uuid()))
    .bind(new.kind.as_str())
    .bind(new.rule)
    .bind(new.severity.as_str())
    .bind(new.fingerprint)
    .bind(new.summary)
    .bind(new.details)
    .bind(new.node)
    .fetch_optional(pool)
    .await?;
    if let Some(row) = inserted {
        let alert = alert(&row)?;
        announce(pool, alert.id).await?;
        return Ok((alert, true));
    }
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM alerts WHERE fingerprint = $1 AND state = 'firing'"
    )))
    .bind(new.fingerprint)
    .fetch_one(pool)
    .await?;
    Ok((alert(&row)?, false))
}

/// Resolves the firing alert of this condition, if there is one.
pub async fn resolve(pool: &PgPool, fingerprint: &str) -> Result<Option<Alert>, Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE alerts SET state = 'resolved', resolved_at = now()
          WHERE fingerprint = $1 AND state = 'firing'
         RETURNING {COLUMNS}"
    )))
    .bind(fingerprint)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let alert = alert(&row)?;
    announce(pool, alert.id).await?;
    Ok(Some(alert))
}

/// The system alerts firing for `node`, with their fingerprints (what a restarted node resumes).
pub async fn firing_of_node(pool: &PgPool, node: &str) -> Result<Vec<(String, Alert)>, Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT fingerprint, {COLUMNS} FROM alerts WHERE node = $1 AND state = 'firing' AND kind = 'system'"
    )))
    .bind(node)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("fingerprint")?, alert(r)?)))
        .collect()
}

/// The insight alerts firing for `org`, with their fingerprints (what a new owner resumes).
pub async fn firing_of_org(pool: &PgPool, org: OrganizationId) -> Result<Vec<(String, Alert)>, Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT fingerprint, {COLUMNS} FROM alerts
          WHERE organization_id = $1 AND state = 'firing' AND kind = 'insight'"
    )))
    .bind(org.as_uuid())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("fingerprint")?, alert(r)?)))
        .collect()
}

/// One alert.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Alert>, Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM alerts WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(alert).transpose()
}

/// What an admin of `org` sees: the organization's alerts and the system alerts, firing first, then
/// newest first; optionally of one kind or state; with the total.
pub async fn list(
    pool: &PgPool,
    org: OrganizationId,
    kind: Option<AlertKind>,
    state: Option<AlertState>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Alert>, i64), Error> {
    const FILTER: &str = "(organization_id = $1 OR organization_id IS NULL)
          AND ($2::text IS NULL OR kind = $2) AND ($3::text IS NULL OR state = $3)";
    let kind = kind.map(AlertKind::as_str);
    let state = state.map(AlertState::as_str);
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM alerts WHERE {FILTER}
         ORDER BY state = 'firing' DESC, started_at DESC, id DESC LIMIT $4 OFFSET $5"
    )))
    .bind(org.as_uuid())
    .bind(kind)
    .bind(state)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM alerts WHERE {FILTER}"
    )))
    .bind(org.as_uuid())
    .bind(kind)
    .bind(state)
    .fetch_one(pool)
    .await?;
    Ok((rows.iter().map(alert).collect::<Result<_, _>>()?, total))
}
