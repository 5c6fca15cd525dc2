//! Live events over WSS with a real WebSocket client (tokio-tungstenite over rustls): authentication
//! before the upgrade, isolation, order, batching, replay, resync, heartbeat drop, slow clients, and no
//! leaked session actors.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::helpers::{TestApp, eventually, interaction, spawn_with};

use crate::procs::{Socket, events, next};

/// Opens `/api/v1/ws` over TLS (trusting the node's certificate) with the token as subprotocol.
async fn open(app: &TestApp, token: Option<&str>) -> Result<Socket, tungstenite::Error> {
    let port = app.app.as_ref().unwrap().local_addr().port();
    let pem = std::fs::read(app.data_dir.join("tls/cert.pem")).unwrap();
    crate::procs::ws_connect(port, &pem, token).await
}

async fn sessions(app: &TestApp) -> u64 {
    let supervisor = app.app.as_ref().unwrap().state().sessions.clone();
    ractor::call_t!(
        supervisor,
        insights::actors::session::SupervisorMsg::CountSessions,
        2_000
    )
    .unwrap()
}

#[tokio::test]
async fn events_reach_their_organization_only_in_order_and_batched() {
    let app = spawn_with(|_| {}).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let customer = app.customer(&admin.access, "c-1", None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = app.create_org().await;
    let other_admin = app.admin(&other).await;

    let mut mine = open(&app, Some(&admin.access)).await.unwrap();
    let mut theirs = open(&app, Some(&other_admin.access)).await.unwrap();
    let ready = next(&mut mine, Duration::from_secs(5)).await.unwrap();
    assert_eq!(ready, json!({"type": "ready", "lastSeq": 0}));
    assert_eq!(
        next(&mut theirs, Duration::from_secs(5)).await.unwrap()["type"],
        "ready"
    );

    let created = app
        .post(
            "/api/v1/interactions",
            Some(&admin.access),
            interaction(&customer, "chat", Some("hello there")),
        )
        .await
        .expect(201)["id"]
        .clone();
    let frame = next(&mut mine, Duration::from_secs(1))
        .await
        .expect("within a second");
    assert_eq!(events(&frame), [(1, "interaction.created".to_owned())]);
    assert_eq!(frame["data"]["id"], created);
    assert_eq!(frame["data"]["content"], "hello there");

    // Three rows of one batch are published together: one batch frame, in order.
    let items: Vec<Value> = (0..3)
        .map(|i| interaction(&customer, "web", Some(&format!("b{i}"))))
        .collect();
    app.post(
        "/api/v1/interactions/batch",
        Some(&admin.access),
        json!({"interactions": items}),
    )
    .await
    .expect(200);
    let frame = next(&mut mine, Duration::from_secs(1)).await.unwrap();
    assert_eq!(frame["type"], "batch");
    assert_eq!(events(&frame).iter().map(|e| e.0).collect::<Vec<_>>(), [2, 3, 4]);
    assert!(
        next(&mut theirs, Duration::from_millis(500)).await.is_none(),
        "another organization's client hears nothing"
    );
    assert!(eventually(Duration::from_secs(5), || async { sessions(&app).await == 2 }).await);
    mine.close(None).await.unwrap();
    theirs.close(None).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async { sessions(&app).await == 0 }).await,
        "no leaked sessions"
    );
}

#[tokio::test]
async fn bad_tokens_are_refused_before_the_upgrade() {
    let app = spawn_with(|_| {}).await;
    for token in [None, Some("not-a-token")] {
        match open(&app, token).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401);
                let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
                assert_eq!(body["error"]["code"], "unauthenticated");
            }
            other => panic!("expected a 401, got {:?}", other.map(|_| ())),
        }
    }
    assert_eq!(sessions(&app).await, 0);
    // A valid token on a request that is not a WebSocket handshake, or in another protocol version.
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let url = format!("{}/api/v1/ws?token={}", app.base, admin.access);
    let r = crate::helpers::read(app.client.get(&url).send().await.unwrap()).await;
    r.expect_error(400, "bad_request");
    let r = crate::helpers::read(
        app.client
            .get(&url)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-version", "8")
            .send()
            .await
            .unwrap(),
    )
    .await;
    r.expect_error(426, "upgrade_required");
    assert_eq!(r.headers["sec-websocket-version"], "13");
}

