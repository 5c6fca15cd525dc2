//! Machine learning: text preprocessing, the ONNX sentiment session and behaviour-pattern detection.
//!
//! Today this holds the hand-off point between ingestion and scoring: every stored interaction with text
//! is handed to [`Scorer::hand_off`]. Until the model is connected, the hand-off counts the interaction
//! (`insights_scoring_handoffs_total`) and leaves it with `processed_at` NULL; the partial index
//! `customer_interactions_unprocessed_idx` is how the scorer will find every such row when it starts.

use crate::domain::interaction::InteractionRecord;
use crate::metrics::Metrics;

/// Where stored interactions go to be scored.
#[derive(Clone)]
pub struct Scorer {
    metrics: Metrics,
}

impl Scorer {
    /// Builds the hand-off.
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }

    /// Hands a stored interaction on for scoring. Rows without text have nothing to score.
    pub fn hand_off(&self, record: &InteractionRecord) {
        if record.content.is_none() {
            return;
        }
        self.metrics.scoring_handoffs.inc();
        tracing::debug!(interaction = %record.id, "queued for scoring: stays unprocessed until the sentiment model is connected");
    }
}
