//! Layered configuration: built-in defaults < `insights.toml` < environment.
//!
//! Every key of the file can also be set as `INSIGHTS_<KEY>` in the environment (`DATABASE_URL` and
//! `REDIS_URL` keep their conventional names). Secrets (`INSIGHTS_JWT_SECRET`, `INSIGHTS_DATA_KEY`) are read
//! from the environment only: a config file that names them is refused, so they never end up in a repo.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;

/// Minimum length of the JWT signing secret, in bytes (HS256 wants at least its output size).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Errors found while loading or checking configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key} must not be set in {path}: secrets are read from the environment only")]
    SecretInFile { key: &'static str, path: PathBuf },
    #[error("{key} is invalid: {message}")]
    Invalid { key: &'static str, message: String },
    #[error(
        "INSIGHTS_JWT_SECRET is not set: `serve` needs a secret of at least {MIN_JWT_SECRET_BYTES} bytes to sign tokens (for example: export INSIGHTS_JWT_SECRET=$(openssl rand -base64 48))"
    )]
    MissingJwtSecret,
    #[error(
        "INSIGHTS_JWT_SECRET is too short: it has {0} bytes and needs at least {MIN_JWT_SECRET_BYTES} (for example: export INSIGHTS_JWT_SECRET=$(openssl rand -base64 48))"
    )]
    ShortJwtSecret(usize),
}

/// A secret string that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Returns the secret bytes; callers must not log them.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The whole configuration of a node.
#[derive(Debug, Clone)]
pub struct Config {
    /// PostgreSQL connection string (`DATABASE_URL`).
    pub database_url: String,
    /// Redis connection string (`REDIS_URL`); `None` selects the in-process cache and limiter.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key this node writes, so several deployments can share one Redis.
    pub redis_prefix: String,
    /// Address the HTTPS server binds (`INSIGHTS_LISTEN`).
    pub listen: SocketAddr,
    /// PEM certificate chain; with the key, replaces the generated self-signed certificate.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key matching `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Directory for node-local files (the generated certificate).
    pub data_dir: PathBuf,
    /// Directory of the sentiment model.
    pub model_dir: PathBuf,
    /// The web dashboard's files, served at `/` and `/static/`.
    pub web_dir: PathBuf,
    /// Origins allowed by CORS; empty means no cross-origin access.
    pub cors_origins: Vec<String>,
    /// HS256 signing secret, from the environment only.
    pub jwt_secret: Option<Secret>,
    /// The secret signing before the current one: its tokens still verify (rotation), from the
    /// environment only.
    pub jwt_secret_previous: Option<Secret>,
    /// AES-256 key for sensitive fields, from the environment only.
    pub data_key: Option<[u8; 32]>,
    /// The data key before the current one: still opens what it sealed until `rotate-data-key` has
    /// re-sealed everything, from the environment only.
    pub data_key_previous: Option<[u8; 32]>,
    /// The secret nodes of a cluster share to authenticate each other, from the environment only.
    pub cluster_cookie: Option<Secret>,
    /// Whether `serve` applies migrations at start.
    pub migrate_on_start: bool,
    /// This node's name: scopes its registered actors and names it in a cluster.
    pub node_name: String,
    pub db: DbConfig,
    pub auth: AuthConfig,
    pub http: HttpConfig,
    pub ingest: IngestConfig,
    pub ml: MlConfig,
    pub query: QueryConfig,
    pub ws: WsConfig,
    pub rate_limit: RateLimitConfig,
    pub redis: RedisConfig,
    pub cluster: ClusterConfig,
    pub alerts: AlertConfig,
    /// Enables deliberate faults (a customer actor that panics on request), for crash tests only.
    pub fault_injection: bool,
}

/// The alerts a node raises from its own metrics (R11.11–11.13, R14.10, R9.15); the same conditions as
/// `deploy/prometheus/alerts.yml`. The model's threshold is `ml.slow_threshold` (R11.4).
#[derive(Debug, Clone)]
pub struct AlertConfig {
    pub enabled: bool,
    /// How often the conditions are evaluated.
    pub eval_interval: Duration,
    /// The window of the request, security and model rules, and how long a pool or a member must stay
    /// bad.
    pub window: Duration,
    /// p95 request latency above this alerts (R11.12).
    pub latency_p95: Duration,
    /// Share of 5xx answers above this alerts (R11.13).
    pub error_rate: f64,
    /// Fewer requests (or predictions) in the window than this never alert.
    pub min_requests: u64,
    /// A cache hitting less than this share alerts (R14.10), over `cache_window`.
    pub cache_hit_rate: f64,
    pub cache_window: Duration,
    /// Fewer lookups of a cache in its window than this never alert.
    pub cache_min_lookups: u64,
    /// This many security events in the window alert (R9.15).
    pub security_events: u64,
    /// A pool with this share of its connections in use for a whole window alerts.
    pub pool_saturation: f64,
    /// Where alerts are posted in Alertmanager's format (`POST /api/v2/alerts` of an Alertmanager).
    pub webhook_url: Option<String>,
    /// The first wait before a failed post is retried; it doubles up to a minute.
    pub webhook_backoff: Duration,
    /// Posts of one change before it is given up (and logged).
    pub webhook_attempts: u32,
    /// How often firing alerts are posted again, so Alertmanager keeps them (its `resolve_timeout`).
    pub resend_interval: Duration,
}

/// The sentiment model and its pool (R3, R8.12, R14.6, R15.7).
#[derive(Debug, Clone)]
pub struct MlConfig {
    /// Whether the node loads the model at all.
    pub enabled: bool,
    /// When the model cannot be loaded: refuse to start (true) or start without scoring and say so in /readyz.
    pub required: bool,
    /// The ONNX Runtime shared library (default: `ORT_DYLIB_PATH`).
    pub ort_library: Option<PathBuf>,
    /// Workers in the pool, each with its own session.
    pub workers: usize,
    /// Intra-op threads per session.
    pub threads_per_worker: usize,
    /// Most texts scored in one job (R15.7).
    pub max_batch: usize,
    /// How long the batcher waits for more texts after the first.
    pub gather_window: Duration,
    /// How long a cached prediction lives (R3.12).
    pub cache_ttl: Duration,
    /// Predictions slower than this are logged as warnings (R3.11).
    pub slow_threshold: Duration,
    pub call_timeout: Duration,
    /// Most texts in one batch request.
    pub max_texts: usize,
    /// Interactions waiting for scoring before hand-offs are deferred to the sweep.
    pub queue_capacity: usize,
    /// How often unscored interactions are swept back into the queue.
    pub sweep_interval: Duration,
}

/// Ingestion through the actors, and batches (R2, R15).
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// A customer actor idle this long is stopped; its state is rebuilt from PostgreSQL on the next message.
    pub passivate_after: Duration,
    /// Requests in flight per organization before new ones are answered 503 (bounds every mailbox).
    pub org_max_inflight: usize,
    /// How long a request waits for its customer actor's answer.
    pub call_timeout: Duration,
    /// How far in the future a timestamp may be (client clocks run ahead).
    pub clock_skew: Duration,
    /// Longest accepted interaction content, in characters.
    pub max_content_chars: usize,
    /// Most items in one batch request.
    pub batch_max_items: usize,
    /// Items stored per batch transaction (R2.11, R15.1).
    pub batch_chunk: usize,
    /// Connections of the separate pool batches write through, so they cannot starve single ingestion.
    pub batch_pool_connections: u32,
    /// Most single interactions stored in one transaction (group commit); 1 stores each on its own.
    pub group_commit_max: usize,
    /// Group-commit transactions in flight at once: while one commits, the next group gathers.
    pub group_commit_writers: usize,
    /// Events an organization keeps for replay (R6.7).
    pub event_buffer: usize,
    /// Sequence numbers an organization actor reserves in PostgreSQL at a time, so numbering continues
    /// above every number already handed out after a restart (R6.7).
    pub event_seq_block: u64,
    /// How long a customer's actor gathers new interactions before detecting patterns again.
    pub pattern_debounce: Duration,
    /// Stored patterns older than this are detected again (R4.1–4.2): by the organization's sweep, and
    /// on read (the reader gets them detected afresh), so a lapsed customer's patterns go.
    pub pattern_max_age: Duration,
    /// How often an organization's actor looks for customers whose patterns are older than the age.
    pub pattern_sweep_interval: Duration,
    /// Customers re-evaluated per sweep at most.
    pub pattern_sweep_batch: i64,
    /// How often each organization's actor looks for sentiment drops and negative spikes in its data.
    pub insight_eval_interval: Duration,
}

impl IngestConfig {
    /// The limits every new interaction is validated against.
    pub fn limits(&self) -> crate::domain::interaction::IngestLimits {
        crate::domain::interaction::IngestLimits {
            clock_skew: self.clock_skew,
            max_content_chars: self.max_content_chars,
        }
    }
}

/// Live dashboard connections (R6).
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// How often the server pings; a client silent for two intervals is dropped (R6.5).
    pub ping_interval: Duration,
    /// Events within this window go out as one `batch` frame (R6.10).
    pub batch_window: Duration,
    /// Frames waiting for a slow client before it is told to resync and dropped.
    pub outbound_queue: usize,
}

