//! A small cache with time-to-live: Redis when `REDIS_URL` is set, otherwise an in-process map, so a
//! single node needs only PostgreSQL.
//!
//! The cache only ever holds copies of durable truth or counters that may be lost: every operation
//! degrades to a miss when Redis is unreachable (logged and counted), and never fails a request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::domain::OrganizationId;
use crate::metrics::Metrics;

/// The cache used by a node.
#[derive(Clone)]
pub struct Cache {
    backend: Backend,
    prefix: String,
    metrics: Metrics,
}

#[derive(Clone)]
enum Backend {
    Redis(ConnectionManager),
    Local(std::sync::Arc<LocalCache>),
}

/// What `/readyz` says about the cache.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheHealth {
    /// `redis` or `in-process`.
    pub backend: &'static str,
    /// `up`, or `down` with the reason.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

/// Result of counting one attempt in a fixed window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowCount {
    /// Attempts counted in the current window, including this one.
    pub count: u64,
    /// Time until the window (and its count) expires.
    pub resets_in: Duration,
}

/// How long a data version is kept after the last write: far longer than any summary is cached, so a
/// version that expires has no summary left under it.
const DATA_VERSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

fn version_key(org: OrganizationId) -> String {
    format!("dv:{}", org.as_uuid())
}

/// Counts an attempt and (on the first one) starts the window, atomically, in one round trip.
const INCR_WINDOW_LUA: &str = r"
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {count, ttl}
";

