//! The node's alerting (R11.11): every `alerts.eval_interval` it samples its own metrics, evaluates the
//! rules of `domain::alert` over sliding windows, and when a condition starts or ends records it
//! (`store::alerts`, one row per condition while it lasts) and posts it to the webhook. Every change is
//! announced through PostgreSQL (`NOTIFY insights_alerts`); each node listens and hands the alert to its
//! dashboard connections ([`AlertFeed`]), which push it to the admins it concerns, so an admin sees the
//! alerts of every node whichever node they are connected to.
//!
//! Nothing here is on a request's path: sampling reads counters, and the webhook is posted from a queue
//! of its own with retries and backoff; a full queue drops (and logs) rather than wait.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::{broadcast, mpsc, watch};

use crate::config::AlertConfig;
use crate::domain::alert::{self, Alert, AlertKind, Buckets, Condition, Sample, Thresholds};
use crate::metrics::Metrics;
use crate::store;

/// Alerts as they change, for this node's dashboard connections.
pub type AlertFeed = broadcast::Sender<Alert>;

/// A new feed; connections subscribe to it.
pub fn feed() -> AlertFeed {
    broadcast::channel(256).0
}

/// The security event kinds that signal an attack or a fault (the others are routine).
const SECURITY_KINDS: [&str; 7] = [
    "login_failed",
    "login_throttled",
    "refresh_reused",
    "refresh_invalid",
    "permission_denied",
    "rate_limited",
    "decryption_failed",
];

/// The thresholds of the rules, from the configuration.
pub fn thresholds(config: &AlertConfig, ml_slow: Duration) -> Thresholds {
    Thresholds {
        window: config.window.as_secs_f64(),
        latency_p95: config.latency_p95.as_secs_f64(),
        error_rate: config.error_rate,
        min_requests: config.min_requests,
        cache_window: config.cache_window.as_secs_f64(),
        cache_hit_rate: config.cache_hit_rate,
        cache_min_lookups: config.cache_min_lookups,
        security_events: config.security_events,
        ml_latency_p95: ml_slow.as_secs_f64(),
        pool_saturation: config.pool_saturation,
    }
}

fn label<'a>(m: &'a prometheus::proto::Metric, name: &str) -> &'a str {
    m.get_label()
        .iter()
        .find(|l| l.name() == name)
        .map_or("", |l| l.value())
}

/// Adds the buckets of every series of a histogram family.
fn merged(family: &prometheus::proto::MetricFamily) -> Buckets {
    let mut sum: BTreeMap<u64, (f64, u64)> = BTreeMap::new();
    for m in family.get_metric() {
        let h = m.get_histogram();
        for b in h.get_bucket() {
            let e = sum
                .entry(b.upper_bound().to_bits())
                .or_insert((b.upper_bound(), 0));
            e.1 += b.cumulative_count();
        }
        let inf = sum.entry(f64::INFINITY.to_bits()).or_insert((f64::INFINITY, 0));
        inf.1 += h.get_sample_count();
    }
    let mut buckets: Vec<(f64, u64)> = sum.into_values().collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    Buckets(buckets)
}

/// The node's metrics now, as the rules read them.
pub fn sample(metrics: &Metrics, at: f64) -> Sample {
    let mut s = Sample {
        at,
        ..Sample::default()
    };
    for family in metrics.registry.gather() {
        let name = family.name();
        match name {
            "insights_http_requests_total" => {
                for m in family.get_metric() {
                    let n = m.get_counter().get_value() as u64;
                    s.requests += n;
                    if label(m, "status").starts_with('5') {
                        s.server_errors += n;
                    }
                }
            }
            "insights_http_request_duration_seconds" => s.latency = merged(&family),
            "insights_ml_prediction_seconds" => s.ml_latency = merged(&family),
            "insights_security_events_total" => {
                s.security_events = family
                    .get_metric()
                    .iter()
                    .filter(|m| SECURITY_KINDS.contains(&label(m, "kind")))
                    .map(|m| m.get_counter().get_value() as u64)
                    .sum();
            }
            "insights_response_cache_lookups_total"
            | "insights_ml_cache_lookups_total"
            | "insights_token_cache_lookups_total" => {
                let cache = match name {
                    "insights_response_cache_lookups_total" => "summary",
                    "insights_ml_cache_lookups_total" => "ml",
                    _ => "token",
                };
                let entry = s.caches.entry(cache.to_owned()).or_default();
                for m in family.get_metric() {
                    // Bounded listing counts are not summaries a reader waits for twice.
                    if label(m, "endpoint") == "count" {
                        continue;
                    }
                    let n = m.get_counter().get_value() as u64;
                    match label(m, "result") {
                        "hit" => entry.0 += n,
                        "miss" => entry.1 += n,
                        _ => {}
                    }
                }
            }
            "insights_db_pool_connections" => {
                for m in family.get_metric() {
                    if label(m, "state") == "in_use" {
                        s.pools.entry(label(m, "pool").to_owned()).or_default().0 =
                            m.get_gauge().get_value() as i64;
                    }
                }
            }
            "insights_db_pool_max_connections" => {
                for m in family.get_metric() {
                    s.pools.entry(label(m, "pool").to_owned()).or_default().1 =
                        m.get_gauge().get_value() as i64;
                }
            }
            "insights_cluster_members" => {
                s.members_down = family
                    .get_metric()
                    .iter()
                    .filter(|m| label(m, "state") == "down")
                    .map(|m| m.get_gauge().get_value() as i64)
                    .sum();
            }
            _ => {}
        }
    }
    s
}

