//! One actor per live dashboard connection (R6), under a [`SessionSupervisor`].
//!
//! A session joins its organization's fan-out group (a `ractor::pg` group, so an organization actor
//! reaches sessions wherever they run), numbers nothing itself, and turns the organization's events into
//! frames for its connection: every event once, in order, gathered into `batch` frames over a short
//! window (R6.10). A resume replays what the client missed from the organization's buffer, or tells it to
//! resync (R6.7, R6.8). Its outbound queue is bounded: a client that cannot keep up is told to resync and
//! dropped instead of growing the server's memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::RactorMessage;
use tokio::sync::{Notify, mpsc};

use super::ingest::Ingest;
use crate::domain::event::OrgEvent;
use crate::domain::{OrganizationId, Wire};
use crate::metrics::Metrics;

/// The fan-out group of an organization's live sessions.
pub fn group(org: OrganizationId) -> String {
    format!("org-events/{}", org.as_uuid())
}

/// Sends an organization's new event to every session in its group.
pub fn fan_out(org: OrganizationId, event: &OrgEvent) {
    for member in ractor::pg::get_members(&group(org)) {
        let session: ActorRef<SessionMsg> = member.into();
        let _ = session.cast(SessionMsg::Event(Wire::new(event.clone())));
    }
}

/// The text of a frame for one event: `{"seq":…,"type":…,"data":…}` (`data` is already JSON).
pub fn event_frame(event: &OrgEvent) -> String {
    let kind = serde_json::to_string(&event.kind).unwrap_or_else(|_| "\"event\"".to_owned());
    let data = if event.data.is_empty() {
        "null"
    } else {
        &event.data
    };
    format!(r#"{{"seq":{},"type":{kind},"data":{data}}}"#, event.seq)
}

/// The frame that tells a client to reload its state over REST.
pub const RESYNC_FRAME: &str = r#"{"type":"resync"}"#;

/// The session supervisor: starts nothing itself; counts and logs how its sessions end.
pub struct SessionSupervisor;

/// Messages to the session supervisor (sessions are spawned linked to it).
#[derive(RactorMessage)]
pub enum SupervisorMsg {
    /// How many sessions are alive.
    CountSessions(ractor::RpcReplyPort<u64>),
}

impl Actor for SessionSupervisor {
    type Msg = SupervisorMsg;
    type State = Metrics;
    type Arguments = Metrics;

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        metrics: Metrics,
    ) -> Result<Metrics, ActorProcessingErr> {
        Ok(metrics)
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        _metrics: &mut Metrics,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::CountSessions(reply) => {
                let _ = reply.send(myself.get_children().len() as u64);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        metrics: &mut Metrics,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, reason) = event {
            // The connection sees its channel close and ends; the client reconnects and resumes.
            metrics.actor_restarts.with_label_values(&["sessions"]).inc();
            tracing::error!(session = %cell.get_id(), %reason, "session actor failed; its connection is closed");
        }
        Ok(())
    }
}

/// What a session starts from.
pub struct SessionArgs {
    pub org: OrganizationId,
    /// Frames for the connection; bounded.
    pub out: mpsc::Sender<String>,
    /// Raised when the client is too slow: the connection sends `resync` and closes.
    pub overflow: Arc<Notify>,
    pub ingest: Ingest,
    pub batch_window: Duration,
    pub metrics: Metrics,
}

/// The live state of a session.
pub struct SessionState {
    org: OrganizationId,
    out: mpsc::Sender<String>,
    overflow: Arc<Notify>,
    ingest: Ingest,
    batch_window: Duration,
    metrics: Metrics,
    /// The first number delivered live (the newest one at connect time + 1).
    live_from: u64,
    /// Every number up to this one has been queued for the client, or was older than the connection.
    accepted_upto: u64,
    /// Frames gathered for the next flush, by number.
    pending: BTreeMap<u64, String>,
    flush_scheduled: bool,
    dropped: bool,
}

/// Messages to a session.
#[derive(RactorMessage)]
pub enum SessionMsg {
    /// A new event of the organization.
    Event(Wire<OrgEvent>),
    /// The client has seen every event up to this number.
    Resume(u64),
    /// Sends what was gathered (sent to itself after the batch window).
    Flush,
}

