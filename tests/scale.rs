//! Scale tests on 200,000 interactions: the common listings are served by indexes (R5.11) and an export
//! of every row streams in constant memory (R15.9). A test binary of its own, so the memory it measures
//! is not shared with other tests running in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt as _;
use insights::domain::interaction::Channel;
use insights::store::listing::{InteractionFilter, InteractionQuery, InteractionSort, explain_list};
use insights::store::synthetic::{Synthetic, generate};
use serde_json::Value;

const ROWS: i64 = 200_000;

/// Every (node type, relation, index) of a plan.
fn nodes(plan: &Value, out: &mut Vec<(String, String, String)>) {
    let field = |k: &str| plan[k].as_str().unwrap_or("").to_owned();
    out.push((field("Node Type"), field("Relation Name"), field("Index Name")));
    if let Some(children) = plan["Plans"].as_array() {
        for child in children {
            nodes(child, out);
        }
    }
}

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

    // The common listings, as the API builds them, each with the index that should serve it.
    let day = |d: i64| Some(end - chrono::Duration::days(d));
    let cases = [
        (
            "org + time range",
            InteractionFilter {
                from: day(3),
                to: day(2),
                ..InteractionFilter::default()
            },
            &["customer_interactions_org_occurred_at_idx"][..],
        ),
        (
            "org + channel + time range",
            InteractionFilter {
                from: day(10),
                to: day(5),
                channels: vec![Channel::Chat],
                ..InteractionFilter::default()
            },
            // Newest first with a limit, reading the time index and skipping other channels can be the
            // cheaper plan; either index serves it.
            &[
                "customer_interactions_org_channel_occurred_at_idx",
                "customer_interactions_org_occurred_at_idx",
            ][..],
        ),
        (
            "org + customer",
            InteractionFilter {
                customer: Some(insights::domain::CustomerId(customer)),
                ..InteractionFilter::default()
            },
            &["customer_interactions_org_customer_occurred_at_idx"][..],
        ),
        (
            "full-text",
            InteractionFilter {
                text: Some("kangaroo".to_owned()),
                ..InteractionFilter::default()
            },
            &["customer_interactions_content_fts"][..],
        ),
    ];
    for (name, filter, indexes) in cases {
        let query = InteractionQuery {
            filter,
            sort: InteractionSort::Timestamp,
            descending: true,
            limit: 20,
            offset: 0,
            after: None,
        };
        let plans = explain_list(&app.pool, org.id, &query).await.unwrap();
        for (which, plan) in ["page", "count"].iter().zip(plans.iter()) {
            let mut all = Vec::new();
            nodes(&plan[0]["Plan"], &mut all);
            assert!(
                !all.iter()
                    .any(|(node, rel, _)| node == "Seq Scan" && rel == "customer_interactions"),
                "{name} ({which}) scans the table: {plan}"
            );
            assert!(
                all.iter().any(|(_, _, i)| indexes.contains(&i.as_str())),
                "{name} ({which}) uses none of {indexes:?}: {plan}"
            );
        }
    }
    // The plain listing of the newest page reads the time index backwards, without a sort.
    let plans = explain_list(
        &app.pool,
        org.id,
        &InteractionQuery {
            descending: true,
            limit: 20,
            ..InteractionQuery::default()
        },
    )
    .await
    .unwrap();
    let mut all = Vec::new();
    nodes(&plans[0][0]["Plan"], &mut all);
    assert!(
        all.iter()
            .any(|(_, _, i)| i == "customer_interactions_org_occurred_at_idx"),
        "{}",
        plans[0]
    );

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
