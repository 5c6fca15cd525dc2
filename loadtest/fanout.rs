//! The `fanout` scenario: N dashboard clients over WSS, then interactions ingested one at a time; for
//! every client and interaction, the time from the ingest's 201 to its `interaction.created` frame.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// Arrival times of each interaction's frame, by interaction id, across all clients.
type Arrivals = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

#[allow(clippy::too_many_arguments)]
pub async fn run(
    pem: &[u8],
    port: u16,
    http: &reqwest::Client,
    base: &str,
    token: &str,
    customer: &str,
    clients: usize,
    events: usize,
) -> Value {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let arrivals: Arrivals = Arc::default();
    let connected = Arc::new(tokio::sync::Semaphore::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (tls, token, arrivals, connected) =
            (tls.clone(), token.to_owned(), arrivals.clone(), connected.clone());
        tasks.push(tokio::spawn(async move {
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
        }));
    }
    connected.acquire_many(clients as u32).await.unwrap().forget();
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut acks = Vec::new();
    for i in 0..events {
        let body = json!({"customerId": customer, "channel": "chat", "eventType": "message",
            "content": format!("fan-out probe {i}"), "timestamp": chrono::Utc::now().to_rfc3339()});
        let r: Value = http
            .post(format!("{base}/api/v1/interactions"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        acks.push((r["id"].as_str().unwrap_or_default().to_owned(), Instant::now()));
        // Spaced, so each event's fan-out is measured on its own.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for t in tasks {
        t.abort();
    }
    let map = arrivals.lock().unwrap();
    let mut latencies: Vec<f64> = Vec::new();
    let mut missing = 0usize;
    for (id, acked) in &acks {
        let got = map.get(id).map(Vec::as_slice).unwrap_or_default();
        missing += clients.saturating_sub(got.len());
        // A frame can beat the HTTP response to the client: that counts as 0.
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
    let p95 = pct(0.95);
    json!({"scenario": "fanout", "mode": "closed", "requests": latencies.len() + missing, "errors": missing,
        "concurrency": clients, "rate": null, "seconds": (connect_secs * 10.0).round() / 10.0,
        "requestsPerSec": events, "itemsPerSec": clients,
        "p50Ms": pct(0.5), "p95Ms": p95, "p99Ms": pct(0.99), "maxMs": pct(1.0),
        "targetP95Ms": 1000.0, "meetsTarget": p95 < 1000.0 && missing == 0,
        "note": "requests = frames expected (clients × events); latency from the ingest's 201 to the frame"})
}