/// The session actor (stateless struct; see [`SessionState`]).
pub struct SessionActor;

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        // Join first, then read the newest number: every later event is in the mailbox, every earlier
        // one is at most that number, so nothing falls between.
        ractor::pg::join(group(args.org), vec![myself.get_cell()]);
        let newest = args.ingest.events_after(args.org, u64::MAX).await?.last_seq;
        let ready = format!(r#"{{"type":"ready","lastSeq":{newest}}}"#);
        args.out.try_send(ready)?;
        args.metrics.live_actors.with_label_values(&["session"]).inc();
        Ok(SessionState {
            org: args.org,
            out: args.out,
            overflow: args.overflow,
            ingest: args.ingest,
            batch_window: args.batch_window,
            metrics: args.metrics,
            live_from: newest + 1,
            accepted_upto: newest,
            pending: BTreeMap::new(),
            flush_scheduled: false,
            dropped: false,
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        ractor::pg::leave(group(state.org), vec![myself.get_cell()]);
        state.metrics.live_actors.with_label_values(&["session"]).dec();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        if state.dropped {
            return Ok(());
        }
        match msg {
            SessionMsg::Event(Wire(Ok(event))) => {
                if event.seq > state.accepted_upto {
                    state.accepted_upto = event.seq;
                    state.pending.insert(event.seq, event_frame(&event));
                    if !state.flush_scheduled {
                        state.flush_scheduled = true;
                        myself.send_after(state.batch_window, || SessionMsg::Flush);
                    }
                }
            }
            SessionMsg::Event(Wire(Err(e))) => {
                tracing::error!(org = %state.org, error = e, "undecodable event dropped; the client may miss it");
            }
            SessionMsg::Resume(last) => resume(&myself, state, last).await,
            SessionMsg::Flush => {
                state.flush_scheduled = false;
                flush(&myself, state);
            }
        }
        Ok(())
    }
}

/// Replays what the client missed, never an event it already has from this connection, in order.
async fn resume(myself: &ActorRef<SessionMsg>, state: &mut SessionState, last: u64) {
    let replay = match state.ingest.events_after(state.org, last).await {
        Ok(replay) => replay,
        Err(e) => {
            tracing::warn!(org = %state.org, error = %e, "replay unavailable; asking the client to resync");
            send(myself, state, RESYNC_FRAME.to_owned());
            return;
        }
    };
    if !replay.complete {
        state.metrics.ws_resyncs.inc();
        flush(myself, state);
        send(myself, state, RESYNC_FRAME.to_owned());
        state.accepted_upto = state.accepted_upto.max(replay.last_seq);
        return;
    }
    for event in &replay.events {
        let sent_live = event.seq >= state.live_from && event.seq <= state.accepted_upto;
        if !sent_live {
            state.pending.insert(event.seq, event_frame(event));
        }
    }
    state.accepted_upto = state.accepted_upto.max(replay.last_seq);
    flush(myself, state);
}

/// Sends the gathered frames: one as itself, several as a `batch`.
fn flush(myself: &ActorRef<SessionMsg>, state: &mut SessionState) {
    let frames: Vec<String> = std::mem::take(&mut state.pending).into_values().collect();
    match frames.len() {
        0 => {}
        1 => {
            if let Some(frame) = frames.into_iter().next() {
                send(myself, state, frame);
            }
        }
        n => {
            state.metrics.ws_batches.inc();
            let mut batch = String::with_capacity(frames.iter().map(String::len).sum::<usize>() + n + 32);
            batch.push_str(r#"{"type":"batch","events":["#);
            batch.push_str(&frames.join(","));
            batch.push_str("]}");
            send(myself, state, batch);
        }
    }
}

/// Queues a frame; a full queue means the client cannot keep up: it is told to resync and dropped.
fn send(myself: &ActorRef<SessionMsg>, state: &mut SessionState, frame: String) {
    match state.out.try_send(frame) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            state.dropped = true;
            state.metrics.ws_dropped.with_label_values(&["slow"]).inc();
            tracing::info!(org = %state.org, "a dashboard client fell behind; it is told to resync and dropped");
            state.overflow.notify_one();
            myself.stop(Some("client too slow".to_owned()));
        }
        // The connection is gone; its task stops this actor.
        Err(mpsc::error::TrySendError::Closed(_)) => {
            state.dropped = true;
            myself.stop(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_embed_the_event_data_as_json() {
        let event = OrgEvent {
            seq: 7,
            kind: "interaction.created".to_owned(),
            data: r#"{"id":"x","content":"a \"quoted\" text"}"#.to_owned(),
            at: chrono::Utc::now(),
        };
        let frame: serde_json::Value = serde_json::from_str(&event_frame(&event)).unwrap();
        assert_eq!(frame["seq"], 7);
        assert_eq!(frame["type"], "interaction.created");
        assert_eq!(frame["data"]["content"], "a \"quoted\" text");
    }
}
