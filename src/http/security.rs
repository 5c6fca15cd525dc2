//! Security events seen at the request front (R9.14, R9.15): permission denials, rate-limit blocks and
//! decryption failures, recorded with the route, the IP and the caller (user or API key) in the same trail
//! as the authentication events. Every one is counted; of a burst from one caller, one per kind and
//! route a minute is written, so a flood of refused requests cannot flood the table.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use warp::Filter as _;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use super::openapi::params::PageParams;
use super::params::Params;
use super::{Endpoint, Page, PageRequest, Shared, authed, query_map, respond};
use crate::auth::{Auth, Credential, Principal};
use crate::domain::Role;
use crate::error::Error;
use crate::store::auth_events::{self, AuthEvent, AuthEventKind, SecurityEvent};

pub fn endpoints(s: &Shared) -> Vec<Endpoint> {
    vec![Endpoint::new(
        Method::GET,
        "/api/v1/security-events",
        warp::path!("api" / "v1" / "security-events")
            .and(warp::get())
            .and(authed(s))
            .and(query_map())
            .then(|s: Shared, p: Principal, q: HashMap<String, String>| async move {
                respond(StatusCode::OK, list_security_events(&s, &p, &q).await)
            }),
    )]
}

/// Lists the organization's security events, newest first: logins and their failures, throttles,
/// logouts, password changes, refresh-token reuse and refusals, permission denials, rate-limit blocks and
/// decryption failures, with time, IP, user or API key, and route.
#[utoipa::path(get, path = "/api/v1/security-events", tag = "users", security(("bearer" = [])),
    params(PageParams, ("kind" = Option<AuthEventKind>, Query, description = "only events of this kind")),
    responses((status = 200, body = Page<SecurityEvent>), (status = 400, body = super::errors::ErrorBody), (status = 403, body = super::errors::ErrorBody)))]
pub async fn list_security_events(
    s: &Shared,
    p: &Principal,
    query: &HashMap<String, String>,
) -> Result<Page<SecurityEvent>, Error> {
    let admin = p.require(Role::Admin)?;
    let mut params = Params::new(query);
    let page = PageRequest::read(&mut params);
    let kind = params.parse("kind", AuthEventKind::parse);
    params.finish()?;
    let (limit, offset) = page.limit_offset();
    let (data, total) = auth_events::list(&s.pool, admin.organization_id, kind, limit, offset).await?;
    Ok(Page::new(data, page, total))
}

/// How long a repeat of an event (same kind, route, IP and caller) is only counted.
const REPEAT_WINDOW: Duration = Duration::from_secs(60);

/// At most this many recent events are remembered (then the memory starts over).
const REMEMBERED: usize = 10_000;

type Key = (AuthEventKind, String, Option<IpAddr>, String);

/// Who sent a request, as a security event names them: the two headers kept from it (shared bytes, not
/// a copy of every header of every request).
#[derive(Debug, Default)]
pub struct Caller {
    authorization: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
}

impl Caller {
    pub fn of(headers: &HeaderMap) -> Self {
        Self {
            authorization: headers.get(header::AUTHORIZATION).cloned(),
            user_agent: headers.get(header::USER_AGENT).cloned(),
        }
    }
}

/// The recent events, to write a burst once.
#[derive(Debug, Default)]
pub struct SecurityLog {
    recent: Mutex<HashMap<Key, Instant>>,
}

impl SecurityLog {
    /// Whether `key` was not written within the window (and is now).
    fn first(&self, key: Key) -> bool {
        let now = Instant::now();
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() >= REMEMBERED {
            recent.retain(|_, at| now.duration_since(*at) < REPEAT_WINDOW);
            if recent.len() >= REMEMBERED {
                recent.clear();
            }
        }
        match recent.get(&key) {
            Some(at) if now.duration_since(*at) < REPEAT_WINDOW => false,
            _ => {
                recent.insert(key, now);
                true
            }
        }
    }

    /// Records `kind` for a request to `route` from `ip` by `caller`, off the request's path.
    pub fn observe(
        &self,
        state: &Shared,
        kind: AuthEventKind,
        detail: &'static str,
        route: String,
        ip: Option<IpAddr>,
        caller: &Caller,
    ) {
        let credential = caller
            .authorization
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|bearer| state.auth.inspect(bearer.trim()));
        let who = match &credential {
            Some(Credential::Access(claims)) => format!("user:{}", claims.sub),
            Some(Credential::ApiKey { digest }) => format!("key:{}", hex::encode(digest)),
            _ => String::new(),
        };
        if !self.first((kind, route.clone(), ip, who)) {
            state
                .metrics
                .security_events
                .with_label_values(&[kind.as_str()])
                .inc();
            return;
        }
        let user_agent = caller
            .user_agent
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(512).collect::<String>());
        let state = state.clone();
        tokio::spawn(async move {
            let (mut org, mut user, mut key) = (None, None, None);
            match credential {
                Some(Credential::Access(claims)) => {
                    org = Some(claims.organization_id());
                    user = Some(claims.user_id());
                }
                Some(Credential::ApiKey { digest }) => {
                    if let Ok(Some((id, o))) = Auth::api_key_owner(&state.pool, &digest).await {
                        key = Some(id);
                        org = Some(o);
                    }
                }
                _ => {}
            }
            auth_events::record(
                &state.pool,
                &state.metrics,
                kind,
                AuthEvent {
                    organization_id: org,
                    user_id: user,
                    ip,
                    user_agent: user_agent.as_deref(),
                    api_key_id: key,
                    route: Some(&route),
                    detail: Some(detail),
                    ..AuthEvent::default()
                },
            )
            .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_kinds_are_the_stored_names() {
        let schema = serde_json::to_value(<AuthEventKind as utoipa::PartialSchema>::schema()).unwrap();
        let documented: Vec<&str> = schema["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let recorded: Vec<&str> = AuthEventKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(documented, recorded);
    }

    #[test]
    fn a_burst_is_written_once_per_kind_route_ip_and_caller() {
        let log = SecurityLog::default();
        let key = |kind, who: &str| (kind, "/api/v1/users".to_owned(), None, who.to_owned());
        assert!(log.first(key(AuthEventKind::RateLimited, "user:a")));
        assert!(!log.first(key(AuthEventKind::RateLimited, "user:a")));
        assert!(log.first(key(AuthEventKind::RateLimited, "user:b")));
        assert!(log.first(key(AuthEventKind::PermissionDenied, "user:a")));
    }
}
