use std::io::{Read as _, Write as _};
use std::time::Duration;

use crate::helpers::{client_trusting, spawn_app, spawn_with, start, test_config};

#[tokio::test]
async fn plain_http_on_the_https_port_is_refused() {
    let app = spawn_app().await;
    let port = app.app.as_ref().unwrap().local_addr().port();
    let raw = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
    .await
    .unwrap();
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert!(raw.contains("https_required"), "{raw}");
    assert!(!raw.contains("\"ok\""), "the route itself never ran");

    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
}

#[tokio::test]
async fn an_untrusted_client_cannot_complete_the_handshake() {
    let app = spawn_app().await;
    // A client that trusts only its built-in roots refuses our self-signed certificate.
    let strict = reqwest::Client::builder().build().unwrap();
    assert!(strict.get(format!("{}/healthz", app.base)).send().await.is_err());
}

#[tokio::test]
async fn the_generated_certificate_is_kept_and_reused() {
    let first = test_config();
    let data_dir = first.data_dir.clone();
    let app = start(first.clone()).await;
    let cert = std::fs::read(data_dir.join("tls/cert.pem")).unwrap();
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(data_dir.join("tls/key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(
        key_mode & 0o077,
        0,
        "the private key is readable by its owner only"
    );
    app.get("/healthz", None).await.expect(200);
    // A second node with the same data directory serves the same certificate.
    let second = spawn_with(|c| c.data_dir = data_dir.clone()).await;
    assert_eq!(std::fs::read(data_dir.join("tls/cert.pem")).unwrap(), cert);
    second.get("/healthz", None).await.expect(200);
}

#[tokio::test]
async fn a_configured_certificate_is_served() {
    let dir = std::env::temp_dir().join(format!("insights-cert-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("c.pem"), generated.cert.pem()).unwrap();
    std::fs::write(dir.join("k.pem"), generated.signing_key.serialize_pem()).unwrap();
    let app = spawn_with(|c| {
        c.tls_cert = Some(dir.join("c.pem"));
        c.tls_key = Some(dir.join("k.pem"));
    })
    .await;
    assert!(
        !app.data_dir.join("tls/cert.pem").exists(),
        "nothing generated when a certificate is configured"
    );
    let client = client_trusting(generated.cert.pem().as_bytes());
    let r = client.get(format!("{}/healthz", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let _ = std::fs::remove_dir_all(dir);
}

/// TLS to PostgreSQL (R9.10), against this machine's server (`ssl = on`, Debian's snakeoil certificate):
/// asked for, every connection of the node is encrypted, as PostgreSQL itself reports in `pg_stat_ssl`;
/// a certificate that does not verify (a CA that did not issue it, or a name it was not issued to)
/// refuses the start instead of falling back.
#[tokio::test]
async fn the_node_speaks_tls_to_postgresql_when_asked_and_refuses_a_certificate_that_does_not_verify() {
    let snakeoil = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    let mut config = test_config();
    let plain_url = config.database_url.clone();
    let database = plain_url.rsplit('/').next().unwrap().to_owned();
    config.database_url = format!("{plain_url}?sslmode=verify-ca&sslrootcert={snakeoil}");
    let app = insights::App::build(config.clone())
        .await
        .expect("node starts over TLS");
    let pool = sqlx::PgPool::connect(&plain_url).await.unwrap();
    let ssl: Vec<(bool, String)> = sqlx::query_as(
        "SELECT s.ssl, coalesce(s.version, '') FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE a.datname = $1 AND a.application_name = 'insights'",
    )
    .bind(&database)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(!ssl.is_empty(), "the node holds connections");
    assert!(
        ssl.iter()
            .all(|(on, version)| *on && version.starts_with("TLSv1.")),
        "{ssl:?}"
    );
    app.shutdown().await.unwrap();

    // Another CA: PostgreSQL's certificate does not chain to it.
    let other_ca = std::env::temp_dir().join(format!("insights-ca-{}.pem", uuid::Uuid::new_v4().simple()));
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(&other_ca, generated.cert.pem()).unwrap();
    for url in [
        format!("{plain_url}?sslmode=verify-ca&sslrootcert={}", other_ca.display()),
        // The right CA, but 127.0.0.1 is not a name the certificate was issued to.
        format!("{plain_url}?sslmode=verify-full&sslrootcert={snakeoil}"),
    ] {
        let refused = insights::App::build(insights::config::Config {
            database_url: url.clone(),
            ..test_config()
        })
        .await;
        let error = format!("{:#}", refused.err().expect("the start is refused"));
        assert!(
            error.to_lowercase().contains("certificate") || error.to_lowercase().contains("tls"),
            "{url}: {error}"
        );
    }
    let _ = std::fs::remove_file(other_ca);
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
    )))
    .execute(&pool)
    .await;
}

/// A redis-server of the test's own that speaks only TLS, with a certificate for `localhost`.
struct TlsRedis {
    port: u16,
    ca: std::path::PathBuf,
    dir: std::path::PathBuf,
    child: std::process::Child,
}

impl TlsRedis {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("insights-rediss-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key) = (dir.join("redis.pem"), dir.join("redis.key"));
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        let port = crate::helpers::free_port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&cert)
            .args(["--tls-auth-clients", "no", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (Debian's is built with TLS)");
        Self {
            port,
            ca: cert,
            dir,
            child,
        }
    }

    fn url(&self) -> String {
        format!("rediss://localhost:{}", self.port)
    }

    /// A connection that trusts the server's certificate, once the server answers.
    async fn connect(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::build_with_tls(
            self.url(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(&self.ca).unwrap()),
            },
        )
        .unwrap();
        for _ in 0..100 {
            if let Ok(c) = client.get_multiplexed_async_connection().await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the TLS redis-server on {} does not answer", self.port);
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn the_node_speaks_tls_to_redis_and_refuses_a_certificate_that_does_not_verify() {
    // This test's own TLS client needs the process's rustls provider before any node installed it.
    insights::http::tls::install_crypto_provider();
    let redis = TlsRedis::start();
    let mut conn = redis.connect().await;

    // A CA that did not sign the server's certificate, and the system's roots (which never did):
    // the start is refused with the reason, instead of a node that silently runs without Redis.
    let other_ca = redis.dir.join("other-ca.pem");
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(&other_ca, other.cert.pem()).unwrap();
    for ca in [Some(other_ca.clone()), None] {
        let mut config = test_config();
        config.redis_url = Some(redis.url());
        config.redis.ca_file = ca.clone();
        let refused = insights::App::build(config).await;
        let error = format!("{:#}", refused.err().expect("the start is refused"));
        assert!(
            error.contains("TLS handshake with Redis failed"),
            "{ca:?}: {error}"
        );
    }

    // The right CA: the node's cache, throttles and quotas live in that Redis, over TLS only.
    let app = spawn_with(|c| {
        c.redis_url = Some(redis.url());
        c.redis.ca_file = Some(redis.ca.clone());
    })
    .await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    app.get("/api/v1/insights/dashboard", Some(&admin.access))
        .await
        .expect(200);
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.body["checks"]["redis"]["status"], "up", "{}", ready.body);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", app.config.redis_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        keys.iter().any(|k| k.contains("dashboard")),
        "the node wrote its cache entries to the TLS Redis: {keys:?}"
    );
    assert_eq!(
        app.metric("insights_redis_breaker_open").await,
        0.0,
        "Redis was never treated as down"
    );
}
