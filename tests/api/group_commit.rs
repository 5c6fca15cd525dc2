//! Group commit of single interactions: concurrent ingests share a transaction, yet each one's failure
//! stays its own, idempotency keys hold inside a group, killed connections lose nothing acknowledged, and
//! the customers' counters and averages equal their rows after mixed concurrent load.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Session, TestApp, eventually, interaction, spawn_app, spawn_with, with_model};

/// A customer's stored scored count and average beside a recomputation from its rows: external id,
/// scored count, scored rows, average, recomputed average.
type Stored = (String, i64, i64, Option<f64>, Option<f64>);

/// How many groups and rows the node's group commit has written so far.
async fn groups(app: &TestApp) -> (f64, f64) {
    (
        app.metric("insights_ingest_group_size_count{kind=\"single\"}")
            .await,
        app.metric("insights_ingest_group_size_sum{kind=\"single\"}")
            .await,
    )
}

/// Creates `n` customers and stores one interaction for each, so the organization's and the customers'
/// actors are running (starting them takes no lock the tests below hold).
async fn warm_customers(app: &TestApp, admin: &Session, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let c = app.customer(&admin.access, &format!("g{i}"), None).await;
        let id = c["id"].as_str().unwrap().to_owned();
        app.post(
            "/api/v1/interactions",
            Some(&admin.access),
            interaction(&id, "web", None),
        )
        .await
        .expect(201);
        ids.push(id);
    }
    ids
}

/// Holds the organization's lease lock exclusively, so every group-commit transaction of it waits at
/// its fence: the ingests sent meanwhile queue up and go in as one group once the lock is released.
struct Gate {
    conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    key: i64,
}

impl Gate {
    async fn close(app: &TestApp, org: insights::domain::OrganizationId) -> Self {
        let key = insights::store::leases::org_key(org);
        let mut conn = app.pool.acquire().await.unwrap();
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(key)
            .execute(&mut *conn)
            .await
            .unwrap();
        Self { conn, key }
    }

    /// Closes the gate and sends one ingest for each of `customers` (two: one per group-commit writer),
    /// then waits until their transactions wait at the gate, so what is sent next forms one group.
    async fn occupy_writers(
        app: &TestApp,
        org: insights::domain::OrganizationId,
        admin: &Session,
        customers: &[String],
    ) -> (Self, Vec<tokio::task::JoinHandle<(u16, Value)>>) {
        let gate = Self::close(app, org).await;
        let bodies = customers.iter().map(|c| interaction(c, "web", None)).collect();
        let first = post_all(app, &admin.access, bodies);
        Self::await_waiting(app, customers.len() as i64).await;
        (gate, first)
    }

    /// Waits until `n` transactions wait at the gate (both writers of the group commit, say).
    async fn await_waiting(app: &TestApp, n: i64) {
        let waiting = eventually(Duration::from_secs(20), || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
            )
            .fetch_one(&app.pool)
            .await
            .unwrap();
            waiting >= n
        })
        .await;
        assert!(waiting, "{n} group-commit transactions wait at the fence");
    }

    async fn open(mut self) {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .execute(&mut *self.conn)
            .await
            .unwrap();
    }
}

/// Posts each body concurrently; answers in the same order.
fn post_all(app: &TestApp, token: &str, bodies: Vec<Value>) -> Vec<tokio::task::JoinHandle<(u16, Value)>> {
    bodies
        .into_iter()
        .map(|body| {
            let (client, url, token) = (
                app.client.clone(),
                format!("{}/api/v1/interactions", app.base),
                token.to_owned(),
            );
            tokio::spawn(async move {
                let r = client
                    .post(url)
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(Value::Null))
            })
        })
        .collect()
}

