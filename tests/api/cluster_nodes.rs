//! A cluster of real `insights serve` processes joined over ractor_cluster (issue 14), with fast lease
//! timings: any node answers any request (forwarded to the owner), a dashboard on a node that does not
//! own the organization sees its events in order, and `kill -9` of the owner loses no acknowledged
//! interaction: requests wait for the takeover, a retry with an idempotency key returns the original
//! row, and the counters equal the rows.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::SinkExt as _;
use insights::domain::OrganizationId;
use serde_json::{Value, json};
use sqlx::PgPool;

use insights::cluster::placement::{self, Member, ShardKey};

use crate::helpers::{Reply, eventually, free_port, interaction, test_config};
use crate::procs::{FaultProxy, Node, Spec, events, next, serve, tail};

const COOKIE: &str = "test-cookie-0123456789abcdef0123456789abcdef";

/// A cluster file and the environment its nodes share.
struct Cluster {
    names: Vec<String>,
    /// Each node's cluster address, as the file gives it.
    addresses: Vec<String>,
    /// Each node's `roles` line in the file, if not the default.
    roles: Vec<Option<&'static str>>,
    file: PathBuf,
    db_url: String,
    secret: String,
    prefix: String,
    pool: PgPool,
    /// Keeps the test database until the end.
    _harness: crate::helpers::TestApp,
}

impl Cluster {
    fn spec(&self) -> Spec<'_> {
        self.spec_on(&self.db_url)
    }

    /// The environment of a node that reaches PostgreSQL at `db_url`.
    fn spec_on<'a>(&'a self, db_url: &'a str) -> Spec<'a> {
        let env = [
            ("INSIGHTS_CLUSTER_FILE", self.file.display().to_string()),
            ("INSIGHTS_CLUSTER_COOKIE", COOKIE.to_owned()),
            ("INSIGHTS_LEASE_TTL_MS", "2000".to_owned()),
            ("INSIGHTS_HEARTBEAT_MS", "400".to_owned()),
            ("INSIGHTS_CLUSTER_PING_MS", "300".to_owned()),
            ("INSIGHTS_CLUSTER_RELOAD_MS", "200".to_owned()),
            ("INSIGHTS_CLUSTER_FAILOVER_WAIT_MS", "4000".to_owned()),
            ("INSIGHTS_CLUSTER_JOIN_GRACE_MS", "500".to_owned()),
            ("INSIGHTS_CLUSTER_REBALANCE_MS", "200".to_owned()),
            ("INSIGHTS_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", "1500".to_owned()),
        ];
        Spec {
            db_url,
            secret: &self.secret,
            prefix: &self.prefix,
            env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }
    }
}

