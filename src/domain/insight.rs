//! Insight alerts for analysts (issue 18): sentiment that turns, found as it happens, per organization
//! and within it per channel and per segment. Pure functions over hourly rollup buckets, so the detector
//! is tested without a node and gives the same answer for the same input.
//!
//! A dimension needs `min_volume` scored interactions in its baseline too: a new organization or channel
//! has nothing to be compared with. The recent window is the hour buckets that overlap the last `window` (at 10:15 with an hour: 09:00
//! and 10:00, 75 minutes). Its baseline is the same dimension over the `baseline_days` before it. Two
//! conditions, each needing at least `min_volume` scored interactions in the window, and each both
//! significant and material:
//! - **sentiment drop**: the window's average score is below the baseline's by more than `sensitivity`
//!   standard deviations of the baseline's hourly averages (of the hours with at least a tenth of the
//!   floor scored), never less than the standard error of a window of this size (from the baseline's
//!   score histogram), and by at least `min_drop`;
//! - **negative spike**: the window's negative interactions exceed the baseline's for the same time by
//!   more than `sensitivity` standard deviations (hour of week where the baseline has that hour in at
//!   least three weeks, else hour of day on at least three days, else every hour; never less than the
//!   Poisson deviation), and the negative share of scored interactions rose by at least `min_drop`.
//!
//! Both, not either: over the demo's thirty steady days (2,000 customers, 50,000 interactions, ten
//! dimensions evaluated every ten minutes) "either" raised 75 alerts in 22 days, nearly all a small
//! window whose share of negatives or average swung by 0.3 by chance; see the demo generator's test.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike as _, Duration, DurationRound as _, Timelike as _, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

/// One hour of one dimension, as the rollups hold it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HourBucket {
    pub hour: DateTime<Utc>,
    pub interactions: u64,
    pub scored: u64,
    pub score_sum: f64,
    pub negative: u64,
    /// Scores by tenth of [-1, 1], lowest first.
    pub histogram: [u64; 10],
}

/// What an alert is about: the whole organization, one channel, or one segment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dimension {
    Overall,
    Channel(String),
    Segment(String),
}

impl Dimension {
    /// A stable name, in fingerprints and details: `overall`, `channel:email`, `segment:smb`.
    pub fn key(&self) -> String {
        match self {
            Self::Overall => "overall".to_owned(),
            Self::Channel(c) => format!("channel:{c}"),
            Self::Segment(s) => format!("segment:{s}"),
        }
    }

    fn label(&self) -> String {
        match self {
            Self::Overall => "all interactions".to_owned(),
            Self::Channel(c) => format!("the {c} channel"),
            Self::Segment(s) => format!("the {s} segment"),
        }
    }
}

/// An organization's rules, adjustable by its admins (`GET/PUT /api/v1/alert-rules`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InsightRules {
    /// Whether the organization's data is watched at all.
    pub enabled: bool,
    /// The recent window, in minutes (15 to 1440).
    pub window_minutes: u32,
    /// The baseline: days before the window (1 to 28).
    pub baseline_days: u32,
    /// Standard deviations of change that alert (1 to 10).
    pub sensitivity: f64,
    /// An absolute drop of the average score (or rise of the negative share) that alerts (0.05 to 2).
    pub min_drop: f64,
    /// Fewer scored interactions in the window never alert (1 to 100,000).
    pub min_volume: u64,
    /// Which dimensions are watched.
    pub overall: bool,
    pub channels: bool,
    pub segments: bool,
}

impl Default for InsightRules {
    fn default() -> Self {
        Self {
            enabled: true,
            window_minutes: 60,
            baseline_days: 7,
            sensitivity: 3.0,
            min_drop: 0.3,
            min_volume: 20,
            overall: true,
            channels: true,
            segments: true,
        }
    }
}

