//! The OpenAPI document, generated from the handlers' annotations (utoipa). A test checks that every
//! endpoint the router serves is in it, and that every path in it is served.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{api_keys, auth, customers, interactions, ml, ops, query, users, ws};

#[derive(OpenApi)]
#[openapi(
    info(title = "Insights API", description = "Real-time customer insights: ingestion, sentiment, patterns, live dashboards."),
    paths(
        ops::healthz, ops::readyz, ops::metrics, ops::openapi_json,
        auth::login, auth::refresh, auth::logout, auth::change_password, auth::me,
        users::create_user, users::list_users, users::get_user, users::update_user, users::delete_user,
        api_keys::create_api_key, api_keys::list_api_keys, api_keys::delete_api_key,
        customers::create_customer, customers::list_customers, customers::get_customer, customers::update_customer,
        customers::customer_patterns,
        interactions::create_interaction, interactions::create_batch, interactions::list_interactions,
        interactions::get_interaction,
        ml::sentiment, ml::sentiment_batch,
        query::dashboard, query::trends, query::export,
        ws::upgrade,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Login, tokens and the current user"),
        (name = "users", description = "The organization's users (admin)"),
        (name = "api-keys", description = "Ingest-only API keys (admin)"),
        (name = "customers", description = "Customers and their profiles"),
        (name = "interactions", description = "Ingestion and reading of interactions"),
        (name = "ml", description = "Sentiment predictions"),
        (name = "live", description = "Live events over WSS (see the contract for the frames)"),
        (name = "insights", description = "Dashboard summaries and sentiment trends (cached)"),
        (name = "ops", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearer` scheme: an access token (JWT) or an API key.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}
