//! Alerts for admins (R11.11): `GET /api/v1/alerts`, the organization's alerts and the system alerts,
//! firing first, then newest first. The same alerts are pushed as they change over WSS (`alert`).

use std::collections::HashMap;

use warp::Filter as _;
use warp::http::{Method, StatusCode};

use super::openapi::params::PageParams;
use super::params::Params;
use super::{Endpoint, Page, PageRequest, Shared, authed, query_map, respond};
use crate::auth::Principal;
use crate::domain::Role;
use crate::domain::alert::{Alert, AlertKind, AlertState};
use crate::error::Error;
use crate::store::alerts;

pub fn endpoints(s: &Shared) -> Vec<Endpoint> {
    vec![Endpoint::new(
        Method::GET,
        "/api/v1/alerts",
        warp::path!("api" / "v1" / "alerts")
            .and(warp::get())
            .and(authed(s))
            .and(query_map())
            .then(|s: Shared, p: Principal, q: HashMap<String, String>| async move {
                respond(StatusCode::OK, list_alerts(&s, &p, &q).await)
            }),
    )]
}

/// Lists alerts: the organization's (`insight`) and the nodes' own (`system`, which every admin sees),
/// firing first, then newest first; optionally of one kind or state.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "ops", security(("bearer" = [])),
    params(PageParams,
        ("kind" = Option<AlertKind>, Query, description = "only `system` or only `insight` alerts"),
        ("state" = Option<AlertState>, Query, description = "only `firing` or only `resolved` alerts")),
    responses((status = 200, body = Page<Alert>), (status = 400, body = super::errors::ErrorBody), (status = 403, body = super::errors::ErrorBody)))]
pub async fn list_alerts(
    s: &Shared,
    p: &Principal,
    query: &HashMap<String, String>,
) -> Result<Page<Alert>, Error> {
    let admin = p.require(Role::Admin)?;
    let mut params = Params::new(query);
    let page = PageRequest::read(&mut params);
    let kind = params.parse("kind", AlertKind::parse);
    let state = params.parse("state", AlertState::parse);
    params.finish()?;
    let (limit, offset) = page.limit_offset();
    let (data, total) = alerts::list(&s.pool, admin.organization_id, kind, state, limit, offset).await?;
    Ok(Page::new(data, page, total))
}
