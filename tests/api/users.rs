use insights::domain::Role;
use reqwest::Method;
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn admins_create_list_get_update_and_delete_users() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let created = app
        .post(
            "/api/v1/users",
            Some(&admin.access),
            json!({"email": "  New.Person@Example.com ", "name": " New Person ", "password": "a-long-password", "role": "analyst"}),
        )
        .await;
    let user = created.expect(201).clone();
    assert_eq!(user["email"], "new.person@example.com", "emails are normalized");
    assert_eq!(user["name"], "New Person");
    assert_eq!(user["role"], "analyst");
    assert_eq!(user["organizationId"], org.id.to_string());
    assert!(user.get("password").is_none() && user.get("passwordHash").is_none());
    let id = user["id"].as_str().unwrap();

    let got = app
        .get(&format!("/api/v1/users/{id}"), Some(&admin.access))
        .await
        .expect(200)
        .clone();
    assert_eq!(got["email"], "new.person@example.com");
    let list = app
        .get("/api/v1/users?page=1&pageSize=1", Some(&admin.access))
        .await
        .expect(200)
        .clone();
    assert_eq!(
        list["pagination"],
        json!({"page": 1, "pageSize": 1, "total": 2, "totalRelation": "eq", "totalPages": 2})
    );
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let page2 = app
        .get("/api/v1/users?page=2&pageSize=1", Some(&admin.access))
        .await
        .expect(200)
        .clone();
    assert_ne!(page2["data"][0]["id"], list["data"][0]["id"]);

    let before = got["updatedAt"].as_str().unwrap().to_owned();
    let updated = app
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            Some(&admin.access),
            Some(json!({"name": "Renamed"})),
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(updated["name"], "Renamed");
    assert_eq!(updated["role"], "analyst");
    assert_ne!(
        updated["updatedAt"].as_str().unwrap(),
        before,
        "updated_at moves on update"
    );

    app.call(
        Method::PATCH,
        &format!("/api/v1/users/{id}"),
        Some(&admin.access),
        Some(json!({"password": "another-password"})),
    )
    .await
    .expect(200);
    app.login("new.person@example.com", "another-password").await;

    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/users/{id}"),
            Some(&admin.access),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    app.get(&format!("/api/v1/users/{id}"), Some(&admin.access))
        .await
        .expect_error(404, "not_found");
    app.call(
        Method::DELETE,
        &format!("/api/v1/users/{id}"),
        Some(&admin.access),
        None,
    )
    .await
    .expect_error(404, "not_found");
}

#[tokio::test]
async fn user_input_is_validated_field_by_field() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let r = app
        .post(
            "/api/v1/users",
            Some(&admin.access),
            json!({"email": "nope", "name": "", "password": "short", "role": "root"}),
        )
        .await;
    let details = r.expect_error(400, "validation_failed")["error"]["details"].clone();
    let fields: Vec<&str> = details
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["email", "name", "password", "role"]);
    let r = app.post("/api/v1/users", Some(&admin.access), json!({})).await;
    assert_eq!(
        r.expect_error(400, "validation_failed")["error"]["details"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    let (user, _) = app.user_with_role(&admin, Role::Viewer).await;
    let id = user["id"].as_str().unwrap();
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            Some(&admin.access),
            Some(json!({"role": "boss", "email": "x@y.z"})),
        )
        .await;
    let details = r.expect_error(400, "validation_failed")["error"]["details"].clone();
    assert_eq!(details.as_array().unwrap().len(), 2, "{details}");
    let over = "x".repeat(73);
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            Some(&admin.access),
            Some(json!({"password": over})),
        )
        .await;
    assert!(
        r.expect_error(400, "validation_failed")["error"]["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains("72")
    );
    let count = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM users"#)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 2, "nothing was created by the bad requests");
}

#[tokio::test]
async fn emails_are_unique_across_the_platform() {
    let app = spawn_app().await;
    let a = app.create_org().await;
    let b = app.create_org().await;
    let admin_b = app.admin(&b).await;
    let r = app
        .post(
            "/api/v1/users",
            Some(&admin_b.access),
            json!({"email": a.admin_email.to_uppercase(), "name": "Dup", "password": "a-long-password", "role": "viewer"}),
        )
        .await;
    assert!(
        r.expect_error(409, "conflict")["error"]["message"]
            .as_str()
            .unwrap()
            .contains("email")
    );
}

#[tokio::test]
async fn the_last_admin_cannot_be_demoted_or_deleted() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let id = org.admin_id.to_string();
    app.call(
        Method::PATCH,
        &format!("/api/v1/users/{id}"),
        Some(&admin.access),
        Some(json!({"role": "analyst"})),
    )
    .await
    .expect_error(409, "conflict");
    app.call(
        Method::DELETE,
        &format!("/api/v1/users/{id}"),
        Some(&admin.access),
        None,
    )
    .await
    .expect_error(409, "conflict");
    // With a second admin, the first may step down.
    let (_, _second) = app.user_with_role(&admin, Role::Admin).await;
    app.call(
        Method::PATCH,
        &format!("/api/v1/users/{id}"),
        Some(&admin.access),
        Some(json!({"role": "analyst"})),
    )
    .await
    .expect(200);
}

#[tokio::test]
async fn paging_parameters_are_checked() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let r = app
        .get("/api/v1/users?pageSize=101&page=0", Some(&admin.access))
        .await;
    let details = r.expect_error(400, "validation_failed")["error"]["details"].clone();
    assert_eq!(details.as_array().unwrap().len(), 2);
    assert!(
        details.to_string().contains("100"),
        "the limit is named: {details}"
    );
    app.get("/api/v1/users?pageSize=abc", Some(&admin.access))
        .await
        .expect_error(400, "validation_failed");
}
