//! The dashboard and sentiment trends (R5, R8.6, R8.8), read from the rollups and cached in Redis per
//! organization with a freshness window (R14.3–14.8).

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use warp::Filter;
use warp::Reply as _;
use warp::http::header::{CONTENT_TYPE, HeaderValue};
use warp::http::{Method, StatusCode};
use warp::reply::Response;

use super::openapi::params::{DashboardIntervalParam, FilterParams, TrendsIntervalParam};
use super::params::{self, Params};
use super::{Endpoint, Shared, authed, query_map, respond_with};
use crate::auth::Principal;
use crate::domain::{OrganizationId, Role};
use crate::error::Error;
use crate::store::filter::InteractionFilter;
use crate::store::insights::{self, Dashboard, Interval, Trends};
use crate::store::rollups::Range;

pub fn endpoints(state: &Shared) -> Vec<Endpoint> {
    let s = state.clone();
    let dashboard = warp::path!("api" / "v1" / "insights" / "dashboard")
        .and(warp::get())
        .and(authed(&s))
        .and(query_map())
        .then(|s: Shared, p: Principal, q: HashMap<String, String>| async move {
            respond_with(dashboard(&s, &p, &q).await)
        });
    let trends = warp::path!("api" / "v1" / "insights" / "trends")
        .and(warp::get())
        .and(authed(&s))
        .and(query_map())
        .then(|s: Shared, p: Principal, q: HashMap<String, String>| async move {
            respond_with(trends(&s, &p, &q).await)
        });
    vec![
        Endpoint::new(Method::GET, "/api/v1/insights/dashboard", dashboard),
        Endpoint::new(Method::GET, "/api/v1/insights/trends", trends),
    ]
}

/// Reads the summary range: `to` defaults to now, `from` to `default_range` before `to`.
fn summary_range(filter: &InteractionFilter, default_range: Duration) -> Range {
    let to = filter.to.unwrap_or_else(Utc::now);
    let back = chrono::Duration::from_std(default_range).unwrap_or(chrono::Duration::days(30));
    let from = filter.from.unwrap_or(to - back);
    Range { from, to }
}

/// Reads `interval` (`default` when absent) and checks the number of buckets.
fn interval(p: &mut Params<'_>, range: Range, default: Interval, max_buckets: usize) -> Interval {
    let Some(interval) = p.parse("interval", Interval::parse) else {
        return default;
    };
    let buckets = interval.buckets(range.from, range.to);
    if range.from < range.to && buckets > max_buckets as i64 {
        p.error(
            "interval",
            format!(
                "makes {buckets} buckets over this range, more than the limit of {max_buckets}; choose a coarser interval or a shorter range"
            ),
        );
    }
    interval
}

/// The response of a cached endpoint (R14.3–14.5, R14.7): the cached JSON when the organization's data has
/// not changed since it was computed, or when it changed but the entry is younger than `fresh_within`
/// (`summary_fresh_within` for summaries, zero for what must read its own writes); else `compute`, stored
/// for `ttl`. So a write is seen within `fresh_within`, and an organization that writes all the time still
/// gets hits: one recomputation per period and entry, not one per write. `X-Cache` says which.
pub(crate) async fn cached<T, F, Fut>(
    s: &Shared,
    org: OrganizationId,
    endpoint: &'static str,
    params: &str,
    ttl: Duration,
    fresh_within: Duration,
    compute: F,
) -> Result<Response, Error>
where
    T: Serialize,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let (body, hit) = cached_text(s, org, endpoint, params, ttl, fresh_within, || async {
        let value = compute().await?;
        serde_json::to_string(&value).map_err(Error::internal)
    })
    .await?;
    Ok(json_response(body, if hit { "hit" } else { "miss" }))
}

/// [`cached`] for any text: returns it and whether it came from the cache.
pub(crate) async fn cached_text<F, Fut>(
    s: &Shared,
    org: OrganizationId,
    endpoint: &'static str,
    params: &str,
    ttl: Duration,
    fresh_within: Duration,
    compute: F,
) -> Result<(String, bool), Error>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<String, Error>>,
{
    let key = summary_key(endpoint, org, params);
    let hit = |body: String| {
        s.metrics
            .summary_cache
            .with_label_values(&[endpoint, "hit"])
            .inc();
        Ok((body, true))
    };
    if let Some(body) = lookup(s, org, &key, fresh_within).await {
        return hit(body);
    }
    // One computation per entry at a time on this node: readers that miss together wait for the first
    // one's result instead of all computing it at once (and each taking as many times longer).
    let _turn = s.summary_gates.turn(&key).await;
    if let Some(body) = lookup(s, org, &key, fresh_within).await {
        return hit(body);
    }
    s.metrics
        .summary_cache
        .with_label_values(&[endpoint, "miss"])
        .inc();
    // The version is read before the data: a write that commits meanwhile changes the version after
    // its commit, so what is stored under this version can only be older than the next version.
    let version = s.cache.data_version(org).await;
    let now = Utc::now().timestamp_millis();
    let body = compute().await?;
    s.cache.set(&key, &frame(&version, now, &body), ttl).await;
    Ok((body, false))
}

/// The cached JSON under `key`, if computed under the organization's current data version or less than
/// `fresh_within` ago.
async fn lookup(s: &Shared, org: OrganizationId, key: &str, fresh_within: Duration) -> Option<String> {
    let version = s.cache.data_version(org).await;
    let entry = s.cache.get(key).await?;
    let (stored_version, at, body) = unframe(&entry)?;
    let age = Utc::now().timestamp_millis() - at;
    (stored_version == version || (0..fresh_within.as_millis() as i64).contains(&age))
        .then(|| body.to_owned())
}

