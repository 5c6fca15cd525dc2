//! One actor per organization: routes ingestion to its customers' actors (starting them on first use and
//! passivating idle ones), numbers the organization's events and keeps the last ones for replay, and
//! supervises its customers: one customer's crash never takes the organization down.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort, SupervisionEvent};
use ractor_cluster::RactorMessage;
use sqlx::PgPool;
use tokio::time::Instant;

use super::customer::{CustomerActor, CustomerArgs, CustomerMsg, Publish};
use super::fanout::Fanout;
use super::scorer::Scorer;
use crate::config::IngestConfig;
use crate::domain::enrichment::OrgContext;
use crate::domain::event::{EventDraft, EventsAfter, HandOff, OrgEvent};
use crate::domain::interaction::{
    IngestFailure, IngestReply, InteractionRecord, InteractionView, NewInteraction, ScoredInteraction,
};
use crate::domain::{CustomerId, OrganizationId, Wire};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::store::cache::Cache;
use crate::store::customers;
use crate::store::group_commit::GroupCommit;

/// How long a hand-off waits for the customers' actors to finish their writes.
const HANDOFF_DRAIN: Duration = Duration::from_secs(5);

/// The organization actor (stateless struct; see [`OrgState`]).
pub struct OrgActor;

/// What an organization actor starts from.
pub struct OrgArgs {
    pub org: OrgContext,
    pub pool: PgPool,
    pub config: IngestConfig,
    pub scorer: Scorer,
    pub cache: Cache,
    pub metrics: Metrics,
    pub fault_injection: bool,
    /// The lease epoch this node acquired the organization at (the fencing token of its writes).
    pub epoch: i64,
    /// This node's sessions, which receive the events.
    pub fanout: Fanout,
    /// The numbering and replay buffer of the previous owner, when the organization was handed over.
    pub handoff: Option<HandOff>,
    /// The node's group committer, which the customers' actors store their interactions through.
    pub commits: GroupCommit,
}

struct LiveCustomer {
    actor: ActorRef<CustomerMsg>,
    last_used: Instant,
}

/// The live state of an organization actor.
pub struct OrgState {
    org: OrgContext,
    pool: PgPool,
    config: IngestConfig,
    scorer: Scorer,
    cache: Cache,
    metrics: Metrics,
    fault_injection: bool,
    customers: HashMap<CustomerId, LiveCustomer>,
    /// The newest number handed out (or, before the first event, where this actor's numbering starts).
    seq: u64,
    /// The number this actor last gave an event: the next event's `prev`. It starts at the reservation
    /// boundary, above anything an earlier owner handed out, so the first event of a new owner always
    /// shows a session that something may lie between.
    last: u64,
    /// The highest number reserved in PostgreSQL (`organizations.event_seq_reserved`).
    reserved: u64,
    ring: VecDeque<OrgEvent>,
    epoch: i64,
    fanout: Fanout,
    handoff: Option<HandOff>,
    /// Set while the organization is handed to another node: new requests are answered "not the
    /// owner" (their senders re-route to the new owner).
    moving: bool,
    /// The insight alerts firing for the organization, by fingerprint (loaded when the actor starts, so
    /// a new owner resolves what an earlier one raised).
    insights_firing: HashMap<String, crate::domain::alert::Alert>,
    /// An evaluation is reading the rollups (one at a time).
    insights_running: bool,
    commits: GroupCommit,
    /// Scores waiting for the write in flight to end.
    scores_pending: Vec<ScoredInteraction>,
    /// A score write is in flight (one at a time per organization, so scoring holds at most one
    /// connection of the pool per organization).
    scores_writing: bool,
}

