//! Schemas of the values the validators constrain, built from the validators' own limits and patterns
//! (`domain::*::pattern()`, `MAX_CHARS`, ...), so that the document says exactly what is accepted and the
//! two cannot drift apart. Handlers' request types use them through `#[schema(schema_with = ...)]`.
//!
//! What JSON Schema cannot say is said in descriptions: a password's limit in bytes, a timestamp that
//! may not lie in the future, `from` before `to`. The fuzzing test feeds those rules to schemathesis
//! (tests/contract/hooks.py).

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AllOfBuilder, AnyOfBuilder, ArrayBuilder, KnownFormat, Object, ObjectBuilder, Schema, SchemaFormat,
    SchemaType, Type,
};

use crate::config::Config;
use crate::domain::customer::{ExternalId, Segment};
use crate::domain::interaction::{Channel, event_type_pattern, idempotency_key_pattern};
use crate::domain::validation::{CONTROL_CLASS, FREE_TEXT_PATTERN, blank_pattern, non_blank_pattern};
use crate::domain::{Email, Password, PersonName};

/// The limits of a node's configuration that its document states.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_content_chars: usize,
    pub ml_max_texts: usize,
    pub batch_max_items: usize,
}

impl Limits {
    /// Reads the limits of `config`.
    pub fn of(config: &Config) -> Self {
        Self {
            max_content_chars: config.ingest.max_content_chars,
            ml_max_texts: config.ml.max_texts,
            batch_max_items: config.ingest.batch_max_items,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::of(&Config::default())
    }
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn nullable(kind: Type) -> SchemaType {
    SchemaType::from_iter([kind, Type::Null])
}

/// A string matching `pattern` (which already bounds its length).
fn text(pattern: String, description: &str) -> ObjectBuilder {
    string()
        .min_length(Some(1))
        .pattern(Some(pattern))
        .description(Some(description))
}

fn trimmed_description(max_chars: usize) -> String {
    format!("surrounding whitespace is ignored; then 1 to {max_chars} characters, no control characters")
}

/// `externalId`: unique within the organization.
pub fn external_id() -> Object {
    let description = format!(
        "unique within the organization; {}",
        trimmed_description(ExternalId::MAX_CHARS)
    );
    text(ExternalId::pattern(), &description).build()
}

/// `externalId` in a PATCH: `null` leaves it as it is.
pub fn external_id_patch() -> Object {
    let description = format!(
        "a new externalId ({}); absent or null leaves it",
        trimmed_description(ExternalId::MAX_CHARS)
    );
    text(ExternalId::pattern(), &description)
        .schema_type(nullable(Type::String))
        .build()
}

/// A person's or a key's display name.
pub fn person_name() -> Object {
    text(PersonName::pattern(), &trimmed_description(PersonName::MAX_CHARS)).build()
}

/// An optional name: `null` is the same as absent (a PATCH of a user leaves it; a new customer has none).
pub fn optional_person_name() -> Object {
    let description = format!(
        "{}; null is the same as absent",
        trimmed_description(PersonName::MAX_CHARS)
    );
    text(PersonName::pattern(), &description)
        .schema_type(nullable(Type::String))
        .build()
}

/// A customer's name in a PATCH: `null` clears it.
pub fn person_name_clearable() -> Object {
    let description = format!("{}; null clears it", trimmed_description(PersonName::MAX_CHARS));
    text(PersonName::pattern(), &description)
        .schema_type(nullable(Type::String))
        .build()
}

fn email_builder(description: &str) -> ObjectBuilder {
    let description = format!(
        "{description}; compared and stored trimmed and lowercased, at most {} bytes of UTF-8 then",
        Email::MAX_BYTES
    );
    // No `format: email`: the shape accepted is the pattern's, looser than RFC 5321 in places. No
    // `maxLength` either: the limit is in bytes, after trimming, which a length in characters cannot say.
    string()
        .pattern(Some(Email::pattern()))
        .description(Some(description))
}

/// An email address.
pub fn email() -> Object {
    email_builder("an email address").build()
}

/// An optional email address: `null` is the same as absent.
pub fn optional_email() -> Object {
    email_builder("an email address; null is the same as absent")
        .schema_type(nullable(Type::String))
        .build()
}

/// A customer's email in a PATCH: `null` clears it.
pub fn email_clearable() -> Object {
    email_builder("an email address; null clears it")
        .schema_type(nullable(Type::String))
        .build()
}

fn password_builder(description: &str) -> ObjectBuilder {
    let description = format!(
        "{description}: at least {} characters and at most {} bytes of UTF-8 (bcrypt reads no further), \
         no control characters",
        Password::MIN_CHARS,
        Password::MAX_BYTES
    );
    string()
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Password)))
        .pattern(Some(format!("^[^{CONTROL_CLASS}]*$")))
        .min_length(Some(Password::MIN_CHARS))
        // Never more characters than bytes.
        .max_length(Some(Password::MAX_BYTES))
        .description(Some(description))
}

/// A new password.
pub fn password() -> Object {
    password_builder("a new password").build()
}

/// A new password in a PATCH: `null` leaves it.
pub fn password_patch() -> Object {
    password_builder("a new password; absent or null leaves it")
        .schema_type(nullable(Type::String))
        .build()
}

/// The password presented at login or to change it: any non-empty text.
pub fn current_password() -> Object {
    string()
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Password)))
        .min_length(Some(1))
        .build()
}

