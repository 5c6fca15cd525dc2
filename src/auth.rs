//! Authentication and authorization: login, refresh rotation, logout, password change, token and API-key
//! verification, and the principal a request acts as.
//!
//! Verified access tokens are cached (Redis or in-process) for at most the configured TTL (R14.1).
//! Revocation writes a tombstone for the session beside deleting the cached token, and every lookup reads
//! both in one round trip: a verification that raced a logout and re-cached the token still loses to the
//! tombstone (R14.2).

pub mod token;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use chrono::Utc;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::config::AuthConfig;
use crate::domain::{ApiKeyId, Email, OrganizationId, Password, Role, SessionId, UserId};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::store::auth_events::{self, AuthEvent, AuthEventKind};
use crate::store::cache::Cache;
use crate::store::limiter::LoginThrottle;
use crate::store::sessions::{self, Rotation, SessionOwner};
use crate::store::{api_keys, users};
use token::{Claims, TokenError, TokenKeys};

/// Prefix of every API key, so keys are recognizable in logs and secret scanners.
pub const API_KEY_PREFIX: &str = "ik_";

/// Who a request acts as.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A person with a role, through an access token.
    User(UserPrincipal),
    /// A machine client through an organization API key; may only ingest.
    ApiKey {
        key_id: ApiKeyId,
        organization_id: OrganizationId,
        /// The key's own quota per rate-limit window, when it was created with one.
        rate_limit: Option<u32>,
    },
}

/// A verified user and the token they presented.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserPrincipal {
    pub user_id: UserId,
    pub organization_id: OrganizationId,
    pub role: Role,
    pub session_id: SessionId,
    pub email: String,
    pub jti: uuid::Uuid,
}

impl Principal {
    /// Returns the organization the request acts within.
    pub fn organization_id(&self) -> OrganizationId {
        match self {
            Self::User(u) => u.organization_id,
            Self::ApiKey { organization_id, .. } => *organization_id,
        }
    }

    /// Returns the organization if this principal may write customers and interactions: an analyst, an
    /// admin, or an API key (which may do nothing else).
    pub fn require_ingest(&self) -> Result<OrganizationId, Error> {
        match self {
            Self::ApiKey { organization_id, .. } => Ok(*organization_id),
            Self::User(_) => self.require(Role::Analyst).map(|u| u.organization_id),
        }
    }

    /// Returns the user if their role allows `required`; API keys are refused (they only ingest).
    pub fn require(&self, required: Role) -> Result<&UserPrincipal, Error> {
        match self {
            Self::User(u) if u.role.allows(required) => Ok(u),
            Self::User(_) => Err(Error::Forbidden(match required {
                Role::Admin => "this action needs the admin role",
                Role::Analyst => "this action needs the analyst or admin role",
                Role::Viewer => "this action needs a user account",
            })),
            Self::ApiKey { .. } => Err(Error::Forbidden("API keys may only ingest interactions")),
        }
    }
}

/// Tokens returned by login and refresh.
#[derive(Debug, Clone)]
pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
    pub owner: SessionOwner,
}

/// Where a login attempt came from, for the audit trail and throttling.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// The authentication service of a node.
#[derive(Clone)]
pub struct Auth {
    pool: PgPool,
    cache: Cache,
    keys: TokenKeys,
    config: AuthConfig,
    throttle: LoginThrottle,
    metrics: Metrics,
    /// A real bcrypt hash of a random password, verified when the email is unknown so that a miss
    /// costs as much time as a wrong password (R1.3).
    dummy_hash: String,
    /// The quota of each API key this node has verified (a key's quota never changes), so the request
    /// front can count a key's request against it in the same round trip as its verification.
    api_key_limits: Arc<Mutex<HashMap<Vec<u8>, Option<u32>>>>,
}

/// API keys whose quotas a node remembers before it starts over.
const MAX_KNOWN_API_KEYS: usize = 10_000;