/// A condition that holds now.
#[derive(Debug, Clone, PartialEq)]
pub struct InsightCondition {
    /// `sentiment_drop` or `negative_spike`.
    pub rule: &'static str,
    pub dimension: Dimension,
    pub summary: String,
    /// The figures, the window, the baseline, and `filter`: the listing query that shows the
    /// interactions behind it.
    pub details: Value,
}

impl InsightCondition {
    /// Identifies the condition across evaluations, restarts and owners.
    pub fn fingerprint(&self, org: &str) -> String {
        format!("insight:{org}:{}:{}", self.rule, self.dimension.key())
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    interactions: u64,
    scored: u64,
    score_sum: f64,
    negative: u64,
    histogram: [u64; 10],
}

impl Totals {
    fn add(&mut self, b: &HourBucket) {
        self.interactions += b.interactions;
        self.scored += b.scored;
        self.score_sum += b.score_sum;
        self.negative += b.negative;
        for (t, h) in self.histogram.iter_mut().zip(b.histogram) {
            *t += h;
        }
    }

    fn mean(&self) -> Option<f64> {
        (self.scored > 0).then(|| self.score_sum / self.scored as f64)
    }

    /// The standard deviation of single scores, from the histogram's midpoints.
    fn score_sd(&self) -> Option<f64> {
        let n: u64 = self.histogram.iter().sum();
        if n < 2 {
            return None;
        }
        let mid = |i: usize| -0.9 + 0.2 * i as f64;
        let mean = self
            .histogram
            .iter()
            .enumerate()
            .map(|(i, c)| mid(i) * *c as f64)
            .sum::<f64>()
            / n as f64;
        let var = self
            .histogram
            .iter()
            .enumerate()
            .map(|(i, c)| (mid(i) - mean).powi(2) * *c as f64)
            .sum::<f64>()
            / (n - 1) as f64;
        Some(var.sqrt())
    }
}

fn sd(values: &[f64]) -> Option<(f64, f64)> {
    if values.len() < 2 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len() - 1) as f64;
    Some((mean, var.sqrt()))
}

