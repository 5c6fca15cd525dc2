//! Load generator for a running node (loopback only). Scenarios: `single` and `batch` ingestion,
//! `ml-single` and `ml-batch` sentiment predictions (texts made unique so the cache cannot answer).
//!
//! ```text
//! cargo run --release --example loadtest -- --email admin@demo.local --password 'change-me-please' \
//!     --scenario single --requests 5000 --concurrency 32
//! ```
//!
//! Closed loop: `--concurrency` workers each send their next request when the previous one is answered,
//! until `--requests` are done or `--max-secs` have passed. Prints a table and a JSON line with the
//! throughput and p50/p95/p99 latency of the scenario.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Args {
    base: String,
    cacert: String,
    email: String,
    password: String,
    scenario: String,
    requests: usize,
    concurrency: usize,
    batch_size: usize,
    customers: usize,
    max_secs: u64,
}

fn parse_args() -> Args {
    let mut args = Args {
        base: "https://localhost:8443".into(),
        cacert: "data/tls/cert.pem".into(),
        email: String::new(),
        password: String::new(),
        scenario: "single".into(),
        requests: 2000,
        concurrency: 16,
        batch_size: 100,
        customers: 200,
        max_secs: 120,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--base" => args.base = value,
            "--cacert" => args.cacert = value,
            "--email" => args.email = value,
            "--password" => args.password = value,
            "--scenario" => args.scenario = value,
            "--requests" => args.requests = value.parse().expect("--requests N"),
            "--concurrency" => args.concurrency = value.parse().expect("--concurrency N"),
            "--batch-size" => args.batch_size = value.parse().expect("--batch-size N"),
            "--customers" => args.customers = value.parse().expect("--customers N"),
            "--max-secs" => args.max_secs = value.parse().expect("--max-secs N"),
            other => panic!("unknown flag {other}"),
        }
    }
    let host = args
        .base
        .trim_start_matches("https://")
        .split([':', '/'])
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(
        matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]"),
        "loopback targets only"
    );
    args
}

const SEGMENTS: [&str; 3] = ["smb", "enterprise", "trial"];

const TEXTS: [&str; 6] = [
    "Thanks, the support team solved my problem in minutes!",
    "My order arrived late and the box was damaged.",
    "Can you tell me when the store opens on Sunday?",
    "Terrible experience, I was on hold for an hour.",
    "Love the new app update, checkout is so much faster.",
    "I'd like to change the delivery address for order 1234.",
];

/// A text no other request uses, so the prediction cache cannot answer it (digits would all become
/// `[NUM]` in preprocessing, so the uniqueness is spelled in letters).
fn unique_text(i: usize) -> String {
    const WORDS: [&str; 16] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo",
        "lima", "mike", "november", "oscar", "papa",
    ];
    let run = std::process::id() as usize;
    let code: Vec<&str> = [i, i >> 4, i >> 8, i >> 12, run, run >> 4]
        .iter()
        .map(|n| WORDS[n % 16])
        .collect();
    format!("{} (ref {})", TEXTS[i % TEXTS.len()], code.join(" "))
}

fn item(customer: &str, i: usize) -> Value {
    let channels = ["web", "mobile", "email", "chat", "phone"];
    let channel = channels[i % channels.len()];
    let at = (chrono::Utc::now() - chrono::Duration::seconds((i % 3600) as i64)).to_rfc3339();
    json!({"customerId": customer, "channel": channel, "eventType": "message", "content": TEXTS[i % TEXTS.len()],
           "timestamp": at, "metadata": {"userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0"}})
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let cert = reqwest::Certificate::from_pem(&std::fs::read(&args.cacert).expect("--cacert file")).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([cert])
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .unwrap();
    let login: Value = client
        .post(format!("{}/api/v1/auth/login", args.base))
        .json(&json!({"email": args.email, "password": args.password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["accessToken"].as_str().expect("login failed").to_owned();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut customers = Vec::new();
    for i in 0..args.customers {
        let r: Value = client
            .post(format!("{}/api/v1/customers", args.base))
            .bearer_auth(&token)
            .json(&json!({"externalId": format!("load-{run}-{i}"), "segment": SEGMENTS[i % SEGMENTS.len()]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        customers.push(r["id"].as_str().unwrap().to_owned());
    }
    let customers = Arc::new(customers);
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (client, token, customers, next) =
            (client.clone(), token.clone(), customers.clone(), next.clone());
        let (base, scenario, requests, batch_size) = (
            args.base.clone(),
            args.scenario.clone(),
            args.requests,
            args.batch_size,
        );
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests || Instant::now() > deadline {
                    break;
                }
                let (url, body) = if scenario == "ml-single" {
                    (
                        format!("{base}/api/v1/ml/sentiment"),
                        json!({"text": unique_text(i)}),
                    )
                } else if scenario == "ml-batch" {
                    let texts: Vec<String> =
                        (0..batch_size).map(|k| unique_text(i * batch_size + k)).collect();
                    (
                        format!("{base}/api/v1/ml/sentiment/batch"),
                        json!({"texts": texts}),
                    )
                } else if scenario == "batch" {
                    let items: Vec<Value> = (0..batch_size)
                        .map(|k| item(&customers[(i * batch_size + k) % customers.len()], i + k))
                        .collect();
                    (
                        format!("{base}/api/v1/interactions/batch"),
                        json!({"interactions": items}),
                    )
                } else {
                    (
                        format!("{base}/api/v1/interactions"),
                        item(&customers[i % customers.len()], i),
                    )
                };
                let t = Instant::now();
                let ok = client
                    .post(url)
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false);
                latencies.push(t.elapsed());
                if !ok {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await.unwrap();
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let per_request = if args.scenario == "batch" || args.scenario == "ml-batch" {
        args.batch_size
    } else {
        1
    };
    let requests = latencies.len();
    let report = json!({
        "scenario": args.scenario, "requests": requests, "errors": errors, "concurrency": args.concurrency,
        "seconds": (elapsed * 100.0).round() / 100.0,
        "requestsPerSec": (requests as f64 / elapsed).round(),
        "interactionsPerSec": ((requests * per_request) as f64 / elapsed).round(),
        "p50Ms": (pct(0.50) * 10.0).round() / 10.0, "p95Ms": (pct(0.95) * 10.0).round() / 10.0, "p99Ms": (pct(0.99) * 10.0).round() / 10.0,
    });
    println!(
        "| scenario | requests | errors | concurrency | req/s | interactions/s | p50 ms | p95 ms | p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        report["scenario"].as_str().unwrap(),
        requests,
        errors,
        args.concurrency,
        report["requestsPerSec"],
        report["interactionsPerSec"],
        report["p50Ms"],
        report["p95Ms"],
        report["p99Ms"]
    );
    println!("{report}");
}