/// Striped locks that let one reader at a time compute a cache entry (per stripe, so memory stays fixed;
/// two entries sharing a stripe only wait for each other).
pub struct Gates([tokio::sync::Mutex<()>; GATES]);

const GATES: usize = 64;

impl Default for Gates {
    fn default() -> Self {
        Self(std::array::from_fn(|_| tokio::sync::Mutex::new(())))
    }
}

impl Gates {
    /// Waits for `key`'s turn.
    pub async fn turn(&self, key: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let digest = Sha256::digest(key.as_bytes());
        self.0[usize::from(digest[0]) % GATES].lock().await
    }
}

/// A cache entry: the data version it was computed under, when (Unix milliseconds), and the JSON.
fn frame(version: &str, at_ms: i64, body: &str) -> String {
    format!("{version}\n{at_ms}\n{body}")
}

fn unframe(entry: &str) -> Option<(&str, i64, &str)> {
    let mut parts = entry.splitn(3, '\n');
    let version = parts.next()?;
    let at = parts.next()?.parse().ok()?;
    Some((version, at, parts.next()?))
}

/// `{endpoint}:{organization}:{hash(params)}` (R14.8); the hash covers the build, so a new release never
/// reads an old entry. The data version is inside the entry ([`frame`]), not in the key, so an
/// organization's writes replace its entries instead of piling up new ones.
pub fn summary_key(endpoint: &str, org: OrganizationId, params: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(env!("CARGO_PKG_VERSION").as_bytes());
    hasher.update([0]);
    hasher.update(params.as_bytes());
    let digest = hasher.finalize();
    format!("{endpoint}:{}:{}", org.as_uuid(), hex::encode(&digest[..16]))
}

fn json_response(body: String, cache: &'static str) -> Response {
    let mut r = warp::reply::with_status(body, StatusCode::OK).into_response();
    let headers = r.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("x-cache", HeaderValue::from_static(cache));
    r
}

/// The dashboard: totals, channels, sentiment distribution, volume over time and the most negative
/// customers, for the filters and range given (default: the last 30 days). Cached 5 minutes (R8.6).
#[utoipa::path(get, path = "/api/v1/insights/dashboard", tag = "insights", security(("bearer" = [])),
    params(FilterParams, DashboardIntervalParam),
    responses((status = 200, body = Dashboard, headers(("x-cache" = String, description = "hit or miss"))),
        (status = 400, body = super::errors::ErrorBody)))]
pub async fn dashboard(
    s: &Shared,
    p: &Principal,
    query: &HashMap<String, String>,
) -> Result<Response, Error> {
    let org = p.require(Role::Viewer)?.organization_id;
    let q = &s.config.query;
    let mut p = Params::new(query);
    let filter = params::filter(&mut p);
    let range = summary_range(&filter, q.default_range);
    let default = Interval::for_range(range.to - range.from);
    let interval = interval(&mut p, range, default, q.max_buckets);
    p.finish()?;
    let params = format!("{filter:?}|{interval:?}|{}", q.top_customers);
    cached(
        s,
        org,
        "dashboard",
        &params,
        q.dashboard_cache_ttl,
        q.summary_fresh_within,
        || async {
            // The range is resolved when computed, so a default range is "the last 30 days" as of then.
            let range = summary_range(&filter, q.default_range);
            insights::dashboard(&s.pool, &s.fields, org, &filter, range, interval, q.top_customers).await
        },
    )
    .await
}

/// Sentiment over time: counts, labels and the average score per hour, day or week, for the filters
/// given. Cached 15 minutes (R8.8).
#[utoipa::path(get, path = "/api/v1/insights/trends", tag = "insights", security(("bearer" = [])),
    params(FilterParams, TrendsIntervalParam),
    responses((status = 200, body = Trends, headers(("x-cache" = String, description = "hit or miss"))),
        (status = 400, body = super::errors::ErrorBody)))]
pub async fn trends(s: &Shared, p: &Principal, query: &HashMap<String, String>) -> Result<Response, Error> {
    let org = p.require(Role::Viewer)?.organization_id;
    let q = &s.config.query;
    let mut p = Params::new(query);
    let filter = params::filter(&mut p);
    let range = summary_range(&filter, q.default_range);
    // Days, unless the range is too long for them.
    let default = if Interval::Day.buckets(range.from, range.to) > q.max_buckets as i64 {
        Interval::Week
    } else {
        Interval::Day
    };
    let interval = interval(&mut p, range, default, q.max_buckets);
    p.finish()?;
    let params = format!("{filter:?}|{interval:?}");
    cached(
        s,
        org,
        "trends",
        &params,
        q.trends_cache_ttl,
        q.summary_fresh_within,
        || async {
            let range = summary_range(&filter, q.default_range);
            insights::trends(&s.pool, org, &filter, range, interval).await
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_keys_are_scoped_and_entries_carry_their_version() {
        let org = OrganizationId(uuid::Uuid::from_u128(1));
        let other = OrganizationId(uuid::Uuid::from_u128(2));
        let k = summary_key("dashboard", org, "p");
        assert!(k.starts_with(&format!("dashboard:{}:", org.as_uuid())), "{k}");
        assert_ne!(k, summary_key("dashboard", other, "p"));
        assert_ne!(k, summary_key("dashboard", org, "q"));
        assert_ne!(k, summary_key("trends", org, "p"));
        assert_eq!(k, summary_key("dashboard", org, "p"));
        let entry = frame("v1", 1_700_000_000_000, "{\"a\":\"x\\ny\"}\n");
        assert_eq!(
            unframe(&entry),
            Some(("v1", 1_700_000_000_000, "{\"a\":\"x\\ny\"}\n"))
        );
        assert_eq!(unframe("no frame"), None);
        assert_eq!(unframe("v\nnot-a-time\n{}"), None);
    }
}
