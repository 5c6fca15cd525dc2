//! Behaviour patterns (R4): pure functions from a customer's recent interactions and a clock to the
//! patterns they show. No I/O: the customer's actor feeds them its rolling window.
//!
//! Confidence formulas (each in [0, 1]; a pattern is returned only at 0.7 or more, R4.3–4.4):
//! - channel frequency: regularity = 1 / (1 + CV of the gaps between uses), CV = standard deviation / mean;
//!   evenly spaced uses give 1, bursty ones fall toward 0. Needs 10+ uses of the channel (R4.5).
//! - sentiment trend: consistency = share of the scored interactions whose score has the majority sign
//!   (|score| > 0.05 counts as a sign); needs 5+ scored interactions (R4.6).
//! - temporal: concentration = share of interactions in the busiest (weekday/weekend × part of day) cell,
//!   parts of day being night 0–6, morning 6–12, afternoon 12–18, evening 18–24 UTC (R4.7).
//! - engagement: 0.4 × frequency (interactions per day, capped at 1) + 0.3 × recency (1 − days since the
//!   last interaction / 30) + 0.3 × breadth (channels used / 5), always in [0, 1] (R4.8).

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};

use crate::domain::interaction::Channel;

/// The window patterns look at (R4.1).
pub const WINDOW_DAYS: i64 = 30;
/// Fewer interactions than this give no patterns (R4.2).
pub const MIN_INTERACTIONS: usize = 5;
/// Patterns below this confidence are not returned (R4.3).
pub const MIN_CONFIDENCE: f64 = 0.7;
/// A channel needs this many uses for a frequency pattern (R4.5).
pub const CHANNEL_MIN_USES: usize = 10;
/// A score beyond ±this counts as positive or negative.
const SIGN_THRESHOLD: f32 = 0.05;

pub use crate::domain::pattern::{Event, Pattern, PatternType};

