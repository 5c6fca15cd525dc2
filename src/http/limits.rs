//! The request front: who the client is, which quotas a request falls under (R13), and the credential
//! read ahead, all decided before the router runs, in one Redis round trip.
//!
//! - The client IP is the connection's peer, or, when the peer is a trusted proxy
//!   (`INSIGHTS_TRUSTED_PROXIES`), the nearest untrusted address of `X-Forwarded-For`. A client cannot
//!   choose its own IP: the header of an untrusted peer is ignored.
//! - Every request counts against its IP's quota, except the probes (`/healthz`, `/readyz`, `/metrics`:
//!   a 429 there would take a healthy node out of its load balancer) and requests with a valid API key,
//!   which count against the key's own quota instead (an ingestion host behind one address would
//!   otherwise be held to the IP quota whatever its key allows). A request with an access token also
//!   counts against its user's quota; one to `/auth/login`, `/auth/refresh` or `/auth/password` also
//!   against its IP's auth quota.
//! - The token's cached verification and its revocation tombstone are read by the same script, and
//!   handed to the `authenticated` filter, so an authenticated request costs one Redis call in all.
//! - Every response a quota covers carries `X-RateLimit-*` and the IETF draft's `RateLimit-Policy` and
//!   `RateLimit`; a refusal is a 429 with `Retry-After`, logged and counted by quota (R13.4–13.7).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use warp::http::{HeaderMap, HeaderValue, Method, StatusCode};
use warp::reply::Response;

use super::{Endpoint, Shared};
use crate::auth::{Auth, Credential, Principal};
use crate::domain::Cidr;
use crate::error::Error;
use crate::store::ratelimit::{Quota, QuotaKind, QuotaState, Verdict};

/// The client's address as the front decided it, in each request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

/// A bearer credential inspected by the front, with the cache values its verification needs.
#[derive(Debug, Clone)]
pub struct ReadAhead {
    pub credential: Credential,
    pub cached: Arc<Vec<Option<String>>>,
    /// The principal, when the front had to verify the credential already (an API key seen for the
    /// first time on this node, whose quota it needed).
    pub verified: Option<Principal>,
}

/// What the front decided about one request.
pub struct Admission {
    /// The quotas the request counted against, for the response headers.
    pub states: Vec<QuotaState>,
    pub now_us: u64,
    /// `Some` when a quota refused the request: the response to send instead of routing it.
    pub refusal: Option<Response>,
    pub read_ahead: Option<ReadAhead>,
}

/// The front of a node: its state and its route table.
pub struct Front {
    pub state: Shared,
    pub routes: RouteTable,
    /// Security events seen on responses (`http::security`).
    pub security: super::security::SecurityLog,
}

impl Front {
    /// Builds the front over the node's endpoints.
    pub fn new(state: Shared) -> Self {
        let routes = RouteTable::new(&super::endpoints(&state));
        Self {
            state,
            routes,
            security: super::security::SecurityLog::default(),
        }
    }

