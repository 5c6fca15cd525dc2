//! Scale tests on 200,000 interactions in one organization: every filter and sort of the listing is
//! served by indexes and reads a bounded number of rows (`EXPLAIN ANALYZE`, R5.11), and an export of
//! every row streams in constant memory (R15.9). A test binary of its own, so the memory it measures
//! is not shared with other tests running in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt as _;
use insights::domain::interaction::Channel;
use insights::store::filter::InteractionFilter;
use insights::store::listing::{InteractionQuery, InteractionSort, explain_list};
use insights::store::synthetic::{Synthetic, generate};
use serde_json::Value;

const ROWS: i64 = 200_000;

/// A node of an analyzed plan: its type, relation, and the rows it read (returned plus removed by a
/// filter or a recheck, times its loops).
struct PlanNode {
    node: String,
    relation: String,
    read: f64,
}

fn nodes(plan: &Value, out: &mut Vec<PlanNode>) {
    let field = |k: &str| plan[k].as_str().unwrap_or("").to_owned();
    let number = |k: &str| plan[k].as_f64().unwrap_or(0.0);
    out.push(PlanNode {
        node: field("Node Type"),
        relation: field("Relation Name"),
        read: (number("Actual Rows")
            + number("Rows Removed by Filter")
            + number("Rows Removed by Index Recheck"))
            * number("Actual Loops").max(1.0),
    });
    if let Some(children) = plan["Plans"].as_array() {
        for child in children {
            nodes(child, out);
        }
    }
}

/// Most rows a page of 20 may read, whatever its filter and sort: a few hundred pages' worth, far below
/// the organization's size, so a plan that sorts or filters the whole organization fails.
const PAGE_BUDGET: f64 = 12_000.0;

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test]
async fn two_hundred_thousand_interactions_are_indexed_and_export_in_constant_memory() {
    let app = helpers::spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let end = Utc::now() - chrono::Duration::hours(1);
    let inserted = generate(
        &app.pool,
        org.id,
        &Synthetic {
            customers: 2_000,
            interactions: ROWS,
            days: 90,
            end,
        },
    )
    .await
    .unwrap();
    assert_eq!(inserted, ROWS as u64);
    let customer: uuid::Uuid = sqlx::query_scalar(
        "SELECT id FROM customers WHERE organization_id = $1 AND external_id = 'synthetic-42'",
    )
    .bind(org.id.as_uuid())
    .fetch_one(&app.pool)
    .await
    .unwrap();

    // Every filter and every sort of the listing, as the API builds them: no page scans the table or
    // reads more than PAGE_BUDGET rows, and no count reads more than a few times its bound.
    let day = |d: i64| Some(end - chrono::Duration::days(d));
    let filters = [
        ("no filter", InteractionFilter::default()),
        (
            "a week",
            InteractionFilter {
                from: day(10),
                to: day(3),
                ..InteractionFilter::default()
            },
        ),
        (
            "one channel",
            InteractionFilter {
                channels: vec![Channel::Chat],
                ..InteractionFilter::default()
            },
        ),
        (
            "two channels and an hour",
            InteractionFilter {
                from: day(5),
                to: Some(end - chrono::Duration::days(5) + chrono::Duration::hours(1)),
                channels: vec![Channel::Chat, Channel::Email],
                ..InteractionFilter::default()
            },
        ),
        (
            "one segment",
            InteractionFilter {
                segments: vec!["smb".to_owned()],
                ..InteractionFilter::default()
            },
        ),
        (
            "a sentiment range",
            InteractionFilter {
                sentiment_min: Some(-1.0),
                sentiment_max: Some(-0.5),
                ..InteractionFilter::default()
            },
        ),
        (
            "a segment and a sentiment range",
            InteractionFilter {
                segments: vec!["enterprise".to_owned()],
                sentiment_min: Some(-1.0),
                sentiment_max: Some(-0.5),
                ..InteractionFilter::default()
            },
        ),
        (
            "a customer",
            InteractionFilter {
                customer: Some(insights::domain::CustomerId(customer)),
                ..InteractionFilter::default()
            },
        ),
        (
            "a rare term",
            InteractionFilter {
                text: Some("kangaroo".to_owned()),
                ..InteractionFilter::default()
            },
        ),
        (
            "a frequent term",
            InteractionFilter {
                text: Some("refund".to_owned()),
                ..InteractionFilter::default()
            },
        ),
    ];
    let bound = app.config.query.count_bound;
    for (name, filter) in &filters {
        for sort in InteractionSort::ALL {
            for descending in [true, false] {
                let query = InteractionQuery {
                    filter: filter.clone(),
                    sort,
                    descending,
                    limit: 20,
                    offset: 0,
                    after: None,
                };
                let what = format!(
                    "{name}, sorted by {} {}",
                    sort.as_str(),
                    if descending { "desc" } else { "asc" }
                );
                let plans = explain_list(&app.pool, org.id, &query, bound, true)
                    .await
                    .unwrap();
                for (which, plan) in ["page", "count"].iter().zip(plans.iter()) {
                    let mut all = Vec::new();
                    nodes(&plan[0]["Plan"], &mut all);
                    // A count may read the heap in order when its matches are dense (it stops at the
                    // bound); a page never.
                    assert!(
                        *which == "count"
                            || !all
                                .iter()
                                .any(|n| { n.node == "Seq Scan" && n.relation == "customer_interactions" }),
                        "{what} ({which}) scans the table: {plan}"
                    );
                    let read: f64 = all
                        .iter()
                        .filter(|n| n.relation == "customer_interactions")
                        .map(|n| n.read)
                        .sum();
                    let budget = match *which {
                        "page" => PAGE_BUDGET,
                        // The bound's worth of matches among the rows read to find them: a bounded
                        // count costs the bound over the filter's selectivity (here down to 1 in 12, a
                        // segment with a quarter of the score range), never the organization.
                        _ => 15.0 * (bound + 1) as f64,
                    };
                    assert!(read <= budget, "{what} ({which}) reads {read} rows: {plan}");
                }
            }
        }
    }

    // Export every row, reading slowly at first, and watch this process's memory.
    let resp = app
        .client
        .get(format!("{}/api/v1/export/interactions?format=csv", app.base))
        .bearer_auth(&admin.access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut lines: u64 = 0;
    let mut bytes: u64 = 0;
    let mut baseline = None;
    let mut peak = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        if baseline.is_none() && lines > 10_000 {
            // The server is now blocked on this reader: give it time to (wrongly) read ahead.
            tokio::time::sleep(Duration::from_millis(500)).await;
            baseline = Some(rss());
        }
        if lines % 20_000 < 200 {
            peak = peak.max(rss());
        }
    }
    peak = peak.max(rss());
    assert_eq!(lines, ROWS as u64 + 1, "a header and every row");
    let baseline = baseline.unwrap();
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "exported {bytes} bytes; rss at 10k rows {} MiB, peak {} MiB",
        baseline >> 20,
        peak >> 20
    );
    assert!(
        bytes > 60 << 20,
        "the export is large enough to tell: {bytes} bytes"
    );
    assert!(
        growth < bytes / 4,
        "memory grew by {} MiB while exporting {} MiB",
        growth >> 20,
        bytes >> 20
    );
}