/// What the evaluator needs.
pub struct Evaluator {
    pub pool: PgPool,
    pub metrics: Metrics,
    pub config: AlertConfig,
    pub ml_slow: Duration,
    pub node: String,
    pub webhook: Option<Webhook>,
}

impl Evaluator {
    /// Runs until `shutdown`.
    pub fn spawn(self, shutdown: watch::Receiver<bool>) {
        tokio::spawn(self.run(shutdown));
    }

    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let t = thresholds(&self.config, self.ml_slow);
        let keep = t.window.max(t.cache_window) + 2.0 * self.config.eval_interval.as_secs_f64();
        let started = Instant::now();
        let mut samples: VecDeque<Sample> = VecDeque::new();
        // Conditions this node has firing (a restarted node resumes its own and resolves them when they
        // no longer hold).
        let mut firing: HashMap<String, Alert> = match store::alerts::firing_of_node(&self.pool, &self.node)
            .await
        {
            Ok(rows) => rows.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read this node's firing alerts; starting without them");
                HashMap::new()
            }
        };
        let mut tick = tokio::time::interval(self.config.eval_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_resend = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let now = started.elapsed().as_secs_f64();
            samples.push_back(sample(&self.metrics, now));
            while samples.len() > 2 && samples.front().is_some_and(|s| s.at < now - keep) {
                samples.pop_front();
            }
            let ordered: Vec<Sample> = samples.iter().cloned().collect();
            self.publish_hit_ratios(&ordered, &t);
            let conditions = alert::evaluate(&ordered, &t);
            let holding: HashMap<String, &Condition> = conditions
                .iter()
                .map(|c| (c.fingerprint(&self.node), c))
                .collect();
            for (fingerprint, condition) in &holding {
                if firing.contains_key(fingerprint) {
                    continue;
                }
                match self.fire(fingerprint, condition).await {
                    Ok(alert) => {
                        firing.insert(fingerprint.clone(), alert);
                    }
                    Err(e) => {
                        tracing::warn!(rule = condition.rule, error = %e, "cannot record an alert; trying again at the next evaluation")
                    }
                }
            }
            let ended: Vec<String> = firing
                .keys()
                .filter(|f| !holding.contains_key(*f))
                .cloned()
                .collect();
            for fingerprint in ended {
                match store::alerts::resolve(&self.pool, &fingerprint).await {
                    Ok(resolved) => {
                        let before = firing.remove(&fingerprint);
                        let alert = resolved.or_else(|| {
                            // Resolved elsewhere already (by hand, or by a previous run): say so anyway.
                            before.map(|mut a| {
                                a.state = alert::AlertState::Resolved;
                                a.resolved_at = Some(chrono::Utc::now());
                                a
                            })
                        });
                        if let Some(alert) = alert {
                            tracing::info!(rule = %alert.rule, summary = %alert.summary, "alert resolved");
                            self.post(&alert);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%fingerprint, error = %e, "cannot resolve an alert; trying again at the next evaluation")
                    }
                }
            }
            self.metrics.alerts_firing.set(firing.len() as i64);
            if last_resend.elapsed() >= self.config.resend_interval {
                last_resend = Instant::now();
                for alert in firing.values() {
                    self.post(alert);
                }
            }
        }
    }

    async fn fire(&self, fingerprint: &str, c: &Condition) -> Result<Alert, crate::error::Error> {
        let (alert, new) = store::alerts::fire(
            &self.pool,
            &store::alerts::NewAlert {
                organization_id: None,
                kind: AlertKind::System,
                rule: c.rule,
                severity: c.severity,
                fingerprint,
                summary: &c.summary,
                details: &c.details,
                node: Some(&self.node),
            },
        )
        .await?;
        if new {
            tracing::warn!(rule = %alert.rule, severity = alert.severity.as_str(), summary = %alert.summary, "alert firing");
            self.post(&alert);
        }
        Ok(alert)
    }

    fn post(&self, alert: &Alert) {
        if let Some(webhook) = &self.webhook {
            webhook.post(alert);
        }
    }

    /// Each cache's hit ratio over its window (R14.10), NaN without lookups.
    fn publish_hit_ratios(&self, samples: &[Sample], t: &Thresholds) {
        let (Some(now), Some(base)) = (samples.last(), alert::base(samples, t.cache_window)) else {
            return;
        };
        for (cache, (hits, misses)) in &now.caches {
            let (h0, m0) = base.caches.get(cache).copied().unwrap_or((0, 0));
            let (h, m) = (hits.saturating_sub(h0), misses.saturating_sub(m0));
            let ratio = crate::metrics::hit_rate(h, m).unwrap_or(f64::NAN);
            self.metrics
                .cache_hit_ratio
                .with_label_values(&[cache])
                .set(ratio);
        }
    }
}

