use std::time::Duration;

use insights::domain::{CustomerId, Role};
use reqwest::Method;
use serde_json::json;

use crate::helpers::{eventually, interaction, spawn_app, spawn_with};

const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";

#[tokio::test]
async fn an_interaction_is_stored_enriched_and_counted() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let c = app.customer(&admin.access, "c1", Some("enterprise")).await;
    let cid = c["id"].as_str().unwrap();
    let mut body = interaction(cid, "chat", Some("Where is my order?"));
    body["metadata"] = json!({"userAgent": IPHONE, "geo": {"country": "gb", "city": "London", "lat": 51.5, "lon": -0.12}, "page": "/help"});
    let r = app
        .post("/api/v1/interactions", Some(&admin.access), body.clone())
        .await;
    let stored = r.expect(201).clone();
    assert_eq!(stored["customerId"], cid);
    assert_eq!(stored["channel"], "chat");
    assert_eq!(stored["content"], "Where is my order?");
    assert!(
        stored["sentiment"].is_null() && stored["processedAt"].is_null(),
        "scored later"
    );
    assert_eq!(stored["metadata"]["page"], "/help");
    let e = &stored["enrichment"];
    assert_eq!(e["organization"]["id"], org.id.to_string());
    assert_eq!(e["organization"]["name"], "Test Org");
    assert_eq!(e["segment"], "enterprise");
    assert_eq!(e["device"]["type"], "mobile");
    assert_eq!(e["device"]["os"], "iPhone");
    assert_eq!(e["geo"]["country"], "GB");
    assert_eq!(e["geo"]["lat"], 51.5);
    assert_eq!(stored["segment"], "enterprise");

    // The customer's counters moved in the same transaction (R2.5, R2.6).
    let profile = app
        .get(&format!("/api/v1/customers/{cid}"), Some(&admin.access))
        .await
        .expect(200)
        .clone();
    assert_eq!(profile["interactionCount"], 1);
    let sent = chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().unwrap()).unwrap();
    let seen = chrono::DateTime::parse_from_rfc3339(profile["lastSeenAt"].as_str().unwrap()).unwrap();
    assert_eq!(
        seen.timestamp_micros(),
        sent.timestamp_micros(),
        "stored to the microsecond"
    );

    let id = stored["id"].as_str().unwrap();
    let back = app
        .get(&format!("/api/v1/interactions/{id}"), Some(&admin.access))
        .await
        .expect(200)
        .clone();
    assert_eq!(back, stored);
    // Handed on for scoring, and announced to the organization with a sequence number.
    assert_eq!(app.metric("insights_scoring_handoffs_total").await, 1.0);
    let events = app.events_after(org.id, 0).await;
    assert_eq!(events.events.len(), 1);
    assert_eq!(events.events[0].seq, 1);
    assert_eq!(events.events[0].kind, "interaction.created");
    let data: serde_json::Value = serde_json::from_str(&events.events[0].data).unwrap();
    assert_eq!(data["id"], id);
}

#[tokio::test]
async fn every_invalid_field_is_listed_and_nothing_is_stored() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let r = app
        .post(
            "/api/v1/interactions",
            Some(&admin.access),
            json!({"customerId": "123", "channel": "fax", "eventType": " ", "timestamp": future, "metadata": {"geo": {"lat": 123}}}),
        )
        .await;
    let details = r.expect_error(400, "validation_failed")["error"]["details"].clone();
    let fields: Vec<&str> = details
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "customerId",
            "channel",
            "eventType",
            "timestamp",
            "metadata.geo.lat"
        ]
    );
    assert!(details.to_string().contains("must not be in the future"));

    let c = app.customer(&admin.access, "c", None).await;
    let cid = c["id"].as_str().unwrap();
    for channel in ["email", "chat", "phone"] {
        let r = app
            .post(
                "/api/v1/interactions",
                Some(&admin.access),
                interaction(cid, channel, Some("   ")),
            )
            .await;
        assert_eq!(
            r.expect_error(400, "validation_failed")["error"]["details"][0]["field"],
            "content"
        );
    }
    for channel in ["web", "mobile"] {
        app.post(
            "/api/v1/interactions",
            Some(&admin.access),
            interaction(cid, channel, None),
        )
        .await
        .expect(201);
    }
    let unknown = interaction(&uuid::Uuid::new_v4().to_string(), "web", None);
    let r = app
        .post("/api/v1/interactions", Some(&admin.access), unknown)
        .await;
    assert!(
        r.expect_error(404, "not_found")["error"]["message"]
            .as_str()
            .unwrap()
            .contains("customer")
    );
    let rows = app.stored_interactions().await;
    assert_eq!(rows, 2);
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_first_interaction_and_changes_nothing() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let c1 = app.customer(&admin.access, "c1", None).await;
    let c2 = app.customer(&admin.access, "c2", None).await;
    let mut body = interaction(c1["id"].as_str().unwrap(), "email", Some("first"));
    body["idempotencyKey"] = json!("order-7");
    let first = app
        .post("/api/v1/interactions", Some(&admin.access), body.clone())
        .await
        .expect(201)
        .clone();
    body["content"] = json!("second");
    let again = app
        .post("/api/v1/interactions", Some(&admin.access), body.clone())
        .await;
    assert_eq!(again.expect(200), &first);
    // The key is per organization: another customer's request with it gets the same first interaction.
    body["customerId"] = c2["id"].clone();
    let other = app.post("/api/v1/interactions", Some(&admin.access), body).await;
    assert_eq!(other.expect(200)["id"], first["id"]);
    let count = app.stored_interactions().await;
    assert_eq!(count, 1);
    let profile = app
        .get(
            &format!("/api/v1/customers/{}", c1["id"].as_str().unwrap()),
            Some(&admin.access),
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(profile["interactionCount"], 1);
    assert_eq!(
        app.events_after(org.id, 0).await.events.len(),
        1,
        "a duplicate publishes nothing"
    );
}

