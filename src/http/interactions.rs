//! Ingestion: single interactions through the customer's actor, batches in transactions of 100, and
//! reading one interaction back.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use warp::Filter;
use warp::http::{Method, StatusCode};
use warp::reply::Response;

use std::collections::HashMap;

use super::cursor;
use super::openapi::params::{CursorParam, FilterParams, InteractionSortParams, PageParams};
use super::openapi::schemas;
use super::params::{self, Params};
use super::{Endpoint, Page, PageRequest, Shared, authed, json_body, json_body_limited, query_map, respond};
use crate::auth::Principal;
use crate::domain::interaction::BatchItem;
use crate::domain::interaction::{IngestLimits, IngestOutcome, InteractionView, parse_new_interaction};
use crate::domain::{FieldError, InteractionId, OrganizationId, Role};
use crate::error::Error;
use crate::store::filter::InteractionFilter;
use crate::store::interactions;
use crate::store::listing::{self, InteractionQuery, Total, TotalRelation};
use crate::store::rollups::Source;

/// A new interaction. Its schema is [`schemas::create_interaction`]: the fields below, and content that is
/// required for text channels.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateInteraction {
    pub customer_id: String,
    /// web, mobile, email, chat or phone.
    pub channel: String,
    pub event_type: String,
    /// Required and non-empty for email, chat and phone.
    pub content: Option<String>,
    /// RFC 3339 with offset; not in the future.
    pub timestamp: String,
    /// Free-form; `userAgent`, `device`, `geo` are used for enrichment.
    pub metadata: Option<serde_json::Value>,
    /// A repeat within the organization returns the first interaction with 200 and stores nothing.
    pub idempotency_key: Option<String>,
}

impl utoipa::PartialSchema for CreateInteraction {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schemas::create_interaction(&schemas::Limits::default()).into()
    }
}

impl ToSchema for CreateInteraction {}

/// A batch of new interactions. Its schema is [`schemas::create_batch`]: items are validated one by one.
#[derive(Debug, Deserialize)]
pub struct CreateBatch {
    pub interactions: Vec<serde_json::Value>,
}

impl utoipa::PartialSchema for CreateBatch {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schemas::create_batch(&schemas::Limits::default()).into()
    }
}

impl ToSchema for CreateBatch {}

/// The outcome of one batch item.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchItemResult {
    /// The item's position in the request.
    pub index: usize,
    /// `created`, `duplicate` or `failed`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub id: Option<InteractionId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

/// The summary of a batch (R15.4–15.5).
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    /// Items stored now or before (created + duplicate).
    pub succeeded: usize,
    pub failed: usize,
    pub created: usize,
    pub duplicates: usize,
    pub results: Vec<BatchItemResult>,
}

pub fn endpoints(s: &Shared) -> Vec<Endpoint> {
    vec![
        Endpoint::new(
            Method::POST,
            "/api/v1/interactions",
            warp::path!("api" / "v1" / "interactions")
                .and(warp::post())
                .and(authed(s))
                .and(json_body(s))
                .then(|s: Shared, p: Principal, body: serde_json::Value| async move {
                    create_reply(create_interaction(&s, &p, &body).await)
                }),
        ),
        Endpoint::new(
            Method::POST,
            "/api/v1/interactions/batch",
            warp::path!("api" / "v1" / "interactions" / "batch")
                .and(warp::post())
                .and(authed(s))
                .and(json_body_limited(s.config.http.batch_body_limit_bytes))
                .then(|s: Shared, p: Principal, body: serde_json::Value| async move {
                    respond(StatusCode::OK, create_batch(&s, &p, &body).await)
                }),
        ),
        Endpoint::new(
            Method::GET,
            "/api/v1/interactions",
            warp::path!("api" / "v1" / "interactions")
                .and(warp::get())
                .and(authed(s))
                .and(query_map())
                .then(|s: Shared, p: Principal, q: HashMap<String, String>| async move {
                    respond(StatusCode::OK, list_interactions(&s, &p, &q).await)
                }),
        ),
        Endpoint::new(
            Method::GET,
            "/api/v1/interactions/{id}",
            warp::path!("api" / "v1" / "interactions" / Uuid)
                .and(warp::get())
                .and(authed(s))
                .then(|id: Uuid, s: Shared, p: Principal| async move {
                    respond(StatusCode::OK, get_interaction(&s, &p, InteractionId(id)).await)
                }),
        ),
    ]
}