#[tokio::test]
async fn a_resume_replays_what_was_missed_or_asks_for_a_resync() {
    let app = spawn_with(|c| c.ingest.event_buffer = 3).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let customer = app.customer(&admin.access, "c-1", None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 0..5 {
        app.post(
            "/api/v1/interactions",
            Some(&admin.access),
            interaction(&customer, "web", Some(&format!("t{i}"))),
        )
        .await
        .expect(201);
    }
    let mut socket = open(&app, Some(&admin.access)).await.unwrap();
    assert_eq!(
        next(&mut socket, Duration::from_secs(5)).await.unwrap()["lastSeq"],
        5
    );
    // Seen up to 2: the buffer (the last 3) still holds 3, 4 and 5.
    socket
        .send(Message::text(r#"{"type":"resume","lastSeq":2}"#))
        .await
        .unwrap();
    let frame = next(&mut socket, Duration::from_secs(2)).await.unwrap();
    assert_eq!(events(&frame).iter().map(|e| e.0).collect::<Vec<_>>(), [3, 4, 5]);
    // Seen up to 1: event 2 is gone from the buffer.
    socket
        .send(Message::text(r#"{"type":"resume","lastSeq":1}"#))
        .await
        .unwrap();
    assert_eq!(
        next(&mut socket, Duration::from_secs(2)).await.unwrap(),
        json!({"type": "resync"})
    );
    // A number never handed out is from another life of the server.
    socket
        .send(Message::text(r#"{"type":"resume","lastSeq":99}"#))
        .await
        .unwrap();
    assert_eq!(
        next(&mut socket, Duration::from_secs(2)).await.unwrap(),
        json!({"type": "resync"})
    );
    // Live events go on after the resumes, without repeats.
    app.post(
        "/api/v1/interactions",
        Some(&admin.access),
        interaction(&customer, "web", Some("after")),
    )
    .await
    .expect(201);
    let frame = next(&mut socket, Duration::from_secs(2)).await.unwrap();
    assert_eq!(events(&frame), [(6, "interaction.created".to_owned())]);
    assert!(app.metric("insights_ws_resyncs_total").await >= 2.0);
}

#[tokio::test]
async fn a_new_owner_of_the_organization_shows_as_a_gap_and_the_client_is_told_to_resync() {
    let app = spawn_with(|c| c.ingest.event_seq_block = 50).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let customer = app.customer(&admin.access, "c-1", None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ingest = |text: &'static str| {
        app.post(
            "/api/v1/interactions",
            Some(&admin.access),
            interaction(&customer, "web", Some(text)),
        )
    };
    ingest("before").await.expect(201);
    let mut socket = open(&app, Some(&admin.access)).await.unwrap();
    assert_eq!(
        next(&mut socket, Duration::from_secs(5)).await.unwrap()["lastSeq"],
        1
    );
    ingest("live").await.expect(201);
    let frame = next(&mut socket, Duration::from_secs(2)).await.unwrap();
    assert_eq!(events(&frame), [(2, "interaction.created".to_owned())]);

    // The organization's actor ends (a crash, a lost lease); the next request starts a new one, which
    // numbers above its predecessor's reservation with an empty buffer.
    let router = app.app.as_ref().unwrap().state().router.clone();
    let old = router.local(org.id).expect("the organization runs here");
    old.actor.stop(Some("test".to_owned()));
    assert!(
        eventually(Duration::from_secs(5), || {
            let router = router.clone();
            async move { router.local(org.id).is_none() }
        })
        .await,
        "the supervisor forgets the stopped actor"
    );
    let gaps = app.metric("insights_ws_gaps_total").await;
    ingest("after the restart").await.expect(201);
    // Events 3..=50 may or may not have existed: the session cannot replay them from the new owner's
    // buffer, so it says so instead of skipping silently.
    assert_eq!(
        next(&mut socket, Duration::from_secs(2)).await.unwrap(),
        json!({"type": "resync"})
    );
    assert_eq!(app.metric("insights_ws_gaps_total").await, gaps + 1.0);
    // The new owner's stream goes on without another gap, numbered above everything before it.
    ingest("and then").await.expect(201);
    let frame = next(&mut socket, Duration::from_secs(2)).await.unwrap();
    let seqs: Vec<u64> = events(&frame).iter().map(|e| e.0).collect();
    assert_eq!(seqs, [52], "51 went to the resync, 52 follows it: {frame}");
    assert_eq!(app.metric("insights_ws_gaps_total").await, gaps + 1.0);
}

#[tokio::test]
async fn silent_clients_are_dropped_and_answering_ones_stay() {
    let app = spawn_with(|c| c.ws.ping_interval = Duration::from_millis(300)).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    // This client never reads, so it never answers a ping.
    let _silent = open(&app, Some(&admin.access)).await.unwrap();
    let mut answering = open(&app, Some(&admin.access)).await.unwrap();
    // Sessions start right after the handshake.
    assert!(eventually(Duration::from_secs(5), || async { sessions(&app).await == 2 }).await);
    // Reading answers pings (tungstenite replies with pongs as it reads).
    let started = tokio::time::Instant::now();
    let mut pings_answered = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        if let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_millis(100), answering.next()).await
            && msg.is_ping()
        {
            pings_answered += 1;
        }
    }
    assert!(pings_answered >= 3, "pinged every 300 ms: {pings_answered}");
    assert_eq!(
        sessions(&app).await,
        1,
        "the silent client was dropped, the answering one stays"
    );
    assert_eq!(
        app.metric("insights_ws_dropped_total{reason=\"heartbeat\"}")
            .await,
        1.0
    );
    drop(answering);
    assert!(
        eventually(Duration::from_secs(5), || async { sessions(&app).await == 0 }).await,
        "no leaked sessions"
    );
}

#[tokio::test]
async fn a_client_that_falls_behind_is_told_to_resync_and_dropped() {
    let app = spawn_with(|c| {
        c.ws.outbound_queue = 4;
        c.ws.batch_window = Duration::from_millis(1);
    })
    .await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let customer = app.customer(&admin.access, "c-1", None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut slow = open(&app, Some(&admin.access)).await.unwrap();
    // Events larger than the socket buffers can hold, while the client reads nothing.
    let text = "x".repeat(9_000);
    // Batches until the server gives up on it: how many events fit in one frame depends on how fast
    // they are stored (the sessions batch over 50 ms), so a busy machine needs more of them.
    let mut dropped = false;
    for _ in 0..16 {
        let items: Vec<Value> = (0..250)
            .map(|_| interaction(&customer, "chat", Some(&text)))
            .collect();
        app.post(
            "/api/v1/interactions/batch",
            Some(&admin.access),
            json!({"interactions": items}),
        )
        .await
        .expect(200);
        dropped = eventually(Duration::from_secs(2), || async {
            app.metric("insights_ws_dropped_total{reason=\"slow\"}").await >= 1.0
        })
        .await;
        if dropped {
            break;
        }
    }
    assert!(dropped, "the slow client was dropped");
    assert!(eventually(Duration::from_secs(15), || async { sessions(&app).await == 0 }).await);
    // What reached the client ends with the resync and the close.
    let mut last = None;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(15), slow.next()).await {
        match msg {
            Message::Text(t) => last = Some(t.to_string()),
            Message::Close(frame) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(1013));
                break;
            }
            _ => {}
        }
    }
    assert_eq!(last.as_deref(), Some(r#"{"type":"resync"}"#));
}

#[tokio::test]
async fn a_third_party_client_negotiates_permessage_deflate() {
    use tokio::io::AsyncBufReadExt as _;
    let app = spawn_with(|_| {}).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let customer = app.customer(&admin.access, "c-1", None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for text in ["one", "two"] {
        app.post(
            "/api/v1/interactions",
            Some(&admin.access),
            interaction(&customer, "chat", Some(text)),
        )
        .await
        .expect(201);
    }
    let port = app.app.as_ref().unwrap().local_addr().port();
    let mut client = tokio::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/ws_deflate.py"
        ))
        .arg(format!("wss://localhost:{port}/api/v1/ws"))
        .arg(&admin.access)
        .arg(app.data_dir.join("tls/cert.pem"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let mut lines = tokio::io::BufReader::new(client.stdout.take().unwrap()).lines();
    let handshake = read_line(&mut lines).await;
    assert!(
        handshake["extensions"]
            .as_str()
            .unwrap()
            .starts_with("permessage-deflate"),
        "{handshake}"
    );
    assert_eq!(handshake["subprotocol"], "bearer");
    assert_eq!(
        read_line(&mut lines).await,
        json!({"type": "ready", "lastSeq": 2})
    );
    // The client's resume went out compressed; the replay shows it was inflated and understood.
    let replay = read_line(&mut lines).await;
    assert_eq!(events(&replay).iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(replay["events"][1]["data"]["content"], "two");
    let id = app
        .post(
            "/api/v1/interactions",
            Some(&admin.access),
            interaction(&customer, "chat", Some("compressed on the wire")),
        )
        .await
        .expect(201)["id"]
        .clone();
    let live = read_line(&mut lines).await;
    assert_eq!(live["seq"], 3);
    assert_eq!(live["data"]["id"], id);
    assert_eq!(live["data"]["content"], "compressed on the wire");
    assert!(client.wait().await.unwrap().success());
}

async fn read_line(lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>) -> Value {
    let l = tokio::time::timeout(Duration::from_secs(15), lines.next_line())
        .await
        .expect("the client answers")
        .unwrap()
        .expect("the client printed its line (pip install websockets, as .ci/run does)");
    serde_json::from_str::<Value>(&l).unwrap()
}

#[tokio::test]
async fn a_logout_closes_the_live_connections_it_opened() {
    let app = spawn_with(|c| c.ws.ping_interval = Duration::from_millis(300)).await;
    let org = app.create_org().await;
    let admin = app.admin(&org).await;
    let mut socket = open(&app, Some(&admin.access)).await.unwrap();
    assert_eq!(
        next(&mut socket, Duration::from_secs(5)).await.unwrap()["type"],
        "ready"
    );
    app.post("/api/v1/auth/logout", Some(&admin.access), json!({}))
        .await
        .expect(204);
    let mut code = None;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
        if let Message::Close(frame) = msg {
            code = frame.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(
        code,
        Some(4401),
        "closed so the client reconnects with a fresh token"
    );
    assert!(eventually(Duration::from_secs(5), || async { sessions(&app).await == 0 }).await);
}
