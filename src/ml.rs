//! Machine learning as pure functions and plain types: text preprocessing, the ONNX sentiment model,
//! pattern detection, and the shape of a prediction (R3, R4). The actors that run the model (the ML pool,
//! the node's sentiment service, the scoring pipeline) live in `actors`, which depends on this module and
//! never the other way round.

pub mod model;
pub mod patterns;
pub mod preprocess;

use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use model::{MODEL_NAME, Scores};

/// One prediction as the API returns it (R3.2–3.5).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Prediction {
    pub positive: f32,
    pub negative: f32,
    pub neutral: f32,
    /// The most likely class.
    pub label: &'static str,
    /// positive − negative, in [−1, 1].
    pub score: f32,
    /// The highest of the three probabilities.
    pub confidence: f32,
    /// The model's name and version.
    pub model: &'static str,
    /// Whether this came from the prediction cache.
    pub cached: bool,
}

impl Prediction {
    /// The prediction of the model's `scores`; `cached` when it came from the prediction cache.
    pub fn from_scores(s: Scores, cached: bool) -> Self {
        Self {
            positive: s.positive,
            negative: s.negative,
            neutral: s.neutral,
            label: s.label(),
            score: s.score(),
            confidence: s.confidence(),
            model: MODEL_NAME,
            cached,
        }
    }
}

/// The model's state, for `/readyz`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelStatus {
    /// `up`, `down` (failed to load) or `disabled`.
    pub status: &'static str,
    pub model: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The cache key of a preprocessed text's prediction.
pub fn cache_key(preprocessed: &str) -> String {
    format!(
        "ml:{MODEL_NAME}:{}",
        hex::encode(Sha256::digest(preprocessed.as_bytes()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_name_the_model_and_hash_the_text() {
        let k = cache_key("hello world");
        assert!(k.starts_with("ml:sentiment-minilm-v1:"));
        assert_eq!(k.len(), "ml:sentiment-minilm-v1:".len() + 64);
        assert_ne!(k, cache_key("hello world!"));
    }

    #[test]
    fn predictions_are_derived_from_the_scores() {
        let p = Prediction::from_scores(
            Scores {
                positive: 0.1,
                negative: 0.6,
                neutral: 0.3,
            },
            false,
        );
        assert_eq!(p.label, "negative");
        assert!((p.score + 0.5).abs() < 1e-6);
        assert!((p.confidence - 0.6).abs() < 1e-6);
        assert_eq!(p.model, MODEL_NAME);
    }
}
