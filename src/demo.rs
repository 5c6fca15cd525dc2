//! `insights demo`: a node with a demo organization, 50,000 generated interactions scored by the real
//! model, and a gentle live trickle so the dashboard moves.
//!
//! A second run finds the organization and adds only what is missing (every generated interaction has
//! an idempotency key), so data is never duplicated; the three demo users get fresh passwords each run,
//! printed once (no password is stored in clear anywhere).

pub mod generator;

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use rand::Rng as _;
use sqlx::PgPool;

use crate::config::{Config, Secret};
use crate::domain::enrichment::OrgContext;
use crate::domain::interaction::parse_new_interaction;
use crate::domain::{CustomerId, Email, OrganizationId, PersonName, Role};
use crate::store::interactions::{self, ItemOutcome};
use crate::store::{self, users};
use generator::Generator;

/// What the demo generates and how it behaves.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub interactions: usize,
    pub customers: usize,
    pub days: i64,
    pub seed: u64,
    /// Time between live interactions (jittered ±50 %); zero turns the trickle off.
    pub trickle: Duration,
}

/// Angry emails in the demo's incident.
const INCIDENT_EMAILS: usize = 45;

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            interactions: 50_000,
            customers: 2_000,
            days: 30,
            seed: 2026,
            trickle: Duration::from_secs(3),
        }
    }
}

/// The demo organization's name; a second run finds it by this name.
pub const ORG_NAME: &str = "Insights Demo";

const USERS: [(&str, &str, Role); 3] = [
    ("admin@demo.insights.local", "Demo Admin", Role::Admin),
    ("analyst@demo.insights.local", "Demo Analyst", Role::Analyst),
    ("viewer@demo.insights.local", "Demo Viewer", Role::Viewer),
];

/// Uses `INSIGHTS_JWT_SECRET`, or a secret generated once into `<data_dir>/demo-jwt-secret` (0600).
pub fn ensure_secret(config: &mut Config) -> anyhow::Result<Option<std::path::PathBuf>> {
    if config.jwt_secret.is_some() {
        return Ok(None);
    }
    let path = config.data_dir.join("demo-jwt-secret");
    let secret = match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => s.trim().to_owned(),
        _ => {
            std::fs::create_dir_all(&config.data_dir)?;
            let s = random_string(64);
            write_private(&path, &s)?;
            s
        }
    };
    config.jwt_secret = Some(Secret::new(secret));
    Ok(Some(path))
}

/// Uses `INSIGHTS_DATA_KEY`, or a key generated once into `<data_dir>/demo-data-key` (0600, base64 of 32
/// random bytes).
pub fn ensure_data_key(config: &mut Config) -> anyhow::Result<Option<std::path::PathBuf>> {
    use base64::Engine as _;
    if config.data_key.is_some() {
        return Ok(None);
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let path = config.data_dir.join("demo-data-key");
    let stored = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| b64.decode(s.trim()).ok())
        .and_then(|b| <[u8; 32]>::try_from(b).ok());
    let key = match stored {
        Some(key) => key,
        None => {
            std::fs::create_dir_all(&config.data_dir)?;
            let mut key = [0u8; 32];
            rand::rng().fill(&mut key);
            write_private(&path, &b64.encode(key))?;
            key
        }
    };
    config.data_key = Some(key);
    Ok(Some(path))
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents.as_bytes())?;
    Ok(())
}

