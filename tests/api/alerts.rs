//! The alerts of record (R11.11–11.13, R14.10, R9.15): a real node driven into each condition (slow
//! responses through the fault-injection delay, injected 500s, a cold cache, a burst of failed logins)
//! records each alert once, pushes it over WSS to admins (not to viewers) and posts it in Alertmanager's
//! format to a webhook (retrying one that failed), then resolves it when the condition ends.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{TestApp, eventually, spawn_with};

/// A webhook receiver on loopback: answers 503 to the first post, 200 to the rest, and keeps every body.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    posts: Arc<Mutex<u32>>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api/v2/alerts", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let posts = Arc::new(Mutex::new(0u32));
        let (b, p) = (bodies.clone(), posts.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let (b, p) = (b.clone(), p.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        // One request: headers, then Content-Length bytes of body.
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        while buf.len() < head_end + length {
                            let mut chunk = [0u8; 4096];
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let body: Value =
                            serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or(Value::Null);
                        buf.drain(..head_end + length);
                        let first = {
                            let mut n = p.lock().unwrap();
                            *n += 1;
                            *n == 1
                        };
                        let answer: &[u8] = if first {
                            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
                        } else {
                            b.lock().unwrap().push(body);
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
                        };
                        if conn.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { url, bodies, posts }
    }

    /// The alert names posted, with whether each post said it ended.
    fn posted(&self) -> BTreeSet<(String, bool)> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| b.as_array().cloned().unwrap_or_default())
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("").to_owned(),
                    a.get("endsAt").is_some(),
                )
            })
            .collect()
    }
}

/// Collects the `alert` frames a live connection receives.
async fn watch(app: &TestApp, token: &str) -> Arc<Mutex<Vec<Value>>> {
    let port = app.app.as_ref().unwrap().local_addr().port();
    let pem = std::fs::read(app.data_dir.join("tls/cert.pem")).unwrap();
    let mut ws = crate::procs::ws_connect(port, &pem, Some(token)).await.unwrap();
    let frames = Arc::new(Mutex::new(Vec::new()));
    let out = frames.clone();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Text(text) = msg
                && let Ok(v) = serde_json::from_str::<Value>(text.as_str())
                && v["type"] == "alert"
            {
                out.lock().unwrap().push(v["data"].clone());
            }
        }
    });
    frames
}