#[tokio::test]
async fn ingestion_needs_an_analyst_or_an_api_key_and_stays_in_its_organization() {
    let app = spawn_app().await;
    let a = app.create_org().await;
    let b = app.create_org().await;
    let admin_a = app.admin(&a).await;
    let admin_b = app.admin(&b).await;
    let (_, viewer) = app.user_with_role(&admin_a, Role::Viewer).await;
    let c = app.customer(&admin_a.access, "c", None).await;
    let cid = c["id"].as_str().unwrap();
    app.post(
        "/api/v1/interactions",
        Some(&viewer.access),
        interaction(cid, "web", None),
    )
    .await
    .expect_error(403, "forbidden");
    let key = app
        .post("/api/v1/api-keys", Some(&admin_a.access), json!({"name": "k"}))
        .await
        .expect(201)["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let stored = app
        .post("/api/v1/interactions", Some(&key), interaction(cid, "web", None))
        .await
        .expect(201)
        .clone();
    app.get(
        &format!("/api/v1/interactions/{}", stored["id"].as_str().unwrap()),
        Some(&key),
    )
    .await
    .expect_error(403, "forbidden");
    app.get(
        &format!("/api/v1/interactions/{}", stored["id"].as_str().unwrap()),
        Some(&viewer.access),
    )
    .await
    .expect(200);

    // Organization B can neither write to nor read A's customer and interaction.
    app.post(
        "/api/v1/interactions",
        Some(&admin_b.access),
        interaction(cid, "web", None),
    )
    .await
    .expect_error(404, "not_found");
    app.get(
        &format!("/api/v1/interactions/{}", stored["id"].as_str().unwrap()),
        Some(&admin_b.access),
    )
    .await
    .expect_error(404, "not_found");
    let count = app.stored_interactions().await;
    assert_eq!(count, 1);
}

#[tokio::test]
async fn a_failure_inside_the_transaction_rolls_everything_back() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let c = app.customer(&admin.access, "fragile", None).await;
    let cid = c["id"].as_str().unwrap();
    app.post(
        "/api/v1/interactions",
        Some(&admin.access),
        interaction(cid, "web", None),
    )
    .await
    .expect(201);
    // The counter update fails after the row was inserted: both must disappear together.
    app.sql(
        "CREATE FUNCTION refuse_update() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'injected failure'; END; $$;
         CREATE TRIGGER refuse_update BEFORE UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION refuse_update();",
    )
    .await;
    let r = app
        .post(
            "/api/v1/interactions",
            Some(&admin.access),
            interaction(cid, "chat", Some("lost?")),
        )
        .await;
    r.expect_error(500, "internal");
    assert!(r.body["error"]["requestId"].is_string());
    assert!(
        !r.body.to_string().contains("injected"),
        "no internal detail leaks"
    );
    let rows = app.stored_interactions().await;
    assert_eq!(rows, 1, "the insert was rolled back with the failed update");
    app.sql("DROP TRIGGER refuse_update ON customers").await;
    // The actor keeps serving and its counters are still right.
    app.post(
        "/api/v1/interactions",
        Some(&admin.access),
        interaction(cid, "web", None),
    )
    .await
    .expect(201);
    let profile = app
        .get(&format!("/api/v1/customers/{cid}"), Some(&admin.access))
        .await
        .expect(200)
        .clone();
    assert_eq!(profile["interactionCount"], 2);
}

