//! Two real `insights serve` processes on one database (issue 13): concurrent ingests for the same
//! organizations through both end with one owner per organization, every stored row acknowledged by that
//! owner, counters equal to rows, and 503 `owned_elsewhere` wherever a request reached the other node.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Reply, client_trusting, eventually, free_port, interaction, read, test_config};

/// One `insights serve` process; killed when dropped.
struct Node {
    name: String,
    base: String,
    client: reqwest::Client,
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve(name: &str, db_url: &str, secret: &str, prefix: &str) -> Node {
    let port = free_port();
    let data_dir: PathBuf = std::env::temp_dir().join(format!("insights-test-{name}"));
    let child = Command::new(env!("CARGO_BIN_EXE_insights"))
        .args(["serve", "--no-migrate"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db_url)
        .env("REDIS_URL", crate::helpers::redis_url())
        .env("INSIGHTS_REDIS_PREFIX", prefix)
        .env("INSIGHTS_JWT_SECRET", secret)
        .env("INSIGHTS_NODE_NAME", name)
        .env("INSIGHTS_LISTEN", format!("127.0.0.1:{port}"))
        .env("INSIGHTS_DATA_DIR", &data_dir)
        .env("INSIGHTS_ML_ENABLED", "false")
        .env("INSIGHTS_DB_MIN_CONNECTIONS", "0")
        .env("INSIGHTS_DB_MAX_CONNECTIONS", "8")
        .env("INSIGHTS_RATE_LIMIT_IP_PER_MIN", "1000000")
        .env("INSIGHTS_RATE_LIMIT_USER_PER_MIN", "1000000")
        .env("INSIGHTS_RATE_LIMIT_AUTH_IP_PER_MIN", "1000000")
        .env("RUST_LOG", "warn")
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("insights serve starts");
    let cert = data_dir.join("tls/cert.pem");
    let started = eventually(Duration::from_secs(30), || {
        let cert = cert.clone();
        async move {
            let Ok(pem) = std::fs::read(&cert) else {
                return false;
            };
            client_trusting(&pem)
                .get(format!("https://localhost:{port}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
    assert!(started, "node {name} answers");
    Node {
        name: name.to_owned(),
        base: format!("https://localhost:{port}"),
        client: client_trusting(&std::fs::read(&cert).unwrap()),
        child,
    }
}

impl Node {
    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        let mut req = self.client.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send().await.unwrap()).await
    }
}

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
    let a = serve(&format!("a-{id}"), &harness.db_url, &secret, &prefix).await;
    let b = serve(&format!("b-{id}"), &harness.db_url, &secret, &prefix).await;
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
        let (rows, counted): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM customer_interactions WHERE customer_id = c.id), c.interaction_count
               FROM customers c WHERE c.id = $1::uuid",
        )
        .bind(customer)
        .fetch_one(&harness.pool)
        .await
        .unwrap();
        assert_eq!((rows, counted), (15, 15), "counters equal rows");
    }
    let duplicated: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT customer_id, pattern_type FROM behavior_patterns
                                GROUP BY 1, 2 HAVING count(*) > 1) d",
    )
    .fetch_one(&harness.pool)
    .await
    .unwrap();
    assert_eq!(duplicated, 0, "no duplicate patterns");
}
