use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{interaction, spawn_app, spawn_with};

fn batch(items: Vec<Value>) -> Value {
    json!({ "interactions": items })
}

#[tokio::test]
async fn a_batch_reports_each_item_and_stores_in_transactions_of_100() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let mut ids = Vec::new();
    for (ext, segment) in [("a", "smb"), ("b", "smb"), ("c", "enterprise")] {
        ids.push(
            app.customer(&admin.access, ext, Some(segment)).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let mut items: Vec<Value> = (0..250)
        .map(|i| interaction(&ids[i % 3], "chat", Some(&format!("message {i}"))))
        .collect();
    items[5]["channel"] = json!("fax");
    items[7]["customerId"] = json!(uuid::Uuid::new_v4().to_string());
    let r = app
        .post("/api/v1/interactions/batch", Some(&admin.access), batch(items))
        .await;
    let body = r.expect(200).clone();
    assert_eq!(body["succeeded"], 248);
    assert_eq!(body["created"], 248);
    assert_eq!(body["failed"], 2);
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 250);
    assert!(results.iter().enumerate().all(|(i, r)| r["index"] == i));
    assert_eq!(results[5]["status"], "failed");
    assert_eq!(results[5]["errors"][0]["field"], "channel");
    assert_eq!(results[7]["status"], "failed");
    assert_eq!(results[7]["errors"][0]["message"], "customer not found");
    assert_eq!(results[0]["status"], "created");
    assert!(results[0]["id"].is_string());

    assert_eq!(app.stored_interactions().await, 248);
    // Rows committed together share a transaction id: 248 valid rows make chunks of 100, 100 and 48.
    let transactions = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM (SELECT xmin::text FROM customer_interactions GROUP BY xmin::text) t"#
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(transactions, 3);
    let total: i64 = sqlx::query_scalar!(r#"SELECT sum(interaction_count)::bigint AS "n!" FROM customers"#)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(total, 248, "customer counters match the stored rows");
    let ok = crate::helpers::eventually(Duration::from_secs(5), || async {
        app.events_after(org.id, 0).await.last_seq == 248
    })
    .await;
    assert!(ok, "every created row was published");
}

#[tokio::test]
async fn duplicates_in_and_across_batches_are_reported_with_the_first_id() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let cid = app.customer(&admin.access, "d", None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut single = interaction(&cid, "web", None);
    single["idempotencyKey"] = json!("seen");
    let first = app
        .post("/api/v1/interactions", Some(&admin.access), single.clone())
        .await
        .expect(201)
        .clone();
    let mut a = interaction(&cid, "web", None);
    a["idempotencyKey"] = json!("twice");
    let body = app
        .post(
            "/api/v1/interactions/batch",
            Some(&admin.access),
            batch(vec![single, a.clone(), a]),
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(body["created"], 1);
    assert_eq!(body["duplicates"], 2);
    assert_eq!(body["succeeded"], 3);
    assert_eq!(body["results"][0]["status"], "duplicate");
    assert_eq!(body["results"][0]["id"], first["id"]);
    assert_eq!(body["results"][2]["id"], body["results"][1]["id"]);
    assert_eq!(app.stored_interactions().await, 2);
    let profile = app
        .get(&format!("/api/v1/customers/{cid}"), Some(&admin.access))
        .await
        .expect(200)
        .clone();
    assert_eq!(profile["interactionCount"], 2);
}

#[tokio::test]
async fn a_failed_transaction_rolls_back_only_its_own_chunk() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let cid = app.customer(&admin.access, "r", None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A constraint the validation does not know about: the database refuses one row of the second chunk.
    app.sql("ALTER TABLE customer_interactions ADD CONSTRAINT test_no_poison CHECK (content IS DISTINCT FROM 'poison')").await;
    let mut items: Vec<Value> = (0..250)
        .map(|i| interaction(&cid, "email", Some(&format!("mail {i}"))))
        .collect();
    items[150]["content"] = json!("poison");
    let body = app
        .post("/api/v1/interactions/batch", Some(&admin.access), batch(items))
        .await
        .expect(200)
        .clone();
    assert_eq!(body["created"], 150);
    assert_eq!(body["failed"], 100);
    let results = body["results"].as_array().unwrap();
    for (i, r) in results.iter().enumerate() {
        let expected = if (100..200).contains(&i) {
            "failed"
        } else {
            "created"
        };
        assert_eq!(r["status"], expected, "item {i}");
    }
    let reason = results[120]["errors"][0]["message"].as_str().unwrap();
    assert!(
        reason.contains("test_no_poison") && reason.contains("no item of the chunk was stored"),
        "{reason}"
    );
    assert_eq!(
        app.stored_interactions().await,
        150,
        "no partial rows of the failed chunk"
    );
    let stored_second_chunk = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM customer_interactions WHERE content IN ('mail 100', 'mail 149', 'mail 199')"#
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored_second_chunk, 0);
    let profile = app
        .get(&format!("/api/v1/customers/{cid}"), Some(&admin.access))
        .await
        .expect(200)
        .clone();
    assert_eq!(
        profile["interactionCount"], 150,
        "counters reflect only committed chunks"
    );
}

#[tokio::test]
async fn batch_shape_and_size_are_checked() {
    let app = spawn_with(|c| c.http.batch_body_limit_bytes = 64 * 1024).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    app.post("/api/v1/interactions/batch", Some(&admin.access), json!({}))
        .await
        .expect_error(400, "validation_failed");
    app.post("/api/v1/interactions/batch", Some(&admin.access), batch(vec![]))
        .await
        .expect_error(400, "validation_failed");
    let too_many: Vec<Value> = (0..1001).map(|_| json!({})).collect();
    let r = app
        .post("/api/v1/interactions/batch", Some(&admin.access), batch(too_many))
        .await;
    assert!(
        r.expect_error(400, "validation_failed")
            .to_string()
            .contains("1 to 1000")
    );
    let big: Vec<Value> = (0..10).map(|_| json!({"content": "x".repeat(10_000)})).collect();
    app.post("/api/v1/interactions/batch", Some(&admin.access), batch(big))
        .await
        .expect_error(413, "payload_too_large");
}

#[tokio::test]
async fn another_organizations_customers_fail_item_by_item() {
    let app = spawn_app().await;
    let a = app.create_org().await;
    let b = app.create_org().await;
    let admin_a = app.admin(&a).await;
    let admin_b = app.admin(&b).await;
    let theirs = app.customer(&admin_a.access, "x", None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mine = app.customer(&admin_b.access, "y", None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = app
        .post(
            "/api/v1/interactions/batch",
            Some(&admin_b.access),
            batch(vec![
                interaction(&theirs, "web", None),
                interaction(&mine, "web", None),
            ]),
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(body["results"][0]["errors"][0]["message"], "customer not found");
    assert_eq!(body["results"][1]["status"], "created");
    let theirs_rows = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM customer_interactions WHERE customer_id = $1"#,
        uuid::Uuid::parse_str(&theirs).unwrap()
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(theirs_rows, 0);
}

#[tokio::test]
async fn batches_do_not_block_single_ingestion() {
    // The main pool has two connections and a short wait; batches write through their own single
    // connection. If batches shared the main pool, singles would queue behind them and time out (503).
    let app = spawn_with(|c| {
        c.db.max_connections = 2;
        c.db.acquire_timeout = Duration::from_millis(750);
        c.ingest.batch_pool_connections = 1;
    })
    .await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let cid = app.customer(&admin.access, "mixed", None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut batches = Vec::new();
    for _ in 0..4 {
        let items: Vec<Value> = (0..1000)
            .map(|i| interaction(&cid, "chat", Some(&format!("bulk {i}"))))
            .collect();
        let (client, base, token) = (app.client.clone(), app.base.clone(), admin.access.clone());
        batches.push(tokio::spawn(async move {
            let r = client
                .post(format!("{base}/api/v1/interactions/batch"))
                .bearer_auth(token)
                .json(&batch(items))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (status, body["created"].as_i64().unwrap_or(0))
        }));
    }
    // Wait until the batches are really running, then ingest singles while they are.
    crate::helpers::eventually(Duration::from_secs(30), || async {
        app.stored_interactions().await > 0
    })
    .await;
    let mut singles = 0;
    // Whether some single was answered while a batch was still running (the point of the test).
    let mut overlapped = false;
    for _ in 0..30 {
        let r = app
            .post(
                "/api/v1/interactions",
                Some(&admin.access),
                interaction(&cid, "web", None),
            )
            .await;
        assert_eq!(
            r.status, 201,
            "single ingestion kept working during batches: {}",
            r.body
        );
        singles += 1;
        overlapped |= batches.iter().any(|b| !b.is_finished());
    }
    let mut created = 0;
    for b in batches {
        let (status, n) = b.await.unwrap();
        assert_eq!(status, 200);
        created += n;
    }
    assert_eq!(created, 4000);
    assert_eq!(app.stored_interactions().await, 4000 + singles);
    assert!(overlapped, "the singles ran while batches were in progress");
}

#[tokio::test]
async fn concurrent_batches_over_the_same_customers_all_commit() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let mut ids = Vec::new();
    for i in 0..200 {
        ids.push(
            app.customer(&admin.access, &format!("shared-{i}"), None).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Each batch walks the customers in its own order, so their transactions lock overlapping rows in
    // different orders: without ordered locking some would deadlock and roll back.
    let mut tasks = Vec::new();
    for b in 0..6usize {
        let items: Vec<Value> = (0..1000)
            .map(|i| interaction(&ids[(i * (b + 1) + b) % ids.len()], "web", None))
            .collect();
        let (client, base, token) = (app.client.clone(), app.base.clone(), admin.access.clone());
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(format!("{base}/api/v1/interactions/batch"))
                .bearer_auth(token)
                .json(&batch(items))
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        }));
    }
    for t in tasks {
        let body = t.await.unwrap();
        assert_eq!(
            body["failed"],
            0,
            "{}",
            body["results"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["status"] == "failed")
                .cloned()
                .unwrap_or_default()
        );
        assert_eq!(body["created"], 1000);
    }
    assert_eq!(app.stored_interactions().await, 6000);
    let total: i64 = sqlx::query_scalar!(r#"SELECT sum(interaction_count)::bigint AS "n!" FROM customers"#)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(total, 6000);
}
