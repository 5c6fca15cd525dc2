//! # Insights
//!
//! A real-time customer-insights platform: interactions stream in over HTTPS, texts are scored for
//! sentiment, behaviour patterns are detected per customer, and dashboards follow it all live.
//!
//! # Layout
//!
//! - [`cluster`]: placement of organizations on nodes (rendezvous hashing) and this node's ownership of
//!   them (registration, heartbeat, lease clock; the lease SQL is `store::leases`).
//! - [`config`]: layered configuration (defaults < `insights.toml` < environment); secrets from the environment only.
//! - [`error`]: the one error type; its HTTP mapping lives in `http::errors`.
//! - [`domain`]: plain validated types: ids, roles, users, field validation, sentiment scores and
//!   patterns (shared by `store` and `ml`, so neither depends on the other).
//! - [`auth`]: login, token rotation and revocation, token and API-key verification, principals.
//! - [`store`]: PostgreSQL repositories (sqlx; every write to an organization's data through
//!   `store::org_tx::OrgTx`, fenced for owners, invalidating the cache at commit), migrations, the cache (Redis behind a circuit breaker, or
//!   in-process), the login throttle and the request quotas (`store::ratelimit`, GCRA); `store::rollups`
//!   keeps and reads the rollups, `store::insights` composes the dashboard and trends from them,
//!   `store::filter` and `store::listing` read interactions in bulk, `store::synthetic` bulk-generates rows
//!   inside PostgreSQL for scale tests and benchmarks.
//! - [`actors`]: the ractor supervision trees: `actors::root::RootSupervisor` (organizations, customers)
//!   and `actors::session::SessionSupervisor` (one actor per live connection). A customer's actor lives
//!   under its organization's, and an organization has one owner node (`cluster`), so there is exactly
//!   one live actor per customer in the cluster. Also the ML pool, the node's sentiment service and the
//!   scoring pipeline.
//! - [`http`]: warp endpoints, the error shape, the OpenAPI document and the TLS server; `http::limits`
//!   (the request front: client IP, quotas and the credential read ahead, before routing), `http::params`
//!   (the query-string reader), `http::summaries` (dashboard, trends, their cache), `http::export`, `http::ws` and `http::deflate` (live events over WSS with
//!   permessage-deflate), `http::web` (the dashboard's files).
//! - [`demo`]: `insights demo` and its seeded data generator, shared with tests and the load generator.
//! - [`import`]: `insights import`, streamed bulk import of NDJSON or CSV with a rejects file.
//! - [`metrics`]: the node's Prometheus registry.
//! - [`ml`]: preprocessing, the sentiment model and pattern detection, as pure functions and types (the
//!   actors that run the model live in `actors`).
//!
//! [`App`] wires them together: config -> store -> cache -> auth -> actors -> http.

pub mod actors;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod domain;
pub mod error;
pub mod http;
pub mod import;
pub mod metrics;
pub mod ml;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use ractor::{Actor, ActorRef};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::actors::root::{RootArgs, RootMsg, RootSupervisor};
use crate::config::Config;
use crate::http::{AppState, Shared};

/// A running node: its HTTPS server, its actor tree and its connections.
pub struct App {
    addr: SocketAddr,
    state: Shared,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    root_handle: JoinHandle<()>,
    sessions_handle: JoinHandle<()>,
}

