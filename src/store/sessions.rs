//! Login sessions and their rotating refresh tokens.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::domain::{OrganizationId, Role, SessionId, UserId};
use crate::error::Error;

/// The user behind a live session, as re-read from the database.
#[derive(Debug, Clone)]
pub struct SessionOwner {
    pub session_id: SessionId,
    pub user_id: UserId,
    pub organization_id: OrganizationId,
    pub role: Role,
    pub email: String,
}

/// What presenting a refresh token led to.
#[derive(Debug)]
pub enum Rotation {
    /// The token was live; it is now used and its successor is stored.
    Rotated(SessionOwner),
    /// The token had been used already: it was copied, so its session is now revoked.
    Reused {
        session_id: SessionId,
        organization_id: OrganizationId,
        user_id: UserId,
    },
    /// Unknown, expired, or belonging to a revoked session.
    Invalid,
}

/// Opens a session; its first refresh token follows with [`insert_refresh`] in the same transaction.
pub async fn open(
    conn: &mut sqlx::PgConnection,
    org: OrganizationId,
    user: UserId,
    ip: Option<IpAddr>,
    user_agent: Option<&str>,
    expires_at: DateTime<Utc>,
) -> Result<SessionId, Error> {
    let session = sqlx::query_scalar!(
        r#"INSERT INTO sessions (organization_id, user_id, ip, user_agent, expires_at)
           VALUES ($1, $2, CAST($3::text AS inet), $4, $5) RETURNING id AS "id: SessionId""#,
        org.as_uuid(),
        user.as_uuid(),
        ip.map(|i| i.to_string()),
        user_agent,
        expires_at
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(session)
}

/// Stores a refresh token of `session` under its id (the token's `jti`), as the digest of the token.
pub async fn insert_refresh(
    conn: &mut sqlx::PgConnection,
    org: OrganizationId,
    session: SessionId,
    id: uuid::Uuid,
    hash: &[u8],
    expires_at: DateTime<Utc>,
) -> Result<(), Error> {
    sqlx::query!(
        "INSERT INTO refresh_tokens (id, organization_id, session_id, token_hash, expires_at) VALUES ($1, $2, $3, $4, $5)",
        id,
        org.as_uuid(),
        session.as_uuid(),
        hash,
        expires_at
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Uses a refresh token once: marks it used and stores its successor (`new_id`, `new_hash`), atomically.
pub async fn rotate(
    pool: &PgPool,
    old_hash: &[u8],
    new_id: uuid::Uuid,
    new_hash: &[u8],
    expires_at: DateTime<Utc>,
) -> Result<Rotation, Error> {
    let mut tx = pool.begin().await?;
    // The row lock taken by this UPDATE makes two concurrent uses of one token serialize: the second
    // sees used_at set and is treated as reuse.
    let owner = sqlx::query_as!(
        SessionOwner,
        r#"UPDATE refresh_tokens r SET used_at = now()
           FROM sessions s JOIN users u ON u.id = s.user_id
           WHERE r.token_hash = $1 AND r.used_at IS NULL AND r.expires_at > now()
             AND s.id = r.session_id AND s.revoked_at IS NULL
           RETURNING s.id AS "session_id: SessionId", u.id AS "user_id: UserId",
                     u.organization_id AS "organization_id: OrganizationId", u.role AS "role: Role", u.email"#,
        old_hash
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(owner) = owner {
        insert_refresh(
            &mut tx,
            owner.organization_id,
            owner.session_id,
            new_id,
            new_hash,
            expires_at,
        )
        .await?;
        sqlx::query!(
            "UPDATE sessions SET expires_at = $2 WHERE id = $1",
            owner.session_id.as_uuid(),
            expires_at
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(Rotation::Rotated(owner));
    }
    let used = sqlx::query!(
        r#"SELECT r.session_id AS "session_id: SessionId", s.organization_id AS "organization_id: OrganizationId",
                  s.user_id AS "user_id: UserId", s.revoked_at
           FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id
           WHERE r.token_hash = $1 AND r.used_at IS NOT NULL"#,
        old_hash
    )
    .fetch_optional(&mut *tx)
    .await?;
    let outcome = match used {
        Some(row) => {
            if row.revoked_at.is_none() {
                revoke_in(&mut tx, row.session_id, "refresh_reused").await?;
            }
            Rotation::Reused {
                session_id: row.session_id,
                organization_id: row.organization_id,
                user_id: row.user_id,
            }
        }
        None => Rotation::Invalid,
    };
    tx.commit().await?;
    Ok(outcome)
}

async fn revoke_in(conn: &mut sqlx::PgConnection, session: SessionId, reason: &str) -> Result<bool, Error> {
    let done = sqlx::query!(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = $2 WHERE id = $1 AND revoked_at IS NULL",
        session.as_uuid(),
        reason
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Revokes one session (logout).
pub async fn revoke(pool: &PgPool, session: SessionId, reason: &str) -> Result<bool, Error> {
    let mut conn = pool.acquire().await?;
    revoke_in(&mut conn, session, reason).await
}

/// Revokes every live session of a user and returns their ids (password change, role change).
pub async fn revoke_all_for_user(
    conn: &mut sqlx::PgConnection,
    user: UserId,
    reason: &str,
) -> Result<Vec<SessionId>, Error> {
    Ok(sqlx::query_scalar!(
        r#"UPDATE sessions SET revoked_at = now(), revoked_reason = $2
           WHERE user_id = $1 AND revoked_at IS NULL RETURNING id AS "id: SessionId""#,
        user.as_uuid(),
        reason
    )
    .fetch_all(conn)
    .await?)
}

/// Returns the ids of every session of a user, live or not (before the user is deleted).
pub async fn all_for_user(conn: &mut sqlx::PgConnection, user: UserId) -> Result<Vec<SessionId>, Error> {
    Ok(sqlx::query_scalar!(
        r#"SELECT id AS "id: SessionId" FROM sessions WHERE user_id = $1"#,
        user.as_uuid()
    )
    .fetch_all(conn)
    .await?)
}

/// Returns the owner of a session if the session is live and its user still exists (R1.6).
pub async fn live_owner(
    pool: &PgPool,
    session: SessionId,
    user: UserId,
) -> Result<Option<SessionOwner>, Error> {
    Ok(sqlx::query_as!(
        SessionOwner,
        r#"SELECT s.id AS "session_id: SessionId", u.id AS "user_id: UserId",
                  u.organization_id AS "organization_id: OrganizationId", u.role AS "role: Role", u.email
           FROM sessions s JOIN users u ON u.id = s.user_id
           WHERE s.id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL AND s.expires_at > now()"#,
        session.as_uuid(),
        user.as_uuid()
    )
    .fetch_optional(pool)
    .await?)
}
