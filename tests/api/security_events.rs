//! Security events (R9.14, R9.15, R11.3): recorded with time, IP, user or key and route, counted in
//! `/metrics`, listed to the organization's admins only.

use std::time::Duration;

use insights::domain::Role;
use serde_json::{Value, json};

use crate::helpers::{TestApp, eventually, spawn_app, spawn_with};

async fn events(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/api/v1/security-events{query}"), Some(token))
        .await;
    r.expect(200)["data"].as_array().unwrap().clone()
}

async fn wait_for(app: &TestApp, token: &str, query: &str, n: usize) -> Vec<Value> {
    let mut last = Vec::new();
    let seen = eventually(Duration::from_secs(10), || {
        let (app, token, query) = (app, token, query);
        async move { events(app, token, query).await.len() >= n }
    })
    .await;
    if seen {
        last = events(app, token, query).await;
    }
    assert!(seen, "fewer than {n} events for {query}");
    last
}

#[tokio::test]
async fn denials_failed_logins_and_decryption_failures_are_recorded_counted_and_listed_to_admins() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let (viewer_user, viewer) = app.user_with_role(&admin, Role::Viewer).await;
    // A failed login.
    app.post(
        "/api/v1/auth/login",
        None,
        json!({"email": org.admin_email, "password": "wrong-password-1"}),
    )
    .await
    .expect_error(401, "unauthenticated");
    // A viewer at an admin route, twice: two counted, one written (a burst is written once a minute).
    let before = app
        .metric("insights_security_events_total{kind=\"permission_denied\"}")
        .await;
    for _ in 0..2 {
        app.get("/api/v1/users", Some(&viewer.access))
            .await
            .expect_error(403, "forbidden");
    }
    let denied = wait_for(&app, &admin.access, "?kind=permission_denied", 1).await;
    assert_eq!(denied.len(), 1);
    let e = &denied[0];
    assert_eq!(e["userId"], viewer_user["id"]);
    assert_eq!(e["route"], "/api/v1/users");
    assert_eq!(e["ip"], "127.0.0.1");
    assert!(e["createdAt"].is_string() && e["detail"].is_string());
    let after = app
        .metric("insights_security_events_total{kind=\"permission_denied\"}")
        .await;
    assert_eq!(after - before, 2.0);
    let failed = events(&app, &admin.access, "?kind=login_failed").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["email"], org.admin_email.as_str());

    // An API key where only ingestion is allowed.
    let key = app
        .post("/api/v1/api-keys", Some(&admin.access), json!({"name": "ingest"}))
        .await
        .expect(201)
        .clone();
    app.get("/api/v1/customers", key["key"].as_str())
        .await
        .expect_error(403, "forbidden");
    let by_key = wait_for(&app, &admin.access, "?kind=permission_denied", 2).await;
    assert!(
        by_key
            .iter()
            .any(|e| e["apiKeyId"] == key["id"] && e["userId"].is_null()),
        "{by_key:?}"
    );

    // A sealed field that does not decrypt (copied from another customer).
    let a = app.customer(&admin.access, "sec-a", None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = app.customer(&admin.access, "sec-b", None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    sqlx::query("UPDATE customers SET name_sealed = (SELECT name_sealed FROM customers WHERE id = $1::uuid) WHERE id = $2::uuid")
        .bind(&a)
        .bind(&b)
        .execute(&app.pool)
        .await
        .unwrap();
    app.get(&format!("/api/v1/customers/{b}"), Some(&admin.access))
        .await
        .expect_error(500, "internal");
    let broken = wait_for(&app, &admin.access, "?kind=decryption_failed", 1).await;
    assert_eq!(broken[0]["route"], "/api/v1/customers/{id}");

    // Admins only, their organization only, and the kind is checked.
    app.get("/api/v1/security-events", Some(&viewer.access))
        .await
        .expect_error(403, "forbidden");
    let other = app.create_org().await;
    let other_admin = app.admin(&other).await;
    // Theirs is only their admin's login.
    let theirs = events(&app, &other_admin.access, "").await;
    assert_eq!(theirs.len(), 1, "{theirs:?}");
    assert_eq!(theirs[0]["userId"], other.admin_id.to_string());
    app.get("/api/v1/security-events?kind=nope", Some(&admin.access))
        .await
        .expect_error(400, "validation_failed");
    let all = events(&app, &admin.access, "?pageSize=100").await;
    let kinds: Vec<&str> = all.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for kind in [
        "login_succeeded",
        "login_failed",
        "permission_denied",
        "decryption_failed",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
}

#[tokio::test]
async fn rate_limit_blocks_are_recorded_with_the_user() {
    let app = spawn_with(|c| c.rate_limit.user_per_window = 3).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let mut blocked = 0;
    for _ in 0..6 {
        if app.get("/api/v1/me", Some(&admin.access)).await.status == 429 {
            blocked += 1;
        }
    }
    assert!(blocked > 0);
    // The admin's own quota is spent: read the trail from the database.
    let seen = eventually(Duration::from_secs(10), || {
        let pool = app.pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM auth_events WHERE kind = 'rate_limited' AND user_id = $1 AND route = '/api/v1/me'",
            )
            .bind(org.admin_id.as_uuid())
            .fetch_one(&pool)
            .await
            .unwrap();
            n == 1
        }
    })
    .await;
    assert!(seen, "one rate_limited event for the burst");
    assert!(
        app.metric("insights_security_events_total{kind=\"rate_limited\"}")
            .await
            >= f64::from(blocked)
    );
}