/// Summaries, their caches and exports (R5, R8.5–8.8, R14.3–14.8, R15.9).
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// How long a dashboard summary stays cached (R8.6, R14.3).
    pub dashboard_cache_ttl: Duration,
    /// How long a customer profile stays cached (R8.7, R14.4).
    pub profile_cache_ttl: Duration,
    /// How long a sentiment trend stays cached (R8.8, R14.5).
    pub trends_cache_ttl: Duration,
    /// The range summarized when a request names no `from`.
    pub default_range: Duration,
    /// Most time buckets one summary may have.
    pub max_buckets: usize,
    /// How many customers the dashboard lists as most negative.
    pub top_customers: i64,
    /// Rows fetched from the export cursor at a time.
    pub export_fetch_rows: usize,
    /// Exports running at once on a node; more get 503.
    pub export_max_concurrent: usize,
    /// How long a cached summary may still be served after a write to its organization: at most this
    /// stale, and at most one recomputation per this period and summary however fast the writes come.
    pub summary_fresh_within: Duration,
    /// How often the rollup deltas are folded into the rollups.
    pub rollup_fold_every: Duration,
    /// Most deltas folded in one transaction.
    pub rollup_fold_batch: i64,
    /// Listing totals that cannot be counted from the rollups are counted up to this bound; beyond it
    /// the total is a lower bound (`totalRelation: "gte"`, R5.12).
    pub count_bound: i64,
}

/// Request quotas (R13). Each quota is a number of requests per `window` (a minute by default, so the
/// environment names say `PER_MIN`); tests shorten the window instead of sleeping through a minute.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// Whether quotas are enforced at all.
    pub enabled: bool,
    /// Every request per client IP (R13.1).
    pub ip_per_window: u32,
    /// Every authenticated request per user (R13.2, R9.6).
    pub user_per_window: u32,
    /// Requests to `/auth/login`, `/auth/refresh` and `/auth/password` per client IP (R13.3, R9.7).
    pub auth_ip_per_window: u32,
    /// Requests per API key, unless the key was created with its own quota.
    pub api_key_per_window: u32,
    pub window: Duration,
    /// The first block of a client that keeps sending while limited; doubled on each repeat (R13.9).
    pub backoff_base: Duration,
    /// The longest block.
    pub backoff_max: Duration,
    /// Peers whose `X-Forwarded-For` names the client (load balancers); anyone else's is ignored.
    pub trusted_proxies: Vec<crate::domain::Cidr>,
}

/// Ownership of organizations (`cluster::Ownership`, `store::leases`).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// How long an owner's leases outlive its last heartbeat; after that another node may take over.
    pub lease_ttl: Duration,
    /// How often a node renews its heartbeat; it stops owning by itself `heartbeat` before the TTL ends.
    pub heartbeat: Duration,
    /// The cluster file (`cluster.toml`); `None` runs standalone without one.
    pub file: Option<PathBuf>,
    /// Whether a missing `file` refuses the start (it was named explicitly) or means standalone (the
    /// default path).
    pub file_required: bool,
    /// How often the cluster file is checked for changes (it is also re-read at SIGHUP).
    pub reload_interval: Duration,
    /// The cluster port's certificate, key and CA (mutual TLS); required when a member's address is not
    /// a loopback address.
    pub tls: Option<TlsFiles>,
    /// Where the cluster listener binds, when not at the node's `address` in the file (behind NAT or a
    /// proxy: the file holds the address peers dial).
    pub listen: Option<std::net::SocketAddr>,
    /// The wire version this node announces, when not the build's own (`cluster::gateway::WIRE_VERSION`):
    /// for compatibility tests only; peers refuse a node that announces another version.
    pub wire_version: Option<u32>,
    /// How often each peer's gateway is pinged; also the ping's timeout.
    pub ping_interval: Duration,
    /// Missed pings in a row after which a peer's session is dropped and redialled.
    pub ping_misses: u32,
    /// How long a request forwarded to an organization's owner may take.
    pub forward_timeout: Duration,
    /// How long a request waits for an unreachable owner's organization to be taken over (its lease
    /// to expire) before it is answered 503 `node_unavailable`.
    pub failover_wait: Duration,
    /// How long a member must have been reachable without a break before organizations are handed to
    /// it (so a flapping node gets none).
    pub join_grace: Duration,
    /// How often each node checks whether its organizations should live elsewhere (their rendezvous
    /// home changed: a node joined, left or came back).
    pub rebalance_interval: Duration,
}

/// The certificate, key and CA (PEM files) of a node's cluster port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl ClusterConfig {
    /// Names the cluster file explicitly (it must then exist); an empty path means no file (standalone).
    fn set_file(&mut self, path: &str) {
        self.file = (!path.is_empty()).then(|| PathBuf::from(path));
        self.file_required = true;
    }
}

/// How the node talks to Redis, and how it stops waiting for it when it is down.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Longest wait for one Redis call before the node treats Redis as down and serves from memory.
    pub op_timeout: Duration,
    /// How often a node whose Redis is down checks whether it is back.
    pub probe_interval: Duration,
    /// PEM file of the CA that signed a `rediss://` server's certificate; unset = the system's roots.
    pub ca_file: Option<PathBuf>,
}

/// Connection pool settings (R8.9: 10–50 connections).
#[derive(Debug, Clone)]
pub struct DbConfig {
    pub max_connections: u32,
    pub min_connections: u32,
    /// How long a request waits for a connection before it is answered 503.
    pub acquire_timeout: Duration,
    /// Statements slower than this are logged (R11.5).
    pub slow_statement: Duration,
    /// PostgreSQL ends a transaction of this node left idle for longer (`idle_in_transaction_session_timeout`),
    /// so a node cut from PostgreSQL mid-write cannot hold an organization's lock past its lease.
    pub idle_in_transaction: Duration,
    /// Lets `DATABASE_URL` reach another machine without TLS (R9.10; refused by default).
    pub allow_plaintext: bool,
}

/// Token lifetimes, hashing cost and login throttling (R1, R9, R14).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub bcrypt_cost: u32,
    /// Upper bound on how long a verified token stays cached (R14.1).
    pub token_cache_ttl: Duration,
    /// Failed logins allowed per email and per IP within `login_failure_window` (R1.5).
    pub login_max_failures: u32,
    pub login_failure_window: Duration,
    /// How long a verified API key stays cached.
    pub api_key_cache_ttl: Duration,
}

/// Request handling limits.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest accepted request body; larger ones get 413.
    pub body_limit_bytes: u64,
    /// Largest accepted batch body (up to `batch_max_items` interactions).
    pub batch_body_limit_bytes: u64,
    /// How long a graceful shutdown waits for open connections.
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: "postgres://postgres@127.0.0.1:5432/insights".to_owned(),
            redis_url: None,
            redis_prefix: "insights".to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            tls_cert: None,
            tls_key: None,
            data_dir: PathBuf::from("data"),
            model_dir: PathBuf::from("models"),
            web_dir: PathBuf::from("web"),
            cors_origins: Vec::new(),
            jwt_secret: None,
            jwt_secret_previous: None,
            data_key: None,
            data_key_previous: None,
            cluster_cookie: None,
            migrate_on_start: true,
            node_name: "insights-1".to_owned(),
            db: DbConfig {
                max_connections: 20,
                min_connections: 10,
                acquire_timeout: Duration::from_secs(3),
                slow_statement: Duration::from_secs(1),
                idle_in_transaction: Duration::from_secs(5),
                allow_plaintext: false,
            },
            auth: AuthConfig {
                access_ttl: Duration::from_secs(3600),
                refresh_ttl: Duration::from_secs(7 * 24 * 3600),
                bcrypt_cost: 10,
                token_cache_ttl: Duration::from_secs(3600),
                login_max_failures: 5,
                login_failure_window: Duration::from_secs(15 * 60),
                api_key_cache_ttl: Duration::from_secs(300),
            },
            http: HttpConfig {
                body_limit_bytes: 1024 * 1024,
                batch_body_limit_bytes: 16 * 1024 * 1024,
                shutdown_grace: Duration::from_secs(10),
            },
            ingest: IngestConfig {
                passivate_after: Duration::from_secs(600),
                org_max_inflight: 1000,
                call_timeout: Duration::from_secs(10),
                clock_skew: Duration::from_secs(30),
                max_content_chars: 10_000,
                batch_max_items: 1000,
                batch_chunk: 100,
                batch_pool_connections: 4,
                group_commit_max: 100,
                group_commit_writers: 2,
                event_buffer: 100,
                event_seq_block: 1000,
                pattern_debounce: Duration::from_secs(1),
                pattern_max_age: Duration::from_secs(24 * 3600),
                pattern_sweep_interval: Duration::from_secs(600),
                pattern_sweep_batch: 100,
                insight_eval_interval: Duration::from_secs(60),
            },
            ml: MlConfig {
                enabled: true,
                required: true,
                ort_library: None,
                workers: 2,
                threads_per_worker: 1,
                max_batch: 32,
                gather_window: Duration::from_millis(2),
                cache_ttl: Duration::from_secs(3600),
                slow_threshold: Duration::from_millis(500),
                call_timeout: Duration::from_secs(10),
                max_texts: 100,
                queue_capacity: 10_000,
                sweep_interval: Duration::from_secs(60),
            },
            ws: WsConfig {
                ping_interval: Duration::from_secs(30),
                batch_window: Duration::from_millis(50),
                outbound_queue: 256,
            },
            query: QueryConfig {
                dashboard_cache_ttl: Duration::from_secs(300),
                profile_cache_ttl: Duration::from_secs(600),
                trends_cache_ttl: Duration::from_secs(900),
                default_range: Duration::from_secs(30 * 24 * 3600),
                max_buckets: 1000,
                top_customers: 10,
                export_fetch_rows: 1000,
                export_max_concurrent: 4,
                summary_fresh_within: Duration::from_millis(1000),
                rollup_fold_every: Duration::from_millis(1000),
                rollup_fold_batch: 50_000,
                count_bound: 10_000,
            },
            rate_limit: RateLimitConfig {
                enabled: true,
                ip_per_window: 1000,
                user_per_window: 100,
                auth_ip_per_window: 5,
                api_key_per_window: 6000,
                window: Duration::from_secs(60),
                backoff_base: Duration::from_secs(1),
                backoff_max: Duration::from_secs(15 * 60),
                trusted_proxies: Vec::new(),
            },
            redis: RedisConfig {
                op_timeout: Duration::from_millis(200),
                probe_interval: Duration::from_secs(1),
                ca_file: None,
            },
            alerts: AlertConfig {
                enabled: true,
                eval_interval: Duration::from_secs(10),
                window: Duration::from_secs(300),
                latency_p95: Duration::from_secs(1),
                error_rate: 0.05,
                min_requests: 20,
                cache_hit_rate: 0.7,
                cache_window: Duration::from_secs(300),
                cache_min_lookups: 50,
                security_events: 20,
                pool_saturation: 0.9,
                webhook_url: None,
                webhook_backoff: Duration::from_secs(1),
                webhook_attempts: 8,
                resend_interval: Duration::from_secs(60),
            },
            cluster: ClusterConfig {
                lease_ttl: Duration::from_secs(6),
                heartbeat: Duration::from_secs(1),
                file: Some(PathBuf::from("cluster.toml")),
                file_required: false,
                reload_interval: Duration::from_secs(2),
                tls: None,
                listen: None,
                wire_version: None,
                ping_interval: Duration::from_secs(1),
                ping_misses: 3,
                forward_timeout: Duration::from_secs(3),
                failover_wait: Duration::from_secs(8),
                join_grace: Duration::from_secs(10),
                rebalance_interval: Duration::from_secs(1),
            },
            fault_injection: false,
        }
    }
}

