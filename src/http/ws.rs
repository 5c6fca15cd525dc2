//! `GET /api/v1/ws`: live events for dashboards over WSS (R6).
//!
//! The access token is checked before the upgrade (`Sec-WebSocket-Protocol: bearer, <token>` or
//! `?token=`): a bad one gets the usual 401 and no socket. The handshake is done here rather than by
//! warp's `ws()` filter so that permessage-deflate can be negotiated and run beneath tungstenite
//! ([`super::deflate`]). Each connection gets a session actor
//! ([`crate::actors::session::SessionActor`]); this module only moves frames between it and the socket,
//! pings, and ends the connection when the client goes silent, falls behind, loses its token or the node
//! stops.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use ractor::{Actor, ActorRef};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use warp::Filter;
use warp::http::header::{
    CONNECTION, HeaderMap, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS,
    SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use warp::http::{Method, StatusCode};
use warp::reply::Response;

use super::deflate::{self, DeflateStream};
use super::{Endpoint, Shared, query_map, respond_with, with_state};
use crate::actors::session::{RESYNC_FRAME, SessionActor, SessionArgs, SessionMsg};
use crate::auth::UserPrincipal;
use crate::domain::Role as UserRole;
use crate::error::Error;

pub fn endpoints(state: &Shared) -> Vec<Endpoint> {
    let ws = warp::path!("api" / "v1" / "ws")
        .and(warp::get())
        .and(with_state(state))
        .and(warp::header::headers_cloned())
        .and(query_map())
        .and(warp::ext::optional::<hyper::upgrade::OnUpgrade>())
        .then(
            |s: Shared,
             headers: HeaderMap,
             query: HashMap<String, String>,
             on_upgrade: Option<hyper::upgrade::OnUpgrade>| async move {
                respond_with(upgrade(s, headers, query, on_upgrade).await)
            },
        );
    vec![Endpoint::new(Method::GET, "/api/v1/ws", ws)]
}

/// Reads the token from `bearer, <token>` in the subprotocol header, or from `?token=`.
pub(crate) fn token(protocols: Option<&str>, query: &HashMap<String, String>) -> Option<(String, bool)> {
    if let Some(header) = protocols {
        let mut parts = header.split(',').map(str::trim);
        if parts.next() == Some("bearer")
            && let Some(token) = parts.next().filter(|t| !t.is_empty())
        {
            return Some((token.to_owned(), true));
        }
    }
    query
        .get("token")
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(|t| (t.to_owned(), false))
}

/// Live events for the caller's organization: the `ready` frame, then every event as it happens.
#[utoipa::path(get, path = "/api/v1/ws", tag = "live",
    params(("token" = Option<String>, Query, description = "the access token, unless sent as `Sec-WebSocket-Protocol: bearer, <token>`")),
    responses((status = 101, description = "switching to the WebSocket protocol (permessage-deflate when offered)"),
        (status = 400, body = super::errors::ErrorBody), (status = 401, body = super::errors::ErrorBody),
        (status = 426, body = super::errors::ErrorBody)))]
pub async fn upgrade(
    s: Shared,
    headers: HeaderMap,
    query: HashMap<String, String>,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Result<Response, Error> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (token, as_protocol) =
        token(header("sec-websocket-protocol"), &query).ok_or(Error::Unauthenticated)?;
    // API keys ingest only; a dashboard is a user's.
    let user = s.auth.verify_access(&token).await?;
    if !user.role.allows(UserRole::Viewer) {
        return Err(Error::Forbidden("this role cannot watch live events"));
    }
    let is_upgrade = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
        && header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")));
    let key = header("sec-websocket-key").filter(|k| !k.is_empty());
    let (Some(on_upgrade), Some(key), true) = (on_upgrade, key, is_upgrade) else {
        return Err(Error::BadRequest(
            "this is a WebSocket endpoint: send a WebSocket upgrade request".to_owned(),
        ));
    };
    if header("sec-websocket-version") != Some("13") {
        return Err(Error::UpgradeRequired("only WebSocket version 13 is spoken here"));
    }
    let deflate = deflate::negotiate(header("sec-websocket-extensions"));
    let mut response = Response::new(warp::hyper::body::Bytes::new().into());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    if as_protocol {
        // A browser that offered a subprotocol refuses a handshake that does not pick one.
        h.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("bearer"));
    }
    if let Some(extension) = &deflate
        && let Ok(v) = HeaderValue::from_str(extension)
    {
        h.insert(SEC_WEBSOCKET_EXTENSIONS, v);
    }
    // Subscribed before the handshake is answered: an alert raised once the client holds its connection
    // reaches it, however late the connection's task gets to run (seen under CI load).
    let alerts = s.alerts.subscribe();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => hyper_util::rt::TokioIo::new(upgraded),
            Err(e) => {
                tracing::debug!(error = %e, "the WebSocket upgrade did not complete");
                return;
            }
        };
        let config = Some(WebSocketConfig::default().max_message_size(Some(MAX_CLIENT_FRAME)));
        if deflate.is_some() {
            let stream = DeflateStream::new(upgraded);
            serve(
                s,
                user,
                token,
                alerts,
                WebSocketStream::from_raw_socket(stream, Role::Server, config).await,
            )
            .await;
        } else {
            serve(
                s,
                user,
                token,
                alerts,
                WebSocketStream::from_raw_socket(upgraded, Role::Server, config).await,
            )
            .await;
        }
    });
    Ok(response)
}

/// Clients only send small control frames (`resume`).
const MAX_CLIENT_FRAME: usize = 4096;

