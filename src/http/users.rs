//! The organization's users, managed by its admins (R1.9).

use std::collections::HashMap;

use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;
use warp::Filter;
use warp::http::{Method, StatusCode};

use super::openapi::params::PageParams;
use super::openapi::schemas;
use super::params::Params;
use super::{Endpoint, Page, PageRequest, Shared, authed, json_body, no_content, query_map, respond};
use crate::auth::Principal;
use crate::domain::{Email, Fields, Password, PersonName, Role, User, UserId};
use crate::error::Error;
use crate::store::{sessions, users};

/// A new user.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateUser {
    #[schema(schema_with = schemas::email)]
    pub email: String,
    #[schema(schema_with = schemas::person_name)]
    pub name: String,
    #[schema(schema_with = schemas::password)]
    pub password: String,
    pub role: Role,
}

/// Changes to a user; absent (or null) fields stay as they are, other fields are refused. Changing the
/// role or password ends the user's sessions.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[schema(schema_with = schemas::optional_person_name)]
    pub name: Option<String>,
    #[schema(nullable)]
    pub role: Option<Role>,
    #[schema(schema_with = schemas::password_patch)]
    pub password: Option<String>,
}

pub fn endpoints(s: &Shared) -> Vec<Endpoint> {
    vec![
        Endpoint::new(
            Method::POST,
            "/api/v1/users",
            warp::path!("api" / "v1" / "users")
                .and(warp::post())
                .and(authed(s))
                .and(json_body(s))
                .then(|s: Shared, p: Principal, body: serde_json::Value| async move {
                    respond(StatusCode::CREATED, create_user(&s, &p, &body).await)
                }),
        ),
        Endpoint::new(
            Method::GET,
            "/api/v1/users",
            warp::path!("api" / "v1" / "users")
                .and(warp::get())
                .and(authed(s))
                .and(query_map())
                .then(|s: Shared, p: Principal, q: HashMap<String, String>| async move {
                    respond(StatusCode::OK, list_users(&s, &p, &q).await)
                }),
        ),
        Endpoint::new(
            Method::GET,
            "/api/v1/users/{id}",
            warp::path!("api" / "v1" / "users" / Uuid)
                .and(warp::get())
                .and(authed(s))
                .then(|id: Uuid, s: Shared, p: Principal| async move {
                    respond(StatusCode::OK, get_user(&s, &p, UserId(id)).await)
                }),
        ),
        Endpoint::new(
            Method::PATCH,
            "/api/v1/users/{id}",
            warp::path!("api" / "v1" / "users" / Uuid)
                .and(warp::patch())
                .and(authed(s))
                .and(json_body(s))
                .then(
                    |id: Uuid, s: Shared, p: Principal, body: serde_json::Value| async move {
                        respond(StatusCode::OK, update_user(&s, &p, UserId(id), &body).await)
                    },
                ),
        ),
        Endpoint::new(
            Method::DELETE,
            "/api/v1/users/{id}",
            warp::path!("api" / "v1" / "users" / Uuid)
                .and(warp::delete())
                .and(authed(s))
                .then(|id: Uuid, s: Shared, p: Principal| async move {
                    no_content(delete_user(&s, &p, UserId(id)).await)
                }),
        ),
    ]
}

fn parse_role(raw: &str) -> Result<Role, String> {
    Role::parse(raw)
}

/// Creates a user in the caller's organization.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", security(("bearer" = [])), request_body = CreateUser,
    responses(
        (status = 201, body = User, links(
            ("GetUser" = (operation_id = "get_user", parameters(("id" = "$response.body#/id")))),
            ("UpdateUser" = (operation_id = "update_user", parameters(("id" = "$response.body#/id")))),
            ("DeleteUser" = (operation_id = "delete_user", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 400, body = super::errors::ErrorBody),
        (status = 403, description = "not an admin", body = super::errors::ErrorBody),
        (status = 409, description = "email already used", body = super::errors::ErrorBody),
    ))]
pub async fn create_user(s: &Shared, p: &Principal, body: &serde_json::Value) -> Result<User, Error> {
    let admin = p.require(Role::Admin)?;
    let mut f = Fields::new(body);
    let email = f.required_str("email");
    let email = f.parse("email", email, Email::parse);
    let name = f.required_str("name");
    let name = f.parse("name", name, PersonName::parse);
    let password = f.required_str("password");
    let password = f.parse("password", password, Password::parse);
    let role = f.required_str("role");
    let role = f.parse("role", role, parse_role);
    let (email, name, password, role) = f
        .finish(|| Some((email?, name?, password?, role?)))
        .map_err(Error::Validation)?;
    let hash = s.auth.hash(&password).await?;
    let mut conn = s.pool.acquire().await?;
    let user = users::create(&mut conn, admin.organization_id, &email, &name, &hash, role).await?;
    tracing::info!(admin = %admin.user_id, user = %user.id, role = %role, "user created");
    Ok(user)
}

/// Lists the organization's users.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", security(("bearer" = [])),
    params(PageParams),
    responses((status = 200, body = Page<User>), (status = 400, body = super::errors::ErrorBody), (status = 403, body = super::errors::ErrorBody)))]
