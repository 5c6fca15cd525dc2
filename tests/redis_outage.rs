//! Redis is a cache, so its outage costs nothing (R13.8, ARCHITECTURE "Storage"): a node whose Redis
//! stops keeps its normal latency, limits and data, says `degraded` in `/readyz`, and goes back to Redis
//! by itself when it returns, replaying what it wrote meanwhile. A real `redis-server` of the test's own
//! is stopped and started again. A test binary of its own, so the latencies it measures are not those
//! of fifty other tests running beside it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use helpers::{TestApp, eventually, free_port, interaction, spawn_with};
use reqwest::Method;

/// A redis-server of this test's own, on a free port, keeping nothing on disk.
struct OwnRedis {
    port: u16,
    child: Child,
}

impl OwnRedis {
    fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (it is installed with Redis on the project's machines)");
        Self { port, child }
    }

    async fn wait_up(&self) {
        let url = format!("redis://127.0.0.1:{}", self.port);
        let up = eventually(Duration::from_secs(10), || {
            let url = url.clone();
            async move {
                let Ok(client) = redis::Client::open(url) else {
                    return false;
                };
                match client.get_multiplexed_async_connection().await {
                    Ok(mut c) => redis::cmd("PING").query_async::<String>(&mut c).await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await;
        assert!(up, "redis-server on port {} answers", self.port);
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// p50 and p95 of `n` sequential reads of `path`, in milliseconds; every read must answer 200.
async fn latencies(app: &TestApp, path: &str, token: &str, n: usize) -> (f64, f64) {
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let r = app.get(path, Some(token)).await;
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
        r.expect(200);
    }
    ms.sort_by(f64::total_cmp);
    (ms[n / 2], ms[(n * 95).div_ceil(100) - 1])
}

#[tokio::test]
async fn a_redis_outage_costs_no_latency_no_limits_and_no_data() {
    let mut redis = OwnRedis::start(free_port());
    redis.wait_up().await;
    let port = redis.port;
    let app = spawn_with(|c| {
        c.redis_url = Some(format!("redis://127.0.0.1:{port}"));
        c.redis.probe_interval = Duration::from_millis(200);
        c.rate_limit.user_per_window = 10_000;
    })
    .await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let customer = app.customer(&admin.access, "c-1", Some("smb")).await;
    let customer = customer["id"].as_str().unwrap().to_owned();
    for _ in 0..5 {
        app.post(
            "/api/v1/interactions",
            Some(&admin.access),
            interaction(&customer, "web", None),
        )
        .await
        .expect(201);
    }
    let list = "/api/v1/interactions?pageSize=10";
    let (up_p50, up_p95) = latencies(&app, list, &admin.access, 40).await;
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.body["status"], "ready", "{}", ready.body);

    redis.stop();
    // The first call after the stop opens the breaker; from then on nothing waits for Redis.
    let tripped = eventually(Duration::from_secs(5), || async {
        app.get("/api/v1/me", Some(&admin.access)).await.expect(200);
        app.metric("insights_redis_breaker_open").await == 1.0
    })
    .await;
    assert!(tripped, "the breaker opened");
    let errors_before = app.metric("insights_redis_breaker_trips_total").await;
    let (down_p50, down_p95) = latencies(&app, list, &admin.access, 100).await;
    let (me_p50, me_p95) = latencies(&app, "/api/v1/me", &admin.access, 100).await;
    eprintln!(
        "interactions list p50/p95 ms: redis up {up_p50:.1}/{up_p95:.1}, down {down_p50:.1}/{down_p95:.1}; /me down {me_p50:.1}/{me_p95:.1}"
    );
    assert!(
        down_p95 < 100.0 && me_p95 < 100.0,
        "normal latency without Redis: {down_p95:.1} ms, {me_p95:.1} ms"
    );
    assert_eq!(
        app.metric("insights_redis_breaker_trips_total").await,
        errors_before,
        "one trip, no request waited on Redis again"
    );
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.body["status"], "degraded", "{}", ready.body);
    assert_eq!(ready.body["checks"]["redis"]["status"], "down");

    // Writes go on and are all kept.
    for _ in 0..10 {
        app.post(
            "/api/v1/interactions",
            Some(&admin.access),
            interaction(&customer, "chat", Some("fine")),
        )
        .await
        .expect(201);
    }
    assert_eq!(app.stored_interactions().await, 15, "nothing lost");
    let listed = app
        .get("/api/v1/interactions?pageSize=100", Some(&admin.access))
        .await;
    assert_eq!(
        listed.expect(200)["pagination"]["total"],
        15,
        "reads see the writes made during the outage"
    );

    // Limits hold, per node, while Redis is away.
    let strict = helpers::spawn_with(|c| {
        c.redis_url = Some(format!("redis://127.0.0.1:{port}"));
        c.redis.probe_interval = Duration::from_millis(200);
        c.rate_limit.ip_per_window = 3;
    })
    .await;
    let statuses: Vec<u16> =
        futures_util::future::join_all((0..5).map(|_| strict.get("/api/v1/openapi.json", None)))
            .await
            .iter()
            .map(|r| r.status.as_u16())
            .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 2, "{statuses:?}");

    // A logout during the outage ends the token at once, and reaches Redis when it is back.
    let second = app.admin(&org).await;
    app.call(Method::POST, "/api/v1/auth/logout", Some(&second.access), None)
        .await
        .expect(204);
    app.get("/api/v1/me", Some(&second.access))
        .await
        .expect_error(401, "unauthenticated");

    let redis_again = OwnRedis::start(port);
    redis_again.wait_up().await;
    let back = eventually(Duration::from_secs(10), || async {
        app.get("/readyz", None).await.body["status"] == "ready"
    })
    .await;
    assert!(back, "the node went back to Redis by itself");
    assert_eq!(app.metric("insights_redis_breaker_open").await, 0.0);
    let sid = app.token_keys().verify(&second.access).unwrap().sid;
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let tombstone: Option<String> = redis::cmd("GET")
        .arg(format!("{}:auth:revoked:{sid}", app.config.redis_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(tombstone.is_some(), "the revocation was replayed into Redis");
    app.get("/api/v1/me", Some(&second.access))
        .await
        .expect_error(401, "unauthenticated");
    app.get("/api/v1/me", Some(&admin.access)).await.expect(200);
    let summary = app.get("/api/v1/insights/dashboard", Some(&admin.access)).await;
    assert_eq!(summary.expect(200)["totals"]["interactions"], 15);
}