/// A bearer credential as far as it can be checked without I/O.
#[derive(Debug, Clone)]
pub enum Credential {
    /// An access token with a valid signature that has not expired.
    Access(Box<Claims>),
    /// Something that looks like an API key, by its digest.
    ApiKey { digest: Vec<u8> },
    /// A token that is malformed, badly signed or expired (the reason, for metrics).
    Invalid(&'static str),
}

/// A verified API key as cached.
#[derive(Debug, Serialize, Deserialize)]
struct CachedApiKey {
    key_id: ApiKeyId,
    organization_id: OrganizationId,
    rate_limit: Option<u32>,
}

impl CachedApiKey {
    fn into_principal(self) -> Principal {
        Principal::ApiKey {
            key_id: self.key_id,
            organization_id: self.organization_id,
            rate_limit: self.rate_limit,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Single inserts and removes only: a panic cannot leave the map half-updated.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Auth {
    /// Builds the service; hashes the dummy password once (a few tens of milliseconds).
    pub async fn new(
        pool: PgPool,
        cache: Cache,
        jwt_secret: &[u8],
        previous_secret: Option<&[u8]>,
        config: AuthConfig,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let keys = TokenKeys::new(jwt_secret, previous_secret)?;
        let throttle = LoginThrottle::new(
            cache.clone(),
            config.login_max_failures,
            config.login_failure_window,
        );
        let dummy_hash = hash_password(random_token(), config.bcrypt_cost).await?;
        Ok(Self {
            pool,
            cache,
            keys,
            config,
            throttle,
            metrics,
            dummy_hash,
            api_key_limits: Arc::default(),
        })
    }

    /// Hashes a password with the configured cost, off the async threads.
    pub async fn hash(&self, password: &Password) -> Result<String, Error> {
        hash_password(password.expose().to_owned(), self.config.bcrypt_cost)
            .await
            .map_err(Error::internal)
    }

    async fn verify_password(&self, password: &str, hash: Option<&str>) -> Result<bool, Error> {
        let known = hash.is_some();
        let hash = hash.unwrap_or(&self.dummy_hash).to_owned();
        let password = password.to_owned();
        // bcrypt::verify compares the digests in constant time (subtle::ConstantTimeEq).
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .map_err(Error::internal)?;
        let outcome = match (known, ok) {
            (false, _) => "dummy",
            (true, true) => "match",
            (true, false) => "mismatch",
        };
        self.metrics
            .password_verifications
            .with_label_values(&[outcome])
            .inc();
        Ok(known && ok)
    }

    /// Logs a user in: checks throttling and the password, opens a session, issues both tokens.
    pub async fn login(
        &self,
        email: &Email,
        password: &str,
        client: &ClientInfo,
    ) -> Result<IssuedTokens, Error> {
        let event = |org, user| AuthEvent {
            organization_id: org,
            user_id: user,
            email: Some(email.as_str()),
            ip: client.ip,
            user_agent: client.user_agent.as_deref(),
            route: Some("/api/v1/auth/login"),
            ..AuthEvent::default()
        };
        let attempt = match self.throttle.attempt(email.as_str(), client.ip).await {
            Ok(attempt) => attempt,
            Err(wait) => {
                tracing::warn!(email = email.as_str(), ip = ?client.ip, retry_after_s = wait.as_secs(), "login throttled");
                auth_events::record(
                    &self.pool,
                    &self.metrics,
                    AuthEventKind::LoginThrottled,
                    event(None, None),
                )
                .await;
                self.metrics.auth_failures.with_label_values(&["throttled"]).inc();
                return Err(Error::RateLimited {
                    retry_after: wait,
                    message: "too many failed logins; try again later",
                    quota: "login_failures",
                });
            }
        };
        let credentials = users::credentials_by_email(&self.pool, email).await?;
        let valid = self
            .verify_password(password, credentials.as_ref().map(|c| c.password_hash.as_str()))
            .await?;
        let credentials = match credentials {
            Some(c) if valid => c,
            other => {
                // The attempt stays counted as a failure.
                drop(attempt);
                let (org, user) = other
                    .map(|c| (Some(c.organization_id), Some(c.id)))
                    .unwrap_or((None, None));
                tracing::warn!(email = email.as_str(), ip = ?client.ip, at = %Utc::now(), "login failed");
                auth_events::record(
                    &self.pool,
                    &self.metrics,
                    AuthEventKind::LoginFailed,
                    event(org, user),
                )
                .await;
                self.metrics
                    .auth_failures
                    .with_label_values(&["bad_credentials"])
                    .inc();
                return Err(Error::Unauthenticated);
            }
        };
        self.throttle.succeeded(attempt).await;

        let now = Utc::now();
        let expires_at = now + self.config.refresh_ttl;
        let mut tx = self.pool.begin().await?;
        let session = sessions::open(
            &mut tx,
            credentials.organization_id,
            credentials.id,
            client.ip,
            client.user_agent.as_deref(),
            expires_at,
        )
        .await?;
        let (refresh, jti) = self.refresh_token(credentials.id, credentials.organization_id, session, now)?;
        sessions::insert_refresh(
            &mut tx,
            credentials.organization_id,
            session,
            jti,
            &digest(&refresh),
            expires_at,
        )
        .await?;
        users::touch_last_login(&mut tx, credentials.id).await?;
        tx.commit().await?;
        auth_events::record(
            &self.pool,
            &self.metrics,
            AuthEventKind::LoginSucceeded,
            event(Some(credentials.organization_id), Some(credentials.id)),
        )
        .await;
        let owner = SessionOwner {
            session_id: session,
            user_id: credentials.id,
            organization_id: credentials.organization_id,
            role: credentials.role,
            email: email.as_str().to_owned(),
        };
        self.issue(owner, refresh)
    }

    /// Signs a new refresh token of `session`; returns it and its id (`jti`, its stored row's id).
    fn refresh_token(
        &self,
        user: UserId,
        org: OrganizationId,
        session: SessionId,
        now: chrono::DateTime<Utc>,
    ) -> Result<(String, uuid::Uuid), Error> {
        let jti = uuid::Uuid::new_v4();
        let (token, _) = self
            .keys
            .issue_refresh(user, org, session, jti, self.config.refresh_ttl, now)
            .map_err(Error::internal)?;
        Ok((token, jti))
    }

    fn issue(&self, owner: SessionOwner, refresh_token: String) -> Result<IssuedTokens, Error> {
        let (access_token, _) = self
            .keys
            .issue(
                owner.user_id,
                owner.organization_id,
                owner.role,
                owner.session_id,
                self.config.access_ttl,
                Utc::now(),
            )
            .map_err(Error::internal)?;
        Ok(IssuedTokens {
            access_token,
            refresh_token,
            expires_in: self.config.access_ttl.as_secs(),
            owner,
        })
    }

    /// Exchanges a refresh token for a new pair; the presented token stops working (rotation). A token
    /// presented twice revokes its whole session.
    pub async fn refresh(&self, refresh_token: &str, client: &ClientInfo) -> Result<IssuedTokens, Error> {
        // The signature, purpose and expiry first: a forged, expired or access token costs no query.
        let claims = match self.keys.verify_refresh(refresh_token) {
            Ok(claims) => claims,
            Err(reason) => {
                let detail = reason.to_string();
                auth_events::record(
                    &self.pool,
                    &self.metrics,
                    AuthEventKind::RefreshInvalid,
                    AuthEvent {
                        ip: client.ip,
                        user_agent: client.user_agent.as_deref(),
                        route: Some("/api/v1/auth/refresh"),
                        detail: Some(&detail),
                        ..AuthEvent::default()
                    },
                )
                .await;
                self.metrics
                    .auth_failures
                    .with_label_values(&["refresh_invalid"])
                    .inc();
                return Err(Error::Unauthenticated);
            }
        };
        let now = Utc::now();
        let expires_at = now + self.config.refresh_ttl;
        let (next, jti) = self.refresh_token(
            UserId(claims.sub),
            OrganizationId(claims.org),
            SessionId(claims.sid),
            now,
        )?;
        let rotation = sessions::rotate(
            &self.pool,
            &digest(refresh_token),
            jti,
            &digest(&next),
            expires_at,
        )
        .await?;
        match rotation {
            Rotation::Rotated(owner) => self.issue(owner, next),
            Rotation::Reused {
                session_id,
                organization_id,
                user_id,
            } => {
                tracing::warn!(session_id = %session_id, user_id = %user_id, ip = ?client.ip, "refresh token reused, session revoked");
                self.forget_sessions(&[session_id]).await;
                auth_events::record(
                    &self.pool,
                    &self.metrics,
                    AuthEventKind::RefreshReused,
                    AuthEvent {
                        organization_id: Some(organization_id),
                        user_id: Some(user_id),
                        ip: client.ip,
                        user_agent: client.user_agent.as_deref(),
                        ..AuthEvent::default()
                    },
                )
                .await;
                self.metrics
                    .auth_failures
                    .with_label_values(&["refresh_reused"])
                    .inc();
                Err(Error::Unauthenticated)
            }
            Rotation::Invalid => {
                self.metrics
                    .auth_failures
                    .with_label_values(&["refresh_invalid"])
                    .inc();
                Err(Error::Unauthenticated)
            }
        }
    }

    /// Verifies a bearer credential: an API key (by its prefix) or an access token.
    pub async fn authenticate(&self, bearer: &str) -> Result<Principal, Error> {
        let credential = self.inspect(bearer);
        self.authenticate_credential(&credential, None).await
    }

    /// Reads what can be known of a bearer credential without I/O: an access token's verified claims
    /// (signature and expiry), or an API key's digest. Whether the session or key is still live needs
    /// the cache or the database: [`Auth::authenticate_credential`].
    pub fn inspect(&self, bearer: &str) -> Credential {
        if bearer.starts_with(API_KEY_PREFIX) {
            return Credential::ApiKey {
                digest: digest(bearer),
            };
        }
        match self.keys.verify(bearer) {
            Ok(claims) => Credential::Access(Box::new(claims)),
            Err(e) => {
                let reason = match e {
                    TokenError::Expired => "expired",
                    TokenError::Invalid(_) => "invalid",
                };
                Credential::Invalid(reason)
            }
        }
    }

    /// The id and organization of the API key with this digest, if it exists.
    pub async fn api_key_owner(
        pool: &PgPool,
        digest: &[u8],
    ) -> Result<Option<(uuid::Uuid, OrganizationId)>, Error> {
        let row: Option<(uuid::Uuid, uuid::Uuid)> =
            sqlx::query_as("SELECT id, organization_id FROM api_keys WHERE key_hash = $1")
                .bind(digest)
                .fetch_optional(pool)
                .await?;
        Ok(row.map(|(id, org)| (id, OrganizationId(org))))
    }

    /// The cache keys [`Auth::authenticate_credential`] reads for this credential, so a caller can read
    /// them along with other work in one round trip.
    pub fn cache_reads(credential: &Credential) -> Vec<String> {
        match credential {
            Credential::Access(claims) => vec![token_key(claims.jti), revoked_key(claims.session_id())],
            Credential::ApiKey { digest } => vec![api_key_cache_key(digest)],
            Credential::Invalid(_) => Vec::new(),
        }
    }

    /// Finishes verifying an inspected credential: its session or key must still be live. `cached` holds
    /// the values of [`Auth::cache_reads`] when the caller has read them already; otherwise they are read.
    pub async fn authenticate_credential(
        &self,
        credential: &Credential,
        cached: Option<&[Option<String>]>,
    ) -> Result<Principal, Error> {
        let read;
        let cached = match cached {
            Some(values) => values,
            None => {
                read = self.cache.get_many(&Self::cache_reads(credential)).await;
                &read
            }
        };
        match credential {
            Credential::Invalid(reason) => {
                self.metrics.auth_failures.with_label_values(&[reason]).inc();
                Err(Error::Unauthenticated)
            }
            Credential::Access(claims) => self.finish_access(claims, cached).await.map(Principal::User),
            Credential::ApiKey { digest } => self.finish_api_key(digest, cached).await,
        }
    }

    /// Verifies an access token: signature and expiry, then that its session is live and its user still
    /// exists (R1.6), through the cache.
    pub async fn verify_access(&self, token: &str) -> Result<UserPrincipal, Error> {
        match self.inspect(token) {
            Credential::ApiKey { .. } => Err(Error::Unauthenticated),
            credential => match self.authenticate_credential(&credential, None).await? {
                Principal::User(user) => Ok(user),
                Principal::ApiKey { .. } => Err(Error::Unauthenticated),
            },
        }
    }

    async fn finish_access(
        &self,
        claims: &Claims,
        cached: &[Option<String>],
    ) -> Result<UserPrincipal, Error> {
        if cached.get(1).is_some_and(Option::is_some) {
            self.metrics.auth_failures.with_label_values(&["revoked"]).inc();
            return Err(Error::Unauthenticated);
        }
        if let Some(Some(json)) = cached.first()
            && let Ok(principal) = serde_json::from_str::<UserPrincipal>(json)
        {
            self.metrics.token_cache.with_label_values(&["hit"]).inc();
            return Ok(principal);
        }
        self.metrics.token_cache.with_label_values(&["miss"]).inc();
        let owner = sessions::live_owner(&self.pool, claims.session_id(), claims.user_id())
            .await?
            .ok_or_else(|| {
                self.metrics.auth_failures.with_label_values(&["revoked"]).inc();
                Error::Unauthenticated
            })?;
        let principal = UserPrincipal {
            user_id: owner.user_id,
            organization_id: owner.organization_id,
            role: owner.role,
            session_id: owner.session_id,
            email: owner.email,
            jti: claims.jti,
        };
        let ttl = cache_ttl(claims, self.config.token_cache_ttl);
        if !ttl.is_zero()
            && let Ok(json) = serde_json::to_string(&principal)
        {
            self.cache.set(&token_key(claims.jti), &json, ttl).await;
        }
        Ok(principal)
    }

    async fn finish_api_key(&self, hash: &[u8], cached: &[Option<String>]) -> Result<Principal, Error> {
        if let Some(Some(json)) = cached.first()
            && let Ok(key) = serde_json::from_str::<CachedApiKey>(json)
        {
            self.remember_api_key_limit(hash, key.rate_limit);
            return Ok(key.into_principal());
        }
        let Some(found) = api_keys::authenticate(&self.pool, hash).await? else {
            self.metrics.auth_failures.with_label_values(&["api_key"]).inc();
            lock(&self.api_key_limits).remove(hash);
            return Err(Error::Unauthenticated);
        };
        let key = CachedApiKey {
            key_id: found.id,
            organization_id: found.organization_id,
            rate_limit: found.rate_limit_per_minute.map(|n| n.max(1) as u32),
        };
        if let Ok(json) = serde_json::to_string(&key) {
            self.cache
                .set(&api_key_cache_key(hash), &json, self.config.api_key_cache_ttl)
                .await;
        }
        self.remember_api_key_limit(hash, key.rate_limit);
        Ok(key.into_principal())
    }

    /// The quota of the API key with this digest, once this node has verified it: `Some(None)` for the
    /// default quota, `None` when the key is not known here yet.
    pub fn api_key_limit(&self, digest: &[u8]) -> Option<Option<u32>> {
        lock(&self.api_key_limits).get(digest).copied()
    }

    fn remember_api_key_limit(&self, digest: &[u8], limit: Option<u32>) {
        let mut limits = lock(&self.api_key_limits);
        if limits.len() >= MAX_KNOWN_API_KEYS && !limits.contains_key(digest) {
            limits.clear();
        }
        limits.insert(digest.to_vec(), limit);
    }

    /// Ends the caller's session: this access token and its refresh token stop working at once.
    pub async fn logout(&self, user: &UserPrincipal, client: &ClientInfo) -> Result<(), Error> {
        sessions::revoke(&self.pool, user.session_id, "logout").await?;
        self.forget_sessions(&[user.session_id]).await;
        self.cache.delete(&[token_key(user.jti)]).await;
        auth_events::record(
            &self.pool,
            &self.metrics,
            AuthEventKind::Logout,
            AuthEvent {
                organization_id: Some(user.organization_id),
                user_id: Some(user.user_id),
                ip: client.ip,
                user_agent: client.user_agent.as_deref(),
                ..AuthEvent::default()
            },
        )
        .await;
        Ok(())
    }

    /// Changes the caller's password after checking the current one; every session of the user ends.
    pub async fn change_password(
        &self,
        user: &UserPrincipal,
        current: &str,
        new: &Password,
        client: &ClientInfo,
    ) -> Result<(), Error> {
        let attempt = self
            .throttle
            .attempt(&user.email, client.ip)
            .await
            .map_err(|wait| {
                tracing::warn!(user_id = %user.user_id, ip = ?client.ip, retry_after_s = wait.as_secs(), "password change throttled");
                self.metrics.auth_failures.with_label_values(&["throttled"]).inc();
                Error::RateLimited {
                    retry_after: wait,
                    message: "too many wrong current passwords; try again later",
                    quota: "login_failures",
                }
            })?;
        let hash = users::password_hash(&self.pool, user.user_id)
            .await?
            .ok_or(Error::Unauthenticated)?;
        if !self.verify_password(current, Some(&hash)).await? {
            // Counted like a failed login (the attempt stays reserved), so a stolen access token cannot
            // be used to guess the password.
            drop(attempt);
            return Err(Error::Validation(vec![crate::domain::FieldError::new(
                "currentPassword",
                "is incorrect",
            )]));
        }
        self.throttle.succeeded(attempt).await;
        let new_hash = self.hash(new).await?;
        let mut tx = self.pool.begin().await?;
        let patch = users::UserPatch {
            password_hash: Some(new_hash),
            ..Default::default()
        };
        users::update(&mut tx, user.organization_id, user.user_id, &patch).await?;
        let revoked = sessions::revoke_all_for_user(&mut tx, user.user_id, "password_changed").await?;
        tx.commit().await?;
        self.forget_sessions(&revoked).await;
        self.cache.delete(&[token_key(user.jti)]).await;
        auth_events::record(
            &self.pool,
            &self.metrics,
            AuthEventKind::PasswordChanged,
            AuthEvent {
                organization_id: Some(user.organization_id),
                user_id: Some(user.user_id),
                ip: client.ip,
                user_agent: client.user_agent.as_deref(),
                ..AuthEvent::default()
            },
        )
        .await;
        Ok(())
    }

    /// Makes cached verifications of these sessions' tokens fail from now on.
    pub async fn forget_sessions(&self, sessions: &[SessionId]) {
        // A tombstone needs to outlive only the access tokens that could name the session.
        let ttl = self.config.access_ttl.max(self.config.token_cache_ttl) + Duration::from_secs(60);
        for session in sessions {
            self.cache.set(&revoked_key(*session), "1", ttl).await;
        }
    }

    /// Drops a deleted API key from the cache.
    pub async fn forget_api_key(&self, digest: &[u8]) {
        lock(&self.api_key_limits).remove(digest);
        self.cache.delete(&[api_key_cache_key(digest)]).await;
    }
}

/// Hashes `password` with bcrypt at `cost` on the blocking pool (R1.4, R9.1).
pub async fn hash_password(password: String, cost: u32) -> anyhow::Result<String> {
    Ok(tokio::task::spawn_blocking(move || bcrypt::hash(password, cost)).await??)
}

/// Returns 32 random bytes, base64url-encoded: refresh tokens and API key secrets.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Returns the SHA-256 digest under which an opaque token is stored.
pub fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The cache key of a verified access token.
pub fn token_key(jti: uuid::Uuid) -> String {
    format!("auth:token:{jti}")
}

/// The cache key of a revoked session's tombstone.
pub fn revoked_key(session: SessionId) -> String {
    format!("auth:revoked:{session}")
}

fn api_key_cache_key(digest: &[u8]) -> String {
    format!("auth:apikey:{}", hex::encode(digest))
}

/// A verified token is cached no longer than the configured TTL, nor past its own expiry.
fn cache_ttl(claims: &Claims, max: Duration) -> Duration {
    let remaining = (claims.exp - Utc::now().timestamp()).max(0) as u64;
    max.min(Duration::from_secs(remaining))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tokens_are_long_and_distinct() {
        let a = random_token();
        assert_eq!(a.len(), 43, "32 bytes in unpadded base64url");
        assert_ne!(a, random_token());
        assert_eq!(digest("x").len(), 32);
    }

    #[test]
    fn cache_ttl_never_outlives_the_token() {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: uuid::Uuid::nil(),
            org: uuid::Uuid::nil(),
            role: Role::Viewer,
            jti: uuid::Uuid::nil(),
            sid: uuid::Uuid::nil(),
            iat: now,
            exp: now + 100,
            typ: "access".into(),
        };
        assert!(cache_ttl(&claims, Duration::from_secs(3600)) <= Duration::from_secs(100));
        assert_eq!(
            cache_ttl(&claims, Duration::from_secs(10)),
            Duration::from_secs(10)
        );
        let expired = Claims {
            exp: now - 5,
            ..claims
        };
        assert_eq!(cache_ttl(&expired, Duration::from_secs(10)), Duration::ZERO);
    }

    #[test]
    fn api_keys_may_not_act_as_users() {
        let key = Principal::ApiKey {
            key_id: ApiKeyId(uuid::Uuid::nil()),
            organization_id: OrganizationId(uuid::Uuid::nil()),
            rate_limit: None,
        };
        assert!(matches!(key.require(Role::Viewer), Err(Error::Forbidden(_))));
        let user = Principal::User(UserPrincipal {
            user_id: UserId(uuid::Uuid::nil()),
            organization_id: OrganizationId(uuid::Uuid::nil()),
            role: Role::Analyst,
            session_id: SessionId(uuid::Uuid::nil()),
            email: "a@b.c".into(),
            jti: uuid::Uuid::nil(),
        });
        assert!(user.require(Role::Viewer).is_ok());
        assert!(user.require(Role::Analyst).is_ok());
        assert!(matches!(user.require(Role::Admin), Err(Error::Forbidden(_))));
    }
}