pub async fn list_users(
    s: &Shared,
    p: &Principal,
    query: &HashMap<String, String>,
) -> Result<Page<User>, Error> {
    let admin = p.require(Role::Admin)?;
    let mut p = Params::new(query);
    let page = PageRequest::read(&mut p);
    p.finish()?;
    let (limit, offset) = page.limit_offset();
    let (data, total) = users::list(&s.pool, admin.organization_id, limit, offset).await?;
    Ok(Page::new(data, page, total))
}

/// Returns one user of the organization.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = User), (status = 403, body = super::errors::ErrorBody), (status = 404, body = super::errors::ErrorBody)))]
pub async fn get_user(s: &Shared, p: &Principal, id: UserId) -> Result<User, Error> {
    let admin = p.require(Role::Admin)?;
    users::get(&s.pool, admin.organization_id, id)
        .await?
        .ok_or(Error::NotFound("user"))
}

/// Changes a user's name, role or password.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body = UpdateUser,
    responses(
        (status = 200, body = User),
        (status = 400, body = super::errors::ErrorBody),
        (status = 403, body = super::errors::ErrorBody),
        (status = 404, body = super::errors::ErrorBody),
        (status = 409, description = "would leave the organization without an admin", body = super::errors::ErrorBody),
    ))]
pub async fn update_user(
    s: &Shared,
    p: &Principal,
    id: UserId,
    body: &serde_json::Value,
) -> Result<User, Error> {
    let admin = p.require(Role::Admin)?;
    let mut f = Fields::new(body);
    let name = f.optional_str("name");
    let name = f.parse("name", name, PersonName::parse);
    let role = f.optional_str("role");
    let role = f.parse("role", role, parse_role);
    let password = f.optional_str("password");
    let password = f.parse("password", password, Password::parse);
    if let Some(object) = body.as_object() {
        for key in object
            .keys()
            .filter(|k| !matches!(k.as_str(), "name" | "role" | "password"))
        {
            f.error(key, "is not a field that can be changed");
        }
    }
    let (name, role, password) = f
        .finish(|| Some((name, role, password)))
        .map_err(Error::Validation)?;
    let password_hash = match &password {
        Some(p) => Some(s.auth.hash(p).await?),
        None => None,
    };
    let ends_sessions = role.is_some() || password_hash.is_some();
    let patch = users::UserPatch {
        name,
        role,
        password_hash,
    };
    let mut tx = s.pool.begin().await?;
    let user = users::update(&mut tx, admin.organization_id, id, &patch)
        .await?
        .ok_or(Error::NotFound("user"))?;
    // A new role or password takes effect at once: the user's tokens stop working and they log in again.
    let ended = if ends_sessions {
        sessions::revoke_all_for_user(&mut tx, id, "changed_by_admin").await?
    } else {
        Vec::new()
    };
    tx.commit().await?;
    s.auth.forget_sessions(&ended).await;
    tracing::info!(admin = %admin.user_id, user = %id, sessions_ended = ended.len(), "user updated");
    Ok(user)
}

/// Deletes a user; their tokens stop working at once.
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 204),
        (status = 403, body = super::errors::ErrorBody),
        (status = 404, body = super::errors::ErrorBody),
        (status = 409, description = "the last admin cannot be deleted", body = super::errors::ErrorBody),
    ))]
pub async fn delete_user(s: &Shared, p: &Principal, id: UserId) -> Result<(), Error> {
    let admin = p.require(Role::Admin)?;
    let mut tx = s.pool.begin().await?;
    let user_sessions = sessions::all_for_user(&mut tx, id).await?;
    if !users::delete(&mut tx, admin.organization_id, id).await? {
        return Err(Error::NotFound("user"));
    }
    tx.commit().await?;
    s.auth.forget_sessions(&user_sessions).await;
    tracing::info!(admin = %admin.user_id, user = %id, "user deleted");
    Ok(())
}
