use std::time::Duration;

use serde_json::json;

use crate::helpers::{eventually, spawn_with};

#[tokio::test]
async fn patterns_are_detected_live_stored_and_announced() {
    let app = spawn_with(|c| c.ingest.pattern_debounce = Duration::from_millis(100)).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    // Chat at 09:00 UTC on twelve weekdays of the last three weeks: a daily channel and a time habit.
    let cid = regular_customer(&app, &admin.access, "regular").await;
    let patterns = app
        .get(&format!("/api/v1/customers/{cid}/patterns"), Some(&admin.access))
        .await
        .expect(200)
        .clone();
    let list = patterns["data"].as_array().unwrap();
    let temporal = list.iter().find(|p| p["patternType"] == "temporal").unwrap();
    assert_eq!(temporal["frequency"], 12);
    assert_eq!(
        temporal["description"],
        "Mostly weekday mornings (12 of 12 interactions, UTC)"
    );
    for p in list {
        let c = p["confidence"].as_f64().unwrap();
        assert!((0.7..=1.0).contains(&c), "{p}");
    }
    let confidences: Vec<f64> = list.iter().map(|p| p["confidence"].as_f64().unwrap()).collect();
    assert!(
        confidences.windows(2).all(|w| w[0] >= w[1]),
        "highest confidence first"
    );
    let profile = app
        .get(&format!("/api/v1/customers/{cid}"), Some(&admin.access))
        .await
        .expect(200)
        .clone();
    assert_eq!(profile["patterns"].as_array().unwrap().len(), list.len());
    let events = app.events_after(org.id, 0).await;
    assert!(
        events.events.iter().any(|e| e.kind == "pattern.detected"),
        "pattern.detected was published"
    );
}

/// A node that detects patterns 100 ms after new interactions, passivates customers idle for 300 ms and
/// sweeps for old patterns every `sweep`.
async fn pattern_node(sweep: Duration) -> crate::helpers::TestApp {
    spawn_with(|c| {
        c.ingest.pattern_debounce = Duration::from_millis(100);
        c.ingest.passivate_after = Duration::from_millis(300);
        c.ingest.pattern_sweep_interval = sweep;
    })
    .await
}

