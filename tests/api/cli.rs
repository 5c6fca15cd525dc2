use std::process::Command;

use serde_json::Value;

use crate::helpers::{spawn_app, test_config};

fn insights() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_insights"));
    // Start from a clean slate: nothing of the developer's environment leaks in.
    for var in [
        "INSIGHTS_JWT_SECRET",
        "INSIGHTS_DATA_KEY",
        "INSIGHTS_DATA_KEY_PREVIOUS",
        "INSIGHTS_CONFIG",
        "REDIS_URL",
        "INSIGHTS_LISTEN",
        "DATABASE_URL",
    ] {
        cmd.env_remove(var);
    }
    cmd.current_dir(std::env::temp_dir());
    cmd
}

#[tokio::test]
async fn org_create_prints_ids_and_the_admin_can_log_in() {
    let app = spawn_app().await;
    let email = format!("cli-{}@example.com", uuid::Uuid::new_v4().simple());
    let out = insights()
        .env("DATABASE_URL", &app.db_url)
        .args([
            "org",
            "create",
            "--name",
            "Acme",
            "--admin-email",
            &email,
            "--admin-password",
            "cli-password",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let org = printed["organizationId"].as_str().unwrap();
    let admin = printed["adminUserId"].as_str().unwrap();
    let s = app.login(&email, "cli-password").await;
    assert_eq!(s.body["user"]["organizationId"], org);
    assert_eq!(s.body["user"]["id"], admin);
    assert_eq!(s.body["user"]["role"], "admin");

    let again = insights()
        .env("DATABASE_URL", &app.db_url)
        .args([
            "org",
            "create",
            "--name",
            "Acme 2",
            "--admin-email",
            &email,
            "--admin-password",
            "cli-password",
        ])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad = insights()
        .env("DATABASE_URL", &app.db_url)
        .args([
            "org",
            "create",
            "--name",
            "X",
            "--admin-email",
            "nope",
            "--admin-password",
            "short",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--admin-email"));
}

#[tokio::test]
async fn migrate_creates_and_migrates_a_fresh_database() {
    let config = test_config();
    let url = config.database_url.clone();
    let out = insights()
        .env("DATABASE_URL", &url)
        .arg("migrate")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar!(
        r#"SELECT table_name AS "t!" FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1"#
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for t in [
        "organizations",
        "users",
        "customers",
        "customer_interactions",
        "behavior_patterns",
        "api_keys",
        "sessions",
        "refresh_tokens",
        "auth_events",
    ] {
        assert!(tables.iter().any(|x| x == t), "{t} missing from {tables:?}");
    }
    // Running it again is a no-op.
    assert!(
        insights()
            .env("DATABASE_URL", &url)
            .arg("migrate")
            .status()
            .unwrap()
            .success()
    );
    pool.close().await;
    let admin = sqlx::PgPool::connect(&format!("{}/postgres", crate::helpers::pg_base()))
        .await
        .unwrap();
    let name = url.rsplit('/').next().unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE \"{name}\" WITH (FORCE)"
    )))
    .execute(&admin)
    .await
    .unwrap();
}

#[test]
fn serve_refuses_to_start_without_a_good_secret() {
    let out = insights().arg("serve").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("INSIGHTS_JWT_SECRET is not set"), "{err}");

    let out = insights()
        .env("INSIGHTS_JWT_SECRET", "too-short")
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("too short"));

    // A good secret, but no data key, or one that is not 32 bytes of base64 (R9.9).
    let secret = "0123456789abcdef0123456789abcdef";
    let out = insights()
        .env("INSIGHTS_JWT_SECRET", secret)
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("INSIGHTS_DATA_KEY") && err.contains("required"),
        "{err}"
    );
    for (key, says) in [("not-base64!", "base64"), ("c2hvcnQ=", "32 bytes")] {
        let out = insights()
            .env("INSIGHTS_JWT_SECRET", secret)
            .env("INSIGHTS_DATA_KEY", key)
            .arg("serve")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("INSIGHTS_DATA_KEY") && err.contains(says),
            "{key}: {err}"
        );
    }
}

#[test]
fn a_secret_in_the_config_file_is_refused() {
    let dir = std::env::temp_dir().join(format!("insights-cfg-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("insights.toml");
    std::fs::write(&file, "jwt_secret = \"0123456789abcdef0123456789abcdef\"\n").unwrap();
    let out = insights()
        .env("INSIGHTS_CONFIG", &file)
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("environment only"));
    let _ = std::fs::remove_dir_all(dir);
}
