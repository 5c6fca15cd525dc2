//! The test harness: a real node per test, on its own PostgreSQL database and Redis key prefix, reached
//! over real HTTPS with the node's own generated certificate.

use std::path::PathBuf;
use std::time::Duration;

use insights::App;
use insights::config::{Config, Secret};
use insights::domain::{Email, OrganizationId, PersonName, Role, UserId};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

/// PostgreSQL server for tests (a database per test is created on it).
pub fn pg_base() -> String {
    std::env::var("TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// Redis for tests.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A running node and what a test needs to talk to it.
pub struct TestApp {
    pub app: Option<App>,
    pub base: String,
    pub client: reqwest::Client,
    pub db_name: String,
    pub db_url: String,
    /// A separate pool for the test's own assertions on the database.
    pub pool: PgPool,
    pub config: Config,
    pub data_dir: PathBuf,
}

/// An organization with its first admin.
pub struct TestOrg {
    pub id: OrganizationId,
    pub admin_email: String,
    pub admin_password: String,
    pub admin_id: UserId,
}

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct Session {
    pub access: String,
    pub refresh: String,
    pub body: Value,
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// Asserts the status and returns the body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        &self.body
    }

    /// Asserts the error shape and code.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> &Value {
        let body = self.expect(status);
        assert_eq!(body["error"]["code"], code, "body: {body}");
        assert!(body["error"]["message"].is_string(), "body: {body}");
        assert!(
            self.headers.contains_key("x-request-id"),
            "every response has X-Request-Id"
        );
        body
    }
}

/// The base config of a test node: its own database, Redis prefix, data dir, node name and secret.
pub fn test_config() -> Config {
    let id = Uuid::new_v4().simple().to_string();
    let mut config = Config {
        database_url: format!("{}/insights_test_{id}", pg_base()),
        redis_url: Some(redis_url()),
        redis_prefix: format!("test-{id}"),
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: std::env::temp_dir().join(format!("insights-test-{id}")),
        node_name: format!("test-{id}"),
        jwt_secret: Some(Secret::new(format!("test-secret-{id}-{id}"))),
        // Derived from the secret, as `procs::data_key_for` derives it for nodes run as processes.
        data_key: Some(
            sha2::Digest::finalize(sha2::Digest::chain_update(
                <sha2::Sha256 as sha2::Digest>::new(),
                format!("test-secret-{id}-{id}").as_bytes(),
            ))
            .into(),
        ),
        ..Config::default()
    };
    config.db.max_connections = 5;
    config.db.min_connections = 0;
    // Standalone, whatever cluster.toml the working directory holds (tests/api/cluster.rs sets one).
    config.cluster.file = None;
    config.http.shutdown_grace = Duration::from_secs(2);
    // Most tests do not score texts; the ML tests turn the model on (tests/api/ml.rs).
    config.ml.enabled = false;
    // Quotas stay on (the same code path) but out of reach: tests log in and send far more than a
    // person would. The rate-limit tests (tests/api/limits.rs) set their own.
    config.rate_limit.ip_per_window = 1_000_000;
    config.rate_limit.user_per_window = 1_000_000;
    config.rate_limit.auth_ip_per_window = 1_000_000;
    config.rate_limit.api_key_per_window = 1_000_000;
    config
}

/// Loads the sentiment model (one worker, required, so a node that cannot load it does not start).
pub fn with_model(c: &mut Config) {
    c.ml.enabled = true;
    c.ml.required = true;
    c.ml.workers = 1;
    c.model_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
}

/// Starts a node with the default test config.
pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

/// Starts a node after letting the test adjust its config.
pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = test_config();
    adjust(&mut config);
    start(config).await
}

/// Starts a node with exactly this config.
pub async fn start(config: Config) -> TestApp {
    // RUST_LOG=... shows the nodes' logs in failing tests.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    let db_url = config.database_url.clone();
    let db_name = db_url.rsplit('/').next().unwrap().to_owned();
    let data_dir = config.data_dir.clone();
    let app = App::build(config.clone()).await.expect("node starts");
    let addr = app.local_addr();
    let cert_path = config
        .tls_cert
        .clone()
        .unwrap_or_else(|| data_dir.join("tls/cert.pem"));
    let cert = std::fs::read(cert_path).expect("certificate");
    let client = client_trusting(&cert);
    let pool = PgPool::connect(&db_url).await.expect("test pool");
    TestApp {
        app: Some(app),
        base: format!("https://localhost:{}", addr.port()),
        client,
        db_name,
        db_url,
        pool,
        config,
        data_dir,
    }
}

/// An HTTPS client that trusts exactly this certificate (and verifies it).
pub fn client_trusting(cert_pem: &[u8]) -> reqwest::Client {
    let cert = reqwest::Certificate::from_pem(cert_pem).expect("certificate parses");
    reqwest::Client::builder()
        .tls_certs_only([cert])
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let name = self.db_name.clone();
        let base = pg_base();
        let dir = self.data_dir.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on; a fresh thread with its own
        // runtime removes the database (FORCE ends the node's open connections).
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                if let Ok(pool) = PgPool::connect(&format!("{base}/postgres")).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .execute(&pool)
                    .await;
                }
            });
            let _ = std::fs::remove_dir_all(dir);
        })
        .join();
    }
}

