//! Real `insights serve` processes for the multi-node tests (ractor's registries are process-wide: one
//! node per process). Each is killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::helpers::{Reply, client_trusting, eventually, free_port, read};

/// A WebSocket over TLS to a node.
pub type Socket = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// What a node process is started with, besides its name.
pub struct Spec<'a> {
    pub db_url: &'a str,
    pub secret: &'a str,
    pub prefix: &'a str,
    /// Extra environment (the cluster file, the cookie, fast timings).
    pub env: Vec<(String, String)>,
}

/// The environment of a node process that loads the sentiment model (one worker).
pub fn model_env() -> Vec<(String, String)> {
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    [
        ("INSIGHTS_ML_ENABLED", "true".to_owned()),
        ("INSIGHTS_ML_WORKERS", "1".to_owned()),
        ("INSIGHTS_MODEL_DIR", models.display().to_string()),
        (
            "ORT_DYLIB_PATH",
            std::env::var("ORT_DYLIB_PATH")
                .expect("ORT_DYLIB_PATH names libonnxruntime.so (scripts/test.sh)"),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// One `insights serve` process.
pub struct Node {
    pub name: String,
    pub port: u16,
    pub base: String,
    pub client: reqwest::Client,
    pub pem: Vec<u8>,
    pub child: Child,
    pub log: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `insights serve` as `name` and waits until it answers `/healthz`.
pub async fn serve(name: &str, spec: &Spec<'_>) -> Node {
    let port = free_port();
    serve_on(name, port, spec).await
}

/// Starts `insights serve` as `name` on HTTPS `port` (to restart a node where it was).
pub async fn serve_on(name: &str, port: u16, spec: &Spec<'_>) -> Node {
    let data_dir: PathBuf = std::env::temp_dir().join(format!("insights-test-{name}"));
    std::fs::create_dir_all(&data_dir).unwrap();
    let log = data_dir.join("node.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_insights"));
    cmd.args(["serve", "--no-migrate"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", spec.db_url)
        .env("REDIS_URL", crate::helpers::redis_url())
        .env("INSIGHTS_REDIS_PREFIX", spec.prefix)
        .env("INSIGHTS_JWT_SECRET", spec.secret)
        // The nodes of one cluster share their data key as they share the secret.
        .env("INSIGHTS_DATA_KEY", data_key_for(spec.secret))
        .env("INSIGHTS_NODE_NAME", name)
        .env("INSIGHTS_LISTEN", format!("127.0.0.1:{port}"))
        .env("INSIGHTS_DATA_DIR", &data_dir)
        .env("INSIGHTS_ML_ENABLED", "false")
        .env("INSIGHTS_DB_MIN_CONNECTIONS", "0")
        .env("INSIGHTS_DB_MAX_CONNECTIONS", "8")
        .env("INSIGHTS_RATE_LIMIT_IP_PER_MIN", "1000000")
        .env("INSIGHTS_RATE_LIMIT_USER_PER_MIN", "1000000")
        .env("INSIGHTS_RATE_LIMIT_AUTH_IP_PER_MIN", "1000000")
        .env(
            "RUST_LOG",
            std::env::var("NODE_LOG").unwrap_or_else(|_| "warn".to_owned()),
        )
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("insights serve starts");
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
    assert!(started, "node {name} answers; its log: {}", tail(&log));
    let pem = std::fs::read(&cert).unwrap();
    Node {
        name: name.to_owned(),
        port,
        base: format!("https://localhost:{port}"),
        client: client_trusting(&pem),
        pem,
        child,
        log,
    }
}

/// The end of a node's log, for failure messages.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

impl Node {
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        let mut req = self.client.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send().await.unwrap()).await
    }

    /// Kills the process at once (`kill -9`).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Opens `/api/v1/ws` with the token.
    pub async fn ws(&self, token: &str) -> Socket {
        ws_connect(self.port, &self.pem, Some(token)).await.unwrap()
    }
}

/// Opens `/api/v1/ws` on `127.0.0.1:port` over TLS trusting `pem`, with the token as subprotocol.
pub async fn ws_connect(
    port: u16,
    pem: &[u8],
    token: Option<&str>,
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let mut request = format!("wss://localhost:{port}/api/v1/ws")
        .into_client_request()
        .unwrap();
    if let Some(token) = token {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            format!("bearer, {token}").parse().unwrap(),
        );
    }
    let (socket, response) = tokio_tungstenite::client_async(request, stream).await?;
    if token.is_some() {
        assert_eq!(response.headers()["sec-websocket-protocol"], "bearer");
    }
    Ok(socket)
}

/// The next data frame as JSON, or `None` if nothing comes within `wait`.
pub async fn next(socket: &mut Socket, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let msg = tokio::time::timeout_at(deadline, socket.next())
            .await
            .ok()??
            .ok()?;
        if let Message::Text(text) = msg {
            return Some(serde_json::from_str(&text).unwrap());
        }
        if let Message::Close(_) = msg {
            return None;
        }
    }
}

/// The events of a frame (a single event or a batch), as (seq, type).
pub fn events(frame: &Value) -> Vec<(u64, String)> {
    let list = if frame["type"] == "batch" {
        frame["events"].as_array().unwrap().clone()
    } else {
        vec![frame.clone()]
    };
    list.iter()
        .map(|e| (e["seq"].as_u64().unwrap(), e["type"].as_str().unwrap().to_owned()))
        .collect()
}

/// A userspace TCP proxy that can cut a link without closing it: while cut, bytes stop flowing both
/// ways on open connections (a silent partition, as a dropped route looks to both ends) and new
/// connections are closed at once.
pub struct FaultProxy {
    pub addr: std::net::SocketAddr,
    cut: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Listens on `bind` and forwards to `target`.
    pub async fn start(bind: std::net::SocketAddr, target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = cut.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                if flag.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pump(ri, wo, flag.clone()));
                tokio::spawn(pump(ro, wi, flag.clone()));
            }
        });
        Self { addr, cut, task }
    }

    /// Cuts the link (`true`) or heals it.
    pub fn cut(&self, on: bool) {
        self.cut.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // While cut, what was read is held back, as a network that drops packets would.
        while cut.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Node {
    /// Creates a customer through this node and returns its id.
    pub async fn customer(&self, token: &str, external_id: &str) -> String {
        self.post(
            "/api/v1/customers",
            Some(token),
            serde_json::json!({"externalId": external_id}),
        )
        .await
        .expect(201)["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Logs an organization's admin in through this node and returns the access token.
    pub async fn login(&self, org: &crate::helpers::TestOrg) -> String {
        let r = self
            .post(
                "/api/v1/auth/login",
                None,
                serde_json::json!({"email": org.admin_email, "password": org.admin_password}),
            )
            .await;
        r.expect(200)["accessToken"].as_str().unwrap().to_owned()
    }
}

/// A customer's stored interactions and its counter, which must be equal.
pub async fn rows_and_counter(pool: &sqlx::PgPool, customer: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM customer_interactions WHERE customer_id = c.id), c.interaction_count
           FROM customers c WHERE c.id = $1::uuid",
    )
    .bind(customer)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// What a dashboard connection received: each `interaction.created` (seq, interaction id) in order,
/// with a `None` where the server said `resync`, and whether the connection ended.
#[derive(Debug, Clone, Default)]
pub struct Watched {
    pub frames: Vec<Option<(u64, String)>>,
    pub closed: bool,
}

impl Watched {
    /// Numbers strictly increase between resyncs.
    pub fn in_order(&self) -> bool {
        self.frames.split(Option::is_none).all(|run| {
            run.windows(2)
                .all(|w| matches!((&w[0], &w[1]), (Some(a), Some(b)) if a.0 < b.0))
        })
    }

    /// The interaction ids received before the first resync.
    pub fn before_resync(&self) -> Vec<&str> {
        self.frames
            .iter()
            .map_while(|f| f.as_ref().map(|(_, id)| id.as_str()))
            .collect()
    }

    pub fn resyncs(&self) -> usize {
        self.frames.iter().filter(|f| f.is_none()).count()
    }
}

/// A dashboard that records what it receives, in the background.
pub struct Watcher {
    pub node: String,
    log: Arc<std::sync::Mutex<Watched>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watcher {
    /// Connects to `node` and waits for its `ready` frame.
    pub async fn start(node: &Node, token: &str) -> Self {
        let mut socket = node.ws(token).await;
        let ready = next(&mut socket, Duration::from_secs(10))
            .await
            .expect("a ready frame");
        assert_eq!(ready["type"], "ready", "{ready}");
        let log: Arc<std::sync::Mutex<Watched>> = Arc::default();
        let sink = log.clone();
        let task = tokio::spawn(async move {
            while let Some(Ok(msg)) = socket.next().await {
                let Message::Text(text) = msg else { continue };
                let frame: Value = serde_json::from_str(&text).unwrap();
                let mut log = sink.lock().unwrap();
                if frame["type"] == "resync" {
                    log.frames.push(None);
                    continue;
                }
                let list = if frame["type"] == "batch" {
                    frame["events"].as_array().cloned().unwrap_or_default()
                } else {
                    vec![frame]
                };
                for e in list {
                    if e["type"] == "interaction.created" {
                        let id = e["data"]["id"].as_str().unwrap_or_default().to_owned();
                        log.frames.push(Some((e["seq"].as_u64().unwrap_or(0), id)));
                    }
                }
            }
            sink.lock().unwrap().closed = true;
        });
        Self {
            node: node.name.clone(),
            log,
            task,
        }
    }

    /// What it has received so far.
    pub fn watched(&self) -> Watched {
        self.log.lock().unwrap().clone()
    }
}

/// Patterns stored twice for one customer (two owners would detect them twice): must be 0.
pub async fn duplicate_patterns(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT customer_id, pattern_type FROM behavior_patterns
                                GROUP BY 1, 2 HAVING count(*) > 1) d",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// What a background load acknowledged and how it got there.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Idempotency key → the id the node acknowledged (201, or 200 for a retry that found the row).
    pub acked: std::collections::BTreeMap<String, String>,
    /// Attempts answered 503 (by error code) or not answered at all (a killed or cut node), each
    /// retried with the same key on the next node.
    pub retried_by: std::collections::BTreeMap<String, usize>,
    /// Anything else: a wrong status, or a key that was never acknowledged within the retry budget.
    pub errors: Vec<String>,
}

/// Concurrent keyed single ingests spread over several nodes, in the background, as a client behind a
/// load balancer sends them: each key is retried on the next node until acknowledged (a 503 or a
/// connection error is retried, anything else is an error), so at the end every key sent is either
/// acknowledged or reported.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Loaded>>,
}

impl Load {
    /// Starts `workers` clients posting for `customer` through `nodes` in turn; keys start with `tag`.
    pub fn start(nodes: &[&Node], token: &str, customer: &str, tag: &str, workers: usize) -> Self {
        let targets: Vec<(String, reqwest::Client)> =
            nodes.iter().map(|n| (n.base.clone(), n.client.clone())).collect();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = (0..workers)
            .map(|w| {
                let (targets, stop) = (targets.clone(), stop.clone());
                let (token, customer, tag) = (token.to_owned(), customer.to_owned(), tag.to_owned());
                tokio::spawn(async move {
                    let mut out = Loaded::default();
                    let mut turn = w;
                    for n in 0.. {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        let key = format!("{tag}-{w}-{n}");
                        let mut body = crate::helpers::interaction(&customer, "web", Some("under load"));
                        body["idempotencyKey"] = serde_json::json!(key);
                        let deadline = std::time::Instant::now() + Duration::from_secs(40);
                        loop {
                            turn += 1;
                            let (base, client) = &targets[turn % targets.len()];
                            let sent = client
                                .post(format!("{base}/api/v1/interactions"))
                                .bearer_auth(&token)
                                .timeout(Duration::from_secs(10))
                                .json(&body)
                                .send()
                                .await;
                            let answer = match sent {
                                Ok(r) => {
                                    let status = r.status().as_u16();
                                    Some((status, r.json::<Value>().await.unwrap_or_default()))
                                }
                                Err(_) => None,
                            };
                            match answer {
                                Some((200 | 201, v)) => {
                                    let id = v["id"].as_str().unwrap_or_default().to_owned();
                                    out.acked.insert(key, id);
                                    break;
                                }
                                // Retried: a node that could not reach the owner in time, an owner at
                                // capacity or without its database (all 503 with Retry-After). A
                                // clustered node never answers `owned_elsewhere`: it forwards.
                                Some((503, v)) if v["error"]["code"] != "owned_elsewhere" => {
                                    let code = v["error"]["code"].as_str().unwrap_or("503").to_owned();
                                    *out.retried_by.entry(code).or_default() += 1;
                                }
                                None => *out.retried_by.entry("no answer".to_owned()).or_default() += 1,
                                Some((status, v)) => {
                                    out.errors.push(format!("{key}: {status} {v}"));
                                    break;
                                }
                            }
                            if std::time::Instant::now() > deadline {
                                out.errors.push(format!("{key}: never acknowledged"));
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                    out
                })
            })
            .collect();
        Self { stop, tasks }
    }

    /// Lets each client finish the key it is on and returns what was acknowledged.
    pub async fn stop(self) -> Loaded {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all = Loaded::default();
        for task in self.tasks {
            let part = task.await.expect("a load worker");
            all.acked.extend(part.acked);
            for (code, n) in part.retried_by {
                *all.retried_by.entry(code).or_default() += n;
            }
            all.errors.extend(part.errors);
        }
        all
    }
}

/// The checks after a scenario under load: no load error, every acknowledged key stored once with the
/// id it was acknowledged with, as many rows for `customer` as keys acknowledged, the counter equal.
pub async fn check_loaded(pool: &sqlx::PgPool, customer: &str, loaded: &Loaded) {
    assert!(loaded.errors.is_empty(), "load errors: {:?}", loaded.errors);
    assert!(!loaded.acked.is_empty(), "the load was acknowledged at all");
    let keys: Vec<String> = loaded.acked.keys().cloned().collect();
    let stored: Vec<(String, String)> = sqlx::query_as(
        "SELECT idempotency_key, id::text FROM customer_interactions
          WHERE idempotency_key = ANY($1) ORDER BY idempotency_key",
    )
    .bind(&keys)
    .fetch_all(pool)
    .await
    .unwrap();
    let expected: Vec<(String, String)> = loaded.acked.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(stored, expected, "each acknowledged key stored once, with its id");
    let (rows, counted) = rows_and_counter(pool, customer).await;
    assert_eq!(
        rows,
        loaded.acked.len() as i64,
        "no row without an acknowledgement"
    );
    assert_eq!(counted, rows, "counters equal rows");
}

/// Every interaction in `ids` reached a dashboard that was never told to resync (within `wait`).
pub async fn check_complete(watcher: &Watcher, ids: &[String], wait: Duration) {
    let complete = eventually(wait, || async {
        let got = watcher.watched();
        let seen: std::collections::HashSet<&str> = got.before_resync().into_iter().collect();
        ids.iter().all(|id| seen.contains(id.as_str()))
    })
    .await;
    let got = watcher.watched();
    let missing: Vec<&String> = {
        let seen: std::collections::HashSet<&str> = got.before_resync().into_iter().collect();
        ids.iter().filter(|id| !seen.contains(id.as_str())).collect()
    };
    assert!(
        complete,
        "{}: no event missing without a resync; missing {missing:?} of {}",
        watcher.node,
        ids.len()
    );
}

/// A data key derived from a test cluster's secret (base64 of 32 bytes), so its nodes share it.
pub fn data_key_for(secret: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(secret.as_bytes()))
}
