//! Interactions: one customer touchpoint each. Validation of new ones (R2.1, R7.1–7.6), and the stored
//! record as actors pass it around and as the API shows it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::enrichment::{self, Device, Geo};
use super::ids::{CustomerId, InteractionId, OrganizationId};
use super::validation::{NO_CONTROLS_MESSAGE, control_message, refused_control, trimmed_text_pattern};
use super::{FieldError, Fields};

/// Where an interaction happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "interaction_channel", rename_all = "lowercase")]
pub enum Channel {
    Web,
    Mobile,
    Email,
    Chat,
    Phone,
}

impl Channel {
    /// Every channel, in API order.
    pub const ALL: [Channel; 5] = [Self::Web, Self::Mobile, Self::Email, Self::Chat, Self::Phone];

    /// Parses a channel name.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| "must be one of web, mobile, email, chat, phone".to_owned())
    }

    /// Returns the lowercase name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::Mobile => "mobile",
            Self::Email => "email",
            Self::Chat => "chat",
            Self::Phone => "phone",
        }
    }

    /// Text channels carry a message whose content is required (R7.5).
    pub fn is_text(&self) -> bool {
        matches!(self, Self::Email | Self::Chat | Self::Phone)
    }
}

/// Longest accepted `eventType`, in characters, once trimmed.
pub const EVENT_TYPE_MAX_CHARS: usize = 200;

/// Longest accepted `idempotencyKey`, in characters, once trimmed.
pub const IDEMPOTENCY_KEY_MAX_CHARS: usize = 200;

/// The pattern of an accepted `eventType`: trimmed, 1 to 200 characters, no control characters.
pub fn event_type_pattern() -> String {
    trimmed_text_pattern(EVENT_TYPE_MAX_CHARS)
}

/// The pattern of an accepted `idempotencyKey`: trimmed, 1 to 200 characters, no control characters.
pub fn idempotency_key_pattern() -> String {
    trimmed_text_pattern(IDEMPOTENCY_KEY_MAX_CHARS)
}

/// Limits applied when validating a new interaction.
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    /// How far in the future a timestamp may be, for clients whose clocks run ahead.
    pub clock_skew: std::time::Duration,
    /// Longest accepted content, in characters.
    pub max_content_chars: usize,
}

/// A validated interaction, not yet stored. Crosses actors (and later nodes) as postcard, so JSON
/// metadata travels as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewInteraction {
    pub customer_id: CustomerId,
    pub channel: Channel,
    pub event_type: String,
    pub content: Option<String>,
    pub occurred_at: DateTime<Utc>,
    /// The metadata object, as JSON text.
    pub metadata: String,
    pub idempotency_key: Option<String>,
    pub device: Option<Device>,
    pub geo: Option<Geo>,
}

/// Validates one interaction body, listing every problem (R7.6).
pub fn parse_new_interaction(
    body: &Value,
    now: DateTime<Utc>,
    limits: IngestLimits,
) -> Result<NewInteraction, Vec<FieldError>> {
    let mut f = Fields::new(body);
    let customer = f.required_str("customerId");
    let customer_id = f.parse("customerId", customer, |s| {
        CustomerId::parse(s.trim()).map_err(|_| "must be a UUID".to_owned())
    });
    let channel = f.required_str("channel");
    let channel = f.parse("channel", channel, Channel::parse);
    let event_type = f.required_str("eventType");
    let event_type = f.parse("eventType", event_type, |s| {
        let t = s.trim();
        if t.chars().any(char::is_control) {
            return Err(NO_CONTROLS_MESSAGE.to_owned());
        }
        match t.chars().count() {
            0 => Err("must not be empty".to_owned()),
            1..=EVENT_TYPE_MAX_CHARS => Ok(t.to_owned()),
            _ => Err(format!("must be at most {EVENT_TYPE_MAX_CHARS} characters")),
        }
    });
    let content = f.optional_str("content").map(str::to_owned);
    if let Some(c) = &content
        && c.chars().count() > limits.max_content_chars
    {
        f.error(
            "content",
            format!("must be at most {} characters", limits.max_content_chars),
        );
    }
    if let Some(c) = content.as_deref().and_then(refused_control) {
        f.error("content", control_message(c));
    }
    let content = content.filter(|c| !c.trim().is_empty());
    if channel.is_some_and(|c| c.is_text()) && content.is_none() {
        f.error(
            "content",
            "is required and must not be empty for email, chat and phone interactions",
        );
    }
    let timestamp = f.required_str("timestamp");
    let occurred_at = f.parse("timestamp", timestamp, |s| {
        let t = DateTime::parse_from_rfc3339(s.trim())
            .map_err(|_| {
                "must be an RFC 3339 date-time with offset, such as 2026-01-31T12:00:00Z".to_owned()
            })?
            .with_timezone(&Utc);
        let skew = chrono::Duration::from_std(limits.clock_skew).unwrap_or_default();
        if t > now + skew {
            return Err("must not be in the future".to_owned());
        }
        Ok(t)
    });
    let metadata = f.optional_object("metadata").cloned().unwrap_or_default();
    let device = enrichment::device(&metadata);
    let geo = match enrichment::geo(&metadata) {
        Ok(g) => g,
        Err(errors) => {
            f.extend(errors);
            None
        }
    };
    let key = f.optional_str("idempotencyKey");
    let idempotency_key = f.parse("idempotencyKey", key, |k| {
        let k = k.trim();
        if k.chars().any(char::is_control) {
            return Err(NO_CONTROLS_MESSAGE.to_owned());
        }
        if k.is_empty() || k.chars().count() > IDEMPOTENCY_KEY_MAX_CHARS {
            return Err(format!("must be 1 to {IDEMPOTENCY_KEY_MAX_CHARS} characters"));
        }
        Ok(k.to_owned())
    });
    let metadata = Value::Object(metadata).to_string();
    f.finish(|| {
        Some(NewInteraction {
            customer_id: customer_id?,
            channel: channel?,
            event_type: event_type?,
            content,
            occurred_at: occurred_at?,
            metadata,
            idempotency_key,
            device,
            geo,
        })
    })
}

