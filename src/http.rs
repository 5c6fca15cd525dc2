//! The HTTP API: warp filters and handlers, served over TLS by `http::server`.
//!
//! Every endpoint is one filter function plus one plain async function that knows nothing of warp and
//! returns `Result<T, Error>`. Endpoints are registered as [`Endpoint`]s (method, path template, filter),
//! so the router and the OpenAPI check are built from the same list.

pub mod alerts;
pub mod api_keys;
pub mod auth;
pub mod cluster;
pub mod cursor;
pub mod customers;
pub mod deflate;
pub mod errors;
pub mod export;
pub mod interactions;
pub mod limits;
pub mod ml;
pub mod openapi;
pub mod ops;
pub mod params;
pub mod security;
pub mod server;
pub mod summaries;
pub mod tls;
pub mod users;
pub mod web;
pub mod ws;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::StreamExt as _;
use serde::Serialize;
use warp::filters::BoxedFilter;
use warp::http::{Method, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply as _};

use crate::auth::{Auth, ClientInfo, Principal};
use crate::config::Config;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::store::cache::Cache;
pub use errors::ApiRejection;

/// What handlers need; one per node, shared by every request.
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: sqlx::PgPool,
    pub cache: Cache,
    /// The request quotas (R13), decided by the request front before routing.
    pub limiter: crate::store::ratelimit::RateLimiter,
    pub auth: Auth,
    /// The data keys customers' sensitive fields are sealed with (R9.9).
    pub fields: Arc<crate::store::fields::FieldKeys>,
    pub metrics: Metrics,
    pub root: ractor::ActorRef<crate::actors::root::RootMsg>,
    pub ingest: crate::actors::ingest::Ingest,
    /// The one way to reach an organization's actor.
    pub router: crate::actors::route::Router,
    pub ml: crate::actors::sentiment::Ml,
    /// Permits for exports running at once (`export_max_concurrent`).
    pub exports: Arc<tokio::sync::Semaphore>,
    /// One computation at a time per cached summary entry.
    pub summary_gates: Arc<summaries::Gates>,
    /// The supervisor of the node's dashboard sessions.
    pub sessions: ractor::ActorRef<crate::actors::session::SupervisorMsg>,
    /// Alerts as they change (from any node), pushed to the admins they concern.
    pub alerts: crate::actors::alerts::AlertFeed,
    /// Becomes true when the node stops: long-lived connections close.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Shared handle to the node's state.
pub type Shared = Arc<AppState>;

/// The peer address of a connection, put in each request's extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// One route: its method, its path template as written in the OpenAPI document, and its filter.
pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
    pub filter: BoxedFilter<(Response,)>,
}

