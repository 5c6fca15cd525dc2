//! A small cache with time-to-live: Redis when `REDIS_URL` is set, otherwise an in-process map, so a
//! single node needs only PostgreSQL.
//!
//! The cache only ever holds copies of durable truth or counters that may be lost, so Redis being down
//! must cost a request nothing. A circuit breaker sees to that: the first Redis call that fails or takes
//! longer than `redis.op_timeout` opens it, and from then on every operation is served by the in-process
//! map at once, without touching the network; a single probe task checks Redis every
//! `redis.probe_interval` and closes the breaker when Redis answers again. The writes made while the
//! breaker was open (revocation tombstones, data versions, cached entries) are then replayed into Redis,
//! so revocations and invalidations made during the outage reach the other nodes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::RedisConfig;
use crate::domain::OrganizationId;
use crate::metrics::Metrics;

/// The cache used by a node.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    redis: Option<RedisLink>,
    local: LocalCache,
    prefix: String,
    metrics: Metrics,
}

/// The connection to Redis and the breaker in front of it.
struct RedisLink {
    conn: ConnectionManager,
    op_timeout: Duration,
    probe_interval: Duration,
    /// True while Redis is treated as down.
    open: AtomicBool,
    /// Why and since when the breaker is open, for `/readyz`.
    outage: Mutex<Option<(chrono::DateTime<chrono::Utc>, String)>>,
    /// Writes made while the breaker was open, replayed when Redis is back (last write per key wins).
    pending: Mutex<HashMap<String, PendingWrite>>,
}

enum PendingWrite {
    Set { value: String, expires: Instant },
    Delete,
}

/// Most writes remembered for replay during one outage; later ones stay node-local.
const MAX_PENDING_WRITES: usize = 100_000;

/// What `/readyz` says about the cache.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheHealth {
    /// `redis` or `in-process`.
    pub backend: &'static str,
    /// `up`, or `down` with the reason (the node then serves from its in-process cache).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Since when Redis has been treated as down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_since: Option<chrono::DateTime<chrono::Utc>>,
}

/// How long a data version is kept after the last write: far longer than any summary is cached, so a
/// version that expires has no summary left under it.
const DATA_VERSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

fn version_key(org: OrganizationId) -> String {
    format!("dv:{}", org.as_uuid())
}

/// Reserves one attempt in each of several fixed windows, atomically: when any window already holds
/// `ARGV[1]` attempts nothing is counted and the longest wait is returned; otherwise every window counts
/// the attempt (starting with the first one). Returns `{0, wait_ms}` or `{1, 0}`.
const RESERVE_LUA: &str = r"
local max = tonumber(ARGV[1])
local wait = 0
for i, key in ipairs(KEYS) do
  local count = tonumber(redis.call('GET', key) or '0')
  if count >= max then
    local ttl = redis.call('PTTL', key)
    if ttl > wait then wait = ttl end
  end
end
if wait > 0 then return {0, wait} end
for i, key in ipairs(KEYS) do
  local count = redis.call('INCR', key)
  if count == 1 or redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, ARGV[2]) end
end
return {1, 0}
";

/// Takes back one reserved attempt (a login that succeeded is not a failure).
const RELEASE_LUA: &str = r"
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') > 0 then redis.call('DECR', key) end
end
return 1
";

static RESERVE: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RESERVE_LUA));
static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RELEASE_LUA));

/// Refuses, unless `allow_plaintext`, a `redis://` URL to another machine (R9.10): the cache holds
/// token verifications and summaries of customers' data, which then cross the network in clear. Use
/// `rediss://`, or set `INSIGHTS_DB_ALLOW_PLAINTEXT=true` on a network you trust. `rediss://…#insecure`
/// (no certificate check) is refused alike: it is TLS in name only.
pub fn check_transport(url: &str, allow_plaintext: bool) -> anyhow::Result<()> {
    use redis::{ConnectionAddr, IntoConnectionInfo as _};
    let info = url.into_connection_info()?;
    let (host, why) = match info.addr() {
        ConnectionAddr::Unix(_) => return Ok(()),
        ConnectionAddr::TcpTls { insecure: false, .. } => return Ok(()),
        ConnectionAddr::TcpTls { host, .. } => {
            (host, "rediss:// with #insecure does not check the certificate")
        }
        ConnectionAddr::Tcp(host, _) => (host, "redis:// sends tokens and cached data in clear"),
        other => anyhow::bail!("REDIS_URL: an address of a kind this node does not know: {other:?}"),
    };
    let local = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if local || allow_plaintext {
        return Ok(());
    }
    anyhow::bail!(
        "REDIS_URL reaches {host}, but {why}: use rediss:// (with INSIGHTS_REDIS_CA_FILE for a private CA), \
         or set INSIGHTS_DB_ALLOW_PLAINTEXT=true on a network you trust"
    )
}

