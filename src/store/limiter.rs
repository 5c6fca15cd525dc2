//! Login throttling (R1.5): at most `max` failed logins per email, and per IP, within a window; beyond
//! that, attempts are refused with 429 until the window ends. Counting per email protects an account from
//! a distributed guesser; counting per IP stops one client from spraying many accounts. Password changes
//! (`/auth/password`) are throttled the same way, so a stolen access token cannot guess the password.
//!
//! Each attempt is reserved before the password is checked, in one atomic step (a Lua script in Redis,
//! a lock in memory): a parallel burst of wrong passwords gets exactly `max` guesses, not one per request
//! that checked before any had counted. A success gives its reservation back.

use std::net::IpAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::cache::Cache;

/// Counts failed logins in the cache (Redis across nodes, or in-process).
#[derive(Clone)]
pub struct LoginThrottle {
    cache: Cache,
    max_failures: u32,
    window: Duration,
}

/// An attempt that was allowed; say how it ended with [`LoginThrottle::succeeded`] (a failure needs
/// nothing: the reservation stays counted).
#[must_use = "a successful attempt must give its reservation back"]
pub struct Attempt {
    email_key: String,
    ip_key: Option<String>,
}

impl LoginThrottle {
    /// Builds a throttle allowing `max_failures` failures per `window`.
    pub fn new(cache: Cache, max_failures: u32, window: Duration) -> Self {
        Self {
            cache,
            max_failures,
            window,
        }
    }

    /// Reserves an attempt for this email (hashed: the cache holds no addresses in clear) and IP, or
    /// returns how long to wait when either has used up its failures.
    pub async fn attempt(&self, email: &str, ip: Option<IpAddr>) -> Result<Attempt, Duration> {
        let attempt = Attempt {
            email_key: format!(
                "login-fail:email:{}",
                hex::encode(Sha256::digest(email.to_lowercase().as_bytes()))
            ),
            ip_key: ip.map(|ip| format!("login-fail:ip:{ip}")),
        };
        let mut keys = vec![attempt.email_key.clone()];
        keys.extend(attempt.ip_key.clone());
        self.cache.reserve(&keys, self.max_failures, self.window).await?;
        Ok(attempt)
    }

    /// Forgets the email's failures and gives the IP its reservation back: the attempt succeeded.
    pub async fn succeeded(&self, attempt: Attempt) {
        self.cache.delete(std::slice::from_ref(&attempt.email_key)).await;
        if let Some(ip_key) = attempt.ip_key {
            self.cache.release(&[ip_key]).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RedisConfig;

    fn cache() -> Cache {
        let redis = RedisConfig {
            op_timeout: Duration::from_millis(200),
            probe_interval: Duration::from_secs(1),
            ca_file: None,
        };
        Cache::new(None, "t", &redis, crate::metrics::Metrics::new().unwrap()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn blocks_after_max_failures_until_the_window_ends() {
        let t = LoginThrottle::new(cache(), 3, Duration::from_secs(900));
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        for _ in 0..3 {
            let _failed = t.attempt("a@example.com", Some(ip)).await.unwrap();
        }
        let wait = t
            .attempt("a@example.com", None)
            .await
            .err()
            .expect("email is blocked");
        assert!(wait <= Duration::from_secs(900) && wait > Duration::from_secs(890));
        assert!(
            t.attempt("b@example.com", Some(ip)).await.is_err(),
            "the IP is blocked for any email"
        );
        assert!(
            t.attempt("A@Example.com", None).await.is_err(),
            "the email is counted whatever its case"
        );
        let _other = t.attempt("b@example.com", None).await.unwrap();
        tokio::time::advance(Duration::from_secs(901)).await;
        assert!(
            t.attempt("a@example.com", Some(ip)).await.is_ok(),
            "the window ended"
        );
    }

    #[tokio::test]
    async fn success_clears_the_email_and_gives_the_ip_its_attempt_back() {
        let t = LoginThrottle::new(cache(), 1, Duration::from_secs(60));
        let ip: IpAddr = "10.9.9.9".parse().unwrap();
        let ok = t.attempt("c@example.com", Some(ip)).await.unwrap();
        t.succeeded(ok).await;
        let _failed = t.attempt("c@example.com", Some(ip)).await.unwrap();
        assert!(t.attempt("c@example.com", None).await.is_err());
        assert!(
            t.attempt("d@example.com", Some(ip)).await.is_err(),
            "the failure counted for the IP"
        );
    }
}