impl Endpoint {
    /// Registers a route. The filter must match the path before the method, so that a wrong path gives
    /// 404 and a wrong method on a known path gives 405.
    pub fn new<F>(method: Method, path: &'static str, filter: F) -> Self
    where
        F: Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static,
    {
        Self {
            method,
            path,
            filter: filter.boxed(),
        }
    }
}

/// Every endpoint of the API.
pub fn endpoints(state: &Shared) -> Vec<Endpoint> {
    let mut all = Vec::new();
    all.extend(ops::endpoints(state));
    all.extend(openapi::endpoints(state));
    all.extend(auth::endpoints(state));
    all.extend(users::endpoints(state));
    all.extend(security::endpoints(state));
    all.extend(alerts::endpoints(state));
    all.extend(cluster::endpoints(state));
    all.extend(api_keys::endpoints(state));
    all.extend(customers::endpoints(state));
    all.extend(interactions::endpoints(state));
    all.extend(ml::endpoints(state));
    all.extend(summaries::endpoints(state));
    all.extend(export::endpoints(state));
    all.extend(ws::endpoints(state));
    all
}

/// The whole router: every endpoint, CORS when origins are configured, and the rejection handler. A
/// node without the `api` role (in its cluster file entry, as at start) serves only the operations
/// endpoints: it scores or owns organizations for the others.
pub fn router(state: &Shared) -> BoxedFilter<(Response,)> {
    let api = state
        .router
        .ownership()
        .membership()
        .entry()
        .has(crate::cluster::file::Role::Api);
    let mut served = endpoints(state);
    if !api {
        served.retain(|e| matches!(e.path, "/healthz" | "/readyz" | "/metrics"));
    }
    let mut routes: Option<BoxedFilter<(Response,)>> = None;
    for endpoint in served {
        routes = Some(match routes {
            None => endpoint.filter,
            Some(r) => r.or(endpoint.filter).unify().boxed(),
        });
    }
    let routes = routes.unwrap_or_else(|| {
        warp::any()
            .and_then(|| async { Err::<Response, _>(warp::reject::not_found()) })
            .boxed()
    });
    let routes = if api {
        routes.or(web::routes(&state.config.web_dir)).unify().boxed()
    } else {
        routes
    };
    let origins = &state.config.cors_origins;
    if origins.is_empty() {
        return routes.recover(errors::recover).unify().boxed();
    }
    let cors = warp::cors()
        .allow_origins(origins.iter().map(String::as_str))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(["authorization", "content-type", "x-request-id"])
        .expose_headers([
            "x-request-id",
            "retry-after",
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
            "ratelimit-policy",
            "ratelimit",
        ])
        .max_age(600);
    routes
        .with(cors)
        .map(warp::Reply::into_response)
        .recover(errors::recover)
        .unify()
        .boxed()
}

/// Injects the shared state.
pub fn with_state(state: &Shared) -> impl Filter<Extract = (Shared,), Error = Infallible> + Clone + use<> {
    let state = state.clone();
    warp::any().map(move || state.clone())
}

/// Extracts the client's address (as the request front decided it: see `limits::client_ip`) and user
/// agent.
pub fn client_info() -> impl Filter<Extract = (ClientInfo,), Error = Rejection> + Clone {
    warp::ext::optional::<limits::ClientIp>()
        .and(warp::ext::optional::<PeerAddr>())
        .and(warp::header::optional::<String>("user-agent"))
        .map(
            |client: Option<limits::ClientIp>, peer: Option<PeerAddr>, user_agent: Option<String>| {
                ClientInfo {
                    ip: client.map(|c| c.0).or(peer.map(|p| p.0.ip())),
                    user_agent: user_agent.map(|ua| ua.chars().take(512).collect()),
                }
            },
        )
}

/// Injects the shared state and the authenticated principal: the start of every protected endpoint.
pub fn authed(
    state: &Shared,
) -> impl Filter<Extract = (Shared, Principal), Error = Rejection> + Clone + use<> {
    with_state(state).and(authenticated(state))
}

/// Authenticates the `Authorization: Bearer` credential (token or API key), or rejects with 401. Uses
/// the cache values the request front read along with the quotas, so this costs no second round trip.
pub fn authenticated(
    state: &Shared,
) -> impl Filter<Extract = (Principal,), Error = Rejection> + Clone + use<> {
    warp::header::optional::<String>("authorization")
        .and(warp::ext::optional::<limits::ReadAhead>())
        .and(with_state(state))
        .and_then(
            |header: Option<String>, ahead: Option<limits::ReadAhead>, state: Shared| async move {
                if let Some(ahead) = ahead.filter(|_| header.is_some()) {
                    if let Some(principal) = ahead.verified {
                        return Ok(principal);
                    }
                    return state
                        .auth
                        .authenticate_credential(&ahead.credential, Some(&ahead.cached))
                        .await
                        .map_err(|e| warp::reject::custom(ApiRejection(e)));
                }
                let credential = header
                    .as_deref()
                    .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| warp::reject::custom(ApiRejection(Error::Unauthenticated)))?;
                state
                    .auth
                    .authenticate(credential)
                    .await
                    .map_err(|e| warp::reject::custom(ApiRejection(e)))
            },
        )
}

/// Reads a JSON body of at most `state.config.http.body_limit_bytes` bytes, answering 413 beyond it and
/// 400 when it is not JSON. Streams the body so a chunked upload cannot exceed the limit either.
pub fn json_body(
    state: &Shared,
) -> impl Filter<Extract = (serde_json::Value,), Error = Rejection> + Clone + use<> {
    json_body_limited(state.config.http.body_limit_bytes)
}

/// Like [`json_body`] with an explicit limit (batches carry larger bodies).
pub fn json_body_limited(
    limit: u64,
) -> impl Filter<Extract = (serde_json::Value,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(move |declared: Option<u64>, body| async move {
            if declared.is_some_and(|n| n > limit) {
                return Err(warp::reject::custom(ApiRejection(Error::PayloadTooLarge {
                    limit,
                })));
            }
            let bytes = read_limited(body, limit)
                .await
                .map_err(|e| warp::reject::custom(ApiRejection(e)))?;
            if bytes.is_empty() {
                return Err(warp::reject::custom(ApiRejection(Error::BadRequest(
                    "request body is empty; send a JSON object".to_owned(),
                ))));
            }
            serde_json::from_slice(&bytes).map_err(|e| {
                warp::reject::custom(ApiRejection(Error::BadRequest(format!(
                    "request body is not valid JSON: {e}"
                ))))
            })
        })
}