/// The optional config file; every field may be omitted.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    database_url: Option<String>,
    redis_url: Option<String>,
    redis_prefix: Option<String>,
    listen: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    model_dir: Option<PathBuf>,
    web_dir: Option<PathBuf>,
    cors_origins: Option<Vec<String>>,
    migrate_on_start: Option<bool>,
    node_name: Option<String>,
    db_max_connections: Option<u32>,
    db_min_connections: Option<u32>,
    db_acquire_timeout_ms: Option<u64>,
    db_slow_statement_ms: Option<u64>,
    db_idle_in_transaction_timeout_ms: Option<u64>,
    db_allow_plaintext: Option<bool>,
    access_token_ttl_secs: Option<u64>,
    refresh_token_ttl_secs: Option<u64>,
    bcrypt_cost: Option<u32>,
    token_cache_ttl_secs: Option<u64>,
    login_max_failures: Option<u32>,
    login_failure_window_secs: Option<u64>,
    api_key_cache_ttl_secs: Option<u64>,
    body_limit_bytes: Option<u64>,
    batch_body_limit_bytes: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    passivate_after_secs: Option<u64>,
    org_max_inflight: Option<usize>,
    ingest_call_timeout_ms: Option<u64>,
    clock_skew_secs: Option<u64>,
    max_content_chars: Option<usize>,
    batch_max_items: Option<usize>,
    batch_chunk: Option<usize>,
    batch_pool_connections: Option<u32>,
    group_commit_max: Option<usize>,
    group_commit_writers: Option<usize>,
    event_buffer: Option<usize>,
    event_seq_block: Option<u64>,
    pattern_debounce_ms: Option<u64>,
    pattern_max_age_secs: Option<u64>,
    pattern_sweep_ms: Option<u64>,
    pattern_sweep_batch: Option<i64>,
    insight_eval_ms: Option<u64>,
    ml_enabled: Option<bool>,
    ml_required: Option<bool>,
    ort_library: Option<PathBuf>,
    ml_workers: Option<usize>,
    ml_threads_per_worker: Option<usize>,
    ml_max_batch: Option<usize>,
    ml_gather_window_ms: Option<u64>,
    ml_cache_ttl_secs: Option<u64>,
    ml_slow_ms: Option<u64>,
    ml_queue_capacity: Option<usize>,
    ml_sweep_secs: Option<u64>,
    dashboard_cache_ttl_secs: Option<u64>,
    ws_ping_interval_secs: Option<u64>,
    ws_batch_window_ms: Option<u64>,
    ws_outbound_queue: Option<usize>,
    profile_cache_ttl_secs: Option<u64>,
    trends_cache_ttl_secs: Option<u64>,
    query_default_range_days: Option<u64>,
    query_max_buckets: Option<usize>,
    query_top_customers: Option<i64>,
    export_fetch_rows: Option<usize>,
    export_max_concurrent: Option<usize>,
    cache_hit_rate_alert: Option<f64>,
    cache_hit_rate_window_secs: Option<u64>,
    cache_hit_rate_min_lookups: Option<u64>,
    alerts_enabled: Option<bool>,
    alert_eval_ms: Option<u64>,
    alert_window_secs: Option<u64>,
    alert_latency_p95_ms: Option<u64>,
    alert_error_rate: Option<f64>,
    alert_min_requests: Option<u64>,
    alert_security_events: Option<u64>,
    alert_pool_saturation: Option<f64>,
    alert_webhook_url: Option<String>,
    alert_webhook_backoff_ms: Option<u64>,
    alert_webhook_attempts: Option<u32>,
    alert_resend_secs: Option<u64>,
    summary_fresh_ms: Option<u64>,
    rollup_fold_interval_ms: Option<u64>,
    rollup_fold_batch: Option<i64>,
    listing_count_bound: Option<i64>,
    rate_limit_enabled: Option<bool>,
    rate_limit_ip_per_min: Option<u32>,
    rate_limit_user_per_min: Option<u32>,
    rate_limit_auth_ip_per_min: Option<u32>,
    rate_limit_api_key_per_min: Option<u32>,
    rate_limit_window_secs: Option<u64>,
    rate_limit_backoff_base_ms: Option<u64>,
    rate_limit_backoff_max_secs: Option<u64>,
    trusted_proxies: Option<Vec<String>>,
    redis_timeout_ms: Option<u64>,
    redis_probe_ms: Option<u64>,
    redis_ca_file: Option<PathBuf>,
    lease_ttl_ms: Option<u64>,
    heartbeat_ms: Option<u64>,
    cluster_file: Option<PathBuf>,
    cluster_reload_ms: Option<u64>,
    cluster_ping_ms: Option<u64>,
    cluster_listen: Option<String>,
    cluster_tls_cert: Option<PathBuf>,
    cluster_tls_key: Option<PathBuf>,
    cluster_tls_ca: Option<PathBuf>,
    cluster_ping_misses: Option<u32>,
    cluster_forward_timeout_ms: Option<u64>,
    cluster_failover_wait_ms: Option<u64>,
    cluster_join_grace_ms: Option<u64>,
    cluster_rebalance_ms: Option<u64>,
    // Named only so that their presence can be refused with a clear message.
    jwt_secret: Option<toml::Value>,
    jwt_secret_previous: Option<toml::Value>,
    data_key: Option<toml::Value>,
    data_key_previous: Option<toml::Value>,
    cluster_cookie: Option<toml::Value>,
}

/// A source of environment variables; a map in tests, the process environment in the binary.
pub trait Env {
    fn var(&self, key: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).cloned().filter(|v| !v.is_empty())
    }
}

impl Config {
    /// Loads defaults, then the file at `INSIGHTS_CONFIG` (or `./insights.toml` if it exists), then `env`.
    pub fn load(env: &impl Env) -> Result<Self, ConfigError> {
        let explicit = env.var("INSIGHTS_CONFIG").map(PathBuf::from);
        let path = explicit.clone().unwrap_or_else(|| PathBuf::from("insights.toml"));
        let file = if explicit.is_some() || path.exists() {
            Some(read_file(&path)?)
        } else {
            None
        };
        Self::from_parts(file.as_ref().map(|(p, f)| (p.as_path(), f)), env)
    }

    /// Loads defaults, then the given TOML text (as if read from `path`), then `env`.
    pub fn from_toml_and_env(path: &Path, toml_text: &str, env: &impl Env) -> Result<Self, ConfigError> {
        let file = parse_file(path, toml_text)?;
        Self::from_parts(Some((path, &file)), env)
    }

    fn from_parts(file: Option<(&Path, &FileConfig)>, env: &impl Env) -> Result<Self, ConfigError> {
        let mut config = Config::default();
        if let Some((path, file)) = file {
            config.apply_file(path, file)?;
        }
        config.apply_env(env)?;
        config.check()?;
        Ok(config)
    }