async fn answers(handles: Vec<tokio::task::JoinHandle<(u16, Value)>>) -> Vec<(u16, Value)> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// Customers whose interaction_count differs from their stored rows.
async fn miscounted(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM customers c
         WHERE c.interaction_count <> (SELECT count(*) FROM customer_interactions i
                                       WHERE i.organization_id = c.organization_id AND i.customer_id = c.id)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_row_the_database_refuses_fails_alone_and_the_rest_of_its_group_commits() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let customers = warm_customers(&app, &admin, 8).await;
    // A constraint that refuses one content: the multi-row statement of its group fails as a whole.
    app.sql(
        "ALTER TABLE customer_interactions ADD CONSTRAINT refuse_poison CHECK (content IS DISTINCT FROM 'poison')",
    )
    .await;
    let (groups_before, rows_before) = groups(&app).await;

    // Two ingests occupy both writers at the gate; the next six queue up behind them as one group.
    let (gate, first) = Gate::occupy_writers(&app, org.id, &admin, &customers[..2]).await;
    let bodies = customers[2..]
        .iter()
        .enumerate()
        .map(|(i, c)| interaction(c, "chat", Some(if i == 2 { "poison" } else { "fine" })))
        .collect();
    let grouped = post_all(&app, &admin.access, bodies);
    // Long enough for six requests to reach the group commit's queue on a loaded machine.
    tokio::time::sleep(Duration::from_secs(2)).await;
    gate.open().await;

    for (status, body) in answers(first).await {
        assert_eq!(status, 201, "{body}");
    }
    let grouped = answers(grouped).await;
    for (i, (status, body)) in grouped.iter().enumerate() {
        if i == 2 {
            assert_eq!(*status, 500, "the refused row fails: {body}");
            assert_eq!(body["error"]["code"], "internal");
        } else {
            assert_eq!(*status, 201, "the rest of its group is stored: {body}");
        }
    }
    let (groups_after, rows_after) = groups(&app).await;
    assert_eq!(
        rows_after - rows_before,
        8.0,
        "eight interactions went through the group commit"
    );
    assert_eq!(
        groups_after - groups_before,
        3.0,
        "in three transactions: one per writer at the gate, then the six queued behind them together"
    );
    assert_eq!(app.stored_interactions().await, 8 + 7);
    let poisoned: i64 =
        sqlx::query_scalar("SELECT count(*) FROM customer_interactions WHERE content = 'poison'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(poisoned, 0);
    assert_eq!(
        miscounted(&app).await,
        0,
        "every counter equals its customer's rows"
    );
    let victim = app
        .get(
            &format!("/api/v1/customers/{}", customers[4]),
            Some(&admin.access),
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(
        victim["interactionCount"], 1,
        "only the warm-up row of the refused customer"
    );
}

#[tokio::test]
async fn two_requests_with_one_key_in_one_group_store_one_row_and_both_get_it() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let customers = warm_customers(&app, &admin, 5).await;
    let (groups_before, _) = groups(&app).await;

    let (gate, first) = Gate::occupy_writers(&app, org.id, &admin, &customers[..2]).await;
    // The key is per organization: two customers' requests with it are the same interaction.
    let keyed = |c: &str, content: &str| {
        let mut body = interaction(c, "email", Some(content));
        body["idempotencyKey"] = json!("order-42");
        body
    };
    let grouped = post_all(
        &app,
        &admin.access,
        vec![
            keyed(&customers[2], "from the first"),
            keyed(&customers[3], "from the second"),
            interaction(&customers[4], "chat", Some("unkeyed")),
        ],
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    gate.open().await;
    answers(first).await;
    let grouped = answers(grouped).await;
    assert_eq!(
        groups(&app).await.0 - groups_before,
        3.0,
        "the three queued requests formed one group"
    );

    let (a, b) = (&grouped[0], &grouped[1]);
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 201],
        "one created, the other its duplicate: {a:?} {b:?}"
    );
    assert_eq!(a.1["id"], b.1["id"], "both answered with the one row");
    assert_eq!(a.1, b.1);
    assert_eq!(grouped[2].0, 201);
    let keyed_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM customer_interactions WHERE idempotency_key = 'order-42'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(keyed_rows, 1);
    assert_eq!(miscounted(&app).await, 0, "only the stored row was counted");
    // The duplicate published nothing: one interaction.created per stored row.
    let created = app
        .events_after(org.id, 0)
        .await
        .events
        .iter()
        .filter(|e| e.kind == "interaction.created")
        .count() as i64;
    assert_eq!(created, app.stored_interactions().await);
}

