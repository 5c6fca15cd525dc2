//! Query benchmark (issue 6, R5.9, R8.3): 1,000,000 interactions across 100 organizations, then the
//! latency of filtered page queries and of the cached summaries, cold (a cache miss every time) and
//! cached, from real HTTPS clients against a running node (loopback only).
//!
//! ```text
//! cargo run --release --example querybench -- --database-url postgres://postgres@127.0.0.1/insights \
//!     --orgs 100 --per-org 10000 --requests 2000 --concurrency 8
//! cargo run --release --example querybench -- --database-url postgres://postgres@127.0.0.1/insights \
//!     --scenario big --requests 200        # one organization of 5,000,000 (`big_tenant.rs`)
//! ```
//!
//! The data is generated inside PostgreSQL by `insights::store::synthetic` (scores written as if the
//! model had run), once: a second run finds the organizations `querybench-NNN` and reuses them. Each
//! organization has an admin `bench-NNN@querybench.local` with the password `querybench-password`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod big_tenant;
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use insights::domain::{Email, OrganizationId, PersonName};
use insights::store::synthetic::{Synthetic, generate};
use serde_json::{Value, json};

const PASSWORD: &str = "querybench-password";

/// Query benchmark: fills organizations once (reused by later runs), then measures listings and
/// summaries, cold and cached, over HTTPS against a running node (loopback only).
#[derive(clap::Parser)]
#[command(name = "querybench")]
struct Args {
    /// The node's base URL (must be a loopback address).
    #[arg(long, default_value = "https://localhost:8443")]
    base: String,
    /// The node's certificate (PEM), trusted for HTTPS.
    #[arg(long, default_value = "data/tls/cert.pem")]
    cacert: String,
    /// The node's database, filled directly.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/insights"
    )]
    database_url: String,
    /// Organizations to fill.
    #[arg(long, default_value_t = 100)]
    orgs: usize,
    /// Interactions per organization.
    #[arg(long, default_value_t = 10_000)]
    per_org: i64,
    /// Requests per measured query.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Concurrent requests.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// `tenants`: `--orgs` organizations of `--per-org` rows; `big`: one organization of `--big-rows`.
    #[arg(long, default_value = "tenants")]
    scenario: String,
    /// Interactions of the big tenant.
    #[arg(long, default_value_t = 5_000_000)]
    big_rows: i64,
    /// Customers of the big tenant.
    #[arg(long, default_value_t = 20_000)]
    big_customers: i64,
    /// Concurrencies the big scenario measures at, comma-separated.
    #[arg(long, default_value = "1,8")]
    big_concurrency: String,
    /// Interactions per second ingested through the API during the big scenario's second phase (0: none).
    #[arg(long, default_value_t = 100)]
    ingest_rate: u32,
    /// Only these request kinds of the big scenario, comma-separated (default: every kind).
    #[arg(long, default_value = "")]
    big_kinds: String,
}

fn parse_args() -> Args {
    let args = <Args as clap::Parser>::parse();
    common::assert_loopback(&args.base);
    args
}