    fn apply_file(&mut self, path: &Path, f: &FileConfig) -> Result<(), ConfigError> {
        if f.jwt_secret.is_some() {
            return Err(ConfigError::SecretInFile {
                key: "jwt_secret",
                path: path.to_owned(),
            });
        }
        if f.jwt_secret_previous.is_some() {
            return Err(ConfigError::SecretInFile {
                key: "jwt_secret_previous",
                path: path.to_owned(),
            });
        }
        if f.data_key.is_some() {
            return Err(ConfigError::SecretInFile {
                key: "data_key",
                path: path.to_owned(),
            });
        }
        if f.data_key_previous.is_some() {
            return Err(ConfigError::SecretInFile {
                key: "data_key_previous",
                path: path.to_owned(),
            });
        }
        if f.cluster_cookie.is_some() {
            return Err(ConfigError::SecretInFile {
                key: "cluster_cookie",
                path: path.to_owned(),
            });
        }
        set(&mut self.database_url, f.database_url.clone());
        if f.redis_url.is_some() {
            self.redis_url = f.redis_url.clone().filter(|u| !u.is_empty());
        }
        set(&mut self.redis_prefix, f.redis_prefix.clone());
        if let Some(listen) = &f.listen {
            self.listen = parse_listen(listen)?;
        }
        set_opt(&mut self.tls_cert, f.tls_cert.clone());
        set_opt(&mut self.tls_key, f.tls_key.clone());
        set(&mut self.data_dir, f.data_dir.clone());
        set(&mut self.model_dir, f.model_dir.clone());
        set(&mut self.web_dir, f.web_dir.clone());
        set(&mut self.cors_origins, f.cors_origins.clone());
        set(&mut self.migrate_on_start, f.migrate_on_start);
        set(&mut self.node_name, f.node_name.clone());
        set(&mut self.db.max_connections, f.db_max_connections);
        set(&mut self.db.min_connections, f.db_min_connections);
        set(
            &mut self.db.acquire_timeout,
            f.db_acquire_timeout_ms.map(Duration::from_millis),
        );
        set(
            &mut self.db.slow_statement,
            f.db_slow_statement_ms.map(Duration::from_millis),
        );
        set(
            &mut self.db.idle_in_transaction,
            f.db_idle_in_transaction_timeout_ms.map(Duration::from_millis),
        );
        set(&mut self.db.allow_plaintext, f.db_allow_plaintext);
        set(
            &mut self.auth.access_ttl,
            f.access_token_ttl_secs.map(Duration::from_secs),
        );
        set(
            &mut self.auth.refresh_ttl,
            f.refresh_token_ttl_secs.map(Duration::from_secs),
        );
        set(&mut self.auth.bcrypt_cost, f.bcrypt_cost);
        set(
            &mut self.auth.token_cache_ttl,
            f.token_cache_ttl_secs.map(Duration::from_secs),
        );
        set(&mut self.auth.login_max_failures, f.login_max_failures);
        set(
            &mut self.auth.login_failure_window,
            f.login_failure_window_secs.map(Duration::from_secs),
        );
        set(
            &mut self.auth.api_key_cache_ttl,
            f.api_key_cache_ttl_secs.map(Duration::from_secs),
        );
        set(&mut self.http.body_limit_bytes, f.body_limit_bytes);
        set(
            &mut self.http.shutdown_grace,
            f.shutdown_grace_secs.map(Duration::from_secs),
        );
        set(&mut self.http.batch_body_limit_bytes, f.batch_body_limit_bytes);
        set(
            &mut self.ingest.passivate_after,
            f.passivate_after_secs.map(Duration::from_secs),
        );
        set(&mut self.ingest.org_max_inflight, f.org_max_inflight);
        set(
            &mut self.ingest.call_timeout,
            f.ingest_call_timeout_ms.map(Duration::from_millis),
        );
        set(
            &mut self.ingest.clock_skew,
            f.clock_skew_secs.map(Duration::from_secs),
        );
        set(&mut self.ingest.max_content_chars, f.max_content_chars);
        set(&mut self.ingest.batch_max_items, f.batch_max_items);
        set(&mut self.ingest.batch_chunk, f.batch_chunk);
        set(&mut self.ingest.batch_pool_connections, f.batch_pool_connections);
        set(&mut self.ingest.group_commit_max, f.group_commit_max);
        set(&mut self.ingest.group_commit_writers, f.group_commit_writers);
        set(&mut self.ingest.event_buffer, f.event_buffer);
        set(&mut self.ingest.event_seq_block, f.event_seq_block);
        set(
            &mut self.ingest.pattern_debounce,
            f.pattern_debounce_ms.map(Duration::from_millis),
        );
        set(
            &mut self.ingest.pattern_max_age,
            f.pattern_max_age_secs.map(Duration::from_secs),
        );
        set(
            &mut self.ingest.pattern_sweep_interval,
            f.pattern_sweep_ms.map(Duration::from_millis),
        );
        set(&mut self.ingest.pattern_sweep_batch, f.pattern_sweep_batch);
        set(
            &mut self.ingest.insight_eval_interval,
            f.insight_eval_ms.map(Duration::from_millis),
        );
        set(&mut self.ml.enabled, f.ml_enabled);
        set(&mut self.ml.required, f.ml_required);
        set_opt(&mut self.ml.ort_library, f.ort_library.clone());
        set(&mut self.ml.workers, f.ml_workers);
        set(&mut self.ml.threads_per_worker, f.ml_threads_per_worker);
        set(&mut self.ml.max_batch, f.ml_max_batch);
        set(
            &mut self.ml.gather_window,
            f.ml_gather_window_ms.map(Duration::from_millis),
        );
        set(
            &mut self.ml.cache_ttl,
            f.ml_cache_ttl_secs.map(Duration::from_secs),
        );
        set(
            &mut self.ml.slow_threshold,
            f.ml_slow_ms.map(Duration::from_millis),
        );
        set(&mut self.ml.queue_capacity, f.ml_queue_capacity);
        set(
            &mut self.ml.sweep_interval,
            f.ml_sweep_secs.map(Duration::from_secs),
        );
        set(
            &mut self.ws.ping_interval,
            f.ws_ping_interval_secs.map(Duration::from_secs),
        );
        set(
            &mut self.ws.batch_window,
            f.ws_batch_window_ms.map(Duration::from_millis),
        );
        set(&mut self.ws.outbound_queue, f.ws_outbound_queue);
        let q = &mut self.query;
        set(
            &mut q.dashboard_cache_ttl,
            f.dashboard_cache_ttl_secs.map(Duration::from_secs),
        );
        set(
            &mut q.profile_cache_ttl,
            f.profile_cache_ttl_secs.map(Duration::from_secs),
        );
        set(
            &mut q.trends_cache_ttl,
            f.trends_cache_ttl_secs.map(Duration::from_secs),
        );
        set(
            &mut q.default_range,
            f.query_default_range_days
                .map(|d| Duration::from_secs(d * 86_400)),
        );
        set(&mut q.max_buckets, f.query_max_buckets);
        set(&mut q.top_customers, f.query_top_customers);
        set(&mut q.export_fetch_rows, f.export_fetch_rows);
        set(&mut q.export_max_concurrent, f.export_max_concurrent);
        let a = &mut self.alerts;
        set(&mut a.cache_hit_rate, f.cache_hit_rate_alert);
        set(
            &mut a.cache_window,
            f.cache_hit_rate_window_secs.map(Duration::from_secs),
        );
        set(&mut a.cache_min_lookups, f.cache_hit_rate_min_lookups);
        set(&mut a.enabled, f.alerts_enabled);
        set(&mut a.eval_interval, f.alert_eval_ms.map(Duration::from_millis));
        set(&mut a.window, f.alert_window_secs.map(Duration::from_secs));
        set(
            &mut a.latency_p95,
            f.alert_latency_p95_ms.map(Duration::from_millis),
        );
        set(&mut a.error_rate, f.alert_error_rate);
        set(&mut a.min_requests, f.alert_min_requests);
        set(&mut a.security_events, f.alert_security_events);
        set(&mut a.pool_saturation, f.alert_pool_saturation);
        if f.alert_webhook_url.is_some() {
            a.webhook_url = f.alert_webhook_url.clone().filter(|u| !u.is_empty());
        }
        set(
            &mut a.webhook_backoff,
            f.alert_webhook_backoff_ms.map(Duration::from_millis),
        );
        set(&mut a.webhook_attempts, f.alert_webhook_attempts);
        set(
            &mut a.resend_interval,
            f.alert_resend_secs.map(Duration::from_secs),
        );
        let q = &mut self.query;
        set(
            &mut q.summary_fresh_within,
            f.summary_fresh_ms.map(Duration::from_millis),
        );
        set(
            &mut q.rollup_fold_every,
            f.rollup_fold_interval_ms.map(Duration::from_millis),
        );
        set(&mut q.rollup_fold_batch, f.rollup_fold_batch);
        set(&mut q.count_bound, f.listing_count_bound);
        let r = &mut self.rate_limit;
        set(&mut r.enabled, f.rate_limit_enabled);
        set(&mut r.ip_per_window, f.rate_limit_ip_per_min);
        set(&mut r.user_per_window, f.rate_limit_user_per_min);
        set(&mut r.auth_ip_per_window, f.rate_limit_auth_ip_per_min);
        set(&mut r.api_key_per_window, f.rate_limit_api_key_per_min);
        set(&mut r.window, f.rate_limit_window_secs.map(Duration::from_secs));
        set(
            &mut r.backoff_base,
            f.rate_limit_backoff_base_ms.map(Duration::from_millis),
        );
        set(
            &mut r.backoff_max,
            f.rate_limit_backoff_max_secs.map(Duration::from_secs),
        );
        if let Some(list) = &f.trusted_proxies {
            r.trusted_proxies = parse_cidrs(list.iter().map(String::as_str))?;
        }
        set(
            &mut self.redis.op_timeout,
            f.redis_timeout_ms.map(Duration::from_millis),
        );
        set(
            &mut self.redis.probe_interval,
            f.redis_probe_ms.map(Duration::from_millis),
        );
        if f.redis_ca_file.is_some() {
            self.redis.ca_file = f.redis_ca_file.clone();
        }
        set(
            &mut self.cluster.lease_ttl,
            f.lease_ttl_ms.map(Duration::from_millis),
        );
        set(
            &mut self.cluster.heartbeat,
            f.heartbeat_ms.map(Duration::from_millis),
        );
        if let Some(file) = &f.cluster_file {
            self.cluster.set_file(file.to_str().unwrap_or_default());
        }
        set(
            &mut self.cluster.reload_interval,
            f.cluster_reload_ms.map(Duration::from_millis),
        );
        set(
            &mut self.cluster.ping_interval,
            f.cluster_ping_ms.map(Duration::from_millis),
        );
        if let Some(listen) = &f.cluster_listen {
            self.cluster.listen = Some(parse_cluster_listen(listen)?);
        }
        self.cluster.tls = cluster_tls(
            f.cluster_tls_cert.clone(),
            f.cluster_tls_key.clone(),
            f.cluster_tls_ca.clone(),
            self.cluster.tls.take(),
        )?;
        set(&mut self.cluster.ping_misses, f.cluster_ping_misses);
        set(
            &mut self.cluster.forward_timeout,
            f.cluster_forward_timeout_ms.map(Duration::from_millis),
        );
        set(
            &mut self.cluster.failover_wait,
            f.cluster_failover_wait_ms.map(Duration::from_millis),
        );
        set(
            &mut self.cluster.join_grace,
            f.cluster_join_grace_ms.map(Duration::from_millis),
        );
        set(
            &mut self.cluster.rebalance_interval,
            f.cluster_rebalance_ms.map(Duration::from_millis),
        );
        Ok(())
    }

