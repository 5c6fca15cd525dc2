use reqwest::Method;
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn keys_are_shown_once_stored_hashed_and_ingest_only() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let created = app
        .post(
            "/api/v1/api-keys",
            Some(&admin.access),
            json!({"name": "Web tracker"}),
        )
        .await
        .expect(201)
        .clone();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("ik_") && key.len() > 40);
    assert_eq!(created["prefix"], &key[..10]);

    let list = app
        .get("/api/v1/api-keys", Some(&admin.access))
        .await
        .expect(200)
        .clone();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(&key), "the key is never shown again");
    assert_eq!(list["data"][0]["name"], "Web tracker");

    let stored: Vec<u8> = sqlx::query_scalar!("SELECT key_hash FROM api_keys")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, insights::auth::digest(&key));
    let dump = sqlx::query_scalar!(r#"SELECT row_to_json(k)::text AS "t!" FROM api_keys k"#)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(!dump.contains(&key[3..]), "no plaintext key in the database");

    // A key authenticates, but may not act as a user.
    app.get("/api/v1/me", Some(&key))
        .await
        .expect_error(403, "forbidden");
    app.get("/api/v1/users", Some(&key))
        .await
        .expect_error(403, "forbidden");
    app.post("/api/v1/api-keys", Some(&key), json!({"name": "escalate"}))
        .await
        .expect_error(403, "forbidden");
    app.get("/api/v1/me", Some("ik_not-a-real-key"))
        .await
        .expect_error(401, "unauthenticated");

    let id = created["id"].as_str().unwrap();
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/api-keys/{id}"),
            Some(&admin.access),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    app.get("/api/v1/me", Some(&key))
        .await
        .expect_error(401, "unauthenticated");
    app.call(
        Method::DELETE,
        &format!("/api/v1/api-keys/{id}"),
        Some(&admin.access),
        None,
    )
    .await
    .expect_error(404, "not_found");
}

#[tokio::test]
async fn key_names_are_validated() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let r = app
        .post("/api/v1/api-keys", Some(&admin.access), json!({"name": "   "}))
        .await;
    assert_eq!(
        r.expect_error(400, "validation_failed")["error"]["details"][0]["field"],
        "name"
    );
    app.post("/api/v1/api-keys", Some(&admin.access), json!({"name": 5}))
        .await
        .expect_error(400, "validation_failed");
}
