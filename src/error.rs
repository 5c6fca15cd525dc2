//! The one error type of the service. Each variant's doc names the HTTP status it maps to; the mapping
//! itself, and the JSON body, live in `http::errors`.

use std::time::Duration;

use crate::domain::FieldError;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400: one or more fields are invalid; every one is listed.
    #[error("request body is invalid")]
    Validation(Vec<FieldError>),
    /// 400: the request could not be read at all (not JSON, wrong content type).
    #[error("{0}")]
    BadRequest(String),
    /// 401: missing, invalid, expired or revoked credentials. Never says which.
    #[error("invalid or expired credentials")]
    Unauthenticated,
    /// 403: authenticated, but the role does not allow this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 404: no such resource in the caller's organization.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 426: a WebSocket handshake in a protocol version this server does not speak (it speaks 13).
    #[error("{0}")]
    UpgradeRequired(&'static str),
    /// 409: the request conflicts with existing data (a duplicate, the last admin).
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is larger than the configured limit.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    /// 429: too many requests or attempts under `quota`; retry after the given time.
    #[error("too many requests")]
    RateLimited {
        retry_after: Duration,
        message: &'static str,
        /// The quota that was used up, such as `user` or `login_failures`.
        quota: &'static str,
    },
    /// 503: this node is at capacity for the request (a full ingest queue, an actor restarting); retry.
    #[error("{0}")]
    Overloaded(&'static str),
    /// 503: the organization is owned by another live node (`owned_elsewhere`), or this node lost its
    /// lease on it; nothing was stored, so the request may be retried.
    #[error("this organization is served by another node; retry shortly")]
    OwnedElsewhere,
    /// 503: the node that owns the organization cannot be reached (`node_unavailable`); whether a request
    /// in flight to it was stored is unknown, so only a retry with an idempotency key is safe.
    #[error("{0}")]
    NodeUnavailable(String),
    /// 503: a dependency (PostgreSQL, the model) cannot be reached.
    #[error("{0} unavailable")]
    Unavailable(&'static str),
    /// 500: a sealed value that none of the data keys opens (another row, tenant or key, or tampered
    /// with); logged and recorded as a security event, never shown to the client.
    #[error("{0}")]
    Decryption(String),
    /// 500: anything else; logged with its cause and where it arose, never shown to the client.
    #[error("{0}")]
    Internal(Internal),
}

impl Error {
    /// An unexpected failure, with the backtrace of this call (R11.2).
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        Self::Internal(Internal::new(e.into()))
    }
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        Self::internal(e)
    }
}

/// An unexpected failure and the backtrace of where it arose: captured always, not only when
/// `RUST_BACKTRACE` is set, because a 500 is the one error nobody can reproduce on demand (R11.2). It
/// costs some tens of microseconds, on a path that should never run. Derefs to the error, so its
/// causes can be inspected (`downcast_ref`).
#[derive(Debug)]
pub struct Internal {
    error: anyhow::Error,
    backtrace: std::backtrace::Backtrace,
}

impl Internal {
    fn new(error: anyhow::Error) -> Self {
        Self {
            error,
            backtrace: std::backtrace::Backtrace::force_capture(),
        }
    }

    /// Where the error arose.
    pub fn backtrace(&self) -> &std::backtrace::Backtrace {
        &self.backtrace
    }
}

impl std::ops::Deref for Internal {
    type Target = anyhow::Error;
    fn deref(&self) -> &anyhow::Error {
        &self.error
    }
}

impl std::fmt::Display for Internal {
    /// The error and its causes, outermost first (`a: b: c`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            tracing::warn!(error = %e, "database unavailable");
            return Self::Unavailable("database");
        }
        if let sqlx::Error::Database(db) = &e
            && db.is_unique_violation()
        {
            return Self::Conflict("resource already exists".to_owned());
        }
        Self::internal(anyhow::Error::new(e))
    }
}

/// Tells whether a database error means "cannot reach PostgreSQL" rather than "the query is wrong".
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
            true
        }
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P01-03: shutdown; 53300: too many connections; 25P03: the
            // server ended a transaction left idle too long (this node was cut off mid-write).
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300" | "25P03")
        }),
        _ => false,
    }
}

/// Returns the name of the unique constraint a database error violated, if that is what it is.
pub fn unique_violation(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) if db.is_unique_violation() => db.constraint().map(str::to_owned),
        _ => None,
    }
}
