//! The security audit trail of authentication (R9.14, R11.3).

use std::net::IpAddr;

use sqlx::PgPool;

use crate::domain::{OrganizationId, UserId};

/// Kinds of recorded events; the names are the values of `auth_events.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthEventKind {
    LoginSucceeded,
    LoginFailed,
    LoginThrottled,
    Logout,
    PasswordChanged,
    RefreshReused,
}

impl AuthEventKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::LoginSucceeded => "login_succeeded",
            Self::LoginFailed => "login_failed",
            Self::LoginThrottled => "login_throttled",
            Self::Logout => "logout",
            Self::PasswordChanged => "password_changed",
            Self::RefreshReused => "refresh_reused",
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
}

/// Records an event. The audit trail must not turn a working login into a failed one, so a write error
/// is logged rather than returned.
pub async fn record(pool: &PgPool, kind: AuthEventKind, event: AuthEvent<'_>) {
    let result = sqlx::query!(
        "INSERT INTO auth_events (organization_id, user_id, kind, email, ip, user_agent)
         VALUES ($1, $2, $3, $4, CAST($5::text AS inet), $6)",
        event.organization_id.map(|o| o.as_uuid()),
        event.user_id.map(|u| u.as_uuid()),
        kind.as_str(),
        event.email,
        event.ip.map(|i| i.to_string()),
        event.user_agent
    )
    .execute(pool)
    .await;
    if let Err(e) = result {
        tracing::error!(kind = kind.as_str(), error = %e, "cannot record auth event");
    }
}
