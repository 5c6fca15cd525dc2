//! Request quotas (R13): the generic cell rate algorithm (GCRA, the algorithm of redis-cell), decided for
//! every quota a request falls under in one Redis round trip.
//!
//! Each quota is `limit` requests per `window`. Its whole state is one number, the theoretical arrival
//! time (TAT) of the next request; a request is allowed when `TAT + interval - window <= now`, and then
//! moves the TAT on by `interval = window / limit`. So a client may burst `limit` requests, then goes on
//! at `limit` per window; nothing refills in the background and there is no read-then-write race: the
//! script reads and writes every quota atomically, and Redis's clock is the one clock of every node.
//! A request is allowed only if all its quotas allow it, and then it is counted in all of them.
//!
//! A client that keeps sending while refused is blocked for longer each time (R13.9): the n-th refusal
//! in a row blocks it for `backoff_base * 2^(n-1)`, at most `backoff_max`, and the strikes are forgotten
//! a window after the block ends (R13.10).
//!
//! The same script also reads the cache keys the request needs next (the cached token verification
//! and its revocation tombstone), so an authenticated request costs one round trip for both. While Redis
//! is down (the cache's breaker is open) the same algorithm runs in memory, per node.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::cache::Cache;

/// What a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    /// Every request from a client IP (R13.1).
    Ip,
    /// Requests to the auth endpoints from a client IP (R13.3).
    AuthIp,
    /// Authenticated requests of a user (R13.2).
    User,
    /// Requests with an API key.
    ApiKey,
}

impl QuotaKind {
    /// The quota's name in headers, errors, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::AuthIp => "auth_ip",
            Self::User => "user",
            Self::ApiKey => "api_key",
        }
    }
}

/// One quota a request falls under.
#[derive(Debug, Clone)]
pub struct Quota {
    pub kind: QuotaKind,
    /// Whose quota: an IP, a user id, an API key digest.
    pub subject: String,
    pub limit: u32,
    pub window: Duration,
}

impl Quota {
    fn key(&self) -> String {
        format!("rl:{}:{}", self.kind.name(), self.subject)
    }

    fn interval_us(&self) -> u64 {
        (micros(self.window) / u64::from(self.limit.max(1))).max(1)
    }
}

/// Where a request stands with one quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaState {
    pub kind: QuotaKind,
    pub limit: u32,
    pub window: Duration,
    /// Requests still allowed now.
    pub remaining: u32,
    /// Time until the quota is whole again.
    pub reset_after: Duration,
    /// `Some` when this quota refused the request: how long to wait.
    pub retry_after: Option<Duration>,
}

impl QuotaState {
    /// `remaining` requests and `reset_us` microseconds until whole again, as the algorithm computed
    /// them (in Redis or here).
    fn new(q: &Quota, remaining: u64, reset_us: u64, retry_after: Option<Duration>) -> Self {
        Self {
            kind: q.kind,
            limit: q.limit,
            window: q.window,
            remaining: remaining.min(u64::from(q.limit)) as u32,
            reset_after: Duration::from_micros(reset_us),
            retry_after,
        }
    }
}

/// The decision on one request.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// One per quota, in the order asked.
    pub states: Vec<QuotaState>,
    /// The cache keys read along, in the order asked.
    pub values: Vec<Option<String>>,
    /// Unix time of the decision, in microseconds (Redis's clock, or this node's).
    pub now_us: u64,
}

impl Verdict {
    /// The quota that refused the request (the one with the longest wait), if any.
    pub fn refused(&self) -> Option<&QuotaState> {
        refused(&self.states)
    }
}

/// The quota that refused (the one with the longest wait), if any.
pub fn refused(states: &[QuotaState]) -> Option<&QuotaState> {
    states
        .iter()
        .filter(|s| s.retry_after.is_some())
        .max_by_key(|s| s.retry_after)
}