impl Cache {
    /// Connects to Redis lazily (a node starts while Redis is down), or builds the in-process cache.
    pub fn new(redis_url: Option<&str>, prefix: &str, metrics: Metrics) -> anyhow::Result<Self> {
        let backend = match redis_url {
            Some(url) => {
                let client = redis::Client::open(url)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(Duration::from_secs(1)))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(2));
                Backend::Redis(ConnectionManager::new_lazy_with_config(client, config)?)
            }
            None => Backend::Local(std::sync::Arc::new(LocalCache::default())),
        };
        Ok(Self {
            backend,
            prefix: prefix.to_owned(),
            metrics,
        })
    }

    /// Returns the full key as stored, with this deployment's prefix.
    pub fn key(&self, key: &str) -> String {
        format!("{}:{key}", self.prefix)
    }

    /// Reads several keys in one round trip; a missing or unreadable key is `None`.
    pub async fn get_many(&self, keys: &[String]) -> Vec<Option<String>> {
        let full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        match &self.backend {
            Backend::Local(local) => full.iter().map(|k| local.get(k)).collect(),
            Backend::Redis(conn) => {
                let mut conn = conn.clone();
                let result: redis::RedisResult<Vec<Option<String>>> =
                    redis::cmd("MGET").arg(&full).query_async(&mut conn).await;
                result.unwrap_or_else(|e| {
                    self.degraded("get", &e);
                    vec![None; keys.len()]
                })
            }
        }
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
        match &self.backend {
            Backend::Local(local) => local.set(full, value.to_owned(), ttl),
            Backend::Redis(conn) => {
                let mut conn = conn.clone();
                let millis = ttl.as_millis().max(1) as u64;
                let result: redis::RedisResult<()> = redis::cmd("SET")
                    .arg(&full)
                    .arg(value)
                    .arg("PX")
                    .arg(millis)
                    .query_async(&mut conn)
                    .await;
                if let Err(e) = result {
                    self.degraded("set", &e);
                }
            }
        }
    }

    /// Removes keys.
    pub async fn delete(&self, keys: &[String]) {
        if keys.is_empty() {
            return;
        }
        let full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        match &self.backend {
            Backend::Local(local) => full.iter().for_each(|k| local.remove(k)),
            Backend::Redis(conn) => {
                let mut conn = conn.clone();
                let result: redis::RedisResult<()> =
                    redis::cmd("DEL").arg(&full).query_async(&mut conn).await;
                if let Err(e) = result {
                    self.degraded("delete", &e);
                }
            }
        }
    }

    /// Counts one attempt under `key` in a fixed window of length `window`.
    /// Returns `None` when the count cannot be kept (Redis down).
    pub async fn incr_window(&self, key: &str, window: Duration) -> Option<WindowCount> {
        let full = self.key(key);
        match &self.backend {
            Backend::Local(local) => Some(local.incr_window(full, window)),
            Backend::Redis(conn) => {
                let mut conn = conn.clone();
                let script = redis::Script::new(INCR_WINDOW_LUA);
                let window_ms = window.as_millis().max(1) as u64;
                let result: redis::RedisResult<(u64, i64)> =
                    script.key(&full).arg(window_ms).invoke_async(&mut conn).await;
                match result {
                    Ok((count, ttl)) => Some(WindowCount {
                        count,
                        resets_in: Duration::from_millis(ttl.max(0) as u64),
                    }),
                    Err(e) => {
                        self.degraded("incr_window", &e);
                        None
                    }
                }
            }
        }
    }

    /// Reads the current count of a window without counting an attempt.
    pub async fn peek_window(&self, key: &str) -> Option<WindowCount> {
        let full = self.key(key);
        match &self.backend {
            Backend::Local(local) => local.peek_window(&full),
            Backend::Redis(conn) => {
                let mut conn = conn.clone();
                let mut pipe = redis::pipe();
                pipe.cmd("GET").arg(&full).cmd("PTTL").arg(&full);
                let result: redis::RedisResult<(Option<u64>, i64)> = pipe.query_async(&mut conn).await;
                match result {
                    Ok((Some(count), ttl)) if ttl > 0 => Some(WindowCount {
                        count,
                        resets_in: Duration::from_millis(ttl as u64),
                    }),
                    Ok(_) => None,
                    Err(e) => {
                        self.degraded("peek_window", &e);
                        None
                    }
                }
            }
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
    /// is down the summaries keep their key until their TTL ends, the bound the TTLs promise (R14.3–14.5).
    pub async fn bump_data_version(&self, org: OrganizationId) {
        let version = uuid::Uuid::new_v4().simple().to_string();
        self.set(&version_key(org), &version, DATA_VERSION_TTL).await;
    }

    fn degraded(&self, op: &'static str, e: &redis::RedisError) {
        self.metrics.cache_errors.with_label_values(&[op]).inc();
        tracing::warn!(op, error = %e, "redis unavailable, continuing without cache");
    }

    /// Tells whether this cache is shared through Redis.
    pub fn is_redis(&self) -> bool {
        matches!(self.backend, Backend::Redis(_))
    }

    /// Checks that the cache answers.
    pub async fn health(&self) -> CacheHealth {
        match &self.backend {
            Backend::Local(_) => CacheHealth {
                backend: "in-process",
                status: "up",
                error: None,
                latency_ms: None,
            },
            Backend::Redis(conn) => {
                let mut conn = conn.clone();
                let started = Instant::now();
                let result: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
                match result {
                    Ok(_) => CacheHealth {
                        backend: "redis",
                        status: "up",
                        error: None,
                        latency_ms: Some(started.elapsed().as_secs_f64() * 1000.0),
                    },
                    Err(e) => CacheHealth {
                        backend: "redis",
                        status: "down",
                        error: Some(e.to_string()),
                        latency_ms: None,
                    },
                }
            }
        }
    }
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

    fn incr_window(&self, key: String, window: Duration) -> WindowCount {
        let mut map = self.lock();
        let now = Instant::now();
        let entry = map.entry(key).or_insert_with(|| ("0".to_owned(), now + window));
        if entry.1 <= now {
            *entry = ("0".to_owned(), now + window);
        }
        let count = entry.0.parse::<u64>().unwrap_or(0) + 1;
        entry.0 = count.to_string();
        WindowCount {
            count,
            resets_in: entry.1 - now,
        }
    }

    fn peek_window(&self, key: &str) -> Option<WindowCount> {
        let map = self.lock();
        let now = Instant::now();
        let (count, expires) = map.get(key).filter(|(_, expires)| *expires > now)?;
        Some(WindowCount {
            count: count.parse().ok()?,
            resets_in: *expires - now,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn local_cache_expires_entries_and_counts_windows() {
        let cache = Cache::new(None, "t", Metrics::new().unwrap()).unwrap();
        cache.set("a", "1", Duration::from_millis(30)).await;
        assert_eq!(cache.get("a").await.as_deref(), Some("1"));
        tokio::time::advance(Duration::from_millis(40)).await;
        assert_eq!(cache.get("a").await, None, "expired entries are misses");

        let w = Duration::from_millis(50);
        assert_eq!(cache.incr_window("k", w).await.unwrap().count, 1);
        assert_eq!(cache.incr_window("k", w).await.unwrap().count, 2);
        assert_eq!(cache.peek_window("k").await.unwrap().count, 2);
        tokio::time::advance(Duration::from_millis(60)).await;
        assert_eq!(cache.peek_window("k").await, None);
        assert_eq!(
            cache.incr_window("k", w).await.unwrap().count,
            1,
            "a new window starts from one"
        );
        cache.delete(&["k".to_owned()]).await;
        assert_eq!(cache.peek_window("k").await, None);
    }
}
