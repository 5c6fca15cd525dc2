//! The dashboard in a real browser: Debian's Chromium driven by playwright-core (`tests/browser/`) logs
//! in, sees the charts, sees an interaction ingested through the API appear live, and reconnects and
//! catches up after this test kills and restarts the server on the same port, and shows hostile markup
//! (script, event handlers, `javascript:`, bidi overrides) as inert text. `.ci/run` installs
//! Chromium and the npm package; set `INSIGHTS_SKIP_BROWSER_TESTS=1` to skip on a machine without them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

/// A steady week of scored email and chat before the current hour, as if the model had scored it: 20 an
/// hour in each, positive, one in ten negative; the rollups are folded at once.
async fn seed_baseline(pool: &sqlx::PgPool, org: uuid::Uuid, customer: &str) {
    let end = chrono::DurationRound::duration_trunc(
        chrono::Utc::now() - chrono::Duration::hours(1),
        chrono::Duration::hours(1),
    )
    .unwrap();
    let start = end - chrono::Duration::days(8);
    let n = 8 * 24 * 20;
    for channel in ["email", "chat"] {
        sqlx::query(
            "INSERT INTO customer_interactions (organization_id, customer_id, channel, event_type, content,
                 occurred_at, metadata, enrichment, segment, sentiment_positive, sentiment_negative,
                 sentiment_neutral, sentiment_score, sentiment_label, sentiment_confidence, model_version,
                 processed_at)
             SELECT $1, $2::uuid, $3::interaction_channel, 'message', 'baseline ' || i,
                 $4::timestamptz + make_interval(secs => extract(epoch FROM ($5::timestamptz - $4::timestamptz)) * (i + 0.5) / $6),
                 '{}'::jsonb, '{}'::jsonb, 'smb',
                 CASE WHEN i % 10 = 0 THEN 0.05 ELSE 0.8 END, CASE WHEN i % 10 = 0 THEN 0.85 ELSE 0.05 END,
                 CASE WHEN i % 10 = 0 THEN 0.1 ELSE 0.15 END, CASE WHEN i % 10 = 0 THEN -0.8 ELSE 0.75 END,
                 (CASE WHEN i % 10 = 0 THEN 'negative' ELSE 'positive' END)::sentiment_label, 0.9, 'test', now()
             FROM generate_series(0, $6 - 1) AS i",
        )
        .bind(org)
        .bind(customer)
        .bind(channel)
        .bind(start)
        .bind(end)
        .bind(n)
        .execute(pool)
        .await
        .unwrap();
    }
    insights::store::rollups::fold_all(pool, 100_000).await.unwrap();
}

#[tokio::test]
async fn the_dashboard_renders_follows_live_events_and_survives_a_restart() {
    if std::env::var_os("INSIGHTS_SKIP_BROWSER_TESTS").is_some() {
        eprintln!("INSIGHTS_SKIP_BROWSER_TESTS is set: the browser test is skipped");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (path, fix) in [
        ("/usr/bin/chromium", "apt-get install chromium"),
        (
            "tests/browser/node_modules/playwright-core",
            "cd tests/browser && npm ci",
        ),
    ] {
        assert!(
            root.join(path).exists(),
            "{path} is missing: run `{fix}` (as .ci/run does), or set INSIGHTS_SKIP_BROWSER_TESTS=1"
        );
    }
    // With the model, so the page also shows scores arriving live (`sentiment.scored`).
    let mut app = helpers::spawn_with(|c| {
        c.ml.enabled = true;
        c.ml.workers = 1;
        c.model_dir = root.join("models");
        // Small, so the page shows a bounded total ("2+") for the customer's four interactions.
        c.query.count_bound = 2;
        // A whitelist of another origin, as production sets one: the page served by the node itself
        // must still load (its own origin is always allowed, R9.8).
        c.cors_origins = vec!["https://dashboard.example.com".to_owned()];
        // Insight alerts are looked for every half second, so the panel shows one soon after a burst.
        c.ingest.insight_eval_interval = Duration::from_millis(500);
    })
    .await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let customer = app.customer(&admin.access, "browser-1", Some("smb")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Something to chart.
    for (channel, text) in [("chat", "great help, thanks"), ("email", "the invoice is wrong")] {
        app.post(
            "/api/v1/interactions",
            Some(&admin.access),
            helpers::interaction(&customer, channel, Some(text)),
        )
        .await
        .expect(201);
    }
    let port = app.app.as_ref().unwrap().local_addr().port();
    std::fs::create_dir_all(root.join("artifacts")).unwrap();
    let screenshot = root.join("artifacts/dashboard.png");
    let mut node = tokio::process::Command::new("node")
        .arg(root.join("tests/browser/dashboard.mjs"))
        .env("BASE_URL", format!("https://localhost:{port}"))
        .env("EMAIL", &org.admin_email)
        .env("PASSWORD", &org.admin_password)
        .env("CUSTOMER_ID", &customer)
        .env("SCREENSHOT", &screenshot)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (apt-get install nodejs)");
    let mut stdin = node.stdin.take().unwrap();
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let outcome = tokio::time::timeout(Duration::from_secs(240), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            match line.trim() {
                "RESTART" => {
                    app.app.take().unwrap().shutdown().await.unwrap();
                    let mut config = app.config.clone();
                    config.listen = format!("127.0.0.1:{port}").parse().unwrap();
                    let restarted = insights::App::build(config)
                        .await
                        .expect("the node restarts on its port");
                    app.app = Some(restarted);
                    stdin.write_all(b"GO\n").await.unwrap();
                    stdin.flush().await.unwrap();
                }
                "SEED" => {
                    seed_baseline(&app.pool, org.id.as_uuid(), &customer).await;
                    stdin.write_all(b"GO\n").await.unwrap();
                    stdin.flush().await.unwrap();
                }
                "OK" => return Ok(()),
                other if other.starts_with("FAIL") => return Err(other.to_owned()),
                other => eprintln!("{other}"),
            }
        }
        Err("the browser test ended without a verdict".to_owned())
    })
    .await;
    let status = node.wait().await.unwrap();
    match outcome {
        Ok(Ok(())) => assert!(status.success()),
        Ok(Err(reason)) => panic!("{reason} (screenshot: {})", screenshot.display()),
        Err(_) => panic!("the browser test took more than 4 minutes"),
    }
    assert!(screenshot.exists(), "the screenshot is saved");
}