/// The quota to report in `X-RateLimit-*`: the one that refused, else the one with least left.
pub fn tightest(states: &[QuotaState]) -> Option<&QuotaState> {
    refused(states).or_else(|| states.iter().min_by_key(|s| (s.remaining, s.limit)))
}

/// How repeat offenders are blocked.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

/// Decides quotas in Redis, or in memory while Redis is down or absent.
pub struct RateLimiter {
    cache: Cache,
    backoff: Backoff,
    local: Mutex<HashMap<String, Cell>>,
}

/// One quota's state: its TAT and its block (all Unix microseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cell {
    pub tat: u64,
    pub blocked_until: u64,
    pub strikes: u32,
    /// When the strikes are forgotten.
    pub strikes_expire: u64,
}

/// Cells kept in memory before expired ones are swept.
const LOCAL_SWEEP_ABOVE: usize = 100_000;

/// KEYS: the n quotas' TAT keys, then their n block keys, then the keys to read back.
/// ARGV: n, backoff base (µs), backoff max (µs), then per quota its limit and window (µs).
/// Returns: now (µs), then per quota: retry (µs, 0 = allowed), remaining, reset (µs); then the values.
const GCRA_LUA: &str = r"
local n = tonumber(ARGV[1])
local base = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat, interval, window, retry = {}, {}, {}, {}
local refused = false
for i = 1, n do
  local limit = tonumber(ARGV[2 + 2 * i])
  window[i] = tonumber(ARGV[3 + 2 * i])
  interval[i] = math.max(1, math.floor(window[i] / limit))
  local current = tonumber(redis.call('GET', KEYS[i]) or '0')
  if current < now then current = now end
  tat[i] = current
  local wait = current + interval[i] - window[i] - now
  local blocked = tonumber(redis.call('HGET', KEYS[n + i], 'until') or '0') - now
  if blocked > wait then wait = blocked end
  if wait > 0 then retry[i] = wait; refused = true else retry[i] = 0 end
