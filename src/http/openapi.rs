//! The OpenAPI document, generated from the handlers' annotations (utoipa). A test checks that every
//! endpoint the router serves is in it, and that every path in it is served; another runs schemathesis
//! against it (tests/api/contract.rs).
//!
//! Responses every operation shares (401, 403, 429, 503, ...) are added here once, by [`CommonResponses`],
//! rather than on each handler.

pub mod params;
pub mod schemas;

use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, Header, HeaderBuilder, ObjectBuilder, Ref, RefOr, Type};
use utoipa::{Modify, OpenApi, ToSchema as _};

use self::schemas::Limits;
use super::errors::ErrorBody;
use super::interactions::{CreateBatch, CreateInteraction};
use super::ml::{SentimentBatchRequest, SentimentRequest};
use super::{
    alerts, api_keys, auth, cluster, customers, export, interactions, ml, ops, security, summaries, users, ws,
};
use crate::config::Config;

#[derive(OpenApi)]
#[openapi(
    info(title = "Insights API", description = "Real-time customer insights: ingestion, sentiment, patterns, live dashboards."),
    paths(
        ops::healthz, ops::readyz, ops::metrics, openapi_json, cluster::cluster,
        auth::login, auth::refresh, auth::logout, auth::change_password, auth::me,
        users::create_user, users::list_users, users::get_user, users::update_user, users::delete_user,
        security::list_security_events, alerts::list_alerts, alerts::get_alert_rules, alerts::put_alert_rules,
        api_keys::create_api_key, api_keys::list_api_keys, api_keys::delete_api_key,
        customers::create_customer, customers::list_customers, customers::get_customer, customers::update_customer,
        customers::customer_patterns,
        interactions::create_interaction, interactions::create_batch, interactions::list_interactions,
        interactions::get_interaction,
        ml::sentiment, ml::sentiment_batch,
        summaries::dashboard, summaries::trends, export::export,
        ws::upgrade,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth, &CommonResponses),
    tags(
        (name = "auth", description = "Login, tokens and the current user"),
        (name = "users", description = "The organization's users (admin)"),
        (name = "api-keys", description = "Ingest-only API keys (admin)"),
        (name = "customers", description = "Customers and their profiles"),
        (name = "interactions", description = "Ingestion and reading of interactions"),
        (name = "ml", description = "Sentiment predictions"),
        (name = "live", description = "Live events over WSS (see the contract for the frames)"),
        (name = "insights", description = "Dashboard summaries and sentiment trends (cached)"),
        (name = "ops", description = "Health, readiness, metrics, the cluster"),
    )
)]
pub struct ApiDoc;

/// The route that serves this document. It lives here rather than with the other operations routes,
/// so `ops` does not depend on the document that describes it.
pub fn endpoints(s: &super::Shared) -> Vec<super::Endpoint> {
    use warp::{Filter as _, Reply as _};
    vec![super::Endpoint::new(
        warp::http::Method::GET,
        "/api/v1/openapi.json",
        warp::path!("api" / "v1" / "openapi.json")
            .and(warp::get())
            .and(super::with_state(s))
            .then(|s: super::Shared| async move { warp::reply::json(&document(&s.config)).into_response() }),
    )]
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "ops", responses((status = 200, description = "the OpenAPI 3.1 document")))]
pub fn openapi_json() {}

/// The document as a node serves it: [`ApiDoc`] with the limits of the node's configuration in the
/// schemas that state them, as JSON.
pub fn document(config: &Config) -> serde_json::Value {
    let mut doc = serde_json::to_value(configured(config)).unwrap_or_default();
    links_in_camel_case(&mut doc);
    doc
}

/// utoipa 5 writes a link's fields in snake case (`operation_id`); OpenAPI spells them in camel case.
fn links_in_camel_case(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let responses = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op.get_mut("responses").and_then(|r| r.as_object_mut()))
        .flat_map(|responses| responses.values_mut());
    for response in responses {
        let Some(links) = response.get_mut("links").and_then(|l| l.as_object_mut()) else {
            continue;
        };
        for link in links.values_mut().filter_map(|l| l.as_object_mut()) {
            for (snake, camel) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
                ("request_body", "requestBody"),
            ] {
                if let Some(value) = link.remove(snake) {
                    link.insert(camel.to_owned(), value);
                }
            }
        }
    }
}