/// True when `error` is a failed TLS handshake (an unknown issuer, a name the certificate does not
/// cover, a server that does not speak TLS) rather than a Redis that is down.
fn is_tls_failure(error: &redis::RedisError) -> bool {
    type Shared = Arc<dyn std::error::Error + Send + Sync>;
    fn is_rustls(e: &(dyn std::error::Error + 'static)) -> bool {
        if e.is::<rustls::Error>() {
            return true;
        }
        // tokio-rustls hands rustls' error on inside an io::Error, which redis keeps in an Arc.
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.get_ref().is_some_and(|inner| is_rustls(inner));
        }
        if let Some(shared) = e.downcast_ref::<Shared>() {
            return is_rustls(shared.as_ref());
        }
        e.source().is_some_and(is_rustls)
    }
    is_rustls(error)
}

/// A Redis client for `url`; a `rediss://` one trusts `ca_file` when given, else the system's roots.
fn client(url: &str, ca_file: Option<&std::path::Path>) -> anyhow::Result<redis::Client> {
    let Some(ca) = ca_file else {
        return Ok(redis::Client::open(url)?);
    };
    let root = std::fs::read(ca).map_err(|e| anyhow::anyhow!("redis_ca_file {}: {e}", ca.display()))?;
    Ok(redis::Client::build_with_tls(
        url,
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root),
        },
    )?)
}

impl Cache {
    /// The node's cache as configured: the transport is checked ([`check_transport`]) and, for
    /// `rediss://`, one connection is tried at once so a certificate that does not verify refuses the
    /// start instead of leaving the node on its in-process cache for good. A Redis that is merely down
    /// is not an error: the node starts degraded and connects when Redis is back.
    pub async fn open(config: &crate::config::Config, metrics: Metrics) -> anyhow::Result<Self> {
        let url = config.redis_url.as_deref();
        if let Some(url) = url {
            check_transport(url, config.db.allow_plaintext)?;
            if url.starts_with("rediss://") {
                let client = client(url, config.redis.ca_file.as_deref())?;
                let wait = config.redis.op_timeout.max(Duration::from_secs(2));
                if let Ok(Err(e)) =
                    tokio::time::timeout(wait, client.get_multiplexed_async_connection()).await
                    && is_tls_failure(&e)
                {
                    anyhow::bail!("REDIS_URL: the TLS handshake with Redis failed: {e}");
                }
            }
        }
        Self::new(url, &config.redis_prefix, &config.redis, metrics)
    }

