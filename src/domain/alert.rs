//! Alerts (R11.11–11.13, R14.10, R9.15): the conditions a node finds in its own metrics, as pure
//! functions over snapshots of them, so that every rule can be tested without a node; the record an
//! alert becomes; and the shape Alertmanager reads.
//!
//! A node samples its metrics every evaluation interval ([`Sample`]). A rate over a window is the
//! difference between the newest sample and the newest one at least a window older (or the oldest kept,
//! while the node is younger than the window), as Prometheus' `increase()` over a range; a quantile of a
//! histogram is interpolated inside its bucket, as `histogram_quantile()`. A state (a saturated pool, a
//! member down) must hold in every sample of a whole window, as a rule's `for:`. The same conditions are
//! written for Prometheus in `deploy/prometheus/alerts.yml`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use super::OrganizationId;

/// Where an alert comes from: a node's own metrics, or an organization's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    System,
    Insight,
}

impl AlertKind {
    pub const ALL: [Self; 2] = [Self::System, Self::Insight];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::Insight => "insight",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| "must be system or insight".to_owned())
    }
}

/// Whether an alert's condition still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    pub const ALL: [Self; 2] = [Self::Firing, Self::Resolved];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| "must be firing or resolved".to_owned())
    }
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Info, Self::Warning, Self::Critical]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// A recorded alert, as the API lists it and the `alert` WebSocket event carries it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub id: Uuid,
    pub kind: AlertKind,
    /// The rule that found it, such as `http_latency_p95`.
    pub rule: String,
    pub severity: Severity,
    pub state: AlertState,
    /// One line a person reads: what, how much, over what window.
    pub summary: String,
    /// The figures: `value`, `threshold`, `windowSeconds`, and what the rule is about (`cache`, `pool`).
    #[schema(value_type = Object)]
    pub details: Value,
    /// The node whose metrics showed it (system alerts).
    pub node: Option<String>,
    /// The organization it concerns; none for a system alert, which every admin sees.
    #[schema(value_type = Option<Uuid>)]
    pub organization_id: Option<OrganizationId>,
    pub started_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

impl Alert {
    /// The alert as Alertmanager's API takes it (`POST /api/v2/alerts`, a list of these): labels that
    /// identify it, annotations a person reads, `startsAt`, and `endsAt` once resolved.
    pub fn to_alertmanager(&self) -> Value {
        let mut labels = serde_json::Map::new();
        labels.insert("alertname".into(), json!(alert_name(&self.rule)));
        labels.insert("rule".into(), json!(self.rule));
        labels.insert("severity".into(), json!(self.severity.as_str()));
        labels.insert("kind".into(), json!(self.kind.as_str()));
        labels.insert("service".into(), json!("insights"));
        if let Some(node) = &self.node {
            labels.insert("node".into(), json!(node));
        }
        if let Some(org) = self.organization_id {
            labels.insert("organization".into(), json!(org.to_string()));
        }
        for key in ["cache", "pool", "channel", "segment"] {
            if let Some(v) = self.details.get(key).and_then(Value::as_str) {
                labels.insert(key.into(), json!(v));
            }
        }
        let mut alert = json!({
            "labels": labels,
            "annotations": {
                "summary": self.summary,
                "description": format!("{} ({})", self.summary, self.details),
                "alert_id": self.id.to_string(),
            },
            "startsAt": self.started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        if let Some(end) = self.resolved_at {
            alert["endsAt"] = json!(end.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        }
        alert
    }
}

/// The caches whose hit rate alerts (R14.10): the response cache (dashboard, trends, profiles) and the
/// verified-token cache, which hit most of the time when all is well. The prediction cache is not among
/// them: its hit rate is how often the same texts come back, which real messages mostly do not, so a
/// low one says nothing is wrong (its ratio is still exported).
pub const ALERTED_CACHES: [&str; 2] = ["summary", "token"];

/// The rules a node evaluates on its own metrics ([`evaluate`]).
pub const SYSTEM_RULES: [&str; 7] = [
    "http_latency_p95",
    "http_error_rate",
    "cache_hit_rate",
    "security_events",
    "ml_latency_p95",
    "db_pool_saturation",
    "cluster_member_down",
];

/// The Alertmanager alert name of a rule, the same as in `deploy/prometheus/alerts.yml`.
pub fn alert_name(rule: &str) -> String {
    match rule {
        "http_latency_p95" => "InsightsHighLatency".to_owned(),
        "http_error_rate" => "InsightsHighErrorRate".to_owned(),
        "cache_hit_rate" => "InsightsLowCacheHitRate".to_owned(),
        "security_events" => "InsightsSecurityEventBurst".to_owned(),
        "ml_latency_p95" => "InsightsSlowPredictions".to_owned(),
        "db_pool_saturation" => "InsightsDbPoolSaturated".to_owned(),
        "cluster_member_down" => "InsightsClusterMemberDown".to_owned(),
        other => {
            let camel: String = other
                .split('_')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_uppercase().chain(c).collect::<String>())
                        .unwrap_or_default()
                })
                .collect();
            format!("Insights{camel}")
        }
    }
}