/// A customer segment.
fn segment_builder(description: &str) -> ObjectBuilder {
    let description = format!("{description}; {}", trimmed_description(Segment::MAX_CHARS));
    text(Segment::pattern(), &description)
}

/// A new customer's segment: `null` is the same as absent.
pub fn optional_segment() -> Object {
    segment_builder("a segment label such as `enterprise`; null is the same as absent")
        .schema_type(nullable(Type::String))
        .build()
}

/// A customer's segment in a PATCH: `null` clears it.
pub fn segment_clearable() -> Object {
    segment_builder("a segment label; null clears it")
        .schema_type(nullable(Type::String))
        .build()
}

/// A free-form JSON object; `null` is the same as absent. It is stored, so no key or text in it may hold
/// U+0000.
pub fn optional_object(description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(nullable(Type::Object))
        .description(Some(format!(
            "{description}; no key or text in it may hold a control character but tab, line feed and \
             carriage return"
        )))
        .build()
}

/// A UUID (surrounding whitespace is ignored).
pub fn uuid() -> Object {
    string()
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
        .build()
}

/// A channel name.
pub fn channel() -> Object {
    string()
        .enum_values(Some(Channel::ALL.map(|c| c.as_str())))
        .build()
}

/// The body of `POST /api/v1/interactions`, and of each item of a batch.
pub fn create_interaction(limits: &Limits) -> Schema {
    let text_channels: Vec<&str> = Channel::ALL
        .into_iter()
        .filter(Channel::is_text)
        .map(|c| c.as_str())
        .collect();
    let other_channels: Vec<&str> = Channel::ALL
        .into_iter()
        .filter(|c| !c.is_text())
        .map(|c| c.as_str())
        .collect();
    let fields = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("customerId", uuid())
        .required("customerId")
        .property("channel", channel())
        .required("channel")
        .property(
            "eventType",
            text(
                event_type_pattern(),
                &trimmed_description(crate::domain::interaction::EVENT_TYPE_MAX_CHARS),
            ),
        )
        .required("eventType")
        .property(
            "content",
            string()
                .schema_type(nullable(Type::String))
                .max_length(Some(limits.max_content_chars))
                .pattern(Some(FREE_TEXT_PATTERN))
                .description(Some(format!(
                    "at most {} characters, no control characters but tab, line feed and carriage return; \
                     required and not blank for {}",
                    limits.max_content_chars,
                    text_channels.join(", ")
                ))),
        )
        .property(
            "timestamp",
            string()
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
                .description(Some(
                    "RFC 3339 with offset; not in the future (beyond the node's clock-skew allowance)",
                )),
        )
        .required("timestamp")
        .property(
            "metadata",
            optional_object(
                "free-form; `userAgent`, `device` and `geo` (or `location`, or top-level `lat`/`lon`, \
                 which must then be numbers within ±90 and ±180) are used for enrichment",
            ),
        )
        .property(
            "idempotencyKey",
            text(
                idempotency_key_pattern(),
                &format!(
                    "a repeat within the organization returns the first interaction with 200 and stores \
                     nothing; {}",
                    trimmed_description(crate::domain::interaction::IDEMPOTENCY_KEY_MAX_CHARS)
                ),
            )
            .schema_type(nullable(Type::String)),
        );
    let content_rule = AnyOfBuilder::new()
        .item(ObjectBuilder::new().property("channel", string().enum_values(Some(other_channels))))
        .item(
            ObjectBuilder::new()
                .property("content", string().pattern(Some(non_blank_pattern())))
                .required("content"),
        );
    AllOfBuilder::new()
        .item(fields)
        .item(content_rule)
        .description(Some("A new interaction."))
        .into()
}

/// The body of `POST /api/v1/interactions/batch`. Each item is validated on its own and, when invalid,
/// fails alone (the response lists why), so the request accepts any items.
pub fn create_batch(limits: &Limits) -> Schema {
    let item = ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .description(Some(
            "an interaction, as the body of `POST /api/v1/interactions` (schema `CreateInteraction`); an \
             invalid one fails alone",
        ));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "interactions",
            ArrayBuilder::new()
                .items(item)
                .min_items(Some(1))
                .max_items(Some(limits.batch_max_items)),
        )
        .required("interactions")
        .description(Some("A batch of new interactions."))
        .into()
}

fn sentiment_text(limits: &Limits) -> ObjectBuilder {
    string()
        .pattern(Some(non_blank_pattern()))
        .min_length(Some(1))
        .max_length(Some(limits.max_content_chars))
        .description(Some(format!(
            "not blank; at most {} characters",
            limits.max_content_chars
        )))
}

/// The body of `POST /api/v1/ml/sentiment`.
pub fn sentiment_request(limits: &Limits) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("text", sentiment_text(limits))
        .required("text")
        .description(Some("A text to score."))
        .into()
}

/// The body of `POST /api/v1/ml/sentiment/batch`.
pub fn sentiment_batch_request(limits: &Limits) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "texts",
            ArrayBuilder::new()
                .items(sentiment_text(limits))
                .min_items(Some(1))
                .max_items(Some(limits.ml_max_texts)),
        )
        .required("texts")
        .description(Some("Texts to score, in batches of up to 32."))
        .into()
}

/// `schema`, or a value that is blank once trimmed: an optional query parameter left empty is the
/// same as an absent one.
pub fn or_blank(schema: impl Into<RefOr<Schema>>) -> Schema {
    AnyOfBuilder::new()
        .item(schema)
        .item(string().pattern(Some(blank_pattern())))
        .into()
}
