//! Customers: the end users whose interactions are analysed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ids::CustomerId;
use super::validation::trimmed_text_pattern;

/// A customer's business key within its organization (1–200 characters, no control characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalId(String);

impl ExternalId {
    /// Longest accepted id, in characters, once trimmed.
    pub const MAX_CHARS: usize = 200;

    /// Trims and checks the id.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let id = raw.trim();
        if id.is_empty() || id.chars().count() > Self::MAX_CHARS || id.chars().any(char::is_control) {
            return Err(format!(
                "must be 1 to {} characters without control characters",
                Self::MAX_CHARS
            ));
        }
        Ok(Self(id.to_owned()))
    }

    /// The pattern of what [`Self::parse`] accepts, for the OpenAPI document.
    pub fn pattern() -> String {
        trimmed_text_pattern(Self::MAX_CHARS)
    }

    /// Returns the id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A customer segment label (1–100 characters), such as `enterprise` or `trial`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment(String);

impl Segment {
    /// Longest accepted label, in characters, once trimmed.
    pub const MAX_CHARS: usize = 100;

    /// Trims and checks the label.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        if s.is_empty() || s.chars().count() > Self::MAX_CHARS || s.chars().any(char::is_control) {
            return Err(format!(
                "must be 1 to {} characters without control characters",
                Self::MAX_CHARS
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The pattern of what [`Self::parse`] accepts, for the OpenAPI document.
    pub fn pattern() -> String {
        trimmed_text_pattern(Self::MAX_CHARS)
    }

    /// Returns the label.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stored behaviour pattern, as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatternView {
    pub pattern_type: String,
    pub confidence: f64,
    pub frequency: i32,
    pub description: String,
    #[schema(value_type = Object)]
    pub evidence: serde_json::Value,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub detected_at: DateTime<Utc>,
}

/// A customer's profile (R12.5–12.7).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerView {
    #[schema(value_type = String, format = Uuid)]
    pub id: CustomerId,
    pub external_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub segment: Option<String>,
    #[schema(value_type = Object)]
    pub attributes: serde_json::Value,
    pub interaction_count: i64,
    /// Mean sentiment score (positive − negative, in [−1, 1]) over the scored interactions, or null.
    pub average_sentiment: Option<f64>,
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The current patterns, highest confidence first (only in the single-customer profile).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patterns: Option<Vec<PatternView>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a customer actor keeps of its row; rebuilt from PostgreSQL whenever the actor starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerState {
    pub id: CustomerId,
    pub segment: Option<String>,
    pub interaction_count: i64,
    pub average_sentiment: Option<f64>,
    pub last_seen_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_ids_and_segments_are_trimmed_and_bounded() {
        assert_eq!(ExternalId::parse(" c-1 ").unwrap().as_str(), "c-1");
        assert!(ExternalId::parse("").is_err());
        assert!(ExternalId::parse(&"x".repeat(201)).is_err());
        assert!(ExternalId::parse("a\nb").is_err());
        assert_eq!(Segment::parse("enterprise").unwrap().as_str(), "enterprise");
        assert!(Segment::parse(" ").is_err());
        assert!(Segment::parse(&"s".repeat(101)).is_err());
    }

    proptest::proptest! {
        #[test]
        fn the_patterns_accept_what_the_parsers_accept(raw in crate::domain::validation::tests::tricky_text(210)) {
            let external = regex::Regex::new(&ExternalId::pattern()).unwrap();
            proptest::prop_assert_eq!(external.is_match(&raw), ExternalId::parse(&raw).is_ok(), "{:?}", raw);
            let segment = regex::Regex::new(&Segment::pattern()).unwrap();
            proptest::prop_assert_eq!(segment.is_match(&raw), Segment::parse(&raw).is_ok(), "{:?}", raw);
        }
    }
}
