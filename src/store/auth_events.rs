//! The security audit trail (R9.14, R9.15, R11.3): authentication, refused credentials, permission
//! denials, rate-limit blocks and decryption failures, in `auth_events`, logged and counted in
//! `insights_security_events_total{kind}`.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row as _};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{OrganizationId, UserId};
use crate::error::Error;
use crate::metrics::Metrics;

/// Kinds of recorded events; the names are the values of `auth_events.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum AuthEventKind {
    LoginSucceeded,
    LoginFailed,
    LoginThrottled,
    Logout,
    PasswordChanged,
    RefreshReused,
    RefreshInvalid,
    PermissionDenied,
    RateLimited,
    DecryptionFailed,
}

impl AuthEventKind {
    /// Every kind, as listed by `GET /api/v1/security-events?kind=`.
    pub const ALL: [AuthEventKind; 10] = [
        Self::LoginSucceeded,
        Self::LoginFailed,
        Self::LoginThrottled,
        Self::Logout,
        Self::PasswordChanged,
        Self::RefreshReused,
        Self::RefreshInvalid,
        Self::PermissionDenied,
        Self::RateLimited,
        Self::DecryptionFailed,
    ];

    /// Parses a kind's name.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
            format!("must be one of {}", names.join(", "))
        })
    }

    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LoginSucceeded => "login_succeeded",
            Self::LoginFailed => "login_failed",
            Self::LoginThrottled => "login_throttled",
            Self::Logout => "logout",
            Self::PasswordChanged => "password_changed",
            Self::RefreshReused => "refresh_reused",
            Self::RefreshInvalid => "refresh_invalid",
            Self::PermissionDenied => "permission_denied",
            Self::RateLimited => "rate_limited",
            Self::DecryptionFailed => "decryption_failed",
        }
    }
}

/// One event to record.
#[derive(Debug, Clone, Default)]
pub struct AuthEvent<'a> {
    pub organization_id: Option<OrganizationId>,
    pub user_id: Option<UserId>,
    pub email: Option<&'a str>,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<&'a str>,
    pub api_key_id: Option<Uuid>,
    /// The route template (never a raw path).
    pub route: Option<&'a str>,
    /// What was refused or failed, in a few words (never a secret).
    pub detail: Option<&'a str>,
}

/// Records an event, logs it and counts it. The audit trail must not turn a working request into a
/// failed one, so a write error is logged rather than returned.
pub async fn record(pool: &PgPool, metrics: &Metrics, kind: AuthEventKind, event: AuthEvent<'_>) {
    metrics.security_events.with_label_values(&[kind.as_str()]).inc();
    tracing::warn!(
        kind = kind.as_str(),
        organization_id = ?event.organization_id.map(|o| o.as_uuid()),
        user_id = ?event.user_id.map(|u| u.as_uuid()),
        api_key_id = ?event.api_key_id,
        ip = ?event.ip,
        route = event.route,
        detail = event.detail,
        "security event"
    );
    let result = sqlx::query(
        "INSERT INTO auth_events (organization_id, user_id, kind, email, ip, user_agent, api_key_id, route, detail)
         VALUES ($1, $2, $3, $4, CAST($5::text AS inet), $6, $7, $8, $9)",
    )
    .bind(event.organization_id.map(|o| o.as_uuid()))
    .bind(event.user_id.map(|u| u.as_uuid()))
    .bind(kind.as_str())
    .bind(event.email)
    .bind(event.ip.map(|i| i.to_string()))
    .bind(event.user_agent)
    .bind(event.api_key_id)
    .bind(event.route)
    .bind(event.detail)
    .execute(pool)
    .await;
    if let Err(e) = result {
        tracing::error!(kind = kind.as_str(), error = %e, "cannot record security event");
    }
}

/// A recorded security event, as admins list them.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecurityEvent {
    pub id: Uuid,
    /// login_succeeded, login_failed, login_throttled, logout, password_changed, refresh_reused,
    /// refresh_invalid, permission_denied, rate_limited or decryption_failed.
    pub kind: String,
    pub user_id: Option<Uuid>,
    pub api_key_id: Option<Uuid>,
    pub email: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub route: Option<String>,
    pub detail: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The organization's events, newest first, optionally of one kind; with the total.
pub async fn list(
    pool: &PgPool,
    org: OrganizationId,
    kind: Option<AuthEventKind>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<SecurityEvent>, i64), Error> {
    let kind = kind.map(AuthEventKind::as_str);
    let rows = sqlx::query(
        "SELECT id, kind, user_id, api_key_id, email, host(ip), user_agent, route, detail, created_at,
                count(*) OVER () FROM auth_events
         WHERE organization_id = $1 AND ($2::text IS NULL OR kind = $2)
         ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4",
    )
    .bind(org.as_uuid())
    .bind(kind)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    let mut total = 0;
    let mut events = Vec::with_capacity(rows.len());
    for r in &rows {
        total = r.try_get(10)?;
        events.push(SecurityEvent {
            id: r.try_get(0)?,
            kind: r.try_get(1)?,
            user_id: r.try_get(2)?,
            api_key_id: r.try_get(3)?,
            email: r.try_get(4)?,
            ip: r.try_get(5)?,
            user_agent: r.try_get(6)?,
            route: r.try_get(7)?,
            detail: r.try_get(8)?,
            created_at: r.try_get(9)?,
        });
    }
    if rows.is_empty() && offset > 0 {
        total = sqlx::query_scalar(
            "SELECT count(*) FROM auth_events WHERE organization_id = $1 AND ($2::text IS NULL OR kind = $2)",
        )
        .bind(org.as_uuid())
        .bind(kind)
        .fetch_one(pool)
        .await?;
    }
    Ok((events, total))
}
