//! Request quotas (R13) against the real Redis: each quota, the headers, backoff and reset, trusted
//! proxies, per-key quotas, one budget across two nodes, and the atomic login and password throttles.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Reply, TestApp, interaction, spawn_with};

fn header<'a>(r: &'a Reply, name: &str) -> &'a str {
    r.headers
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing: {:?}", r.headers))
        .to_str()
        .unwrap()
}

fn num(r: &Reply, name: &str) -> u64 {
    header(r, name).parse().unwrap()
}

/// Asserts a 429 from `quota`, with its headers, and returns its `Retry-After`.
#[track_caller]
fn refused(r: &Reply, quota: &str) -> u64 {
    let body = r.expect_error(429, "rate_limited");
    assert_eq!(body["error"]["quota"], quota, "{body}");
    assert_eq!(num(r, "x-ratelimit-remaining"), 0);
    assert!(
        header(r, "ratelimit").contains(&format!("\"{quota}\";r=0")),
        "{:?}",
        r.headers
    );
    num(r, "retry-after")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn a_user_gets_their_quota_with_headers_on_every_response_then_429() {
    let app = spawn_with(|c| c.rate_limit.user_per_window = 3).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = app.get("/api/v1/me", Some(&admin.access)).await;
        r.expect(200);
        assert_eq!(
            num(&r, "x-ratelimit-limit"),
            3,
            "the tightest quota is the user's"
        );
        let reset = num(&r, "x-ratelimit-reset");
        assert!(
            reset >= unix_now() && reset <= unix_now() + 61,
            "Unix seconds: {reset}"
        );
        assert_eq!(
            header(&r, "ratelimit-policy"),
            "\"ip\";q=1000000;w=60, \"user\";q=3;w=60"
        );
        remaining.push(num(&r, "x-ratelimit-remaining"));
    }
    assert_eq!(remaining, [2, 1, 0]);
    let r = app.get("/api/v1/me", Some(&admin.access)).await;
    let retry = refused(&r, "user");
    assert!((1..=20).contains(&retry), "about one interval (20 s): {retry}");
    assert_eq!(num(&r, "x-ratelimit-limit"), 3);
    // Another user of the same address is not affected.
    let other = app.create_org().await;
    let other_admin = app.admin(&other).await;
    app.get("/api/v1/me", Some(&other_admin.access)).await.expect(200);
    assert_eq!(
        app.metric("insights_rate_limited_total{quota=\"user\"}").await,
        1.0
    );
}

#[tokio::test]
async fn every_request_counts_per_ip_but_the_probes_do_not() {
    let app = spawn_with(|c| c.rate_limit.ip_per_window = 4).await;
    for _ in 0..4 {
        let r = app.get("/api/v1/openapi.json", None).await;
        r.expect(200);
        assert_eq!(num(&r, "x-ratelimit-limit"), 4);
    }
    let r = app.get("/api/v1/nowhere", None).await;
    refused(&r, "ip");
    for _ in 0..10 {
        let r = app.get("/healthz", None).await;
        r.expect(200);
        assert!(
            !r.headers.contains_key("x-ratelimit-limit"),
            "probes are not limited"
        );
    }
    assert_eq!(app.metric("insights_rate_limited_total{quota=\"ip\"}").await, 1.0);
}

#[tokio::test]
async fn the_auth_endpoints_have_their_own_ip_quota() {
    let app = spawn_with(|c| c.rate_limit.auth_ip_per_window = 2).await;
    let org = app.create_org().await;
    let login = json!({"email": org.admin_email, "password": org.admin_password});
    let first = app.post("/api/v1/auth/login", None, login.clone()).await;
    first.expect(200);
    assert_eq!(num(&first, "x-ratelimit-limit"), 2);
    app.post("/api/v1/auth/refresh", None, json!({"refreshToken": "nope"}))
        .await
        .expect(401);
    let r = app.post("/api/v1/auth/login", None, login).await;
    refused(&r, "auth_ip");
    // Other routes are not held to it.
    let token = first.body["accessToken"].as_str().unwrap();
    app.get("/api/v1/me", Some(token)).await.expect(200);
}

#[tokio::test]
async fn repeat_offenders_back_off_and_requests_flow_again_when_the_window_passes() {
    let app = spawn_with(|c| {
        c.rate_limit.user_per_window = 2;
        c.rate_limit.window = Duration::from_secs(1);
        c.rate_limit.backoff_base = Duration::from_millis(1000);
        c.rate_limit.backoff_max = Duration::from_secs(4);
    })
    .await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let me = || app.get("/api/v1/me", Some(&admin.access));
    me().await.expect(200);
    me().await.expect(200);
    let waits = [
        refused(&me().await, "user"),
        refused(&me().await, "user"),
        refused(&me().await, "user"),
        refused(&me().await, "user"),
    ];
    assert_eq!(waits, [1, 2, 4, 4], "doubling each time, capped at 4 s");
    // The client now waits as told (any request before that would extend its block); then it is served
    // normally, with its whole quota back (R13.10).
    tokio::time::sleep(Duration::from_secs(waits[3])).await;
    let r = me().await;
    r.expect(200);
    assert_eq!(num(&r, "x-ratelimit-remaining"), 1);
    me().await.expect(200);
}

