//! The model's answer for one text, as every layer sees it (the model itself lives in `ml::model`).

use serde::{Deserialize, Serialize};

/// Probabilities of the three classes; they sum to 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub positive: f32,
    pub negative: f32,
    pub neutral: f32,
}

impl Scores {
    /// The most likely label.
    pub fn label(&self) -> &'static str {
        if self.positive >= self.negative && self.positive >= self.neutral {
            "positive"
        } else if self.negative >= self.neutral {
            "negative"
        } else {
            "neutral"
        }
    }

    /// The highest probability (R3.5).
    pub fn confidence(&self) -> f32 {
        self.positive.max(self.negative).max(self.neutral)
    }

    /// positive − negative, in [−1, 1].
    pub fn score(&self) -> f32 {
        self.positive - self.negative
    }
}
