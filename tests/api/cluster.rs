//! The cluster file (issue 14): read at start (a node it does not name refuses to start with one line),
//! re-read live (an invalid file is ignored with a metric, a valid one applies, a node removed from it
//! leaves: `/readyz` 503, no organization taken), and reported by `/readyz` and `GET /api/v1/cluster`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use insights::domain::Role;
use serde_json::json;

use crate::helpers::{TestApp, eventually, interaction, spawn_with, test_config};

fn file_of(nodes: &[&str]) -> String {
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| format!("[[node]]\nname = \"{n}\"\naddress = \"127.0.0.{}:4697\"\n", i + 1))
        .collect()
}

fn scratch_file(text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("insights-cluster-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cluster.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A node that reads `path`, checking it every 50 ms.
async fn node_reading(path: &Path, name: &str) -> TestApp {
    let (path, name) = (path.to_owned(), name.to_owned());
    spawn_with(move |c| {
        c.node_name = name;
        c.cluster.file = Some(path);
        c.cluster.file_required = true;
        c.cluster.reload_interval = Duration::from_millis(50);
        c.cluster.heartbeat = Duration::from_millis(200);
    })
    .await
}

#[tokio::test]
async fn readyz_and_the_admin_cluster_view_report_the_membership() {
    let app = crate::helpers::spawn_app().await;
    let ready = app.get("/readyz", None).await.expect(200).clone();
    let me = app.config.node_name.clone();
    assert_eq!(ready["cluster"]["node"], me);
    assert_eq!(ready["cluster"]["state"], "up");
    assert_eq!(ready["cluster"]["members"], json!([{"name": me, "state": "up"}]));
    assert_eq!(ready["cluster"]["ownedOrganizations"], 0);

    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let customer = app.customer(&admin.access, "c-1", None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post(
        "/api/v1/interactions",
        Some(&admin.access),
        interaction(&customer, "web", Some("hello")),
    )
    .await
    .expect(201);
    // The view is refreshed with each heartbeat (every second by default).
    let owned = eventually(Duration::from_secs(5), || async {
        app.get("/readyz", None).await.body["cluster"]["ownedOrganizations"] == 1
    })
    .await;
    assert!(owned, "the node reports the organization it now owns");

    let view = app
        .get("/api/v1/cluster", Some(&admin.access))
        .await
        .expect(200)
        .clone();
    assert_eq!(view["node"], me);
    assert_eq!(view["mode"], "standalone");
    assert_eq!(view["configHash"], "standalone");
    assert_eq!(view["configValid"], true);
    assert_eq!(view["hashesAgree"], true);
    let member = &view["members"][0];
    assert_eq!(member["name"], me);
    assert_eq!(member["state"], "up");
    assert_eq!(member["roles"], json!(["api", "actors", "ml"]));
    assert_eq!(member["configHash"], "standalone");
    assert_eq!(member["ownedOrganizations"], 1);
    assert_eq!(member["incarnation"], 1);

    let (_, analyst) = app.user_with_role(&admin, Role::Analyst).await;
    app.get("/api/v1/cluster", Some(&analyst.access))
        .await
        .expect_error(403, "forbidden");
    app.get("/api/v1/cluster", None)
        .await
        .expect_error(401, "unauthenticated");
}

#[tokio::test]
async fn edits_apply_live_invalid_files_are_ignored_and_a_removed_node_leaves() {
    let name = format!("n-{}", uuid::Uuid::new_v4().simple());
    let path = scratch_file(&file_of(&[&name]));
    let app = node_reading(&path, &name).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let view = app
        .get("/api/v1/cluster", Some(&admin.access))
        .await
        .expect(200)
        .clone();
    let first_hash = view["configHash"].as_str().unwrap().to_owned();
    assert_eq!(first_hash.len(), 64, "the sha256 of the membership");
    assert_eq!(
        view["members"][0]["roles"],
        json!(["api", "actors"]),
        "the file's default roles"
    );
    assert_eq!(app.metric("insights_cluster_config_valid").await, 1.0);

    // An edit (roles) applies without a restart, and the node publishes the new hash.
    std::fs::write(
        &path,
        format!("# edited\n[[node]]\nname = \"{name}\"\naddress = \"127.0.0.1:4697\"\nroles = [\"api\", \"actors\", \"ml\"]\n"),
    )
    .unwrap();
    let applied = eventually(Duration::from_secs(5), || async {
        let v = app.get("/api/v1/cluster", Some(&admin.access)).await.body;
        v["members"][0]["roles"] == json!(["api", "actors", "ml"])
            && v["members"][0]["configHash"] == v["configHash"]
            && v["configHash"] != first_hash.as_str()
    })
    .await;
    assert!(applied, "the edited file applies live and its hash is published");
    let hash = app.get("/api/v1/cluster", Some(&admin.access)).await.body["configHash"].clone();

    // An invalid file is ignored: the metric says so, the membership stays, the node keeps serving.
    std::fs::write(&path, "[[node]]\nname = \"x\"\nroles = [\"cook\"]\n").unwrap();
    let flagged = eventually(Duration::from_secs(5), || async {
        app.metric("insights_cluster_config_valid").await == 0.0
    })
    .await;
    assert!(flagged, "an invalid file sets insights_cluster_config_valid to 0");
    let view = app
        .get("/api/v1/cluster", Some(&admin.access))
        .await
        .expect(200)
        .clone();
    assert_eq!(view["configHash"], hash, "the last good membership stays");
    assert_eq!(view["configValid"], false);
    assert!(
        app.metric("insights_cluster_config_reloads_total{result=\"invalid\"}")
            .await
            >= 1.0
    );
    app.get("/readyz", None).await.expect(200);

    // Two nodes need the cookie this node did not start with: ignored too.
    std::fs::write(&path, file_of(&[&name, "other"])).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let view = app
        .get("/api/v1/cluster", Some(&admin.access))
        .await
        .expect(200)
        .clone();
    assert_eq!(view["configHash"], hash);
    assert_eq!(view["members"].as_array().unwrap().len(), 1);

    // Removed from the file: the node leaves. It is not ready and takes no organization.
    std::fs::write(&path, file_of(&["other"])).unwrap();
    let leaving = eventually(Duration::from_secs(5), || async {
        let r = app.get("/readyz", None).await;
        r.status == 503 && r.body["cluster"]["state"] == "leaving"
    })
    .await;
    assert!(leaving, "a node removed from the file answers /readyz 503");
    // It publishes the state with its next heartbeat, a moment after /readyz shows it.
    let published = eventually(Duration::from_secs(5), || async {
        let state: String = sqlx::query_scalar("SELECT state FROM cluster_nodes WHERE name = $1")
            .bind(&name)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        state == "leaving"
    })
    .await;
    assert!(published, "and publishes it");
    let customer = app.customer(&admin.access, "c-2", None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post(
        "/api/v1/interactions",
        Some(&admin.access),
        interaction(&customer, "web", Some("hi")),
    )
    .await
    .expect_error(503, "owned_elsewhere");
    let listed = eventually(Duration::from_secs(5), || async {
        let view = app.get("/api/v1/cluster", Some(&admin.access)).await.body;
        let names: Vec<_> = view["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["name"].clone(), m["configured"].clone()))
            .collect();
        names == [(json!("other"), json!(true)), (json!(name), json!(false))]
    })
    .await;
    assert!(
        listed,
        "the view lists the file's member, then this node as not configured"
    );

    // Put back, it serves again.
    std::fs::write(&path, file_of(&[&name])).unwrap();
    let back = eventually(Duration::from_secs(5), || async {
        app.get("/readyz", None).await.status == 200
    })
    .await;
    assert!(back, "listed again, the node is ready again");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

fn serve_with(file: Option<&Path>, name: &str, cookie: Option<&str>) -> std::process::Output {
    let config = test_config();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_insights"));
    cmd.args(["serve", "--no-migrate"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &config.database_url)
        .env(
            "INSIGHTS_JWT_SECRET",
            config.jwt_secret.as_ref().unwrap().expose(),
        )
        .env(
            "INSIGHTS_DATA_KEY",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                config.data_key.unwrap(),
            ),
        )
        .env("INSIGHTS_NODE_NAME", name)
        .env("INSIGHTS_LISTEN", "127.0.0.1:0")
        .env("INSIGHTS_ML_ENABLED", "false")
        .current_dir(std::env::temp_dir());
    if let Some(file) = file {
        cmd.env("INSIGHTS_CLUSTER_FILE", file);
    }
    if let Some(cookie) = cookie {
        cmd.env("INSIGHTS_CLUSTER_COOKIE", cookie);
    }
    cmd.output().unwrap()
}

#[test]
fn a_node_the_file_does_not_name_or_cannot_trust_refuses_to_start_with_one_line() {
    let two = scratch_file(&file_of(&["a", "b"]));
    let cases: [(Option<&Path>, &str, Option<&str>, &str); 5] = [
        (
            Some(&two),
            "c",
            Some(&"k".repeat(32)),
            "node \"c\" (INSIGHTS_NODE_NAME) is not in the cluster file (it lists a, b)",
        ),
        (Some(&two), "a", None, "set INSIGHTS_CLUSTER_COOKIE"),
        (
            Some(&two),
            "a",
            Some("short"),
            "INSIGHTS_CLUSTER_COOKIE is 5 bytes",
        ),
        (
            Some(Path::new("/nonexistent/cluster.toml")),
            "a",
            None,
            "cannot read the cluster file /nonexistent/cluster.toml",
        ),
        (
            Some(&scratch_file("[[node]]\nname = \"a\"\ncookie = \"x\"\n")),
            "a",
            None,
            "`cookie` does not belong in the file",
        ),
    ];
    for (file, name, cookie, expected) in cases {
        let out = serve_with(file, name, cookie);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} with {file:?} must refuse to start");
        let last = stderr.trim_end().lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: ") && last.contains(expected),
            "{expected:?} in {stderr}"
        );
    }
}