/// The conditions that hold at `now` for the dimensions' buckets (each dimension's buckets in any order).
pub fn detect(
    dimensions: &BTreeMap<Dimension, Vec<HourBucket>>,
    now: DateTime<Utc>,
    rules: &InsightRules,
) -> Vec<InsightCondition> {
    if !rules.enabled {
        return Vec::new();
    }
    let window = Duration::minutes(i64::from(rules.window_minutes.max(1)));
    let Ok(start) = (now - window).duration_trunc(Duration::hours(1)) else {
        return Vec::new();
    };
    let baseline_start = start - Duration::days(i64::from(rules.baseline_days.max(1)));
    let covered_hours = ((now - start).num_seconds() as f64 / 3600.0).max(1.0 / 60.0);
    let mut out = Vec::new();
    for (dimension, buckets) in dimensions {
        let watched = match dimension {
            Dimension::Overall => rules.overall,
            Dimension::Channel(_) => rules.channels,
            Dimension::Segment(_) => rules.segments,
        };
        if !watched {
            continue;
        }
        let mut recent = Totals::default();
        let mut base = Totals::default();
        let mut hourly_means = Vec::new();
        let mut by_hour: Vec<&HourBucket> = Vec::new();
        for b in buckets {
            if b.hour >= start && b.hour <= now {
                recent.add(b);
            } else if b.hour >= baseline_start && b.hour < start {
                base.add(b);
                by_hour.push(b);
                if b.scored >= (rules.min_volume / 10).max(1) {
                    hourly_means.push(b.score_sum / b.scored as f64);
                }
            }
        }
        // Without a baseline of its own there is nothing to compare with (a new organization or channel).
        if recent.scored < rules.min_volume.max(1) || base.scored < rules.min_volume.max(1) {
            continue;
        }
        let filter = json!({
            "from": start.to_rfc3339(),
            "to": now.to_rfc3339(),
            "channels": match dimension { Dimension::Channel(c) => Some(c.clone()), _ => None },
            "segments": match dimension { Dimension::Segment(s) => Some(s.clone()), _ => None },
        });
        let window_details =
            json!({"from": start.to_rfc3339(), "to": now.to_rfc3339(), "minutes": rules.window_minutes});
        let baseline_details = json!({"from": baseline_start.to_rfc3339(), "to": start.to_rfc3339(), "days": rules.baseline_days});

        // Sentiment drop.
        if let (Some(now_mean), Some(base_mean)) = (recent.mean(), base.mean()) {
            let drop = base_mean - now_mean;
            // Never more precise than the window's own standard error: a baseline of perfectly regular
            // hours would make any wobble of the window "significant".
            let standard_error = base.score_sd().map(|s| s / (recent.scored as f64).sqrt());
            let between_hours = (hourly_means.len() >= 3)
                .then(|| sd(&hourly_means).map(|(_, s)| s))
                .flatten();
            let sigma = match (between_hours, standard_error) {
                (Some(h), Some(e)) => Some(h.max(e)),
                (h, e) => h.or(e),
            };
            let significant = sigma.is_some_and(|s| drop > rules.sensitivity * s);
            if drop >= rules.min_drop && significant {
                out.push(InsightCondition {
                    rule: "sentiment_drop",
                    dimension: dimension.clone(),
                    summary: format!(
                        "Sentiment of {} fell to {:.2} from a baseline of {:.2} (down {:.2}) over {} scored interactions since {}",
                        dimension.label(),
                        now_mean,
                        base_mean,
                        drop,
                        recent.scored,
                        start.format("%H:%M UTC")
                    ),
                    details: json!({
                        "dimension": dimension.key(), "value": now_mean, "baseline": base_mean, "drop": drop,
                        "sigma": sigma, "sensitivity": rules.sensitivity, "minDrop": rules.min_drop,
                        "scored": recent.scored, "window": window_details, "baselineWindow": baseline_details,
                        "filter": filter,
                    }),
                });
            }
        }

        // Negative spike: compared with the same hours of the baseline where it has enough of them.
        let hours_in_window: Vec<(u32, u32)> = {
            let mut h = Vec::new();
            let mut t = start;
            while t <= now {
                h.push((t.weekday().num_days_from_monday(), t.hour()));
                t += Duration::hours(1);
            }
            h
        };
        let pick = |same: &dyn Fn(&HourBucket) -> bool| -> Vec<f64> {
            by_hour
                .iter()
                .filter(|b| same(b))
                .map(|b| b.negative as f64)
                .collect()
        };
        let weekly = pick(&|b: &HourBucket| {
            hours_in_window.contains(&(b.hour.weekday().num_days_from_monday(), b.hour.hour()))
        });
        let daily = pick(&|b: &HourBucket| hours_in_window.iter().any(|(_, h)| *h == b.hour.hour()));
        let per_window_hours = hours_in_window.len().max(1) as f64;
        let samples = if weekly.len() as f64 >= 3.0 * per_window_hours {
            weekly
        } else if daily.len() as f64 >= 3.0 * per_window_hours {
            daily
        } else {
            // Every baseline hour counts, including hours without a bucket (nothing happened).
            let hours = ((start - baseline_start).num_hours().max(1)) as usize;
            let mut all = pick(&|_: &HourBucket| true);
            all.resize(hours.max(all.len()), 0.0);
            all
        };
        let per_hour_mean = samples.iter().sum::<f64>() / samples.len().max(1) as f64;
        let per_hour_sd = sd(&samples).map_or(0.0, |(_, s)| s);
        let expected = per_hour_mean * covered_hours;
        let spread = (per_hour_sd * covered_hours.sqrt()).max(expected.sqrt()).max(1.0);
        let spike = recent.negative as f64 - expected;
        let share_now = recent.negative as f64 / recent.scored.max(1) as f64;
        let share_base = base.negative as f64 / base.scored.max(1) as f64;
        let rise = share_now - share_base;
        if spike > rules.sensitivity * spread && rise >= rules.min_drop {
            out.push(InsightCondition {
                rule: "negative_spike",
                dimension: dimension.clone(),
                summary: format!(
                    "{} negative interactions in {} since {} (about {:.0} expected; {:.0} % negative against {:.0} %)",
                    recent.negative,
                    dimension.label(),
                    start.format("%H:%M UTC"),
                    expected,
                    share_now * 100.0,
                    share_base * 100.0
                ),
                details: json!({
                    "dimension": dimension.key(), "value": recent.negative, "expected": expected,
                    "spread": spread, "share": share_now, "baselineShare": share_base,
                    "sensitivity": rules.sensitivity, "minDrop": rules.min_drop, "scored": recent.scored,
                    "window": window_details, "baselineWindow": baseline_details, "filter": filter,
                }),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// An hour of `n` scored interactions averaging `mean`, `negative` of them negative; the histogram
    /// puts them around the mean.
    fn hour(h: DateTime<Utc>, n: u64, mean: f64, negative: u64) -> HourBucket {
        let mut histogram = [0u64; 10];
        let i = (((mean + 1.0) / 0.2).floor() as usize).min(9);
        histogram[i] = n;
        HourBucket {
            hour: h,
            interactions: n,
            scored: n,
            score_sum: mean * n as f64,
            negative,
            histogram,
        }
    }

    /// Eight days of hours ending at `now`, steady: `n` an hour, mean 0.4 with a small wobble, 10 % negative.
    fn steady(now: DateTime<Utc>, n: u64) -> Vec<HourBucket> {
        let first = (now - Duration::days(8))
            .duration_trunc(Duration::hours(1))
            .unwrap();
        let mut out = Vec::new();
        let mut t = first;
        let mut i = 0;
        while t <= now {
            let wobble = if i % 2 == 0 { 0.03 } else { -0.03 };
            out.push(hour(t, n, 0.4 + wobble, n / 10));
            t += Duration::hours(1);
            i += 1;
        }
        out
    }

    fn one(dimension: Dimension, buckets: Vec<HourBucket>) -> BTreeMap<Dimension, Vec<HourBucket>> {
        BTreeMap::from([(dimension, buckets)])
    }

    #[test]
    fn steady_data_raises_nothing() {
        let now = at("2026-12-04T10:15:00Z");
        let data = one(Dimension::Overall, steady(now, 50));
        assert!(detect(&data, now, &InsightRules::default()).is_empty());
    }

    #[test]
    fn a_step_drop_in_one_channel_raises_a_drop_and_a_spike_there_only() {
        let now = at("2026-12-04T10:15:00Z");
        let mut email = steady(now, 50);
        // The window's buckets (09:00 and 10:00) turn negative.
        for b in email.iter_mut().filter(|b| b.hour >= at("2026-12-04T09:00:00Z")) {
            *b = hour(b.hour, 50, -0.6, 40);
        }
        let data = BTreeMap::from([
            (Dimension::Channel("email".into()), email),
            (Dimension::Channel("chat".into()), steady(now, 50)),
        ]);
        let found = detect(&data, now, &InsightRules::default());
        let rules: Vec<(&str, String)> = found.iter().map(|c| (c.rule, c.dimension.key())).collect();
        assert_eq!(
            rules,
            [
                ("sentiment_drop", "channel:email".to_owned()),
                ("negative_spike", "channel:email".to_owned())
            ]
        );
        let drop = &found[0].details;
        assert!((drop["drop"].as_f64().unwrap() - 1.0).abs() < 0.01, "{drop}");
        assert_eq!(drop["filter"]["channels"], "email");
        assert_eq!(drop["filter"]["from"], "2026-12-04T09:00:00+00:00");
        assert_eq!(drop["scored"], 100);
        assert!(
            found[0].summary.contains("the email channel"),
            "{}",
            found[0].summary
        );
    }

    #[test]
    fn a_quiet_channel_below_the_floor_raises_nothing() {
        let now = at("2026-12-04T10:15:00Z");
        let mut quiet = steady(now, 4);
        for b in quiet.iter_mut().filter(|b| b.hour >= at("2026-12-04T09:00:00Z")) {
            *b = hour(b.hour, 4, -0.9, 4);
        }
        let data = one(Dimension::Channel("phone".into()), quiet);
        assert!(
            detect(&data, now, &InsightRules::default()).is_empty(),
            "8 scored < 20"
        );
    }

    #[test]
    fn rules_switch_dimensions_and_everything_off() {
        let now = at("2026-12-04T10:15:00Z");
        let mut bad = steady(now, 50);
        for b in bad.iter_mut().filter(|b| b.hour >= at("2026-12-04T09:00:00Z")) {
            *b = hour(b.hour, 50, -0.6, 40);
        }
        let data = one(Dimension::Segment("smb".into()), bad);
        assert_eq!(detect(&data, now, &InsightRules::default()).len(), 2);
        let off = InsightRules {
            segments: false,
            ..InsightRules::default()
        };
        assert!(detect(&data, now, &off).is_empty());
        let disabled = InsightRules {
            enabled: false,
            ..InsightRules::default()
        };
        assert!(detect(&data, now, &disabled).is_empty());
    }

    #[test]
    fn without_a_baseline_nothing_alerts() {
        let now = at("2026-12-04T10:15:00Z");
        let data = one(
            Dimension::Overall,
            vec![hour(at("2026-12-04T10:00:00Z"), 30, -0.5, 25)],
        );
        assert!(detect(&data, now, &InsightRules::default()).is_empty());
    }

    proptest! {
        /// Whatever the level and volume, a window within the sensitivity of its baseline (here: the
        /// same hourly wobble as every baseline hour) never alerts, and the answer is the same each time.
        #[test]
        fn noise_within_the_sensitivity_never_alerts(
            n in 20u64..2000,
            level in -0.8f64..0.8,
            wobble in 0.0f64..0.05,
            minute in 0u32..60,
        ) {
            let now = at("2026-12-04T10:00:00Z") + Duration::minutes(i64::from(minute));
            let first = (now - Duration::days(8)).duration_trunc(Duration::hours(1)).unwrap();
            let mut buckets = Vec::new();
            let mut t = first;
            let mut i = 0;
            while t <= now {
                let w = if i % 2 == 0 { wobble } else { -wobble };
                // The current hour is as far along as the clock.
                let k = if t + Duration::hours(1) > now { n * u64::from(minute) / 60 } else { n };
                buckets.push(hour(t, k, level + w, k / 10));
                t += Duration::hours(1);
                i += 1;
            }
            let data = one(Dimension::Overall, buckets);
            let rules = InsightRules::default();
            let found = detect(&data, now, &rules);
            prop_assert!(found.is_empty(), "{:?}", found);
            prop_assert_eq!(found, detect(&data, now, &rules));
        }

        /// A step drop of at least `min_drop` with enough volume always alerts.
        #[test]
        fn a_step_drop_always_alerts(n in 20u64..500, level in -0.5f64..0.9, drop in 0.3f64..0.5) {
            let now = at("2026-12-04T10:30:00Z");
            let mut buckets = steady(now, n);
            for b in buckets.iter_mut() {
                let mean = if b.hour >= at("2026-12-04T09:00:00Z") { level - drop } else { level };
                *b = hour(b.hour, n, mean, n / 10);
            }
            let data = one(Dimension::Overall, buckets);
            let found = detect(&data, now, &InsightRules::default());
            prop_assert!(found.iter().any(|c| c.rule == "sentiment_drop"), "{:?}", found);
        }
    }
}