/// Messages to an organization actor.
// As for CustomerMsg: Ingest dominates the traffic, so it is not boxed.
#[allow(clippy::large_enum_variant)]
#[derive(RactorMessage)]
pub enum OrgMsg {
    /// Routes an interaction to its customer's actor, which answers the caller directly.
    /// The request id, if any, names the request in the customer actor's log events.
    Ingest(
        Wire<NewInteraction>,
        Option<String>,
        RpcReplyPort<Wire<IngestReply>>,
    ),
    /// Numbers an event and keeps it for replay (sent by the customers' actors).
    Publish(Wire<EventDraft>),
    /// The model scored some of the organization's interactions: stored together in one transaction, in a
    /// task of its own that answers with `ScoresStored`; scores that arrive while one is being written
    /// wait and go together in the next.
    Scored(Wire<Vec<ScoredInteraction>>),
    /// A score write ended: the rows it stored and their customers' new averages (none when it failed),
    /// to publish and hand to the live customers' actors.
    ScoresStored(Vec<InteractionRecord>, HashMap<CustomerId, Option<f64>>),
    /// A batch committed these rows: publish them and hand them to the live customers' actors.
    BatchStored(Wire<Vec<InteractionRecord>>),
    /// A customer's row changed (by id); its live actor re-reads it.
    CustomerChanged(String),
    /// Returns the buffered events after a sequence number.
    EventsAfter(u64, RpcReplyPort<Wire<EventsAfter>>),
    /// Returns how many customer actors are live.
    LiveCustomers(RpcReplyPort<u64>),
    /// Makes a live customer's actor panic (fault injection, crash tests).
    InjectCustomerPanic(String),
    /// Stops customer actors idle for longer than the passivation period.
    PassivateIdle,
    /// Has the customers whose stored patterns are older than `pattern_max_age` detect them again.
    SweepPatterns,
    /// Looks for sentiment drops and negative spikes in the organization's data (insight alerts): the
    /// reading and detecting run in a task of their own, which answers with `InsightsFound`.
    EvaluateInsights,
    /// The conditions an evaluation found (`None`: it could not read, so nothing changes), and when it
    /// began: recorded, published and resolved here.
    InsightsFound(Option<Vec<crate::domain::insight::InsightCondition>>, Instant),
    /// Hands the organization over: stops its customers' actors (each finishes the write it is in),
    /// publishes what they published meanwhile, then answers with its numbering and replay buffer and
    /// stops. Requests that arrive meanwhile are answered "not the owner".
    HandOff(RpcReplyPort<Wire<HandOff>>),
    /// The second step of a hand-off, queued behind the customers' last events.
    HandOffDone(RpcReplyPort<Wire<HandOff>>),
}

/// The customers' actors hold a `DerivedActorRef<Publish>` of their organization: they can publish
/// events and nothing else, and their module does not depend on this one.
impl From<Publish> for OrgMsg {
    fn from(p: Publish) -> Self {
        OrgMsg::Publish(p.0)
    }
}

impl TryFrom<OrgMsg> for Publish {
    type Error = OrgMsg;

    fn try_from(msg: OrgMsg) -> Result<Self, OrgMsg> {
        match msg {
            OrgMsg::Publish(draft) => Ok(Publish(draft)),
            other => Err(other),
        }
    }
}

