//! One actor per live dashboard connection (R6), under a [`SessionSupervisor`].
//!
//! A session subscribes to its organization's events on this node ([`Fanout`]), numbers nothing itself,
//! and turns the events into frames for its connection: every event once, in order, gathered into
//! `batch` frames over a short window (R6.10). Each event names its predecessor (`prev`): an event whose
//! predecessor the session has not seen (a new owner took over, or something was lost on the way) is
//! held while the gap is filled from the owner's buffer, or the client is told to resync. A resume
//! replays what the client missed the same way (R6.7, R6.8). Its outbound queue is bounded: a client that
//! cannot keep up is told to resync and dropped instead of growing the server's memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::RactorMessage;
use tokio::sync::{Notify, mpsc};

use super::fanout::Fanout;
use super::route::Router;
use crate::domain::event::{EventsAfter, OrgEvent};
use crate::domain::{OrganizationId, Wire};
use crate::metrics::Metrics;

/// What a session does with an arriving event, given the newest number it has accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Already accepted (a replay delivered it, or it is older than the connection): dropped.
    Seen,
    /// Its predecessor is the last accepted event: accepted.
    Next,
    /// Something lies between the last accepted event and this one: fill the gap first.
    Gap,
}

/// Decides about an event numbered `seq` whose owner numbered `prev` before it.
pub fn admit(accepted_upto: u64, prev: u64, seq: u64) -> Admit {
    if seq <= accepted_upto {
        Admit::Seen
    } else if prev <= accepted_upto {
        Admit::Next
    } else {
        Admit::Gap
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
            tracing::error!(session = %cell.get_id(), error = ?reason, "session actor failed; its connection is closed");
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
    pub router: Router,
    pub batch_window: Duration,
    pub metrics: Metrics,
}

/// The live state of a session.
pub struct SessionState {
    org: OrganizationId,
    out: mpsc::Sender<String>,
    overflow: Arc<Notify>,
    router: Router,
    fanout: Fanout,
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

impl From<Wire<OrgEvent>> for SessionMsg {
    fn from(event: Wire<OrgEvent>) -> Self {
        SessionMsg::Event(event)
    }
}

impl TryFrom<SessionMsg> for Wire<OrgEvent> {
    type Error = SessionMsg;

    fn try_from(msg: SessionMsg) -> Result<Self, SessionMsg> {
        match msg {
            SessionMsg::Event(event) => Ok(event),
            other => Err(other),
        }
    }
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
        // Subscribe first, then read the newest number: every later event is in the mailbox, every
        // earlier one is at most that number, so nothing falls between.
        let fanout = args.router.fanout().clone();
        fanout.subscribe(args.org, myself.get_derived());
        let newest = match args.router.events_after(args.org, u64::MAX, false).await {
            Ok(replay) => replay.last_seq,
            Err(e) => {
                fanout.unsubscribe(args.org, myself.get_id());
                return Err(e.into());
            }
        };
        let ready = format!(r#"{{"type":"ready","lastSeq":{newest}}}"#);
        args.out.try_send(ready)?;
        args.metrics.live_actors.with_label_values(&["session"]).inc();
        Ok(SessionState {
            org: args.org,
            out: args.out,
            overflow: args.overflow,
            router: args.router,
            fanout,
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
        state.fanout.unsubscribe(state.org, myself.get_id());
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
            SessionMsg::Event(Wire(Ok(event))) => match admit(state.accepted_upto, event.prev, event.seq) {
                Admit::Seen => {}
                Admit::Next => {
                    state.accepted_upto = event.seq;
                    state.pending.insert(event.seq, event_frame(&event));
                    if !state.flush_scheduled {
                        state.flush_scheduled = true;
                        myself.send_after(state.batch_window, || SessionMsg::Flush);
                    }
                }
                Admit::Gap => fill_gap(&myself, state, event).await,
            },
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
    let Some(replay) = replay_after(myself, state, last).await else {
        return;
    };
    for event in &replay.events {
        let sent_live = event.seq >= state.live_from && event.seq <= state.accepted_upto;
        if !sent_live {
            state.pending.insert(event.seq, event_frame(event));
        }
    }
    state.accepted_upto = state.accepted_upto.max(replay.last_seq);
    flush(myself, state);
}

/// An event arrived whose predecessor this session has not seen: the events between come from the
/// owner's buffer, in order before it; if the buffer no longer has them (a new owner starts with an
/// empty one), the client is told to resync. Nothing is ever skipped silently.
async fn fill_gap(myself: &ActorRef<SessionMsg>, state: &mut SessionState, event: OrgEvent) {
    state.metrics.ws_gaps.inc();
    tracing::debug!(org = %state.org, accepted = state.accepted_upto, prev = event.prev, seq = event.seq,
        "event gap; replaying from the owner");
    let after = state.accepted_upto;
    let Some(replay) = replay_after(myself, state, after).await else {
        // Told to resync: the client reloads everything up to now, this event included.
        state.accepted_upto = state.accepted_upto.max(event.seq);
        return;
    };
    for missed in replay.events.iter().filter(|e| e.seq > after) {
        state.pending.insert(missed.seq, event_frame(missed));
    }
    state.pending.insert(event.seq, event_frame(&event));
    state.accepted_upto = state.accepted_upto.max(replay.last_seq).max(event.seq);
    flush(myself, state);
}

/// The owner's events after `after`, when they are all still buffered; otherwise the client is told to
/// resync (after what was already gathered) and `None` is returned.
async fn replay_after(
    myself: &ActorRef<SessionMsg>,
    state: &mut SessionState,
    after: u64,
) -> Option<EventsAfter> {
    let replay = match state.router.events_after(state.org, after, false).await {
        Ok(replay) if replay.complete => return Some(replay),
        Ok(replay) => Some(replay),
        Err(e) => {
            tracing::warn!(org = %state.org, error = %e, "replay unavailable; asking the client to resync");
            None
        }
    };
    state.metrics.ws_resyncs.inc();
    flush(myself, state);
    send(myself, state, RESYNC_FRAME.to_owned());
    if let Some(replay) = replay {
        state.accepted_upto = state.accepted_upto.max(replay.last_seq);
    }
    None
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
            prev: 6,
            kind: "interaction.created".to_owned(),
            data: r#"{"id":"x","content":"a \"quoted\" text"}"#.to_owned(),
            at: chrono::Utc::now(),
        };
        let frame: serde_json::Value = serde_json::from_str(&event_frame(&event)).unwrap();
        assert_eq!(frame["seq"], 7);
        assert_eq!(frame["type"], "interaction.created");
        assert_eq!(frame["data"]["content"], "a \"quoted\" text");
    }

    #[test]
    fn events_are_admitted_by_their_predecessor() {
        assert_eq!(admit(5, 5, 6), Admit::Next);
        assert_eq!(admit(5, 4, 5), Admit::Seen, "already delivered");
        assert_eq!(admit(5, 7, 8), Admit::Gap, "6 and 7 never arrived");
        // A new owner numbers above everything reserved before it: its first event shows the gap.
        assert_eq!(admit(5, 100, 101), Admit::Gap);
        // A replay may have delivered beyond an event's predecessor: the event is still new.
        assert_eq!(admit(5, 3, 6), Admit::Next);
    }

    proptest::proptest! {
        /// One owner's stream delivered in order never shows a gap; dropping any event makes the next
        /// one a gap, and an event delivered twice is seen once.
        #[test]
        fn one_owners_stream_has_no_gaps_and_a_loss_always_shows(
            start in 0u64..1_000, len in 1usize..50, lost in proptest::option::of(0usize..50), dup in 0usize..50,
        ) {
            let events: Vec<(u64, u64)> = (0..len as u64).map(|i| (start + i, start + i + 1)).collect();
            let mut accepted = start;
            let mut gaps = 0;
            for (i, (prev, seq)) in events.iter().copied().enumerate() {
                if lost == Some(i) {
                    continue;
                }
                let times = if dup == i { 2 } else { 1 };
                for t in 0..times {
                    match admit(accepted, prev, seq) {
                        Admit::Next => { proptest::prop_assert_eq!(t, 0); accepted = seq }
                        Admit::Seen => proptest::prop_assert_eq!(t, 1),
                        Admit::Gap => { gaps += 1; accepted = seq }
                    }
                }
            }
            let expected = usize::from(lost.is_some_and(|l| l + 1 < len));
            proptest::prop_assert_eq!(gaps, expected);
        }
    }
}