impl TestApp {
    /// Sends a request with an optional bearer credential and JSON body, and reads the reply.
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        read(resp).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.call(Method::POST, path, token, Some(body)).await
    }

    /// Starts another node on this node's database and Redis prefix (as in a cluster), under a name of
    /// its own.
    pub async fn second_node(&self) -> TestApp {
        let id = Uuid::new_v4().simple().to_string();
        start(Config {
            node_name: format!("second-{id}"),
            data_dir: std::env::temp_dir().join(format!("insights-test-{id}")),
            ..self.config.clone()
        })
        .await
    }

    /// Creates an organization and its admin directly in the database (as `insights org create` does).
    pub async fn create_org(&self) -> TestOrg {
        let email = format!("admin-{}@example.com", Uuid::new_v4().simple());
        let password = format!("pw-{}", Uuid::new_v4().simple());
        let hash = insights::auth::hash_password(password.clone(), self.config.auth.bcrypt_cost)
            .await
            .unwrap();
        let (id, admin) = insights::store::orgs::create_with_admin(
            &self.pool,
            "Test Org",
            &Email::parse(&email).unwrap(),
            &PersonName::parse("Admin").unwrap(),
            &hash,
        )
        .await
        .unwrap();
        TestOrg {
            id,
            admin_email: email,
            admin_password: password,
            admin_id: admin.id,
        }
    }

    /// Logs in and returns the tokens.
    pub async fn login(&self, email: &str, password: &str) -> Session {
        let r = self
            .post(
                "/api/v1/auth/login",
                None,
                json!({"email": email, "password": password}),
            )
            .await;
        let body = r.expect(200).clone();
        Session {
            access: body["accessToken"].as_str().unwrap().to_owned(),
            refresh: body["refreshToken"].as_str().unwrap().to_owned(),
            body,
        }
    }

    /// Logs in as the organization's admin.
    pub async fn admin(&self, org: &TestOrg) -> Session {
        self.login(&org.admin_email, &org.admin_password).await
    }

    /// Creates a user with `role` through the API and logs them in.
    pub async fn user_with_role(&self, admin: &Session, role: Role) -> (Value, Session) {
        let email = format!("{}-{}@example.com", role, Uuid::new_v4().simple());
        let password = "a-long-password".to_owned();
        let created = self
            .post(
                "/api/v1/users",
                Some(&admin.access),
                json!({"email": email, "name": "Some One", "password": password, "role": role.as_str()}),
            )
            .await;
        let user = created.expect(201).clone();
        let session = self.login(&email, &password).await;
        (user, session)
    }

    /// The node's token keys, to inspect or forge tokens.
    pub fn token_keys(&self) -> insights::auth::token::TokenKeys {
        insights::auth::token::TokenKeys::new(
            self.config.jwt_secret.as_ref().unwrap().expose().as_bytes(),
            None,
        )
        .unwrap()
    }

    /// Returns the `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Reads a metric's value from `/metrics` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics_text().await;
        text.lines()
            .find_map(|line| {
                line.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0)
    }
}

/// Reads a response into status, headers and JSON (or `Null` for an empty body, a string otherwise).
pub async fn read(resp: reqwest::Response) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// A loopback port nothing listens on right now, for a process the test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` until it returns true or `deadline` passes.
pub async fn eventually<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl TestApp {
    /// Creates a customer through the API.
    pub async fn customer(&self, token: &str, external_id: &str, segment: Option<&str>) -> Value {
        let body =
            json!({"externalId": external_id, "name": format!("Customer {external_id}"), "segment": segment});
        self.post("/api/v1/customers", Some(token), body)
            .await
            .expect(201)
            .clone()
    }

    /// The organization's buffered events after `after`.
    pub async fn events_after(
        &self,
        org: OrganizationId,
        after: u64,
    ) -> insights::domain::event::EventsAfter {
        self.app
            .as_ref()
            .unwrap()
            .state()
            .router
            .events_after(org, after, false)
            .await
            .unwrap()
    }

    /// Counts the stored interactions of every organization in the test's database.
    pub async fn stored_interactions(&self) -> i64 {
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM customer_interactions"#)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Runs a SQL statement on the test's database (test-only triggers and constraints).
    pub async fn sql(&self, statement: &'static str) {
        sqlx::raw_sql(statement).execute(&self.pool).await.unwrap();
    }
}

/// An interaction body for `customer`, a minute old.
pub fn interaction(customer: &str, channel: &str, content: Option<&str>) -> Value {
    let at = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let mut body =
        json!({"customerId": customer, "channel": channel, "eventType": "message", "timestamp": at});
    if let Some(c) = content {
        body["content"] = json!(c);
    }
    body
}