/// Hands every change announced on `insights_alerts` (by any node) to this node's connections. Its own
/// connection to PostgreSQL, not one of the pool's; re-established after a failure.
pub fn spawn_listener(
    database_url: String,
    pool: PgPool,
    feed: AlertFeed,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            let listener = async {
                let mut listener = sqlx::postgres::PgListener::connect(&database_url).await?;
                listener.listen(store::alerts::CHANNEL).await?;
                loop {
                    let note = listener.recv().await?;
                    let Ok(id) = note.payload().parse::<uuid::Uuid>() else {
                        continue;
                    };
                    match store::alerts::get(&pool, id).await {
                        Ok(Some(alert)) => {
                            let _ = feed.send(alert);
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(alert = %id, error = %e, "cannot read an announced alert"),
                    }
                }
                #[allow(unreachable_code)]
                Ok::<(), sqlx::Error>(())
            };
            tokio::select! {
                result = listener => {
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "alert announcements interrupted; listening again in a second");
                    }
                }
                _ = shutdown.changed() => return,
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    });
}

/// Posts alerts to `alerts.webhook_url` in Alertmanager's format, from a queue of its own.
#[derive(Clone)]
pub struct Webhook {
    queue: mpsc::Sender<Alert>,
}

/// Alerts waiting to be posted; beyond this, new ones are dropped (and logged).
const WEBHOOK_QUEUE: usize = 1000;

/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl Webhook {
    /// Starts the poster.
    pub fn start(url: String, config: &AlertConfig, metrics: Metrics) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("insights/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let (queue, mut rx) = mpsc::channel::<Alert>(WEBHOOK_QUEUE);
        let (backoff, attempts) = (config.webhook_backoff, config.webhook_attempts);
        tokio::spawn(async move {
            while let Some(alert) = rx.recv().await {
                let body = serde_json::Value::Array(vec![alert.to_alertmanager()]);
                let mut wait = backoff;
                for attempt in 1..=attempts {
                    let outcome = match client.post(&url).json(&body).send().await {
                        Ok(r) if r.status().is_success() => Ok(()),
                        Ok(r) => Err(format!("answered {}", r.status())),
                        Err(e) => Err(e.to_string()),
                    };
                    match outcome {
                        Ok(()) => {
                            metrics
                                .alert_webhook_posts
                                .with_label_values(&["delivered"])
                                .inc();
                            break;
                        }
                        Err(why) if attempt == attempts => {
                            metrics.alert_webhook_posts.with_label_values(&["given_up"]).inc();
                            tracing::error!(rule = %alert.rule, attempts, error = %why, "alert webhook failed; the alert was not delivered");
                        }
                        Err(why) => {
                            metrics.alert_webhook_posts.with_label_values(&["retried"]).inc();
                            tracing::warn!(rule = %alert.rule, attempt, error = %why, retry_in_ms = wait.as_millis() as u64, "alert webhook failed; retrying");
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(MAX_BACKOFF);
                        }
                    }
                }
            }
        });
        Ok(Self { queue })
    }

    /// Queues an alert; never waits.
    pub fn post(&self, alert: &Alert) {
        if self.queue.try_send(alert.clone()).is_err() {
            tracing::error!(rule = %alert.rule, "alert webhook queue full; this change is not posted");
        }
    }
}
