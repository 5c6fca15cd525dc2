//! The demo's data: generated once, reused by a second run, logins for every role, and the live trickle
//! going through the real ingestion path.

use std::time::Duration;

use insights::demo::{DemoOptions, prepare, trickle};
use serde_json::json;

use crate::helpers::{eventually, spawn_app};

#[tokio::test]
async fn the_demo_generates_once_reuses_its_data_and_keeps_moving() {
    let app = spawn_app().await;
    let opts = DemoOptions {
        interactions: 1_500,
        customers: 300,
        trickle: Duration::from_millis(20),
        ..DemoOptions::default()
    };
    let count = |table: &'static str| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let (org, logins) = prepare(&app.pool, &app.config, &opts).await.unwrap();
    assert_eq!(count("customer_interactions").await, 1_500);
    assert_eq!(count("customers").await, 300);
    let counted: i64 = sqlx::query_scalar("SELECT sum(interaction_count)::bigint FROM customers")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        counted, 1_500,
        "the customers' counters agree with their interactions"
    );
    let mut roles = Vec::new();
    for (email, password, _) in &logins.0 {
        let session = app.login(email, password).await;
        roles.push(session.body["user"]["role"].as_str().unwrap().to_owned());
    }
    assert_eq!(roles, ["admin", "analyst", "viewer"]);

    // A second run finds everything and stores nothing twice; passwords are new.
    let (again, new_logins) = prepare(&app.pool, &app.config, &opts).await.unwrap();
    assert_eq!(again, org);
    assert_eq!(count("customer_interactions").await, 1_500);
    assert_eq!(count("organizations").await, 1);
    let old = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": logins.0[1].0, "password": logins.0[1].1}),
        )
        .await;
    old.expect_error(401, "unauthenticated");
    app.login(&new_logins.0[1].0, &new_logins.0[1].1).await;

    // An interrupted first run is completed, not duplicated.
    sqlx::query(
        "DELETE FROM customer_interactions WHERE ctid IN (SELECT ctid FROM customer_interactions LIMIT 100)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    prepare(&app.pool, &app.config, &opts).await.unwrap();
    assert_eq!(count("customer_interactions").await, 1_500);

    // The trickle ingests through the actors: stored, counted and announced.
    let state = app.app.as_ref().unwrap().state().clone();
    let task = tokio::spawn(trickle(state, org, opts));
    assert!(
        eventually(Duration::from_secs(10), || async {
            count("customer_interactions").await >= 1_503
        })
        .await
    );
    // Each event is published right after its commit, so the count can be seen a moment before it.
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.events_after(org, 0).await.last_seq >= 3
        })
        .await,
        "live events for the dashboard"
    );
    task.abort();
}
