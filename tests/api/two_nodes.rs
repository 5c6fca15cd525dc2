//! Two real `insights serve` processes on one database (issue 13): concurrent ingests for the same
//! organizations through both end with one owner per organization, every stored row acknowledged by that
//! owner, counters equal to rows, and 503 `owned_elsewhere` wherever a request reached the other node.

use serde_json::json;

use crate::helpers::{Reply, interaction, test_config};
use crate::procs::{Spec, serve};

#[tokio::test]
async fn two_serve_processes_keep_one_owner_per_organization() {
    // The database and the organizations are made with the test harness's node, which then stops.
    let config = test_config();
    let secret = config.jwt_secret.as_ref().unwrap().expose().to_owned();
    let prefix = config.redis_prefix.clone();
    let mut harness = crate::helpers::start(config).await;
    let orgs = [harness.create_org().await, harness.create_org().await];
    harness.app.take().unwrap().shutdown().await.unwrap();

    let id = uuid::Uuid::new_v4().simple().to_string();
    let spec = Spec {
        db_url: &harness.db_url,
        secret: &secret,
        prefix: &prefix,
        env: Vec::new(),
    };
    let a = serve(&format!("a-{id}"), &spec).await;
    let b = serve(&format!("b-{id}"), &spec).await;
    let mut plan = Vec::new();
    for org in &orgs {
        let login = a
            .post(
                "/api/v1/auth/login",
                None,
                json!({"email": org.admin_email, "password": org.admin_password}),
            )
            .await;
        let token = login.expect(200)["accessToken"].as_str().unwrap().to_owned();
        let customer = a
            .post("/api/v1/customers", Some(&token), json!({"externalId": "c-1"}))
            .await;
        let customer = customer.expect(201)["id"].as_str().unwrap().to_owned();
        plan.push((org.id, token, customer));
    }
    // 30 ingests per organization, sent to both nodes at once.
    let nodes = [&a, &b];
    let mut sends = Vec::new();
    for (org, token, customer) in &plan {
        for i in 0..30 {
            let node = nodes[i % 2];
            sends.push(async move {
                let r = node
                    .post(
                        "/api/v1/interactions",
                        Some(token),
                        interaction(customer, "web", None),
                    )
                    .await;
                (*org, node.name.clone(), r)
            });
        }
    }
    let replies = futures_util::future::join_all(sends).await;

    for (org, _, customer) in &plan {
        let log: Vec<(String,)> =
            sqlx::query_as("SELECT owner_node FROM org_ownership_log WHERE organization_id = $1")
                .bind(org.as_uuid())
                .fetch_all(&harness.pool)
                .await
                .unwrap();
        assert_eq!(log.len(), 1, "one owner in the log: {log:?}");
        let owner = &log[0].0;
        let mine: Vec<&(insights::domain::OrganizationId, String, Reply)> =
            replies.iter().filter(|(o, _, _)| o == org).collect();
        let created = mine.iter().filter(|(_, _, r)| r.status.as_u16() == 201).count();
        for (_, node, r) in &mine {
            match r.status.as_u16() {
                201 => assert_eq!(node, owner, "only the owner stores"),
                503 => {
                    assert_eq!(r.body["error"]["code"], "owned_elsewhere", "{}", r.body);
                    assert_ne!(node, owner);
                }
                other => panic!("unexpected {other}: {}", r.body),
            }
        }
        assert_eq!(created, 15, "every request that reached the owner was stored");
        let (rows, counted) = crate::procs::rows_and_counter(&harness.pool, customer).await;
        assert_eq!((rows, counted), (15, 15), "counters equal rows");
    }
    let duplicated = crate::procs::duplicate_patterns(&harness.pool).await;
    assert_eq!(duplicated, 0, "no duplicate patterns");
}
