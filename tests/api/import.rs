use std::io::Write as _;
use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::spawn_app;

fn insights() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_insights"));
    for var in ["INSIGHTS_CONFIG", "REDIS_URL", "DATABASE_URL"] {
        cmd.env_remove(var);
    }
    cmd
}

fn temp_file(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("insights-import-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[tokio::test]
async fn ndjson_import_stores_valid_rows_and_writes_rejects_with_their_errors() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let known = app.customer(&admin.access, "known", None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let file = temp_file("events.ndjson");
    let at = (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
    {
        let mut f = std::fs::File::create(&file).unwrap();
        for i in 0..1_050 {
            let row = match i {
                3 => "{not json".to_owned(),
                10 => json!({"customerId": known, "channel": "fax", "eventType": "x", "timestamp": at}).to_string(),
                11 => json!({"customerExternalId": "nobody-yet", "channel": "web", "eventType": "x", "timestamp": at}).to_string(),
                _ if i % 2 == 0 => json!({"customerId": known, "channel": "chat", "eventType": "message", "content": format!("row {i}"), "timestamp": at, "idempotencyKey": format!("imp-{i}")}).to_string(),
                _ => json!({"customerExternalId": format!("ext-{}", i % 7), "channel": "web", "eventType": "view", "timestamp": at}).to_string(),
            };
            writeln!(f, "{row}").unwrap();
        }
    }
    let out = insights()
        .env("DATABASE_URL", &app.db_url)
        .args([
            "import",
            file.to_str().unwrap(),
            "--org",
            &org.id.to_string(),
            "--create-customers",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["rows"], 1050);
    assert_eq!(summary["rejected"], 2, "the broken JSON line and the bad channel");
    assert_eq!(summary["created"], 1048);
    assert_eq!(summary["customersCreated"], 8, "ext-0..ext-6 and nobody-yet");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("import progress"), "progress is logged: {stderr}");

    let rejects = std::fs::read_to_string(summary["rejectsFile"].as_str().unwrap()).unwrap();
    let lines: Vec<Value> = rejects
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["line"], 4);
    assert!(
        lines[0]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    assert_eq!(lines[1]["line"], 11);
    assert_eq!(lines[1]["errors"][0]["field"], "channel");

    let rows = app.stored_interactions().await;
    assert_eq!(rows, 1048);
    let total: i64 = sqlx::query_scalar!(r#"SELECT sum(interaction_count)::bigint AS "n!" FROM customers"#)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(total, 1048);

    // Importing the same file again stores nothing new for rows with idempotency keys.
    let again = insights()
        .env("DATABASE_URL", &app.db_url)
        .args([
            "import",
            file.to_str().unwrap(),
            "--org",
            &org.id.to_string(),
            "--json",
        ])
        .output()
        .unwrap();
    let summary: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(summary["duplicates"], 524);
}

#[tokio::test]
async fn csv_import_reads_a_header_and_json_metadata() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    app.customer(&admin.access, "c-1", Some("smb")).await;
    let file = temp_file("events.csv");
    let at = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let csv = format!(
        "customerExternalId,channel,eventType,content,timestamp,metadata\n\
         c-1,email,message,\"Thanks, great service!\",{at},\"{{\"\"geo\"\": {{\"\"country\"\": \"\"fr\"\"}}}}\"\n\
         c-1,phone,call,,{at},\n\
         c-2,web,view,,{at},\n"
    );
    std::fs::write(&file, csv).unwrap();
    let out = insights()
        .env("DATABASE_URL", &app.db_url)
        .args([
            "import",
            file.to_str().unwrap(),
            "--org",
            &org.id.to_string(),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["created"], 1);
    assert_eq!(
        summary["rejected"], 2,
        "phone without content, and an unknown customer without --create-customers"
    );
    let row = sqlx::query!(
        r#"SELECT content, enrichment->'geo'->>'country' AS country, segment FROM customer_interactions"#
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(row.content.as_deref(), Some("Thanks, great service!"));
    assert_eq!(row.country.as_deref(), Some("FR"));
    assert_eq!(row.segment.as_deref(), Some("smb"));
    let rejects = std::fs::read_to_string(summary["rejectsFile"].as_str().unwrap()).unwrap();
    assert!(
        rejects.contains("content") && rejects.contains("customerExternalId"),
        "{rejects}"
    );
}

#[test]
fn import_refuses_a_bad_organization_or_format() {
    let out = insights()
        .args(["import", "/nonexistent.ndjson", "--org", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--org"));
    let out = insights()
        .args([
            "import",
            "/nonexistent.ndjson",
            "--org",
            &uuid::Uuid::new_v4().to_string(),
            "--format",
            "xml",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("ndjson or csv"));
}
