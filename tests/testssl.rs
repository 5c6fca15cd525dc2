//! The HTTPS port audited by testssl.sh (R9.5), as an auditor runs it. A test binary of its own: testssl
//! keeps two cores busy for about a minute, which would otherwise slow the API tests that run beside it
//! (the contract fuzzing among them) into timeouts of their own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::time::Duration;

use helpers::spawn_with;

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