/// A stored interaction, as actors pass it (JSON columns as text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct InteractionRecord {
    pub id: InteractionId,
    pub organization_id: OrganizationId,
    pub customer_id: CustomerId,
    pub channel: Channel,
    pub event_type: String,
    pub content: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub metadata: String,
    pub enrichment: String,
    pub segment: Option<String>,
    pub idempotency_key: Option<String>,
    pub sentiment_positive: Option<f32>,
    pub sentiment_negative: Option<f32>,
    pub sentiment_neutral: Option<f32>,
    pub sentiment_score: Option<f32>,
    pub sentiment_label: Option<String>,
    pub sentiment_confidence: Option<f32>,
    pub processed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// What storing one interaction led to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum IngestOutcome {
    /// A new row.
    Created(InteractionRecord),
    /// The idempotency key was used before: the first interaction, unchanged.
    Duplicate(InteractionRecord),
}

impl IngestOutcome {
    /// Returns the record either way.
    pub fn record(&self) -> &InteractionRecord {
        match self {
            Self::Created(r) | Self::Duplicate(r) => r,
        }
    }
}

/// Why an actor could not store an interaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IngestFailure {
    /// No such customer in the organization.
    CustomerNotFound,
    /// PostgreSQL could not be reached; nothing was stored.
    Unavailable,
    /// Anything else; nothing was stored (the transaction rolled back).
    Internal(String),
    /// This node no longer owns the organization (its write was fenced); nothing was stored.
    NotOwner,
}

/// The result of one batch item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BatchItem {
    Created(InteractionRecord),
    Duplicate(InteractionRecord),
    Failed(Vec<FieldError>),
}

/// The answer of a customer actor to an ingest request.
pub type IngestReply = Result<IngestOutcome, IngestFailure>;

/// An interaction waiting to be scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingScore {
    pub organization_id: OrganizationId,
    pub interaction_id: InteractionId,
    pub customer_id: CustomerId,
    pub content: String,
}

/// The model's scores for one interaction, on their way to the customer's actor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredInteraction {
    pub interaction_id: InteractionId,
    pub customer_id: CustomerId,
    pub positive: f32,
    pub negative: f32,
    pub neutral: f32,
    pub model: String,
}

/// Sentiment scores of an interaction (R3.2–3.5).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SentimentView {
    pub positive: f32,
    pub negative: f32,
    pub neutral: f32,
    pub label: String,
    /// positive − negative, in [−1, 1].
    pub score: f32,
    pub confidence: f32,
}

/// An interaction as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InteractionView {
    #[schema(value_type = String, format = Uuid)]
    pub id: InteractionId,
    #[schema(value_type = String, format = Uuid)]
    pub customer_id: CustomerId,
    pub channel: Channel,
    pub event_type: String,
    pub content: Option<String>,
    pub timestamp: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub idempotency_key: Option<String>,
    /// Null until the model has scored the text.
    pub sentiment: Option<SentimentView>,
    pub processed_at: Option<DateTime<Utc>>,
    pub segment: Option<String>,
    /// Organization context, segment, device and geolocation (R12.1–12.4).
    #[schema(value_type = Object)]
    pub enrichment: Value,
    pub created_at: DateTime<Utc>,
}