/// The shortest wait of a batch chunk for a connection of the batch pool.
const BATCH_ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl App {
    /// Builds and starts a node: checks the secret, migrates (unless disabled), checks the data keys and
    /// seals customers written before sealing, connects the cache, starts the actor tree, loads or
    /// generates the TLS certificate and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        // Before the first connection: TLS to PostgreSQL uses the process's rustls provider.
        http::tls::install_crypto_provider();
        let secret = config.require_jwt_secret()?.expose().as_bytes().to_vec();
        let previous_secret = config
            .jwt_secret_previous
            .as_ref()
            .map(|s| s.expose().as_bytes().to_vec());
        let metrics = metrics::Metrics::new()?;
        let membership = cluster::watch::Membership::load(
            &config.cluster,
            &config.node_name,
            config.cluster_cookie.as_ref().map(config::Secret::expose),
            &config.listen.to_string(),
            metrics.clone(),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let clustered = *membership.mode() == cluster::file::Mode::Clustered;
        let cluster_tls = match (&config.cluster.tls, clustered) {
            (Some(files), true) => {
                Some(cluster::transport::ClusterTls::load(files).map_err(|e| anyhow::anyhow!("{e}"))?)
            }
            _ => None,
        };
        if clustered {
            cluster::transport::check(&membership.file(), cluster_tls.is_some())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let peers = if clustered {
            cluster::node::Peers::clustered()
        } else {
            cluster::node::Peers::default()
        };
        if config.migrate_on_start {
            store::ensure_database(&config.database_url, &config.db)
                .await
                .map_err(|e| anyhow::anyhow!("cannot reach or create the database: {e}"))?;
        }
        let pool = store::connect(&config.database_url, &config.db)?;
        if config.migrate_on_start {
            store::migrate(&pool)
                .await
                .map_err(|e| anyhow::anyhow!("cannot apply migrations: {e}"))?;
        }
        let fields = Arc::new(store::fields::FieldKeys::new(
            config.require_data_key()?,
            config.data_key_previous.as_ref(),
        )?);
        // A wrong key refuses the start; then rows from before sealing are sealed (forward-only).
        store::data_keys::check(&pool, &fields)
            .await
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let sealed = store::data_keys::seal_plaintext(&pool, &fields, 500).await?;
        if sealed > 0 {
            tracing::info!(
                customers = sealed,
                "encrypted the plaintext fields of customers written before sealing"
            );
        }
        let cache = store::cache::Cache::open(&config, metrics.clone()).await?;
        let limiter = store::ratelimit::RateLimiter::new(
            cache.clone(),
            store::ratelimit::Backoff {
                base: config.rate_limit.backoff_base,
                max: config.rate_limit.backoff_max,
            },
        );
        let auth = auth::Auth::new(
            pool.clone(),
            cache.clone(),
            &secret,
            previous_secret.as_deref(),
            config.auth.clone(),
            metrics.clone(),
        )
        .await?;
        // Everything that can fail is done before the actors start, so a refused start leaves nothing
        // running (or registered) behind.
        let ml = actors::sentiment::Ml::start(&config.ml, &config.model_dir, cache.clone(), metrics.clone())
            .await?;
        let (tls, certificates) = http::tls::load(
            config.tls_cert.as_deref(),
            config.tls_key.as_deref(),
            &config.data_dir,
        )?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        tracing::debug!(model_up = ml.is_up(), "scoring pipeline");
        // A clustered node without a model scores on the members with the `ml` role.
        let (scorer, scoring_queue) = if ml.is_up() || clustered {
            let (scorer, queue) =
                actors::scorer::Scorer::with_queue(metrics.clone(), config.ml.queue_capacity);
            (scorer, Some(queue))
        } else {
            (actors::scorer::Scorer::without_model(metrics.clone()), None)
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (takeovers, takeovers_rx) = tokio::sync::mpsc::channel(1);
        membership.spawn_watcher(config.cluster.reload_interval, shutdown_rx.clone());
        certificates.spawn_reload(http::tls::RELOAD_EVERY, shutdown_rx.clone());
        let ownership = cluster::Ownership::start(
            pool.clone(),
            membership.clone(),
            &config.cluster,
            metrics.clone(),
            shutdown_rx.clone(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot register the node in the database: {e}"))?;
        let orgs = actors::org_supervisor::SupervisorSlot::default();
        let (root, root_handle) = Actor::spawn(
            Some(actors::names::root(&config.node_name)),
            RootSupervisor,
            RootArgs {
                node_name: config.node_name.clone(),
                metrics: metrics.clone(),
                orgs: orgs.clone(),
            },
        )
        .await?;
        // Batches write through a pool of their own, so a burst of imports cannot take the connections
        // single ingestion and queries need (R15.6).
        // Chunks of concurrent batches queue for these connections by design, so a chunk waits for one
        // longer than a request waits for the main pool, instead of failing while another batch writes.
        let batch_db = config::DbConfig {
            max_connections: config.ingest.batch_pool_connections,
            min_connections: 0,
            acquire_timeout: config.db.acquire_timeout.max(BATCH_ACQUIRE_TIMEOUT),
            ..config.db.clone()
        };
        let batch_pool = store::connect(&config.database_url, &batch_db)?;
        let router = actors::route::Router::new(actors::route::RouterParts {
            orgs,
            pool: pool.clone(),
            config: config.ingest.clone(),
            scorer: scorer.clone(),
            cache: cache.clone(),
            metrics: metrics.clone(),
            fault_injection: config.fault_injection,
            ownership: ownership.clone(),
            fanout: actors::fanout::Fanout::new(peers.clone()),
            peers: peers.clone(),
            cluster: config.cluster.clone(),
            takeovers: scoring_queue.is_some().then_some(takeovers),
            commits: store::group_commit::GroupCommit::start(
                pool.clone(),
                cache.clone(),
                store::group_commit::GroupSettings {
                    max_group: config.ingest.group_commit_max,
                    writers: config.ingest.group_commit_writers,
                },
                metrics.clone(),
            ),
        });
        store::spawn_pool_watch(
            metrics.clone(),
            vec![("main", pool.clone()), ("batch", batch_pool.clone())],
            shutdown_rx.clone(),
        );
        let ingest = actors::ingest::Ingest::new(
            router.clone(),
            batch_pool,
            config.ingest.clone(),
            scorer.clone(),
            cache.clone(),
            metrics.clone(),
        );
        if clustered {
            actors::gateway::start(actors::gateway::GatewayArgs {
                ingest: ingest.clone(),
                router: router.clone(),
                ml: ml.clone(),
                wire_version: config
                    .cluster
                    .wire_version
                    .unwrap_or(cluster::gateway::WIRE_VERSION),
            })
            .await
            .map_err(|e| anyhow::anyhow!("cannot start the gateway: {e}"))?;
            actors::rebalance::spawn(
                router.clone(),
                config.cluster.rebalance_interval,
                config.cluster.join_grace,
                shutdown_rx.clone(),
            );
            let cookie = config
                .cluster_cookie
                .as_ref()
                .map(config::Secret::expose)
                .unwrap_or_default();
            cluster::node::start(
                membership.clone(),
                ownership,
                cookie,
                peers.clone(),
                cluster::node::Liveness::from(&config.cluster),
                cluster_tls,
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let addr = listener.local_addr()?;
        let grace = config.http.shutdown_grace;
        if let (Some(queue), Some(feed)) = (scoring_queue, scorer.feed()) {
            let model = if ml.is_up() {
                actors::scoring::Model::Local(ml.clone())
            } else {
                tracing::info!("no local model: texts are scored on the cluster's ml members");
                actors::scoring::Model::Remote(cluster::remote_ml::RemoteMl::new(
                    peers.clone(),
                    membership.clone(),
                    config.cluster.forward_timeout.max(config.ingest.call_timeout),
                ))
            };
            actors::scoring::spawn(
                queue,
                feed,
                model,
                config.ml.max_batch,
                router.clone(),
                pool.clone(),
                config.ml.sweep_interval,
                takeovers_rx,
                shutdown_rx.clone(),
            );
        }
        let alerts = actors::alerts::feed();
        actors::alerts::spawn_listener(
            config.database_url.clone(),
            pool.clone(),
            alerts.clone(),
            shutdown_rx.clone(),
        );
        if config.alerts.enabled {
            let webhook = config
                .alerts
                .webhook_url
                .clone()
                .map(|url| actors::alerts::Webhook::start(url, &config.alerts, metrics.clone()))
                .transpose()?;
            actors::alerts::Evaluator {
                pool: pool.clone(),
                metrics: metrics.clone(),
                config: config.alerts.clone(),
                ml_slow: config.ml.slow_threshold,
                node: config.node_name.clone(),
                webhook,
            }
            .spawn(shutdown_rx.clone());
        }
        let exports = Arc::new(tokio::sync::Semaphore::new(config.query.export_max_concurrent));
        let (sessions, sessions_handle) = Actor::spawn(
            Some(actors::names::sessions(&config.node_name)),
            actors::session::SessionSupervisor,
            metrics.clone(),
        )
        .await?;
        let state: Shared = Arc::new(AppState {
            config: Arc::new(config),
            pool,
            cache,
            limiter,
            auth,
            fields,
            metrics: metrics.clone(),
            root,
            ingest,
            router,
            ml,
            exports,
            summary_gates: Arc::default(),
            sessions,
            alerts,
            shutdown: shutdown_rx.clone(),
        });
        tokio::spawn(store::rollups::fold_forever(
            state.pool.clone(),
            state.config.query.rollup_fold_every,
            state.config.query.rollup_fold_batch,
            metrics.clone(),
            shutdown_rx.clone(),
        ));
        let routes = http::router(&state);
        let front = Arc::new(http::limits::Front::new(state.clone()));
        let server = tokio::spawn(http::server::serve(
            listener,
            tls,
            routes,
            front,
            shutdown_rx,
            grace,
        ));
        tracing::info!(%addr, node = %state.config.node_name, "listening on https://{addr}");
        Ok(Self {
            addr,
            state,
            shutdown,
            server,
            root_handle,
            sessions_handle,
        })
    }

    /// Returns the bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the node's shared state.
    pub fn state(&self) -> &Shared {
        &self.state
    }

    /// Returns the root supervisor.
    pub fn root(&self) -> &ActorRef<RootMsg> {
        &self.state.root
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        wait_for_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await
    }

    /// Stops accepting connections, lets open ones finish (bounded by the grace period), stops the actor
    /// tree and closes the pool.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.server.await?;
        self.state.ml.shutdown();
        self.state
            .sessions
            .stop_children_and_wait(None, Some(std::time::Duration::from_secs(5)))
            .await;
        self.state.sessions.stop(Some("shutdown".to_owned()));
        self.sessions_handle.await?;
        self.state.root.stop(Some("shutdown".to_owned()));
        self.root_handle.await?;
        self.state.router.ownership().stop().await;
        self.state.pool.close().await;
        Ok(())
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the node");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
