use insights::actors::root::RootMsg;
use ractor::ActorStatus;

use crate::helpers::{spawn_app, spawn_with};

#[tokio::test]
async fn healthz_answers_with_a_request_id() {
    let app = spawn_app().await;
    let r = app.get("/healthz", None).await;
    assert_eq!(r.expect(200)["status"], "ok");
    let id = r.headers["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 36, "a generated UUID");
    assert_eq!(r.headers["strict-transport-security"], "max-age=31536000");
}

#[tokio::test]
async fn a_sane_client_request_id_is_kept_and_a_bad_one_replaced() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "trace-abc_123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-abc_123");
    let r = app
        .client
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "bad id;<>")
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers()["x-request-id"], "bad id;<>");
}

#[tokio::test]
async fn readyz_reports_postgres_redis_and_actors() {
    let app = spawn_app().await;
    let body = app.get("/readyz", None).await.expect(200).clone();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["postgres"]["status"], "up");
    assert_eq!(body["checks"]["redis"]["backend"], "redis");
    assert_eq!(body["checks"]["redis"]["status"], "up");
    assert_eq!(body["checks"]["actors"]["status"], "up");
}

#[tokio::test]
async fn without_redis_the_in_process_cache_stands_in() {
    let app = spawn_with(|c| c.redis_url = None).await;
    let body = app.get("/readyz", None).await.expect(200).clone();
    assert_eq!(body["checks"]["redis"]["backend"], "in-process");
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn unreachable_redis_degrades_but_keeps_serving() {
    // Nothing listens on port 1: every cache operation fails fast.
    let app = spawn_with(|c| c.redis_url = Some("redis://127.0.0.1:1".to_owned())).await;
    let body = app.get("/readyz", None).await.expect(200).clone();
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["checks"]["redis"]["status"], "down");
    // Login and authenticated calls still work, straight from PostgreSQL.
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    app.get("/api/v1/me", Some(&admin.access)).await.expect(200);
    // The first failure opened the breaker once; nothing after it waited on Redis.
    assert_eq!(app.metric("insights_redis_breaker_open").await, 1.0);
    assert_eq!(app.metric("insights_redis_breaker_trips_total").await, 1.0);
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let app = spawn_app().await;
    app.get("/api/v1/users/5f1d7c4e-0000-4000-8000-000000000000", None)
        .await;
    let text = app.metrics_text().await;
    assert!(
        text.contains(
            "insights_http_requests_total{method=\"GET\",route=\"/api/v1/users/{id}\",status=\"401\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains(
        "insights_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/users/{id}\"} 1"
    ));
}

#[tokio::test]
async fn the_root_supervisor_starts_answers_and_stops_cleanly() {
    let mut app = spawn_app().await;
    let node = app.config.node_name.clone();
    let root = app.app.as_ref().unwrap().root().clone();
    assert_eq!(root.get_status(), ActorStatus::Running);
    let name = ractor::call_t!(root, RootMsg::NodeName, 1000).unwrap();
    assert_eq!(name, node);
    assert!(ractor::registry::where_is(insights::actors::names::root(&node)).is_some());
    app.app.take().unwrap().shutdown().await.unwrap();
    assert_eq!(root.get_status(), ActorStatus::Stopped);
    assert!(
        ractor::registry::where_is(insights::actors::names::root(&node)).is_none(),
        "the name is released"
    );
}

#[tokio::test]
async fn cors_allows_only_the_configured_origins() {
    let app = spawn_with(|c| c.cors_origins = vec!["https://dash.example.com".to_owned()]).await;
    let allowed = app
        .client
        .request(reqwest::Method::OPTIONS, format!("{}/api/v1/me", app.base))
        .header("origin", "https://dash.example.com")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://dash.example.com"
    );
    let r = app
        .client
        .get(format!("{}/healthz", app.base))
        .header("origin", "https://dash.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://dash.example.com"
    );

    let denied = app
        .client
        .get(format!("{}/healthz", app.base))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    assert!(!denied.headers().contains_key("access-control-allow-origin"));
    let body: serde_json::Value = denied.json().await.unwrap();
    assert_eq!(body["error"]["code"], "cors_forbidden");

    // The node's own origin is always allowed (its dashboard's module scripts and fetches send it), and
    // gets no CORS headers: it needs none.
    let host = app.base.strip_prefix("https://").unwrap().to_owned();
    for origin in [app.base.clone(), format!("https://{}", host.to_uppercase())] {
        let own = app
            .client
            .get(format!("{}/healthz", app.base))
            .header("origin", &origin)
            .send()
            .await
            .unwrap();
        assert_eq!(own.status(), 200, "{origin}");
        assert!(!own.headers().contains_key("access-control-allow-origin"));
    }
    // Another port or scheme of the same host is another origin.
    let (name, port) = host.rsplit_once(':').unwrap();
    let other_port = port.parse::<u16>().unwrap().wrapping_add(1);
    for origin in [format!("https://{name}:{other_port}"), format!("http://{host}")] {
        let r = app
            .client
            .get(format!("{}/healthz", app.base))
            .header("origin", &origin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{origin}");
    }

    // Without configured origins no cross-origin access is granted.
    let plain = spawn_app().await;
    let r = plain
        .client
        .get(format!("{}/healthz", plain.base))
        .header("origin", "https://dash.example.com")
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn the_dashboard_is_served_with_a_strict_content_security_policy() {
    let app = crate::helpers::spawn_app().await;
    let index = app.client.get(format!("{}/", app.base)).send().await.unwrap();
    assert_eq!(index.status(), 200);
    let csp = index.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(index.text().await.unwrap().contains("/static/app.js"));
    let script = app
        .client
        .get(format!("{}/static/app.js", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript")
    );
    for escape in [
        "/static/%2e%2e/Cargo.toml",
        "/static/..%2fCargo.toml",
        "/static/vendor/../../Cargo.toml",
    ] {
        let r = app
            .client
            .get(format!("{}{escape}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{escape}");
    }
}