/// Names `n` nodes on 127.0.1.x, writes a file listing the first `listed`, and prepares the database
/// with `orgs` organizations.
async fn cluster(n: usize, listed: usize, orgs: usize) -> (Cluster, Vec<crate::helpers::TestOrg>) {
    let config = test_config();
    let secret = config.jwt_secret.as_ref().unwrap().expose().to_owned();
    let prefix = config.redis_prefix.clone();
    let mut harness = crate::helpers::start(config).await;
    let mut made = Vec::new();
    for _ in 0..orgs {
        made.push(harness.create_org().await);
    }
    harness.app.take().unwrap().shutdown().await.unwrap();
    let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let names: Vec<String> = (0..n)
        .map(|i| format!("{}-{id}", ["a", "b", "c", "d"][i]))
        .collect();
    let addresses: Vec<String> = (0..n)
        .map(|i| format!("127.0.1.{}:{}", i + 1, free_port()))
        .collect();
    let dir = std::env::temp_dir().join(format!("insights-cluster-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cluster.toml");
    let c = Cluster {
        names,
        addresses,
        roles: vec![None; n],
        file,
        db_url: harness.db_url.clone(),
        secret,
        prefix,
        pool: harness.pool.clone(),
        _harness: harness,
    };
    c.list(&(0..listed).collect::<Vec<_>>());
    (c, made)
}

impl Cluster {
    /// The check every scenario ends with (no customer has a pattern stored twice, as two owners would
    /// do), then the cluster's files go.
    async fn finish(self) {
        assert_eq!(
            crate::procs::duplicate_patterns(&self.pool).await,
            0,
            "no duplicate patterns"
        );
        let _ = std::fs::remove_dir_all(self.file.parent().unwrap());
    }

    /// Rewrites the cluster file to list these nodes (by index).
    fn list(&self, nodes: &[usize]) {
        self.list_in(&self.file, nodes);
    }

    /// Writes a cluster file at `path` listing these nodes (by index).
    fn list_in(&self, path: &std::path::Path, nodes: &[usize]) {
        let text: String = nodes
            .iter()
            .map(|&i| {
                let roles = self.roles[i]
                    .map(|r| format!("roles = {r}\n"))
                    .unwrap_or_default();
                format!(
                    "[[node]]\nname = \"{}\"\naddress = \"{}\"\n{roles}",
                    self.names[i], self.addresses[i]
                )
            })
            .collect();
        // Written aside and renamed over, as editors do.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
}

/// Waits until every node reaches every other.
async fn joined(nodes: &[&Node], token: &str) {
    for node in nodes {
        let ok = eventually(Duration::from_secs(20), || async {
            let v = node.get("/api/v1/cluster", Some(token)).await.body;
            v["members"].as_array().is_some_and(|m| {
                m.iter()
                    .filter(|m| m["configured"] == true)
                    .all(|m| m["reachable"] == true && m["state"] == "up")
            })
        })
        .await;
        let view = node.get("/api/v1/cluster", Some(token)).await.body;
        assert!(
            ok,
            "{} reaches every member: {view}\n{}",
            node.name,
            tail(&node.log)
        );
    }
}

async fn owner(pool: &PgPool, org: OrganizationId) -> Option<String> {
    sqlx::query_scalar("SELECT owner_node FROM org_ownership WHERE organization_id = $1 AND NOT released")
        .bind(org.as_uuid())
        .fetch_optional(pool)
        .await
        .unwrap()
}

fn keyed(customer: &str, key: &str) -> Value {
    let mut body = interaction(customer, "chat", Some("the cluster answers"));
    body["idempotencyKey"] = json!(key);
    body
}

#[tokio::test]
async fn any_node_serves_any_organization_and_an_owner_killed_loses_nothing_acknowledged() {
    let (c, orgs) = cluster(3, 3, 1).await;
    let org = &orgs[0];
    let spec = c.spec();
    let mut nodes = Vec::new();
    for name in &c.names {
        nodes.push(serve(name, &spec).await);
    }
    let token = nodes[0].login(org).await;
    joined(&nodes.iter().collect::<Vec<_>>(), &token).await;
    let customer = nodes[1].customer(&token, "c-1").await;

    // A dashboard on every node, recording what it receives.
    let mut watchers = Vec::new();
    for node in &nodes {
        watchers.push(crate::procs::Watcher::start(node, &token).await);
    }

    // Steady state: ingests spread over the three nodes all succeed, stored once by one owner.
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..30 {
        let key = format!("steady-{i}");
        let r = nodes[i % 3]
            .post("/api/v1/interactions", Some(&token), keyed(&customer, &key))
            .await;
        let id = r.expect(201)["id"].as_str().unwrap().to_owned();
        acked.insert(key, id);
    }
    let home = owner(&c.pool, org.id).await.expect("an owner");
    let log: i64 = sqlx::query_scalar("SELECT count(*) FROM org_ownership_log WHERE organization_id = $1")
        .bind(org.id.as_uuid())
        .fetch_one(&c.pool)
        .await
        .unwrap();
    assert_eq!(log, 1, "one owner took the organization once");
    let owner_at = nodes.iter().position(|n| n.name == home).unwrap();
    let watcher_at = (owner_at + 1) % 3;

    // A dashboard on a node that does not own the organization sees its events, in order.
    let mut socket = nodes[watcher_at].ws(&token).await;
    let ready = next(&mut socket, Duration::from_secs(5)).await.unwrap();
    assert_eq!(ready["type"], "ready", "{ready}");
    let start = ready["lastSeq"].as_u64().unwrap();
    for i in 0..5 {
        let via = &nodes[(owner_at + 2) % 3];
        let key = format!("live-{i}");
        let r = via
            .post("/api/v1/interactions", Some(&token), keyed(&customer, &key))
            .await;
        acked.insert(key, r.expect(201)["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let Some(frame) = next(&mut socket, Duration::from_secs(5)).await else {
            break;
        };
        assert_ne!(frame["type"], "resync", "no resync in steady state");
        seen.extend(
            events(&frame)
                .into_iter()
                .filter(|(_, t)| t == "interaction.created")
                .map(|(s, _)| s),
        );
    }
    assert_eq!(
        seen.len(),
        5,
        "the five events reached the non-owner's dashboard: {seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]) && seen[0] > start,
        "in order: {seen:?}"
    );

    // Before the kill, every dashboard, on whichever node, has every event, in order, without a resync.
    let before: Vec<String> = acked.values().cloned().collect();
    for w in &watchers {
        let complete = eventually(Duration::from_secs(10), || async {
            let got = w.watched();
            before.iter().all(|id| got.before_resync().contains(&id.as_str()))
        })
        .await;
        let got = w.watched();
        assert!(
            complete && got.resyncs() == 0,
            "{} got every event before the kill: {got:?}",
            w.node
        );
        assert!(got.in_order(), "{}: {got:?}", w.node);
    }

    // Concurrent keyed load over all three nodes (its own customer) runs through the kill: clients
    // retry a 503 or a dead connection on the next node with the same key.
    let load_customer = nodes[0].customer(&token, "c-load").await;
    let load = crate::procs::Load::start(
        &nodes.iter().collect::<Vec<_>>(),
        &token,
        &load_customer,
        "kill",
        3,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    // kill -9 of the owner: requests through the others wait for the takeover and are served.
    nodes[owner_at].kill();
    let survivors: Vec<&Node> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != owner_at)
        .map(|(_, n)| n)
        .collect();
    let killed = std::time::Instant::now();
    let mut lost_unkeyed = 0;
    for i in 0..10 {
        let key = format!("after-{i}");
        let r: Reply = survivors[i % 2]
            .post("/api/v1/interactions", Some(&token), keyed(&customer, &key))
            .await;
        match r.status.as_u16() {
            201 | 200 => {
                acked.insert(key, r.body["id"].as_str().unwrap().to_owned());
            }
            503 => lost_unkeyed += 1,
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    let served_again = killed.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let loaded = load.stop().await;
    crate::procs::check_loaded(&c.pool, &load_customer, &loaded).await;
    eprintln!(
        "under load through the kill: {} acknowledged, attempts retried {:?}",
        loaded.acked.len(),
        loaded.retried_by
    );
    assert_eq!(
        lost_unkeyed, 0,
        "keyed requests are served once a survivor took over"
    );
    let new_owner = owner(&c.pool, org.id).await.expect("a new owner");
    assert_ne!(new_owner, home);
    let reasons: Vec<(String, String)> = sqlx::query_as(
        "SELECT owner_node, reason FROM org_ownership_log WHERE organization_id = $1 ORDER BY epoch",
    )
    .bind(org.id.as_uuid())
    .fetch_all(&c.pool)
    .await
    .unwrap();
    assert_eq!(
        reasons[1],
        (new_owner.clone(), "takeover".to_owned()),
        "{reasons:?}"
    );
    // A retried request returns the original row.
    let again = survivors[0]
        .post("/api/v1/interactions", Some(&token), keyed(&customer, "steady-3"))
        .await;
    assert_eq!(again.expect(200)["id"].as_str().unwrap(), acked["steady-3"]);

    // Every acknowledged interaction is stored with its id, once; the counter equals the rows.
    for (key, id) in &acked {
        let stored: Option<String> =
            sqlx::query_scalar("SELECT id::text FROM customer_interactions WHERE idempotency_key = $1")
                .bind(key)
                .fetch_optional(&c.pool)
                .await
                .unwrap();
        assert_eq!(
            stored.as_deref(),
            Some(id.as_str()),
            "{key} stored as acknowledged"
        );
    }
    let (rows, counted) = crate::procs::rows_and_counter(&c.pool, &customer).await;
    assert_eq!(rows, acked.len() as i64, "no row without an acknowledgement");
    assert_eq!(counted, rows, "counters equal rows");
    // Across the takeover: numbers still increase between resyncs on every connection; the survivors'
    // dashboards were told to resync (the new owner cannot replay what the dead one held) and then
    // follow the new owner.
    for w in &watchers {
        let got = w.watched();
        assert!(got.in_order(), "{}: {got:?}", w.node);
        if w.node == home {
            assert!(got.closed, "the killed node's dashboard connection ended");
        } else {
            assert!(!got.closed, "{}'s dashboard stays connected", w.node);
            let last = acked["after-9"].as_str();
            let followed = eventually(Duration::from_secs(10), || async {
                w.watched().frames.iter().flatten().any(|(_, id)| id == last)
            })
            .await;
            assert!(followed, "{} follows the new owner: {:?}", w.node, w.watched());
        }
    }
    eprintln!("served again {served_again:?} after kill -9 of the owner");
    c.finish().await;
}

/// The rendezvous home of `org` among `names` (all with the default role and weight).
fn home_of(org: OrganizationId, names: &[&String]) -> String {
    let members: Vec<Member> = names
        .iter()
        .map(|n| Member {
            name: (*n).clone(),
            weight: 1.0,
            actors: true,
        })
        .collect();
    placement::home(ShardKey::org(org), &members).unwrap().to_owned()
}

async fn wait_owner(pool: &PgPool, org: OrganizationId, want: &str) -> bool {
    eventually(Duration::from_secs(20), || async {
        owner(pool, org).await.as_deref() == Some(want)
    })
    .await
}

/// Reads `n` `interaction.created` events from a socket, failing on a resync.
async fn created_events(socket: &mut crate::procs::Socket, n: usize) -> Vec<u64> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let Some(frame) = next(socket, Duration::from_secs(10)).await else {
            break;
        };
        assert_ne!(frame["type"], "resync", "a hand-off needs no resync");
        seen.extend(
            events(&frame)
                .into_iter()
                .filter(|(_, t)| t == "interaction.created")
                .map(|(s, _)| s),
        );
    }
    seen
}

#[tokio::test]
async fn organizations_move_by_hand_off_when_nodes_join_leave_and_come_back() {
    // Eighteen organizations, so that some are at home on each node (a miss has odds of 1 in 1,500).
    let (c, orgs) = cluster(3, 2, 18).await;
    let spec = c.spec();
    let a = serve(&c.names[0], &spec).await;
    let b = serve(&c.names[1], &spec).await;
    let tokens: Vec<String> = {
        let mut t = Vec::new();
        for org in &orgs {
            t.push(a.login(org).await);
        }
        t
    };
    joined(&[&a, &b], &tokens[0]).await;
    let names = &c.names;
    let all = [&names[0], &names[1], &names[2]];
    // The organization that will move to c when it joins, and back when it leaves.
    let moving = orgs
        .iter()
        .position(|o| home_of(o.id, &all) == names[2])
        .expect("one of eighteen organizations is at home on c");
    let org = &orgs[moving];
    let token = &tokens[moving];
    let customer = a.customer(token, "mover").await;
    // Placed at its home among the two running nodes by its first request, wherever it lands.
    b.post("/api/v1/interactions", Some(token), keyed(&customer, "m-0"))
        .await
        .expect(201);
    let first = home_of(org.id, &[&names[0], &names[1]]);
    assert_eq!(owner(&c.pool, org.id).await.as_deref(), Some(first.as_str()));
    // Dashboards on both nodes record everything through the join and the leave, while keyed load
    // runs through both nodes: no event may go missing on a connection never told to resync.
    let watchers = [
        crate::procs::Watcher::start(&a, token).await,
        crate::procs::Watcher::start(&b, token).await,
    ];
    let mut delivered: Vec<String> = Vec::new();
    let joining = a.customer(token, "mover-join").await;
    let load = crate::procs::Load::start(&[&a, &b], token, &joining, "join", 2);

    // c joins: added to the file and started; the organization moves to it by hand-off.
    c.list(&[0, 1, 2]);
    let cn = serve(&names[2], &spec).await;
    joined(&[&a, &b, &cn], token).await;
    assert!(
        wait_owner(&c.pool, org.id, &names[2]).await,
        "the organization moves to c"
    );
    for i in 1..=3 {
        let r = a
            .post(
                "/api/v1/interactions",
                Some(token),
                keyed(&customer, &format!("m-{i}")),
            )
            .await;
        delivered.push(r.expect(201)["id"].as_str().unwrap().to_owned());
    }
    let loaded = load.stop().await;
    crate::procs::check_loaded(&c.pool, &joining, &loaded).await;
    delivered.extend(loaded.acked.values().cloned());
    for w in &watchers {
        crate::procs::check_complete(w, &delivered, Duration::from_secs(10)).await;
    }
    // A dashboard that resumes on another node than the owner gets the exact replay: the replay buffer
    // moved with the organization.
    let recorded: Vec<u64> = watchers[0]
        .watched()
        .frames
        .iter()
        .flatten()
        .map(|(seq, _)| *seq)
        .collect();
    let seen = recorded[recorded.len() - 3..].to_vec();
    let mut resumed = a.ws(token).await;
    assert_eq!(
        next(&mut resumed, Duration::from_secs(5)).await.unwrap()["type"],
        "ready"
    );
    resumed
        .send(tokio_tungstenite::tungstenite::Message::text(
            json!({"type": "resume", "lastSeq": seen[0] - 1}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(
        created_events(&mut resumed, 3).await,
        seen,
        "an exact replay on a non-owner"
    );
    let reasons: Vec<(String, String)> = sqlx::query_as(
        "SELECT owner_node, reason FROM org_ownership_log WHERE organization_id = $1 ORDER BY epoch",
    )
    .bind(org.id.as_uuid())
    .fetch_all(&c.pool)
    .await
    .unwrap();
    assert_eq!(
        reasons.last().unwrap(),
        &(names[2].clone(), "handoff".to_owned()),
        "{reasons:?}"
    );

    // c is removed from the file: it hands the organization back and is no longer ready.
    let leaving_customer = a.customer(token, "mover-leave").await;
    let load = crate::procs::Load::start(&[&a, &b], token, &leaving_customer, "leave", 2);
    c.list(&[0, 1]);
    assert!(
        wait_owner(&c.pool, org.id, &first).await,
        "c hands the organization back"
    );
    let leaving = eventually(Duration::from_secs(10), || async {
        cn.get("/readyz", None).await.status == 503
    })
    .await;
    assert!(leaving, "a removed node answers /readyz 503");
    let r = a
        .post("/api/v1/interactions", Some(token), keyed(&customer, "m-4"))
        .await;
    delivered.push(r.expect(201)["id"].as_str().unwrap().to_owned());
    let loaded = load.stop().await;
    crate::procs::check_loaded(&c.pool, &leaving_customer, &loaded).await;
    delivered.extend(loaded.acked.values().cloned());
    for w in &watchers {
        crate::procs::check_complete(w, &delivered, Duration::from_secs(10)).await;
        let got = w.watched();
        assert_eq!(
            got.resyncs(),
            0,
            "{}: no resync across hand-offs: {got:?}",
            w.node
        );
        assert!(got.in_order(), "{}: {got:?}", w.node);
    }
    eprintln!(
        "hand-offs under load: {} events on each dashboard, none missing",
        delivered.len()
    );

    // Single ownership all along: each epoch has one owner and the log has no gaps.
    let epochs: Vec<(i64,)> =
        sqlx::query_as("SELECT epoch FROM org_ownership_log WHERE organization_id = $1 ORDER BY epoch")
            .bind(org.id.as_uuid())
            .fetch_all(&c.pool)
            .await
            .unwrap();
    assert!(
        epochs.iter().enumerate().all(|(i, (e,))| *e == i as i64 + 1),
        "{epochs:?}"
    );
    let (rows, counted) = crate::procs::rows_and_counter(&c.pool, &customer).await;
    assert_eq!((rows, counted), (5, 5), "counters equal rows");

    // b crashes: its organization is taken over by a; restarted, b gets it back by hand-off.
    let pair = [&names[0], &names[1]];
    // One that stays on b whether c is up or not.
    let at_b = orgs
        .iter()
        .position(|o| home_of(o.id, &pair) == names[1] && home_of(o.id, &all) == names[1])
        .expect("one of eighteen organizations is at home on b");
    let (org_b, token_b) = (&orgs[at_b], &tokens[at_b]);
    let customer_b = a.customer(token_b, "returner").await;
    a.post("/api/v1/interactions", Some(token_b), keyed(&customer_b, "r-0"))
        .await
        .expect(201);
    assert_eq!(owner(&c.pool, org_b.id).await.as_deref(), Some(names[1].as_str()));
    let port_b = b.port;
    drop(b);
    a.post("/api/v1/interactions", Some(token_b), keyed(&customer_b, "r-1"))
        .await
        .expect(201);
    assert_eq!(
        owner(&c.pool, org_b.id).await.as_deref(),
        Some(names[0].as_str()),
        "a took over"
    );
    let b = crate::procs::serve_on(&names[1], port_b, &spec).await;
    joined(&[&a, &b], token_b).await;
    assert!(
        wait_owner(&c.pool, org_b.id, &names[1]).await,
        "restarted, b gets its organization back"
    );
    let log: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT owner_node, owner_incarnation, reason FROM org_ownership_log
          WHERE organization_id = $1 ORDER BY epoch",
    )
    .bind(org_b.id.as_uuid())
    .fetch_all(&c.pool)
    .await
    .unwrap();
    let reasons: Vec<&str> = log.iter().map(|(_, _, r)| r.as_str()).collect();
    assert_eq!(reasons, ["first", "takeover", "handoff"], "{log:?}");
    assert!(
        log[2].1 > log[0].1,
        "the restarted b has a new incarnation: {log:?}"
    );
    b.post("/api/v1/interactions", Some(token_b), keyed(&customer_b, "r-2"))
        .await
        .expect(201);
    c.finish().await;
}

/// Sends a keyed ingest and returns (status, error code or id).
async fn try_ingest(node: &Node, token: &str, customer: &str, key: &str) -> (u16, String) {
    let r = node
        .post("/api/v1/interactions", Some(token), keyed(customer, key))
        .await;
    let detail = if r.status.is_success() {
        r.body["id"].as_str().unwrap_or_default().to_owned()
    } else {
        r.body["error"]["code"].as_str().unwrap_or_default().to_owned()
    };
    (r.status.as_u16(), detail)
}

fn signal(node: &Node, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &node.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

#[tokio::test]
async fn partitions_and_pauses_keep_one_owner_and_lose_nothing_acknowledged() {
    let (mut c, orgs) = cluster(2, 2, 8).await;
    let pair = [&c.names[0], &c.names[1]];
    let at_b = orgs
        .iter()
        .position(|o| home_of(o.id, &pair) == c.names[1])
        .expect("one of eight organizations is at home on b");
    let org = &orgs[at_b];
    // b's cluster listener and its PostgreSQL are each behind a proxy that can cut the link.
    let b_real = c.addresses[1].clone();
    let link = FaultProxy::start("127.0.1.2:0".parse().unwrap(), b_real.parse().unwrap()).await;
    c.addresses[1] = link.addr.to_string();
    c.list(&[0, 1]);
    let pg = FaultProxy::start("127.0.0.1:0".parse().unwrap(), "127.0.0.1:5432".parse().unwrap()).await;
    let db_name = c.db_url.rsplit('/').next().unwrap().to_owned();
    let b_db = format!("postgres://postgres@{}/{db_name}", pg.addr);
    // Six missed pings (about 2 s) before a peer counts as down: on a loaded machine three (0.9 s) can
    // pass between pausing b and sending the in-flight request of scenario 3, which then never reaches b.
    let slow_misses = ("INSIGHTS_CLUSTER_PING_MISSES".to_owned(), "6".to_owned());
    let mut a_spec = c.spec();
    a_spec.env.push(slow_misses.clone());
    let a = serve(&c.names[0], &a_spec).await;
    let mut b_spec = c.spec_on(&b_db);
    b_spec
        .env
        .push(("INSIGHTS_CLUSTER_LISTEN".to_owned(), b_real.clone()));
    b_spec.env.push(slow_misses);
    let b = serve(&c.names[1], &b_spec).await;
    let token = a.login(org).await;
    joined(&[&a, &b], &token).await;
    let customer = a.customer(&token, "p-1").await;
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    let mut send = async |node: &Node, key: &str| -> (u16, String) {
        let (status, detail) = try_ingest(node, &token, &customer, key).await;
        if status == 201 || status == 200 {
            acked.insert(key.to_owned(), detail.clone());
        }
        (status, detail)
    };
    let watchers = [
        crate::procs::Watcher::start(&a, &token).await,
        crate::procs::Watcher::start(&b, &token).await,
    ];
    assert_eq!(send(&a, "p-0").await.0, 201);
    assert_eq!(owner(&c.pool, org.id).await.as_deref(), Some(c.names[1].as_str()));
    // Concurrent keyed load through both nodes (its own customer) runs through every fault below.
    let load_customer = a.customer(&token, "p-load").await;
    let load = crate::procs::Load::start(&[&a, &b], &token, &load_customer, "cut", 2);

    // 1. a and b cut from each other, both still on PostgreSQL: b keeps the organization, and a
    //    answers 503 node_unavailable (consistency over availability) until the link heals.
    link.cut(true);
    let cut = eventually(Duration::from_secs(10), || async {
        let v = a.get("/api/v1/cluster", Some(&token)).await.body;
        v["members"][1]["reachable"] == false
    })
    .await;
    assert!(cut, "a notices the silent partition by its pings");
    assert_eq!(send(&a, "p-1").await, (503, "node_unavailable".to_owned()));
    assert_eq!(send(&b, "p-2").await.0, 201, "b still serves its organization");
    link.cut(false);
    joined(&[&a, &b], &token).await;
    assert_eq!(send(&a, "p-1").await.0, 201, "healed: the same request is served");
    assert_eq!(
        owner(&c.pool, org.id).await.as_deref(),
        Some(c.names[1].as_str()),
        "no takeover across the cut"
    );

    // 2. b cut from PostgreSQL: it fences itself, a takes over once b's lease expired.
    pg.cut(true);
    let fenced = eventually(Duration::from_secs(10), || async {
        b.get("/readyz", None).await.status == 503
    })
    .await;
    assert!(fenced, "a node cut from PostgreSQL is not ready");
    let (status, detail) = send(&a, "p-3").await;
    assert_eq!(status, 201, "a took the organization over: {detail}");
    assert_eq!(owner(&c.pool, org.id).await.as_deref(), Some(c.names[0].as_str()));
    pg.cut(false);
    let back = eventually(Duration::from_secs(10), || async {
        b.get("/readyz", None).await.status == 200
    })
    .await;
    assert!(back, "b is ready again once PostgreSQL answers");
    assert_eq!(send(&b, "p-4").await.0, 201, "b forwards to the new owner");

    // Back and reachable, b is the organization's home again: a hands it back.
    assert!(
        wait_owner(&c.pool, org.id, &c.names[1]).await,
        "b gets its organization back"
    );
    // The hand-off is over for a only once b's answer to it arrived (a holds its requests meanwhile):
    // a request through a that b serves proves it, so the pause below cannot fall inside the hand-off
    // (a request held by a then never reached b, and a rightly serves it once b's lease expired).
    assert_eq!(send(&a, "p-4a").await.0, 201, "a forwards to b again");

    // 3. The owner paused past its lease, then continued: a takes over, the paused node's actor
    //    cannot write (fenced), and its requests reach the new owner.
    signal(&b, "-STOP");
    // A request without an idempotency key in flight to the paused owner: its outcome is unknown, so
    // it is answered 503 node_unavailable rather than retried (a retry could store it twice).
    let mut unkeyed = interaction(&customer, "web", Some("no key, in flight"));
    unkeyed["timestamp"] = json!(chrono::Utc::now().to_rfc3339());
    let r = a.post("/api/v1/interactions", Some(&token), unkeyed).await;
    assert_eq!(r.status.as_u16(), 503, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "node_unavailable", "{}", r.body);
    let (status, detail) = send(&a, "p-5").await;
    signal(&b, "-CONT");
    assert_eq!(status, 201, "a takes over from the paused owner: {detail}");
    assert_eq!(owner(&c.pool, org.id).await.as_deref(), Some(c.names[0].as_str()));
    let mut served = false;
    for _ in 0..3 {
        let (status, detail) = send(&b, "p-6").await;
        assert!(
            status == 201 || status == 200 || status == 503,
            "{status} {detail}"
        );
        if status != 503 {
            served = true;
            break;
        }
    }
    assert!(served, "the continued node serves again by forwarding");
    let loaded = load.stop().await;
    crate::procs::check_loaded(&c.pool, &load_customer, &loaded).await;
    eprintln!(
        "under load through cuts and pause: {} acknowledged, attempts retried {:?}",
        loaded.acked.len(),
        loaded.retried_by
    );

    // Through the cuts, the pause and the takeovers, each dashboard saw numbers increase between resyncs.
    for w in &watchers {
        let got = w.watched();
        assert!(got.in_order(), "{}: {got:?}", w.node);
        assert!(
            got.frames.iter().flatten().count() >= 3,
            "{} received events: {got:?}",
            w.node
        );
    }

    // Every acknowledged interaction is stored with its id, once; counters equal rows; the log
    // shows one owner per epoch, each takeover only after the previous owner's heartbeat was stale.
    for (key, id) in &acked {
        let stored: Vec<String> =
            sqlx::query_scalar("SELECT id::text FROM customer_interactions WHERE idempotency_key = $1")
                .bind(key)
                .fetch_all(&c.pool)
                .await
                .unwrap();
        assert_eq!(stored, std::slice::from_ref(id), "{key}");
    }
    let (rows, counted) = crate::procs::rows_and_counter(&c.pool, &customer).await;
    // The unacknowledged request may or may not have been stored; nothing else was.
    let unacked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM customer_interactions WHERE content = 'no key, in flight'")
            .fetch_one(&c.pool)
            .await
            .unwrap();
    assert!(unacked <= 1);
    assert_eq!(rows, acked.len() as i64 + unacked);
    assert_eq!(counted, rows, "counters equal rows");
    let log: Vec<(i64, String, String, bool)> = sqlx::query_as(
        "SELECT epoch, owner_node, reason,
                coalesce(previous_heartbeat_at < acquired_at - interval '2 seconds', true)
           FROM org_ownership_log WHERE organization_id = $1 ORDER BY epoch",
    )
    .bind(org.id.as_uuid())
    .fetch_all(&c.pool)
    .await
    .unwrap();
    let reasons: Vec<&str> = log.iter().map(|l| l.2.as_str()).collect();
    // The continued node is the organization's home again, so it may already have been handed back.
    assert_eq!(
        reasons[..4],
        ["first", "takeover", "handoff", "takeover"],
        "{log:?}"
    );
    assert!(reasons[4..].iter().all(|r| *r == "handoff"), "{log:?}");
    assert!(
        log.iter().filter(|l| l.2 == "takeover").all(|l| l.3),
        "takeovers only after the lease: {log:?}"
    );
    assert!(
        log.iter().enumerate().all(|(i, l)| l.0 == i as i64 + 1),
        "{log:?}"
    );
    c.finish().await;
}

#[tokio::test]
async fn organizations_stay_put_while_the_nodes_run_different_files() {
    let (c, orgs) = cluster(3, 3, 12).await;
    let names = &c.names;
    let all = [&names[0], &names[1], &names[2]];
    let on_c = orgs
        .iter()
        .position(|o| home_of(o.id, &all) == names[2])
        .expect("one of twelve organizations is at home on c");
    // Each node reads its own copy of the file, as on separate machines.
    let files: Vec<PathBuf> = (0..3)
        .map(|i| c.file.with_file_name(format!("node-{i}.toml")))
        .collect();
    let mut nodes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        c.list_in(&files[i], &[0, 1, 2]);
        let mut spec = c.spec();
        spec.env
            .push(("INSIGHTS_CLUSTER_FILE".to_owned(), files[i].display().to_string()));
        nodes.push(serve(name, &spec).await);
    }
    let token = nodes[0].login(&orgs[on_c]).await;
    joined(&nodes.iter().collect::<Vec<_>>(), &token).await;
    let customer = nodes[0].customer(&token, "stay").await;
    nodes[0]
        .post("/api/v1/interactions", Some(&token), keyed(&customer, "s-0"))
        .await
        .expect(201);
    assert_eq!(
        owner(&c.pool, orgs[on_c].id).await.as_deref(),
        Some(names[2].as_str())
    );

    // Only c's file drops c: c leaves, but a and b still run the old file, so nothing moves.
    c.list_in(&files[2], &[0, 1]);
    let disagree = eventually(Duration::from_secs(10), || async {
        nodes[0].get("/api/v1/cluster", Some(&token)).await.body["hashesAgree"] == false
    })
    .await;
    assert!(disagree, "a sees that the nodes run different files");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        owner(&c.pool, orgs[on_c].id).await.as_deref(),
        Some(names[2].as_str()),
        "no hand-off while the files disagree"
    );
    let ready = nodes[2].get("/readyz", None).await;
    assert_eq!(ready.status, 503, "c is leaving all the same");

    // Once every file agrees, c hands the organization to its home among a and b.
    c.list_in(&files[0], &[0, 1]);
    c.list_in(&files[1], &[0, 1]);
    let home = home_of(orgs[on_c].id, &[&names[0], &names[1]]);
    assert!(
        wait_owner(&c.pool, orgs[on_c].id, &home).await,
        "moved once the files agree"
    );
    let agree = eventually(Duration::from_secs(10), || async {
        nodes[0].get("/api/v1/cluster", Some(&token)).await.body["hashesAgree"] == true
    })
    .await;
    assert!(agree);
    nodes[1]
        .post("/api/v1/interactions", Some(&token), keyed(&customer, "s-1"))
        .await
        .expect(201);
    c.finish().await;
}

#[tokio::test]
async fn an_owner_without_a_model_scores_on_the_ml_members() {
    let (mut c, orgs) = cluster(2, 2, 1).await;
    // a answers the API and owns organizations without a model; m only scores.
    c.roles[1] = Some(r#"["ml"]"#);
    c.list(&[0, 1]);
    let a = serve(&c.names[0], &c.spec()).await;
    let mut m_spec = c.spec();
    m_spec.env.extend(crate::procs::model_env());
    let m = serve(&c.names[1], &m_spec).await;
    let token = a.login(&orgs[0]).await;
    joined(&[&a], &token).await;
    let customer = a.customer(&token, "ml-1").await;
    let mut body = keyed(&customer, "ml-0");
    body["content"] = json!("This is terrible, I want a refund right now");
    a.post("/api/v1/interactions", Some(&token), body)
        .await
        .expect(201);
    let scored = eventually(Duration::from_secs(30), || async {
        let label: Option<String> = sqlx::query_scalar(
            "SELECT sentiment_label::text FROM customer_interactions WHERE idempotency_key = 'ml-0'",
        )
        .fetch_one(&c.pool)
        .await
        .unwrap();
        label.is_some()
    })
    .await;
    assert!(
        scored,
        "the text was scored on the ml member; a's log:\n{}",
        tail(&a.log)
    );
    let label: String = sqlx::query_scalar(
        "SELECT sentiment_label::text FROM customer_interactions WHERE idempotency_key = 'ml-0'",
    )
    .fetch_one(&c.pool)
    .await
    .unwrap();
    assert_eq!(label, "negative");
    // The ml-only member owns nothing and serves only the operations endpoints.
    assert_eq!(
        owner(&c.pool, orgs[0].id).await.as_deref(),
        Some(c.names[0].as_str())
    );
    assert_eq!(m.get("/readyz", None).await.status, 200);
    m.get("/api/v1/me", Some(&token))
        .await
        .expect_error(404, "route_not_found");
    c.finish().await;
}

/// A cluster CA and, for each name, a certificate it signed (PEM files in `dir`): `ca.pem`,
/// `<name>.pem`, `<name>.key`.
fn cluster_ca(dir: &std::path::Path, names: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for name in names {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![(*name).to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

fn tls_env(spec: &mut Spec<'_>, dir: &std::path::Path, name: &str) {
    for (k, v) in [
        ("INSIGHTS_CLUSTER_TLS_CERT", dir.join(format!("{name}.pem"))),
        ("INSIGHTS_CLUSTER_TLS_KEY", dir.join(format!("{name}.key"))),
        ("INSIGHTS_CLUSTER_TLS_CA", dir.join("ca.pem")),
    ] {
        spec.env.push((k.to_owned(), v.display().to_string()));
    }
}

#[tokio::test]
async fn the_cluster_port_speaks_mutual_tls_and_a_stalled_handshake_blocks_nobody() {
    let (c, orgs) = cluster(2, 2, 1).await;
    let names = &c.names;
    let pki = c.file.with_file_name("pki");
    let rogue = c.file.with_file_name("rogue");
    cluster_ca(&pki, &[&names[0], &names[1]]);
    cluster_ca(&rogue, &[&names[1]]);
    let spec_for = |dir: &std::path::Path, name: &str| {
        let mut spec = c.spec();
        tls_env(&mut spec, dir, name);
        spec
    };
    // b first: a (the lower name) dials it, into b's listener, where a client that opened the port
    // and never starts TLS is already waiting.
    let b = serve(&names[1], &spec_for(&pki, &names[1])).await;
    let _stalled = tokio::net::TcpStream::connect(c.addresses[1].as_str())
        .await
        .unwrap();
    let a = serve(&names[0], &spec_for(&pki, &names[0])).await;
    let token = a.login(&orgs[0]).await;
    joined(&[&a, &b], &token).await;
    let customer = b.customer(&token, "tls").await;
    for (i, node) in [&a, &b].into_iter().enumerate() {
        node.post(
            "/api/v1/interactions",
            Some(&token),
            keyed(&customer, &format!("t-{i}")),
        )
        .await
        .expect(201);
    }
    // b again, with a certificate from another CA: a refuses it.
    drop(b);
    let b = serve(&names[1], &spec_for(&rogue, &names[1])).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let view = a.get("/api/v1/cluster", Some(&token)).await.body;
    assert_eq!(
        view["members"][1]["reachable"], false,
        "a certificate of another CA is refused: {view}"
    );
    assert_eq!(view["members"][1]["state"], "up", "though the node runs");
    drop(b);
    c.finish().await;
}

#[tokio::test]
async fn a_peer_that_speaks_another_wire_version_is_refused() {
    let (c, orgs) = cluster(2, 2, 1).await;
    let a = serve(&c.names[0], &c.spec()).await;
    let mut other = c.spec();
    other
        .env
        .push(("INSIGHTS_CLUSTER_WIRE_VERSION".to_owned(), "999".to_owned()));
    let b = serve(&c.names[1], &other).await;
    let token = a.login(&orgs[0]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let view = a.get("/api/v1/cluster", Some(&token)).await.body;
    assert_eq!(view["members"][1]["state"], "up", "b runs: {view}");
    assert_eq!(
        view["members"][1]["reachable"], false,
        "but a does not talk to it: {view}"
    );
    let log = std::fs::read_to_string(&a.log).unwrap();
    assert!(log.contains("another wire version"), "{}", tail(&a.log));
    drop(b);
    c.finish().await;
}

#[tokio::test]
async fn a_forwarded_request_is_logged_by_the_owner_under_the_id_the_client_got() {
    let (c, orgs) = cluster(2, 2, 1).await;
    let org = &orgs[0];
    let mut spec = c.spec();
    spec.env
        .push(("INSIGHTS_LOG_FORMAT".to_owned(), "json".to_owned()));
    spec.env.push((
        "RUST_LOG".to_owned(),
        "warn,insights::actors::customer=debug".to_owned(),
    ));
    let nodes = [serve(&c.names[0], &spec).await, serve(&c.names[1], &spec).await];
    let token = nodes[0].login(org).await;
    joined(&[&nodes[0], &nodes[1]], &token).await;
    let customer = nodes[0].customer(&token, "traced-1").await;
    // The first ingest places the organization on its home.
    nodes[0]
        .post("/api/v1/interactions", Some(&token), keyed(&customer, "traced-0"))
        .await
        .expect(201);
    let home = owner(&c.pool, org.id).await.expect("an owner");
    let (owner_node, other) = if nodes[0].name == home {
        (&nodes[0], &nodes[1])
    } else {
        (&nodes[1], &nodes[0])
    };
    let r = other
        .client
        .post(format!("{}/api/v1/interactions", other.base))
        .bearer_auth(&token)
        .header("x-request-id", "traced-across-nodes")
        .json(&keyed(&customer, "traced-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-request-id"], "traced-across-nodes");
    let id = r.json::<serde_json::Value>().await.unwrap()["id"].clone();
    let found = eventually(Duration::from_secs(5), || async {
        std::fs::read_to_string(&owner_node.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|v| {
                v["fields"]["message"] == "interaction stored"
                    && v["fields"]["interaction"] == id
                    && v["span"]["request_id"] == "traced-across-nodes"
            })
    })
    .await;
    assert!(
        found,
        "the owner's customer actor names the request of the node the client reached: {}",
        crate::procs::tail(&owner_node.log)
    );
    c.finish().await;
}