end
local out = {now}
for i = 1, n do
  local remaining, reset
  if refused then
    if retry[i] > 0 then
      local strikes = redis.call('HINCRBY', KEYS[n + i], 'strikes', 1)
      local block = math.min(base * 2 ^ (strikes - 1), cap)
      if block > retry[i] then retry[i] = block end
      redis.call('HSET', KEYS[n + i], 'until', string.format('%d', now + retry[i]))
      redis.call('PEXPIRE', KEYS[n + i], math.ceil((retry[i] + window[i]) / 1000))
      remaining = 0
    else
      remaining = math.floor((now + window[i] - tat[i]) / interval[i])
    end
    reset = tat[i] - now
  else
    local next_tat = tat[i] + interval[i]
    redis.call('SET', KEYS[i], string.format('%d', next_tat), 'PX', math.ceil((next_tat - now) / 1000))
    remaining = math.floor((now + window[i] - next_tat) / interval[i])
    reset = next_tat - now
  end
  if remaining < 0 then remaining = 0 end
  out[#out + 1] = retry[i]
  out[#out + 1] = remaining
  out[#out + 1] = reset
end
for j = 2 * n + 1, #KEYS do
  out[#out + 1] = redis.call('GET', KEYS[j])
end
return out
";

static GCRA: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GCRA_LUA));

impl RateLimiter {
    /// Builds a limiter on the node's cache.
    pub fn new(cache: Cache, backoff: Backoff) -> Self {
        Self {
            cache,
            backoff,
            local: Mutex::new(HashMap::new()),
        }
    }

    /// Decides `quotas` for one request and reads `reads` (full cache keys without the prefix) along,
    /// in one Redis round trip (none while Redis is down).
    pub async fn check(&self, quotas: &[Quota], reads: &[String]) -> Verdict {
        if quotas.is_empty() {
            return Verdict {
                states: Vec::new(),
                values: self.cache.get_many(reads).await,
                now_us: unix_micros(),
            };
        }
        if let Some(verdict) = self.check_in_redis(quotas, reads).await {
            return verdict;
        }
        let now = unix_micros();
        let states = {
            let mut cells = lock(&self.local);
            if cells.len() > LOCAL_SWEEP_ABOVE {
                cells.retain(|_, c| c.tat > now || c.strikes_expire > now);
            }
            let mut current: Vec<Cell> = quotas
                .iter()
                .map(|q| cells.get(&q.key()).copied().unwrap_or_default())
                .collect();
            let states = decide(quotas, &mut current, now, self.backoff);
            for (q, c) in quotas.iter().zip(current) {
                cells.insert(q.key(), c);
            }
            states
        };
        Verdict {
            states,
            values: self.cache.get_many(reads).await,
            now_us: now,
        }
    }

    async fn check_in_redis(&self, quotas: &[Quota], reads: &[String]) -> Option<Verdict> {
        let mut keys: Vec<String> = quotas.iter().map(|q| self.cache.key(&q.key())).collect();
        keys.extend(
            quotas
                .iter()
                .map(|q| self.cache.key(&format!("{}:block", q.key()))),
        );
        keys.extend(reads.iter().map(|k| self.cache.key(k)));
        let mut args: Vec<u64> = vec![
            quotas.len() as u64,
            micros(self.backoff.base),
            micros(self.backoff.max),
        ];
        for q in quotas {
            args.push(u64::from(q.limit));
            args.push(micros(q.window));
        }
        let reply: Vec<redis::Value> = self
            .cache
            .redis_call("rate_limit", |mut conn| {
                let (keys, args) = (keys.clone(), args.clone());
                async move {
                    let mut invocation = GCRA.prepare_invoke();
                    invocation.key(keys).arg(args);
                    invocation.invoke_async(&mut conn).await
                }
            })
            .await?;
        parse_reply(quotas, reads.len(), &reply)
    }
}

/// Reads the script's reply; `None` (treated like an outage) if it has an unexpected shape.
fn parse_reply(quotas: &[Quota], reads: usize, reply: &[redis::Value]) -> Option<Verdict> {
    let int = |v: &redis::Value| match v {
        redis::Value::Int(i) => Some((*i).max(0) as u64),
        _ => None,
    };
    if reply.len() != 1 + 3 * quotas.len() + reads {
        tracing::warn!(
            len = reply.len(),
            "rate limit script answered an unexpected shape"
        );
        return None;
    }
    let now_us = int(&reply[0])?;
    let mut states = Vec::with_capacity(quotas.len());
    for (i, q) in quotas.iter().enumerate() {
        let retry = int(&reply[1 + 3 * i])?;
        let remaining = int(&reply[2 + 3 * i])?;
        let reset = int(&reply[3 + 3 * i])?;
        states.push(QuotaState::new(
            q,
            remaining,
            reset,
            (retry > 0).then(|| Duration::from_micros(retry)),
        ));
    }
    let values = reply[1 + 3 * quotas.len()..]
        .iter()
        .map(|v| match v {
            redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
            redis::Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    Some(Verdict {
        states,
        values,
        now_us,
    })
}

/// The algorithm itself, on cells in memory: the same steps as the Lua script, so the node enforces the
/// same limits while Redis is away. `now` is Unix microseconds.
pub fn decide(quotas: &[Quota], cells: &mut [Cell], now: u64, backoff: Backoff) -> Vec<QuotaState> {
    let mut waits = Vec::with_capacity(quotas.len());
    for (q, cell) in quotas.iter().zip(cells.iter_mut()) {
        if cell.strikes_expire <= now {
            cell.strikes = 0;
        }
        let tat = cell.tat.max(now);
        let gcra_wait = (tat + q.interval_us()).saturating_sub(micros(q.window) + now);
        let block_wait = cell.blocked_until.saturating_sub(now);
        waits.push((tat, gcra_wait.max(block_wait)));
    }
    let refused = waits.iter().any(|(_, wait)| *wait > 0);
    let mut states = Vec::with_capacity(quotas.len());
    for ((q, cell), (tat, wait)) in quotas.iter().zip(cells.iter_mut()).zip(waits) {
        let interval = q.interval_us();
        let window = micros(q.window);
        let (remaining, reset, retry) = if !refused {
            let next = tat + interval;
            cell.tat = next;
            ((now + window).saturating_sub(next) / interval, next - now, None)
        } else if wait > 0 {
            cell.strikes = cell.strikes.saturating_add(1);
            let doubling = 2u64.saturating_pow(cell.strikes - 1);
            let block = micros(backoff.base)
                .saturating_mul(doubling)
                .min(micros(backoff.max));
            let retry = wait.max(block);
            cell.blocked_until = now + retry;
            cell.strikes_expire = now + retry + window;
            (0, tat - now, Some(Duration::from_micros(retry)))
        } else {
            ((now + window).saturating_sub(tat) / interval, tat - now, None)
        };
        states.push(QuotaState::new(q, remaining, reset, retry));
    }
    states
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Now as Unix microseconds.
pub fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, micros)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section reads and writes whole cells: a panic cannot leave one half-written.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RedisConfig;
    use proptest::prelude::*;

    const BACKOFF: Backoff = Backoff {
        base: Duration::from_secs(1),
        max: Duration::from_secs(8),
    };

    fn quota(kind: QuotaKind, limit: u32, window_secs: u64) -> Quota {
        Quota {
            kind,
            subject: "s".to_owned(),
            limit,
            window: Duration::from_secs(window_secs),
        }
    }

    const SEC: u64 = 1_000_000;

    #[test]
    fn a_burst_of_limit_is_allowed_then_one_per_interval() {
        let q = [quota(QuotaKind::User, 4, 60)];
        let mut cells = [Cell::default()];
        let t0 = 1_000 * SEC;
        for expected in (0..4).rev() {
            let s = decide(&q, &mut cells, t0, BACKOFF);
            assert_eq!(s[0].retry_after, None);
            assert_eq!(s[0].remaining, expected);
        }
        let s = decide(&q, &mut cells, t0, BACKOFF);
        assert_eq!(
            s[0].retry_after,
            Some(Duration::from_secs(15)),
            "one interval away"
        );
        assert_eq!(s[0].remaining, 0);
        assert_eq!(s[0].reset_after, Duration::from_secs(60));
        // Waiting as told (15 s) lets the next request through.
        let s = decide(&q, &mut cells, t0 + 15 * SEC, BACKOFF);
        assert_eq!(s[0].retry_after, None, "{s:?}");
    }

    #[test]
    fn repeat_offenders_are_blocked_longer_each_time_up_to_the_cap() {
        let q = [quota(QuotaKind::Ip, 60, 60)]; // one per second
        let mut cells = [Cell::default()];
        let t0 = 5_000 * SEC;
        for _ in 0..60 {
            assert!(decide(&q, &mut cells, t0, BACKOFF)[0].retry_after.is_none());
        }
        let mut waits = Vec::new();
        for _ in 0..6 {
            waits.push(
                decide(&q, &mut cells, t0, BACKOFF)[0]
                    .retry_after
                    .unwrap()
                    .as_secs(),
            );
        }
        assert_eq!(waits, [1, 2, 4, 8, 8, 8], "doubling, capped");
        // Once the block and a window have passed, strikes are forgotten and requests flow again.
        let later = t0 + 8 * SEC + 61 * SEC;
        assert!(decide(&q, &mut cells, later, BACKOFF)[0].retry_after.is_none());
        assert_eq!(cells[0].strikes, 0);
    }

    #[test]
    fn a_request_counts_in_every_quota_or_in_none() {
        let q = [quota(QuotaKind::Ip, 10, 60), quota(QuotaKind::User, 2, 60)];
        let mut cells = [Cell::default(); 2];
        let t0 = 9_000 * SEC;
        decide(&q, &mut cells, t0, BACKOFF);
        decide(&q, &mut cells, t0, BACKOFF);
        let s = decide(&q, &mut cells, t0, BACKOFF);
        assert!(s[1].retry_after.is_some() && s[0].retry_after.is_none());
        assert_eq!(s[0].remaining, 8, "the refused request did not use the IP quota");
        let ip_tat = cells[0].tat;
        decide(&q, &mut cells, t0, BACKOFF);
        assert_eq!(cells[0].tat, ip_tat);
    }

    proptest! {
        /// Over any stretch of time the allowed requests stay within the burst plus the rate, and a
        /// client that keeps to the rate is never refused.
        #[test]
        fn allowed_requests_never_exceed_burst_plus_rate(
            gaps in proptest::collection::vec(0u64..3 * SEC, 1..300),
            limit in 1u32..50,
        ) {
            let q = [quota(QuotaKind::User, limit, 60)];
            let interval = 60 * SEC / u64::from(limit);
            let mut cells = [Cell::default()];
            let mut now = 1_000_000 * SEC;
            let mut allowed = Vec::new();
            for gap in gaps {
                now += gap;
                if decide(&q, &mut cells, now, Backoff { base: Duration::from_micros(1), max: Duration::from_micros(1) })[0].retry_after.is_none() {
                    allowed.push(now);
                }
            }
            for (i, start) in allowed.iter().enumerate() {
                let within = allowed[i..].iter().take_while(|t| **t < start + 60 * SEC).count() as u64;
                prop_assert!(within <= u64::from(limit) + 60 * SEC / interval);
            }
        }

        #[test]
        fn a_client_at_the_rate_is_never_refused(limit in 1u32..1000, n in 1usize..200) {
            let q = [quota(QuotaKind::ApiKey, limit, 60)];
            let interval = 60 * SEC / u64::from(limit);
            let mut cells = [Cell::default()];
            let t0 = 77 * SEC;
            for i in 0..n as u64 {
                prop_assert!(decide(&q, &mut cells, t0 + i * interval, BACKOFF)[0].retry_after.is_none());
            }
        }
    }

    fn redis_cache(prefix: &str) -> Cache {
        let url = std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let config = RedisConfig {
            op_timeout: Duration::from_millis(500),
            probe_interval: Duration::from_secs(1),
            ca_file: None,
        };
        Cache::new(
            Some(&url),
            prefix,
            &config,
            crate::metrics::Metrics::new().unwrap(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn the_script_decides_like_the_local_algorithm_and_reads_keys_along() {
        let prefix = format!("unit-{}", uuid::Uuid::new_v4().simple());
        let cache = redis_cache(&prefix);
        cache.set("token", "cached", Duration::from_secs(60)).await;
        let limiter = RateLimiter::new(cache.clone(), BACKOFF);
        let q = [quota(QuotaKind::Ip, 100, 60), quota(QuotaKind::User, 3, 60)];
        let reads = ["token".to_owned(), "absent".to_owned()];
        for expected in [2, 1, 0] {
            let v = limiter.check(&q, &reads).await;
            assert!(v.refused().is_none());
            assert_eq!(v.states[1].remaining, expected);
            assert_eq!(v.values, [Some("cached".to_owned()), None]);
        }
        assert!(!cache.is_local(), "decided in redis");
        let v = limiter.check(&q, &reads).await;
        let refused = v.refused().unwrap();
        assert_eq!(refused.kind, QuotaKind::User);
        assert!(
            refused.retry_after.unwrap() >= Duration::from_secs(1),
            "the first block"
        );
        assert_eq!(v.states[0].remaining, 97, "a refused request is not counted");
        let again = limiter.check(&q, &reads).await;
        assert!(
            again.refused().unwrap().retry_after.unwrap() >= Duration::from_secs(2),
            "blocked longer the second time"
        );
        // A second limiter on the same Redis (another node) shares the budget.
        let other = RateLimiter::new(redis_cache(&prefix), BACKOFF);
        assert!(other.check(&q, &[]).await.refused().is_some());
    }
}