/// A customer who chatted at 09:00 UTC on twelve weekdays of the last three weeks, with its patterns
/// detected and stored.
async fn regular_customer(app: &crate::helpers::TestApp, token: &str, name: &str) -> String {
    let cid = app.customer(token, name, None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let now = chrono::Utc::now();
    let (mut sent, mut day) = (0, 1);
    while sent < 12 {
        let at = (now - chrono::Duration::days(day))
            .date_naive()
            .and_hms_opt(9, 0, 0)
            .unwrap()
            .and_utc();
        day += 1;
        if chrono::Datelike::weekday(&at).number_from_monday() > 5 {
            continue;
        }
        let body = json!({"customerId": cid, "channel": "chat", "eventType": "message", "content": "hello", "timestamp": at.to_rfc3339()});
        app.post("/api/v1/interactions", Some(token), body)
            .await
            .expect(201);
        sent += 1;
    }
    let stored = eventually(Duration::from_secs(10), || async {
        stored_patterns(app, &cid)
            .await
            .iter()
            .any(|p| p.0 == "temporal" && p.2 == 12)
    })
    .await;
    assert!(stored, "{name}'s patterns were detected");
    cid
}

/// The stored patterns of a customer: type, confidence, frequency, description.
async fn stored_patterns(app: &crate::helpers::TestApp, cid: &str) -> Vec<(String, f64, i32, String)> {
    sqlx::query_as(
        "SELECT pattern_type, confidence, frequency, description FROM behavior_patterns
          WHERE customer_id = $1::uuid ORDER BY pattern_type",
    )
    .bind(cid)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// The customer stopped coming: its interactions are moved 40 days back (as if that time had passed),
/// and its stored patterns are made two days old. Its actor is passivated first, as an idle one is.
async fn lapse(app: &crate::helpers::TestApp, org: insights::domain::OrganizationId, cid: &str) {
    let router = app.app.as_ref().unwrap().state().router.clone();
    let idle = eventually(Duration::from_secs(10), || async {
        router.live_customers(org).await.unwrap() == 0
    })
    .await;
    assert!(idle, "the customer actors were passivated");
    sqlx::query(
        "UPDATE customer_interactions SET occurred_at = occurred_at - interval '40 days' WHERE customer_id = $1::uuid",
    )
    .bind(cid)
    .execute(&app.pool)
    .await
    .unwrap();
}

async fn age_patterns(app: &crate::helpers::TestApp) {
    sqlx::query("UPDATE behavior_patterns SET detected_at = now() - interval '2 days'")
        .execute(&app.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_read_of_old_patterns_shows_what_holds_now() {
    let app = pattern_node(Duration::from_secs(3600)).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let lapsed = regular_customer(&app, &admin.access, "lapsed").await;
    let steady = regular_customer(&app, &admin.access, "steady").await;
    lapse(&app, org.id, &lapsed).await;
    // Stored patterns younger than the age are served as stored.
    let r = app
        .get(
            &format!("/api/v1/customers/{lapsed}/patterns"),
            Some(&admin.access),
        )
        .await;
    assert!(
        !r.expect(200)["data"].as_array().unwrap().is_empty(),
        "young patterns are served as stored"
    );
    age_patterns(&app).await;
    let r = app
        .get(
            &format!("/api/v1/customers/{lapsed}/patterns"),
            Some(&admin.access),
        )
        .await;
    assert_eq!(
        r.expect(200)["data"],
        json!([]),
        "nothing holds for a customer gone 40 days"
    );
    let profile = app
        .get(&format!("/api/v1/customers/{lapsed}"), Some(&admin.access))
        .await;
    assert_eq!(profile.expect(200)["patterns"], json!([]));
    // The steady customer's old patterns still hold: detected afresh, the same.
    let before = stored_patterns(&app, &steady).await;
    let r = app
        .get(
            &format!("/api/v1/customers/{steady}/patterns"),
            Some(&admin.access),
        )
        .await;
    let served: Vec<(String, i32)> = r.expect(200)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["patternType"].as_str().unwrap().to_owned(),
                p["frequency"].as_i64().unwrap() as i32,
            )
        })
        .collect();
    let mut expected: Vec<(String, i32)> = before.iter().map(|p| (p.0.clone(), p.2)).collect();
    let mut got = served.clone();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "what still holds is shown as before");
}

#[tokio::test]
async fn the_sweep_clears_what_no_longer_holds_and_keeps_what_does_across_passivation() {
    let app = pattern_node(Duration::from_millis(200)).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let lapsed = regular_customer(&app, &admin.access, "lapsed").await;
    let steady = regular_customer(&app, &admin.access, "steady").await;
    let steady_before = stored_patterns(&app, &steady).await;
    lapse(&app, org.id, &lapsed).await;
    age_patterns(&app).await;
    // Nobody reads and nothing arrives: the organization's sweep re-evaluates both from PostgreSQL.
    let swept = eventually(Duration::from_secs(10), || async {
        let fresh: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM behavior_patterns WHERE detected_at > now() - interval '1 hour'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        stored_patterns(&app, &lapsed).await.is_empty() && fresh == steady_before.len() as i64
    })
    .await;
    assert!(
        swept,
        "the lapsed customer's patterns went, the steady one's were re-detected"
    );
    assert_eq!(
        stored_patterns(&app, &steady).await,
        steady_before,
        "a window rebuilt from PostgreSQL after passivation finds exactly what the live actor found"
    );
}

#[tokio::test]
async fn an_empty_detection_after_a_restart_replaces_what_was_stored() {
    let app = pattern_node(Duration::from_secs(3600)).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let cid = regular_customer(&app, &admin.access, "returning").await;
    lapse(&app, org.id, &cid).await;
    // One new interaction: the actor starts again from PostgreSQL, detects, and finds nothing.
    app.post(
        "/api/v1/interactions",
        Some(&admin.access),
        crate::helpers::interaction(&cid, "web", None),
    )
    .await
    .expect(201);
    let cleared = eventually(Duration::from_secs(10), || async {
        stored_patterns(&app, &cid).await.is_empty()
    })
    .await;
    assert!(
        cleared,
        "an empty result replaced the stored set: {:?}",
        stored_patterns(&app, &cid).await
    );
}
