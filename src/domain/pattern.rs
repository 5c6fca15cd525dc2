//! Behaviour patterns as every layer sees them: the input of detection and what it finds (the detection
//! itself, pure functions, lives in `ml::patterns`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::interaction::Channel;

/// One interaction as pattern detection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at: DateTime<Utc>,
    pub channel: Channel,
    /// positive − negative, once scored.
    pub score: Option<f32>,
}

/// The four families of patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PatternType {
    ChannelFrequency,
    SentimentTrend,
    Temporal,
    Engagement,
}

impl PatternType {
    pub const ALL: [Self; 4] = [
        Self::ChannelFrequency,
        Self::SentimentTrend,
        Self::Temporal,
        Self::Engagement,
    ];

    /// Parses a stored name.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown pattern type {s:?}"))
    }

    /// The name stored in `behavior_patterns.pattern_type`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ChannelFrequency => "channel_frequency",
            Self::SentimentTrend => "sentiment_trend",
            Self::Temporal => "temporal",
            Self::Engagement => "engagement",
        }
    }
}

/// A detected pattern (R4.10).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pattern {
    pub kind: PatternType,
    /// In [0.7, 1.0].
    pub confidence: f64,
    /// How many interactions show it; at least 1.
    pub frequency: i32,
    pub description: String,
    /// The figures behind the confidence, as JSON text.
    pub evidence: String,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
}
