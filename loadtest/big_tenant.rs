//! The big-tenant scenario of the query benchmark (issue 15): one organization with millions of
//! interactions (default 5,000,000, generated once inside PostgreSQL), every filter and sort of the
//! listing plus the dashboard and trends, cold and warm, one at a time and 8 concurrent, first alone and
//! then beside a steady ingest through the API; and how long a write takes to show on a dashboard.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use insights::domain::{Email, OrganizationId, PersonName};
use insights::store::synthetic::{Synthetic, generate};
use serde_json::{Value, json};

use crate::common;

const PASSWORD: &str = "querybench-password";
const NAME: &str = "querybench-big";
const EMAIL: &str = "bench-big@querybench.local";

/// Creates and fills the organization once; later runs reuse it.
pub async fn seed(database_url: &str, rows: i64, customers: i64) -> OrganizationId {
    let pool = sqlx::PgPool::connect(database_url).await.unwrap();
    let existing: Option<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM organizations WHERE name = $1")
        .bind(NAME)
        .fetch_optional(&pool)
        .await
        .unwrap();
    if let Some(id) = existing {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM customer_interactions WHERE organization_id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
        eprintln!("reusing {NAME}: {n} interactions");
        return OrganizationId(id);
    }
    let hash = insights::auth::hash_password(PASSWORD.to_owned(), 10)
        .await
        .unwrap();
    let (org, _) = insights::store::orgs::create_with_admin(
        &pool,
        NAME,
        &Email::parse(EMAIL).unwrap(),
        &PersonName::parse("Bench").unwrap(),
        &hash,
    )
    .await
    .unwrap();
    let started = Instant::now();
    let inserted = generate(
        &pool,
        org,
        &Synthetic {
            customers,
            interactions: rows,
            days: 90,
            end: chrono::Utc::now(),
        },
    )
    .await
    .unwrap();
    eprintln!(
        "seeded {NAME}: {inserted} interactions, {customers} customers in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    org
}

/// Every request kind: listings (never cached), and the summaries cold (a `to` no other request uses)
/// and warm (the same request again).
const KINDS: [&str; 19] = [
    "page:newest",
    "page:oldest",
    "page:week+channel",
    "page:hour+channels",
    "page:segment",
    "page:sentiment-range",
    "page:segment+sentiment",
    "page:customer",
    "page:fulltext-rare",
    "page:fulltext-frequent",
    "page:sort-sentiment",
    "page:sort-sentiment-asc",
    "page:sort-channel",
    "page:sort-created",
    "page:deep-offset",
    "dashboard:cold",
    "dashboard:warm",
    "trends:cold",
    "trends:warm",
];

fn path(kind: &str, i: usize, customer: &str) -> String {
    let now = chrono::Utc::now();
    let ago = |h: i64| {
        (now - chrono::Duration::hours(h))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let channels = ["web", "mobile", "email", "chat", "phone"];
    let segments = ["smb", "enterprise", "consumer"];
    let h = (i % 1000) as i64;
    match kind {
        "page:newest" => "/api/v1/interactions".to_owned(),
        "page:oldest" => "/api/v1/interactions?order=asc".to_owned(),
        "page:week+channel" => format!(
            "/api/v1/interactions?from={}&to={}&channels={}",
            ago(24 * 7 + h),
            ago(h),
            channels[i % 5]
        ),
        "page:hour+channels" => format!(
            "/api/v1/interactions?from={}&to={}&channels=chat,email",
            ago(h + 1),
            ago(h)
        ),
        "page:segment" => format!("/api/v1/interactions?segments={}", segments[i % 3]),
        "page:sentiment-range" => "/api/v1/interactions?sentimentMin=-1&sentimentMax=-0.5".to_owned(),
        "page:segment+sentiment" => format!(
            "/api/v1/interactions?segments={}&sentimentMin=-1&sentimentMax=-0.5&sort=sentiment&order=asc",
            segments[i % 3]
        ),
        "page:customer" => format!("/api/v1/interactions?customerId={customer}"),
        "page:fulltext-rare" => "/api/v1/interactions?q=kangaroo".to_owned(),
        "page:fulltext-frequent" => "/api/v1/interactions?q=refund".to_owned(),
        "page:sort-sentiment" => "/api/v1/interactions?sort=sentiment".to_owned(),
        "page:sort-sentiment-asc" => "/api/v1/interactions?sort=sentiment&order=asc".to_owned(),
        "page:sort-channel" => "/api/v1/interactions?sort=channel".to_owned(),
        "page:sort-created" => "/api/v1/interactions?sort=createdAt".to_owned(),
        "page:deep-offset" => "/api/v1/interactions?page=400&pageSize=20".to_owned(),
        "dashboard:cold" => format!(
            "/api/v1/insights/dashboard?to={}",
            (now - chrono::Duration::milliseconds(i as i64))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ),
        "dashboard:warm" => "/api/v1/insights/dashboard".to_owned(),
        "trends:cold" => format!(
            "/api/v1/insights/trends?interval=day&to={}",
            (now - chrono::Duration::milliseconds(i as i64))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ),
        "trends:warm" => "/api/v1/insights/trends?interval=day".to_owned(),
        other => panic!("unknown kind {other}"),
    }
}

struct Session {
    client: reqwest::Client,
    base: String,
    token: String,
    customers: Vec<String>,
}

async fn login(client: &reqwest::Client, base: &str) -> Session {
    let login: Value = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": EMAIL, "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["accessToken"].as_str().expect("login failed").to_owned();
    let list: Value = client
        .get(format!("{base}/api/v1/customers?pageSize=50"))
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
        .filter(|c| {
            c["externalId"]
                .as_str()
                .is_some_and(|e| e.starts_with("synthetic-"))
        })
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    Session {
        client: client.clone(),
        base: base.to_owned(),
        token,
        customers,
    }
}

/// Runs `requests` requests of `kind`, `concurrency` at a time; returns one report row.
async fn measure(
    s: &Arc<Session>,
    kind: &'static str,
    requests: usize,
    concurrency: usize,
    phase: &str,
) -> Value {
    if kind.ends_with(":warm") {
        let url = format!("{}{}", s.base, path(kind, 0, &s.customers[0]));
        s.client.get(url).bearer_auth(&s.token).send().await.unwrap();
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (s, next) = (s.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let (mut latencies, mut errors, mut hits, mut bounded) = (Vec::new(), 0usize, 0usize, 0usize);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let customer = &s.customers[i % s.customers.len()];
                let url = format!("{}{}", s.base, path(kind, i, customer));
                let t = Instant::now();
                match s.client.get(url).bearer_auth(&s.token).send().await {
                    Ok(r) => {
                        let ok = r.status().is_success();
                        if r.headers().get("x-cache").is_some_and(|v| v == "hit") {
                            hits += 1;
                        }
                        match r.bytes().await {
                            Ok(body) if ok => {
                                const GTE: &[u8] = b"\"totalRelation\":\"gte\"";
                                if body.windows(GTE.len()).any(|w| w == GTE) {
                                    bounded += 1;
                                }
                            }
                            _ => errors += 1,
                        }
                    }
                    Err(_) => errors += 1,
                }
                latencies.push(t.elapsed());
            }
            (latencies, errors, hits, bounded)
        }));
    }
    let (mut latencies, mut errors, mut hits, mut bounded) = (Vec::new(), 0, 0, 0);
    for w in workers {
        let (l, e, h, b) = w.await.unwrap();
        latencies.extend(l);
        errors += e;
        hits += h;
        bounded += b;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| common::percentile(&latencies, p);
    let report = json!({
        "phase": phase, "kind": kind, "concurrency": concurrency, "requests": latencies.len(), "errors": errors,
        "cacheHits": hits, "boundedTotals": bounded,
        "requestsPerSec": (latencies.len() as f64 / elapsed).round(),
        "p50Ms": pct(0.50), "p95Ms": pct(0.95), "p99Ms": pct(0.99),
    });
    println!(
        "| {phase} | {kind} | {concurrency} | {} | {errors} | {hits} | {bounded} | {} | {} | {} | {} |",
        latencies.len(),
        report["requestsPerSec"],
        report["p50Ms"],
        report["p95Ms"],
        report["p99Ms"]
    );
    report
}

