//! Sentiment predictions on demand (R3.1–3.5): one text or a batch.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use warp::Filter;
use warp::http::{Method, StatusCode};

use super::openapi::schemas;
use super::{Endpoint, Shared, authed, json_body, respond};
use crate::auth::Principal;
use crate::domain::{FieldError, Role};
use crate::error::Error;
use crate::ml::Prediction;

/// A text to score. Its schema is [`schemas::sentiment_request`], with the node's limits.
#[derive(Debug, Deserialize)]
pub struct SentimentRequest {
    /// Non-empty; at most `max_content_chars` characters.
    pub text: String,
}

impl utoipa::PartialSchema for SentimentRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schemas::sentiment_request(&schemas::Limits::default()).into()
    }
}

impl ToSchema for SentimentRequest {}

/// Texts to score. Its schema is [`schemas::sentiment_batch_request`], with the node's limits.
#[derive(Debug, Deserialize)]
pub struct SentimentBatchRequest {
    /// 1 to `ml_max_texts` non-empty texts; scored in batches of `ml_max_batch`.
    pub texts: Vec<String>,
}

impl utoipa::PartialSchema for SentimentBatchRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schemas::sentiment_batch_request(&schemas::Limits::default()).into()
    }
}

impl ToSchema for SentimentBatchRequest {}

/// Predictions in the order of the texts.
#[derive(Debug, Serialize, ToSchema)]
pub struct SentimentBatchResponse {
    pub results: Vec<Prediction>,
}

pub fn endpoints(s: &Shared) -> Vec<Endpoint> {
    vec![
        Endpoint::new(
            Method::POST,
            "/api/v1/ml/sentiment",
            warp::path!("api" / "v1" / "ml" / "sentiment")
                .and(warp::post())
                .and(authed(s))
                .and(json_body(s))
                .then(|s: Shared, p: Principal, body: serde_json::Value| async move {
                    respond(StatusCode::OK, sentiment(&s, &p, &body).await)
                }),
        ),
        Endpoint::new(
            Method::POST,
            "/api/v1/ml/sentiment/batch",
            warp::path!("api" / "v1" / "ml" / "sentiment" / "batch")
                .and(warp::post())
                .and(authed(s))
                .and(json_body(s))
                .then(|s: Shared, p: Principal, body: serde_json::Value| async move {
                    respond(StatusCode::OK, sentiment_batch(&s, &p, &body).await)
                }),
        ),
    ]
}

/// Checks one text: a string, non-empty once trimmed, not too long.
fn check_text(value: &serde_json::Value, field: &str, max_chars: usize) -> Result<String, FieldError> {
    let text = value
        .as_str()
        .ok_or_else(|| FieldError::new(field, "must be a string"))?;
    if text.trim().is_empty() {
        // An empty text has no sentiment; scoring it would report a confident-looking neutral.
        return Err(FieldError::new(field, "must not be empty"));
    }
    if text.chars().count() > max_chars {
        return Err(FieldError::new(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    Ok(text.to_owned())
}

/// Scores one text.
#[utoipa::path(post, path = "/api/v1/ml/sentiment", tag = "ml", security(("bearer" = [])), request_body = SentimentRequest,
    responses(
        (status = 200, body = Prediction),
        (status = 400, body = super::errors::ErrorBody),
        (status = 503, description = "the model is not loaded or its pool is down", body = super::errors::ErrorBody),
    ))]
pub async fn sentiment(s: &Shared, p: &Principal, body: &serde_json::Value) -> Result<Prediction, Error> {
    p.require(Role::Viewer)?;
    let max = s.config.ingest.max_content_chars;
    let text = match body.get("text") {
        Some(v) => check_text(v, "text", max).map_err(|e| Error::Validation(vec![e]))?,
        None => return Err(Error::Validation(vec![FieldError::new("text", "is required")])),
    };
    let mut results = s.ml.predict(&[text]).await?;
    results.pop().ok_or(Error::Unavailable("sentiment model"))
}

/// Scores several texts, in batches of up to 32.
#[utoipa::path(post, path = "/api/v1/ml/sentiment/batch", tag = "ml", security(("bearer" = [])),
    request_body = SentimentBatchRequest,
    responses(
        (status = 200, body = SentimentBatchResponse),
        (status = 400, body = super::errors::ErrorBody),
        (status = 503, body = super::errors::ErrorBody),
    ))]
pub async fn sentiment_batch(
    s: &Shared,
    p: &Principal,
    body: &serde_json::Value,
) -> Result<SentimentBatchResponse, Error> {
    p.require(Role::Viewer)?;
    let max_texts = s.config.ml.max_texts;
    let max_chars = s.config.ingest.max_content_chars;
    let texts = match body.get("texts").and_then(|t| t.as_array()) {
        Some(texts) if !texts.is_empty() && texts.len() <= max_texts => texts,
        _ => {
            return Err(Error::Validation(vec![FieldError::new(
                "texts",
                format!("must be an array of 1 to {max_texts} texts"),
            )]));
        }
    };
    let mut errors = Vec::new();
    let mut checked = Vec::with_capacity(texts.len());
    for (i, t) in texts.iter().enumerate() {
        match check_text(t, &format!("texts[{i}]"), max_chars) {
            Ok(t) => checked.push(t),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(Error::Validation(errors));
    }
    Ok(SentimentBatchResponse {
        results: s.ml.predict(&checked).await?,
    })
}
