//! The HTTPS server: TLS through rustls (warp 0.4 has none), HTTP/1.1 and HTTP/2 through hyper, and the
//! per-request envelope every response shares: request id, security headers, log line and metrics.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower_service::Service as _;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, Request, header};
use warp::reply::Response;

use super::PeerAddr;
use super::limits::{self, Front};
use crate::domain::trace;
use crate::store::auth_events::AuthEventKind;

/// How long a client may take to start and finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first byte of every TLS connection (a handshake record).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What a plain-HTTP client on the HTTPS port is told before the connection is closed.
const PLAIN_HTTP_REFUSAL: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: 116\r\n\r\n{\"error\":{\"code\":\"https_required\",\"message\":\"this server only speaks HTTPS; use https:// (plain HTTP is refused) \"}}";

/// Serves `routes` over TLS on `listener` until `shutdown` turns true, then lets open connections finish
/// for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    routes: BoxedFilter<(Response,)>,
    front: Arc<Front>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let service = warp::service(routes);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let acceptor = acceptor.clone();
        let service = service.clone();
        let front = front.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let Some(tls) = handshake(stream, peer, &acceptor).await else {
                return;
            };
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let mut inner = service.clone();
                let front = front.clone();
                async move { Ok::<_, Infallible>(envelope(req, peer, &front, |r| inner.call(r)).await) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(grace) => tracing::warn!(grace_s = grace.as_secs(), "connections still open after the grace period; closing"),
    }
}

/// Refuses plain HTTP with a short explanation, and completes the TLS handshake otherwise.
async fn handshake(
    mut stream: TcpStream,
    peer: SocketAddr,
    acceptor: &TlsAcceptor,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE_RECORD => {}
        Ok(Ok(1)) => {
            tracing::debug!(peer = %peer, "plain HTTP on the HTTPS port refused");
            let _ = stream.write_all(PLAIN_HTTP_REFUSAL).await;
            let _ = stream.shutdown().await;
            return None;
        }
        _ => return None,
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}

/// Wraps one request: assigns its id (or keeps a sane one the client sent), records the peer and the
/// client's address, decides its quotas (refusing it with 429 before routing when one is used up), runs
/// the router with the id in scope, then adds headers, logs the request line (R11.1) and counts it.
async fn envelope<F, Fut>(mut req: Request<Incoming>, peer: SocketAddr, front: &Front, call: F) -> Response
where
    F: FnOnce(Request<Incoming>) -> Fut,
    Fut: std::future::Future<Output = Result<Response, Infallible>>,
{
    let started = Instant::now();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let metrics = &front.state.metrics;
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let client = limits::client_ip(
        &front.state.config.rate_limit.trusted_proxies,
        peer.ip(),
        req.headers(),
    );
    drop_same_origin(&mut req);
    req.extensions_mut().insert(PeerAddr(peer));
    req.extensions_mut().insert(limits::ClientIp(client));
    let mut admission = trace::scope(
        Some(request_id.clone()),
        front.admit(&method, &path, req.headers(), req.uri().query(), client),
    )
    .await;
    // Who sent the request, should its response be a security event (the request is gone by then).
    let caller = super::security::Caller::of(req.headers());
    let refused = admission.refusal.is_some();
    let mut response = match admission.refusal.take() {
        Some(refusal) => refusal,
        None => {
            if let Some(ahead) = admission.read_ahead.clone() {
                req.extensions_mut().insert(ahead);
            }
            let fault = front
                .state
                .config
                .fault_injection
                .then(|| Fault::of(req.headers()))
                .flatten();
            trace::scope(Some(request_id.clone()), async {
                match fault {
                    Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
                    Some(Fault::Error) => {
                        return super::errors::error_response(&crate::error::Error::internal(
                            anyhow::anyhow!("fault injected by the x-insights-fault header"),
                        ));
                    }
                    None => {}
                }
                match call(req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                }
            })
            .await
        }
    };
    limits::add_headers(&mut response, &admission);
    limits::add_allow(&mut response, &front.routes, &path);
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert("x-request-id", v);
    }
    headers.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    let status = response.status();
    let elapsed = started.elapsed();
    let route = front.routes.label(&path).to_owned();
    let mark = if refused {
        Some(super::errors::SecurityMark(
            AuthEventKind::RateLimited,
            "a request quota was used up",
        ))
    } else {
        response
            .extensions()
            .get::<super::errors::SecurityMark>()
            .copied()
    };
    if let Some(super::errors::SecurityMark(kind, detail)) = mark {
        front
            .security
            .observe(&front.state, kind, detail, route.clone(), Some(client), &caller);
    }
    metrics
        .http_requests
        .with_label_values(&[method.as_str(), &route, status.as_str()])
        .inc();
    metrics
        .http_duration
        .with_label_values(&[method.as_str(), &route])
        .observe(elapsed.as_secs_f64());
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    if status.is_server_error() {
        tracing::error!(%request_id, %method, path, status = status.as_u16(), latency_ms, peer = %peer, "request");
    } else {
        tracing::info!(%request_id, %method, path, status = status.as_u16(), latency_ms, "request");
    }
    response
}

/// A fault a request asks for with `x-insights-fault` when the node runs with `INSIGHTS_FAULT_INJECTION`
/// (tests and drills of the alerting only; ignored otherwise): `error` answers 500 as an internal error
/// would (logged with its backtrace), `delay=<ms>` (at most a minute) serves the request that much later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Error,
    Delay(std::time::Duration),
}

impl Fault {
    fn of(headers: &http::HeaderMap) -> Option<Self> {
        let value = headers.get("x-insights-fault")?.to_str().ok()?.trim();
        if value == "error" {
            return Some(Self::Error);
        }
        let ms: u64 = value.strip_prefix("delay=")?.parse().ok()?;
        Some(Self::Delay(std::time::Duration::from_millis(ms.min(60_000))))
    }
}

/// Removes the `Origin` of a request from this node's own origin: browsers send one with module scripts,
/// form posts and `fetch` calls of our own dashboard, and a same-origin request needs no CORS answer, so
/// the whitelist of `INSIGHTS_CORS_ORIGINS` (other origins) must not refuse it (R9.8). A page elsewhere
/// cannot fake this: its browser names the page's origin in `Origin` and ours in `Host`.
fn drop_same_origin<B>(req: &mut Request<B>) {
    let authority = req.uri().authority().map(|a| a.as_str().to_owned()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
    });
    let same = match (req.headers().get(header::ORIGIN), authority) {
        (Some(origin), Some(authority)) => origin
            .to_str()
            .ok()
            .and_then(|o| o.strip_prefix("https://"))
            .is_some_and(|host| host.eq_ignore_ascii_case(&authority)),
        _ => false,
    };
    if same {
        req.headers_mut().remove(header::ORIGIN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_read_from_their_header() {
        let with = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("x-insights-fault", v.parse().unwrap());
            Fault::of(&h)
        };
        assert_eq!(with("error"), Some(Fault::Error));
        assert_eq!(
            with("delay=250"),
            Some(Fault::Delay(std::time::Duration::from_millis(250)))
        );
        assert_eq!(
            with("delay=99999999"),
            Some(Fault::Delay(std::time::Duration::from_secs(60)))
        );
        assert_eq!(with("delay=x"), None);
        assert_eq!(with("panic"), None);
        assert_eq!(Fault::of(&http::HeaderMap::new()), None);
    }

    #[test]
    fn the_plain_http_refusal_is_a_well_formed_response() {
        let text = std::str::from_utf8(PLAIN_HTTP_REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let declared: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(declared, body.len());
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "https_required");
    }
}