async fn read_limited<S, B>(body: S, limit: u64) -> Result<BytesMut, Error>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: warp::Buf,
{
    let mut body = std::pin::pin!(body);
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Error::BadRequest(format!("cannot read body: {e}")))?;
        if buf.len() as u64 + chunk.remaining() as u64 > limit {
            return Err(Error::PayloadTooLarge { limit });
        }
        buf.extend_from_slice(chunk.chunk());
    }
    Ok(buf)
}

/// Reads the query string as a map (validated by each handler, so errors can name the parameter).
pub fn query_map() -> impl Filter<Extract = (HashMap<String, String>,), Error = Rejection> + Clone {
    warp::query::<HashMap<String, String>>()
}

/// A page request read from `page` and `pageSize` (defaults 1 and 20, pageSize at most 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub page: u32,
    pub page_size: u32,
}

impl PageRequest {
    pub const DEFAULT_SIZE: u32 = 20;
    pub const MAX_SIZE: u32 = 100;
    pub const MAX_PAGE: u32 = 1_000_000;

    /// Reads and checks `page` and `pageSize`.
    pub fn read(p: &mut params::Params<'_>) -> Self {
        let page = p.int_in("page", 1, Self::MAX_PAGE).unwrap_or(1);
        let page_size = p
            .int_in("pageSize", 1, Self::MAX_SIZE)
            .unwrap_or(Self::DEFAULT_SIZE);
        Self { page, page_size }
    }

    /// Returns the SQL `LIMIT` and `OFFSET`.
    pub fn limit_offset(&self) -> (i64, i64) {
        (
            i64::from(self.page_size),
            i64::from(self.page - 1) * i64::from(self.page_size),
        )
    }
}

/// A page of results as the API returns it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T: Serialize> {
    pub data: Vec<T>,
    pub pagination: Pagination,
}

/// Paging metadata (R5.12).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pagination {
    /// The page number; absent when the page was read with a cursor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    pub page_size: u32,
    pub total: i64,
    /// `eq` when `total` counts every match; `gte` when it is a lower bound (a filter that cannot be
    /// counted cheaply is counted up to `listing_count_bound`, R5.12).
    pub total_relation: crate::store::listing::TotalRelation,
    pub total_pages: i64,
    /// Present when another page follows: pass it as `cursor` to read that page without the cost of
    /// an offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl<T: Serialize> Page<T> {
    /// Wraps a page of data with its metadata; the total is exact unless [`Page::at_least`] says so.
    pub fn new(data: Vec<T>, request: PageRequest, total: i64) -> Self {
        let size = i64::from(request.page_size);
        let total_pages = (total + size - 1) / size;
        Self {
            data,
            pagination: Pagination {
                page: Some(request.page),
                page_size: request.page_size,
                total,
                total_relation: crate::store::listing::TotalRelation::Eq,
                total_pages,
                next_cursor: None,
            },
        }
    }

    /// Marks the total as a lower bound.
    pub fn at_least(mut self) -> Self {
        self.pagination.total_relation = crate::store::listing::TotalRelation::Gte;
        self
    }
}

/// Returns a ready response, or the error response.
pub fn respond_with(result: Result<Response, Error>) -> Response {
    result.unwrap_or_else(|e| errors::error_response(&e))
}

/// Turns a handler's result into a JSON response with `status`, or an error response.
pub fn respond<T: Serialize>(status: StatusCode, result: Result<T, Error>) -> Response {
    match result {
        Ok(body) => warp::reply::with_status(warp::reply::json(&body), status).into_response(),
        Err(e) => errors::error_response(&e),
    }
}

/// Turns a handler's result into 204 No Content, or an error response.
pub fn no_content(result: Result<(), Error>) -> Response {
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => errors::error_response(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_defaults_and_limits() {
        let empty = HashMap::new();
        let mut p = params::Params::new(&empty);
        assert_eq!(
            PageRequest::read(&mut p),
            PageRequest {
                page: 1,
                page_size: 20
            }
        );
        assert!(p.finish().is_ok());
        let q: HashMap<String, String> = [
            ("page".to_owned(), "0".to_owned()),
            ("pageSize".to_owned(), "101".to_owned()),
        ]
        .into();
        let mut p = params::Params::new(&q);
        PageRequest::read(&mut p);
        let Err(Error::Validation(errors)) = p.finish() else {
            panic!("both are bad")
        };
        assert_eq!(errors.len(), 2, "both bad parameters are reported");
        assert!(errors[1].message.contains("100"));
        let q: HashMap<String, String> = [
            ("page".to_owned(), "3".to_owned()),
            ("pageSize".to_owned(), "10".to_owned()),
        ]
        .into();
        let p = PageRequest::read(&mut params::Params::new(&q));
        assert_eq!(p.limit_offset(), (10, 20));
        assert_eq!(Page::new(Vec::<u8>::new(), p, 21).pagination.total_pages, 3);
    }
}
