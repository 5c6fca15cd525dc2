//! Prometheus metrics of one node (R11.6–11.9), rendered at `/metrics`.
//!
//! Each `App` owns its own registry, so several apps in one process (the integration tests) do not mix
//! their counts.

use std::sync::Arc;

use prometheus::{
    Encoder as _, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The metrics of a node; cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

/// The individual series.
pub struct Inner {
    pub registry: Registry,
    /// Requests by method, route template and status.
    pub http_requests: IntCounterVec,
    /// Request latency by method and route template.
    pub http_duration: HistogramVec,
    /// Password hashes verified, by outcome (`match`, `mismatch`, `dummy` for unknown emails).
    pub password_verifications: IntCounterVec,
    /// Failed authentications by reason.
    pub auth_failures: IntCounterVec,
    /// Security events recorded, by kind (R9.15).
    pub security_events: IntCounterVec,
    /// Verified-token cache lookups by result (`hit`, `miss`).
    pub token_cache: IntCounterVec,
    /// Cache operations that failed because Redis was unreachable.
    pub cache_errors: IntCounterVec,
    /// Child actors restarted by a supervisor, by supervisor.
    pub actor_restarts: IntCounterVec,
    /// Live actors by kind (`org`, `customer`).
    pub live_actors: IntGaugeVec,
    /// Events numbered by organization actors, by kind.
    pub events_published: IntCounterVec,
    /// Ingest requests refused before reaching an actor, by reason.
    pub ingest_rejected: IntCounterVec,
    /// Hand-offs that found the scoring queue full (the sweep scores those rows later).
    pub scoring_deferred: prometheus::IntCounter,
    /// Prediction cache lookups by result (`hit`, `miss`), R11.8.
    pub ml_cache: IntCounterVec,
    /// Latency of a prediction request (cache lookups included).
    pub ml_latency: prometheus::Histogram,
    /// Stored interactions handed on for sentiment scoring.
    pub scoring_handoffs: prometheus::IntCounter,
    /// Connections of each PostgreSQL pool (`main`, `batch`) by state (`in_use`, `idle`), R11.9.
    pub db_pool_connections: IntGaugeVec,
    /// The most connections each pool opens.
    pub db_pool_max_connections: IntGaugeVec,
    /// How long taking a connection from each pool took (probed every second, as a request would wait).
    pub db_pool_acquire: HistogramVec,
    /// Live dashboard connections (WSS).
    pub ws_connections: IntGauge,
    /// WebSocket text messages by direction (`in` from clients, `out` to them).
    pub ws_messages: IntCounterVec,
    /// Texts per model run (R15.7).
    pub ml_batch_size: prometheus::Histogram,
    /// Rows per write transaction of ingestion, by kind (`single`: a group commit of single interactions;
    /// `scores`: the scores of one scored batch).
    pub ingest_group_size: HistogramVec,
    /// Texts waiting, by queue (`predictions`: single texts for the batcher; `scoring`: stored
    /// interactions for the scoring pipeline).
    pub ml_queue_depth: IntGaugeVec,
    /// Response cache lookups by endpoint (`dashboard`, `trends`, `customer`, `count` for bounded listing
    /// totals) and result (`hit`, `miss`).
    pub summary_cache: IntCounterVec,
    /// Hit ratio of each cache over the last check window (R14.10), 0 to 1; NaN without lookups.
    pub cache_hit_ratio: GaugeVec,
    /// Alerts this node has firing (R11.11).
    pub alerts_firing: IntGauge,
    /// How long one organization's insight evaluation took (rules, rollups, detection, records).
    pub insight_evaluation: prometheus::Histogram,
    /// Posts of alerts to the webhook by outcome (`delivered`, `retried`, `given_up`).
    pub alert_webhook_posts: IntCounterVec,
    /// Exports by format and outcome (`completed`, `failed`, `aborted` by the client).
    pub exports: IntCounterVec,
    /// Rows written by exports.
    pub export_rows: prometheus::IntCounter,
    /// Rollup deltas folded into the rollups, and folds that failed (retried at the next tick).
    pub rollup_deltas_folded: prometheus::IntCounter,
    pub rollup_fold_failures: prometheus::IntCounter,
    /// Dashboard connections dropped by the server, by reason (`slow`, `heartbeat`).
    pub ws_dropped: IntCounterVec,
    /// Resumes and event gaps answered with `resync`.
    pub ws_resyncs: prometheus::IntCounter,
    /// Events that arrived at a session after a gap (their predecessor unseen), filled or resynced.
    pub ws_gaps: prometheus::IntCounter,
    /// `batch` frames sent.
    pub ws_batches: prometheus::IntCounter,
    /// Requests refused by a quota, by quota (R13.7).
    pub rate_limited: IntCounterVec,
    /// 1 while Redis is treated as down and the node serves from memory.
    pub redis_breaker_open: IntGauge,
    /// Times the node stopped using Redis because it failed or was too slow.
    pub redis_breaker_trips: prometheus::IntCounter,
    /// 1 while the cluster file last read is valid; 0 while an invalid one is ignored.
    pub cluster_config_valid: IntGauge,
    /// Re-reads of a changed cluster file, by result (`applied`, `invalid`).
    pub cluster_config_reloads: IntCounterVec,
    /// The members of the cluster file by state as this node sees them (`up`, `leaving`, `down`,
    /// `unknown`).
    pub cluster_members: IntGaugeVec,
}

impl std::ops::Deref for Metrics {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Metrics {
    /// Registers every series in a new registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("insights".to_owned()), None)?;
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by method, route and status"),
            &["method", "route", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["method", "route"],
        )?;
        let password_verifications = IntCounterVec::new(
            Opts::new("password_verifications_total", "bcrypt verifications by outcome"),
            &["outcome"],
        )?;
        let security_events = IntCounterVec::new(
            Opts::new(
                "security_events_total",
                "security events recorded (failed logins, throttles, refresh reuse, permission denials, rate-limit blocks, decryption failures), by kind",
            ),
            &["kind"],
        )?;
        let auth_failures = IntCounterVec::new(
            Opts::new("auth_failures_total", "failed authentications by reason"),
            &["reason"],
        )?;
        let token_cache = IntCounterVec::new(
            Opts::new("token_cache_lookups_total", "verified-token cache lookups"),
            &["result"],
        )?;
        let cache_errors = IntCounterVec::new(
            Opts::new("cache_errors_total", "cache operations failed by Redis errors"),
            &["op"],
        )?;
        let actor_restarts = IntCounterVec::new(
            Opts::new("actor_restarts_total", "child actors restarted"),
            &["supervisor"],
        )?;
        let live_actors = IntGaugeVec::new(Opts::new("live_actors", "live actors by kind"), &["kind"])?;
        let events_published = IntCounterVec::new(
            Opts::new("events_published_total", "organization events by kind"),
            &["kind"],
        )?;
        let ingest_rejected = IntCounterVec::new(
            Opts::new("ingest_rejected_total", "ingest requests refused by reason"),
            &["reason"],
        )?;
        let scoring_deferred =
            prometheus::IntCounter::new("scoring_deferred_total", "hand-offs deferred to the sweep")?;
        let ml_cache = IntCounterVec::new(
            Opts::new("ml_cache_lookups_total", "prediction cache lookups"),
            &["result"],
        )?;
        let ml_latency = prometheus::Histogram::with_opts(
            HistogramOpts::new("ml_prediction_seconds", "sentiment prediction latency").buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        )?;
        let scoring_handoffs = prometheus::IntCounter::new(
            "scoring_handoffs_total",
            "stored interactions handed on for scoring",
        )?;
        let db_pool_connections = IntGaugeVec::new(
            Opts::new(
                "db_pool_connections",
                "PostgreSQL connections of each pool, in use or idle",
            ),
            &["pool", "state"],
        )?;
        let db_pool_max_connections = IntGaugeVec::new(
            Opts::new(
                "db_pool_max_connections",
                "the most connections each PostgreSQL pool opens",
            ),
            &["pool"],
        )?;
        let db_pool_acquire = HistogramVec::new(
            HistogramOpts::new(
                "db_pool_acquire_seconds",
                "time to take a connection from each pool, probed every second",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["pool"],
        )?;
        let ws_connections = IntGauge::new("ws_connections", "live dashboard connections")?;
        let ws_messages = IntCounterVec::new(
            Opts::new("ws_messages_total", "WebSocket text messages by direction"),
            &["direction"],
        )?;
        let ml_batch_size = prometheus::Histogram::with_opts(
            HistogramOpts::new("ml_batch_size", "texts per model run")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
        )?;
        let ingest_group_size = HistogramVec::new(
            HistogramOpts::new(
                "ingest_group_size",
                "rows per write transaction of ingestion, by kind",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
            &["kind"],
        )?;
        let ml_queue_depth = IntGaugeVec::new(
            Opts::new("ml_queue_depth", "texts waiting to be scored, by queue"),
            &["queue"],
        )?;
        let alerts_firing = IntGauge::new("alerts_firing", "alerts this node has firing")?;
        let insight_evaluation = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "insight_evaluation_seconds",
                "time to evaluate one organization's insight alerts",
            )
            .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]),
        )?;
        let alert_webhook_posts = IntCounterVec::new(
            Opts::new(
                "alert_webhook_posts_total",
                "posts of alerts to the webhook by outcome",
            ),
            &["outcome"],
        )?;
        let summary_cache = IntCounterVec::new(
            Opts::new("response_cache_lookups_total", "response cache lookups"),
            &["endpoint", "result"],
        )?;
        let cache_hit_ratio = GaugeVec::new(
            Opts::new(
                "cache_hit_ratio",
                "hit ratio of each cache over the last check window (NaN without lookups)",
            ),
            &["cache"],
        )?;
        let exports = IntCounterVec::new(
            Opts::new("exports_total", "interaction exports by format and outcome"),
            &["format", "outcome"],
        )?;
        let export_rows = prometheus::IntCounter::new("export_rows_total", "rows written by exports")?;
        let rollup_deltas_folded = prometheus::IntCounter::new(
            "rollup_deltas_folded_total",
            "rollup deltas folded into the hourly, daily and per-customer rollups",
        )?;
        let rollup_fold_failures =
            prometheus::IntCounter::new("rollup_fold_failures_total", "rollup folds that failed")?;
        let ws_dropped = IntCounterVec::new(
            Opts::new("ws_dropped_total", "dashboard connections dropped by the server"),
            &["reason"],
        )?;
        let ws_resyncs =
            prometheus::IntCounter::new("ws_resyncs_total", "resumes and event gaps answered with resync")?;
        let ws_gaps = prometheus::IntCounter::new(
            "ws_gaps_total",
            "events that reached a session after a gap in the numbering (filled by replay or resync)",
        )?;
        let ws_batches = prometheus::IntCounter::new("ws_batches_total", "batch frames sent")?;
        let rate_limited = IntCounterVec::new(
            Opts::new("rate_limited_total", "requests refused by a quota"),
            &["quota"],
        )?;
        let redis_breaker_open = IntGauge::new(
            "redis_breaker_open",
            "1 while Redis is treated as down and the node serves from its in-process cache and limiter",
        )?;
        let redis_breaker_trips = prometheus::IntCounter::new(
            "redis_breaker_trips_total",
            "times the node stopped using Redis because a call failed or timed out",
        )?;
        let cluster_config_valid = IntGauge::new(
            "cluster_config_valid",
            "1 while the cluster file last read is valid, 0 while an invalid one is ignored",
        )?;
        let cluster_config_reloads = IntCounterVec::new(
            Opts::new(
                "cluster_config_reloads_total",
                "re-reads of a changed cluster file, by result",
            ),
            &["result"],
        )?;
        let cluster_members = IntGaugeVec::new(
            Opts::new(
                "cluster_members",
                "members of the cluster file by state, as this node sees them",
            ),
            &["state"],
        )?;
        registry.register(Box::new(cluster_config_valid.clone()))?;
        registry.register(Box::new(cluster_config_reloads.clone()))?;
        registry.register(Box::new(cluster_members.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(redis_breaker_open.clone()))?;
        registry.register(Box::new(redis_breaker_trips.clone()))?;
        registry.register(Box::new(ws_dropped.clone()))?;
        registry.register(Box::new(ws_resyncs.clone()))?;
        registry.register(Box::new(ws_gaps.clone()))?;
        registry.register(Box::new(ws_batches.clone()))?;
        registry.register(Box::new(summary_cache.clone()))?;
        registry.register(Box::new(cache_hit_ratio.clone()))?;
        registry.register(Box::new(alerts_firing.clone()))?;
        registry.register(Box::new(insight_evaluation.clone()))?;
        registry.register(Box::new(alert_webhook_posts.clone()))?;
        registry.register(Box::new(db_pool_connections.clone()))?;
        registry.register(Box::new(db_pool_max_connections.clone()))?;
        registry.register(Box::new(db_pool_acquire.clone()))?;
        registry.register(Box::new(ws_connections.clone()))?;
        registry.register(Box::new(ws_messages.clone()))?;
        registry.register(Box::new(ml_batch_size.clone()))?;
        registry.register(Box::new(ingest_group_size.clone()))?;
        registry.register(Box::new(ml_queue_depth.clone()))?;
        registry.register(Box::new(exports.clone()))?;
        registry.register(Box::new(export_rows.clone()))?;
        registry.register(Box::new(rollup_deltas_folded.clone()))?;
        registry.register(Box::new(rollup_fold_failures.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(password_verifications.clone()))?;
        registry.register(Box::new(auth_failures.clone()))?;
        registry.register(Box::new(security_events.clone()))?;
        registry.register(Box::new(token_cache.clone()))?;
        registry.register(Box::new(cache_errors.clone()))?;
        registry.register(Box::new(actor_restarts.clone()))?;
        registry.register(Box::new(live_actors.clone()))?;
        registry.register(Box::new(events_published.clone()))?;
        registry.register(Box::new(ingest_rejected.clone()))?;
        registry.register(Box::new(scoring_handoffs.clone()))?;
        registry.register(Box::new(ml_cache.clone()))?;
        registry.register(Box::new(scoring_deferred.clone()))?;
        registry.register(Box::new(ml_latency.clone()))?;
        Ok(Self(Arc::new(Inner {
            registry,
            http_requests,
            http_duration,
            password_verifications,
            auth_failures,
            security_events,
            token_cache,
            cache_errors,
            actor_restarts,
            live_actors,
            events_published,
            ingest_rejected,
            scoring_handoffs,
            ml_cache,
            ml_latency,
            scoring_deferred,
            db_pool_connections,
            db_pool_max_connections,
            db_pool_acquire,
            ws_connections,
            ws_messages,
            ml_batch_size,
            ingest_group_size,
            ml_queue_depth,
            summary_cache,
            cache_hit_ratio,
            alerts_firing,
            insight_evaluation,
            alert_webhook_posts,
            exports,
            export_rows,
            rollup_deltas_folded,
            rollup_fold_failures,
            ws_dropped,
            ws_resyncs,
            ws_gaps,
            ws_batches,
            rate_limited,
            redis_breaker_open,
            redis_breaker_trips,
            cluster_config_valid,
            cluster_config_reloads,
            cluster_members,
        })))
    }

    /// Renders every series in the Prometheus text format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// The share of lookups that hit, or `None` without lookups.
pub fn hit_rate(hits: u64, misses: u64) -> Option<f64> {
    let total = hits + misses;
    (total > 0).then(|| hits as f64 / total as f64)
}
