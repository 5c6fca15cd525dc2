//! Customers: create, list, profile, update, patterns (R12.5–12.7).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use warp::Filter;
use warp::http::{Method, StatusCode};
use warp::reply::Response;

use super::openapi::params::{CustomerListParams, PageParams};
use super::openapi::schemas;
use super::params::{MAX_TEXT_QUERY_CHARS, Params};
use super::{Endpoint, Page, PageRequest, Shared, authed, json_body, query_map, respond};
use crate::auth::Principal;
use crate::domain::customer::{CustomerView, ExternalId, PatternView, Segment};
use crate::domain::{CustomerId, Email, Fields, PersonName, Role};
use crate::error::Error;
use crate::store::customers::{self, CustomerPatch, CustomerQuery, CustomerSort, NewCustomer};
use crate::store::org_tx::OrgTx;

/// A customer to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateCustomer {
    #[schema(schema_with = schemas::external_id)]
    pub external_id: String,
    #[schema(schema_with = schemas::optional_person_name)]
    pub name: Option<String>,
    #[schema(schema_with = schemas::optional_email)]
    pub email: Option<String>,
    #[schema(schema_with = schemas::optional_segment)]
    pub segment: Option<String>,
    #[schema(schema_with = attributes)]
    pub attributes: Option<serde_json::Value>,
}

/// Changes to a customer: absent fields stay, `null` clears name, email or segment. Other fields are
/// refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateCustomer {
    #[schema(schema_with = schemas::external_id_patch)]
    pub external_id: Option<String>,
    #[schema(schema_with = schemas::person_name_clearable)]
    pub name: Option<String>,
    #[schema(schema_with = schemas::email_clearable)]
    pub email: Option<String>,
    #[schema(schema_with = schemas::segment_clearable)]
    pub segment: Option<String>,
    #[schema(schema_with = attributes_patch)]
    pub attributes: Option<serde_json::Value>,
}

fn attributes() -> utoipa::openapi::schema::Object {
    schemas::optional_object("free-form attributes; null is the same as absent")
}

fn attributes_patch() -> utoipa::openapi::schema::Object {
    schemas::optional_object("replaces the attributes object; absent or null leaves it")
}

/// A customer's patterns.
#[derive(Debug, Serialize, ToSchema)]
pub struct PatternList {
    pub data: Vec<PatternView>,
}

pub fn endpoints(s: &Shared) -> Vec<Endpoint> {
    vec![
        Endpoint::new(
            Method::POST,
            "/api/v1/customers",
            warp::path!("api" / "v1" / "customers")
                .and(warp::post())
                .and(authed(s))
                .and(json_body(s))
                .then(|s: Shared, p: Principal, body: serde_json::Value| async move {
                    respond(StatusCode::CREATED, create_customer(&s, &p, &body).await)
                }),
        ),
        Endpoint::new(
            Method::GET,
            "/api/v1/customers",
            warp::path!("api" / "v1" / "customers")
                .and(warp::get())
                .and(authed(s))
                .and(query_map())
                .then(|s: Shared, p: Principal, q: HashMap<String, String>| async move {
                    respond(StatusCode::OK, list_customers(&s, &p, &q).await)
                }),
        ),
        Endpoint::new(
            Method::GET,
            "/api/v1/customers/{id}",
            warp::path!("api" / "v1" / "customers" / Uuid)
                .and(warp::get())
                .and(authed(s))
                .then(|id: Uuid, s: Shared, p: Principal| async move {
                    super::respond_with(get_customer(&s, &p, CustomerId(id)).await)
                }),
        ),
        Endpoint::new(
            Method::PATCH,
            "/api/v1/customers/{id}",
            warp::path!("api" / "v1" / "customers" / Uuid)
                .and(warp::patch())
                .and(authed(s))
                .and(json_body(s))
                .then(
                    |id: Uuid, s: Shared, p: Principal, body: serde_json::Value| async move {
                        respond(
                            StatusCode::OK,
                            update_customer(&s, &p, CustomerId(id), &body).await,
                        )
                    },
                ),
        ),
        Endpoint::new(
            Method::GET,
            "/api/v1/customers/{id}/patterns",
            warp::path!("api" / "v1" / "customers" / Uuid / "patterns")
                .and(warp::get())
                .and(authed(s))
                .then(|id: Uuid, s: Shared, p: Principal| async move {
                    respond(StatusCode::OK, customer_patterns(&s, &p, CustomerId(id)).await)
                }),
        ),
    ]
}

fn optional_name(raw: &str) -> Result<String, String> {
    PersonName::parse(raw).map(|n| n.as_str().to_owned())
}