#[tokio::test]
async fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
    let trusted = spawn_with(|c| {
        c.rate_limit.ip_per_window = 2;
        c.rate_limit.trusted_proxies = vec![insights::domain::Cidr::parse("127.0.0.1/32").unwrap()];
    })
    .await;
    let from = |app: &TestApp, client: &str| {
        app.client
            .get(format!("{}/api/v1/openapi.json", app.base))
            .header("x-forwarded-for", format!("{client}, 127.0.0.1"))
            .send()
    };
    for _ in 0..2 {
        assert_eq!(from(&trusted, "203.0.113.1").await.unwrap().status(), 200);
    }
    let r = crate::helpers::read(from(&trusted, "203.0.113.1").await.unwrap()).await;
    refused(&r, "ip");
    assert_eq!(
        from(&trusted, "203.0.113.2").await.unwrap().status(),
        200,
        "another client behind the proxy has its own quota"
    );

    let untrusted = spawn_with(|c| c.rate_limit.ip_per_window = 2).await;
    for client in ["203.0.113.1", "203.0.113.2"] {
        assert_eq!(from(&untrusted, client).await.unwrap().status(), 200);
    }
    let r = crate::helpers::read(from(&untrusted, "203.0.113.3").await.unwrap()).await;
    refused(&r, "ip");
}

#[tokio::test]
async fn api_keys_have_their_own_quota_set_when_created() {
    // The admin's three requests and the key's first (the node does not know the key's quota yet) use
    // up the IP quota; the key's requests go on, counted against the key's own quota.
    let app = spawn_with(|c| {
        c.rate_limit.ip_per_window = 4;
        c.rate_limit.api_key_per_window = 50;
    })
    .await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let bad = app
        .post(
            "/api/v1/api-keys",
            Some(&admin.access),
            json!({"name": "x", "rateLimitPerMinute": 0}),
        )
        .await;
    let body = bad.expect_error(400, "validation_failed");
    assert_eq!(body["error"]["details"][0]["field"], "rateLimitPerMinute");
    let created = app
        .post(
            "/api/v1/api-keys",
            Some(&admin.access),
            json!({"name": "ingest", "rateLimitPerMinute": 4}),
        )
        .await;
    let key = created.expect(201)["key"].as_str().unwrap().to_owned();
    assert_eq!(created.body["rateLimitPerMinute"], 4);
    let customer = app.customer(&key, "c-1", None).await;
    let id = customer["id"].as_str().unwrap();
    let mut limits = Vec::new();
    for _ in 0..3 {
        let r = app
            .post("/api/v1/interactions", Some(&key), interaction(id, "web", None))
            .await;
        r.expect(201);
        limits.push(num(&r, "x-ratelimit-limit"));
    }
    assert_eq!(limits, [4, 4, 4], "the key's own quota, not the default (50)");
    let r = app
        .post("/api/v1/interactions", Some(&key), interaction(id, "web", None))
        .await;
    refused(&r, "api_key");
    let listed = app.get("/api/v1/api-keys", Some(&admin.access)).await;
    refused(&listed, "ip");
}

#[tokio::test]
async fn a_users_quota_is_one_budget_across_nodes() {
    let a = spawn_with(|c| c.rate_limit.user_per_window = 4).await;
    let b = a.second_node().await;
    let org = a.create_org().await;
    let admin = a.admin(&org).await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let node = if i % 2 == 0 { &a } else { &b };
        statuses.push(node.get("/api/v1/me", Some(&admin.access)).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    drop(b);
}

#[tokio::test]
async fn a_parallel_burst_of_wrong_passwords_gets_exactly_the_allowed_guesses() {
    let app = spawn_with(|c| c.auth.login_max_failures = 5).await;
    let org = app.create_org().await;
    let attempts = (0..20).map(|_| {
        app.post(
            "/api/v1/auth/login",
            None,
            json!({"email": org.admin_email, "password": "wrong-password"}),
        )
    });
    let replies = futures_util::future::join_all(attempts).await;
    let count = |status: u16| replies.iter().filter(|r| r.status.as_u16() == status).count();
    assert_eq!((count(401), count(429)), (5, 15), "check and count are one step");
    let throttled = replies.iter().find(|r| r.status.as_u16() == 429).unwrap();
    assert_eq!(throttled.body["error"]["quota"], "login_failures");
    // Even the right password waits until the window ends.
    let r = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": org.admin_email, "password": org.admin_password}),
        )
        .await;
    r.expect_error(429, "rate_limited");
}

#[tokio::test]
async fn password_changes_are_throttled_like_logins() {
    let app = spawn_with(|c| c.auth.login_max_failures = 3).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let change = |current: &str| {
        app.call(
            Method::POST,
            "/api/v1/auth/password",
            Some(&admin.access),
            Some(json!({"currentPassword": current, "newPassword": "another-long-password"})),
        )
    };
    for _ in 0..3 {
        change("not-the-password")
            .await
            .expect_error(400, "validation_failed");
    }
    let r = change("not-the-password").await;
    let body: &Value = r.expect_error(429, "rate_limited");
    assert_eq!(body["error"]["quota"], "login_failures");
    change(&org.admin_password)
        .await
        .expect_error(429, "rate_limited");
}