#[tokio::test]
async fn a_panicking_customer_actor_is_restarted_and_loses_nothing_acknowledged() {
    let app = spawn_with(|c| c.fault_injection = true).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let victim = app.customer(&admin.access, "victim", None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bystander = app.customer(&admin.access, "bystander", None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let router = app.app.as_ref().unwrap().state().router.clone();
    let victim_id = CustomerId::parse(&victim).unwrap();

    let sender = {
        let (client, base, token, victim) = (
            app.client.clone(),
            app.base.clone(),
            admin.access.clone(),
            victim.clone(),
        );
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut refused = 0;
            for i in 0..60 {
                let mut body = interaction(&victim, "chat", Some("hello"));
                body["idempotencyKey"] = json!(format!("k-{i}"));
                let r = client
                    .post(format!("{base}/api/v1/interactions"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                match r.status().as_u16() {
                    201 => acknowledged.push(format!("k-{i}")),
                    503 => refused += 1,
                    other => panic!("unexpected status {other}"),
                }
            }
            (acknowledged, refused)
        })
    };
    // Crash the victim's actor a few times while the stream runs; the bystander is served throughout.
    for _ in 0..3 {
        eventually(Duration::from_secs(10), || async {
            app.stored_interactions().await > 5
        })
        .await;
        router.inject_customer_panic(org.id, victim_id).await.unwrap();
        app.post(
            "/api/v1/interactions",
            Some(&admin.access),
            interaction(&bystander, "web", None),
        )
        .await
        .expect(201);
    }
    let (acknowledged, _refused) = sender.await.unwrap();
    assert!(
        app.metric("insights_actor_restarts_total{supervisor=\"org\"}")
            .await
            >= 1.0,
        "the crash was seen"
    );

    let stored: Vec<String> = sqlx::query_scalar!(
        r#"SELECT idempotency_key AS "k!" FROM customer_interactions WHERE customer_id = $1 ORDER BY created_at"#,
        uuid::Uuid::parse_str(&victim).unwrap()
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let mut expected = acknowledged.clone();
    expected.sort();
    let mut got = stored.clone();
    got.sort();
    assert_eq!(
        got, expected,
        "every acknowledged interaction is stored, and nothing else"
    );
    let profile = app
        .get(&format!("/api/v1/customers/{victim}"), Some(&admin.access))
        .await
        .expect(200)
        .clone();
    assert_eq!(
        profile["interactionCount"],
        stored.len() as i64,
        "counters rebuilt from PostgreSQL agree"
    );
    // The restarted actor serves the customer again.
    app.post(
        "/api/v1/interactions",
        Some(&admin.access),
        interaction(&victim, "web", None),
    )
    .await
    .expect(201);
}

#[tokio::test]
async fn idle_customer_actors_are_passivated_and_rebuilt() {
    let app = spawn_with(|c| c.ingest.passivate_after = Duration::from_millis(200)).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let c = app.customer(&admin.access, "sleepy", None).await;
    let cid = c["id"].as_str().unwrap();
    app.post(
        "/api/v1/interactions",
        Some(&admin.access),
        interaction(cid, "web", None),
    )
    .await
    .expect(201);
    let router = app.app.as_ref().unwrap().state().router.clone();
    assert_eq!(router.live_customers(org.id).await.unwrap(), 1);
    let passivated = eventually(Duration::from_secs(5), || async {
        router.live_customers(org.id).await.unwrap() == 0
    })
    .await;
    assert!(passivated, "the idle actor stopped");
    app.post(
        "/api/v1/interactions",
        Some(&admin.access),
        interaction(cid, "web", None),
    )
    .await
    .expect(201);
    let profile = app
        .get(&format!("/api/v1/customers/{cid}"), Some(&admin.access))
        .await
        .expect(200)
        .clone();
    assert_eq!(profile["interactionCount"], 2);
    assert_eq!(
        app.metric("insights_live_actors{kind=\"customer\"}").await,
        1.0,
        "no leaked actors"
    );
}

#[tokio::test]
async fn a_full_ingest_queue_answers_503_and_loses_nothing() {
    let app = spawn_with(|c| c.ingest.org_max_inflight = 1).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let c = app.customer(&admin.access, "busy", None).await;
    let cid = c["id"].as_str().unwrap().to_owned();
    // Every insert now takes 300 ms, so the single permit is held while the others arrive.
    app.sql(
        "CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(0.3); RETURN NEW; END; $$;
         CREATE TRIGGER slow_insert BEFORE INSERT ON customer_interactions FOR EACH ROW EXECUTE FUNCTION slow_insert();",
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let (client, base, token, cid) = (
            app.client.clone(),
            app.base.clone(),
            admin.access.clone(),
            cid.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(format!("{base}/api/v1/interactions"))
                .bearer_auth(token)
                .json(&interaction(&cid, "web", None))
                .send()
                .await
                .unwrap();
            let retry = r.headers().get("retry-after").is_some();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap();
            (status, retry, body)
        }));
    }
    let mut created = 0;
    let mut overloaded = 0;
    for t in tasks {
        let (status, retry, body) = t.await.unwrap();
        match status {
            201 => created += 1,
            503 => {
                overloaded += 1;
                assert!(retry);
                assert_eq!(body["error"]["code"], "overloaded");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        created >= 1 && overloaded >= 1,
        "created {created}, overloaded {overloaded}"
    );
    let rows = app.stored_interactions().await;
    assert_eq!(rows, created, "exactly the acknowledged ones are stored");
    assert!(
        app.metric("insights_ingest_rejected_total{reason=\"overloaded\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn the_replay_buffer_keeps_the_last_events_in_order() {
    let app = spawn_with(|c| c.ingest.event_buffer = 3).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let c = app.customer(&admin.access, "e", None).await;
    let cid = c["id"].as_str().unwrap();
    for _ in 0..5 {
        app.post(
            "/api/v1/interactions",
            Some(&admin.access),
            interaction(cid, "web", None),
        )
        .await
        .expect(201);
    }
    let ok = eventually(Duration::from_secs(5), || async {
        app.events_after(org.id, 0).await.last_seq == 5
    })
    .await;
    assert!(ok);
    let recent = app.events_after(org.id, 2).await;
    assert!(recent.complete);
    assert_eq!(recent.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4, 5]);
    let old = app.events_after(org.id, 1).await;
    assert!(
        !old.complete,
        "event 2 is no longer buffered: the client must resync"
    );
    let none = app.events_after(org.id, 5).await;
    assert!(none.complete && none.events.is_empty());
}

#[tokio::test]
async fn a_customer_patch_reaches_the_live_actor() {
    let app = spawn_app().await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let c = app.customer(&admin.access, "mover", Some("trial")).await;
    let cid = c["id"].as_str().unwrap();
    let first = app
        .post(
            "/api/v1/interactions",
            Some(&admin.access),
            interaction(cid, "web", None),
        )
        .await
        .expect(201)
        .clone();
    assert_eq!(first["enrichment"]["segment"], "trial");
    app.call(
        Method::PATCH,
        &format!("/api/v1/customers/{cid}"),
        Some(&admin.access),
        Some(json!({"segment": "enterprise"})),
    )
    .await
    .expect(200);
    let ok = eventually(Duration::from_secs(5), || async {
        let r = app
            .post(
                "/api/v1/interactions",
                Some(&admin.access),
                interaction(cid, "web", None),
            )
            .await;
        r.body["enrichment"]["segment"] == "enterprise"
    })
    .await;
    assert!(ok, "new interactions carry the new segment");
}

#[tokio::test]
async fn event_numbers_continue_after_a_restart_and_older_ones_ask_for_a_resync() {
    let mut app = crate::helpers::spawn_with(|c| c.ingest.event_seq_block = 5).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let customer = app.customer(&admin.access, "c-1", None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Seven events cross the first reserved block of five without a gap.
    for _ in 0..7 {
        post_one(&app, &admin.access, &customer).await;
    }
    let all = app.events_after(org.id, 0).await;
    assert_eq!(
        all.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    let resumed = app.events_after(org.id, 4).await;
    assert!(resumed.complete);
    assert_eq!(
        resumed.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [5, 6, 7]
    );
    assert!(
        !app.events_after(org.id, 99).await.complete,
        "a number never handed out is a resync"
    );

    // A new node on the same database continues above every number reserved before.
    app.app.take().unwrap().shutdown().await.unwrap();
    let node = insights::App::build(app.config.clone()).await.unwrap();
    app.base = format!("https://localhost:{}", node.local_addr().port());
    app.app = Some(node);
    post_one(&app, &admin.access, &customer).await;
    let after = app.events_after(org.id, 0).await;
    assert_eq!(after.events.len(), 1);
    assert_eq!(
        after.events[0].seq, 11,
        "blocks 1-5 and 6-10 were reserved before the restart"
    );
    let old = app.events_after(org.id, 7).await;
    assert!(!old.complete, "a client at 7 missed 8-10's fate: it must resync");
    assert!(app.events_after(org.id, 11).await.complete);
}

async fn post_one(app: &crate::helpers::TestApp, token: &str, customer: &str) {
    app.post(
        "/api/v1/interactions",
        Some(token),
        interaction(customer, "web", None),
    )
    .await
    .expect(201);
}
