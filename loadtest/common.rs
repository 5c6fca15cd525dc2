//! What the load tools share.

use std::time::Duration;

/// Refuses any target but this machine: the load tools drive loopback only.
pub fn assert_loopback(base: &str) {
    let host = base
        .trim_start_matches("https://")
        .split([':', '/'])
        .next()
        .unwrap_or_default();
    assert!(
        matches!(host, "localhost" | "127.0.0.1" | "[::1]"),
        "loopback targets only"
    );
}

/// The `p` quantile of sorted latencies, in milliseconds to 0.1.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .map_or(0.0, |d| (d.as_secs_f64() * 10_000.0).round() / 10.0)
}
