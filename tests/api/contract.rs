//! The OpenAPI document against the served API: schemathesis (PyPI, installed by scripts/test.sh) fuzzes
//! every operation with every check, once as an analyst and once as an admin, and must find nothing:
//! no 5xx, no undocumented status, header or content type, no response that breaks its schema, no valid
//! request refused and no invalid one accepted.
//!
//! The rules JSON Schema cannot state (`from` before `to`, a timestamp not in the future, a password's
//! limit in bytes, ...) are fed to schemathesis by `tests/contract/hooks.py`. The seed is fixed, so a
//! run repeats; a failure prints schemathesis's report, with a `curl` line per failure.
//!
//! Below the fuzzing test, the server bugs it found are pinned by ordinary tests.

use std::path::{Path, PathBuf};
use std::time::Instant;

use insights::domain::Role;
use serde_json::json;

use crate::helpers::{Session, TestApp, spawn_with};

/// The version scripts/test.sh installs; another one generates other cases from the same seed.
const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// Cases per operation and phase: about a minute per pass on two cores. `CONTRACT_MAX_EXAMPLES` and
/// `CONTRACT_SEED` explore further than CI's budget allows.
const MAX_EXAMPLES: &str = "30";

const SEED: &str = "20261202";

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A node with the model loaded (the ML operations answer 200, not 503) and a body limit as large as
/// the batch one, so that every body the schema allows is read: a body over the limit is refused before
/// it is read, and Python's HTTP client, still sending, sees the connection close instead of the 413.
async fn contract_node() -> TestApp {
    spawn_with(|c| {
        c.ml.enabled = true;
        c.ml.required = true;
        c.ml.workers = 1;
        c.model_dir = repo_path("models");
        c.http.body_limit_bytes = c.http.batch_body_limit_bytes;
    })
    .await
}