    fn apply_env(&mut self, env: &impl Env) -> Result<(), ConfigError> {
        set(&mut self.database_url, env.var("DATABASE_URL"));
        if let Some(url) = env.var("REDIS_URL") {
            self.redis_url = Some(url);
        }
        set(&mut self.redis_prefix, env.var("INSIGHTS_REDIS_PREFIX"));
        if let Some(listen) = env.var("INSIGHTS_LISTEN") {
            self.listen = parse_listen(&listen)?;
        }
        set_opt(
            &mut self.tls_cert,
            env.var("INSIGHTS_TLS_CERT").map(PathBuf::from),
        );
        set_opt(&mut self.tls_key, env.var("INSIGHTS_TLS_KEY").map(PathBuf::from));
        set(
            &mut self.data_dir,
            env.var("INSIGHTS_DATA_DIR").map(PathBuf::from),
        );
        set(
            &mut self.model_dir,
            env.var("INSIGHTS_MODEL_DIR").map(PathBuf::from),
        );
        set(&mut self.web_dir, env.var("INSIGHTS_WEB_DIR").map(PathBuf::from));
        if let Some(origins) = env.var("INSIGHTS_CORS_ORIGINS") {
            self.cors_origins = origins
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(str::to_owned)
                .collect();
        }
        set(
            &mut self.migrate_on_start,
            parse_env(env, "INSIGHTS_MIGRATE_ON_START")?,
        );
        set(&mut self.node_name, env.var("INSIGHTS_NODE_NAME"));
        set(
            &mut self.db.max_connections,
            parse_env(env, "INSIGHTS_DB_MAX_CONNECTIONS")?,
        );
        set(
            &mut self.db.min_connections,
            parse_env(env, "INSIGHTS_DB_MIN_CONNECTIONS")?,
        );
        set(
            &mut self.db.acquire_timeout,
            millis(env, "INSIGHTS_DB_ACQUIRE_TIMEOUT_MS")?,
        );
        set(
            &mut self.db.slow_statement,
            millis(env, "INSIGHTS_DB_SLOW_STATEMENT_MS")?,
        );
        set(
            &mut self.db.idle_in_transaction,
            millis(env, "INSIGHTS_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS")?,
        );
        set(
            &mut self.db.allow_plaintext,
            parse_env(env, "INSIGHTS_DB_ALLOW_PLAINTEXT")?,
        );
        set(
            &mut self.auth.access_ttl,
            secs(env, "INSIGHTS_ACCESS_TOKEN_TTL_SECS")?,
        );
        set(
            &mut self.auth.refresh_ttl,
            secs(env, "INSIGHTS_REFRESH_TOKEN_TTL_SECS")?,
        );
        set(
            &mut self.auth.bcrypt_cost,
            parse_env(env, "INSIGHTS_BCRYPT_COST")?,
        );
        set(
            &mut self.auth.token_cache_ttl,
            secs(env, "INSIGHTS_TOKEN_CACHE_TTL_SECS")?,
        );
        set(
            &mut self.auth.login_max_failures,
            parse_env(env, "INSIGHTS_LOGIN_MAX_FAILURES")?,
        );
        set(
            &mut self.auth.login_failure_window,
            secs(env, "INSIGHTS_LOGIN_FAILURE_WINDOW_SECS")?,
        );
        set(
            &mut self.auth.api_key_cache_ttl,
            secs(env, "INSIGHTS_API_KEY_CACHE_TTL_SECS")?,
        );
        set(
            &mut self.http.body_limit_bytes,
            parse_env(env, "INSIGHTS_BODY_LIMIT_BYTES")?,
        );
        set(
            &mut self.http.shutdown_grace,
            secs(env, "INSIGHTS_SHUTDOWN_GRACE_SECS")?,
        );
        set(
            &mut self.http.batch_body_limit_bytes,
            parse_env(env, "INSIGHTS_BATCH_BODY_LIMIT_BYTES")?,
        );
        set(
            &mut self.ingest.passivate_after,
            secs(env, "INSIGHTS_PASSIVATE_AFTER_SECS")?,
        );
        set(
            &mut self.ingest.org_max_inflight,
            parse_env(env, "INSIGHTS_ORG_MAX_INFLIGHT")?,
        );
        set(
            &mut self.ingest.call_timeout,
            millis(env, "INSIGHTS_INGEST_CALL_TIMEOUT_MS")?,
        );
        set(
            &mut self.ingest.clock_skew,
            secs(env, "INSIGHTS_CLOCK_SKEW_SECS")?,
        );
        set(
            &mut self.ingest.max_content_chars,
            parse_env(env, "INSIGHTS_MAX_CONTENT_CHARS")?,
        );
        set(
            &mut self.ingest.batch_max_items,
            parse_env(env, "INSIGHTS_BATCH_MAX_ITEMS")?,
        );
        set(
            &mut self.ingest.batch_chunk,
            parse_env(env, "INSIGHTS_BATCH_CHUNK")?,
        );
        set(
            &mut self.ingest.batch_pool_connections,
            parse_env(env, "INSIGHTS_BATCH_POOL_CONNECTIONS")?,
        );
        set(
            &mut self.ingest.group_commit_max,
            parse_env(env, "INSIGHTS_GROUP_COMMIT_MAX")?,
        );
        set(
            &mut self.ingest.group_commit_writers,
            parse_env(env, "INSIGHTS_GROUP_COMMIT_WRITERS")?,
        );
        set(
            &mut self.ingest.event_buffer,
            parse_env(env, "INSIGHTS_EVENT_BUFFER")?,
        );
        set(
            &mut self.ingest.event_seq_block,
            parse_env(env, "INSIGHTS_EVENT_SEQ_BLOCK")?,
        );
        set(
            &mut self.ingest.pattern_debounce,
            millis(env, "INSIGHTS_PATTERN_DEBOUNCE_MS")?,
        );
        set(
            &mut self.ingest.pattern_max_age,
            secs(env, "INSIGHTS_PATTERN_MAX_AGE_SECS")?,
        );
        set(
            &mut self.ingest.pattern_sweep_interval,
            millis(env, "INSIGHTS_PATTERN_SWEEP_MS")?,
        );
        set(
            &mut self.ingest.pattern_sweep_batch,
            parse_env(env, "INSIGHTS_PATTERN_SWEEP_BATCH")?,
        );
        set(
            &mut self.ingest.insight_eval_interval,
            millis(env, "INSIGHTS_INSIGHT_EVAL_MS")?,
        );
        set(&mut self.ml.enabled, parse_env(env, "INSIGHTS_ML_ENABLED")?);
        set(&mut self.ml.required, parse_env(env, "INSIGHTS_ML_REQUIRED")?);
        set_opt(
            &mut self.ml.ort_library,
            env.var("ORT_DYLIB_PATH").map(PathBuf::from),
        );
        set_opt(
            &mut self.ml.ort_library,
            env.var("INSIGHTS_ORT_LIBRARY").map(PathBuf::from),
        );
        set(&mut self.ml.workers, parse_env(env, "INSIGHTS_ML_WORKERS")?);
        set(
            &mut self.ml.threads_per_worker,
            parse_env(env, "INSIGHTS_ML_THREADS_PER_WORKER")?,
        );
        set(&mut self.ml.max_batch, parse_env(env, "INSIGHTS_ML_MAX_BATCH")?);
        set(
            &mut self.ml.gather_window,
            millis(env, "INSIGHTS_ML_GATHER_WINDOW_MS")?,
        );
        set(&mut self.ml.cache_ttl, secs(env, "INSIGHTS_ML_CACHE_TTL_SECS")?);
        set(&mut self.ml.slow_threshold, millis(env, "INSIGHTS_ML_SLOW_MS")?);
        set(
            &mut self.ml.queue_capacity,
            parse_env(env, "INSIGHTS_ML_QUEUE_CAPACITY")?,
        );
        set(&mut self.ml.sweep_interval, secs(env, "INSIGHTS_ML_SWEEP_SECS")?);
        set(
            &mut self.ws.ping_interval,
            secs(env, "INSIGHTS_WS_PING_INTERVAL_SECS")?,
        );
        set(
            &mut self.ws.batch_window,
            millis(env, "INSIGHTS_WS_BATCH_WINDOW_MS")?,
        );
        set(
            &mut self.ws.outbound_queue,
            parse_env(env, "INSIGHTS_WS_OUTBOUND_QUEUE")?,
        );
        let q = &mut self.query;
        set(
            &mut q.dashboard_cache_ttl,
            secs(env, "INSIGHTS_DASHBOARD_CACHE_TTL_SECS")?,
        );
        set(
            &mut q.profile_cache_ttl,
            secs(env, "INSIGHTS_PROFILE_CACHE_TTL_SECS")?,
        );
        set(
            &mut q.trends_cache_ttl,
            secs(env, "INSIGHTS_TRENDS_CACHE_TTL_SECS")?,
        );
        set(
            &mut q.default_range,
            parse_env::<u64>(env, "INSIGHTS_QUERY_DEFAULT_RANGE_DAYS")?
                .map(|d| Duration::from_secs(d * 86_400)),
        );
        set(&mut q.max_buckets, parse_env(env, "INSIGHTS_QUERY_MAX_BUCKETS")?);
        set(
            &mut q.top_customers,
            parse_env(env, "INSIGHTS_QUERY_TOP_CUSTOMERS")?,
        );
        set(
            &mut q.export_fetch_rows,
            parse_env(env, "INSIGHTS_EXPORT_FETCH_ROWS")?,
        );
        set(
            &mut q.export_max_concurrent,
            parse_env(env, "INSIGHTS_EXPORT_MAX_CONCURRENT")?,
        );
        let a = &mut self.alerts;
        set(
            &mut a.cache_hit_rate,
            parse_env(env, "INSIGHTS_CACHE_HIT_RATE_ALERT")?,
        );
        set(
            &mut a.cache_window,
            secs(env, "INSIGHTS_CACHE_HIT_RATE_WINDOW_SECS")?,
        );
        set(
            &mut a.cache_min_lookups,
            parse_env(env, "INSIGHTS_CACHE_HIT_RATE_MIN_LOOKUPS")?,
        );
        set(&mut a.enabled, parse_env(env, "INSIGHTS_ALERTS_ENABLED")?);
        set(&mut a.eval_interval, millis(env, "INSIGHTS_ALERT_EVAL_MS")?);
        set(&mut a.window, secs(env, "INSIGHTS_ALERT_WINDOW_SECS")?);
        set(&mut a.latency_p95, millis(env, "INSIGHTS_ALERT_LATENCY_P95_MS")?);
        set(&mut a.error_rate, parse_env(env, "INSIGHTS_ALERT_ERROR_RATE")?);
        set(
            &mut a.min_requests,
            parse_env(env, "INSIGHTS_ALERT_MIN_REQUESTS")?,
        );
        set(
            &mut a.security_events,
            parse_env(env, "INSIGHTS_ALERT_SECURITY_EVENTS")?,
        );
        set(
            &mut a.pool_saturation,
            parse_env(env, "INSIGHTS_ALERT_POOL_SATURATION")?,
        );
        if let Some(url) = env.var("INSIGHTS_ALERT_WEBHOOK_URL") {
            a.webhook_url = Some(url).filter(|u| !u.is_empty());
        }
        set(
            &mut a.webhook_backoff,
            millis(env, "INSIGHTS_ALERT_WEBHOOK_BACKOFF_MS")?,
        );
        set(
            &mut a.webhook_attempts,
            parse_env(env, "INSIGHTS_ALERT_WEBHOOK_ATTEMPTS")?,
        );
        set(&mut a.resend_interval, secs(env, "INSIGHTS_ALERT_RESEND_SECS")?);
        let q = &mut self.query;
        set(
            &mut q.summary_fresh_within,
            millis(env, "INSIGHTS_SUMMARY_FRESH_MS")?,
        );
        set(
            &mut q.rollup_fold_every,
            millis(env, "INSIGHTS_ROLLUP_FOLD_INTERVAL_MS")?,
        );
        set(
            &mut q.rollup_fold_batch,
            parse_env(env, "INSIGHTS_ROLLUP_FOLD_BATCH")?,
        );
        set(
            &mut q.count_bound,
            parse_env(env, "INSIGHTS_LISTING_COUNT_BOUND")?,
        );
        let r = &mut self.rate_limit;
        set(&mut r.enabled, parse_env(env, "INSIGHTS_RATE_LIMIT_ENABLED")?);
        set(
            &mut r.ip_per_window,
            parse_env(env, "INSIGHTS_RATE_LIMIT_IP_PER_MIN")?,
        );
        set(
            &mut r.user_per_window,
            parse_env(env, "INSIGHTS_RATE_LIMIT_USER_PER_MIN")?,
        );
        set(
            &mut r.auth_ip_per_window,
            parse_env(env, "INSIGHTS_RATE_LIMIT_AUTH_IP_PER_MIN")?,
        );
        set(
            &mut r.api_key_per_window,
            parse_env(env, "INSIGHTS_RATE_LIMIT_API_KEY_PER_MIN")?,
        );
        set(&mut r.window, secs(env, "INSIGHTS_RATE_LIMIT_WINDOW_SECS")?);
        set(
            &mut r.backoff_base,
            millis(env, "INSIGHTS_RATE_LIMIT_BACKOFF_BASE_MS")?,
        );
        set(
            &mut r.backoff_max,
            secs(env, "INSIGHTS_RATE_LIMIT_BACKOFF_MAX_SECS")?,
        );
        if let Some(list) = env.var("INSIGHTS_TRUSTED_PROXIES") {
            r.trusted_proxies = parse_cidrs(list.split(',').map(str::trim).filter(|c| !c.is_empty()))?;
        }
        set(
            &mut self.redis.op_timeout,
            millis(env, "INSIGHTS_REDIS_TIMEOUT_MS")?,
        );
        set(
            &mut self.redis.probe_interval,
            millis(env, "INSIGHTS_REDIS_PROBE_MS")?,
        );
        if let Some(file) = env.var("INSIGHTS_REDIS_CA_FILE") {
            self.redis.ca_file = Some(PathBuf::from(file));
        }
        set(&mut self.cluster.lease_ttl, millis(env, "INSIGHTS_LEASE_TTL_MS")?);
        set(&mut self.cluster.heartbeat, millis(env, "INSIGHTS_HEARTBEAT_MS")?);
        if let Some(file) = env.var("INSIGHTS_CLUSTER_FILE") {
            self.cluster.set_file(&file);
        }
        set(
            &mut self.cluster.reload_interval,
            millis(env, "INSIGHTS_CLUSTER_RELOAD_MS")?,
        );
        set(
            &mut self.cluster.ping_interval,
            millis(env, "INSIGHTS_CLUSTER_PING_MS")?,
        );
        set_opt(
            &mut self.cluster.wire_version,
            parse_env(env, "INSIGHTS_CLUSTER_WIRE_VERSION")?,
        );
        if let Some(listen) = env.var("INSIGHTS_CLUSTER_LISTEN") {
            self.cluster.listen = Some(parse_cluster_listen(&listen)?);
        }
        self.cluster.tls = cluster_tls(
            env.var("INSIGHTS_CLUSTER_TLS_CERT").map(PathBuf::from),
            env.var("INSIGHTS_CLUSTER_TLS_KEY").map(PathBuf::from),
            env.var("INSIGHTS_CLUSTER_TLS_CA").map(PathBuf::from),
            self.cluster.tls.take(),
        )?;
        set(
            &mut self.cluster.ping_misses,
            parse_env(env, "INSIGHTS_CLUSTER_PING_MISSES")?,
        );
        set(
            &mut self.cluster.forward_timeout,
            millis(env, "INSIGHTS_CLUSTER_FORWARD_TIMEOUT_MS")?,
        );
        set(
            &mut self.cluster.failover_wait,
            millis(env, "INSIGHTS_CLUSTER_FAILOVER_WAIT_MS")?,
        );
        set(
            &mut self.cluster.join_grace,
            millis(env, "INSIGHTS_CLUSTER_JOIN_GRACE_MS")?,
        );
        set(
            &mut self.cluster.rebalance_interval,
            millis(env, "INSIGHTS_CLUSTER_REBALANCE_MS")?,
        );
        if let Some(cookie) = env.var("INSIGHTS_CLUSTER_COOKIE") {
            self.cluster_cookie = Some(Secret::new(cookie));
        }
        set(
            &mut self.fault_injection,
            parse_env(env, "INSIGHTS_FAULT_INJECTION")?,
        );
        if let Some(secret) = env.var("INSIGHTS_JWT_SECRET") {
            self.jwt_secret = Some(Secret::new(secret));
        }
        if let Some(secret) = env.var("INSIGHTS_JWT_SECRET_PREVIOUS").filter(|s| !s.is_empty()) {
            self.jwt_secret_previous = Some(Secret::new(secret));
        }
        if let Some(key) = env.var("INSIGHTS_DATA_KEY") {
            self.data_key = Some(parse_data_key("INSIGHTS_DATA_KEY", &key)?);
        }
        if let Some(key) = env.var("INSIGHTS_DATA_KEY_PREVIOUS").filter(|k| !k.is_empty()) {
            self.data_key_previous = Some(parse_data_key("INSIGHTS_DATA_KEY_PREVIOUS", &key)?);
        }
        Ok(())
    }