/// A histogram's cumulative bucket counts by upper bound, ascending, the last one `+Inf`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets(pub Vec<(f64, u64)>);

impl Buckets {
    /// The observations since `base` (same bounds; a bucket missing in `base` counts from zero).
    pub fn since(&self, base: &Self) -> Self {
        Self(
            self.0
                .iter()
                .map(|(le, n)| {
                    let before = base.0.iter().find(|(b, _)| b == le).map_or(0, |(_, c)| *c);
                    (*le, n.saturating_sub(before))
                })
                .collect(),
        )
    }

    /// How many observations (the `+Inf` bucket).
    pub fn count(&self) -> u64 {
        self.0.last().map_or(0, |(_, n)| *n)
    }

    /// The `q` quantile as Prometheus' `histogram_quantile` estimates it: linear inside the bucket it
    /// falls in; the highest finite bound when it falls in `+Inf`; `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut lower = (0.0, 0u64);
        for &(le, n) in &self.0 {
            if n as f64 >= rank {
                if le.is_infinite() {
                    return Some(lower.0);
                }
                let in_bucket = (n - lower.1) as f64;
                if in_bucket == 0.0 {
                    return Some(le);
                }
                return Some(lower.0 + (le - lower.0) * (rank - lower.1 as f64) / in_bucket);
            }
            lower = (le, n);
        }
        Some(lower.0)
    }
}

/// A node's metrics at one moment, as the rules read them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// Seconds since the node started sampling.
    pub at: f64,
    /// Requests answered, and of those with a 5xx status.
    pub requests: u64,
    pub server_errors: u64,
    /// Request latency over every route.
    pub latency: Buckets,
    /// Prediction latency.
    pub ml_latency: Buckets,
    /// Hits and misses of each cache.
    pub caches: BTreeMap<String, (u64, u64)>,
    /// Security events of the kinds that signal an attack or a fault (not successful logins, logouts
    /// or password changes).
    pub security_events: u64,
    /// Connections in use and the maximum of each pool.
    pub pools: BTreeMap<String, (i64, i64)>,
    /// Members of the cluster file this node sees down.
    pub members_down: i64,
}