    /// Decides the quotas of a request and reads its credential's cache values along.
    pub async fn admit(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        query: Option<&str>,
        ip: IpAddr,
    ) -> Admission {
        let s = &self.state;
        let rl = &s.config.rate_limit;
        let none = || Admission {
            states: Vec::new(),
            now_us: 0,
            refusal: None,
            read_ahead: None,
        };
        if matches!(path, "/healthz" | "/readyz" | "/metrics") {
            return none();
        }
        let credential = bearer(headers, path, query).map(|b| s.auth.inspect(&b));
        let reads = credential.as_ref().map(Auth::cache_reads).unwrap_or_default();
        let mut quotas = Vec::new();
        // An API key this node has verified before counts against its own quota; one seen for the first
        // time counts against the IP until its quota is known.
        let mut key_quota_pending = None;
        match &credential {
            Some(Credential::ApiKey { digest }) => match s.auth.api_key_limit(digest) {
                Some(limit) => quotas.push(key_quota(rl, digest, limit)),
                None => {
                    quotas.push(ip_quota(rl, ip));
                    key_quota_pending = Some(digest.clone());
                }
            },
            Some(Credential::Access(claims)) => {
                quotas.push(ip_quota(rl, ip));
                quotas.push(Quota {
                    kind: QuotaKind::User,
                    subject: claims.sub.to_string(),
                    limit: rl.user_per_window,
                    window: rl.window,
                });
            }
            _ => quotas.push(ip_quota(rl, ip)),
        }
        if is_auth_endpoint(path) {
            quotas.push(Quota {
                kind: QuotaKind::AuthIp,
                subject: ip.to_string(),
                limit: rl.auth_ip_per_window,
                window: rl.window,
            });
        }
        if !rl.enabled {
            quotas.clear();
            key_quota_pending = None;
        }
        let verdict = s.limiter.check(&quotas, &reads).await;
        if let Some(refused) = verdict.refused() {
            let who = credential
                .as_ref()
                .map(|c| who(c, &verdict.values))
                .unwrap_or_default();
            let refusal = self.refuse(refused, method, path, ip, &who);
            return Admission {
                refusal: Some(refusal),
                states: verdict.states,
                now_us: verdict.now_us,
                read_ahead: None,
            };
        }
        let Verdict {
            mut states,
            values,
            now_us,
        } = verdict;
        let mut read_ahead = credential.map(|credential| ReadAhead {
            credential,
            cached: Arc::new(values),
            verified: None,
        });
        if let (Some(digest), Some(ahead)) = (key_quota_pending, read_ahead.as_mut()) {
            // First sight of this key on this node: verify it now to learn its quota, then count this
            // request against it (a second call, once per key and node).
            if let Ok(principal) = s
                .auth
                .authenticate_credential(&ahead.credential, Some(&ahead.cached))
                .await
            {
                if let Principal::ApiKey { rate_limit, .. } = &principal {
                    let key = s.limiter.check(&[key_quota(rl, &digest, *rate_limit)], &[]).await;
                    if let Some(refused) = key.refused() {
                        let who = format!("api_key={}", key_id(&principal));
                        return Admission {
                            refusal: Some(self.refuse(refused, method, path, ip, &who)),
                            states: key.states.clone(),
                            now_us: key.now_us,
                            read_ahead: None,
                        };
                    }
                    states = key.states;
                }
                ahead.verified = Some(principal);
            }
        }
        Admission {
            states,
            now_us,
            refusal: None,
            read_ahead,
        }
    }

    fn refuse(&self, refused: &QuotaState, method: &Method, path: &str, ip: IpAddr, who: &str) -> Response {
        let quota = refused.kind.name();
        let route = self.routes.template(path).unwrap_or("other");
        let retry_after = refused.retry_after.unwrap_or(Duration::from_secs(1));
        self.state.metrics.rate_limited.with_label_values(&[quota]).inc();
        tracing::warn!(quota, %ip, %method, route, who, retry_after_ms = retry_after.as_millis() as u64, "rate limited");
        super::errors::error_response(&Error::RateLimited {
            retry_after,
            message: match refused.kind {
                QuotaKind::Ip => "too many requests from this address; slow down",
                QuotaKind::AuthIp => "too many authentication requests from this address; slow down",
                QuotaKind::User => "too many requests for this user; slow down",
                QuotaKind::ApiKey => "too many requests with this API key; slow down",
            },
            quota,
        })
    }
}

fn ip_quota(rl: &crate::config::RateLimitConfig, ip: IpAddr) -> Quota {
    Quota {
        kind: QuotaKind::Ip,
        subject: ip.to_string(),
        limit: rl.ip_per_window,
        window: rl.window,
    }
}

fn key_quota(rl: &crate::config::RateLimitConfig, digest: &[u8], limit: Option<u32>) -> Quota {
    Quota {
        kind: QuotaKind::ApiKey,
        subject: hex::encode(&digest[..digest.len().min(16)]),
        limit: limit.unwrap_or(rl.api_key_per_window),
        window: rl.window,
    }
}

fn key_id(p: &Principal) -> String {
    match p {
        Principal::ApiKey { key_id, .. } => key_id.to_string(),
        Principal::User(u) => u.user_id.to_string(),
    }
}

/// Names the caller of a refused request for the log, from what is known without I/O.
fn who(credential: &Credential, cached: &[Option<String>]) -> String {
    match credential {
        Credential::Access(claims) => format!("user={}", claims.sub),
        Credential::ApiKey { digest } => {
            let id = cached
                .first()
                .cloned()
                .flatten()
                .and_then(|json| serde_json::from_str::<serde_json::Value>(&json).ok())
                .and_then(|v| v["key_id"].as_str().map(str::to_owned));
            match id {
                Some(id) => format!("api_key={id}"),
                None => format!("api_key_digest={}", hex::encode(&digest[..digest.len().min(8)])),
            }
        }
        Credential::Invalid(_) => String::new(),
    }
}

