//! Alerts for admins (R11.11): `GET /api/v1/alerts`, the organization's alerts and the system alerts,
//! firing first, then newest first. The same alerts are pushed as they change over WSS (`alert`). And
//! the organization's insight alert rules: `GET/PUT /api/v1/alert-rules`.

use std::collections::HashMap;

use warp::Filter as _;
use warp::http::{Method, StatusCode};

use super::openapi::params::PageParams;
use super::params::Params;
use super::{Endpoint, Page, PageRequest, Shared, authed, json_body, query_map, respond};
use crate::auth::Principal;
use crate::domain::Fields;
use crate::domain::Role;
use crate::domain::alert::{Alert, AlertKind, AlertState};
use crate::domain::insight::InsightRules;
use crate::error::Error;
use crate::store::alerts;

pub fn endpoints(s: &Shared) -> Vec<Endpoint> {
    vec![
        Endpoint::new(
            Method::GET,
            "/api/v1/alerts",
            warp::path!("api" / "v1" / "alerts")
                .and(warp::get())
                .and(authed(s))
                .and(query_map())
                .then(|s: Shared, p: Principal, q: HashMap<String, String>| async move {
                    respond(StatusCode::OK, list_alerts(&s, &p, &q).await)
                }),
        ),
        Endpoint::new(
            Method::GET,
            "/api/v1/alert-rules",
            warp::path!("api" / "v1" / "alert-rules")
                .and(warp::get())
                .and(authed(s))
                .then(|s: Shared, p: Principal| async move {
                    respond(StatusCode::OK, get_alert_rules(&s, &p).await)
                }),
        ),
        Endpoint::new(
            Method::PUT,
            "/api/v1/alert-rules",
            warp::path!("api" / "v1" / "alert-rules")
                .and(warp::put())
                .and(authed(s))
                .and(json_body(s))
                .then(|s: Shared, p: Principal, body: serde_json::Value| async move {
                    respond(StatusCode::OK, put_alert_rules(&s, &p, &body).await)
                }),
        ),
    ]
}

/// A change of the rules: every field is optional, and an absent (or null) one keeps its value.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct UpdateAlertRules {
    /// Whether the organization's data is watched at all.
    enabled: Option<bool>,
    /// The recent window, in minutes.
    #[schema(minimum = 15, maximum = 1440)]
    window_minutes: Option<u32>,
    /// Days of baseline before the window.
    #[schema(minimum = 1, maximum = 28)]
    baseline_days: Option<u32>,
    /// Standard deviations of change that alert.
    #[schema(minimum = 1, maximum = 10)]
    sensitivity: Option<f64>,
    /// An absolute drop of the average score (or rise of the negative share) that alerts.
    #[schema(minimum = 0.05, maximum = 2)]
    min_drop: Option<f64>,
    /// Fewer scored interactions in the window (or its baseline) never alert.
    #[schema(minimum = 1, maximum = 100000)]
    min_volume: Option<u64>,
    /// Watch the organization as a whole.
    overall: Option<bool>,
    /// Watch each channel.
    channels: Option<bool>,
    /// Watch each segment.
    segments: Option<bool>,
}

/// The organization's insight alert rules (the defaults until an admin changes them).
#[utoipa::path(get, path = "/api/v1/alert-rules", tag = "insights", security(("bearer" = [])),
    responses((status = 200, body = InsightRules), (status = 403, body = super::errors::ErrorBody)))]
pub async fn get_alert_rules(s: &Shared, p: &Principal) -> Result<InsightRules, Error> {
    let admin = p.require(Role::Admin)?;
    crate::store::insight::rules(&s.pool, admin.organization_id).await
}

/// Changes the organization's insight alert rules; the next evaluation (within a minute) applies them.
#[utoipa::path(put, path = "/api/v1/alert-rules", tag = "insights", security(("bearer" = [])),
    request_body = UpdateAlertRules,
    responses((status = 200, body = InsightRules), (status = 400, body = super::errors::ErrorBody),
        (status = 403, body = super::errors::ErrorBody)))]
pub async fn put_alert_rules(
    s: &Shared,
    p: &Principal,
    body: &serde_json::Value,
) -> Result<InsightRules, Error> {
    let admin = p.require(Role::Admin)?;
    let mut f = Fields::new(body);
    let enabled = f.optional_bool("enabled");
    let window = f.optional_int_in("windowMinutes", 15, 1440);
    let baseline = f.optional_int_in("baselineDays", 1, 28);
    let sensitivity = f.optional_number_in("sensitivity", 1.0, 10.0);
    let min_drop = f.optional_number_in("minDrop", 0.05, 2.0);
    let min_volume = f.optional_int_in("minVolume", 1, 100_000);
    let overall = f.optional_bool("overall");
    let channels = f.optional_bool("channels");
    let segments = f.optional_bool("segments");
    f.finish(|| Some(())).map_err(Error::Validation)?;
    let mut rules = crate::store::insight::rules(&s.pool, admin.organization_id).await?;
    let as_u32 = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
    rules.enabled = enabled.unwrap_or(rules.enabled);
    rules.window_minutes = window.map_or(rules.window_minutes, as_u32);
    rules.baseline_days = baseline.map_or(rules.baseline_days, as_u32);
    rules.sensitivity = sensitivity.unwrap_or(rules.sensitivity);
    rules.min_drop = min_drop.unwrap_or(rules.min_drop);
    rules.min_volume = min_volume.map_or(rules.min_volume, |v| v.max(1) as u64);
    rules.overall = overall.unwrap_or(rules.overall);
    rules.channels = channels.unwrap_or(rules.channels);
    rules.segments = segments.unwrap_or(rules.segments);
    crate::store::insight::save_rules(&s.pool, admin.organization_id, &rules, admin.user_id).await?;
    tracing::info!(admin = %admin.user_id, ?rules, "alert rules changed");
    Ok(rules)
}

/// Lists alerts: the organization's (`insight`, for every user) and the nodes' own (`system`, for admins
/// only), firing first, then newest first; optionally of one kind or state. A viewer or analyst sees the
/// insight alerts, and is refused the system ones (403).
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
    let user = p.require(Role::Viewer)?;
    let mut params = Params::new(query);
    let page = PageRequest::read(&mut params);
    let kind = params.parse("kind", AlertKind::parse);
    let state = params.parse("state", AlertState::parse);
    params.finish()?;
    let kind = if user.role == Role::Admin {
        kind
    } else if kind == Some(AlertKind::System) {
        return Err(Error::Forbidden("system alerts are for admins"));
    } else {
        Some(AlertKind::Insight)
    };
    let (limit, offset) = page.limit_offset();
    let (data, total) = alerts::list(&s.pool, user.organization_id, kind, state, limit, offset).await?;
    Ok(Page::new(data, page, total))
}