impl Actor for OrgActor {
    type Msg = OrgMsg;
    type State = OrgState;
    type Arguments = OrgArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<OrgMsg>,
        args: OrgArgs,
    ) -> Result<OrgState, ActorProcessingErr> {
        // Check for idle customers a few times per passivation period.
        let period = (args.config.passivate_after / 4).max(Duration::from_millis(20));
        myself.send_interval(period, || OrgMsg::PassivateIdle);
        myself.send_interval(args.config.pattern_sweep_interval, || OrgMsg::SweepPatterns);
        myself.send_interval(args.config.insight_eval_interval, || OrgMsg::EvaluateInsights);
        args.metrics.live_actors.with_label_values(&["org"]).inc();
        Ok(OrgState {
            ring: VecDeque::with_capacity(args.config.event_buffer),
            org: args.org,
            pool: args.pool,
            config: args.config,
            scorer: args.scorer,
            cache: args.cache,
            metrics: args.metrics,
            fault_injection: args.fault_injection,
            epoch: args.epoch,
            fanout: args.fanout,
            handoff: args.handoff,
            moving: false,
            insights_firing: HashMap::new(),
            insights_running: false,
            commits: args.commits,
            scores_pending: Vec::new(),
            scores_writing: false,
            customers: HashMap::new(),
            seq: 0,
            last: 0,
            reserved: 0,
        })
    }

    /// Reserves the first block of event numbers. It runs after the actor is registered but before it
    /// handles any message, so starting an organization never holds up the supervisor on PostgreSQL,
    /// and nothing is numbered before the reservation.
    async fn post_start(
        &self,
        _myself: ActorRef<OrgMsg>,
        state: &mut OrgState,
    ) -> Result<(), ActorProcessingErr> {
        match crate::store::alerts::firing_of_org(&state.pool, state.org.id).await {
            Ok(firing) => state.insights_firing = firing.into_iter().collect(),
            Err(e) => {
                tracing::warn!(org = %state.org.id, error = %e, "cannot read the organization's firing alerts")
            }
        }
        if let Some(h) = state.handoff.take() {
            // Handed over: numbering continues right after the previous owner's last event, within the
            // block it reserved (it has stopped, and its writes are fenced).
            state.seq = h.seq;
            state.last = h.last;
            state.reserved = h.reserved.max(h.seq);
            state.ring = h.ring.into();
            tracing::info!(org = %state.org.id, seq = state.seq, buffered = state.ring.len(), "organization actor started from a hand-off");
            return Ok(());
        }
        // Numbering continues above everything an earlier actor of this organization may have handed out.
        let block = state.config.event_seq_block;
        let seq = reserve_seq(&state.pool, state.org.id, block, state.epoch).await?;
        state.seq = seq;
        state.last = seq;
        state.reserved = seq + block;
        tracing::debug!(org = %state.org.id, seq, "organization actor started");
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<OrgMsg>,
        state: &mut OrgState,
    ) -> Result<(), ActorProcessingErr> {
        state.metrics.live_actors.with_label_values(&["org"]).dec();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<OrgMsg>,
        msg: OrgMsg,
        state: &mut OrgState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            OrgMsg::Ingest(wire, request_id, reply) => {
                route_ingest(&myself, state, wire, request_id, reply).await
            }
            OrgMsg::Publish(Wire(Ok(draft))) => publish(state, draft).await,
            OrgMsg::Scored(Wire(Ok(scored))) => {
                state.scores_pending.extend(scored);
                write_scores(&myself, state);
            }
            OrgMsg::ScoresStored(records, averages) => {
                state.scores_writing = false;
                scores_stored(state, records, averages).await;
                write_scores(&myself, state);
            }
            OrgMsg::Scored(Wire(Err(e))) => {
                tracing::error!(org = %state.org.id, error = e, "undecodable scores dropped")
            }
            OrgMsg::Publish(Wire(Err(e))) => {
                tracing::error!(org = %state.org.id, error = e, "undecodable event dropped")
            }
            OrgMsg::BatchStored(Wire(Ok(records))) => {
                let mut touched: HashMap<CustomerId, Vec<InteractionRecord>> = HashMap::new();
                for record in records {
                    if state.customers.contains_key(&record.customer_id) {
                        touched
                            .entry(record.customer_id)
                            .or_default()
                            .push(record.clone());
                    }
                    let data = serde_json::to_string(&InteractionView::from(record)).unwrap_or_default();
                    publish(
                        state,
                        EventDraft {
                            kind: "interaction.created".to_owned(),
                            data,
                        },
                    )
                    .await;
                }
                // The live customers' actors take the rows as they are, without reading anything back.
                for (id, rows) in touched {
                    if let Some(live) = state.customers.get(&id) {
                        let _ = live.actor.cast(CustomerMsg::Appended(rows));
                    }
                }
            }
            OrgMsg::BatchStored(Wire(Err(e))) => {
                tracing::error!(org = %state.org.id, error = e, "undecodable batch notice dropped")
            }
            OrgMsg::CustomerChanged(id) => {
                if let Some(live) = CustomerId::parse(&id)
                    .ok()
                    .and_then(|id| state.customers.get(&id))
                {
                    let _ = live.actor.cast(CustomerMsg::Refresh);
                }
            }
            OrgMsg::EventsAfter(after, reply) => {
                let _ = reply.send(Wire::new(events_after(state, after)));
            }
            OrgMsg::LiveCustomers(reply) => {
                let _ = reply.send(state.customers.len() as u64);
            }
            OrgMsg::InjectCustomerPanic(id) => {
                if !state.fault_injection {
                    tracing::warn!(org = %state.org.id, "fault injection requested but disabled; ignored");
                } else if let Some(live) = CustomerId::parse(&id)
                    .ok()
                    .and_then(|id| state.customers.get(&id))
                {
                    let _ = live.actor.cast(CustomerMsg::InjectPanic);
                }
            }
            OrgMsg::PassivateIdle => passivate_idle(state),
            OrgMsg::SweepPatterns => sweep_patterns(&myself, state).await,
            OrgMsg::EvaluateInsights => evaluate_insights(&myself, state),
            OrgMsg::InsightsFound(found, started) => {
                state.insights_running = false;
                if let Some(conditions) = found {
                    record_insights(state, conditions, started).await;
                }
            }
            OrgMsg::HandOff(reply) => {
                state.moving = true;
                myself
                    .stop_children_and_wait(Some("handed off".to_owned()), Some(HANDOFF_DRAIN))
                    .await;
                // Behind the events the customers published before they stopped.
                let _ = myself.cast(OrgMsg::HandOffDone(reply));
            }
            OrgMsg::HandOffDone(reply) => {
                let _ = reply.send(Wire::new(HandOff {
                    seq: state.seq,
                    last: state.last,
                    reserved: state.reserved,
                    ring: state.ring.iter().cloned().collect(),
                }));
                tracing::info!(org = %state.org.id, seq = state.seq, "organization handed off");
                myself.stop(Some("handed off".to_owned()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<OrgMsg>,
        event: SupervisionEvent,
        state: &mut OrgState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, reason) => {
                if let Some(id) = forget(state, cell.get_id()) {
                    state.metrics.actor_restarts.with_label_values(&["org"]).inc();
                    tracing::error!(org = %state.org.id, customer = %id, error = ?reason,
                        "customer actor failed; it restarts on its next message from PostgreSQL");
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                forget(state, cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}

/// Removes the customer whose actor has this id; returns which customer it was.
fn forget(state: &mut OrgState, actor: ractor::ActorId) -> Option<CustomerId> {
    let id = state
        .customers
        .iter()
        .find(|(_, live)| live.actor.get_id() == actor)
        .map(|(id, _)| *id)?;
    state.customers.remove(&id);
    state.metrics.live_actors.with_label_values(&["customer"]).dec();
    Some(id)
}

async fn route_ingest(
    myself: &ActorRef<OrgMsg>,
    state: &mut OrgState,
    wire: Wire<NewInteraction>,
    request_id: Option<String>,
    reply: RpcReplyPort<Wire<IngestReply>>,
) {
    if state.moving {
        let _ = reply.send(Wire::new(Err(IngestFailure::NotOwner)));
        return;
    }
    let customer_id = match &wire.0 {
        Ok(new) => new.customer_id,
        Err(e) => {
            let _ = reply.send(Wire::new(Err(IngestFailure::Internal(e.clone()))));
            return;
        }
    };
    let mut msg = CustomerMsg::Ingest(wire, request_id, reply);
    // Two tries: a customer actor that died since it was last used is replaced once.
    for _ in 0..2 {
        let actor = match customer_actor(myself, state, customer_id).await {
            Ok(Some(actor)) => actor,
            other => {
                let failure = match other {
                    Err(Error::Unavailable(_)) => IngestFailure::Unavailable,
                    Err(e) => IngestFailure::Internal(e.to_string()),
                    Ok(_) => IngestFailure::CustomerNotFound,
                };
                if let CustomerMsg::Ingest(_, _, reply) = msg {
                    let _ = reply.send(Wire::new(Err(failure)));
                }
                return;
            }
        };
        match actor.cast(msg) {
            Ok(()) => return,
            Err(MessagingErr::SendErr(back)) => {
                forget(state, actor.get_id());
                msg = back;
            }
            Err(_) => return,
        }
    }
}

/// Returns the customer's live actor, starting it from its row on first use; `None` if no such customer.
///
/// The row is read inside the organization actor's handler: the organization waits for that one query
/// (about a millisecond) on a customer's first message only, and routing stays strictly ordered.
async fn customer_actor(
    myself: &ActorRef<OrgMsg>,
    state: &mut OrgState,
    id: CustomerId,
) -> Result<Option<ActorRef<CustomerMsg>>, Error> {
    if let Some(live) = state.customers.get_mut(&id) {
        live.last_used = Instant::now();
        return Ok(Some(live.actor.clone()));
    }
    let Some(customer) = customers::load_state(&state.pool, state.org.id, id).await? else {
        return Ok(None);
    };
    let args = CustomerArgs {
        pattern_debounce: state.config.pattern_debounce,
        org: state.org.clone(),
        customer,
        pool: state.pool.clone(),
        org_ref: myself.get_derived(),
        scorer: state.scorer.clone(),
        cache: state.cache.clone(),
        fault_injection: state.fault_injection,
        epoch: state.epoch,
        commits: state.commits.clone(),
    };
    let (actor, _) = Actor::spawn_linked(None, CustomerActor, args, myself.get_cell())
        .await
        .map_err(|e| Error::internal(anyhow::anyhow!("cannot start customer actor: {e}")))?;
    state.metrics.live_actors.with_label_values(&["customer"]).inc();
    state.customers.insert(
        id,
        LiveCustomer {
            actor: actor.clone(),
            last_used: Instant::now(),
        },
    );
    Ok(Some(actor))
}

/// Reserves the next `block` event numbers, fenced by the lease `epoch`: only the owner numbers events.
async fn reserve_seq(pool: &PgPool, org: OrganizationId, block: u64, epoch: i64) -> Result<u64, Error> {
    let block = i64::try_from(block).unwrap_or(i64::MAX);
    let mut tx = pool.begin().await?;
    crate::store::leases::fence(&mut tx, org, epoch).await?;
    let start = sqlx::query_scalar!(
        "UPDATE organizations SET event_seq_reserved = event_seq_reserved + $2 WHERE id = $1
         RETURNING event_seq_reserved - $2",
        org.as_uuid(),
        block
    )
    .fetch_optional(&mut *tx)
    .await?
    .flatten()
    .ok_or(Error::NotFound("organization"))?;
    tx.commit().await?;
    Ok(u64::try_from(start).unwrap_or(0))
}

async fn publish(state: &mut OrgState, draft: EventDraft) {
    if state.seq >= state.reserved {
        match reserve_seq(
            &state.pool,
            state.org.id,
            state.config.event_seq_block,
            state.epoch,
        )
        .await
        {
            Ok(start) => {
                // Another actor of this organization (a previous life of this one) may have reserved
                // meanwhile: never go back below what is already handed out.
                state.seq = state.seq.max(start);
                state.reserved = state.seq + state.config.event_seq_block;
            }
            // Another node owns the organization now: only its owner numbers and publishes events.
            Err(Error::OwnedElsewhere) => {
                tracing::warn!(org = %state.org.id, kind = %draft.kind, "event not published: this node lost the organization");
                return;
            }
            Err(e) => tracing::error!(
                org = %state.org.id,
                error = %e,
                "cannot reserve event numbers; numbering continues unreserved and a restart may reuse them"
            ),
        }
    }
    state.seq += 1;
    state
        .metrics
        .events_published
        .with_label_values(&[draft.kind.as_str()])
        .inc();
    let event = OrgEvent {
        seq: state.seq,
        prev: state.last,
        kind: draft.kind,
        data: draft.data,
        at: Utc::now(),
    };
    state.last = state.seq;
    state.fanout.publish(state.org.id, &event);
    state.ring.push_back(event);
    while state.ring.len() > state.config.event_buffer {
        state.ring.pop_front();
    }
}

fn events_after(state: &OrgState, after: u64) -> EventsAfter {
    let oldest = state.ring.front().map_or(state.seq + 1, |e| e.seq);
    EventsAfter {
        events: state.ring.iter().filter(|e| e.seq > after).cloned().collect(),
        // A number beyond the newest is from before a restart (or made up): only a resync is right.
        complete: after <= state.seq && (after.saturating_add(1) >= oldest || after == state.seq),
        last_seq: state.seq,
    }
}

/// Looks for sentiment drops and negative spikes (issue 18) with the organization's rules over its hourly
/// rollups. The reads run off the actor, so its mailbox (the organization's ingests) never waits on them;
/// what they find comes back as `InsightsFound`.
fn evaluate_insights(myself: &ActorRef<OrgMsg>, state: &mut OrgState) {
    use crate::store::insight;
    if state.moving || state.insights_running {
        return;
    }
    state.insights_running = true;
    let (pool, org, myself) = (state.pool.clone(), state.org.id, myself.clone());
    tokio::spawn(async move {
        let started = Instant::now();
        let found = async {
            let rules = insight::rules(&pool, org).await?;
            if !rules.enabled {
                return Ok(Vec::new());
            }
            let now = chrono::Utc::now();
            let since = now
                - chrono::Duration::minutes(i64::from(rules.window_minutes))
                - chrono::Duration::days(i64::from(rules.baseline_days))
                - chrono::Duration::hours(1);
            let dimensions = insight::hourly_dimensions(&pool, org, since).await?;
            Ok::<_, Error>(crate::domain::insight::detect(&dimensions, now, &rules))
        }
        .await;
        let found = found
            .map_err(|e| tracing::warn!(org = %org, error = %e, "cannot read the rules or rollups for insight alerts; the next evaluation retries"))
            .ok();
        let _ = myself.cast(OrgMsg::InsightsFound(found, started));
    });
}

/// Records, publishes (`alert`, numbered like every event of the organization, to all its users) and
/// resolves what an evaluation found: one alert per condition while it lasts.
async fn record_insights(
    state: &mut OrgState,
    conditions: Vec<crate::domain::insight::InsightCondition>,
    started: Instant,
) {
    use crate::domain::alert::{AlertKind, Severity};
    use crate::store::alerts;
    // Handed off meanwhile: the new owner evaluates from now on.
    if state.moving {
        return;
    }
    let org_key = state.org.id.to_string();
    let holding: HashMap<String, &crate::domain::insight::InsightCondition> =
        conditions.iter().map(|c| (c.fingerprint(&org_key), c)).collect();
    let mut changed = Vec::new();
    for (fingerprint, c) in &holding {
        if state.insights_firing.contains_key(fingerprint) {
            continue;
        }
        let fired = alerts::fire(
            &state.pool,
            &alerts::NewAlert {
                organization_id: Some(state.org.id),
                kind: AlertKind::Insight,
                rule: c.rule,
                severity: Severity::Warning,
                fingerprint,
                summary: &c.summary,
                details: &c.details,
                node: None,
            },
        )
        .await;
        match fired {
            Ok((alert, new)) => {
                if new {
                    tracing::info!(org = %state.org.id, rule = c.rule, dimension = %c.dimension.key(), summary = %c.summary, "insight alert");
                    changed.push(alert.clone());
                }
                state.insights_firing.insert(fingerprint.clone(), alert);
            }
            Err(e) => {
                tracing::warn!(org = %state.org.id, error = %e, "cannot record an insight alert; the next evaluation retries")
            }
        }
    }
    let ended: Vec<String> = state
        .insights_firing
        .keys()
        .filter(|f| !holding.contains_key(*f))
        .cloned()
        .collect();
    for fingerprint in ended {
        match alerts::resolve(&state.pool, &fingerprint).await {
            Ok(resolved) => {
                state.insights_firing.remove(&fingerprint);
                if let Some(alert) = resolved {
                    changed.push(alert);
                }
            }
            Err(e) => {
                tracing::warn!(org = %state.org.id, error = %e, "cannot resolve an insight alert; the next evaluation retries")
            }
        }
    }
    for alert in changed {
        if let Ok(data) = serde_json::to_string(&alert) {
            publish(
                state,
                EventDraft {
                    kind: "alert".to_owned(),
                    data,
                },
            )
            .await;
        }
    }
    state
        .metrics
        .insight_evaluation
        .observe(started.elapsed().as_secs_f64());
}

/// Re-evaluates the stored patterns older than the age (R4.1–4.2), oldest first, a batch at a time: a
/// customer who stopped coming loses the patterns that no longer hold even though nothing new arrives.
async fn sweep_patterns(myself: &ActorRef<OrgMsg>, state: &mut OrgState) {
    if state.moving {
        return;
    }
    let Ok(age) = chrono::Duration::from_std(state.config.pattern_max_age) else {
        return;
    };
    let stale = match customers::stale_pattern_customers(
        &state.pool,
        state.org.id,
        chrono::Utc::now() - age,
        state.config.pattern_sweep_batch,
    )
    .await
    {
        Ok(stale) => stale,
        Err(e) => {
            tracing::warn!(org = %state.org.id, error = %e, "cannot look for stale patterns; the next sweep retries");
            return;
        }
    };
    for id in stale {
        match customer_actor(myself, state, id).await {
            Ok(Some(actor)) => {
                let _ = actor.cast(CustomerMsg::Reevaluate);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(org = %state.org.id, customer = %id, error = %e, "cannot re-evaluate patterns; the next sweep retries");
                return;
            }
        }
    }
}

fn passivate_idle(state: &mut OrgState) {
    let idle: Vec<CustomerId> = state
        .customers
        .iter()
        .filter(|(_, live)| live.last_used.elapsed() >= state.config.passivate_after)
        .map(|(id, _)| *id)
        .collect();
    for id in idle {
        if let Some(live) = state.customers.remove(&id) {
            state.metrics.live_actors.with_label_values(&["customer"]).dec();
            // Drain, not stop: messages already queued are handled before the actor ends.
            let _ = live.actor.drain();
            tracing::debug!(org = %state.org.id, customer = %id, "customer actor passivated");
        }
    }
}

/// Most scores stored in one transaction.
const SCORES_PER_WRITE: usize = 500;

/// Stores the waiting scores in one transaction (fenced like every write of the owner), in a task, so the
/// mailbox of ingests does not wait on it; one write at a time, and what arrives meanwhile goes in the
/// next. A failure leaves the rows unscored, and the scoring sweep scores them again.
fn write_scores(myself: &ActorRef<OrgMsg>, state: &mut OrgState) {
    if state.moving {
        // The new owner's sweep scores whatever was not stored.
        state.scores_pending.clear();
        return;
    }
    if state.scores_writing || state.scores_pending.is_empty() {
        return;
    }
    let take = state.scores_pending.len().min(SCORES_PER_WRITE);
    let scored: Vec<ScoredInteraction> = state.scores_pending.drain(..take).collect();
    state.scores_writing = true;
    let (pool, cache, org, epoch, myself) = (
        state.pool.clone(),
        state.cache.clone(),
        state.org.id,
        state.epoch,
        myself.clone(),
    );
    let metrics = state.metrics.clone();
    tokio::spawn(async move {
        metrics
            .ingest_group_size
            .with_label_values(&["scores"])
            .observe(scored.len() as f64);
        let stored = async {
            let mut tx = crate::store::org_tx::OrgTx::owner(&pool, &cache, org, epoch).await?;
            // Scores can always be computed again: if a crash loses this commit, the rows are still
            // unscored (processed_at is NULL) and the sweep scores them again. So the commit need not wait
            // for its WAL flush; only acknowledged interactions must survive a crash.
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await?;
            let stored = crate::store::scores::apply_many(&mut tx, &scored).await?;
            tx.commit().await?;
            Ok::<_, Error>(stored)
        }
        .await;
        let (records, averages) = stored.unwrap_or_else(|e| {
            tracing::warn!(org = %org, rows = scored.len(), error = %e, "scores not stored; the sweep scores these rows again");
            Default::default()
        });
        let _ = myself.cast(OrgMsg::ScoresStored(records, averages));
    });
}

/// Publishes `sentiment.scored` for each stored score and hands the score and the customer's new average
/// to its live actor (the pattern window uses the scores).
async fn scores_stored(
    state: &mut OrgState,
    records: Vec<InteractionRecord>,
    averages: HashMap<CustomerId, Option<f64>>,
) {
    for record in records {
        let average = averages.get(&record.customer_id).copied().flatten();
        if let (Some(live), Some(score)) = (state.customers.get(&record.customer_id), record.sentiment_score)
        {
            let _ = live.actor.cast(CustomerMsg::Scored {
                interaction: record.id,
                score,
                average_sentiment: average,
            });
        }
        let view = InteractionView::from(record);
        let data = serde_json::json!({
            "interactionId": view.id,
            "customerId": view.customer_id,
            "sentiment": view.sentiment,
            "processedAt": view.processed_at,
            "averageSentiment": average,
        });
        publish(
            state,
            EventDraft {
                kind: "sentiment.scored".to_owned(),
                data: data.to_string(),
            },
        )
        .await;
    }
}
