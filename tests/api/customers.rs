use insights::domain::Role;
use reqwest::Method;
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn customers_are_created_read_listed_and_updated() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let created = app
        .post(
            "/api/v1/customers",
            Some(&admin.access),
            json!({"externalId": " c-42 ", "name": "Ada", "email": "Ada@Example.com", "segment": "enterprise", "attributes": {"plan": "gold"}}),
        )
        .await
        .expect(201)
        .clone();
    assert_eq!(created["externalId"], "c-42");
    assert_eq!(created["email"], "ada@example.com");
    assert_eq!(created["interactionCount"], 0);
    assert!(created["averageSentiment"].is_null());
    assert!(created["lastSeenAt"].is_null());
    assert_eq!(created["attributes"]["plan"], "gold");
    let id = created["id"].as_str().unwrap();

    let profile = app
        .get(&format!("/api/v1/customers/{id}"), Some(&admin.access))
        .await
        .expect(200)
        .clone();
    assert_eq!(profile["segment"], "enterprise");
    assert_eq!(profile["patterns"], json!([]));

    let dup = app
        .post(
            "/api/v1/customers",
            Some(&admin.access),
            json!({"externalId": "c-42"}),
        )
        .await;
    assert!(
        dup.expect_error(409, "conflict")["error"]["message"]
            .as_str()
            .unwrap()
            .contains("externalId")
    );

    let updated = app
        .call(
            Method::PATCH,
            &format!("/api/v1/customers/{id}"),
            Some(&admin.access),
            Some(json!({"segment": null, "name": "Ada L."})),
        )
        .await
        .expect(200)
        .clone();
    assert!(updated["segment"].is_null(), "null clears a field");
    assert_eq!(updated["name"], "Ada L.");
    assert_eq!(updated["email"], "ada@example.com", "absent fields stay");
    let bad = app
        .call(
            Method::PATCH,
            &format!("/api/v1/customers/{id}"),
            Some(&admin.access),
            Some(json!({"interactionCount": 5, "email": "x"})),
        )
        .await;
    assert_eq!(
        bad.expect_error(400, "validation_failed")["error"]["details"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn customer_input_is_validated_field_by_field() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let r = app
        .post(
            "/api/v1/customers",
            Some(&admin.access),
            json!({"email": "nope", "segment": "", "attributes": [1]}),
        )
        .await;
    let details = r.expect_error(400, "validation_failed")["error"]["details"].clone();
    let fields: Vec<&str> = details
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["externalId", "email", "segment", "attributes"]);
}