    /// Checks the values that every command needs to be coherent.
    fn check(&self) -> Result<(), ConfigError> {
        if self.db.max_connections == 0 || self.db.min_connections > self.db.max_connections {
            return Err(ConfigError::Invalid {
                key: "db_max_connections",
                message: format!(
                    "need 0 < min ({}) <= max ({})",
                    self.db.min_connections, self.db.max_connections
                ),
            });
        }
        if !(4..=31).contains(&self.auth.bcrypt_cost) {
            return Err(invalid("bcrypt_cost", "must be between 4 and 31"));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(invalid(
                "tls_cert",
                "INSIGHTS_TLS_CERT and INSIGHTS_TLS_KEY must be set together",
            ));
        }
        if self.auth.access_ttl.is_zero() || self.auth.refresh_ttl.is_zero() {
            return Err(invalid(
                "access_token_ttl_secs",
                "token lifetimes must be positive",
            ));
        }
        if self.auth.login_max_failures == 0 || self.auth.login_failure_window.is_zero() {
            return Err(invalid("login_max_failures", "must be positive"));
        }
        if self.node_name.is_empty()
            || !self
                .node_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(invalid(
                "node_name",
                "must be non-empty ASCII letters, digits, '-', '_' or '.'",
            ));
        }
        let i = &self.ingest;
        if i.passivate_after.is_zero() || i.call_timeout.is_zero() {
            return Err(invalid(
                "passivate_after_secs",
                "ingest durations must be positive",
            ));
        }
        if i.org_max_inflight == 0
            || i.batch_max_items == 0
            || i.batch_chunk == 0
            || i.event_buffer == 0
            || i.event_seq_block == 0
        {
            return Err(invalid("batch_chunk", "ingest limits must be positive"));
        }
        if i.batch_pool_connections == 0 || i.max_content_chars == 0 {
            return Err(invalid("batch_pool_connections", "must be positive"));
        }
        if i.group_commit_max == 0 || i.group_commit_max > 1000 {
            return Err(invalid("group_commit_max", "must be between 1 and 1000"));
        }
        if i.group_commit_writers == 0 || i.group_commit_writers as u32 >= self.db.max_connections {
            return Err(invalid(
                "group_commit_writers",
                "must be positive and below db_max_connections (each holds a connection while it writes)",
            ));
        }
        if self.ml.workers == 0 || self.ml.threads_per_worker == 0 || self.ml.max_batch == 0 {
            return Err(invalid(
                "ml_workers",
                "ML workers, threads and batch size must be positive",
            ));
        }
        if self.ml.workers == 0 || self.ml.threads_per_worker == 0 || self.ml.max_batch == 0 {
            return Err(invalid(
                "ml_workers",
                "ML workers, threads and batch size must be positive",
            ));
        }
        if self.ws.ping_interval.is_zero() || self.ws.outbound_queue == 0 {
            return Err(invalid(
                "ws_ping_interval_secs",
                "the ping interval and outbound queue must be positive",
            ));
        }
        let q = &self.query;
        if q.default_range.is_zero() || q.max_buckets == 0 || q.top_customers <= 0 {
            return Err(invalid(
                "query_max_buckets",
                "summary range, buckets and top customers must be positive",
            ));
        }
        if q.export_fetch_rows == 0 || q.export_max_concurrent == 0 {
            return Err(invalid("export_fetch_rows", "export limits must be positive"));
        }
        if q.rollup_fold_every.is_zero() || q.rollup_fold_batch <= 0 {
            return Err(invalid(
                "rollup_fold_interval_ms",
                "the fold interval and batch must be positive",
            ));
        }
        if q.count_bound <= 0 {
            return Err(invalid("listing_count_bound", "must be positive"));
        }
        let a = &self.alerts;
        if !(0.0..=1.0).contains(&a.cache_hit_rate) {
            return Err(invalid("cache_hit_rate_alert", "must be between 0 and 1"));
        }
        if !(0.0..=1.0).contains(&a.error_rate) {
            return Err(invalid("alert_error_rate", "must be between 0 and 1"));
        }
        if !(0.0..=1.0).contains(&a.pool_saturation) {
            return Err(invalid("alert_pool_saturation", "must be between 0 and 1"));
        }
        if a.eval_interval.is_zero() || a.window.is_zero() || a.cache_window.is_zero() {
            return Err(invalid(
                "alert_window_secs",
                "the evaluation interval and the windows must be positive",
            ));
        }
        if a.webhook_attempts == 0 || a.webhook_backoff.is_zero() || a.resend_interval.is_zero() {
            return Err(invalid(
                "alert_webhook_attempts",
                "the webhook's attempts, backoff and resend interval must be positive",
            ));
        }
        if let Some(url) = &a.webhook_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(invalid("alert_webhook_url", "must be an http:// or https:// URL"));
        }
        let r = &self.rate_limit;
        if r.ip_per_window == 0
            || r.user_per_window == 0
            || r.auth_ip_per_window == 0
            || r.api_key_per_window == 0
        {
            return Err(invalid(
                "rate_limit_ip_per_min",
                "quotas must be positive (set rate_limit_enabled = false to turn limits off)",
            ));
        }
        if r.window.is_zero() || r.backoff_base.is_zero() || r.backoff_max < r.backoff_base {
            return Err(invalid(
                "rate_limit_window_secs",
                "the window and backoff must be positive, with backoff_max >= backoff_base",
            ));
        }
        let i = &self.ingest;
        if i.insight_eval_interval.is_zero() {
            return Err(invalid("insight_eval_ms", "must be positive"));
        }
        if i.pattern_max_age.is_zero() || i.pattern_sweep_interval.is_zero() || i.pattern_sweep_batch <= 0 {
            return Err(invalid(
                "pattern_max_age_secs",
                "the pattern age, sweep interval and sweep batch must be positive",
            ));
        }
        if self.db.idle_in_transaction.is_zero() {
            return Err(invalid("db_idle_in_transaction_timeout_ms", "must be positive"));
        }
        if self.redis.op_timeout.is_zero() || self.redis.probe_interval.is_zero() {
            return Err(invalid("redis_timeout_ms", "must be positive"));
        }
        if self.redis.ca_file.is_some()
            && !self
                .redis_url
                .as_deref()
                .is_some_and(|u| u.starts_with("rediss://"))
        {
            return Err(invalid(
                "redis_ca_file",
                "is for a TLS connection: REDIS_URL must be rediss://",
            ));
        }
        if self.cluster.heartbeat.is_zero() || self.cluster.heartbeat * 2 > self.cluster.lease_ttl {
            return Err(invalid(
                "lease_ttl_ms",
                "the heartbeat must be positive and at most half the lease TTL",
            ));
        }
        if self.cluster.reload_interval.is_zero() {
            return Err(invalid("cluster_reload_ms", "must be positive"));
        }
        if self.cluster.ping_interval.is_zero() || self.cluster.ping_misses == 0 {
            return Err(invalid(
                "cluster_ping_ms",
                "the ping interval and the misses allowed must be positive",
            ));
        }
        if self.cluster.forward_timeout.is_zero() {
            return Err(invalid("cluster_forward_timeout_ms", "must be positive"));
        }
        if self.cluster.rebalance_interval.is_zero() {
            return Err(invalid("cluster_rebalance_ms", "must be positive"));
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.contains(char::is_whitespace) {
            return Err(invalid(
                "redis_prefix",
                "must be non-empty and without whitespace",
            ));
        }
        for origin in &self.cors_origins {
            if origin == "*" || !(origin.starts_with("https://") || origin.starts_with("http://")) {
                return Err(invalid(
                    "cors_origins",
                    &format!(
                        "{origin:?} is not an origin such as https://app.example.com (wildcards are not allowed)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Returns the data key, or why a node cannot start without one (R9.9).
    pub fn require_data_key(&self) -> Result<&[u8; 32], ConfigError> {
        self.data_key.as_ref().ok_or_else(|| {
            invalid(
                "INSIGHTS_DATA_KEY",
                "is required: base64 of 32 random bytes (for example `openssl rand -base64 32`); customers' \
                 names, emails and attributes are encrypted with it",
            )
        })
    }

    /// Returns the JWT secret, or why `serve` cannot start without one.
    pub fn require_jwt_secret(&self) -> Result<&Secret, ConfigError> {
        let secret = self.jwt_secret.as_ref().ok_or(ConfigError::MissingJwtSecret)?;
        let len = secret.expose().len();
        if len < MIN_JWT_SECRET_BYTES {
            return Err(ConfigError::ShortJwtSecret(len));
        }
        if let Some(previous) = &self.jwt_secret_previous {
            let len = previous.expose().len();
            if len < MIN_JWT_SECRET_BYTES {
                return Err(ConfigError::Invalid {
                    key: "INSIGHTS_JWT_SECRET_PREVIOUS",
                    message: format!("must be at least {MIN_JWT_SECRET_BYTES} bytes (got {len})"),
                });
            }
        }
        Ok(secret)
    }
}

fn read_file(path: &Path) -> Result<(PathBuf, FileConfig), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok((path.to_owned(), parse_file(path, &text)?))
}

fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.message().to_owned(),
    })
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

fn set_opt<T>(slot: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *slot = value;
    }
}

/// The cluster TLS files: all three given, or none (then the earlier layer's stay).
fn cluster_tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    earlier: Option<TlsFiles>,
) -> Result<Option<TlsFiles>, ConfigError> {
    match (cert, key, ca) {
        (None, None, None) => Ok(earlier),
        (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles { cert, key, ca })),
        _ => Err(invalid(
            "cluster_tls_cert",
            "set the cluster's TLS certificate, key and CA together (INSIGHTS_CLUSTER_TLS_CERT, _KEY, _CA)",
        )),
    }
}

