//! API keys of an organization: machine credentials allowed to ingest only.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::domain::{ApiKeyId, OrganizationId, UserId};
use crate::error::Error;

/// An API key as listed (never with the key itself).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    #[schema(value_type = String, format = Uuid)]
    pub id: ApiKeyId,
    pub name: String,
    /// The first characters of the key, to recognize it.
    pub prefix: String,
    /// The key's own quota per minute; absent means the deployment's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_minute: Option<i32>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// Stores a new key by its digest.
pub async fn create(
    pool: &PgPool,
    org: OrganizationId,
    name: &str,
    prefix: &str,
    digest: &[u8],
    created_by: UserId,
    rate_limit_per_minute: Option<i32>,
) -> Result<ApiKey, Error> {
    Ok(sqlx::query_as!(
        ApiKey,
        r#"INSERT INTO api_keys (organization_id, name, key_prefix, key_hash, created_by, rate_limit_per_minute)
           VALUES ($1, $2, $3, $4, $5, $6)
           RETURNING id AS "id: ApiKeyId", name, key_prefix AS prefix, rate_limit_per_minute,
                     last_used_at, created_at"#,
        org.as_uuid(),
        name,
        prefix,
        digest,
        created_by.as_uuid(),
        rate_limit_per_minute
    )
    .fetch_one(pool)
    .await?)
}

/// Lists the organization's keys, newest first.
pub async fn list(pool: &PgPool, org: OrganizationId) -> Result<Vec<ApiKey>, Error> {
    Ok(sqlx::query_as!(
        ApiKey,
        r#"SELECT id AS "id: ApiKeyId", name, key_prefix AS prefix, rate_limit_per_minute,
                  last_used_at, created_at
           FROM api_keys WHERE organization_id = $1 ORDER BY created_at DESC, id"#,
        org.as_uuid()
    )
    .fetch_all(pool)
    .await?)
}

/// Deletes a key and returns its digest (to drop it from the cache), or `None` if it is not this
/// organization's.
pub async fn delete(pool: &PgPool, org: OrganizationId, id: ApiKeyId) -> Result<Option<Vec<u8>>, Error> {
    Ok(sqlx::query_scalar!(
        "DELETE FROM api_keys WHERE organization_id = $1 AND id = $2 RETURNING key_hash",
        org.as_uuid(),
        id.as_uuid()
    )
    .fetch_optional(pool)
    .await?)
}

/// A key found by its digest.
#[derive(Debug, Clone)]
pub struct VerifiedKey {
    pub id: ApiKeyId,
    pub organization_id: OrganizationId,
    pub rate_limit_per_minute: Option<i32>,
}

/// Finds the key with this digest and notes its use.
pub async fn authenticate(pool: &PgPool, digest: &[u8]) -> Result<Option<VerifiedKey>, Error> {
    Ok(sqlx::query_as!(
        VerifiedKey,
        r#"UPDATE api_keys SET last_used_at = now() WHERE key_hash = $1
           RETURNING id AS "id: ApiKeyId", organization_id AS "organization_id: OrganizationId",
                     rate_limit_per_minute"#,
        digest
    )
    .fetch_optional(pool)
    .await?)
}
