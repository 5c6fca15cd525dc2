//! Organization API keys for ingestion clients: created by admins, shown once, stored as digests.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use warp::Filter;
use warp::http::{Method, StatusCode};

use super::{Endpoint, Shared, authed, json_body, no_content, respond};
use crate::auth::{API_KEY_PREFIX, Principal, digest, random_token};
use crate::domain::{ApiKeyId, Fields, PersonName, Role};
use crate::error::Error;
use crate::store::api_keys::{self, ApiKey};

/// A key to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateApiKey {
    #[schema(schema_with = super::openapi::schemas::person_name)]
    pub name: String,
    /// The key's own quota of requests per minute (default: the deployment's API-key quota, 6000).
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub rate_limit_per_minute: Option<u32>,
}

/// A created key: `key` is shown this once and cannot be read again.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedApiKey {
    #[schema(value_type = String, format = Uuid)]
    pub id: ApiKeyId,
    pub name: String,
    /// Send as `Authorization: Bearer <key>`.
    pub key: String,
    pub prefix: String,
    /// The key's own quota per minute, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_minute: Option<i32>,
    pub created_at: DateTime<Utc>,
}

/// The organization's keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyList {
    pub data: Vec<ApiKey>,
}

/// The largest quota a key may be given (the schema's CHECK says the same).
pub const MAX_KEY_RATE_LIMIT: i64 = 1_000_000;

/// How many leading characters of a key are kept to recognize it.
const DISPLAY_PREFIX_CHARS: usize = 10;

pub fn endpoints(s: &Shared) -> Vec<Endpoint> {
    vec![
        Endpoint::new(
            Method::POST,
            "/api/v1/api-keys",
            warp::path!("api" / "v1" / "api-keys")
                .and(warp::post())
                .and(authed(s))
                .and(json_body(s))
                .then(|s: Shared, p: Principal, body: serde_json::Value| async move {
                    respond(StatusCode::CREATED, create_api_key(&s, &p, &body).await)
                }),
        ),
        Endpoint::new(
            Method::GET,
            "/api/v1/api-keys",
            warp::path!("api" / "v1" / "api-keys")
                .and(warp::get())
                .and(authed(s))
                .then(|s: Shared, p: Principal| async move {
                    respond(StatusCode::OK, list_api_keys(&s, &p).await)
                }),
        ),
        Endpoint::new(
            Method::DELETE,
            "/api/v1/api-keys/{id}",
            warp::path!("api" / "v1" / "api-keys" / Uuid)
                .and(warp::delete())
                .and(authed(s))
                .then(|id: Uuid, s: Shared, p: Principal| async move {
                    no_content(delete_api_key(&s, &p, ApiKeyId(id)).await)
                }),
        ),
    ]
}

/// Creates an ingest-only API key.
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "api-keys", security(("bearer" = [])), request_body = CreateApiKey,
    responses(
        (status = 201, body = CreatedApiKey, links(
            ("DeleteApiKey" = (operation_id = "delete_api_key", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 400, body = super::errors::ErrorBody), (status = 403, body = super::errors::ErrorBody)))]
pub async fn create_api_key(
    s: &Shared,
    p: &Principal,
    body: &serde_json::Value,
) -> Result<CreatedApiKey, Error> {
    let admin = p.require(Role::Admin)?;
    let mut f = Fields::new(body);
    let name = f.required_str("name");
    let name = f.parse("name", name, PersonName::parse);
    let limit = f.optional_int_in("rateLimitPerMinute", 1, MAX_KEY_RATE_LIMIT);
    let (name, limit) = f.finish(|| Some((name?, limit))).map_err(Error::Validation)?;
    let key = format!("{API_KEY_PREFIX}{}", random_token());
    let prefix: String = key.chars().take(DISPLAY_PREFIX_CHARS).collect();
    let stored = api_keys::create(
        &s.pool,
        admin.organization_id,
        name.as_str(),
        &prefix,
        &digest(&key),
        admin.user_id,
        limit.and_then(|n| i32::try_from(n).ok()),
    )
    .await?;
    tracing::info!(admin = %admin.user_id, key_id = %stored.id, "api key created");
    Ok(CreatedApiKey {
        id: stored.id,
        name: stored.name,
        key,
        prefix: stored.prefix,
        rate_limit_per_minute: stored.rate_limit_per_minute,
        created_at: stored.created_at,
    })
}

/// Lists the organization's keys (never the keys themselves).
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "api-keys", security(("bearer" = [])),
    responses((status = 200, body = ApiKeyList), (status = 403, body = super::errors::ErrorBody)))]
pub async fn list_api_keys(s: &Shared, p: &Principal) -> Result<ApiKeyList, Error> {
    let admin = p.require(Role::Admin)?;
    Ok(ApiKeyList {
        data: api_keys::list(&s.pool, admin.organization_id).await?,
    })
}

/// Deletes a key; it stops working at once.
#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "api-keys", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = super::errors::ErrorBody), (status = 404, body = super::errors::ErrorBody)))]
pub async fn delete_api_key(s: &Shared, p: &Principal, id: ApiKeyId) -> Result<(), Error> {
    let admin = p.require(Role::Admin)?;
    let digest = api_keys::delete(&s.pool, admin.organization_id, id)
        .await?
        .ok_or(Error::NotFound("api key"))?;
    s.auth.forget_api_key(&digest).await;
    tracing::info!(admin = %admin.user_id, key_id = %id, "api key deleted");
    Ok(())
}
