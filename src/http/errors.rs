//! The one JSON error shape, the mapping of [`Error`] to HTTP status, and the rejection handler.

use crate::store::auth_events::AuthEventKind;
use std::convert::Infallible;

use serde::Serialize;
use utoipa::ToSchema;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Rejection, Reply as _};

use crate::domain::FieldError;
use crate::error::Error;

/// A rejection carrying one of our errors, for filters (auth, body) that fail before a handler runs.
#[derive(Debug)]
pub struct ApiRejection(pub Error);

impl warp::reject::Reject for ApiRejection {}

/// `{"error": {...}}`: the body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// A stable machine-readable code, such as `validation_failed`.
    pub code: &'static str,
    /// A human-readable sentence.
    pub message: String,
    /// The invalid fields, for `validation_failed`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<FieldError>,
    /// The request id, for internal errors, to quote when reporting them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// For `rate_limited`: the quota that was used up (`ip`, `user`, `api_key`, `auth_ip` or
    /// `login_failures`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<&'static str>,
}

fn current_request_id() -> Option<String> {
    crate::domain::trace::current()
}

fn body(status: StatusCode, code: &'static str, message: String, details: Vec<FieldError>) -> Response {
    render(status, code, message, details, None)
}

fn body_with_quota(status: StatusCode, code: &'static str, message: String, quota: &'static str) -> Response {
    render(status, code, message, Vec::new(), Some(quota))
}

fn render(
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Vec<FieldError>,
    quota: Option<&'static str>,
) -> Response {
    let request_id = status.is_server_error().then(current_request_id).flatten();
    let body = ErrorBody {
        error: ErrorDetail {
            code,
            message,
            details,
            request_id,
            quota,
        },
    };
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// Renders an error as its HTTP response; internal errors are logged with their cause here.
pub fn error_response(e: &Error) -> Response {
    match e {
        Error::Validation(details) => body(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            e.to_string(),
            details.clone(),
        ),
        Error::BadRequest(message) => body(
            StatusCode::BAD_REQUEST,
            "bad_request",
            message.clone(),
            Vec::new(),
        ),
        Error::Unauthenticated => {
            let mut r = body(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                e.to_string(),
                Vec::new(),
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
        Error::Forbidden(message) => {
            let mut r = body(
                StatusCode::FORBIDDEN,
                "forbidden",
                (*message).to_owned(),
                Vec::new(),
            );
            r.extensions_mut()
                .insert(SecurityMark(AuthEventKind::PermissionDenied, message));
            r
        }
        Error::NotFound(_) => body(StatusCode::NOT_FOUND, "not_found", e.to_string(), Vec::new()),
        Error::Conflict(message) => body(StatusCode::CONFLICT, "conflict", message.clone(), Vec::new()),
        Error::UpgradeRequired(message) => {
            let mut r = body(
                StatusCode::UPGRADE_REQUIRED,
                "upgrade_required",
                (*message).to_owned(),
                Vec::new(),
            );
            r.headers_mut()
                .insert("sec-websocket-version", HeaderValue::from_static("13"));
            r
        }
        Error::PayloadTooLarge { .. } => body(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            e.to_string(),
            Vec::new(),
        ),
        Error::RateLimited {
            retry_after,
            message,
            quota,
        } => {
            let mut r = body_with_quota(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                (*message).to_owned(),
                quota,
            );
            // Round up: a client that waits the advertised seconds must not be refused again.
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            r
        }
        Error::Overloaded(message) => {
            let mut r = body(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                (*message).to_owned(),
                Vec::new(),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            r
        }
        Error::NodeUnavailable(why) => {
            let mut r = body(
                StatusCode::SERVICE_UNAVAILABLE,
                "node_unavailable",
                why.clone(),
                Vec::new(),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            r
        }
        Error::OwnedElsewhere => {
            let mut r = body(
                StatusCode::SERVICE_UNAVAILABLE,
                "owned_elsewhere",
                e.to_string(),
                Vec::new(),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            r
        }
        Error::Unavailable(_) => {
            let mut r = body(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                e.to_string(),
                Vec::new(),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(5u64));
            r
        }
        Error::Decryption(cause) => {
            tracing::error!(request_id = current_request_id().as_deref().unwrap_or("-"), error = %cause, "decryption failed");
            let mut r = body(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error".to_owned(),
                Vec::new(),
            );
            r.extensions_mut().insert(SecurityMark(
                AuthEventKind::DecryptionFailed,
                "a sealed customer field did not decrypt",
            ));
            r
        }
        Error::Internal(cause) => {
            tracing::error!(
                request_id = current_request_id().as_deref().unwrap_or("-"),
                error = %cause,
                backtrace = %cause.backtrace(),
                "internal error"
            );
            body(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error".to_owned(),
                Vec::new(),
            )
        }
    }
}

/// Put on a response whose error is a security event, so the request envelope records it with the
/// caller and the route (`http::server`).
#[derive(Debug, Clone, Copy)]
pub struct SecurityMark(pub AuthEventKind, pub &'static str);

/// Turns every rejection into the JSON error shape.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    if let Some(ApiRejection(e)) = rejection.find::<ApiRejection>() {
        return Ok(error_response(e));
    }
    if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        return Ok(body(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this path does not accept this method".to_owned(),
            Vec::new(),
        ));
    }
    if rejection.is_not_found() {
        return Ok(body(
            StatusCode::NOT_FOUND,
            "route_not_found",
            "no route matches this path".to_owned(),
            Vec::new(),
        ));
    }
    if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        return Ok(body(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("query string is invalid: {e}"),
            Vec::new(),
        ));
    }
    if let Some(e) = rejection.find::<warp::filters::cors::CorsForbidden>() {
        return Ok(body(
            StatusCode::FORBIDDEN,
            "cors_forbidden",
            e.to_string(),
            Vec::new(),
        ));
    }
    if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        return Ok(body(
            StatusCode::BAD_REQUEST,
            "bad_request",
            e.to_string(),
            Vec::new(),
        ));
    }
    if let Some(e) = rejection.find::<warp::reject::MissingHeader>() {
        return Ok(body(
            StatusCode::BAD_REQUEST,
            "bad_request",
            e.to_string(),
            Vec::new(),
        ));
    }
    tracing::error!(?rejection, "unhandled rejection");
    Ok(body(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error".to_owned(),
        Vec::new(),
    ))
}
