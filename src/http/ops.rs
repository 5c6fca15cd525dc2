//! Operations endpoints: liveness, readiness, Prometheus metrics and the OpenAPI document.

use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;
use warp::Filter;
use warp::Reply as _;
use warp::http::{Method, StatusCode, header};
use warp::reply::Response;

use super::{Endpoint, Shared, with_state};
use crate::store::cache::CacheHealth;

/// How long readiness waits for PostgreSQL.
const READY_DB_TIMEOUT: Duration = Duration::from_secs(2);

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` while the process serves requests.
    pub status: &'static str,
    pub version: &'static str,
}

/// Readiness: whether this node can serve, and the state of each dependency.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`, `degraded` (a cache problem: still serving) or `not_ready` (answered with 503).
    pub status: &'static str,
    pub checks: ReadinessChecks,
    pub cluster: ReadyCluster,
}

/// This node's place in the cluster (the full view is `GET /api/v1/cluster`, for admins).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadyCluster {
    /// This node's name.
    pub node: String,
    /// `up`, or `leaving` once its cluster file no longer names it (then the node is not ready), or
    /// `fenced` while its heartbeat cannot be renewed (it owns nothing then).
    pub state: &'static str,
    /// The members of its cluster file and their states (`up`, `leaving`, `down`, `unknown`).
    pub members: Vec<ReadyMember>,
    /// Organizations this node owns now.
    pub owned_organizations: i64,
}

/// A member's name and state.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyMember {
    pub name: String,
    pub state: crate::cluster::view::MemberState,
}

/// The state of each dependency.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessChecks {
    #[schema(value_type = Object)]
    pub postgres: DependencyCheck,
    #[schema(value_type = Object)]
    pub redis: CacheHealth,
    #[schema(value_type = Object)]
    pub actors: DependencyCheck,
    #[schema(value_type = Object)]
    pub model: crate::ml::ModelStatus,
}

/// One dependency's state.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DependencyCheck {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub fn endpoints(s: &Shared) -> Vec<Endpoint> {
    vec![
        Endpoint::new(
            Method::GET,
            "/healthz",
            warp::path!("healthz")
                .and(warp::get())
                .then(|| async { healthz_reply() }),
        ),
        Endpoint::new(
            Method::GET,
            "/readyz",
            warp::path!("readyz")
                .and(warp::get())
                .and(with_state(s))
                .then(|s: Shared| async move {
                    let r = readyz(s).await;
                    let status = if r.status == "not_ready" {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    };
                    warp::reply::with_status(warp::reply::json(&r), status).into_response()
                }),
        ),
        Endpoint::new(
            Method::GET,
            "/metrics",
            warp::path!("metrics")
                .and(warp::get())
                .and(with_state(s))
                .then(|s: Shared| async move { metrics(&s) }),
        ),
    ]
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
pub fn healthz() -> Health {
    Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    }
}

fn healthz_reply() -> Response {
    warp::reply::json(&healthz()).into_response()
}

/// Whether the node can serve: PostgreSQL reachable (else 503), cache state, actor system state.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Readiness), (status = 503, description = "PostgreSQL or the actor system is down, the model is required and missing, or the node is leaving the cluster or fenced", body = Readiness)))]
pub async fn readyz(s: Shared) -> Readiness {
    let (db, redis) = tokio::join!(crate::store::ping(&s.pool, READY_DB_TIMEOUT), s.cache.health());
    let postgres = match db {
        Ok(latency) => DependencyCheck {
            status: "up",
            latency_ms: Some(latency.as_secs_f64() * 1000.0),
            error: None,
        },
        Err(e) => DependencyCheck {
            status: "down",
            latency_ms: None,
            error: Some(e),
        },
    };
    let actors_up = s.root.get_status() == ractor::ActorStatus::Running;
    let actors = DependencyCheck {
        status: if actors_up { "up" } else { "down" },
        latency_ms: None,
        error: None,
    };
    let model = s.ml.status();
    let model_missing = s.ml.required() && model.status != "up";
    let ownership = s.router.ownership();
    let view = ownership.view();
    let cluster_state = if ownership.membership().leaving() {
        "leaving"
    } else if !ownership.valid() {
        "fenced"
    } else {
        "up"
    };
    let cluster = ReadyCluster {
        node: view.node.clone(),
        state: cluster_state,
        members: view
            .members
            .iter()
            .filter(|m| m.configured)
            .map(|m| ReadyMember {
                name: m.name.clone(),
                state: m.state,
            })
            .collect(),
        owned_organizations: view.me().map_or(0, |m| m.owned_organizations),
    };
    let status = if postgres.status != "up" || !actors_up || model_missing || cluster_state != "up" {
        "not_ready"
    } else if redis.status != "up" {
        "degraded"
    } else {
        "ready"
    };
    Readiness {
        status,
        checks: ReadinessChecks {
            postgres,
            redis,
            actors,
            model,
        },
        cluster,
    }
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, content_type = "text/plain", body = String)))]
pub fn metrics(s: &Shared) -> Response {
    match s.metrics.render() {
        Ok(text) => {
            let mut r = warp::reply::with_status(text, StatusCode::OK).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        Err(e) => super::errors::error_response(&crate::error::Error::internal(e)),
    }
}