#[tokio::test]
async fn killed_connections_lose_no_acknowledged_interaction_and_store_none_by_halves() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let customers = warm_customers(&app, &admin, 6).await;
    let body = |i: usize| {
        let mut b = interaction(&customers[i % customers.len()], "web", Some("killed?"));
        b["idempotencyKey"] = json!(format!("kill-{i}"));
        b
    };
    // PostgreSQL ends the node's busy connections mid-flight (its ingest transactions before, during or
    // after their commit, and whatever else it runs) while 6 clients ingest 40 keyed interactions each.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let (pool, stop) = (app.pool.clone(), stop.clone());
        tokio::spawn(async move {
            let mut killed = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n: Result<i64, _> = sqlx::query_scalar(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_backend_pid()
                       AND backend_type = 'client backend' AND state IN ('active', 'idle in transaction')",
                )
                .fetch_one(&pool)
                .await;
                killed += n.unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            killed
        })
    };
    let mut clients = Vec::new();
    for w in 0..6 {
        let bodies: Vec<Value> = (0..40).map(|k| body(w * 40 + k)).collect();
        let (client, url, token) = (
            app.client.clone(),
            format!("{}/api/v1/interactions", app.base),
            admin.access.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut results = Vec::new();
            for b in bodies {
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&b)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                results.push((b, status, r.json::<Value>().await.unwrap_or(Value::Null)));
            }
            results
        }));
    }
    let mut acknowledged = std::collections::HashMap::new();
    let mut unacknowledged = Vec::new();
    for c in clients {
        for (b, status, reply) in c.await.unwrap() {
            match status {
                200 | 201 => {
                    acknowledged.insert(
                        b["idempotencyKey"].as_str().unwrap().to_owned(),
                        reply["id"].clone(),
                    );
                }
                500 | 503 => unacknowledged.push(b),
                other => panic!("unexpected {other}: {reply}"),
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let killed = killer.await.unwrap();
    assert!(killed > 0, "the test ended some of the node's transactions");
    assert!(
        !unacknowledged.is_empty(),
        "some ingests were cut off ({killed} backends ended)"
    );

    // Every acknowledged interaction is stored once, with the id it was acknowledged with.
    for (key, id) in &acknowledged {
        let stored: Vec<String> =
            sqlx::query_scalar("SELECT id::text FROM customer_interactions WHERE idempotency_key = $1")
                .bind(key)
                .fetch_all(&app.pool)
                .await
                .unwrap();
        assert_eq!(
            stored,
            vec![id.as_str().unwrap().to_owned()],
            "{key} stored as acknowledged"
        );
    }
    // A request cut off was stored wholly (row and counter) or not at all: counters equal rows.
    assert_eq!(miscounted(&app).await, 0);
    // Retried with its key, each one ends up stored once.
    for b in unacknowledged {
        let mut stored = false;
        for _ in 0..50 {
            let r = app
                .post("/api/v1/interactions", Some(&admin.access), b.clone())
                .await;
            if matches!(r.status.as_u16(), 200 | 201) {
                stored = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(stored, "a retry stores {}", b["idempotencyKey"]);
    }
    let keyed: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT idempotency_key) FROM customer_interactions WHERE idempotency_key LIKE 'kill-%'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(keyed, 240);
    assert_eq!(app.stored_interactions().await, 6 + 240, "no interaction doubled");
    assert_eq!(miscounted(&app).await, 0);
}

#[tokio::test]
async fn counters_and_averages_equal_the_rows_after_concurrent_singles_batches_and_scoring() {
    let app = spawn_with(with_model).await;
    let orgs = [app.create_org().await, app.create_org().await];
    let texts = [
        "Thanks, the support team solved my problem in minutes!",
        "Terrible experience, I was on hold for an hour.",
        "Can you tell me when the store opens on Sunday?",
        "My order arrived late and the box was damaged.",
    ];
    let mut work = Vec::new();
    for org in &orgs {
        let admin = app.admin(org).await;
        let mut customers = Vec::new();
        for i in 0..10 {
            let c = app.customer(&admin.access, &format!("mix{i}"), None).await;
            customers.push(c["id"].as_str().unwrap().to_owned());
        }
        // Eight clients of single ingests and two of batches of 50, over the same customers.
        for w in 0..8 {
            let bodies: Vec<Value> = (0..25)
                .map(|k| interaction(&customers[(w + k) % 10], "chat", Some(texts[k % 4])))
                .collect();
            let (client, base, token) = (app.client.clone(), app.base.clone(), admin.access.clone());
            work.push(tokio::spawn(async move {
                for b in bodies {
                    let r = client
                        .post(format!("{base}/api/v1/interactions"))
                        .bearer_auth(&token)
                        .json(&b)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 201);
                }
            }));
        }
        for w in 0..2 {
            let items: Vec<Value> = (0..50)
                .map(|k| interaction(&customers[(w * 3 + k) % 10], "email", Some(texts[(k + 1) % 4])))
                .collect();
            let (client, base, token) = (app.client.clone(), app.base.clone(), admin.access.clone());
            work.push(tokio::spawn(async move {
                for _ in 0..2 {
                    let r = client
                        .post(format!("{base}/api/v1/interactions/batch"))
                        .bearer_auth(&token)
                        .json(&json!({"interactions": items}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 200);
                    let body: Value = r.json().await.unwrap();
                    assert_eq!(body["created"], 50, "{body}");
                }
            }));
        }
    }
    for w in work {
        w.await.unwrap();
    }
    let expected = 2 * (8 * 25 + 2 * 2 * 50);
    assert_eq!(app.stored_interactions().await, expected);
    let scored = eventually(Duration::from_secs(60), || async {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM customer_interactions WHERE processed_at IS NULL")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        pending == 0
    })
    .await;
    assert!(scored, "every interaction was scored");
    assert_eq!(miscounted(&app).await, 0, "interaction counts equal the rows");
    // The averages, kept incrementally by the grouped score writes, equal a recomputation.
    let off: Vec<Stored> = sqlx::query_as(
        "SELECT c.external_id, c.scored_count, a.n, c.average_sentiment, a.average
         FROM customers c CROSS JOIN LATERAL (
             SELECT count(i.sentiment_score) AS n, avg(i.sentiment_score)::double precision AS average
             FROM customer_interactions i WHERE i.organization_id = c.organization_id AND i.customer_id = c.id) a
         WHERE c.scored_count <> a.n OR abs(coalesce(c.average_sentiment, 9) - coalesce(a.average, 9)) > 1e-9",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(
        off.is_empty(),
        "customers whose scored count or average differ: {off:?}"
    );
    let live_scores = app
        .metric("insights_ingest_group_size_count{kind=\"scores\"}")
        .await;
    let live_rows = app
        .metric("insights_ingest_group_size_sum{kind=\"scores\"}")
        .await;
    assert!(
        live_rows >= live_scores && live_scores > 0.0,
        "scores were written in groups"
    );
}
