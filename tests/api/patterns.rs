use std::time::Duration;

use serde_json::json;

use crate::helpers::{eventually, spawn_with};

#[tokio::test]
async fn patterns_are_detected_live_stored_and_announced() {
    let app = spawn_with(|c| c.ingest.pattern_debounce = Duration::from_millis(100)).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let cid = app.customer(&admin.access, "regular", None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Chat at 09:00 UTC on twelve weekdays of the last three weeks: a daily channel and a time habit.
    let now = chrono::Utc::now();
    let mut sent = 0;
    let mut day = 1;
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
        app.post("/api/v1/interactions", Some(&admin.access), body)
            .await
            .expect(201);
        sent += 1;
    }
    let found = eventually(Duration::from_secs(10), || async {
        let r = app
            .get(&format!("/api/v1/customers/{cid}/patterns"), Some(&admin.access))
            .await;
        // Detection runs again as interactions arrive; wait for the one that has seen all twelve.
        r.body["data"].as_array().is_some_and(|d| {
            d.iter()
                .any(|p| p["patternType"] == "temporal" && p["frequency"] == 12)
        })
    })
    .await;
    assert!(found, "patterns were detected and stored");
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