/// The thresholds and windows of the rules (configuration; the defaults are the requirements').
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// The window of the request, security and model rules, and how long a state must hold.
    pub window: f64,
    /// p95 request latency above this, in seconds (R11.12: 1 s).
    pub latency_p95: f64,
    /// Share of 5xx answers above this (R11.13: 5 %).
    pub error_rate: f64,
    /// Fewer requests (or predictions) than this in the window say nothing.
    pub min_requests: u64,
    /// The window of the cache rule.
    pub cache_window: f64,
    /// A cache hitting less than this share (R14.10: 70 %).
    pub cache_hit_rate: f64,
    /// Fewer lookups than this in the cache window say nothing.
    pub cache_min_lookups: u64,
    /// At least this many security events in the window (R9.15).
    pub security_events: u64,
    /// p95 prediction latency above this, in seconds (R11.4: 500 ms).
    pub ml_latency_p95: f64,
    /// A pool with at least this share of its connections in use through the window.
    pub pool_saturation: f64,
}

/// A condition that holds now.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub rule: &'static str,
    /// What the rule is about when it has several (a cache, a pool); empty otherwise.
    pub subject: String,
    pub severity: Severity,
    pub summary: String,
    pub details: Value,
}

impl Condition {
    /// Identifies the condition across evaluations, restarts and nodes.
    pub fn fingerprint(&self, node: &str) -> String {
        format!("system:{}:{}:{node}", self.rule, self.subject)
    }
}

/// The newest sample at least `window` older than the newest, else the oldest (a young node): what a
/// rate over the window is measured from.
pub fn base(samples: &[Sample], window: f64) -> Option<&Sample> {
    let now = samples.last()?.at;
    samples
        .iter()
        .rev()
        .find(|s| s.at <= now - window)
        .or_else(|| samples.first())
}

/// Whether `holds` is true of every sample of the last whole window (false until a window is observed).
fn held(samples: &[Sample], window: f64, holds: impl Fn(&Sample) -> bool) -> bool {
    let Some(now) = samples.last().map(|s| s.at) else {
        return false;
    };
    let Some(start) = samples.iter().rposition(|s| s.at <= now - window) else {
        return false;
    };
    samples[start..].iter().all(holds)
}

fn ms(seconds: f64) -> String {
    if seconds >= 1.0 {
        format!("{seconds:.2} s")
    } else {
        format!("{:.0} ms", seconds * 1000.0)
    }
}