fn parse_cluster_listen(value: &str) -> Result<std::net::SocketAddr, ConfigError> {
    value.trim().parse().map_err(|_| {
        invalid(
            "cluster_listen",
            &format!("{value:?} is not an IP address and port such as 10.0.0.11:4697"),
        )
    })
}

fn invalid(key: &'static str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.to_owned(),
    }
}

fn parse_listen(value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        invalid(
            "listen",
            &format!("{value:?} is not an address such as 127.0.0.1:8443"),
        )
    })
}

fn parse_env<T: std::str::FromStr>(env: &impl Env, key: &'static str) -> Result<Option<T>, ConfigError> {
    match env.var(key) {
        None => Ok(None),
        Some(raw) => raw
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| invalid(key, &format!("{raw:?} is not a valid value"))),
    }
}

fn secs(env: &impl Env, key: &'static str) -> Result<Option<Duration>, ConfigError> {
    Ok(parse_env::<u64>(env, key)?.map(Duration::from_secs))
}

fn millis(env: &impl Env, key: &'static str) -> Result<Option<Duration>, ConfigError> {
    Ok(parse_env::<u64>(env, key)?.map(Duration::from_millis))
}

fn parse_cidrs<'a>(list: impl Iterator<Item = &'a str>) -> Result<Vec<crate::domain::Cidr>, ConfigError> {
    list.map(|c| crate::domain::Cidr::parse(c).map_err(|e| invalid("trusted_proxies", &e)))
        .collect()
}