fn is_auth_endpoint(path: &str) -> bool {
    matches!(
        path,
        "/api/v1/auth/login" | "/api/v1/auth/refresh" | "/api/v1/auth/password"
    )
}

/// The bearer credential of a request: `Authorization: Bearer`, or for the live endpoint the token in
/// `Sec-WebSocket-Protocol` or `?token=`.
fn bearer(headers: &HeaderMap, path: &str, query: Option<&str>) -> Option<String> {
    let from_header = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    if let Some(token) = from_header {
        return Some(token.to_owned());
    }
    if path != "/api/v1/ws" {
        return None;
    }
    let protocols = headers
        .get("sec-websocket-protocol")
        .and_then(|h| h.to_str().ok());
    let query: std::collections::HashMap<String, String> = query
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    super::ws::token(protocols, &query).map(|(token, _)| token)
}

/// The client's address: the peer, or the nearest untrusted hop of `X-Forwarded-For` when the peer is a
/// trusted proxy (each proxy appends the address it received from, so the list is read from the right).
pub fn client_ip(trusted: &[Cidr], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(ip) {
                    break;
                }
            }
            // A hop that is not an address (`unknown`, garbage): nothing left of it can be believed.
            Err(_) => break,
        }
    }
    client
}

/// Adds the rate-limit headers of `admission` to a response.
pub fn add_headers(response: &mut Response, admission: &Admission) {
    let verdict_states = &admission.states;
    let Some(tightest) = crate::store::ratelimit::tightest(verdict_states) else {
        return;
    };
    let reset_secs = |s: &QuotaState| s.reset_after.as_secs() + u64::from(s.reset_after.subsec_nanos() > 0);
    let reset_at = (admission.now_us / 1_000_000) + reset_secs(tightest);
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(tightest.limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(tightest.remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from(reset_at));
    let policy = verdict_states
        .iter()
        .map(|s| {
            format!(
                "\"{}\";q={};w={}",
                s.kind.name(),
                s.limit,
                s.window.as_secs().max(1)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let current = verdict_states
        .iter()
        .map(|s| format!("\"{}\";r={};t={}", s.kind.name(), s.remaining, reset_secs(s)))
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(v) = HeaderValue::from_str(&policy) {
        headers.insert("ratelimit-policy", v);
    }
    if let Ok(v) = HeaderValue::from_str(&current) {
        headers.insert("ratelimit", v);
    }
}

/// The method and path template of every endpoint, to name a request's route and to answer the `Allow`
/// of a 405.
pub struct RouteTable {
    routes: Vec<(Method, &'static str, Vec<&'static str>)>,
}

impl RouteTable {
    /// Builds the table from the endpoints.
    pub fn new(endpoints: &[Endpoint]) -> Self {
        Self {
            routes: endpoints
                .iter()
                .map(|e| (e.method.clone(), e.path, e.path.split('/').collect()))
                .collect(),
        }
    }

    fn matches(template: &[&str], path: &str) -> bool {
        let mut segments = path.split('/');
        for t in template {
            match segments.next() {
                Some(seg) if t.starts_with('{') && !seg.is_empty() => {}
                Some(seg) if seg == *t => {}
                _ => return false,
            }
        }
        segments.next().is_none()
    }

    /// The routes `path` belongs to: those of the most specific matching template, so that
    /// `/api/v1/interactions/batch` is the batch route, not `/api/v1/interactions/{id}`.
    fn matching(&self, path: &str) -> Vec<&(Method, &'static str, Vec<&'static str>)> {
        let literal = |t: &[&str]| t.iter().filter(|s| !s.starts_with('{')).count();
        let all: Vec<_> = self
            .routes
            .iter()
            .filter(|(_, _, t)| Self::matches(t, path))
            .collect();
        let best = all.iter().map(|(_, _, t)| literal(t)).max().unwrap_or(0);
        all.into_iter().filter(|(_, _, t)| literal(t) == best).collect()
    }

    /// The template of the route `path` belongs to, such as `/api/v1/customers/{id}`.
    pub fn template(&self, path: &str) -> Option<&'static str> {
        self.matching(path).first().map(|(_, p, _)| *p)
    }

    /// The `route` label of a request's metrics: its route template, `/` and `/static/{file}` for the
    /// dashboard, and `other` for any path no route serves, so a client cannot create series by
    /// inventing paths (R11.6).
    pub fn label(&self, path: &str) -> &'static str {
        if let Some(template) = self.template(path) {
            return template;
        }
        match path {
            "/" => "/",
            p if p.starts_with("/static/") => "/static/{file}",
            _ => "other",
        }
    }

    /// The methods served at `path`, for the `Allow` header of a 405 (RFC 9110 §15.5.6).
    pub fn allowed(&self, path: &str) -> Vec<Method> {
        let mut methods: Vec<Method> = self.matching(path).iter().map(|(m, _, _)| m.clone()).collect();
        methods.dedup();
        methods
    }
}

/// Adds `Allow` to a 405 that lacks it.
pub fn add_allow(response: &mut Response, routes: &RouteTable, path: &str) {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED || response.headers().contains_key("allow") {
        return;
    }
    let allowed = routes
        .allowed(path)
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(v) = HeaderValue::from_str(&allowed) {
        response.headers_mut().insert("allow", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let h = headers(&["203.0.113.9, 10.0.0.7"]);
        assert_eq!(client_ip(&trusted, ip("10.0.0.2"), &h), ip("203.0.113.9"));
        assert_eq!(
            client_ip(&trusted, ip("198.51.100.1"), &h),
            ip("198.51.100.1"),
            "an untrusted peer cannot pick its own address"
        );
        assert_eq!(
            client_ip(&[], ip("10.0.0.2"), &h),
            ip("10.0.0.2"),
            "no proxies trusted by default"
        );
        // A client that sends its own X-Forwarded-For through the proxy gets its real address, not the
        // one it wrote: the proxy appended the real one on the right.
        let spoofed = headers(&["1.2.3.4, 203.0.113.9"]);
        assert_eq!(client_ip(&trusted, ip("10.0.0.2"), &spoofed), ip("203.0.113.9"));
        assert_eq!(
            client_ip(&trusted, ip("10.0.0.2"), &headers(&["garbage"])),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_ip(&trusted, ip("10.0.0.2"), &headers(&["203.0.113.5", "10.1.1.1"])),
            ip("203.0.113.5"),
            "several headers read as one list"
        );
    }

    #[test]
    fn route_templates_match_whole_segments() {
        let table = RouteTable {
            routes: [
                (Method::GET, "/api/v1/customers/{id}"),
                (Method::PATCH, "/api/v1/customers/{id}"),
                (Method::GET, "/api/v1/customers"),
                (Method::POST, "/api/v1/customers/batch"),
            ]
            .into_iter()
            .map(|(m, p)| (m, p, p.split('/').collect()))
            .collect(),
        };
        assert_eq!(
            table.template("/api/v1/customers/abc"),
            Some("/api/v1/customers/{id}")
        );
        assert_eq!(table.template("/api/v1/customers"), Some("/api/v1/customers"));
        assert_eq!(table.template("/api/v1/customers/abc/x"), None);
        assert_eq!(table.template("/api/v1/customers/"), None);
        assert_eq!(table.allowed("/api/v1/customers/1"), [Method::GET, Method::PATCH]);
        assert_eq!(
            table.allowed("/api/v1/customers/batch"),
            [Method::POST],
            "a literal segment wins over a parameter"
        );
        assert_eq!(
            table.template("/api/v1/customers/batch"),
            Some("/api/v1/customers/batch")
        );
        assert_eq!(
            table.label("/api/v1/customers/67e55044-10b1-426f-9247-bb680e5fe0c8"),
            "/api/v1/customers/{id}"
        );
        assert_eq!(table.label("/api/v1/nope-1234"), "other");
        assert_eq!(table.label("/api/v1/customers/a/b"), "other");
        assert_eq!(table.label("/wp-admin/x.php"), "other");
        assert_eq!(table.label("/static/app.js"), "/static/{file}");
        assert_eq!(table.label("/"), "/");
    }

    #[test]
    fn the_live_token_is_read_from_the_query_too() {
        let h = HeaderMap::new();
        assert_eq!(
            bearer(&h, "/api/v1/ws", Some("token=a%2Bb")).as_deref(),
            Some("a+b")
        );
        assert_eq!(bearer(&h, "/api/v1/me", Some("token=abc")), None);
    }
}