fn optional_email(raw: &str) -> Result<String, String> {
    Email::parse(raw).map(|e| e.as_str().to_owned())
}

/// Creates a customer (analysts, admins and API keys).
#[utoipa::path(post, path = "/api/v1/customers", tag = "customers", security(("bearer" = [])), request_body = CreateCustomer,
    responses(
        (status = 201, body = CustomerView, links(
            ("GetCustomer" = (operation_id = "get_customer", parameters(("id" = "$response.body#/id")))),
            ("UpdateCustomer" = (operation_id = "update_customer", parameters(("id" = "$response.body#/id")))),
            ("CustomerPatterns" = (operation_id = "customer_patterns", parameters(("id" = "$response.body#/id")))),
            ("CustomerInteractions" = (operation_id = "list_interactions", parameters(("customerId" = "$response.body#/id")))),
        )),
        (status = 400, body = super::errors::ErrorBody),
        (status = 403, body = super::errors::ErrorBody),
        (status = 409, description = "externalId already used in the organization", body = super::errors::ErrorBody),
    ))]
pub async fn create_customer(
    s: &Shared,
    p: &Principal,
    body: &serde_json::Value,
) -> Result<CustomerView, Error> {
    let org = p.require_ingest()?;
    let mut f = Fields::new(body);
    let external = f.required_str("externalId");
    let external_id = f.parse("externalId", external, ExternalId::parse);
    let name = f.optional_str("name");
    let name = f.parse("name", name, optional_name);
    let email = f.optional_str("email");
    let email = f.parse("email", email, optional_email);
    let segment = f.optional_str("segment");
    let segment = f.parse("segment", segment, Segment::parse);
    let attributes = f.optional_object("attributes").cloned().unwrap_or_default();
    let new = f
        .finish(|| {
            Some(NewCustomer {
                external_id: external_id?,
                name,
                email,
                segment,
                attributes: attributes.into(),
            })
        })
        .map_err(Error::Validation)?;
    let mut tx = OrgTx::unowned(&s.pool, &s.cache, org).await?;
    let row = customers::create(&mut tx, &s.fields, &new).await?;
    tx.commit().await?;
    Ok(row.into_view(Some(Vec::new())))
}

/// Lists customers with filters, sort and paging.
#[utoipa::path(get, path = "/api/v1/customers", tag = "customers", security(("bearer" = [])),
    params(CustomerListParams, PageParams),
    responses((status = 200, body = Page<CustomerView>), (status = 400, body = super::errors::ErrorBody)))]
pub async fn list_customers(
    s: &Shared,
    p: &Principal,
    query: &HashMap<String, String>,
) -> Result<Page<CustomerView>, Error> {
    let org = p.require(Role::Viewer)?.organization_id;
    let mut p = Params::new(query);
    let page = PageRequest::read(&mut p);
    let sort = p
        .parse("sort", CustomerSort::parse)
        .unwrap_or(CustomerSort::CreatedAt);
    let descending = p.descending();
    // PostgreSQL cannot compare text holding U+0000.
    p.refuse_controls("segment");
    let segment = p.text("segment").map(str::to_owned);
    let q = p.search_text("q", MAX_TEXT_QUERY_CHARS).map(str::to_owned);
    p.finish()?;
    let (limit, offset) = page.limit_offset();
    let filter = CustomerQuery {
        segment,
        q,
        sort,
        descending,
        limit,
        offset,
    };
    let (rows, total) = customers::list(&s.pool, &s.fields, org, &filter).await?;
    Ok(Page::new(
        rows.into_iter().map(|r| r.into_view(None)).collect(),
        page,
        total,
    ))
}

/// Returns a customer's profile with its current patterns.
#[utoipa::path(get, path = "/api/v1/customers/{id}", tag = "customers", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = CustomerView, headers(("x-cache" = String, description = "hit or miss"))),
        (status = 404, body = super::errors::ErrorBody)))]
pub async fn get_customer(s: &Shared, p: &Principal, id: CustomerId) -> Result<Response, Error> {
    let org = p.require(Role::Viewer)?.organization_id;
    let ttl = s.config.query.profile_cache_ttl;
    // A profile is read right after it is edited: no freshness window, the data version decides.
    super::summaries::cached(
        s,
        org,
        "customer",
        &id.to_string(),
        ttl,
        std::time::Duration::ZERO,
        || async {
            let row = customers::get(&s.pool, &s.fields, org, id)
                .await?
                .ok_or(Error::NotFound("customer"))?;
            let patterns = current_patterns(s, org, id).await?;
            Ok(row.into_view(Some(patterns)))
        },
    )
    .await
}