fn parse_data_key(key: &'static str, value: &str) -> Result<[u8; 32], ConfigError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| invalid(key, "must be base64"))?;
    bytes
        .try_into()
        .map_err(|_| invalid(key, "must decode to exactly 32 bytes (AES-256)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_follow_the_requirements() {
        let c = Config::load(&env(&[("INSIGHTS_CONFIG", "/nonexistent/insights.toml")]));
        assert!(
            matches!(c, Err(ConfigError::Read { .. })),
            "an explicit missing file is an error"
        );
        let c = Config::from_parts(None, &env(&[])).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(c.auth.access_ttl, Duration::from_secs(3600));
        assert_eq!(c.auth.refresh_ttl, Duration::from_secs(604_800));
        assert_eq!(c.auth.bcrypt_cost, 10);
        assert_eq!(c.auth.login_max_failures, 5);
        assert_eq!(c.auth.login_failure_window, Duration::from_secs(900));
        assert!(c.redis_url.is_none());
        assert!(c.jwt_secret.is_none());
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let toml = "listen = \"0.0.0.0:9000\"\nredis_url = \"redis://file\"\nbcrypt_cost = 12\ncors_origins = [\"https://a.example\"]\n";
        let c = Config::from_toml_and_env(Path::new("x.toml"), toml, &env(&[])).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.redis_url.as_deref(), Some("redis://file"));
        assert_eq!(c.auth.bcrypt_cost, 12);
        assert_eq!(c.cors_origins, vec!["https://a.example"]);

        let e = env(&[
            ("INSIGHTS_LISTEN", "127.0.0.1:9100"),
            ("REDIS_URL", "redis://env"),
            ("INSIGHTS_BCRYPT_COST", "11"),
            ("INSIGHTS_CORS_ORIGINS", "https://b.example, https://c.example"),
            ("DATABASE_URL", "postgres://x/y"),
        ]);
        let c = Config::from_toml_and_env(Path::new("x.toml"), toml, &e).unwrap();
        assert_eq!(c.listen.port(), 9100);
        assert_eq!(c.redis_url.as_deref(), Some("redis://env"));
        assert_eq!(c.auth.bcrypt_cost, 11);
        assert_eq!(c.cors_origins, vec!["https://b.example", "https://c.example"]);
        assert_eq!(c.database_url, "postgres://x/y");
    }

    #[test]
    fn the_example_file_holds_exactly_the_defaults() {
        let text = include_str!("../insights.example.toml");
        let from_file =
            Config::from_toml_and_env(Path::new("insights.example.toml"), text, &env(&[])).unwrap();
        assert_eq!(
            format!("{from_file:?}"),
            format!("{:?}", Config::from_parts(None, &env(&[])).unwrap())
        );
    }

    #[test]
    fn secrets_in_the_file_are_refused() {
        let err =
            Config::from_toml_and_env(Path::new("i.toml"), "jwt_secret = \"abc\"", &env(&[])).unwrap_err();
        assert!(err.to_string().contains("environment only"), "{err}");
        let err =
            Config::from_toml_and_env(Path::new("i.toml"), "data_key = \"abc\"", &env(&[])).unwrap_err();
        assert!(matches!(err, ConfigError::SecretInFile { key: "data_key", .. }));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_the_key_named() {
        let err = Config::from_toml_and_env(Path::new("i.toml"), "lisen = \"x\"", &env(&[])).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        let err = Config::from_parts(None, &env(&[("INSIGHTS_LISTEN", "nowhere")])).unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
        let err = Config::from_parts(None, &env(&[("INSIGHTS_BCRYPT_COST", "ten")])).unwrap_err();
        assert!(err.to_string().contains("INSIGHTS_BCRYPT_COST"), "{err}");
        let err = Config::from_parts(None, &env(&[("INSIGHTS_CORS_ORIGINS", "*")])).unwrap_err();
        assert!(err.to_string().contains("wildcards"), "{err}");
        let err = Config::from_parts(None, &env(&[("INSIGHTS_TLS_CERT", "/c.pem")])).unwrap_err();
        assert!(err.to_string().contains("together"), "{err}");
    }

    #[test]
    fn jwt_secret_must_be_present_and_long_enough() {
        let c = Config::from_parts(None, &env(&[])).unwrap();
        assert!(matches!(
            c.require_jwt_secret(),
            Err(ConfigError::MissingJwtSecret)
        ));
        let c = Config::from_parts(None, &env(&[("INSIGHTS_JWT_SECRET", "short")])).unwrap();
        let err = c.require_jwt_secret().unwrap_err();
        assert!(matches!(err, ConfigError::ShortJwtSecret(5)));
        assert!(err.to_string().contains("at least 32"), "{err}");
        let long = "x".repeat(32);
        let c = Config::from_parts(None, &env(&[("INSIGHTS_JWT_SECRET", &long)])).unwrap();
        assert_eq!(c.require_jwt_secret().unwrap().expose(), long);
        assert_eq!(
            format!("{:?}", c.jwt_secret),
            "Some(Secret(***))",
            "secrets never print"
        );
    }

    #[test]
    fn data_key_must_be_base64_of_32_bytes() {
        let good = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let c = Config::from_parts(None, &env(&[("INSIGHTS_DATA_KEY", &good)])).unwrap();
        assert_eq!(c.data_key, Some([7u8; 32]));
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        assert!(Config::from_parts(None, &env(&[("INSIGHTS_DATA_KEY", &short)])).is_err());
        assert!(Config::from_parts(None, &env(&[("INSIGHTS_DATA_KEY", "%%%")])).is_err());
    }
}
