//! Persistence: the PostgreSQL pool and its repositories, the cache (Redis or in-process, behind a
//! circuit breaker), and on it the login throttle (`limiter`) and the request quotas (`ratelimit`).

pub mod alerts;
pub mod api_keys;
pub mod auth_events;
pub mod cache;
pub mod customers;
pub mod data_keys;
pub mod fields;

pub mod filter;
pub mod group_commit;
pub mod insight;
pub mod insights;
pub mod interactions;
pub mod leases;
pub mod limiter;
pub mod listing;
pub mod org_tx;
pub mod orgs;
pub mod ratelimit;
pub mod rollups;
pub mod scores;
pub mod sessions;
pub mod synthetic;
pub mod users;

use std::time::Duration;

use sqlx::ConnectOptions as _;
use sqlx::migrate::MigrateDatabase as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::config::DbConfig;

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Refuses, unless `allow_plaintext`, a `url` that reaches a PostgreSQL on another machine without TLS
/// (R9.10): `sslmode` `disable`, `allow` or `prefer` (libpq's and sqlx's default) may send the password and
/// every row in clear, and `prefer` falls back to it silently. `require` encrypts; `verify-ca` and
/// `verify-full` (with `sslrootcert`) also check whom they talk to. Loopback addresses and Unix sockets
/// never leave the machine.
pub fn check_transport(url: &str, allow_plaintext: bool) -> anyhow::Result<()> {
    use sqlx::postgres::PgSslMode;
    let options: PgConnectOptions = url.parse()?;
    let mode = options.get_ssl_mode();
    let encrypted = matches!(
        mode,
        PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull
    );
    let host = options.get_host();
    let local = options.get_socket().is_some()
        || host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if encrypted || local || allow_plaintext {
        return Ok(());
    }
    anyhow::bail!(
        "DATABASE_URL reaches {host} with sslmode={}, which may send credentials and data in clear: \
         use sslmode=verify-full (with sslrootcert=<CA file>), or set INSIGHTS_DB_ALLOW_PLAINTEXT=true \
         on a network you trust",
        format!("{mode:?}").to_lowercase()
    )
}

/// Creates the database named in `url` when it does not exist yet, so a fresh machine needs no manual step.
pub async fn ensure_database(url: &str, cfg: &DbConfig) -> anyhow::Result<()> {
    check_transport(url, cfg.allow_plaintext)?;
    if !sqlx::Postgres::database_exists(url).await? {
        tracing::info!("creating database");
        sqlx::Postgres::create_database(url).await?;
    }
    Ok(())
}

/// Opens a connection pool. Connections are made lazily, so a node starts (and reports 503) while
/// PostgreSQL is down, instead of failing to boot.
pub fn connect(url: &str, cfg: &DbConfig) -> anyhow::Result<PgPool> {
    check_transport(url, cfg.allow_plaintext)?;
    let options: PgConnectOptions = url.parse()?;
    let options = options
        .application_name("insights")
        .log_slow_statements(log::LevelFilter::Warn, cfg.slow_statement)
        // A node cut from PostgreSQL in the middle of a write would otherwise keep its transaction
        // (and the organization's lock) open until TCP gives up, blocking the takeover.
        .options([(
            "idle_in_transaction_session_timeout",
            cfg.idle_in_transaction.as_millis().max(1),
        )]);
    Ok(PgPoolOptions::new()
        .max_connections(cfg.max_connections)
        .min_connections(cfg.min_connections)
        .acquire_timeout(cfg.acquire_timeout)
        .idle_timeout(Some(Duration::from_secs(600)))
        .connect_lazy_with(options))
}

/// Applies every pending migration. A database too busy to hand out a connection within the pool's
/// acquire timeout (many nodes or test databases starting at once) is waited for, a few times, rather
/// than failing the start; any other error fails it at once.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    const ATTEMPTS: u32 = 5;
    let mut attempt = 1;
    loop {
        match MIGRATOR.run(pool).await {
            Ok(()) => return Ok(()),
            Err(sqlx::migrate::MigrateError::Execute(sqlx::Error::PoolTimedOut)) if attempt < ATTEMPTS => {
                tracing::warn!(
                    attempt,
                    "no database connection in time for the migrations; retrying"
                );
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Every second, publishes each pool's connections (in use, idle, maximum) and how long taking a
/// connection from it took (R11.9): the probe waits in the same queue a request would, so a saturated
/// pool shows as a growing acquire time before requests start failing. Ends with `shutdown`.
pub fn spawn_pool_watch(
    metrics: crate::metrics::Metrics,
    pools: Vec<(&'static str, PgPool)>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            for (name, pool) in &pools {
                // The connections as the requests hold them, before the probe takes one of its own.
                publish_pool(&metrics, name, pool);
                let started = std::time::Instant::now();
                // Bounded by the pool's own acquire timeout; a failure is a wait that long.
                drop(pool.acquire().await);
                metrics
                    .db_pool_acquire
                    .with_label_values(&[name])
                    .observe(started.elapsed().as_secs_f64());
            }
        }
    });
}

/// Sets the connection gauges of one pool.
pub fn publish_pool(metrics: &crate::metrics::Metrics, name: &str, pool: &PgPool) {
    let (size, idle) = (i64::from(pool.size()), pool.num_idle() as i64);
    let gauge = |state: &str| metrics.db_pool_connections.with_label_values(&[name, state]);
    gauge("in_use").set((size - idle).max(0));
    gauge("idle").set(idle);
    metrics
        .db_pool_max_connections
        .with_label_values(&[name])
        .set(i64::from(pool.options().get_max_connections()));
}

/// Checks that PostgreSQL answers, within `timeout`.
pub async fn ping(pool: &PgPool, timeout: Duration) -> Result<Duration, String> {
    let started = std::time::Instant::now();
    match tokio::time::timeout(
        timeout,
        sqlx::query_scalar!("SELECT 1 AS \"one!\"").fetch_one(pool),
    )
    .await
    {
        Ok(Ok(_)) => Ok(started.elapsed()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

#[cfg(test)]
mod tests {
    use super::check_transport;

    #[test]
    fn plaintext_to_another_machine_is_refused_unless_allowed() {
        for url in [
            "postgres://u@db.example.com/x",
            "postgres://u@db.example.com/x?sslmode=prefer",
            "postgres://u@db.example.com/x?sslmode=allow",
            "postgres://u@10.0.0.5:5432/x?sslmode=disable",
        ] {
            let e = check_transport(url, false).unwrap_err().to_string();
            assert!(e.contains("INSIGHTS_DB_ALLOW_PLAINTEXT"), "{url}: {e}");
            assert!(check_transport(url, true).is_ok(), "{url} allowed");
        }
        for url in [
            "postgres://u@db.example.com/x?sslmode=require",
            "postgres://u@db.example.com/x?sslmode=verify-ca&sslrootcert=/ca.pem",
            "postgres://u@db.example.com/x?sslmode=verify-full&sslrootcert=/ca.pem",
            "postgres://u@127.0.0.1:5432/x",
            "postgres://u@127.9.8.7/x?sslmode=disable",
            "postgres://u@localhost/x",
            "postgres://u@[::1]:5432/x",
            "postgres://u@%2Fvar%2Frun%2Fpostgresql/x",
        ] {
            assert!(check_transport(url, false).is_ok(), "{url}");
        }
    }
}