/// Creates the organizations that do not exist yet and fills them; returns every organization's id.
async fn seed(args: &Args) -> Vec<OrganizationId> {
    let pool = sqlx::PgPool::connect(&args.database_url).await.unwrap();
    let hash = insights::auth::hash_password(PASSWORD.to_owned(), 10)
        .await
        .unwrap();
    let mut ids = Vec::new();
    let started = Instant::now();
    for n in 0..args.orgs {
        let name = format!("querybench-{n:03}");
        let existing: Option<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM organizations WHERE name = $1")
            .bind(&name)
            .fetch_optional(&pool)
            .await
            .unwrap();
        let org = match existing {
            Some(id) => OrganizationId(id),
            None => {
                let email = Email::parse(&format!("bench-{n:03}@querybench.local")).unwrap();
                let (org, _) = insights::store::orgs::create_with_admin(
                    &pool,
                    &name,
                    &email,
                    &PersonName::parse("Bench").unwrap(),
                    &hash,
                )
                .await
                .unwrap();
                generate(
                    &pool,
                    org,
                    &Synthetic {
                        customers: 200,
                        interactions: args.per_org,
                        days: 90,
                        end: chrono::Utc::now(),
                    },
                )
                .await
                .unwrap();
                if n % 10 == 9 {
                    eprintln!(
                        "seeded {} organizations in {:.0} s",
                        n + 1,
                        started.elapsed().as_secs_f64()
                    );
                }
                org
            }
        };
        ids.push(org);
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM customer_interactions")
        .fetch_one(&pool)
        .await
        .unwrap();
    eprintln!("{total} interactions in the database");
    ids
}

/// What one request of a scenario asks for, given the request number and a customer of the org.
fn path(scenario: &str, i: usize, customer: &str) -> String {
    let now = chrono::Utc::now();
    let days_ago = |d: i64| {
        (now - chrono::Duration::days(d))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let channels = ["web", "mobile", "email", "chat", "phone"];
    let segments = ["smb", "enterprise", "consumer"];
    match scenario {
        // Listings are not cached: every request reads PostgreSQL.
        "page:newest" => "/api/v1/interactions".to_owned(),
        "page:week+channel" => format!(
            "/api/v1/interactions?from={}&to={}&channels={}",
            days_ago(7 + (i % 60) as i64),
            days_ago((i % 60) as i64),
            channels[i % 5]
        ),
        "page:segment+sentiment" => format!(
            "/api/v1/interactions?segments={}&sentimentMin=-1&sentimentMax=-0.5&sort=sentiment&order=asc",
            segments[i % 3]
        ),
        "page:customer" => format!("/api/v1/interactions?customerId={customer}"),
        "page:fulltext" => "/api/v1/interactions?q=refund".to_owned(),
        "page:deep-offset" => "/api/v1/interactions?page=400&pageSize=20".to_owned(),
        // Cold: a `to` no other request uses, so every request misses the cache.
        "dashboard:cold" => format!(
            "/api/v1/insights/dashboard?to={}",
            (now - chrono::Duration::milliseconds(i as i64))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ),
        "dashboard:cached" => "/api/v1/insights/dashboard".to_owned(),
        "trends:cold" => format!(
            "/api/v1/insights/trends?interval=day&to={}",
            (now - chrono::Duration::milliseconds(i as i64))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ),
        "trends:cached" => "/api/v1/insights/trends?interval=day".to_owned(),
        "profile:cached" => format!("/api/v1/customers/{customer}"),
        other => panic!("unknown scenario {other}"),
    }
}

struct Org {
    token: String,
    customers: Vec<String>,
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let cert = reqwest::Certificate::from_pem(&std::fs::read(&args.cacert).expect("--cacert file")).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([cert])
        .pool_max_idle_per_host(args.concurrency.max(8))
        .build()
        .unwrap();
    if args.scenario == "big" {
        big_tenant::seed(&args.database_url, args.big_rows, args.big_customers).await;
        let concurrencies: Vec<usize> = args
            .big_concurrency
            .split(',')
            .map(|c| c.trim().parse().expect("--big-concurrency: numbers"))
            .collect();
        let only: Vec<String> = args
            .big_kinds
            .split(',')
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect();
        let report = big_tenant::run(
            &client,
            &args.base,
            args.requests,
            &concurrencies,
            args.ingest_rate,
            &only,
        )
        .await;
        println!(
            "{}",
            json!({"scenario": "big", "rows": args.big_rows, "report": report})
        );
        return;
    }
    assert_eq!(args.scenario, "tenants", "--scenario: tenants or big");
    let orgs = seed(&args).await;
    let mut sessions = Vec::new();
    for n in 0..orgs.len() {
        let login: Value = client
            .post(format!("{}/api/v1/auth/login", args.base))
            .json(&json!({"email": format!("bench-{n:03}@querybench.local"), "password": PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["accessToken"].as_str().expect("login failed").to_owned();
        let list: Value = client
            .get(format!("{}/api/v1/customers?pageSize=20", args.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let customers = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect();
        sessions.push(Org { token, customers });
    }
    let sessions = Arc::new(sessions);
    let scenarios = [
        "page:newest",
        "page:week+channel",
        "page:segment+sentiment",
        "page:customer",
        "page:fulltext",
        "page:deep-offset",
        "dashboard:cold",
        "dashboard:cached",
        "trends:cold",
        "trends:cached",
        "profile:cached",
    ];
    println!(
        "| scenario | requests | errors | cache hits | concurrency | req/s | p50 ms | p95 ms | p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut reports = Vec::new();
    for scenario in scenarios {
        if scenario.ends_with(":cached") {
            // Warm each organization's entry once; the measured requests are then hits until a write.
            for (n, org) in sessions.iter().enumerate() {
                let url = format!("{}{}", args.base, path(scenario, n, &org.customers[0]));
                client.get(url).bearer_auth(&org.token).send().await.unwrap();
            }
        }
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..args.concurrency {
            let (client, sessions, next, base) =
                (client.clone(), sessions.clone(), next.clone(), args.base.clone());
            let requests = args.requests;
            workers.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0usize;
                let mut hits = 0usize;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests {
                        break;
                    }
                    let org = &sessions[i % sessions.len()];
                    // Profiles: the same customer per organization, so the cached run can hit.
                    let customer = &org.customers[if scenario.starts_with("profile") {
                        0
                    } else {
                        i % org.customers.len()
                    }];
                    let url = format!("{base}{}", path(scenario, i, customer));
                    let t = Instant::now();
                    let ok = match client.get(url).bearer_auth(&org.token).send().await {
                        Ok(r) => {
                            let ok = r.status().is_success();
                            if r.headers().get("x-cache").is_some_and(|v| v == "hit") {
                                hits += 1;
                            }
                            ok && r.bytes().await.is_ok()
                        }
                        Err(_) => false,
                    };
                    latencies.push(t.elapsed());
                    if !ok {
                        errors += 1;
                    }
                }
                (latencies, errors, hits)
            }));
        }
        let mut latencies: Vec<Duration> = Vec::new();
        let mut errors = 0;
        let mut hits = 0;
        for w in workers {
            let (l, e, h) = w.await.unwrap();
            latencies.extend(l);
            errors += e;
            hits += h;
        }
        let elapsed = started.elapsed().as_secs_f64();
        latencies.sort();
        let pct = |p: f64| common::percentile(&latencies, p);
        let report = json!({
            "scenario": scenario, "requests": latencies.len(), "errors": errors, "cacheHits": hits,
            "concurrency": args.concurrency, "requestsPerSec": (latencies.len() as f64 / elapsed).round(),
            "p50Ms": pct(0.50), "p95Ms": pct(0.95), "p99Ms": pct(0.99),
        });
        println!(
            "| {scenario} | {} | {errors} | {hits} | {} | {} | {} | {} | {} |",
            latencies.len(),
            args.concurrency,
            report["requestsPerSec"],
            report["p50Ms"],
            report["p95Ms"],
            report["p99Ms"]
        );
        reports.push(report);
    }
    println!(
        "{}",
        json!({ "orgs": orgs.len(), "perOrg": args.per_org, "results": reports })
    );
}
