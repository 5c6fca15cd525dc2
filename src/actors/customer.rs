//! One actor per live customer: stores its interactions (through the node's group commit, R2.4–2.6), keeps its
//! counters in memory, and tells its organization what happened. Its state is a cache of PostgreSQL,
//! rebuilt whenever the actor starts, so a crash or a passivation loses nothing acknowledged.

use ractor::{Actor, ActorProcessingErr, ActorRef, DerivedActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use sqlx::PgPool;

use super::scorer::Scorer;
use crate::domain::Wire;
use crate::domain::customer::CustomerState;
use crate::domain::enrichment::{Enrichment, OrgContext};
use crate::domain::event::EventDraft;
use crate::domain::interaction::{
    IngestFailure, IngestOutcome, IngestReply, InteractionRecord, InteractionView, NewInteraction,
};
use crate::domain::{CustomerId, InteractionId, OrganizationId};
use crate::error::Error;
use crate::ml::patterns::{self, Event, PatternType};
use crate::store::cache::Cache;
use crate::store::customers;
use crate::store::group_commit::GroupCommit;
use crate::store::org_tx::OrgTx;

/// An event for the organization to number and publish: the one message a customer's actor sends its
/// organization's actor.
pub struct Publish(pub Wire<EventDraft>);

/// The customer actor (stateless struct; see [`CustomerActorState`]).
pub struct CustomerActor;

/// What a customer actor starts from.
pub struct CustomerArgs {
    /// How long new interactions are gathered before patterns are detected again.
    pub pattern_debounce: std::time::Duration,
    pub org: OrgContext,
    pub customer: CustomerState,
    pub pool: PgPool,
    pub org_ref: DerivedActorRef<Publish>,
    pub scorer: Scorer,
    pub cache: Cache,
    pub fault_injection: bool,
    /// The organization's lease epoch on this node: every write is fenced with it.
    pub epoch: i64,
    /// The node's group committer, which stores the interactions.
    pub commits: GroupCommit,
}

/// The live state of a customer actor.
pub struct CustomerActorState {
    /// The rolling pattern window: the newest interactions of the last 30 days, at most `WINDOW_CAP`.
    window: std::collections::VecDeque<(InteractionId, Event)>,
    /// What the last detection found (type, frequency, confidence), to publish only changes.
    last_patterns: Vec<(PatternType, i32, i64)>,
    detect_scheduled: bool,
    pattern_debounce: std::time::Duration,
    org: OrgContext,
    customer: CustomerState,
    pool: PgPool,
    org_ref: DerivedActorRef<Publish>,
    scorer: Scorer,
    cache: Cache,
    fault_injection: bool,
    epoch: i64,
    commits: GroupCommit,
}

/// Messages to a customer actor.
// Ingest is the common message and moves once through the mailbox; boxing it would add an allocation to
// every interaction to shrink the rare ones.
#[allow(clippy::large_enum_variant)]
#[derive(RactorMessage)]
pub enum CustomerMsg {
    /// Stores one interaction and answers with the stored row; its log events name the request.
    Ingest(
        Wire<NewInteraction>,
        Option<String>,
        RpcReplyPort<Wire<IngestReply>>,
    ),
    /// The organization stored the model's score on one of the customer's interactions, and the customer's
    /// new average: the pattern window takes the score.
    Scored {
        interaction: InteractionId,
        score: f32,
        average_sentiment: Option<f64>,
    },
    /// Re-reads the customer's row (after a PATCH wrote to it).
    Refresh,
    /// A batch stored these interactions of the customer (committed, counters included): the counters
    /// and the pattern window take them.
    Appended(Vec<InteractionRecord>),
    /// Returns what the actor holds.
    Snapshot(RpcReplyPort<Wire<CustomerState>>),
    /// Panics, when fault injection is enabled (crash tests); ignored otherwise.
    InjectPanic,
    /// Detects patterns again (sent to itself, debounced, after new or scored interactions).
    Detect,
    /// Detects patterns again because the stored ones are old (the organization's sweep, or a read of
    /// stale patterns): a lapsed customer's patterns go, unchanged ones are marked as detected now.
    Reevaluate,
}

impl Actor for CustomerActor {
    type Msg = CustomerMsg;
    type State = CustomerActorState;
    type Arguments = CustomerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<CustomerMsg>,
        args: CustomerArgs,
    ) -> Result<CustomerActorState, ActorProcessingErr> {
        let window = load_window(&args.pool, args.org.id, args.customer.id).await?;
        // What is stored, so a detection that finds less (or nothing) after a restart replaces it.
        let last_patterns = customers::pattern_signature(&args.pool, args.org.id, args.customer.id).await?;
        Ok(CustomerActorState {
            window,
            last_patterns,
            detect_scheduled: false,
            pattern_debounce: args.pattern_debounce,
            org: args.org,
            customer: args.customer,
            pool: args.pool,
            org_ref: args.org_ref,
            scorer: args.scorer,
            cache: args.cache,
            fault_injection: args.fault_injection,
            epoch: args.epoch,
            commits: args.commits,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<CustomerMsg>,
        msg: CustomerMsg,
        state: &mut CustomerActorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CustomerMsg::Ingest(Wire(new), request_id, reply) => {
                crate::domain::trace::scope(request_id, async {
                    let result = match new {
                        Ok(new) => ingest(state, new).await,
                        Err(e) => Err(IngestFailure::Internal(e)),
                    };
                    if let Ok(IngestOutcome::Created(record)) = &result {
                        took(state, record);
                    }
                    // The client is answered first; publishing and the scoring hand-off follow the commit.
                    let _ = reply.send(Wire::new(result.clone()));
                    if let Ok(IngestOutcome::Created(record)) = result {
                        tracing::debug!(customer = %state.customer.id, interaction = %record.id, "interaction stored");
                        schedule_detection(&myself, state);
                        let data = serde_json::to_string(&InteractionView::from(record.clone())).unwrap_or_default();
                        let draft = EventDraft {
                            kind: "interaction.created".to_owned(),
                            data,
                        };
                        let _ = state.org_ref.send_message(Publish(Wire::new(draft)));
                        // After the event: its scores come back through the organization's mailbox, so
                        // `sentiment.scored` always follows `interaction.created`.
                        state.scorer.hand_off(&record);
                    }
                })
                .await;
            }
            CustomerMsg::Scored {
                interaction,
                score,
                average_sentiment,
            } => {
                state.customer.average_sentiment = average_sentiment;
                if let Some((_, event)) = state.window.iter_mut().find(|(id, _)| *id == interaction) {
                    event.score = Some(score);
                }
                schedule_detection(&myself, state);
            }
            CustomerMsg::Detect => {
                state.detect_scheduled = false;
                detect_patterns(state, false).await;
            }
            CustomerMsg::Reevaluate => detect_patterns(state, true).await,
            CustomerMsg::Appended(records) => {
                for record in &records {
                    took(state, record);
                }
                schedule_detection(&myself, state);
            }
            CustomerMsg::Refresh => {
                match customers::load_state(&state.pool, state.org.id, state.customer.id).await {
                    Ok(Some(fresh)) => {
                        state.customer = fresh;
                        if let Ok(window) = load_window(&state.pool, state.org.id, state.customer.id).await {
                            state.window = window;
                            schedule_detection(&myself, state);
                        }
                    }
                    Ok(None) => return Err("customer no longer exists".into()),
                    Err(e) => {
                        tracing::warn!(customer = %state.customer.id, error = %e, "cannot refresh customer")
                    }
                }
            }
            CustomerMsg::Snapshot(reply) => {
                let _ = reply.send(Wire::new(state.customer.clone()));
            }
            CustomerMsg::InjectPanic => {
                if state.fault_injection {
                    panic!("injected fault in customer actor {}", state.customer.id);
                }
                tracing::warn!(customer = %state.customer.id, "fault injection requested but disabled; ignored");
            }
        }
        Ok(())
    }
}

/// Most interactions the pattern window keeps; beyond, the oldest are dropped (about 66 a day for 30 days).
pub const WINDOW_CAP: usize = 2000;

async fn load_window(
    pool: &PgPool,
    org: OrganizationId,
    customer: CustomerId,
) -> Result<std::collections::VecDeque<(InteractionId, Event)>, Error> {
    let since = chrono::Utc::now() - chrono::Duration::days(patterns::WINDOW_DAYS);
    let mut events = customers::recent_events(pool, org, customer, since, WINDOW_CAP as i64).await?;
    events.reverse();
    Ok(events.into())
}

/// A stored interaction of the customer: its counters and its pattern window take it (unscored yet).
fn took(state: &mut CustomerActorState, record: &InteractionRecord) {
    state.customer.interaction_count += 1;
    state.customer.last_seen_at = state.customer.last_seen_at.max(Some(record.occurred_at));
    remember(
        state,
        record.id,
        Event {
            at: record.occurred_at,
            channel: record.channel,
            score: None,
        },
    );
}

fn remember(state: &mut CustomerActorState, id: InteractionId, event: Event) {
    state.window.push_back((id, event));
    while state.window.len() > WINDOW_CAP {
        state.window.pop_front();
    }
}

fn schedule_detection(myself: &ActorRef<CustomerMsg>, state: &mut CustomerActorState) {
    if !state.detect_scheduled {
        state.detect_scheduled = true;
        myself.send_after(state.pattern_debounce, || CustomerMsg::Detect);
    }
}

/// Detects patterns over the window; when the set changed, replaces the stored set in one transaction and
/// publishes `pattern.detected`. A re-evaluation (`touch`) that finds the same set marks it detected now.
async fn detect_patterns(state: &mut CustomerActorState, touch: bool) {
    let now = chrono::Utc::now();
    let cutoff = now - chrono::Duration::days(patterns::WINDOW_DAYS);
    while state.window.front().is_some_and(|(_, e)| e.at < cutoff) {
        state.window.pop_front();
    }
    let events: Vec<Event> = state.window.iter().map(|(_, e)| *e).collect();
    let found = patterns::detect(&events, now);
    let mut signature: Vec<(PatternType, i32, i64)> = found
        .iter()
        .map(|p| (p.kind, p.frequency, (p.confidence * 100.0).round() as i64))
        .collect();
    signature.sort();
    if signature == state.last_patterns {
        if touch && !found.is_empty() {
            let touched = async {
                let mut tx = OrgTx::owner(&state.pool, &state.cache, state.org.id, state.epoch).await?;
                customers::touch_patterns(&mut tx, state.customer.id, cutoff, now).await?;
                tx.commit().await?;
                Ok::<_, Error>(())
            }
            .await;
            if let Err(e) = touched {
                tracing::warn!(customer = %state.customer.id, error = %e, "patterns not marked as detected again; the next sweep retries");
            }
        }
        return;
    }
    let stored = async {
        let mut tx = OrgTx::owner(&state.pool, &state.cache, state.org.id, state.epoch).await?;
        customers::replace_patterns(&mut tx, state.customer.id, &found).await?;
        tx.commit().await?;
        Ok::<_, Error>(())
    }
    .await;
    match stored {
        Ok(()) => {
            state.last_patterns = signature;
            let list: Vec<serde_json::Value> = found
                .iter()
                .map(|p| {
                    serde_json::json!({"patternType": p.kind.as_str(), "confidence": p.confidence,
                    "frequency": p.frequency, "description": p.description})
                })
                .collect();
            let data = serde_json::json!({"customerId": state.customer.id, "patterns": list});
            let draft = EventDraft {
                kind: "pattern.detected".to_owned(),
                data: data.to_string(),
            };
            let _ = state.org_ref.send_message(Publish(Wire::new(draft)));
        }
        Err(e) => {
            tracing::warn!(customer = %state.customer.id, error = %e, "patterns not stored; next detection retries")
        }
    }
}

/// Stores one interaction through the node's group committer: the row and the customer's counters, or
/// neither, answered after the commit that contains them.
async fn ingest(state: &CustomerActorState, new: NewInteraction) -> IngestReply {
    let enrichment = Enrichment {
        organization: state.org.clone(),
        segment: state.customer.segment.clone(),
        device: new.device.clone(),
        geo: new.geo.clone(),
    };
    let stored = state
        .commits
        .insert(state.org.id, state.epoch, new, enrichment)
        .await;
    stored.map_err(|e| match e {
        Error::Unavailable(_) => IngestFailure::Unavailable,
        Error::OwnedElsewhere => IngestFailure::NotOwner,
        other => {
            tracing::error!(customer = %state.customer.id, error = ?other, "interaction not stored; transaction rolled back");
            IngestFailure::Internal(other.to_string())
        }
    })
}