    /// Connects to Redis lazily (a node starts while Redis is down), or builds the in-process cache.
    pub fn new(
        redis_url: Option<&str>,
        prefix: &str,
        redis: &RedisConfig,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let link = match redis_url {
            Some(url) => {
                let client = client(url, redis.ca_file.as_deref())?;
                // The breaker bounds every call by `op_timeout`; the manager's own timeouts only keep
                // its reconnects short.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(redis.op_timeout.max(Duration::from_millis(100))))
                    .set_response_timeout(Some(redis.op_timeout.max(Duration::from_millis(100))))
                    .set_number_of_retries(0)
                    .set_max_delay(Duration::from_secs(1));
                Some(RedisLink {
                    conn: ConnectionManager::new_lazy_with_config(client, config)?,
                    op_timeout: redis.op_timeout,
                    probe_interval: redis.probe_interval,
                    open: AtomicBool::new(false),
                    outage: Mutex::new(None),
                    pending: Mutex::new(HashMap::new()),
                })
            }
            None => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                redis: link,
                local: LocalCache::default(),
                prefix: prefix.to_owned(),
                metrics,
            }),
        })
    }

    /// Returns the full key as stored, with this deployment's prefix.
    pub fn key(&self, key: &str) -> String {
        format!("{}:{key}", self.inner.prefix)
    }

    /// Runs one Redis call through the breaker: `None` when there is no Redis, the breaker is open, or
    /// the call failed or timed out (which opens the breaker). Callers then use the in-process state.
    pub(crate) async fn redis_call<T, F, Fut>(&self, op: &'static str, call: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let link = self.inner.redis.as_ref()?;
        if link.open.load(Ordering::Acquire) {
            return None;
        }
        match tokio::time::timeout(link.op_timeout, call(link.conn.clone())).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) if is_outage(&e) => {
                self.trip(op, e.to_string());
                None
            }
            Ok(Err(e)) => {
                // A reply Redis gave (a script error, a wrong type): not an outage, but a miss.
                self.inner.metrics.cache_errors.with_label_values(&[op]).inc();
                tracing::warn!(op, error = %e, "redis call failed");
                None
            }
            Err(_) => {
                self.trip(op, format!("no answer within {} ms", link.op_timeout.as_millis()));
                None
            }
        }
    }

    /// Opens the breaker (once) and starts the probe that closes it.
    fn trip(&self, op: &'static str, reason: String) {
        let Some(link) = &self.inner.redis else {
            return;
        };
        self.inner.metrics.cache_errors.with_label_values(&[op]).inc();
        if link.open.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.metrics.redis_breaker_open.set(1);
        self.inner.metrics.redis_breaker_trips.inc();
        tracing::warn!(op, error = %reason, "redis unavailable: serving from the in-process cache and limiter until it is back");
        *lock(&link.outage) = Some((chrono::Utc::now(), reason));
        let cache = self.clone();
        tokio::spawn(async move { cache.probe_until_back().await });
    }

    async fn probe_until_back(&self) {
        let Some(link) = &self.inner.redis else {
            return;
        };
        loop {
            tokio::time::sleep(link.probe_interval).await;
            if Arc::strong_count(&self.inner) == 1 {
                return; // the node is gone
            }
            let mut conn = link.conn.clone();
            let ping = redis::cmd("PING");
            match tokio::time::timeout(link.op_timeout, ping.query_async::<String>(&mut conn)).await {
                Ok(Ok(_)) => break,
                Ok(Err(e)) => {
                    // One guard only: a second lock in the same statement would wait on the first.
                    if let Some((_, reason)) = lock(&link.outage).as_mut() {
                        *reason = e.to_string();
                    }
                }
                Err(_) => {}
            }
        }
        let mut replayed = self.replay_pending(link).await;
        link.open.store(false, Ordering::Release);
        // Writes that went to memory while the first replay ran: from now on writes go to Redis.
        replayed += self.replay_pending(link).await;
        *lock(&link.outage) = None;
        self.inner.metrics.redis_breaker_open.set(0);
        tracing::info!(replayed, "redis is back: shared cache and limits resumed");
    }

    /// Writes into Redis what was written locally while it was down; returns how many writes.
    async fn replay_pending(&self, link: &RedisLink) -> usize {
        let pending: Vec<(String, PendingWrite)> = lock(&link.pending).drain().collect();
        let now = Instant::now();
        let mut pipe = redis::pipe();
        let mut count = 0;
        for (key, write) in &pending {
            match write {
                PendingWrite::Set { value, expires } if *expires > now => {
                    let ms = (*expires - now).as_millis().max(1) as u64;
                    pipe.cmd("SET").arg(key).arg(value).arg("PX").arg(ms).ignore();
                }
                PendingWrite::Set { .. } => continue,
                PendingWrite::Delete => {
                    pipe.cmd("DEL").arg(key).ignore();
                }
            }
            count += 1;
        }
        if count == 0 {
            return 0;
        }
        let mut conn = link.conn.clone();
        let result: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
        if let Err(e) = result {
            tracing::warn!(error = %e, writes = count, "replaying writes made while redis was down failed");
            return 0;
        }
        count
    }

    /// Remembers a write made locally while Redis is down, to replay it later.
    fn remember(&self, key: &str, write: PendingWrite) {
        let Some(link) = &self.inner.redis else {
            return;
        };
        let mut pending = lock(&link.pending);
        if pending.len() < MAX_PENDING_WRITES || pending.contains_key(key) {
            pending.insert(key.to_owned(), write);
        }
    }

    /// Tells whether operations are served by the in-process state right now (no Redis, or Redis down).
    pub fn is_local(&self) -> bool {
        self.inner
            .redis
            .as_ref()
            .is_none_or(|l| l.open.load(Ordering::Acquire))
    }

    /// Reads several keys in one round trip; a missing or unreadable key is `None`.
    pub async fn get_many(&self, keys: &[String]) -> Vec<Option<String>> {
        let full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        self.get_full(&full).await
    }

    /// Like [`Cache::get_many`], with keys that already carry the prefix.
    pub(crate) async fn get_full(&self, full: &[String]) -> Vec<Option<String>> {
        if full.is_empty() {
            return Vec::new();
        }
        let remote = self
            .redis_call("get", |mut conn| async move {
                redis::cmd("MGET").arg(full).query_async(&mut conn).await
            })
            .await;
        remote.unwrap_or_else(|| full.iter().map(|k| self.inner.local.get(k)).collect())
    }

    /// Reads one key.
    pub async fn get(&self, key: &str) -> Option<String> {
        self.get_many(&[key.to_owned()])
            .await
            .into_iter()
            .next()
            .flatten()
    }

    /// Stores `value` under `key` for `ttl`.
    pub async fn set(&self, key: &str, value: &str, ttl: Duration) {
        let full = self.key(key);
        self.set_full(full, value, ttl).await;
    }

    /// Like [`Cache::set`], with a key that already carries the prefix.
    pub(crate) async fn set_full(&self, full: String, value: &str, ttl: Duration) {
        let millis = ttl.as_millis().max(1) as u64;
        let stored = self
            .redis_call("set", |mut conn| {
                let full = full.clone();
                async move {
                    redis::cmd("SET")
                        .arg(&full)
                        .arg(value)
                        .arg("PX")
                        .arg(millis)
                        .query_async::<()>(&mut conn)
                        .await
                }
            })
            .await;
        if stored.is_none() {
            self.inner.local.set(full.clone(), value.to_owned(), ttl);
            self.remember(
                &full,
                PendingWrite::Set {
                    value: value.to_owned(),
                    expires: Instant::now() + ttl,
                },
            );
        }
    }

    /// Removes keys.
    pub async fn delete(&self, keys: &[String]) {
        if keys.is_empty() {
            return;
        }
        let full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let deleted = self
            .redis_call("delete", |mut conn| {
                let full = full.clone();
                async move { redis::cmd("DEL").arg(&full).query_async::<()>(&mut conn).await }
            })
            .await;
        // The local copy goes too: it may have been written during an outage.
        for k in &full {
            self.inner.local.remove(k);
            if deleted.is_none() {
                self.remember(k, PendingWrite::Delete);
            }
        }
    }

    /// Reserves one attempt in every window of `keys` unless one of them already holds `max`: then
    /// nothing is counted and the wait until the fullest window ends is returned. Check and count are one
    /// atomic step, so a parallel burst cannot get more than `max` attempts through.
    pub async fn reserve(&self, keys: &[String], max: u32, window: Duration) -> Result<(), Duration> {
        let full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let window_ms = window.as_millis().max(1) as u64;
        let remote = self
            .redis_call("reserve", |mut conn| {
                let full = full.clone();
                async move {
                    let mut invocation = RESERVE.prepare_invoke();
                    invocation.key(&full).arg(max).arg(window_ms);
                    invocation.invoke_async::<(u8, u64)>(&mut conn).await
                }
            })
            .await;
        match remote {
            Some((1, _)) => Ok(()),
            Some((_, wait_ms)) => Err(Duration::from_millis(wait_ms.max(1))),
            None => self.inner.local.reserve(&full, u64::from(max), window),
        }
    }

    /// Takes back one attempt reserved by [`Cache::reserve`] in each of `keys`.
    pub async fn release(&self, keys: &[String]) {
        let full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let remote = self
            .redis_call("release", |mut conn| {
                let full = full.clone();
                async move {
                    let mut invocation = RELEASE.prepare_invoke();
                    invocation.key(&full);
                    invocation.invoke_async::<u8>(&mut conn).await
                }
            })
            .await;
        if remote.is_none() {
            self.inner.local.release(&full);
        }
    }

    /// The organization's data version, part of the key of every summary cached for it. It changes after
    /// each committed write to the organization's customers or interactions, so a cached summary is never
    /// served once the data it summarizes changed (R14.7). `"0"` until the first write.
    pub async fn data_version(&self, org: OrganizationId) -> String {
        self.get(&version_key(org))
            .await
            .unwrap_or_else(|| "0".to_owned())
    }

    /// Gives the organization a new data version; called after a write commits and before it is
    /// acknowledged. A random value (not a counter) cannot come back after the key is evicted. If Redis
    /// is down the new version is kept in memory and written to Redis when it is back.
    pub async fn bump_data_version(&self, org: OrganizationId) {
        let version = uuid::Uuid::new_v4().simple().to_string();
        self.set(&version_key(org), &version, DATA_VERSION_TTL).await;
    }

    /// Checks that the cache answers. While the breaker is open the probe's last finding is reported,
    /// without waiting on Redis again.
    pub async fn health(&self) -> CacheHealth {
        let Some(link) = &self.inner.redis else {
            return CacheHealth {
                backend: "in-process",
                status: "up",
                error: None,
                latency_ms: None,
                down_since: None,
            };
        };
        let down = |since: Option<chrono::DateTime<chrono::Utc>>, error: String| CacheHealth {
            backend: "redis",
            status: "down",
            error: Some(error),
            latency_ms: None,
            down_since: since,
        };
        if let Some((since, reason)) = lock(&link.outage).clone() {
            return down(Some(since), reason);
        }
        let started = Instant::now();
        let pong = self
            .redis_call("ping", |mut conn| async move {
                redis::cmd("PING").query_async::<String>(&mut conn).await
            })
            .await;
        match pong {
            Some(_) => CacheHealth {
                backend: "redis",
                status: "up",
                error: None,
                latency_ms: Some(started.elapsed().as_secs_f64() * 1000.0),
                down_since: None,
            },
            None => {
                let outage = lock(&link.outage).clone();
                match outage {
                    Some((since, reason)) => down(Some(since), reason),
                    None => down(None, "redis answered with an error".to_owned()),
                }
            }
        }
    }
}