fn states(frames: &Mutex<Vec<Value>>) -> BTreeSet<(String, String)> {
    frames
        .lock()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["rule"].as_str().unwrap().to_owned(),
                a["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

const RULES: [&str; 4] = [
    "http_latency_p95",
    "http_error_rate",
    "cache_hit_rate",
    "security_events",
];
const NAMES: [&str; 4] = [
    "InsightsHighLatency",
    "InsightsHighErrorRate",
    "InsightsLowCacheHitRate",
    "InsightsSecurityEventBurst",
];

/// The rules of the system alerts listed in `state` (any state when empty).
async fn listed(app: &TestApp, token: &str, state: &str) -> BTreeSet<String> {
    let state = if state.is_empty() {
        String::new()
    } else {
        format!("&state={state}")
    };
    let r = app
        .get(
            &format!("/api/v1/alerts?kind=system{state}&pageSize=100"),
            Some(token),
        )
        .await;
    r.expect(200)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["rule"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn each_condition_is_recorded_pushed_posted_and_resolved_once() {
    let receiver = Receiver::start().await;
    let url = receiver.url.clone();
    let app = spawn_with(|c| {
        c.fault_injection = true;
        let a = &mut c.alerts;
        a.eval_interval = Duration::from_millis(200);
        // Long enough that every condition still holds while a loaded machine checks them all.
        a.window = Duration::from_secs(6);
        a.cache_window = Duration::from_secs(6);
        // Far above what a loaded CI machine takes for the polls of this test.
        a.latency_p95 = Duration::from_secs(2);
        a.min_requests = 3;
        a.cache_min_lookups = 5;
        a.security_events = 5;
        a.webhook_url = Some(url);
        a.webhook_backoff = Duration::from_millis(200);
    })
    .await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let token = admin.access.clone();
    let (_, viewer) = app.user_with_role(&admin, insights::domain::Role::Viewer).await;
    app.get("/api/v1/alerts?kind=system", Some(&viewer.access))
        .await
        .expect_error(403, "forbidden");
    let admin_frames = watch(&app, &token).await;
    let viewer_frames = watch(&app, &viewer.access).await;

    // Into every condition at once.
    let slow = (0..4).map(|_| {
        app.client
            .get(format!("{}/api/v1/me", app.base))
            .bearer_auth(&token)
            .header("x-insights-fault", "delay=2500")
            .send()
    });
    let failing = (0..4).map(|_| {
        app.client
            .get(format!("{}/api/v1/me", app.base))
            .bearer_auth(&token)
            .header("x-insights-fault", "error")
            .send()
    });
    let (slow, failing) = tokio::join!(
        futures_util::future::join_all(slow),
        futures_util::future::join_all(failing)
    );
    assert!(slow.iter().all(|r| r.as_ref().unwrap().status() == 200));
    assert!(failing.iter().all(|r| r.as_ref().unwrap().status() == 500));
    for days in 1..=6 {
        let from = (chrono::Utc::now() - chrono::Duration::days(days)).to_rfc3339();
        let path = format!("/api/v1/insights/dashboard?from={}", from.replace('+', "%2B"));
        app.get(&path, Some(&token)).await.expect(200);
    }
    for _ in 0..6 {
        app.post(
            "/api/v1/auth/login",
            None,
            json!({"email": org.admin_email, "password": "not the password"}),
        )
        .await;
    }

    let all: BTreeSet<String> = RULES.iter().map(|r| (*r).to_owned()).collect();
    // Each has fired (the error share may already have been diluted below 5 % by this test's own
    // polls, and resolved: firing at once is not the point).
    let fired = eventually(Duration::from_secs(15), || async {
        listed(&app, &token, "").await.is_superset(&all)
    })
    .await;
    assert!(
        fired,
        "every condition fired: {:?}",
        listed(&app, &token, "").await
    );
    let counted = eventually(Duration::from_secs(3), || async {
        app.metric("insights_alerts_firing").await >= 1.0
    })
    .await;
    assert!(counted, "insights_alerts_firing counts them");
    // Several evaluations later, still one row per condition.
    tokio::time::sleep(Duration::from_millis(600)).await;
    // (A cache is one condition each: the token cache of this test's few fresh tokens may miss too.)
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT fingerprint, count(*) FROM alerts GROUP BY fingerprint ORDER BY fingerprint")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert!(
        rows.iter().all(|(_, n)| *n == 1),
        "one row per condition: {rows:?}"
    );
    let firing = app.get("/api/v1/alerts", Some(&token)).await;
    let cache = firing.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["rule"] == "cache_hit_rate")
        .cloned()
        .unwrap();
    assert_eq!(cache["details"]["cache"], "summary", "{cache}");
    assert_eq!(cache["kind"], "system");
    assert_eq!(cache["node"], app.config.node_name.as_str());
    assert!(cache["organizationId"].is_null());

    let pushed = eventually(Duration::from_secs(5), || async {
        RULES
            .iter()
            .all(|r| states(&admin_frames).contains(&((*r).to_owned(), "firing".to_owned())))
    })
    .await;
    assert!(
        pushed,
        "the admin's dashboard got each alert: {:?}",
        states(&admin_frames)
    );
    let delivered = eventually(Duration::from_secs(10), || async {
        NAMES
            .iter()
            .all(|n| receiver.posted().contains(&((*n).to_owned(), false)))
    })
    .await;
    assert!(
        delivered,
        "each alert reached the webhook: {:?}",
        receiver.posted()
    );
    assert!(
        app.metric("insights_alert_webhook_posts_total{outcome=\"retried\"}")
            .await
            >= 1.0,
        "the post the receiver refused was retried"
    );

    // Quiet now: each condition ends with its window.
    let resolved = eventually(Duration::from_secs(20), || async {
        listed(&app, &token, "resolved").await.is_superset(&all)
    })
    .await;
    assert!(
        resolved,
        "every alert resolves: {:?}",
        listed(&app, &token, "resolved").await
    );
    let ended = eventually(Duration::from_secs(10), || async {
        RULES
            .iter()
            .all(|r| states(&admin_frames).contains(&((*r).to_owned(), "resolved".to_owned())))
            && NAMES
                .iter()
                .all(|n| receiver.posted().contains(&((*n).to_owned(), true)))
    })
    .await;
    assert!(
        ended,
        "the ends were pushed and posted: {:?} {:?}",
        states(&admin_frames),
        receiver.posted()
    );
    let body = receiver.bodies.lock().unwrap().last().cloned().unwrap();
    eprintln!("a delivered webhook body: {body}");
    let one = &body[0];
    assert_eq!(one["labels"]["service"], "insights");
    assert!(
        one["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert!(one["startsAt"].as_str().is_some());
    assert!(
        *receiver.posts.lock().unwrap() >= 9,
        "one refused post and eight delivered"
    );
    assert!(viewer_frames.lock().unwrap().is_empty(), "viewers get no alerts");
    let seen = app.get("/api/v1/alerts", Some(&viewer.access)).await;
    assert_eq!(seen.expect(200)["data"], json!([]), "nor list the system ones");
}