#[tokio::test]
async fn listing_filters_sorts_and_pages() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    for (ext, segment) in [
        ("b-2", "smb"),
        ("a-1", "enterprise"),
        ("c-3", "smb"),
        ("d-4", "trial"),
    ] {
        app.customer(&admin.access, ext, Some(segment)).await;
    }
    let smb = app
        .get(
            "/api/v1/customers?segment=smb&sort=externalId&order=asc",
            Some(&admin.access),
        )
        .await
        .expect(200)
        .clone();
    let ids: Vec<&str> = smb["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["externalId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["b-2", "c-3"]);
    assert_eq!(smb["pagination"]["total"], 2);
    assert!(
        smb["data"][0].get("patterns").is_none(),
        "patterns only in the single profile"
    );

    let q = app
        .get("/api/v1/customers?q=A-1", Some(&admin.access))
        .await
        .expect(200)
        .clone();
    assert_eq!(q["data"][0]["externalId"], "a-1", "q is case-insensitive");
    let percent = app
        .get("/api/v1/customers?q=%25", Some(&admin.access))
        .await
        .expect(200)
        .clone();
    assert_eq!(percent["pagination"]["total"], 0, "% matches literally");

    let page = app
        .get(
            "/api/v1/customers?sort=externalId&order=desc&page=2&pageSize=3",
            Some(&admin.access),
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(page["data"][0]["externalId"], "a-1");
    assert_eq!(
        page["pagination"],
        json!({"page": 2, "pageSize": 3, "total": 4, "totalRelation": "eq", "totalPages": 2})
    );
    let again = app
        .get(
            "/api/v1/customers?sort=externalId&order=desc&page=2&pageSize=3",
            Some(&admin.access),
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(page, again, "identical queries return identical pages");

    let bad = app
        .get(
            "/api/v1/customers?sort=age&order=up&pageSize=500",
            Some(&admin.access),
        )
        .await;
    assert_eq!(
        bad.expect_error(400, "validation_failed")["error"]["details"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test]
async fn viewers_read_analysts_and_keys_write() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let (_, viewer) = app.user_with_role(&admin, Role::Viewer).await;
    let (_, analyst) = app.user_with_role(&admin, Role::Analyst).await;
    app.post(
        "/api/v1/customers",
        Some(&viewer.access),
        json!({"externalId": "v"}),
    )
    .await
    .expect_error(403, "forbidden");
    let c = app.customer(&analyst.access, "by-analyst", None).await;
    app.get(
        &format!("/api/v1/customers/{}", c["id"].as_str().unwrap()),
        Some(&viewer.access),
    )
    .await
    .expect(200);
    let key = app
        .post("/api/v1/api-keys", Some(&admin.access), json!({"name": "k"}))
        .await
        .expect(201)["key"]
        .as_str()
        .unwrap()
        .to_owned();
    app.customer(&key, "by-key", None).await;
    app.get("/api/v1/customers", Some(&key))
        .await
        .expect_error(403, "forbidden");
}

#[tokio::test]
async fn another_organizations_customers_are_invisible() {
    let app = spawn_app().await;
    let a = app.create_org().await;
    let b = app.create_org().await;
    let admin_a = app.admin(&a).await;
    let admin_b = app.admin(&b).await;
    let c = app.customer(&admin_a.access, "shared-ext", None).await;
    let id = c["id"].as_str().unwrap();
    app.get(&format!("/api/v1/customers/{id}"), Some(&admin_b.access))
        .await
        .expect_error(404, "not_found");
    app.get(&format!("/api/v1/customers/{id}/patterns"), Some(&admin_b.access))
        .await
        .expect_error(404, "not_found");
    app.call(
        Method::PATCH,
        &format!("/api/v1/customers/{id}"),
        Some(&admin_b.access),
        Some(json!({"name": "x"})),
    )
    .await
    .expect_error(404, "not_found");
    assert_eq!(
        app.get("/api/v1/customers", Some(&admin_b.access))
            .await
            .expect(200)["pagination"]["total"],
        0
    );
    // The same external id is free in another organization.
    app.customer(&admin_b.access, "shared-ext", None).await;
}

#[tokio::test]
async fn patterns_are_served_highest_confidence_first() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let c = app.customer(&admin.access, "p", None).await;
    let id = uuid::Uuid::parse_str(c["id"].as_str().unwrap()).unwrap();
    for (kind, confidence) in [("engagement", 0.75), ("channel_frequency", 0.92)] {
        sqlx::query!(
            "INSERT INTO behavior_patterns (organization_id, customer_id, pattern_type, confidence, frequency, description, window_start, window_end)
             VALUES ($1, $2, $3, $4, 12, 'd', now() - interval '30 days', now())",
            org.id.as_uuid(),
            id,
            kind,
            confidence
        )
        .execute(&app.pool)
        .await
        .unwrap();
    }
    let list = app
        .get(&format!("/api/v1/customers/{id}/patterns"), Some(&admin.access))
        .await
        .expect(200)
        .clone();
    assert_eq!(list["data"][0]["patternType"], "channel_frequency");
    assert_eq!(list["data"][1]["patternType"], "engagement");
    let profile = app
        .get(&format!("/api/v1/customers/{id}"), Some(&admin.access))
        .await
        .expect(200)
        .clone();
    assert_eq!(profile["patterns"].as_array().unwrap().len(), 2);
}

/// PostgreSQL writes a jsonb number in full (`1.7976931348623157e308` comes back as 309 digits), which
/// serde_json reads exactly only with `float_roundtrip`; without it the profile answered 500.
#[tokio::test]
async fn attributes_with_extreme_numbers_read_back_as_sent() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let attributes = json!({"max": f64::MAX, "tiny": 5e-324, "big": 9007199254740993u64, "neg": -1.5e300});
    let created = app
        .post(
            "/api/v1/customers",
            Some(&admin.access),
            json!({"externalId": "x", "attributes": attributes}),
        )
        .await
        .expect(201)
        .clone();
    let id = created["id"].as_str().unwrap();
    let profile = app
        .get(&format!("/api/v1/customers/{id}"), Some(&admin.access))
        .await;
    assert_eq!(profile.expect(200)["attributes"], attributes);
    let listed = app.get("/api/v1/customers", Some(&admin.access)).await;
    assert_eq!(listed.expect(200)["data"][0]["attributes"], attributes);
}