impl From<InteractionRecord> for InteractionView {
    fn from(r: InteractionRecord) -> Self {
        let sentiment = match (
            r.sentiment_positive,
            r.sentiment_negative,
            r.sentiment_neutral,
            r.sentiment_score,
            r.sentiment_label,
            r.sentiment_confidence,
        ) {
            (Some(positive), Some(negative), Some(neutral), Some(score), Some(label), Some(confidence)) => {
                Some(SentimentView {
                    positive,
                    negative,
                    neutral,
                    label,
                    score,
                    confidence,
                })
            }
            _ => None,
        };
        Self {
            id: r.id,
            customer_id: r.customer_id,
            channel: r.channel,
            event_type: r.event_type,
            content: r.content,
            timestamp: r.occurred_at,
            // Both columns are jsonb, so their text always parses; an empty object stands in otherwise.
            metadata: serde_json::from_str(&r.metadata).unwrap_or_else(|_| Value::Object(Default::default())),
            idempotency_key: r.idempotency_key,
            sentiment,
            processed_at: r.processed_at,
            segment: r.segment,
            enrichment: serde_json::from_str(&r.enrichment)
                .unwrap_or_else(|_| Value::Object(Default::default())),
            created_at: r.created_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn limits() -> IngestLimits {
        IngestLimits {
            clock_skew: std::time::Duration::from_secs(30),
            max_content_chars: 100,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-06-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_valid_interaction_is_parsed_and_normalized() {
        let body = json!({
            "customerId": "67e55044-10b1-426f-9247-bb680e5fe0c8", "channel": "chat", "eventType": " message ",
            "content": "hello", "timestamp": "2026-06-01T13:59:00+02:00", "idempotencyKey": "k1",
            "metadata": {"userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148", "geo": {"country": "fr"}}
        });
        let n = parse_new_interaction(&body, now(), limits()).unwrap();
        assert_eq!(n.channel, Channel::Chat);
        assert_eq!(n.event_type, "message");
        assert_eq!(
            n.occurred_at.to_rfc3339(),
            "2026-06-01T11:59:00+00:00",
            "stored in UTC"
        );
        assert_eq!(n.device.unwrap().kind, "mobile");
        assert_eq!(n.geo.unwrap().country.as_deref(), Some("FR"));
        assert_eq!(n.idempotency_key.as_deref(), Some("k1"));
    }

    #[test]
    fn every_bad_field_is_listed() {
        let body = json!({"customerId": "nope", "channel": "fax", "eventType": "", "timestamp": "yesterday", "metadata": [1]});
        let errors = parse_new_interaction(&body, now(), limits()).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["customerId", "channel", "eventType", "timestamp", "metadata"]
        );
    }

    #[test]
    fn text_channels_need_content_and_others_do_not() {
        for channel in Channel::ALL {
            let body = json!({"customerId": "67e55044-10b1-426f-9247-bb680e5fe0c8", "channel": channel.as_str(),
                "eventType": "e", "content": "  ", "timestamp": "2026-06-01T11:00:00Z"});
            let result = parse_new_interaction(&body, now(), limits());
            assert_eq!(result.is_err(), channel.is_text(), "{channel:?}");
        }
    }

    #[test]
    fn future_timestamps_are_refused_beyond_the_skew() {
        let at = |t: &str| json!({"customerId": "67e55044-10b1-426f-9247-bb680e5fe0c8", "channel": "web", "eventType": "view", "timestamp": t});
        assert!(
            parse_new_interaction(&at("2026-06-01T12:00:20Z"), now(), limits()).is_ok(),
            "within the skew"
        );
        let errors = parse_new_interaction(&at("2026-06-01T12:01:00Z"), now(), limits()).unwrap_err();
        assert_eq!(errors[0].message, "must not be in the future");
        assert!(
            parse_new_interaction(&at("2026-06-01 12:00:00"), now(), limits()).is_err(),
            "an offset is required"
        );
    }

    #[test]
    fn long_content_and_bad_coordinates_are_refused() {
        let body = json!({"customerId": "67e55044-10b1-426f-9247-bb680e5fe0c8", "channel": "email", "eventType": "e",
            "content": "x".repeat(101), "timestamp": "2026-06-01T11:00:00Z", "metadata": {"lat": 100}});
        let errors = parse_new_interaction(&body, now(), limits()).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["content", "metadata.lat"]);
    }
}
