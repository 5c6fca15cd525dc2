//! One actor per live customer: stores its interactions (one transaction each, R2.4–2.6), keeps its
//! counters in memory, and tells its organization what happened. Its state is a cache of PostgreSQL,
//! rebuilt whenever the actor starts, so a crash or a passivation loses nothing acknowledged.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use sqlx::PgPool;

use super::org::OrgMsg;
use crate::domain::Wire;
use crate::domain::customer::CustomerState;
use crate::domain::enrichment::{Enrichment, OrgContext};
use crate::domain::event::EventDraft;
use crate::domain::interaction::{
    IngestFailure, IngestOutcome, IngestReply, InteractionView, NewInteraction, ScoredInteraction,
};
use crate::error::Error;
use crate::ml::Scorer;
use crate::store::{customers, interactions};

/// The customer actor (stateless struct; see [`CustomerActorState`]).
pub struct CustomerActor;

/// What a customer actor starts from.
pub struct CustomerArgs {
    pub org: OrgContext,
    pub customer: CustomerState,
    pub pool: PgPool,
    pub org_ref: ActorRef<OrgMsg>,
    pub scorer: Scorer,
    pub fault_injection: bool,
}

/// The live state of a customer actor.
pub struct CustomerActorState {
    org: OrgContext,
    customer: CustomerState,
    pool: PgPool,
    org_ref: ActorRef<OrgMsg>,
    scorer: Scorer,
    fault_injection: bool,
}

/// Messages to a customer actor.
// Ingest is the common message and moves once through the mailbox; boxing it would add an allocation to
// every interaction to shrink the rare ones.
#[allow(clippy::large_enum_variant)]
#[derive(RactorClusterMessage)]
pub enum CustomerMsg {
    /// Stores one interaction and answers with the stored row.
    #[rpc]
    Ingest(Wire<NewInteraction>, RpcReplyPort<Wire<IngestReply>>),
    /// Stores the model's scores on one of the customer's interactions and updates the average.
    ApplyScores(Wire<ScoredInteraction>),
    /// Re-reads the customer's row (after a PATCH or a batch wrote to it).
    Refresh,
    /// Returns what the actor holds.
    #[rpc]
    Snapshot(RpcReplyPort<Wire<CustomerState>>),
    /// Panics, when fault injection is enabled (crash tests); ignored otherwise.
    InjectPanic,
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
        Ok(CustomerActorState {
            org: args.org,
            customer: args.customer,
            pool: args.pool,
            org_ref: args.org_ref,
            scorer: args.scorer,
            fault_injection: args.fault_injection,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<CustomerMsg>,
        msg: CustomerMsg,
        state: &mut CustomerActorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CustomerMsg::Ingest(Wire(new), reply) => {
                let result = match new {
                    Ok(new) => ingest(state, &new).await,
                    Err(e) => Err(IngestFailure::Internal(e)),
                };
                if let Ok(IngestOutcome::Created(record)) = &result {
                    state.customer.interaction_count += 1;
                    state.customer.last_seen_at = state.customer.last_seen_at.max(Some(record.occurred_at));
                }
                // The client is answered first; publishing and the scoring hand-off follow the commit.
                let _ = reply.send(Wire::new(result.clone()));
                if let Ok(IngestOutcome::Created(record)) = result {
                    state.scorer.hand_off(&record);
                    let data = serde_json::to_string(&InteractionView::from(record)).unwrap_or_default();
                    let draft = EventDraft {
                        kind: "interaction.created".to_owned(),
                        data,
                    };
                    let _ = state.org_ref.cast(OrgMsg::Publish(Wire::new(draft)));
                }
            }
            CustomerMsg::ApplyScores(Wire(Ok(scored))) => apply_scores(state, &scored).await,
            CustomerMsg::ApplyScores(Wire(Err(e))) => {
                tracing::error!(customer = %state.customer.id, error = e, "undecodable scores dropped; the sweep retries them");
            }
            CustomerMsg::Refresh => {
                match customers::load_state(&state.pool, state.org.id, state.customer.id).await {
                    Ok(Some(fresh)) => state.customer = fresh,
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

/// Stores scores and the new average in one transaction, then announces `sentiment.scored`. On failure
/// the row stays unscored and the pipeline's sweep scores it again later.
async fn apply_scores(state: &mut CustomerActorState, scored: &ScoredInteraction) {
    let result = async {
        let mut tx = state.pool.begin().await?;
        let updated = interactions::apply_scores(&mut tx, state.org.id, scored).await?;
        let average = customers::load_state(&mut *tx, state.org.id, state.customer.id).await?;
        tx.commit().await?;
        Ok::<_, Error>((updated, average))
    }
    .await;
    match result {
        Ok((Some(record), average)) => {
            if let Some(fresh) = average {
                state.customer = fresh;
            }
            let view = InteractionView::from(record);
            let data = serde_json::json!({
                "interactionId": view.id,
                "customerId": view.customer_id,
                "sentiment": view.sentiment,
                "processedAt": view.processed_at,
                "averageSentiment": state.customer.average_sentiment,
            });
            let draft = EventDraft {
                kind: "sentiment.scored".to_owned(),
                data: data.to_string(),
            };
            let _ = state.org_ref.cast(OrgMsg::Publish(Wire::new(draft)));
        }
        Ok((None, _)) => {}
        Err(e) => {
            tracing::warn!(customer = %state.customer.id, interaction = %scored.interaction_id, error = %e, "scores not stored; will retry")
        }
    }
}

/// Stores one interaction in its own transaction: the row and the customer's counters, or neither.
async fn ingest(state: &CustomerActorState, new: &NewInteraction) -> IngestReply {
    let enrichment = Enrichment {
        organization: state.org.clone(),
        segment: state.customer.segment.clone(),
        device: new.device.clone(),
        geo: new.geo.clone(),
    };
    let stored = async {
        let mut tx = state.pool.begin().await?;
        let outcome = interactions::insert(&mut tx, state.org.id, new, &enrichment).await?;
        tx.commit().await?;
        Ok::<_, Error>(outcome)
    }
    .await;
    stored.map_err(|e| match e {
        Error::Unavailable(_) => IngestFailure::Unavailable,
        other => {
            tracing::error!(customer = %state.customer.id, error = ?other, "interaction not stored; transaction rolled back");
            IngestFailure::Internal(other.to_string())
        }
    })
}