fn create_reply(result: Result<IngestOutcome, Error>) -> Response {
    match result {
        Ok(IngestOutcome::Created(r)) => super::respond(StatusCode::CREATED, Ok(InteractionView::from(r))),
        Ok(IngestOutcome::Duplicate(r)) => super::respond(StatusCode::OK, Ok(InteractionView::from(r))),
        Err(e) => super::errors::error_response(&e),
    }
}

fn limits(s: &Shared) -> IngestLimits {
    s.config.ingest.limits()
}

/// Stores one interaction (R2.1–2.9): 201 when new, 200 with the first one for a repeated idempotency key.
#[utoipa::path(post, path = "/api/v1/interactions", tag = "interactions", security(("bearer" = [])),
    request_body = CreateInteraction,
    responses(
        (status = 201, description = "stored", body = InteractionView, links(
            ("GetInteraction" = (operation_id = "get_interaction", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 200, description = "idempotency key seen before: the first interaction", body = InteractionView, links(
            ("GetInteraction" = (operation_id = "get_interaction", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 400, description = "every invalid field listed", body = super::errors::ErrorBody),
        (status = 403, body = super::errors::ErrorBody),
        (status = 404, description = "unknown customer", body = super::errors::ErrorBody),
        (status = 503, description = "ingest queue full or database unavailable", body = super::errors::ErrorBody),
    ))]
pub async fn create_interaction(
    s: &Shared,
    p: &Principal,
    body: &serde_json::Value,
) -> Result<IngestOutcome, Error> {
    let org = p.require_ingest()?;
    let new = parse_new_interaction(body, chrono::Utc::now(), limits(s)).map_err(Error::Validation)?;
    s.ingest.ingest(org, new).await
}

/// Stores up to `batch_max_items` interactions in transactions of `batch_chunk` (R2.11, R15.1–15.6).
#[utoipa::path(post, path = "/api/v1/interactions/batch", tag = "interactions", security(("bearer" = [])),
    request_body = CreateBatch,
    responses(
        (status = 200, description = "per-item results", body = BatchResponse),
        (status = 400, body = super::errors::ErrorBody),
        (status = 413, body = super::errors::ErrorBody),
    ))]
pub async fn create_batch(
    s: &Shared,
    p: &Principal,
    body: &serde_json::Value,
) -> Result<BatchResponse, Error> {
    let org = p.require_ingest()?;
    let max = s.config.ingest.batch_max_items;
    let items = match body.get("interactions") {
        Some(serde_json::Value::Array(items)) if !items.is_empty() && items.len() <= max => items,
        Some(serde_json::Value::Array(_)) => {
            return Err(Error::Validation(vec![FieldError::new(
                "interactions",
                format!("must hold 1 to {max} items"),
            )]));
        }
        _ => {
            return Err(Error::Validation(vec![FieldError::new(
                "interactions",
                "is required and must be an array",
            )]));
        }
    };
    let now = chrono::Utc::now();
    let parsed = items
        .iter()
        .map(|item| parse_new_interaction(item, now, limits(s)))
        .collect();
    let started = std::time::Instant::now();
    let outcomes = s.ingest.ingest_batch(org, parsed).await?;
    let mut response = BatchResponse {
        succeeded: 0,
        failed: 0,
        created: 0,
        duplicates: 0,
        results: Vec::new(),
    };
    for (index, outcome) in outcomes.into_iter().enumerate() {
        let (status, id, errors) = match outcome {
            BatchItem::Created(r) => {
                response.created += 1;
                ("created", Some(r.id), None)
            }
            BatchItem::Duplicate(r) => {
                response.duplicates += 1;
                ("duplicate", Some(r.id), None)
            }
            BatchItem::Failed(errors) => {
                response.failed += 1;
                ("failed", None, Some(errors))
            }
        };
        response.results.push(BatchItemResult {
            index,
            status,
            id,
            errors,
        });
    }
    response.succeeded = response.created + response.duplicates;
    tracing::info!(
        %org, items = response.results.len(), created = response.created, duplicates = response.duplicates,
        failed = response.failed, elapsed_ms = started.elapsed().as_millis() as u64, "batch ingested"
    );
    Ok(response)
}

/// Lists the organization's interactions with every filter combined freely (R5.1–5.8, R5.10, R5.12).
#[utoipa::path(get, path = "/api/v1/interactions", tag = "interactions", security(("bearer" = [])),
    params(FilterParams, InteractionSortParams, PageParams, CursorParam),
    responses((status = 200, body = Page<InteractionView>), (status = 400, body = super::errors::ErrorBody)))]
