//! `GET /api/v1/ws`: live events for dashboards over WSS (R6).
//!
//! The access token is checked before the upgrade (`Sec-WebSocket-Protocol: bearer, <token>` or
//! `?token=`): a bad one gets the usual 401 and no socket. Each connection gets a
//! [`SessionActor`](crate::actors::session::SessionActor); this module only moves frames between it and
//! the socket, pings, and ends the connection when the client goes silent, falls behind or the node stops.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use ractor::{Actor, ActorRef};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use warp::Filter;
use warp::Reply as _;
use warp::http::Method;
use warp::reply::Response;
use warp::ws::{Message, WebSocket, Ws};

use super::{Endpoint, Shared, query_map, respond_with, with_state};
use crate::actors::session::{RESYNC_FRAME, SessionActor, SessionArgs, SessionMsg};
use crate::auth::UserPrincipal;
use crate::domain::Role;
use crate::error::Error;

pub fn endpoints(state: &Shared) -> Vec<Endpoint> {
    let ws = warp::path!("api" / "v1" / "ws")
        .and(warp::get())
        .and(with_state(state))
        .and(warp::header::optional::<String>("sec-websocket-protocol"))
        .and(query_map())
        .and(warp::ws())
        .then(
            |s: Shared, protocols: Option<String>, query: HashMap<String, String>, ws: Ws| async move {
                respond_with(upgrade(s, protocols, query, ws).await)
            },
        );
    vec![Endpoint::new(Method::GET, "/api/v1/ws", ws)]
}

/// Reads the token from `bearer, <token>` in the subprotocol header, or from `?token=`.
fn token(protocols: Option<&str>, query: &HashMap<String, String>) -> Option<(String, bool)> {
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
    responses((status = 101, description = "switching to the WebSocket protocol"),
        (status = 401, body = super::errors::ErrorBody)))]
pub async fn upgrade(
    s: Shared,
    protocols: Option<String>,
    query: HashMap<String, String>,
    ws: Ws,
) -> Result<Response, Error> {
    let (token, as_protocol) = token(protocols.as_deref(), &query).ok_or(Error::Unauthenticated)?;
    // API keys ingest only; a dashboard is a user's.
    let user = s.auth.verify_access(&token).await?;
    if !user.role.allows(Role::Viewer) {
        return Err(Error::Forbidden("this role cannot watch live events"));
    }
    let reply = ws
        .max_message_size(MAX_CLIENT_FRAME)
        .on_upgrade(move |socket| serve(s, user, socket));
    let mut response = reply.into_response();
    if as_protocol {
        // A browser that offered a subprotocol refuses a handshake that does not pick one.
        response.headers_mut().insert(
            "sec-websocket-protocol",
            warp::http::HeaderValue::from_static("bearer"),
        );
    }
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
}

async fn serve(s: Shared, user: UserPrincipal, socket: WebSocket) {
    let org = user.organization_id;
    let config = s.config.ws.clone();
    let (tx, mut rx) = mpsc::channel::<String>(config.outbound_queue);
    let overflow = Arc::new(Notify::new());
    let args = SessionArgs {
        org,
        out: tx,
        overflow: overflow.clone(),
        ingest: s.ingest.clone(),
        batch_window: config.batch_window,
        metrics: s.metrics.clone(),
    };
    let (mut sink, mut stream) = socket.split();
    let session: ActorRef<SessionMsg> =
        match Actor::spawn_linked(None, SessionActor, args, s.sessions.get_cell()).await {
            Ok((session, _)) => session,
            Err(e) => {
                tracing::error!(%org, error = %e, "cannot start a session; closing the connection");
                let _ = sink
                    .send(Message::close_with(1011u16, "cannot start a session"))
                    .await;
                return;
            }
        };
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
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break End::ClientClosed,
                        Err(_) => break End::TooSlow,
                    }
                }
                None => break End::SessionEnded,
            },
            incoming = stream.next() => match incoming {
                Some(Ok(msg)) => {
                    last_heard = Instant::now();
                    if msg.is_close() {
                        break End::ClientClosed;
                    }
                    if let Ok(text) = msg.to_str() {
                        client_frame(&session, text);
                    }
                }
                Some(Err(_)) | None => break End::ClientClosed,
            },
            _ = ping.tick() => {
                if last_heard.elapsed() >= config.ping_interval * 2 {
                    break End::Silent;
                }
                if tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::ping(Vec::new()))).await.is_err() {
                    break End::TooSlow;
                }
            },
        }
    };
    session.stop(None);
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
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        sink.send(Message::close_with(code, reason)),
    )
    .await;
    tracing::debug!(%org, code, reason, "dashboard connection ended");
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