fn random_string(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// The demo's logins, with the passwords set for this run.
pub struct Logins(pub Vec<(String, String, Role)>);

/// Creates the organization and its users (or finds them, with new passwords), its customers and its
/// interactions. Returns the organization and the logins.
pub async fn prepare(
    pool: &PgPool,
    config: &Config,
    opts: &DemoOptions,
) -> anyhow::Result<(OrganizationId, Logins)> {
    let mut logins = Vec::new();
    let mut hashes = Vec::new();
    for (email, _, role) in USERS {
        let password = random_string(16);
        hashes.push(crate::auth::hash_password(password.clone(), config.auth.bcrypt_cost).await?);
        logins.push((email.to_owned(), password, role));
    }
    let existing: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM organizations WHERE name = $1 ORDER BY created_at LIMIT 1")
            .bind(ORG_NAME)
            .fetch_optional(pool)
            .await?;
    let org = match existing {
        Some(id) => OrganizationId(id),
        None => {
            let email = Email::parse(USERS[0].0).map_err(anyhow::Error::msg)?;
            let name = PersonName::parse(USERS[0].1).map_err(anyhow::Error::msg)?;
            store::orgs::create_with_admin(pool, ORG_NAME, &email, &name, &hashes[0])
                .await
                .map_err(|e| anyhow::anyhow!("cannot create the demo organization: {e}"))?
                .0
        }
    };
    for ((email, name, role), hash) in USERS.iter().zip(&hashes) {
        let email = Email::parse(email).map_err(anyhow::Error::msg)?;
        let mut tx = pool.begin().await?;
        match users::credentials_by_email(pool, &email).await? {
            Some(found) => {
                anyhow::ensure!(
                    found.organization_id == org,
                    "{} already belongs to another organization; the demo needs its own database",
                    email.as_str()
                );
                let patch = users::UserPatch {
                    password_hash: Some(hash.clone()),
                    ..users::UserPatch::default()
                };
                users::update(&mut tx, org, found.id, &patch)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            None => {
                let name = PersonName::parse(name).map_err(anyhow::Error::msg)?;
                users::create(&mut tx, org, &email, &name, hash, *role)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        tx.commit().await?;
    }
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM customer_interactions WHERE organization_id = $1")
            .bind(org.as_uuid())
            .fetch_one(pool)
            .await?;
    if stored < opts.interactions as i64 {
        generate(pool, config, org, opts).await?;
    } else {
        eprintln!("demo data found: {stored} interactions (reused, not generated again)");
    }
    Ok((org, Logins(logins)))
}

/// Stores the generated customers and interactions; existing ones (same external id, same idempotency
/// key) are kept as they are.
async fn generate(
    pool: &PgPool,
    config: &Config,
    org: OrganizationId,
    opts: &DemoOptions,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut g = Generator::new(opts.seed, opts.customers);
    let keys = store::fields::FieldKeys::new(config.require_data_key()?, config.data_key_previous.as_ref())?;
    let mut tx = pool.begin().await?;
    for c in g.customers() {
        use store::fields::Column;
        let (o, id) = (org.as_uuid(), uuid::Uuid::new_v4());
        sqlx::query(
            "INSERT INTO customers (id, organization_id, external_id, name_sealed, email_sealed, email_index, \
             segment, attributes_sealed) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (organization_id, external_id) DO NOTHING",
        )
        .bind(id)
        .bind(o)
        .bind(&c.external_id)
        .bind(keys.seal_text(o, id, Column::Name, Some(&c.name))?)
        .bind(keys.seal_text(o, id, Column::Email, Some(&c.email))?)
        .bind(keys.blind(o, &c.email))
        .bind(c.segment)
        .bind(keys.seal_json(o, id, &c.attributes)?)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let ids = customer_ids(pool, org).await?;
    // The last of them are an incident: angry emails in the last hour (an insight alert at first login).
    let end = chrono::Utc::now();
    let incident = (opts.interactions / 20).min(INCIDENT_EMAILS);
    let mut history = g.history(opts.interactions - incident, end, opts.days);
    history.extend(g.incident(incident, end));
    let name: String = sqlx::query_scalar("SELECT name FROM organizations WHERE id = $1")
        .bind(org.as_uuid())
        .fetch_one(pool)
        .await?;
    let context = OrgContext { id: org, name };
    let limits = config.ingest.limits();
    let now = chrono::Utc::now();
    let mut items = Vec::with_capacity(history.len());
    for (n, i) in history.iter().enumerate() {
        let customer = &g.customers()[i.customer];
        let id = ids
            .get(&customer.external_id)
            .ok_or_else(|| anyhow::anyhow!("customer {} missing", customer.external_id))?;
        let body = i.body(&id.to_string(), Some(&format!("demo-{}-{n}", opts.seed)));
        let new = parse_new_interaction(&body, now, limits)
            .map_err(|e| anyhow::anyhow!("generated interaction {n} is invalid: {e:?}"))?;
        items.push((n, new));
    }
    // Summaries a node cached earlier (in Redis) are invalidated as the chunks commit.
    let cache = crate::store::cache::Cache::open(config, crate::metrics::Metrics::new()?).await?;
    let (mut created, mut kept) = (0usize, 0usize);
    let mut chunks = items.chunks(config.ingest.batch_chunk).map(<[_]>::to_vec);
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < 4 {
            let Some(chunk) = chunks.next() else { break };
            running.push(interactions::store_chunk(pool, &cache, &context, chunk, None));
        }
        let Some(result) = running.next().await else { break };
        for (_, outcome) in result.map_err(|e| anyhow::anyhow!("storing demo interactions: {e}"))? {
            match outcome {
                ItemOutcome::Stored(stored) => match *stored {
                    crate::domain::interaction::IngestOutcome::Created(_) => created += 1,
                    crate::domain::interaction::IngestOutcome::Duplicate(_) => kept += 1,
                },
                ItemOutcome::Failed(errors) => anyhow::bail!("a demo interaction was refused: {errors:?}"),
            }
        }
    }
    eprintln!(
        "demo data: {} customers, {created} interactions stored ({kept} already there) in {:.1} s",
        opts.customers,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The organization's customers by external id.
async fn customer_ids(
    pool: &PgPool,
    org: OrganizationId,
) -> anyhow::Result<std::collections::HashMap<String, CustomerId>> {
    let rows: Vec<(String, uuid::Uuid)> =
        sqlx::query_as("SELECT external_id, id FROM customers WHERE organization_id = $1")
            .bind(org.as_uuid())
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(|(e, id)| (e, CustomerId(id))).collect())
}

/// Waits until the node's scoring sweep has scored every text of the organization, showing progress.
pub async fn wait_for_scores(pool: &PgPool, org: OrganizationId) -> anyhow::Result<()> {
    let started = Instant::now();
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM customer_interactions WHERE organization_id = $1 AND content IS NOT NULL",
    )
    .bind(org.as_uuid())
    .fetch_one(pool)
    .await?;
    let mut last_report = Instant::now() - Duration::from_secs(60);
    loop {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM customer_interactions WHERE organization_id = $1 AND processed_at IS NULL
             AND content IS NOT NULL",
        )
        .bind(org.as_uuid())
        .fetch_one(pool)
        .await?;
        if left == 0 {
            eprintln!(
                "every text is scored ({total} texts; {:.0} s)",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            let done = total - left;
            let rate = done as f64 / started.elapsed().as_secs_f64().max(0.1);
            eprintln!("scoring with the model: {done} of {total} texts ({rate:.0}/s)");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Ingests a generated interaction every `every` (±50 %) through the node's actors, as a client would,
/// until the node stops.
pub async fn trickle(
    state: crate::http::Shared,
    org: OrganizationId,
    opts: DemoOptions,
) -> anyhow::Result<()> {
    if opts.trickle.is_zero() {
        return Ok(());
    }
    let mut g = Generator::new(opts.seed ^ 0x5eed, opts.customers);
    let ids = customer_ids(&state.pool, org).await?;
    let limits = state.config.ingest.limits();
    let mut shutdown = state.shutdown.clone();
    loop {
        let jitter = rand::rng().random_range(0.5..1.5);
        tokio::select! {
            _ = tokio::time::sleep(opts.trickle.mul_f64(jitter)) => {}
            _ = shutdown.changed() => return Ok(()),
        }
        let now = chrono::Utc::now();
        let live = g.live(now);
        let Some(id) = ids.get(&g.customers()[live.customer].external_id) else {
            continue;
        };
        match parse_new_interaction(&live.body(&id.to_string(), None), now, limits) {
            Ok(new) => {
                if let Err(e) = state.ingest.ingest(org, new).await {
                    tracing::warn!(error = %e, "demo trickle: interaction not stored");
                }
            }
            Err(e) => tracing::warn!(errors = ?e, "demo trickle: generated interaction refused"),
        }
    }
}