/// One schemathesis run as `who`; returns whether it found nothing, and its report.
async fn schemathesis(app: &TestApp, who: &str, session: &Session, env: &[(&str, String)]) -> (bool, String) {
    let schema = format!("{}/api/v1/openapi.json", app.base);
    let auth = format!("Authorization: Bearer {}", session.access);
    let (seed, max_examples) = (
        setting("CONTRACT_SEED", SEED),
        setting("CONTRACT_MAX_EXAMPLES", MAX_EXAMPLES),
    );
    let args = [
        "-m",
        "schemathesis.cli",
        "run",
        &schema,
        "--checks",
        "all",
        "--header",
        &auth,
        // The node's own self-signed certificate, on loopback.
        "--tls-verify",
        "false",
        "--seed",
        &seed,
        "--max-examples",
        &max_examples,
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--generation-database",
        "none",
        // Both end the caller's session, which the rest of the run needs.
        "--exclude-path",
        "/api/v1/auth/logout",
        "--exclude-path",
        "/api/v1/auth/password",
        "--no-color",
    ];
    let started = Instant::now();
    let output = tokio::process::Command::new("python3")
        .args(args)
        .env("SCHEMATHESIS_HOOKS", repo_path("tests/contract/hooks.py"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        // Whatever schemathesis or Hypothesis writes stays out of the clone and goes with the node.
        .current_dir(&app.data_dir)
        .kill_on_drop(true)
        .output()
        .await
        .expect("python3 runs");
    let report = format!(
        "schemathesis as {who} ({:.0} s, exit {:?}):\n{}\n{}",
        started.elapsed().as_secs_f64(),
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), report)
}

fn installed_schemathesis() -> Option<String> {
    let output = std::process::Command::new("python3")
        .args(["-c", "import schemathesis; print(schemathesis.__version__)"])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[tokio::test]
async fn schemathesis_finds_nothing_as_an_analyst_or_as_an_admin() {
    match installed_schemathesis() {
        Some(version) if version == SCHEMATHESIS_VERSION => {}
        Some(other) => panic!(
            "schemathesis {other} is installed, this test expects {SCHEMATHESIS_VERSION} (the same seed \
             generates other cases in another version): python3 -m pip install schemathesis=={SCHEMATHESIS_VERSION}"
        ),
        None => panic!(
            "schemathesis is not installed: run the tests with scripts/test.sh, which installs it \
             (python3 -m pip install schemathesis=={SCHEMATHESIS_VERSION})"
        ),
    }
    let app = contract_node().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let (_, analyst) = app.user_with_role(&admin, Role::Analyst).await;
    let customer = app.customer(&admin.access, "contract", None).await;
    let env = [
        (
            "CONTRACT_CUSTOMER_ID",
            customer["id"].as_str().unwrap().to_owned(),
        ),
        (
            "CONTRACT_OWN_USER_ID",
            admin.body["user"]["id"].as_str().unwrap().to_owned(),
        ),
    ];
    let (analyst_ok, analyst_report) = schemathesis(&app, "analyst", &analyst, &env).await;
    let (admin_ok, admin_report) = schemathesis(&app, "admin", &admin, &env).await;
    // Passing runs say only how long they took.
    for (ok, report) in [(analyst_ok, &analyst_report), (admin_ok, &admin_report)] {
        if ok {
            println!("{}", report.lines().next().unwrap_or_default());
        }
    }
    assert!(
        analyst_ok && admin_ok,
        "schemathesis found failures\n\n{}\n\n{}",
        if analyst_ok {
            "analyst: none"
        } else {
            &analyst_report
        },
        if admin_ok { "admin: none" } else { &admin_report },
    );
}

/// U+0000 cannot be stored or compared by PostgreSQL, and the other control characters (but tab and
/// line breaks in free text) have no place in text: each is refused with a 400 naming the field, never
/// a 500, and nothing is stored (R9.12).
#[tokio::test]
async fn control_characters_are_refused_with_the_field_named() {
    let app = spawn_with(|_| {}).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let token = Some(admin.access.as_str());
    let customer = app.customer(&admin.access, "c", None).await;
    let id = customer["id"].as_str().unwrap();
    for (query, field) in [
        ("/api/v1/interactions?segments=a%00b", "segments"),
        ("/api/v1/interactions?q=a%00b", "q"),
        ("/api/v1/interactions?q=a%07b", "q"),
        ("/api/v1/interactions?q=%1b%5b2J", "q"),
        ("/api/v1/insights/dashboard?segments=%00", "segments"),
        ("/api/v1/customers?segment=%00", "segment"),
        ("/api/v1/customers?segment=a%7fb", "segment"),
        ("/api/v1/customers?q=x%00", "q"),
        ("/api/v1/customers?q=x%c2%85y", "q"),
    ] {
        let r = app.get(query, token).await;
        let details = &r.expect_error(400, "validation_failed")["error"]["details"];
        assert_eq!(details[0]["field"], field, "{query}: {details}");
    }
    let at = chrono::Utc::now().to_rfc3339();
    for (field, value, message) in [
        ("eventType", json!("a\u{0}b"), "control characters"),
        ("eventType", json!("a\tb"), "control characters"),
        ("content", json!("a\u{0}b"), "U+0000"),
        ("content", json!("bell\u{7}"), "U+0007"),
        ("content", json!("\u{1b}[2Jcleared"), "U+001B"),
        ("content", json!("next\u{85}line"), "U+0085"),
        ("idempotencyKey", json!("k\u{0}"), "control characters"),
        ("idempotencyKey", json!("k\u{8}"), "control characters"),
        ("metadata", json!({"a": ["\u{0}"]}), "U+0000"),
        ("metadata", json!({"a\u{1f}": 1}), "U+001F"),
        ("metadata", json!({"a": {"b": "\u{7f}"}}), "U+007F"),
    ] {
        let mut body = json!({"customerId": id, "channel": "web", "eventType": "view", "timestamp": at});
        body[field] = value.clone();
        let r = app.post("/api/v1/interactions", token, body).await;
        let details = &r.expect_error(400, "validation_failed")["error"]["details"];
        assert_eq!(details[0]["field"], field, "{value}: {details}");
        let said = details[0]["message"].as_str().unwrap();
        assert!(said.contains(message), "{value}: {said}");
    }
    assert_eq!(app.stored_interactions().await, 0, "nothing refused was stored");
    // Tab and line breaks are text: stored and returned exactly as sent.
    let multi_line = "line one\r\nline two\tand a tab";
    let body = json!({"customerId": id, "channel": "web", "eventType": "view", "timestamp": at,
        "content": multi_line, "metadata": {"note": "a\nb"}});
    let stored = app.post("/api/v1/interactions", token, body).await;
    assert_eq!(stored.expect(201)["content"], multi_line);
    assert_eq!(stored.body["metadata"]["note"], "a\nb");

    for (body, field) in [
        (
            json!({"externalId": "d", "attributes": {"k\u{0}": 1}}),
            "attributes",
        ),
        (
            json!({"externalId": "d", "attributes": {"k": "\u{1b}]0;title\u{7}"}}),
            "attributes",
        ),
        (json!({"externalId": "d", "name": "Ann\u{7}"}), "name"),
        (json!({"externalId": "d\u{1}"}), "externalId"),
        (json!({"externalId": "d", "segment": "vip\u{0}"}), "segment"),
    ] {
        let r = app.post("/api/v1/customers", token, body.clone()).await;
        let details = &r.expect_error(400, "validation_failed")["error"]["details"];
        assert_eq!(details[0]["field"], field, "{body}: {details}");
    }
    let r = app
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/customers/{id}"),
            token,
            Some(json!({"name": "x\u{1b}"})),
        )
        .await;
    assert_eq!(
        r.expect_error(400, "validation_failed")["error"]["details"][0]["field"],
        "name"
    );
    for (body, field) in [
        (
            json!({"email": "n@example.com", "name": "Bob\u{0}", "password": "long enough", "role": "viewer"}),
            "name",
        ),
        (
            json!({"email": "n@example.com", "name": "Bob", "password": "long\u{7}enough", "role": "viewer"}),
            "password",
        ),
        (
            json!({"email": "n\u{1}@example.com", "name": "Bob", "password": "long enough", "role": "viewer"}),
            "email",
        ),
    ] {
        let r = app.post("/api/v1/users", token, body.clone()).await;
        let details = &r.expect_error(400, "validation_failed")["error"]["details"];
        assert_eq!(details[0]["field"], field, "{body}: {details}");
    }
    let r = app
        .post("/api/v1/api-keys", token, json!({"name": "key\u{9b}"}))
        .await;
    assert_eq!(
        r.expect_error(400, "validation_failed")["error"]["details"][0]["field"],
        "name"
    );
}

/// A score bound just outside [-1, 1] is refused: read as f32 it rounded into the range.
#[tokio::test]
async fn sentiment_bounds_just_outside_the_range_are_refused() {
    let app = spawn_with(|_| {}).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let token = Some(admin.access.as_str());
    for bound in [
        "sentimentMin=-1.0000000000000002",
        "sentimentMax=1.0000000000000002",
    ] {
        app.get(&format!("/api/v1/interactions?{bound}"), token)
            .await
            .expect_error(400, "validation_failed");
    }
    app.get("/api/v1/interactions?sentimentMin=-1&sentimentMax=1", token)
        .await
        .expect(200);
}