fn configured(config: &Config) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    let limits = Limits::of(config);
    let components = doc.components.get_or_insert_with(Default::default);
    let configured = [
        (CreateInteraction::name(), schemas::create_interaction(&limits)),
        (CreateBatch::name(), schemas::create_batch(&limits)),
        (SentimentRequest::name(), schemas::sentiment_request(&limits)),
        (
            SentimentBatchRequest::name(),
            schemas::sentiment_batch_request(&limits),
        ),
    ];
    for (name, schema) in configured {
        components.schemas.insert(name.into_owned(), RefOr::T(schema));
    }
    doc
}

/// Declares the `bearer` scheme: an access token (JWT) or an API key.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The prefix of the versioned API; everything under it is rate limited.
const API_PREFIX: &str = "/api/v1/";

/// Headers of the responses a rate-limit quota covers (API.md, "Rate limits").
const RATE_LIMIT_HEADERS: [(&str, &str); 5] = [
    ("X-RateLimit-Limit", "requests allowed in the current window"),
    ("X-RateLimit-Remaining", "requests left in the current window"),
    ("X-RateLimit-Reset", "when the window resets, in Unix seconds"),
    (
        "RateLimit-Policy",
        "the quota, as in the IETF RateLimit header fields draft",
    ),
    (
        "RateLimit",
        "the state of the quota, as in the IETF RateLimit header fields draft",
    ),
];

/// One shared response: its status, the name it has under `components.responses`, its description,
/// and which operations answer it.
struct Shared {
    status: &'static str,
    name: &'static str,
    description: &'static str,
    applies: fn(&OperationInfo) -> bool,
}

/// What decides which shared responses an operation has.
struct OperationInfo {
    versioned: bool,
    authenticated: bool,
    has_body: bool,
    has_query: bool,
    /// Serves only a static document: no database, no quota but the per-IP one.
    static_document: bool,
}

const SHARED: [Shared; 6] = [
    Shared {
        status: "400",
        name: "BadRequest",
        description: "the request cannot be read (a body that is not JSON, a malformed query string) or a field is invalid; every invalid field is listed",
        applies: |op| op.has_body || op.has_query,
    },
    Shared {
        status: "401",
        name: "Unauthenticated",
        description: "missing, invalid, expired or revoked credentials",
        applies: |op| op.authenticated,
    },
    Shared {
        status: "403",
        name: "Forbidden",
        description: "the caller's role (or an API key, which may only ingest) does not allow this",
        applies: |op| op.authenticated,
    },
    Shared {
        status: "413",
        name: "PayloadTooLarge",
        description: "the body is larger than the limit",
        applies: |op| op.has_body,
    },
    Shared {
        status: "429",
        name: "RateLimited",
        description: "rate limited (error code `rate_limited`): retry after `Retry-After` seconds",
        applies: |op| op.versioned,
    },
    Shared {
        status: "503",
        name: "Unavailable",
        description: "a dependency (PostgreSQL, the model) is unavailable or the node is at capacity: retry after `Retry-After` seconds",
        applies: |op| op.versioned && !op.static_document,
    },
];

/// Adds the responses every operation shares, once, as `components.responses` referenced by each
/// operation that can answer them; an operation that documents one of these statuses itself keeps its
/// own description and gets the shared headers. Every response gets `X-Request-Id`.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for shared in &SHARED {
            let mut response = ResponseBuilder::new()
                .description(shared.description)
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name(ErrorBody::name()))),
                )
                .build();
            add_shared_headers(shared.status, &mut response);
            components
                .responses
                .insert(shared.name.to_owned(), RefOr::T(response));
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let info = OperationInfo {
                    versioned: path.starts_with(API_PREFIX),
                    authenticated: operation.security.as_ref().is_some_and(|s| !s.is_empty()),
                    has_body: operation.request_body.is_some(),
                    has_query: operation
                        .parameters
                        .iter()
                        .flatten()
                        .any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query)),
                    static_document: path.ends_with("/openapi.json"),
                };
                add_shared_responses(operation, &info);
            }
        }
    }
}

