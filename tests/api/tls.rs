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

/// testssl.sh, as an auditor runs it (Debian's package), against the HTTPS port serving a certificate
/// of a CA it is told to trust, as production would: nothing HIGH, CRITICAL or FATAL (R9.5), and the
/// checks that matter seen passing: TLS 1.2 and 1.3 only, the server's cipher order, forward secrecy,
/// HSTS.
#[tokio::test]
async fn testssl_finds_nothing_high_or_critical_on_the_https_port() {
    let testssl = std::path::Path::new("/usr/bin/testssl");
    assert!(
        testssl.exists(),
        "/usr/bin/testssl is missing: apt-get install testssl.sh (scripts/test.sh does)"
    );
    let dir = std::env::temp_dir().join(format!("insights-testssl-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Insights test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let now = time::OffsetDateTime::from_unix_timestamp(chrono::Utc::now().timestamp()).unwrap();
    leaf.not_before = now - time::Duration::hours(1);
    leaf.not_after = now + time::Duration::days(90);
    // Where a real CA publishes revocations (never fetched here: testssl runs without --phone-out).
    leaf.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
        uris: vec!["http://crl.insights.test/ca.crl".to_owned()],
    }];
    let leaf = leaf.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let app = spawn_with(|c| {
        c.tls_cert = Some(dir.join("cert.pem"));
        c.tls_key = Some(dir.join("key.pem"));
    })
    .await;
    let report = dir.join("report.json");
    let run = tokio::process::Command::new(testssl)
        .args(["--quiet", "--color", "0", "--warnings", "off", "--add-ca"])
        .arg(dir.join("ca.pem"))
        .arg("--jsonfile")
        .arg(&report)
        .arg(&app.base)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(900), run)
        .await
        .expect("testssl took over 15 minutes")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let findings: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&report).unwrap_or_default())
            .unwrap_or_else(|e| panic!("testssl wrote no readable report ({e}); its output:\n{text}"));
    let bad: Vec<String> = findings
        .iter()
        .filter(|f| matches!(f["severity"].as_str(), Some("HIGH" | "CRITICAL" | "FATAL")))
        .map(|f| format!("{} {}: {}", f["severity"], f["id"], f["finding"]))
        .collect();
    assert!(bad.is_empty(), "testssl findings:\n{}", bad.join("\n"));
    let finding = |id: &str| {
        findings
            .iter()
            .find(|f| f["id"] == id)
            .map(|f| {
                (
                    f["severity"].as_str().unwrap_or("").to_owned(),
                    f["finding"].as_str().unwrap_or("").to_owned(),
                )
            })
            .unwrap_or_else(|| panic!("testssl reported no {id}; its output:\n{text}"))
    };
    for id in ["SSLv3", "TLS1", "TLS1_1"] {
        assert!(finding(id).1.contains("not offered"), "{id}: {:?}", finding(id));
    }
    for id in ["TLS1_2", "TLS1_3"] {
        assert!(finding(id).1.starts_with("offered"), "{id}: {:?}", finding(id));
    }
    assert_eq!(finding("cipher_order").0, "OK", "{:?}", finding("cipher_order"));
    assert_eq!(finding("PFS").0, "OK", "{:?}", finding("PFS"));
    assert_eq!(finding("HSTS_time").0, "OK", "{:?}", finding("HSTS_time"));
    assert_eq!(
        finding("cert_chain_of_trust").0,
        "OK",
        "{:?}",
        finding("cert_chain_of_trust")
    );
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
