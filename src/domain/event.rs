//! Events an organization publishes for its live dashboards, numbered per organization.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An event before the organization numbers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventDraft {
    /// `interaction.created`, `sentiment.scored`, `pattern.detected` or `alert`.
    pub kind: String,
    /// The event's `data`, as JSON text.
    pub data: String,
}

/// A numbered event, as kept in the organization's replay buffer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrgEvent {
    /// Counts per organization, from 1; monotonic across owners.
    pub seq: u64,
    /// The number the same owner gave its previous event. It equals the last number a session has seen
    /// unless something lies between (a new owner, or an event lost on the way): then the session fills
    /// the gap by replay or tells its client to resync. Not part of the client frames.
    pub prev: u64,
    pub kind: String,
    pub data: String,
    pub at: DateTime<Utc>,
}

/// The events after a given sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsAfter {
    pub events: Vec<OrgEvent>,
    /// False when some events after the requested number are no longer buffered (the client must resync).
    pub complete: bool,
    /// The newest sequence number.
    pub last_seq: u64,
}

/// What an organization's numbering and replay buffer are when it moves to another node (a graceful
/// hand-off): the new owner continues from them, so its first event follows the last one without a gap
/// and its dashboards need no resync.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandOff {
    /// The newest number handed out.
    pub seq: u64,
    /// The number of the last event published (the next event's `prev`).
    pub last: u64,
    /// The highest number reserved in PostgreSQL by the old owner.
    pub reserved: u64,
    /// The buffered events, oldest first.
    pub ring: Vec<OrgEvent>,
}