fn add_shared_responses(operation: &mut Operation, info: &OperationInfo) {
    let responses = &mut operation.responses.responses;
    for shared in SHARED.iter().filter(|s| (s.applies)(info)) {
        match responses.get_mut(shared.status) {
            Some(RefOr::T(own)) => add_shared_headers(shared.status, own),
            Some(RefOr::Ref(_)) => {}
            None => {
                let reference = Ref::new(format!("#/components/responses/{}", shared.name));
                responses.insert(shared.status.to_owned(), RefOr::Ref(reference));
            }
        }
    }
    for response in responses.values_mut() {
        if let RefOr::T(response) = response {
            add_header(
                response,
                "X-Request-Id",
                "the request's id, also in the server's log line",
                Type::String,
            );
        }
    }
}

fn add_shared_headers(status: &str, response: &mut Response) {
    add_header(
        response,
        "X-Request-Id",
        "the request's id, also in the server's log line",
        Type::String,
    );
    match status {
        "401" => add_header(response, "WWW-Authenticate", "always `Bearer`", Type::String),
        "429" => {
            add_header(
                response,
                "Retry-After",
                "seconds to wait before retrying",
                Type::Integer,
            );
            for (name, description) in RATE_LIMIT_HEADERS {
                add_header(response, name, description, Type::String);
            }
        }
        "503" => add_header(
            response,
            "Retry-After",
            "seconds to wait before retrying",
            Type::Integer,
        ),
        _ => {}
    }
}

fn add_header(response: &mut Response, name: &str, description: &str, kind: Type) {
    response
        .headers
        .entry(name.to_owned())
        .or_insert_with(|| header(description, kind));
}

fn header(description: &str, kind: Type) -> Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(kind))
        .description(Some(description))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> serde_json::Value {
        serde_json::to_value(ApiDoc::openapi()).unwrap()
    }

    #[test]
    fn the_served_document_states_the_configured_limits() {
        let mut config = Config::default();
        config.ingest.max_content_chars = 123;
        config.ml.max_texts = 7;
        config.ingest.batch_max_items = 9;
        let doc = document(&config);
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["CreateInteraction"]["allOf"][0]["properties"]["content"]["maxLength"],
            123
        );
        assert_eq!(
            schemas["SentimentRequest"]["properties"]["text"]["maxLength"],
            123
        );
        assert_eq!(
            schemas["SentimentBatchRequest"]["properties"]["texts"]["maxItems"],
            7
        );
        assert_eq!(
            schemas["CreateBatch"]["properties"]["interactions"]["maxItems"],
            9
        );
    }

    #[test]
    fn links_name_operations_that_exist() {
        let doc = document(&Config::default());
        let mut ids = std::collections::BTreeSet::new();
        let mut targets = Vec::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                ids.insert(op["operationId"].as_str().unwrap().to_owned());
                for response in op["responses"].as_object().unwrap().values() {
                    for link in response["links"].as_object().into_iter().flat_map(|l| l.values()) {
                        targets.push(link["operationId"].as_str().unwrap().to_owned());
                    }
                }
            }
        }
        assert!(targets.len() >= 10, "{targets:?}");
        for target in targets {
            assert!(ids.contains(&target), "{target}");
        }
    }

    #[test]
    fn every_versioned_operation_documents_429_and_every_authenticated_one_401() {
        let doc = doc();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                if path.starts_with(API_PREFIX) {
                    assert!(responses.contains_key("429"), "{method} {path}");
                }
                if op.get("security").is_some() {
                    assert!(responses.contains_key("401"), "{method} {path}");
                }
            }
        }
        let limited = &doc["components"]["responses"]["RateLimited"];
        assert!(limited["headers"]["Retry-After"].is_object());
        assert!(limited["headers"]["RateLimit-Policy"].is_object());
    }
}
