//! Fan-out latency (issue 7): N dashboard clients connected over WSS to a running node (loopback only),
//! then M interactions ingested one at a time; for every client and interaction, the time from the
//! ingest's 201 to the `interaction.created` frame arriving at that client.
//!
//! ```text
//! cargo run --release --example wsfanout -- --email E --password P --clients 1000 --events 50
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

struct Args {
    port: u16,
    cacert: String,
    email: String,
    password: String,
    clients: usize,
    events: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        port: 8443,
        cacert: "data/tls/cert.pem".into(),
        email: String::new(),
        password: String::new(),
        clients: 1000,
        events: 50,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--port" => args.port = value.parse().expect("--port N"),
            "--cacert" => args.cacert = value,
            "--email" => args.email = value,
            "--password" => args.password = value,
            "--clients" => args.clients = value.parse().expect("--clients N"),
            "--events" => args.events = value.parse().expect("--events N"),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

/// Arrival times of each interaction's frame, by interaction id, across all clients.
type Arrivals = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

#[tokio::main]
async fn main() {
    let args = parse_args();
    let pem = std::fs::read(&args.cacert).expect("--cacert file");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let base = format!("https://localhost:{}", args.port);
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap();
    let login: Value = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": args.email, "password": args.password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["accessToken"].as_str().expect("login failed").to_owned();
    let customer: Value = http
        .post(format!("{base}/api/v1/customers"))
        .bearer_auth(&token)
        .json(&json!({"externalId": format!("fanout-{}", uuid::Uuid::new_v4().simple())}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let customer = customer["id"].as_str().unwrap().to_owned();

    let arrivals: Arrivals = Arc::default();
    let connected = Arc::new(tokio::sync::Semaphore::new(0));
    let started = Instant::now();
    for _ in 0..args.clients {
        let (tls, token, arrivals, connected, port) = (
            tls.clone(),
            token.clone(),
            arrivals.clone(),
            connected.clone(),
            args.port,
        );
        tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            let mut request = format!("wss://localhost:{port}/api/v1/ws")
                .into_client_request()
                .unwrap();
            request.headers_mut().insert(
                "sec-websocket-protocol",
                format!("bearer, {token}").parse().unwrap(),
            );
            let (mut socket, _) = tokio_tungstenite::client_async(request, stream).await.unwrap();
            connected.add_permits(1);
            while let Some(Ok(msg)) = socket.next().await {
                let Message::Text(text) = msg else { continue };
                let at = Instant::now();
                let frame: Value = serde_json::from_str(&text).unwrap();
                let list = if frame["type"] == "batch" {
                    frame["events"].as_array().cloned().unwrap_or_default()
                } else {
                    vec![frame]
                };
                let mut map = arrivals.lock().unwrap();
                for event in list {
                    if event["type"] == "interaction.created"
                        && let Some(id) = event["data"]["id"].as_str()
                    {
                        map.entry(id.to_owned()).or_default().push(at);
                    }
                }
            }
        });
    }
    let all = connected.acquire_many(args.clients as u32).await.unwrap();
    all.forget();
    let connect_secs = started.elapsed().as_secs_f64();
    eprintln!("{} clients connected in {connect_secs:.1} s", args.clients);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut acks = Vec::new();
    for i in 0..args.events {
        let body = json!({"customerId": customer, "channel": "chat", "eventType": "message",
            "content": format!("fan-out probe {i}"), "timestamp": chrono::Utc::now().to_rfc3339()});
        let r: Value = http
            .post(format!("{base}/api/v1/interactions"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        acks.push((r["id"].as_str().unwrap().to_owned(), Instant::now()));
        // Spaced, so each event's fan-out is measured on its own.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let map = arrivals.lock().unwrap();
    let mut latencies: Vec<f64> = Vec::new();
    let mut missing = 0usize;
    for (id, acked) in &acks {
        let got = map.get(id).map(Vec::as_slice).unwrap_or_default();
        missing += args.clients.saturating_sub(got.len());
        // A frame can beat the HTTP response to the client: count it as 0.
        latencies.extend(
            got.iter()
                .map(|t| t.saturating_duration_since(*acked).as_secs_f64() * 1000.0),
        );
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |v| (v * 10.0).round() / 10.0)
    };
    let report = json!({"clients": args.clients, "events": args.events, "deliveries": latencies.len(),
        "missing": missing, "connectSecs": (connect_secs * 10.0).round() / 10.0,
        "p50Ms": pct(0.5), "p95Ms": pct(0.95), "p99Ms": pct(0.99), "maxMs": pct(1.0)});
    println!("| clients | events | deliveries | missing | p50 ms | p95 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {missing} | {} | {} | {} | {} |",
        args.clients,
        args.events,
        latencies.len(),
        report["p50Ms"],
        report["p95Ms"],
        report["p99Ms"],
        report["maxMs"]
    );
    println!("{report}");
}