/// Tells whether a Redis error means "Redis cannot be reached" (open the breaker) rather than "Redis
/// refused this command".
fn is_outage(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section here is a single insert, take or drain: a panic cannot leave the value
    // half-updated, so a poisoned lock is safe to keep using.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The in-process stand-in for Redis: a map with expiry times, swept as it grows.
#[derive(Default)]
struct LocalCache {
    entries: Mutex<HashMap<String, (String, Instant)>>,
}

impl LocalCache {
    const SWEEP_ABOVE: usize = 10_000;

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        // A panic while holding this lock cannot leave the map half-updated (every operation is a
        // single insert or remove), so a poisoned lock is safe to keep using.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, key: &str) -> Option<String> {
        let map = self.lock();
        map.get(key)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(v, _)| v.clone())
    }

    fn set(&self, key: String, value: String, ttl: Duration) {
        let mut map = self.lock();
        let now = Instant::now();
        if map.len() >= Self::SWEEP_ABOVE {
            map.retain(|_, (_, expires)| *expires > now);
        }
        map.insert(key, (value, now + ttl));
    }

    fn remove(&self, key: &str) {
        self.lock().remove(key);
    }

    fn reserve(&self, keys: &[String], max: u64, window: Duration) -> Result<(), Duration> {
        let mut map = self.lock();
        let now = Instant::now();
        let live = |map: &HashMap<String, (String, Instant)>, key: &str| {
            map.get(key)
                .filter(|(_, expires)| *expires > now)
                .and_then(|(count, expires)| Some((count.parse::<u64>().ok()?, *expires)))
        };
        let wait = keys
            .iter()
            .filter_map(|k| live(&map, k))
            .filter(|(count, _)| *count >= max)
            .map(|(_, expires)| expires - now)
            .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        for key in keys {
            let (count, expires) = live(&map, key).unwrap_or((0, now + window));
            map.insert(key.clone(), ((count + 1).to_string(), expires));
        }
        Ok(())
    }

    fn release(&self, keys: &[String]) {
        let mut map = self.lock();
        for key in keys {
            if let Some(entry) = map.get_mut(key)
                && let Ok(count) = entry.0.parse::<u64>()
            {
                entry.0 = count.saturating_sub(1).to_string();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_redis_to_another_machine_is_refused_unless_allowed() {
        for url in [
            "redis://cache.example.com:6379",
            "redis://10.0.0.7/2",
            "rediss://cache.example.com:6380/#insecure",
        ] {
            let e = check_transport(url, false).unwrap_err().to_string();
            assert!(e.contains("INSIGHTS_DB_ALLOW_PLAINTEXT"), "{url}: {e}");
            assert!(check_transport(url, true).is_ok(), "{url} allowed");
        }
        for url in [
            "rediss://cache.example.com:6380",
            "redis://127.0.0.1:6379",
            "redis://localhost",
            "redis://[::1]:6379",
            "redis+unix:///run/redis.sock",
        ] {
            assert!(check_transport(url, false).is_ok(), "{url}");
        }
    }

    fn config() -> RedisConfig {
        RedisConfig {
            op_timeout: Duration::from_millis(200),
            probe_interval: Duration::from_millis(100),
            ca_file: None,
        }
    }

    fn redis_url() -> String {
        std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
    }

    fn prefix() -> String {
        format!("unit-{}", uuid::Uuid::new_v4().simple())
    }

    #[tokio::test(start_paused = true)]
    async fn local_cache_expires_entries() {
        let cache = Cache::new(None, "t", &config(), Metrics::new().unwrap()).unwrap();
        cache.set("a", "1", Duration::from_millis(30)).await;
        assert_eq!(cache.get("a").await.as_deref(), Some("1"));
        tokio::time::advance(Duration::from_millis(40)).await;
        assert_eq!(cache.get("a").await, None, "expired entries are misses");
        assert!(cache.is_local());
    }

    /// The same reservation semantics in memory and in Redis: `max` attempts, then a wait until the
    /// fullest window ends; a release gives one back.
    async fn check_reservations(cache: &Cache) {
        let keys = vec!["r:a".to_owned(), "r:b".to_owned()];
        let w = Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(cache.reserve(&keys, 3, w).await, Ok(()));
        }
        let wait = cache.reserve(&keys, 3, w).await.unwrap_err();
        assert!(wait > Duration::from_secs(55) && wait <= w, "{wait:?}");
        assert!(
            cache.reserve(&keys[1..], 3, w).await.is_err(),
            "every key counted the attempts"
        );
        cache.release(&keys).await;
        assert_eq!(
            cache.reserve(&keys, 3, w).await,
            Ok(()),
            "a release gives one back"
        );
        assert!(cache.reserve(&["r:c".to_owned()], 3, w).await.is_ok());
    }

    #[tokio::test]
    async fn reservations_in_memory() {
        let cache = Cache::new(None, "t", &config(), Metrics::new().unwrap()).unwrap();
        check_reservations(&cache).await;
    }

    #[tokio::test]
    async fn reservations_in_redis_are_atomic_under_a_parallel_burst() {
        let cache = Cache::new(Some(&redis_url()), &prefix(), &config(), Metrics::new().unwrap()).unwrap();
        check_reservations(&cache).await;
        assert!(!cache.is_local(), "redis answered");
        let keys = vec!["burst".to_owned()];
        let attempts = (0..40).map(|_| {
            let cache = cache.clone();
            let keys = keys.clone();
            tokio::spawn(async move { cache.reserve(&keys, 5, Duration::from_secs(60)).await })
        });
        let mut granted = 0;
        for a in attempts {
            if a.await.unwrap().is_ok() {
                granted += 1;
            }
        }
        assert_eq!(granted, 5, "check and count are one step");
    }

    #[tokio::test]
    async fn an_unreachable_redis_opens_the_breaker_and_costs_nothing_after() {
        // Nothing listens on port 9 (discard) here: every connection is refused.
        let metrics = Metrics::new().unwrap();
        let cache = Cache::new(Some("redis://127.0.0.1:9"), "t", &config(), metrics.clone()).unwrap();
        cache.set("k", "v", Duration::from_secs(60)).await;
        assert!(cache.is_local(), "the failure opened the breaker");
        assert_eq!(metrics.redis_breaker_open.get(), 1);
        let failed = |m: &Metrics| m.cache_errors.with_label_values(&["set"]).get();
        assert_eq!(failed(&metrics), 1);
        for _ in 0..100 {
            assert_eq!(cache.get("k").await.as_deref(), Some("v"), "served from memory");
        }
        assert_eq!(
            metrics.cache_errors.with_label_values(&["get"]).get(),
            0,
            "no call went to redis while the breaker is open"
        );
        assert_eq!(metrics.redis_breaker_trips.get(), 1);
        let health = cache.health().await;
        assert_eq!(health.status, "down");
        assert!(health.down_since.is_some());
        check_reservations(&cache).await;
    }
}
