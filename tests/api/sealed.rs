//! Customers' sensitive fields encrypted at rest (R9.9), read the way an attacker with the database
//! would read them, and the keys handled the way an operator would.

use base64::Engine as _;
use insights::config::Config;
use serde_json::json;

use crate::helpers::{TestApp, spawn_app, start};

/// A nullable bytea column.
type Bytes = Option<Vec<u8>>;

const NAME: &str = "Ada Lovelace";
const EMAIL: &str = "ada.lovelace@example.com";
const PLAN: &str = "plan-of-analytical-engine";

async fn create(app: &TestApp, token: &str, external: &str) -> String {
    let body = json!({"externalId": external, "name": NAME, "email": EMAIL,
                      "attributes": {"plan": PLAN, "seats": 3}});
    let r = app.post("/api/v1/customers", Some(token), body).await;
    r.expect(201)["id"].as_str().unwrap().to_owned()
}

/// How many customer rows show any of the plaintexts, whatever the column (bytea prints as hex).
async fn plaintext_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM customers c
         WHERE row_to_json(c)::text ILIKE ANY (ARRAY['%lovelace%', '%ada.lovelace%', '%analytical%'])",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

fn with_keys(app: &TestApp, current: [u8; 32], previous: Option<[u8; 32]>) -> Config {
    let id = uuid::Uuid::new_v4().simple().to_string();
    Config {
        node_name: format!("keys-{id}"),
        data_dir: std::env::temp_dir().join(format!("insights-test-{id}")),
        data_key: Some(current),
        data_key_previous: previous,
        ..app.config.clone()
    }
}

#[tokio::test]
async fn names_emails_and_attributes_are_stored_sealed_and_read_back_as_sent() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let id = create(&app, &admin.access, "ada-1").await;
    let got = app
        .get(&format!("/api/v1/customers/{id}"), Some(&admin.access))
        .await;
    let got = got.expect(200);
    assert_eq!(
        (got["name"].as_str(), got["email"].as_str()),
        (Some(NAME), Some(EMAIL))
    );
    assert_eq!(got["attributes"], json!({"plan": PLAN, "seats": 3}));
    // What the database holds: ciphertexts and a blind index, never the text.
    assert_eq!(plaintext_rows(&app).await, 0);
    let (name, email, index): (Option<String>, Option<String>, Option<Vec<u8>>) =
        sqlx::query_as("SELECT name, email, email_index FROM customers WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((name, email), (None, None));
    assert_eq!(index.map(|i| i.len()), Some(32));
    // A patch seals too; clearing a field clears its ciphertext.
    let r = app
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/customers/{id}"),
            Some(&admin.access),
            Some(json!({"name": "Ada King", "email": null, "attributes": {}})),
        )
        .await;
    let patched = r.expect(200);
    assert_eq!(
        (patched["name"].as_str(), patched["email"].as_str()),
        (Some("Ada King"), None)
    );
    assert_eq!(patched["attributes"], json!({}));
    let sealed: (Bytes, Bytes, Bytes) =
        sqlx::query_as("SELECT name_sealed, email_sealed, email_index FROM customers WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(sealed.0.is_some() && sealed.1.is_none() && sealed.2.is_none());
}

#[tokio::test]
async fn search_finds_an_exact_email_and_sorting_by_name_is_refused_with_the_reason() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let id = create(&app, &admin.access, "ada-2").await;
    let found = |q: &str| format!("/api/v1/customers?q={}", urlencoding(q));
    for q in [EMAIL, "ADA.Lovelace@Example.COM", "da-2"] {
        let r = app.get(&found(q), Some(&admin.access)).await;
        let ids: Vec<&str> = r.expect(200)["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec![id.as_str()], "{q}");
    }
    // Lost with the plaintext (README, API.md): substrings of names and emails.
    for q in ["Lovelace", "ada.lovelace"] {
        let r = app.get(&found(q), Some(&admin.access)).await;
        assert_eq!(r.expect(200)["data"].as_array().unwrap().len(), 0, "{q}");
    }
    let r = app.get("/api/v1/customers?sort=name", Some(&admin.access)).await;
    let body = r.expect_error(400, "validation_failed");
    assert!(body.to_string().contains("encrypted"), "{body}");
}

fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn a_ciphertext_moved_to_another_row_fails_loudly() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let a = create(&app, &admin.access, "ada-3").await;
    let b = app.customer(&admin.access, "bob-3", None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    sqlx::query(
        "UPDATE customers SET email_sealed = (SELECT email_sealed FROM customers WHERE id = $1::uuid) WHERE id = $2::uuid",
    )
    .bind(&a)
    .bind(&b)
    .execute(&app.pool)
    .await
    .unwrap();
    let r = app
        .get(&format!("/api/v1/customers/{b}"), Some(&admin.access))
        .await;
    r.expect_error(500, "internal");
    // The row it came from still reads.
    app.get(&format!("/api/v1/customers/{a}"), Some(&admin.access))
        .await
        .expect(200);
}

#[tokio::test]
async fn rows_from_before_sealing_are_sealed_at_start_and_a_wrong_key_refuses_the_start() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    // Written as an earlier version did: plaintext columns.
    sqlx::query(
        "INSERT INTO customers (organization_id, external_id, name, email, attributes)
         VALUES ($1, 'old-1', $2, $3, jsonb_build_object('plan', $4::text))",
    )
    .bind(org.id.as_uuid())
    .bind(NAME)
    .bind(EMAIL)
    .bind(PLAN)
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(plaintext_rows(&app).await, 1);
    let next = start(with_keys(&app, app.config.data_key.unwrap(), None)).await;
    assert_eq!(plaintext_rows(&app).await, 0, "sealed at start");
    let admin = next.admin(&org).await;
    let r = next.get("/api/v1/customers?q=old-1", Some(&admin.access)).await;
    let row = &r.expect(200)["data"][0];
    assert_eq!(
        (row["name"].as_str(), row["email"].as_str()),
        (Some(NAME), Some(EMAIL))
    );
    assert_eq!(row["attributes"]["plan"], PLAN);

    let refused = insights::App::build(with_keys(&app, [9; 32], None)).await;
    let error = format!("{:#}", refused.err().expect("a wrong key refuses the start"));
    assert!(
        error.contains("INSIGHTS_DATA_KEY_PREVIOUS") && error.contains("sealed with data key"),
        "{error}"
    );
}

#[tokio::test]
async fn rotate_data_key_re_seals_everything_resumably_and_retires_the_old_key() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    for i in 0..7 {
        create(&app, &admin.access, &format!("rot-{i}")).await;
    }
    let old = app.config.data_key.unwrap();
    let new: [u8; 32] = rand::random();
    let b64 = base64::engine::general_purpose::STANDARD;
    let rotate = |batch: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_insights"))
            .args(["rotate-data-key", "--batch", batch])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &app.db_url)
            .env("INSIGHTS_DATA_KEY", b64.encode(new))
            .env("INSIGHTS_DATA_KEY_PREVIOUS", b64.encode(old))
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap()
    };
    // A node with both keys serves throughout.
    let both = start(with_keys(&app, new, Some(old))).await;
    let out = rotate("3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(
        progress.contains("re-encrypted 3 of 7") && progress.contains("re-encrypted 7 of 7"),
        "{progress}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("7 customers re-encrypted"));
    let new_id = insights::store::fields::key_id(&new).to_vec();
    let stale: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM customers WHERE substring(name_sealed FROM 2 FOR 4) <> $1
            OR substring(email_sealed FROM 2 FOR 4) <> $1 OR substring(attributes_sealed FROM 2 FOR 4) <> $1",
    )
    .bind(&new_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(stale, 0);
    let s = both.admin(&org).await;
    let r = both
        .get(&format!("/api/v1/customers?q={EMAIL}"), Some(&s.access))
        .await;
    assert_eq!(
        r.expect(200)["data"].as_array().unwrap().len(),
        7,
        "the blind index follows the key"
    );
    // Again: nothing left to do.
    let out = rotate("3");
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 customers re-encrypted"));
    // The new key alone serves; the old one alone no longer starts.
    let alone = start(with_keys(&app, new, None)).await;
    let s = alone.admin(&org).await;
    let r = alone.get("/api/v1/customers?q=rot-1", Some(&s.access)).await;
    assert_eq!(r.expect(200)["data"][0]["name"], NAME);
    assert!(insights::App::build(with_keys(&app, old, None)).await.is_err());
}