/// Changes a customer.
#[utoipa::path(patch, path = "/api/v1/customers/{id}", tag = "customers", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body = UpdateCustomer,
    responses(
        (status = 200, body = CustomerView),
        (status = 400, body = super::errors::ErrorBody),
        (status = 404, body = super::errors::ErrorBody),
        (status = 409, body = super::errors::ErrorBody),
    ))]
pub async fn update_customer(
    s: &Shared,
    p: &Principal,
    id: CustomerId,
    body: &serde_json::Value,
) -> Result<CustomerView, Error> {
    let org = p.require_ingest()?;
    let mut f = Fields::new(body);
    let external = f.optional_str("externalId");
    let external_id = f.parse("externalId", external, ExternalId::parse);
    let name = nullable(&mut f, "name", optional_name);
    let email = nullable(&mut f, "email", optional_email);
    let segment = nullable(&mut f, "segment", Segment::parse);
    let attributes = f
        .optional_object("attributes")
        .cloned()
        .map(serde_json::Value::Object);
    if let Some(object) = body.as_object() {
        for key in object.keys().filter(|k| {
            !matches!(
                k.as_str(),
                "externalId" | "name" | "email" | "segment" | "attributes"
            )
        }) {
            f.error(key, "is not a field that can be changed");
        }
    }
    let patch = f
        .finish(|| {
            Some(CustomerPatch {
                external_id,
                name,
                email,
                segment,
                attributes,
            })
        })
        .map_err(Error::Validation)?;
    let mut tx = OrgTx::unowned(&s.pool, &s.cache, org).await?;
    let row = customers::update(&mut tx, &s.fields, id, &patch)
        .await?
        .ok_or(Error::NotFound("customer"))?;
    tx.commit().await?;
    s.router.customer_changed(org, id);
    let patterns = current_patterns(s, org, id).await?;
    Ok(row.into_view(Some(patterns)))
}

/// The customer's patterns as they hold now (R4.1–4.2): the stored ones, unless one is older than
/// `pattern_max_age`; then they are detected afresh from the customer's interactions of the window (as
/// its actor would) and the owner is told, so a live actor stores the new set (the organization's sweep
/// stores it otherwise). A customer who stopped coming never shows patterns that no longer hold.
async fn current_patterns(
    s: &Shared,
    org: crate::domain::OrganizationId,
    id: CustomerId,
) -> Result<Vec<PatternView>, Error> {
    let stored = customers::patterns(&s.pool, org, id).await?;
    let now = chrono::Utc::now();
    let fresh = chrono::Duration::from_std(s.config.ingest.pattern_max_age)
        .is_ok_and(|age| stored.iter().all(|p| p.detected_at >= now - age));
    if fresh {
        return Ok(stored);
    }
    let since = now - chrono::Duration::days(crate::ml::patterns::WINDOW_DAYS);
    let cap = crate::actors::customer::WINDOW_CAP as i64;
    let events: Vec<_> = customers::recent_events(&s.pool, org, id, since, cap)
        .await?
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    let mut found: Vec<PatternView> = crate::ml::patterns::detect(&events, now)
        .into_iter()
        .map(|p| PatternView {
            pattern_type: p.kind.as_str().to_owned(),
            confidence: p.confidence,
            frequency: p.frequency,
            description: p.description,
            evidence: serde_json::from_str(&p.evidence).unwrap_or_default(),
            window_start: p.window_start,
            window_end: p.window_end,
            detected_at: now,
        })
        .collect();
    found.sort_by(|a, b| {
        b.confidence
            .total_cmp(&a.confidence)
            .then_with(|| a.pattern_type.cmp(&b.pattern_type))
    });
    s.router.customer_changed(org, id);
    Ok(found)
}

/// Reads a nullable PATCH field through `parse`.
fn nullable<T>(
    f: &mut Fields<'_>,
    name: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Option<Option<T>> {
    match f.nullable_str(name)? {
        None => Some(None),
        Some(raw) => f.parse(name, Some(raw), parse).map(Some),
    }
}

/// Returns a customer's current behaviour patterns, highest confidence first.
#[utoipa::path(get, path = "/api/v1/customers/{id}/patterns", tag = "customers", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = PatternList), (status = 404, body = super::errors::ErrorBody)))]
pub async fn customer_patterns(s: &Shared, p: &Principal, id: CustomerId) -> Result<PatternList, Error> {
    let org = p.require(Role::Viewer)?.organization_id;
    customers::get(&s.pool, &s.fields, org, id)
        .await?
        .ok_or(Error::NotFound("customer"))?;
    Ok(PatternList {
        data: current_patterns(s, org, id).await?,
    })
}