/// Posts interactions at `rate` per second until `stop`; returns (acknowledged, failed).
async fn ingest(s: Arc<Session>, rate: u32, stop: Arc<AtomicBool>) -> (usize, usize) {
    let texts = [
        "the delivery was late again",
        "thanks for the quick refund",
        "love the new dashboard",
    ];
    let channels = ["web", "mobile", "email", "chat", "phone"];
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    let mut running = tokio::task::JoinSet::new();
    let (mut acked, mut failed, mut n) = (0, 0, 0usize);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        n += 1;
        let s = s.clone();
        let body = json!({
            "customerId": s.customers[n % s.customers.len()],
            "channel": channels[n % 5],
            "eventType": "message",
            "content": texts[n % 3],
            "timestamp": chrono::Utc::now().to_rfc3339(),
        });
        running.spawn(async move {
            s.client
                .post(format!("{}/api/v1/interactions", s.base))
                .bearer_auth(&s.token)
                .json(&body)
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 201)
        });
        while let Some(done) = running.try_join_next() {
            if done.unwrap_or(false) {
                acked += 1
            } else {
                failed += 1
            }
        }
    }
    while let Some(done) = running.join_next().await {
        if done.unwrap_or(false) {
            acked += 1
        } else {
            failed += 1
        }
    }
    (acked, failed)
}