/// The conditions that hold at the newest of `samples` (oldest first).
pub fn evaluate(samples: &[Sample], t: &Thresholds) -> Vec<Condition> {
    let (Some(now), Some(b)) = (samples.last(), base(samples, t.window)) else {
        return Vec::new();
    };
    let span = now.at - b.at;
    let window = t.window.round() as u64;
    let mut out = Vec::new();

    let latency = now.latency.since(&b.latency);
    if latency.count() >= t.min_requests
        && let Some(p95) = latency.quantile(0.95)
        && p95 > t.latency_p95
    {
        out.push(Condition {
            rule: "http_latency_p95",
            subject: String::new(),
            severity: Severity::Warning,
            summary: format!(
                "p95 request latency {} over the last {window} s (threshold {})",
                ms(p95),
                ms(t.latency_p95)
            ),
            details: json!({"value": p95, "threshold": t.latency_p95, "unit": "seconds",
                            "requests": latency.count(), "windowSeconds": window, "observedSeconds": span}),
        });
    }

    let requests = now.requests.saturating_sub(b.requests);
    let errors = now.server_errors.saturating_sub(b.server_errors);
    if requests >= t.min_requests && requests > 0 {
        let rate = errors as f64 / requests as f64;
        if rate > t.error_rate {
            out.push(Condition {
                rule: "http_error_rate",
                subject: String::new(),
                severity: Severity::Warning,
                summary: format!(
                    "{:.1} % of requests failed with a server error over the last {window} s ({errors} of {requests}; threshold {:.1} %)",
                    rate * 100.0,
                    t.error_rate * 100.0
                ),
                details: json!({"value": rate, "threshold": t.error_rate, "errors": errors,
                                "requests": requests, "windowSeconds": window}),
            });
        }
    }

    if let Some(cb) = base(samples, t.cache_window) {
        let cache_window = t.cache_window.round() as u64;
        for (cache, (hits, misses)) in now
            .caches
            .iter()
            .filter(|(c, _)| ALERTED_CACHES.contains(&c.as_str()))
        {
            let (h0, m0) = cb.caches.get(cache).copied().unwrap_or((0, 0));
            let (h, m) = (hits.saturating_sub(h0), misses.saturating_sub(m0));
            if h + m < t.cache_min_lookups.max(1) {
                continue;
            }
            let rate = h as f64 / (h + m) as f64;
            if rate < t.cache_hit_rate {
                out.push(Condition {
                    rule: "cache_hit_rate",
                    subject: cache.clone(),
                    severity: Severity::Warning,
                    summary: format!(
                        "the {cache} cache hit {:.0} % of {} lookups over the last {cache_window} s (threshold {:.0} %)",
                        rate * 100.0,
                        h + m,
                        t.cache_hit_rate * 100.0
                    ),
                    details: json!({"cache": cache, "value": rate, "threshold": t.cache_hit_rate,
                                    "lookups": h + m, "windowSeconds": cache_window}),
                });
            }
        }
    }

    let security = now.security_events.saturating_sub(b.security_events);
    if security >= t.security_events.max(1) {
        out.push(Condition {
            rule: "security_events",
            subject: String::new(),
            severity: Severity::Critical,
            summary: format!(
                "{security} security events (failed logins, refused tokens, denials, blocks) over the last {window} s (threshold {})",
                t.security_events
            ),
            details: json!({"value": security, "threshold": t.security_events, "windowSeconds": window}),
        });
    }

    let ml = now.ml_latency.since(&b.ml_latency);
    if ml.count() >= t.min_requests
        && let Some(p95) = ml.quantile(0.95)
        && p95 > t.ml_latency_p95
    {
        out.push(Condition {
            rule: "ml_latency_p95",
            subject: String::new(),
            severity: Severity::Warning,
            summary: format!(
                "p95 sentiment prediction latency {} over the last {window} s (threshold {})",
                ms(p95),
                ms(t.ml_latency_p95)
            ),
            details: json!({"value": p95, "threshold": t.ml_latency_p95, "unit": "seconds",
                            "predictions": ml.count(), "windowSeconds": window}),
        });
    }

    for (pool, (_, max)) in &now.pools {
        let saturated = |s: &Sample| {
            s.pools
                .get(pool)
                .is_some_and(|(used, max)| *max > 0 && *used as f64 / *max as f64 >= t.pool_saturation)
        };
        if *max > 0 && held(samples, t.window, saturated) {
            out.push(Condition {
                rule: "db_pool_saturation",
                subject: pool.clone(),
                severity: Severity::Critical,
                summary: format!(
                    "the {pool} database pool had at least {:.0} % of its {max} connections in use for {window} s",
                    t.pool_saturation * 100.0
                ),
                details: json!({"pool": pool, "threshold": t.pool_saturation, "max": max,
                                "value": now.pools[pool].0, "windowSeconds": window}),
            });
        }
    }

    if now.members_down > 0 && held(samples, t.window, |s| s.members_down > 0) {
        out.push(Condition {
            rule: "cluster_member_down",
            subject: String::new(),
            severity: Severity::Critical,
            summary: format!(
                "{} member(s) of the cluster file down for {window} s",
                now.members_down
            ),
            details: json!({"value": now.members_down, "windowSeconds": window}),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const BOUNDS: [f64; 6] = [0.1, 0.25, 0.5, 1.0, 2.5, f64::INFINITY];

    fn thresholds() -> Thresholds {
        Thresholds {
            window: 300.0,
            latency_p95: 1.0,
            error_rate: 0.05,
            min_requests: 20,
            cache_window: 300.0,
            cache_hit_rate: 0.7,
            cache_min_lookups: 50,
            security_events: 20,
            ml_latency_p95: 0.5,
            pool_saturation: 0.9,
        }
    }

    /// A histogram of `n` observations each of `value`.
    fn observed(value: f64, n: u64) -> Buckets {
        Buckets(
            BOUNDS
                .iter()
                .map(|&le| (le, if value <= le { n } else { 0 }))
                .collect(),
        )
    }

    fn add(a: &Buckets, b: &Buckets) -> Buckets {
        Buckets(
            a.0.iter()
                .zip(&b.0)
                .map(|((le, x), (_, y))| (*le, x + y))
                .collect(),
        )
    }

    fn quiet(at: f64) -> Sample {
        Sample {
            at,
            latency: observed(0.01, 0),
            ml_latency: observed(0.01, 0),
            pools: BTreeMap::from([("main".to_owned(), (1, 10))]),
            ..Sample::default()
        }
    }

    fn rules(c: &[Condition]) -> Vec<&str> {
        c.iter().map(|c| c.rule).collect()
    }

    #[test]
    fn quantiles_interpolate_inside_their_bucket_as_prometheus_does() {
        let b = add(&observed(0.2, 50), &observed(0.7, 50));
        // The median is the last of the 0.1–0.25 bucket's 50; p95 falls at 90 % of the 0.5–1 bucket.
        assert!((b.quantile(0.5).unwrap() - 0.25).abs() < 1e-9);
        assert!((b.quantile(0.95).unwrap() - 0.95).abs() < 1e-9);
        assert_eq!(
            observed(9.0, 10).quantile(0.95),
            Some(2.5),
            "+Inf answers the highest bound"
        );
        assert_eq!(Buckets(vec![(1.0, 0), (f64::INFINITY, 0)]).quantile(0.5), None);
    }

    #[test]
    fn slow_requests_over_the_window_raise_the_latency_alert_and_fast_ones_end_it() {
        let t = thresholds();
        let mut a = quiet(0.0);
        let mut b = quiet(300.0);
        b.latency = add(&observed(0.05, 80), &observed(2.0, 20));
        b.requests = 100;
        assert_eq!(
            rules(&evaluate(&[a.clone(), b.clone()], &t)),
            ["http_latency_p95"]
        );
        // The next window holds only fast requests.
        a = b.clone();
        let mut c = b.clone();
        c.at = 600.0;
        c.latency = add(&b.latency, &observed(0.05, 100));
        c.requests = 200;
        assert!(evaluate(&[a, b, c], &t).is_empty());
    }

    #[test]
    fn too_few_requests_say_nothing() {
        let t = thresholds();
        let mut b = quiet(300.0);
        b.latency = observed(5.0, 19);
        b.requests = 19;
        b.server_errors = 19;
        assert!(evaluate(&[quiet(0.0), b], &t).is_empty());
    }

    #[test]
    fn the_error_rate_alert_fires_above_five_percent_only() {
        let t = thresholds();
        for (errors, fires) in [(5, false), (6, true), (100, true)] {
            let mut b = quiet(60.0);
            b.requests = 100;
            b.server_errors = errors;
            b.latency = observed(0.01, 100);
            assert_eq!(
                rules(&evaluate(&[quiet(0.0), b], &t)) == ["http_error_rate"],
                fires,
                "{errors} of 100"
            );
        }
    }

    #[test]
    fn each_cache_is_judged_on_its_own_lookups() {
        let t = thresholds();
        let mut b = quiet(60.0);
        b.caches.insert("summary".into(), (10, 90));
        b.caches.insert("token".into(), (990, 10));
        b.caches.insert("ml".into(), (0, 400));
        let c = evaluate(&[quiet(0.0), b], &t);
        assert_eq!(rules(&c), ["cache_hit_rate"]);
        assert_eq!(c[0].subject, "summary");
        assert_eq!(c[0].details["lookups"], 100);
    }

    #[test]
    fn a_burst_of_security_events_is_critical() {
        let t = thresholds();
        let mut b = quiet(30.0);
        b.security_events = 20;
        let c = evaluate(&[quiet(0.0), b], &t);
        assert_eq!(rules(&c), ["security_events"]);
        assert_eq!(c[0].severity, Severity::Critical);
    }

    #[test]
    fn slow_predictions_raise_their_own_alert() {
        let t = thresholds();
        let mut b = quiet(60.0);
        b.ml_latency = observed(0.8, 30);
        assert_eq!(rules(&evaluate(&[quiet(0.0), b], &t)), ["ml_latency_p95"]);
    }

    #[test]
    fn a_pool_or_a_member_must_stay_bad_for_a_whole_window() {
        let t = thresholds();
        let bad = |at: f64| {
            let mut s = quiet(at);
            s.pools.insert("main".into(), (10, 10));
            s.members_down = 1;
            s
        };
        let young = [bad(0.0), bad(150.0), bad(299.0)];
        assert!(evaluate(&young, &t).is_empty(), "not yet a whole window");
        let whole = [bad(0.0), bad(150.0), bad(300.0)];
        let c = evaluate(&whole, &t);
        assert_eq!(rules(&c), ["db_pool_saturation", "cluster_member_down"]);
        let recovered = [bad(0.0), quiet(150.0), bad(300.0)];
        assert!(
            evaluate(&recovered, &t).is_empty(),
            "a good sample inside the window"
        );
    }

    #[test]
    fn alertmanager_sees_labels_annotations_and_the_end_of_a_resolved_alert() {
        let started = "2026-12-04T10:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let mut alert = Alert {
            id: Uuid::nil(),
            kind: AlertKind::System,
            rule: "cache_hit_rate".into(),
            severity: Severity::Warning,
            state: AlertState::Firing,
            summary: "the summary cache hit 10 %".into(),
            details: json!({"cache": "summary", "value": 0.1}),
            node: Some("n1".into()),
            organization_id: None,
            started_at: started,
            resolved_at: None,
        };
        let v = alert.to_alertmanager();
        assert_eq!(v["labels"]["alertname"], "InsightsLowCacheHitRate");
        assert_eq!(v["labels"]["cache"], "summary");
        assert_eq!(v["labels"]["node"], "n1");
        assert_eq!(v["startsAt"], "2026-12-04T10:00:00.000Z");
        assert!(v.get("endsAt").is_none());
        alert.resolved_at = Some(started + chrono::Duration::minutes(5));
        assert_eq!(alert.to_alertmanager()["endsAt"], "2026-12-04T10:05:00.000Z");
        assert_eq!(alert_name("some_new_rule"), "InsightsSomeNewRule");
    }

    proptest! {
        /// Steady traffic under every threshold never alerts, whatever its size and the sampling.
        #[test]
        fn steady_healthy_traffic_never_alerts(
            per_step in 0u64..500,
            steps in 2usize..40,
            step in 1.0f64..120.0,
        ) {
            let t = thresholds();
            let samples: Vec<Sample> = (0..steps)
                .map(|i| {
                    let n = per_step * i as u64;
                    let mut s = quiet(i as f64 * step);
                    s.requests = n;
                    s.server_errors = n / 100;
                    s.latency = add(&observed(0.05, n - n / 50), &observed(0.8, n / 50));
                    s.caches.insert("summary".into(), (n * 9 / 10, n - n * 9 / 10));
                    s
                })
                .collect();
            prop_assert!(evaluate(&samples, &t).is_empty());
        }

        /// The same samples always give the same conditions.
        #[test]
        fn evaluation_is_deterministic(slow in 0u64..100, fast in 0u64..100, at in 1.0f64..1000.0) {
            let t = thresholds();
            let mut b = quiet(at);
            b.latency = add(&observed(0.05, fast), &observed(3.0, slow));
            b.requests = slow + fast;
            let samples = [quiet(0.0), b];
            prop_assert_eq!(evaluate(&samples, &t), evaluate(&samples, &t));
        }
    }
}
