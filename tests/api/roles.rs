use insights::domain::Role;
use reqwest::Method;
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn only_admins_manage_users_and_keys() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let (_, viewer) = app.user_with_role(&admin, Role::Viewer).await;
    let (_, analyst) = app.user_with_role(&admin, Role::Analyst).await;
    for s in [&viewer, &analyst] {
        app.get("/api/v1/users", Some(&s.access))
            .await
            .expect_error(403, "forbidden");
        app.post(
            "/api/v1/users",
            Some(&s.access),
            json!({"email": "x@example.com", "name": "X", "password": "long-enough", "role": "admin"}),
        )
        .await
        .expect_error(403, "forbidden");
        app.get("/api/v1/api-keys", Some(&s.access))
            .await
            .expect_error(403, "forbidden");
        app.post("/api/v1/api-keys", Some(&s.access), json!({"name": "k"}))
            .await
            .expect_error(403, "forbidden");
        // Everyone reads their own profile.
        app.get("/api/v1/me", Some(&s.access)).await.expect(200);
    }
    app.get("/api/v1/users", Some(&admin.access)).await.expect(200);
    // A forbidden request changes nothing.
    let count = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM users"#)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 3);
}

#[tokio::test]
async fn a_demoted_admin_loses_admin_rights_at_once() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let (second, second_session) = app.user_with_role(&admin, Role::Admin).await;
    app.get("/api/v1/users", Some(&second_session.access))
        .await
        .expect(200);
    let id = second["id"].as_str().unwrap();
    app.call(
        Method::PATCH,
        &format!("/api/v1/users/{id}"),
        Some(&admin.access),
        Some(json!({"role": "viewer"})),
    )
    .await
    .expect(200);
    // The old token is revoked; after logging in again the user is a viewer.
    app.get("/api/v1/users", Some(&second_session.access))
        .await
        .expect_error(401, "unauthenticated");
    let again = app
        .login(second["email"].as_str().unwrap(), "a-long-password")
        .await;
    assert_eq!(again.body["user"]["role"], "viewer");
    app.get("/api/v1/users", Some(&again.access))
        .await
        .expect_error(403, "forbidden");
}

#[tokio::test]
async fn another_organizations_resources_are_404_never_403() {
    let app = spawn_app().await;
    let a = app.create_org().await;
    let b = app.create_org().await;
    let admin_a = app.admin(&a).await;
    let admin_b = app.admin(&b).await;
    let (user_a, _) = app.user_with_role(&admin_a, Role::Viewer).await;
    let key_a = app
        .post("/api/v1/api-keys", Some(&admin_a.access), json!({"name": "a"}))
        .await
        .expect(201)
        .clone();
    let uid = user_a["id"].as_str().unwrap();
    let kid = key_a["id"].as_str().unwrap();

    app.get(&format!("/api/v1/users/{uid}"), Some(&admin_b.access))
        .await
        .expect_error(404, "not_found");
    app.call(
        Method::PATCH,
        &format!("/api/v1/users/{uid}"),
        Some(&admin_b.access),
        Some(json!({"name": "Hacked"})),
    )
    .await
    .expect_error(404, "not_found");
    app.call(
        Method::DELETE,
        &format!("/api/v1/users/{uid}"),
        Some(&admin_b.access),
        None,
    )
    .await
    .expect_error(404, "not_found");
    app.call(
        Method::DELETE,
        &format!("/api/v1/api-keys/{kid}"),
        Some(&admin_b.access),
        None,
    )
    .await
    .expect_error(404, "not_found");
    let list = app
        .get("/api/v1/users", Some(&admin_b.access))
        .await
        .expect(200)
        .clone();
    assert_eq!(list["pagination"]["total"], 1, "B sees only its own admin");
    assert!(
        app.get("/api/v1/api-keys", Some(&admin_b.access))
            .await
            .expect(200)["data"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Nothing of A changed.
    let name = sqlx::query_scalar!(
        "SELECT name FROM users WHERE id = $1",
        uuid::Uuid::parse_str(uid).unwrap()
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(name, "Some One");
    app.get(&format!("/api/v1/users/{uid}"), Some(&admin_a.access))
        .await
        .expect(200);
}