/// Detects the patterns of the interactions within the 30 days before `now`, highest confidence first.
pub fn detect(events: &[Event], now: DateTime<Utc>) -> Vec<Pattern> {
    let start = now - Duration::days(WINDOW_DAYS);
    let mut window: Vec<Event> = events
        .iter()
        .copied()
        .filter(|e| e.at >= start && e.at <= now)
        .collect();
    if window.len() < MIN_INTERACTIONS {
        return Vec::new();
    }
    window.sort_by_key(|e| e.at);
    let make =
        |kind, confidence: f64, frequency: usize, description: String, evidence: serde_json::Value| Pattern {
            kind,
            confidence: (confidence * 1000.0).round() / 1000.0,
            frequency: i32::try_from(frequency.max(1)).unwrap_or(i32::MAX),
            description,
            evidence: evidence.to_string(),
            window_start: start,
            window_end: now,
        };
    let mut found = Vec::new();

    for channel in Channel::ALL {
        let times: Vec<DateTime<Utc>> = window
            .iter()
            .filter(|e| e.channel == channel)
            .map(|e| e.at)
            .collect();
        if times.len() < CHANNEL_MIN_USES {
            continue;
        }
        let gaps: Vec<f64> = times
            .windows(2)
            .map(|w| (w[1] - w[0]).num_seconds() as f64 / 86_400.0)
            .collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        let cv = if mean > 0.0 {
            var.sqrt() / mean
        } else {
            f64::INFINITY
        };
        let regularity = 1.0 / (1.0 + cv);
        if regularity > MIN_CONFIDENCE {
            let every = if mean >= 1.0 {
                format!("about every {mean:.0} days")
            } else {
                format!("about every {:.0} hours", mean * 24.0)
            };
            found.push(make(
                PatternType::ChannelFrequency,
                regularity,
                times.len(),
                format!("Uses {} {every} ({} times in {WINDOW_DAYS} days)", channel.as_str(), times.len()),
                serde_json::json!({"channel": channel.as_str(), "uses": times.len(), "meanGapDays": mean, "cv": cv}),
            ));
        }
    }

    let scores: Vec<f32> = window.iter().filter_map(|e| e.score).collect();
    if scores.len() >= MIN_INTERACTIONS {
        let positive = scores.iter().filter(|s| **s > SIGN_THRESHOLD).count();
        let negative = scores.iter().filter(|s| **s < -SIGN_THRESHOLD).count();
        let (label, count) = if positive >= negative {
            ("positive", positive)
        } else {
            ("negative", negative)
        };
        let consistency = count as f64 / scores.len() as f64;
        if consistency > MIN_CONFIDENCE {
            let mean = scores.iter().map(|s| f64::from(*s)).sum::<f64>() / scores.len() as f64;
            found.push(make(
                PatternType::SentimentTrend,
                consistency,
                count,
                format!("Consistently {label} ({count} of {} scored interactions)", scores.len()),
                serde_json::json!({"direction": label, "scored": scores.len(), "matching": count, "meanScore": mean}),
            ));
        }
    }

    let mut cells = [[0usize; 4]; 2];
    for e in &window {
        let weekend = usize::from(e.at.weekday().number_from_monday() >= 6);
        cells[weekend][(e.at.hour() / 6) as usize] += 1;
    }
    let (mut best, mut best_cell) = (0, (0, 0));
    for (w, row) in cells.iter().enumerate() {
        for (p, n) in row.iter().enumerate() {
            if *n > best {
                best = *n;
                best_cell = (w, p);
            }
        }
    }
    let concentration = best as f64 / window.len() as f64;
    if concentration >= MIN_CONFIDENCE {
        let days = ["weekday", "weekend"][best_cell.0];
        let part = ["nights", "mornings", "afternoons", "evenings"][best_cell.1];
        found.push(make(
            PatternType::Temporal,
            concentration,
            best,
            format!(
                "Mostly {days} {part} ({best} of {} interactions, UTC)",
                window.len()
            ),
            serde_json::json!({"days": days, "partOfDay": part, "matching": best, "total": window.len()}),
        ));
    }

    let per_day = (window.len() as f64 / WINDOW_DAYS as f64).min(1.0);
    let last = window.last().map_or(start, |e| e.at);
    let days_since = (now - last).num_seconds() as f64 / 86_400.0;
    let recency = (1.0 - days_since / WINDOW_DAYS as f64).clamp(0.0, 1.0);
    let mut channels: Vec<Channel> = window.iter().map(|e| e.channel).collect();
    channels.sort_by_key(|c| c.as_str());
    channels.dedup();
    let breadth = channels.len() as f64 / Channel::ALL.len() as f64;
    let engagement = (0.4 * per_day + 0.3 * recency + 0.3 * breadth).clamp(0.0, 1.0);
    if engagement >= MIN_CONFIDENCE {
        found.push(make(
            PatternType::Engagement,
            engagement,
            window.len(),
            format!(
                "Highly engaged: score {engagement:.2} ({} interactions on {} channels, last {days_since:.0} days ago)",
                window.len(),
                channels.len()
            ),
            serde_json::json!({"score": engagement, "perDay": per_day, "recency": recency, "breadth": breadth}),
        ));
    }

    found.retain(|p| (MIN_CONFIDENCE..=1.0).contains(&p.confidence));
    found.sort_by(|a, b| b.confidence.total_cmp(&a.confidence).then(a.kind.cmp(&b.kind)));
    found
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-06-30T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn at(days_ago: f64, hour: u32) -> DateTime<Utc> {
        let day = (now() - Duration::seconds((days_ago * 86_400.0) as i64)).date_naive();
        day.and_hms_opt(hour, 0, 0).unwrap().and_utc()
    }

    #[test]
    fn fewer_than_five_interactions_give_nothing() {
        let events: Vec<Event> = (0..4)
            .map(|i| Event {
                at: at(i as f64, 10),
                channel: Channel::Chat,
                score: Some(0.9),
            })
            .collect();
        assert!(detect(&events, now()).is_empty());
    }

    #[test]
    fn a_regular_channel_is_found() {
        // Chat every two days, 14 times: perfectly regular.
        let events: Vec<Event> = (0..14)
            .map(|i| Event {
                at: at(1.0 + 2.0 * i as f64, 10),
                channel: Channel::Chat,
                score: None,
            })
            .collect();
        let found = detect(&events, now());
        let p = found
            .iter()
            .find(|p| p.kind == PatternType::ChannelFrequency)
            .expect("channel pattern");
        assert_eq!(p.frequency, 14);
        assert!(p.confidence > 0.99);
        assert_eq!(
            p.description,
            "Uses chat about every 2 days (14 times in 30 days)"
        );
        // A bursty channel (ten uses within an hour, then silence, then one) is not regular.
        let mut bursty: Vec<Event> = (0..10)
            .map(|i| Event {
                at: at(20.0, 10) + Duration::minutes(i),
                channel: Channel::Web,
                score: None,
            })
            .collect();
        bursty.push(Event {
            at: at(1.0, 10),
            channel: Channel::Web,
            score: None,
        });
        assert!(
            detect(&bursty, now())
                .iter()
                .all(|p| p.kind != PatternType::ChannelFrequency)
        );
    }

    #[test]
    fn consistent_sentiment_is_found_and_mixed_is_not() {
        let scores = [0.8, 0.6, 0.9, 0.7, -0.2, 0.5, 0.8];
        let events: Vec<Event> = scores
            .iter()
            .enumerate()
            .map(|(i, s)| Event {
                at: at(i as f64 * 3.0, 9 + i as u32),
                channel: Channel::Email,
                score: Some(*s),
            })
            .collect();
        let p = detect(&events, now())
            .into_iter()
            .find(|p| p.kind == PatternType::SentimentTrend)
            .expect("trend");
        assert_eq!(p.frequency, 6);
        assert!((p.confidence - 6.0 / 7.0).abs() < 1e-3);
        assert!(p.description.starts_with("Consistently positive"));
        let mixed: Vec<Event> = (0..8)
            .map(|i| Event {
                at: at(i as f64, 10),
                channel: Channel::Email,
                score: Some(if i % 2 == 0 { 0.7 } else { -0.7 }),
            })
            .collect();
        assert!(
            detect(&mixed, now())
                .iter()
                .all(|p| p.kind != PatternType::SentimentTrend)
        );
    }

    #[test]
    fn weekday_mornings_are_found() {
        // 2026-06-30 is a Tuesday; weekdays 1..=5 days back from a Monday-to-Friday week.
        let weekdays: Vec<f64> = (0..30)
            .map(f64::from)
            .filter(|d| {
                let wd = at(*d, 8).weekday().number_from_monday();
                wd <= 5
            })
            .take(9)
            .collect();
        let mut events: Vec<Event> = weekdays
            .iter()
            .map(|d| Event {
                at: at(*d, 8),
                channel: Channel::Web,
                score: None,
            })
            .collect();
        events.push(Event {
            at: at(3.0, 20),
            channel: Channel::Web,
            score: None,
        });
        let p = detect(&events, now())
            .into_iter()
            .find(|p| p.kind == PatternType::Temporal)
            .expect("temporal");
        assert_eq!(
            p.description,
            "Mostly weekday mornings (9 of 10 interactions, UTC)"
        );
        assert!((p.confidence - 0.9).abs() < 1e-9);
    }

    #[test]
    fn an_engaged_customer_is_scored_high_and_a_lapsed_one_not_at_all() {
        let engaged: Vec<Event> = (0..40)
            .map(|i| Event {
                at: at(i as f64 * 0.7, 10 + (i % 8) as u32),
                channel: Channel::ALL[i % 5],
                score: None,
            })
            .collect();
        let p = detect(&engaged, now())
            .into_iter()
            .find(|p| p.kind == PatternType::Engagement)
            .expect("engagement");
        assert!(p.confidence >= 0.9, "{p:?}");
        let lapsed: Vec<Event> = (0..6)
            .map(|i| Event {
                at: at(25.0 + i as f64 * 0.1, 10),
                channel: Channel::Web,
                score: None,
            })
            .collect();
        assert!(
            detect(&lapsed, now())
                .iter()
                .all(|p| p.kind != PatternType::Engagement)
        );
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        (
            0i64..(40 * 86_400),
            0usize..5,
            proptest::option::of(-1.0f32..=1.0),
        )
            .prop_map(|(secs, c, score)| Event {
                at: now() - Duration::seconds(secs),
                channel: Channel::ALL[c],
                score,
            })
    }

    proptest! {
        #[test]
        fn invariants_hold(events in proptest::collection::vec(arb_event(), 0..80)) {
            let found = detect(&events, now());
            let in_window = events.iter().filter(|e| e.at >= now() - Duration::days(WINDOW_DAYS)).count();
            if in_window < MIN_INTERACTIONS {
                prop_assert!(found.is_empty());
            }
            for p in &found {
                prop_assert!((MIN_CONFIDENCE..=1.0).contains(&p.confidence));
                prop_assert!(p.frequency >= 1);
                prop_assert!(!p.description.is_empty());
                prop_assert_eq!(p.window_end, now());
                prop_assert_eq!(p.window_start, now() - Duration::days(WINDOW_DAYS));
            }
            prop_assert!(found.windows(2).all(|w| w[0].confidence >= w[1].confidence));
            prop_assert_eq!(&found, &detect(&events, now()), "deterministic");
            let mut reversed = events.clone();
            reversed.reverse();
            prop_assert_eq!(&found, &detect(&reversed, now()), "independent of input order");
            // Interactions older than the window change nothing.
            let mut with_old = events.clone();
            with_old.push(Event { at: now() - Duration::days(45), channel: Channel::Chat, score: Some(1.0) });
            prop_assert_eq!(&found, &detect(&with_old, now()));
        }
    }
}
