use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::helpers::{pg_base, spawn_app, spawn_with};

#[tokio::test]
async fn unknown_routes_and_methods_get_the_json_error_shape() {
    let app = spawn_app().await;
    app.get("/api/v1/nothing-here", None)
        .await
        .expect_error(404, "route_not_found");
    app.get("/api/v1/users/not-a-uuid", None)
        .await
        .expect_error(404, "route_not_found");
    app.call(Method::PUT, "/api/v1/me", None, None)
        .await
        .expect_error(405, "method_not_allowed");
    app.call(Method::DELETE, "/api/v1/auth/login", None, None)
        .await
        .expect_error(405, "method_not_allowed");
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_and_nothing_is_stored() {
    let app = spawn_with(|c| c.http.body_limit_bytes = 1024).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let big = json!({"email": "big@example.com", "name": "x".repeat(2000), "password": "a-long-password", "role": "viewer"});
    app.post("/api/v1/users", Some(&admin.access), big)
        .await
        .expect_error(413, "payload_too_large");
    // Chunked bodies (no Content-Length) are held to the same limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..8).map(|_| Ok(vec![b' '; 200])).collect();
    let r = app
        .client
        .post(format!("{}/api/v1/users", app.base))
        .bearer_auth(&admin.access)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let count = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM users"#)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
    let r = app
        .client
        .post(format!("{}/api/v1/auth/login", app.base))
        .send()
        .await
        .unwrap();
    let r = crate::helpers::read(r).await;
    assert!(
        r.expect_error(400, "bad_request")["error"]["message"]
            .as_str()
            .unwrap()
            .contains("empty")
    );
}

/// A TCP proxy in front of PostgreSQL that a test can cut and restore.
struct PgProxy {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl PgProxy {
    async fn start(addr: SocketAddr) -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(addr).unwrap();
        let listener: TcpListener = socket.listen(64).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stop_rx) = watch::channel(false);
        let upstream: SocketAddr = "127.0.0.1:5432".parse().unwrap();
        tokio::spawn(async move {
            let mut stop_rx = stop_rx;
            loop {
                let (mut client, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(p) => p, Err(_) => continue },
                    _ = stop_rx.changed() => return,
                };
                let mut conn_stop = stop_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = conn_stop.changed() => {}
                    }
                });
            }
        });
        Self { addr, stop }
    }

    fn cut(&self) {
        let _ = self.stop.send(true);
    }
}

#[tokio::test]
async fn an_unreachable_database_gives_503_quickly_and_the_node_recovers() {
    let proxy = PgProxy::start("127.0.0.1:0".parse().unwrap()).await;
    let addr = proxy.addr;
    let app = spawn_with(|c| {
        let db = c.database_url.rsplit('/').next().unwrap().to_owned();
        c.database_url = format!("postgres://postgres@{addr}/{db}");
        c.db.acquire_timeout = Duration::from_secs(2);
    })
    .await;
    assert!(
        pg_base().contains("127.0.0.1:5432"),
        "the proxy forwards to the machine's PostgreSQL"
    );
    let org = app.create_org().await;
    app.admin(&org).await;

    proxy.cut();
    let started = Instant::now();
    let r = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": org.admin_email, "password": org.admin_password}),
        )
        .await;
    r.expect_error(503, "service_unavailable");
    assert!(r.headers.contains_key("retry-after"));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "503 comes within the acquire timeout, not a hang"
    );
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.body["checks"]["postgres"]["status"], "down");
    assert_eq!(ready.body["status"], "not_ready");
    app.get("/healthz", None).await.expect(200);

    // PostgreSQL comes back on the same address: the node serves again without a restart.
    let _back = PgProxy::start(addr).await;
    let recovered = crate::helpers::eventually(Duration::from_secs(10), || async {
        app.post(
            "/api/v1/auth/login",
            None,
            json!({"email": org.admin_email, "password": org.admin_password}),
        )
        .await
        .status
            == 200
    })
    .await;
    assert!(recovered);
}
