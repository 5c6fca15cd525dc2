//! The hand-off from ingestion to scoring: a stored interaction with text is queued for the scoring
//! pipeline (`actors::scoring`). The queue is bounded; when it is full the row simply stays unscored and
//! the pipeline's sweep picks it up.

use tokio::sync::mpsc;

use crate::domain::interaction::{InteractionRecord, PendingScore};
use crate::metrics::Metrics;

/// Where stored interactions go to be scored.
#[derive(Clone)]
pub struct Scorer {
    queue: Option<mpsc::Sender<PendingScore>>,
    metrics: Metrics,
}

/// The receiving end of the scoring queue.
pub struct ScoringQueue(pub(super) mpsc::Receiver<PendingScore>);

impl Scorer {
    /// A scorer feeding a queue of `capacity` for the pipeline.
    pub fn with_queue(metrics: Metrics, capacity: usize) -> (Self, ScoringQueue) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Self {
                queue: Some(tx),
                metrics,
            },
            ScoringQueue(rx),
        )
    }

    /// A scorer for a node without the model: rows stay unscored until a node with the model sweeps them.
    pub fn without_model(metrics: Metrics) -> Self {
        Self { queue: None, metrics }
    }

    /// The queue's sending end, for the sweep.
    pub fn feed(&self) -> Option<mpsc::Sender<PendingScore>> {
        self.queue.clone()
    }

    /// Hands a stored interaction on for scoring. Rows without text have nothing to score.
    pub fn hand_off(&self, record: &InteractionRecord) {
        let Some(content) = &record.content else {
            return;
        };
        self.metrics.scoring_handoffs.inc();
        let Some(queue) = &self.queue else {
            return;
        };
        let pending = PendingScore {
            organization_id: record.organization_id,
            interaction_id: record.id,
            customer_id: record.customer_id,
            content: content.clone(),
        };
        tracing::debug!(interaction = %record.id, "queued for scoring");
        if queue.try_send(pending).is_err() {
            // Full (or shutting down): the periodic sweep picks the row up.
            self.metrics.scoring_deferred.inc();
        }
    }
}