/// How long one frame may take to reach a client before the connection is given up.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection ended, for the log and the close frame.
enum End {
    ClientClosed,
    Silent,
    TooSlow,
    Stopping,
    SessionEnded,
    /// The token expired or was revoked (logout, password or role change, user deleted).
    Revoked,
}

async fn serve<S>(
    s: Shared,
    user: UserPrincipal,
    token: String,
    mut alerts: tokio::sync::broadcast::Receiver<crate::domain::alert::Alert>,
    socket: WebSocketStream<S>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let org = user.organization_id;
    let config = s.config.ws.clone();
    let (tx, mut rx) = mpsc::channel::<String>(config.outbound_queue);
    let overflow = Arc::new(Notify::new());
    let args = SessionArgs {
        org,
        out: tx,
        overflow: overflow.clone(),
        router: s.router.clone(),
        batch_window: config.batch_window,
        metrics: s.metrics.clone(),
    };
    let (mut sink, mut stream) = socket.split();
    let session: ActorRef<SessionMsg> =
        match Actor::spawn_linked(None, SessionActor, args, s.sessions.get_cell()).await {
            Ok((session, _)) => session,
            Err(e) => {
                tracing::error!(%org, error = %e, "cannot start a session; closing the connection");
                let _ = sink.send(close(1011, "cannot start a session")).await;
                return;
            }
        };
    s.metrics.ws_connections.inc();
    let (sent, received) = (
        s.metrics.ws_messages.with_label_values(&["out"]),
        s.metrics.ws_messages.with_label_values(&["in"]),
    );
    // Alerts reach admins: their organization's, and the system alerts every admin sees.
    let admin = user.role == crate::domain::Role::Admin;
    let mut shutdown = s.shutdown.clone();
    let mut ping = tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    let mut last_heard = Instant::now();
    let end = loop {
        tokio::select! {
            // A dropped session closes the channel too: being too slow must be seen first.
            biased;
            () = overflow.notified() => break End::TooSlow,
            _ = shutdown.changed() => break End::Stopping,
            frame = rx.recv() => match frame {
                Some(text) => {
                    match tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::text(text))).await {
                        Ok(Ok(())) => sent.inc(),
                        Ok(Err(_)) => break End::ClientClosed,
                        Err(_) => break End::TooSlow,
                    }
                }
                None => break End::SessionEnded,
            },
            alert = alerts.recv(), if admin => match alert {
                // Insight alerts reach every user of their organization as its numbered events.
                Ok(alert) if alert.kind == crate::domain::alert::AlertKind::System => {
                    let frame = serde_json::json!({"type": "alert", "data": alert}).to_string();
                    match tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::text(frame))).await {
                        Ok(Ok(())) => sent.inc(),
                        Ok(Err(_)) => break End::ClientClosed,
                        Err(_) => break End::TooSlow,
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break End::Stopping,
            },
            incoming = stream.next() => match incoming {
                Some(Ok(msg)) => {
                    last_heard = Instant::now();
                    match msg {
                        Message::Close(_) => break End::ClientClosed,
                        Message::Text(text) => {
                            received.inc();
                            client_frame(&session, text.as_str());
                        }
                        _ => {}
                    }
                }
                Some(Err(_)) | None => break End::ClientClosed,
            },
            _ = ping.tick() => {
                if last_heard.elapsed() >= config.ping_interval * 2 {
                    break End::Silent;
                }
                // A live view lasts no longer than the credential that opened it (the check is the
                // cached token verification every request makes).
                if s.auth.verify_access(&token).await.is_err() {
                    break End::Revoked;
                }
                if tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Ping(Default::default()))).await.is_err() {
                    break End::TooSlow;
                }
            },
        }
    };
    session.stop(None);
    s.metrics.ws_connections.dec();
    let (code, reason) = match end {
        End::ClientClosed => (1000u16, "closed"),
        End::SessionEnded => (1011, "session ended"),
        End::Silent => {
            s.metrics.ws_dropped.with_label_values(&["heartbeat"]).inc();
            (1001, "no answer to pings")
        }
        End::TooSlow => {
            s.metrics.ws_dropped.with_label_values(&["slow"]).inc();
            // A slow client may still be reading: give the resync the time any frame gets.
            let _ = tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::text(RESYNC_FRAME))).await;
            (1013, "too slow; resync")
        }
        End::Stopping => (1001, "server stopping"),
        End::Revoked => (4401, "token expired or revoked; reconnect with a fresh token"),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close(code, reason))).await;
    tracing::debug!(%org, code, reason, "dashboard connection ended");
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}

/// A client frame: `{"type":"resume","lastSeq":N}`; anything else is ignored.
fn client_frame(session: &ActorRef<SessionMsg>, text: &str) {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Frame {
        #[serde(rename = "type")]
        kind: String,
        last_seq: Option<u64>,
    }
    if let Ok(frame) = serde_json::from_str::<Frame>(text)
        && frame.kind == "resume"
        && let Some(last) = frame.last_seq
    {
        let _ = session.cast(SessionMsg::Resume(last));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_the_subprotocol_or_the_query() {
        let none = HashMap::new();
        assert_eq!(
            token(Some("bearer, abc.def"), &none),
            Some(("abc.def".to_owned(), true))
        );
        assert_eq!(token(Some("bearer,abc"), &none), Some(("abc".to_owned(), true)));
        assert_eq!(token(Some("chat"), &none), None);
        let q: HashMap<String, String> = [("token".to_owned(), "xyz".to_owned())].into();
        assert_eq!(token(None, &q), Some(("xyz".to_owned(), false)));
        assert_eq!(token(Some("bearer"), &q), Some(("xyz".to_owned(), false)));
    }
}
