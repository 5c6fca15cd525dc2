//! Login, refresh, logout, password change and `/me` (R1, R9.1–9.4, R14.1–14.2).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use warp::Filter;
use warp::http::{Method, StatusCode};

use super::openapi::schemas;
use super::{Endpoint, Shared, authed, client_info, json_body, no_content, respond, with_state};
use crate::auth::{ClientInfo, IssuedTokens, Principal};
use crate::domain::{Email, Fields, Password, Role, User};
use crate::error::Error;
use crate::store::users;

/// Credentials.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    #[schema(schema_with = schemas::email)]
    pub email: String,
    #[schema(schema_with = schemas::current_password)]
    pub password: String,
}

/// The user a token was issued to.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenUser {
    #[schema(format = Uuid)]
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    #[schema(format = Uuid)]
    pub organization_id: String,
}

/// A successful login.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginResponse {
    /// HS256 JWT (`typ` access), valid `expiresIn` seconds.
    pub access_token: String,
    /// HS256 JWT (`typ` refresh, 7 days), usable once at `/api/v1/auth/refresh`.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub user: TokenUser,
}

/// A refresh token to exchange.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// A new token pair; the refresh token presented is now spent.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefreshResponse {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
}

/// A password change; the new password must differ from the current one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PasswordChange {
    #[schema(schema_with = schemas::current_password)]
    pub current_password: String,
    #[schema(schema_with = schemas::password)]
    pub new_password: String,
}

pub fn endpoints(s: &Shared) -> Vec<Endpoint> {
    vec![
        Endpoint::new(
            Method::POST,
            "/api/v1/auth/login",
            warp::path!("api" / "v1" / "auth" / "login")
                .and(warp::post())
                .and(with_state(s))
                .and(client_info())
                .and(json_body(s))
                .then(
                    |s: Shared, client: ClientInfo, body: serde_json::Value| async move {
                        respond(StatusCode::OK, login(&s, &client, &body).await)
                    },
                ),
        ),
        Endpoint::new(
            Method::POST,
            "/api/v1/auth/refresh",
            warp::path!("api" / "v1" / "auth" / "refresh")
                .and(warp::post())
                .and(with_state(s))
                .and(client_info())
                .and(json_body(s))
                .then(
                    |s: Shared, client: ClientInfo, body: serde_json::Value| async move {
                        respond(StatusCode::OK, refresh(&s, &client, &body).await)
                    },
                ),
        ),
        Endpoint::new(
            Method::POST,
            "/api/v1/auth/logout",
            warp::path!("api" / "v1" / "auth" / "logout")
                .and(warp::post())
                .and(authed(s))
                .and(client_info())
                .then(|s: Shared, p: Principal, client: ClientInfo| async move {
                    no_content(logout(&s, &p, &client).await)
                }),
        ),
        Endpoint::new(
            Method::POST,
            "/api/v1/auth/password",
            warp::path!("api" / "v1" / "auth" / "password")
                .and(warp::post())
                .and(authed(s))
                .and(client_info())
                .and(json_body(s))
                .then(
                    |s: Shared, p: Principal, client: ClientInfo, body: serde_json::Value| async move {
                        no_content(change_password(&s, &p, &client, &body).await)
                    },
                ),
        ),
        Endpoint::new(
            Method::GET,
            "/api/v1/me",
            warp::path!("api" / "v1" / "me")
                .and(warp::get())
                .and(authed(s))
                .then(|s: Shared, p: Principal| async move { respond(StatusCode::OK, me(&s, &p).await) }),
        ),
    ]
}

/// Logs in with email and password.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, body = LoginResponse),
        (status = 400, description = "invalid body", body = super::errors::ErrorBody),
        (status = 401, description = "wrong email or password (never says which)", body = super::errors::ErrorBody),
        (status = 429, description = "too many failed logins", body = super::errors::ErrorBody),
    ))]
pub async fn login(
    s: &Shared,
    client: &ClientInfo,
    body: &serde_json::Value,
) -> Result<LoginResponse, Error> {
    let mut f = Fields::new(body);
    let email = f.required_str("email");
    let password = f.required_str("password");
    // A malformed email cannot belong to a user; it is still a 400, since it says nothing about who exists.
    let email = f.parse("email", email, Email::parse);
    if password.is_some_and(str::is_empty) {
        f.error("password", "must not be empty");
    }
    let (email, password) = f
        .finish(|| Some((email?, password?)))
        .map_err(Error::Validation)?;
    let tokens = s.auth.login(&email, password, client).await?;
    let user = users::get(&s.pool, tokens.owner.organization_id, tokens.owner.user_id)
        .await?
        .ok_or(Error::Unauthenticated)?;
    Ok(login_response(tokens, &user))
}

fn login_response(tokens: IssuedTokens, user: &User) -> LoginResponse {
    LoginResponse {
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        token_type: "Bearer",
        expires_in: tokens.expires_in,
        user: TokenUser {
            id: user.id.to_string(),
            email: user.email.clone(),
            name: user.name.clone(),
            role: user.role,
            organization_id: user.organization_id.to_string(),
        },
    }
}

/// Exchanges a refresh token for a new pair (rotation).
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, body = RefreshResponse),
        (status = 400, body = super::errors::ErrorBody),
        (status = 401, description = "not a refresh token of this service (an access token, another key, a forgery), expired, revoked or already used", body = super::errors::ErrorBody),
    ))]
pub async fn refresh(
    s: &Shared,
    client: &ClientInfo,
    body: &serde_json::Value,
) -> Result<RefreshResponse, Error> {
    let mut f = Fields::new(body);
    let token = f.required_str("refreshToken");
    let token = f.finish(|| token).map_err(Error::Validation)?;
    let tokens = s.auth.refresh(token, client).await?;
    Ok(RefreshResponse {
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        token_type: "Bearer",
        expires_in: tokens.expires_in,
    })
}

/// Ends the session of the presented access token; it and its refresh token stop working at once.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = super::errors::ErrorBody)))]
pub async fn logout(s: &Shared, p: &Principal, client: &ClientInfo) -> Result<(), Error> {
    let user = p.require(Role::Viewer)?;
    s.auth.logout(user, client).await
}

/// Changes the caller's password; every token of the caller stops working.
#[utoipa::path(post, path = "/api/v1/auth/password", tag = "auth", security(("bearer" = [])),
    request_body = PasswordChange,
    responses(
        (status = 204),
        (status = 400, description = "invalid new password, or wrong current password", body = super::errors::ErrorBody),
        (status = 401, body = super::errors::ErrorBody),
    ))]
pub async fn change_password(
    s: &Shared,
    p: &Principal,
    client: &ClientInfo,
    body: &serde_json::Value,
) -> Result<(), Error> {
    let user = p.require(Role::Viewer)?;
    let mut f = Fields::new(body);
    let current = f.required_str("currentPassword");
    let new = f.required_str("newPassword");
    let new = f.parse("newPassword", new, Password::parse);
    if let (Some(c), Some(n)) = (current, &new)
        && c == n.expose()
    {
        f.error("newPassword", "must differ from the current password");
    }
    let (current, new) = f.finish(|| Some((current?, new?))).map_err(Error::Validation)?;
    s.auth.change_password(user, current, &new, client).await
}

/// Returns the authenticated user.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401, body = super::errors::ErrorBody), (status = 403, body = super::errors::ErrorBody)))]
pub async fn me(s: &Shared, p: &Principal) -> Result<User, Error> {
    let user = p.require(Role::Viewer)?;
    users::get(&s.pool, user.organization_id, user.user_id)
        .await?
        .ok_or(Error::Unauthenticated)
}
