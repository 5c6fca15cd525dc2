//! Secrets never leak (issue 16): a node run as a process, logging at debug, through logins, refreshes,
//! a password change, an API key and its ingest, sealed customers and refused requests, never writes the
//! JWT secret, the data key, a password, a token or a key to its log, to `/metrics` or into an error body.

use base64::Engine as _;
use serde_json::json;

use crate::helpers::spawn_app;
use crate::procs::{Spec, serve};

#[tokio::test]
async fn no_secret_reaches_the_logs_the_metrics_or_an_error_body() {
    let harness = spawn_app().await;
    let secret = harness.config.jwt_secret.as_ref().unwrap().expose().to_owned();
    let data_key = base64::engine::general_purpose::STANDARD.encode(harness.config.data_key.unwrap());
    let name = format!("secrets-{}", uuid::Uuid::new_v4().simple());
    let spec = Spec {
        db_url: &harness.db_url,
        secret: &secret,
        prefix: &harness.config.redis_prefix,
        env: vec![
            (
                "RUST_LOG".to_owned(),
                "debug,hyper=info,h2=info,rustls=info".to_owned(),
            ),
            ("INSIGHTS_LOG_FORMAT".to_owned(), "json".to_owned()),
        ],
    };
    let node = serve(&name, &spec).await;
    let org = harness.create_org().await;
    let mut bodies = String::new();
    let login = node
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": org.admin_email, "password": org.admin_password}),
        )
        .await;
    let login = login.expect(200).clone();
    let access = login["accessToken"].as_str().unwrap().to_owned();
    let refresh = login["refreshToken"].as_str().unwrap().to_owned();
    let refreshed = node
        .post("/api/v1/auth/refresh", None, json!({"refreshToken": refresh}))
        .await;
    let refreshed = refreshed.expect(200).clone();
    let access2 = refreshed["accessToken"].as_str().unwrap().to_owned();
    let refresh2 = refreshed["refreshToken"].as_str().unwrap().to_owned();
    let key = node
        .post("/api/v1/api-keys", Some(&access2), json!({"name": "ingest"}))
        .await;
    let api_key = key.expect(201)["key"].as_str().unwrap().to_owned();
    let customer = node
        .post(
            "/api/v1/customers",
            Some(&api_key),
            json!({"externalId": "leak-1", "name": "Grace Hopper", "email": "grace@example.com"}),
        )
        .await;
    bodies.push_str(&customer.body.to_string());
    node.post(
        "/api/v1/interactions",
        Some(&api_key),
        json!({"customerExternalId": "leak-1", "channel": "chat", "eventType": "message", "content": "hello"}),
    )
    .await;
    let created = node
        .post(
            "/api/v1/customers",
            Some(&access2),
            json!({"externalId": "leak-2", "name": "Grace Hopper", "email": "grace@example.com"}),
        )
        .await;
    created.expect(201);
    let new_password = "a-brand-new-password-42";
    // Refused on purpose: a reused refresh token, a wrong password, a bad and a forged token, an expired
    // session's token; their bodies are kept.
    for reply in [
        node.post("/api/v1/auth/refresh", None, json!({"refreshToken": refresh}))
            .await,
        node.post(
            "/api/v1/auth/login",
            None,
            json!({"email": org.admin_email, "password": "wrong-password"}),
        )
        .await,
        node.get("/api/v1/me", Some(&format!("{access}x"))).await,
        node.get("/api/v1/me", Some(&secret)).await,
        node.post("/api/v1/customers", Some(&access2), json!({"externalId": ""}))
            .await,
    ] {
        assert!(reply.status.is_client_error(), "{:?}", reply.body);
        bodies.push_str(&reply.body.to_string());
    }
    let login2 = node
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": org.admin_email, "password": org.admin_password}),
        )
        .await;
    let access3 = login2.expect(200)["accessToken"].as_str().unwrap().to_owned();
    node.post(
        "/api/v1/auth/password",
        Some(&access3),
        json!({"currentPassword": org.admin_password, "newPassword": new_password}),
    )
    .await;
    let metrics = node.get("/metrics", None).await;
    let metrics = format!("{:?}", metrics.body);
    drop(node);
    let log =
        std::fs::read_to_string(std::env::temp_dir().join(format!("insights-test-{name}/node.log"))).unwrap();
    assert!(
        log.lines().count() > 20 && log.contains("\"request\""),
        "the node logged its requests:\n{log}"
    );
    for (what, needle) in [
        ("the JWT secret", secret.as_str()),
        ("the data key", data_key.as_str()),
        ("the admin's password", org.admin_password.as_str()),
        ("the new password", new_password),
        ("an access token", access.as_str()),
        ("a refreshed access token", access2.as_str()),
        ("a refresh token", refresh.as_str()),
        ("a rotated refresh token", refresh2.as_str()),
        ("an API key", api_key.as_str()),
        ("a customer's email", "grace@example.com"),
    ] {
        assert!(!log.contains(needle), "{what} is in the log");
        assert!(!metrics.contains(needle), "{what} is in /metrics");
        // The customer's own email is in its create answer; nothing else may be in a body.
        if what != "a customer's email" {
            assert!(!bodies.contains(needle), "{what} is in an error body");
        }
    }
}