pub async fn list_interactions(
    s: &Shared,
    p: &Principal,
    query: &HashMap<String, String>,
) -> Result<Page<InteractionView>, Error> {
    let org = p.require(Role::Viewer)?.organization_id;
    let mut p = Params::new(query);
    let page = PageRequest::read(&mut p);
    let filter = params::filter(&mut p);
    let (sort, descending) = params::sort(&mut p);
    let mut after = None;
    if p.text("cursor").is_some() && p.has("page") {
        p.error("cursor", "cannot be combined with page");
    } else {
        after = p.parse("cursor", |raw| cursor::decode(raw, &filter, sort, descending));
    }
    p.finish()?;
    let (limit, offset) = page.limit_offset();
    let keyset = after.is_some();
    let request = InteractionQuery {
        filter,
        sort,
        descending,
        limit,
        offset: if keyset { 0 } else { offset },
        after,
    };
    let total = total(s, org, &request.filter).await?;
    let mut rows = listing::page(&s.pool, org, &request, total).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = rows
        .last()
        .filter(|_| more)
        .map(|last| cursor::encode(&request.filter, sort, descending, last));
    let mut result = Page::new(
        rows.into_iter().map(InteractionView::from).collect(),
        page,
        total.count,
    );
    if total.relation == TotalRelation::Gte {
        result = result.at_least();
    }
    result.pagination.next_cursor = next_cursor;
    if keyset {
        result.pagination.page = None;
    }
    Ok(result)
}

/// The listing's total. Counted from the rollups (exact and cheap) where the filter allows; otherwise a
/// bounded count, which reads up to `count_bound` matches and so is cached like a summary (same data
/// version and freshness window): paging through a search, or many readers of one filter, count once.
async fn total(s: &Shared, org: OrganizationId, filter: &InteractionFilter) -> Result<Total, Error> {
    let q = &s.config.query;
    if Source::for_filter(filter) == Source::Rollups {
        return listing::total(&s.pool, org, filter, q.count_bound).await;
    }
    let params = format!("{filter:?}|{}", q.count_bound);
    let (text, _) = super::summaries::cached_text(
        s,
        org,
        "count",
        &params,
        q.dashboard_cache_ttl,
        q.summary_fresh_within,
        || async {
            let total = listing::total(&s.pool, org, filter, q.count_bound).await?;
            serde_json::to_string(&total).map_err(Error::internal)
        },
    )
    .await?;
    serde_json::from_str(&text).map_err(Error::internal)
}

/// Returns one interaction of the caller's organization.
#[utoipa::path(get, path = "/api/v1/interactions/{id}", tag = "interactions", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = InteractionView), (status = 404, body = super::errors::ErrorBody)))]
pub async fn get_interaction(s: &Shared, p: &Principal, id: InteractionId) -> Result<InteractionView, Error> {
    let org = p.require(Role::Viewer)?.organization_id;
    let record = interactions::get(&s.pool, org, id)
        .await?
        .ok_or(Error::NotFound("interaction"))?;
    Ok(record.into())
}
