//! One owner per organization between two standalone nodes on one database (issue 13): the second node
//! answers 503 `owned_elsewhere` for an organization a live first node owns, takes it over only once the
//! first is gone, and a stale owner's write after a takeover is fenced (nothing stored).

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Session, TestApp, TestOrg, interaction, spawn_with};

async fn owners(app: &TestApp, org: insights::domain::OrganizationId) -> Vec<(i64, String, String)> {
    sqlx::query_as(
        "SELECT epoch, owner_node, reason FROM org_ownership_log WHERE organization_id = $1 ORDER BY epoch",
    )
    .bind(org.as_uuid())
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// An organization with an admin and a customer, made the node's own by a first ingest.
async fn owned_by(node: &TestApp) -> (TestOrg, Session, String) {
    let org = node.create_org().await;
    let admin = node.admin(&org).await;
    let customer: Value = node.customer(&admin.access, "c-1", None).await;
    let id = customer["id"].as_str().unwrap().to_owned();
    node.post(
        "/api/v1/interactions",
        Some(&admin.access),
        interaction(&id, "web", None),
    )
    .await
    .expect(201);
    (org, admin, id)
}

#[tokio::test]
async fn a_second_node_never_becomes_a_second_owner() {
    let mut a = spawn_with(|_| {}).await;
    let b = a.second_node().await;
    let (org, admin, id) = owned_by(&a).await;
    let refused = b
        .post(
            "/api/v1/interactions",
            Some(&admin.access),
            interaction(&id, "web", None),
        )
        .await;
    refused.expect_error(503, "owned_elsewhere");
    assert!(refused.headers.contains_key("retry-after"));
    let batch = serde_json::json!({"interactions": [interaction(&id, "web", None)]});
    b.post("/api/v1/interactions/batch", Some(&admin.access), batch.clone())
        .await
        .expect_error(503, "owned_elsewhere");
    assert_eq!(
        a.stored_interactions().await,
        1,
        "nothing stored by the non-owner"
    );

    // The owner stops: its leases end with it, and the other node takes over at once.
    a.app.take().unwrap().shutdown().await.unwrap();
    b.post(
        "/api/v1/interactions",
        Some(&admin.access),
        interaction(&id, "web", None),
    )
    .await
    .expect(201);
    b.post("/api/v1/interactions/batch", Some(&admin.access), batch)
        .await
        .expect(200);
    let log = owners(&b, org.id).await;
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!((log[0].0, log[0].2.as_str()), (1, "first"));
    assert_eq!(
        (log[1].0, log[1].1.as_str(), log[1].2.as_str()),
        (2, b.config.node_name.as_str(), "takeover")
    );
    let counted: i64 = sqlx::query_scalar("SELECT interaction_count FROM customers WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&b.pool)
        .await
        .unwrap();
    assert_eq!(counted, 3, "the counter equals the rows");
    assert_eq!(b.stored_interactions().await, 3);
}

#[tokio::test]
async fn a_stale_owners_write_after_a_takeover_is_fenced() {
    // Slow heartbeats, so the test can age the first node's lease itself.
    let a = spawn_with(|c| {
        c.cluster.lease_ttl = Duration::from_secs(120);
        c.cluster.heartbeat = Duration::from_secs(60);
    })
    .await;
    let b = a.second_node().await;
    let (org, admin, id) = owned_by(&a).await;
    // The first node looks dead to the database (its heartbeat is old), so the second takes over.
    sqlx::query("UPDATE cluster_nodes SET heartbeat_at = now() - interval '10 minutes' WHERE name = $1")
        .bind(&a.config.node_name)
        .execute(&a.pool)
        .await
        .unwrap();
    b.post(
        "/api/v1/interactions",
        Some(&admin.access),
        interaction(&id, "chat", Some("hello")),
    )
    .await
    .expect(201);
    // The first node's actor still runs at epoch 1: its write rolls back.
    let stale = a
        .post(
            "/api/v1/interactions",
            Some(&admin.access),
            interaction(&id, "web", None),
        )
        .await;
    stale.expect_error(503, "owned_elsewhere");
    assert_eq!(
        a.stored_interactions().await,
        2,
        "the fenced write stored nothing"
    );
    let log = owners(&a, org.id).await;
    assert_eq!(
        log.iter().map(|l| l.2.as_str()).collect::<Vec<_>>(),
        ["first", "takeover"]
    );
}

#[tokio::test]
async fn the_scoring_sweep_leaves_a_live_other_owners_rows_alone() {
    let a = spawn_with(|_| {}).await;
    let org = a.create_org().await;
    let admin = a.admin(&org).await;
    let customer: Value = a.customer(&admin.access, "c-1", None).await;
    let id = customer["id"].as_str().unwrap().to_owned();
    // The model is off in tests, so the row stays unscored.
    a.post(
        "/api/v1/interactions",
        Some(&admin.access),
        interaction(&id, "chat", Some("so slow")),
    )
    .await
    .expect(201);
    let ttl = a.config.cluster.lease_ttl;
    let unscored = |node: String| {
        let pool = a.pool.clone();
        async move {
            insights::store::scores::unscored(&pool, None, 100, &node, ttl)
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(
        unscored(a.config.node_name.clone()).await,
        1,
        "the owner sweeps its rows"
    );
    assert_eq!(
        unscored("another-node".into()).await,
        0,
        "another node leaves them to the live owner"
    );
    a.app.as_ref().unwrap().state().router.ownership().stop().await;
    assert_eq!(
        unscored("another-node".into()).await,
        1,
        "a stopped owner's rows are anyone's"
    );
}

#[tokio::test]
async fn requests_that_arrive_while_the_organization_actor_starts_reach_that_one_actor() {
    let app = spawn_with(|_| {}).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let customer: Value = app.customer(&admin.access, "c-1", None).await;
    let id = customer["id"].as_str().unwrap().to_owned();
    // The organization's actor reserves its event numbers in its post_start: holding the row makes
    // that reservation wait, so the requests below all arrive while the actor is starting.
    let mut hold = app.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM organizations WHERE id = $1 FOR UPDATE")
        .bind(org.id.as_uuid())
        .execute(&mut *hold)
        .await
        .unwrap();
    let sends = (0..4).map(|_| {
        app.post(
            "/api/v1/interactions",
            Some(&admin.access),
            interaction(&id, "web", None),
        )
    });
    let released = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        hold.rollback().await.unwrap();
    };
    let (replies, ()) = tokio::join!(futures_util::future::join_all(sends), released);
    for r in replies {
        r.expect(201);
    }
    // One actor, one reservation of numbers: a second actor would have reserved a second block.
    let reserved: i64 = sqlx::query_scalar("SELECT event_seq_reserved FROM organizations WHERE id = $1")
        .bind(org.id.as_uuid())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        reserved as u64, app.config.ingest.event_seq_block,
        "one organization actor started"
    );
}
