//! The log an operator reads (R11.1–11.5), from a node run as a process with JSON logs: one line per
//! request; a 500 with its request id, its error chain and the backtrace of where it arose; statements
//! slower than the threshold with their duration (sqlx); predictions slower than the threshold with their
//! time.

use serde_json::{Value, json};

use crate::helpers::spawn_app;
use crate::procs::{Spec, serve};

/// The JSON lines of a node's log whose message is `message`.
fn events(log: &str, message: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == message)
        .collect()
}

#[tokio::test]
async fn errors_slow_statements_and_slow_predictions_are_logged_with_what_explains_them() {
    let harness = spawn_app().await;
    let secret = harness.config.jwt_secret.as_ref().unwrap().expose().to_owned();
    let name = format!("logs-{}", uuid::Uuid::new_v4().simple());
    let env = [
        (
            "RUST_LOG",
            "info,sqlx=warn,ort=warn,insights::actors::customer=debug".to_owned(),
        ),
        ("INSIGHTS_LOG_FORMAT", "json".to_owned()),
        ("INSIGHTS_FAULT_INJECTION", "true".to_owned()),
        // Every statement and every prediction counts as slow, so each kind shows up in the log.
        ("INSIGHTS_DB_SLOW_STATEMENT_MS", "0".to_owned()),
        ("INSIGHTS_ML_SLOW_MS", "0".to_owned()),
    ];
    let spec = Spec {
        db_url: &harness.db_url,
        secret: &secret,
        prefix: &harness.config.redis_prefix,
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .chain(crate::procs::model_env())
            .collect(),
    };
    let node = serve(&name, &spec).await;
    let org = harness.create_org().await;
    let token = node.login(&org).await;

    let failed = node
        .client
        .get(format!("{}/api/v1/me", node.base))
        .bearer_auth(&token)
        .header("x-request-id", "logs-test-500")
        .header("x-insights-fault", "error")
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 500);
    let body: Value = failed.json().await.unwrap();
    assert_eq!(body["error"]["requestId"], "logs-test-500", "{body}");
    assert!(
        !body.to_string().contains("fault injected"),
        "the cause stays in the log: {body}"
    );
    node.post(
        "/api/v1/ml/sentiment",
        Some(&token),
        json!({"text": "this is slow to score"}),
    )
    .await
    .expect(200);
    // An ingest: the customer's actor logs the row it stored, naming the request it came from.
    let customer = node.customer(&token, "logs-1").await;
    let stored = node
        .client
        .post(format!("{}/api/v1/interactions", node.base))
        .bearer_auth(&token)
        .header("x-request-id", "logs-test-hop")
        .json(&crate::helpers::interaction(
            &customer,
            "chat",
            Some("through the actors"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 201);
    let stored: Value = stored.json().await.unwrap();

    let log = std::fs::read_to_string(&node.log).unwrap();
    let internal = events(&log, "internal error");
    assert_eq!(internal.len(), 1, "one 500, logged once: {internal:?}");
    let fields = &internal[0]["fields"];
    assert_eq!(fields["request_id"], "logs-test-500");
    assert!(
        fields["error"]
            .as_str()
            .unwrap()
            .contains("fault injected by the x-insights-fault header")
    );
    let backtrace = fields["backtrace"].as_str().unwrap();
    assert!(
        backtrace.contains("insights::http::server") && backtrace.lines().count() > 5,
        "the backtrace shows where the error arose: {backtrace}"
    );
    let requests: Vec<Value> = events(&log, "request")
        .into_iter()
        .filter(|v| v["fields"]["status"] == 500)
        .collect();
    assert_eq!(requests.len(), 1, "the 500 has its request line, at error level");
    assert_eq!(requests[0]["level"], "ERROR");

    let slow_statements: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("slow statement"))
        })
        .collect();
    assert!(
        !slow_statements.is_empty(),
        "statements over the threshold are logged"
    );
    let statement = slow_statements[0].to_string();
    assert!(
        statement.contains("elapsed") && statement.contains("db.statement"),
        "with their duration and text: {statement}"
    );
    let hop: Vec<Value> = events(&log, "interaction stored")
        .into_iter()
        .filter(|v| v["fields"]["interaction"] == stored["id"])
        .collect();
    assert_eq!(hop.len(), 1, "the customer actor logged the row once");
    assert_eq!(
        hop[0]["span"]["request_id"], "logs-test-hop",
        "an actor's log event names the request it works for: {}",
        hop[0]
    );
    let slow_predictions = events(&log, "sentiment prediction slow");
    assert!(
        !slow_predictions.is_empty(),
        "predictions over the threshold are warned"
    );
    assert!(slow_predictions[0]["fields"]["elapsed_ms"].is_u64());
    assert_eq!(slow_predictions[0]["level"], "WARN");
}