/// How long after a write acknowledged the dashboard (already cached) shows it: a probe customer of
/// its own segment, so the figure moves only with the probe's writes.
async fn staleness(s: &Session, probes: usize) -> Value {
    let created = s
        .client
        .post(format!("{}/api/v1/customers", s.base))
        .bearer_auth(&s.token)
        .json(&json!({"externalId": format!("probe-{}", uuid::Uuid::new_v4()), "segment": "probe"}))
        .send()
        .await
        .unwrap();
    let probe: Value = created.json().await.unwrap();
    let probe = probe["id"].as_str().unwrap().to_owned();
    let url = format!("{}/api/v1/insights/dashboard?segments=probe", s.base);
    let count = || async {
        let d: Value = s
            .client
            .get(&url)
            .bearer_auth(&s.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        d["totals"]["interactions"].as_i64().unwrap()
    };
    let mut waits = Vec::new();
    for _ in 0..probes {
        let before = count().await;
        let written = Instant::now();
        let r = s
            .client
            .post(format!("{}/api/v1/interactions", s.base))
            .bearer_auth(&s.token)
            .json(
                &json!({"customerId": probe, "channel": "web", "eventType": "visit",
                          "timestamp": chrono::Utc::now().to_rfc3339()}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        while count().await <= before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        waits.push(written.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    waits.sort();
    let pct = |p: f64| common::percentile(&waits, p);
    json!({"probes": probes, "p50Ms": pct(0.5), "maxMs": pct(1.0)})
}

/// The whole scenario: both phases, every kind at each concurrency.
pub async fn run(
    client: &reqwest::Client,
    base: &str,
    requests: usize,
    concurrencies: &[usize],
    ingest_rate: u32,
    only: &[String],
) -> Value {
    let s = Arc::new(login(client, base).await);
    let kinds: Vec<&'static str> = KINDS
        .into_iter()
        .filter(|k| only.is_empty() || only.iter().any(|o| o == k))
        .collect();
    println!(
        "| phase | kind | concurrency | requests | errors | cache hits | bounded totals | req/s | p50 ms | p95 ms | p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut reports = Vec::new();
    for &c in concurrencies {
        for &kind in &kinds {
            reports.push(measure(&s, kind, requests, c, "alone").await);
        }
    }
    let quiet = staleness(&s, 10).await;
    let mut loaded = Value::Null;
    let mut ingested = Value::Null;
    if ingest_rate > 0 {
        let stop = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(ingest(s.clone(), ingest_rate, stop.clone()));
        let started = Instant::now();
        for &c in concurrencies {
            for &kind in &kinds {
                reports.push(measure(&s, kind, requests, c, "ingesting").await);
            }
        }
        loaded = staleness(&s, 10).await;
        stop.store(true, Ordering::Relaxed);
        let (acked, failed) = writer.await.unwrap();
        ingested = json!({"rate": ingest_rate, "acknowledged": acked, "failed": failed,
                          "seconds": started.elapsed().as_secs()});
    }
    println!("staleness alone: {quiet}; while ingesting: {loaded}; ingest: {ingested}");
    json!({"results": reports, "staleness": {"alone": quiet, "ingesting": loaded}, "ingest": ingested})
}
