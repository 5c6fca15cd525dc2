//! `/metrics` as an operator scrapes it (R11.6–11.10): values, not names. Requests by route template
//! (an invented path is `other`, never a series of its own), each pool's connections and acquire time,
//! WebSocket connections and messages, ML batch sizes, and a scrape of a busy node that Prometheus' own
//! `promtool check metrics` finds nothing wrong with.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{eventually, interaction, spawn_with};

/// The series of `name` whose labels contain every one of `labels`, summed.
fn sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|want| rest.contains(want)))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[tokio::test]
async fn a_busy_nodes_metrics_hold_the_values_and_pass_promtool() {
    let app = spawn_with(crate::helpers::with_model).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let token = Some(admin.access.as_str());
    let customer = app.customer(&admin.access, "m-1", None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Routes: ids collapse into the template; invented paths all land in `other`.
    for n in 0..3 {
        app.get(&format!("/api/v1/nope-{n}-{}", uuid::Uuid::new_v4()), token)
            .await
            .expect(404);
    }
    app.get(&format!("/api/v1/customers/{customer}"), token)
        .await
        .expect(200);

    // A dashboard connection that sends one frame and receives the ready frame and an event.
    let port = app.app.as_ref().unwrap().local_addr().port();
    let pem = std::fs::read(app.data_dir.join("tls/cert.pem")).unwrap();
    let mut ws = crate::procs::ws_connect(port, &pem, Some(&admin.access))
        .await
        .unwrap();
    ws.send(Message::text(json!({"type": "resume", "lastSeq": 0}).to_string()))
        .await
        .unwrap();
    app.post(
        "/api/v1/interactions",
        token,
        interaction(&customer, "chat", Some("great service")),
    )
    .await
    .expect(201);
    let mut frames = 0;
    while frames < 2 {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => frames += 1,
            Ok(Some(Ok(_))) => {}
            other => panic!("the live connection ended: {other:?}"),
        }
    }
    // The model scores a batch of three.
    app.post(
        "/api/v1/ml/sentiment/batch",
        token,
        json!({"texts": ["good", "bad", "fine"]}),
    )
    .await
    .expect(200);
    // The pool probe runs every second.
    tokio::time::sleep(Duration::from_millis(2_200)).await;

    let text = app.metrics_text().await;
    assert_eq!(
        sum(
            &text,
            "insights_http_requests_total",
            &["route=\"other\"", "status=\"404\""]
        ),
        3.0,
        "{text}"
    );
    assert!(!text.contains("nope-"), "no series names an invented path");
    assert_eq!(
        sum(
            &text,
            "insights_http_requests_total",
            &[
                "method=\"GET\"",
                "route=\"/api/v1/customers/{id}\"",
                "status=\"200\""
            ]
        ),
        1.0
    );
    assert!(!text.contains(&customer), "no series names an id");

    let max = |pool: &str| {
        sum(
            &text,
            "insights_db_pool_max_connections",
            &[&format!("pool=\"{pool}\"")],
        )
    };
    assert_eq!(max("main"), f64::from(app.config.db.max_connections));
    assert_eq!(max("batch"), f64::from(app.config.ingest.batch_pool_connections));
    let open = sum(&text, "insights_db_pool_connections", &["pool=\"main\""]);
    assert!(open >= 1.0 && open <= max("main"), "{open} connections open");
    assert!(
        sum(
            &text,
            "insights_db_pool_acquire_seconds_count",
            &["pool=\"main\""]
        ) >= 2.0,
        "the acquire probe ran at least twice"
    );

    assert_eq!(sum(&text, "insights_ws_connections", &[]), 1.0);
    assert_eq!(
        sum(&text, "insights_ws_messages_total", &["direction=\"in\""]),
        1.0
    );
    assert!(sum(&text, "insights_ws_messages_total", &["direction=\"out\""]) >= 2.0);

    assert!(sum(&text, "insights_ml_batch_size_count", &[]) >= 1.0);
    assert!(sum(&text, "insights_ml_batch_size_sum", &[]) >= 3.0);

    // promtool (Debian's `prometheus` package, installed by scripts/test.sh) lints the scrape.
    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs: apt-get install prometheus (scripts/test.sh does)");
    let mut promtool = promtool;
    use std::io::Write as _;
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}"
    );

    drop(ws);
    let closed = eventually(Duration::from_secs(5), || async {
        sum(&app.metrics_text().await, "insights_ws_connections", &[]) == 0.0
    })
    .await;
    assert!(closed, "a closed connection is no longer counted");
}
