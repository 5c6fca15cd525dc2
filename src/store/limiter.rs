//! Login throttling (R1.5): after `max` failed logins for one email, or from one IP, within a window,
//! further attempts are refused with 429 until the window ends. Counting per email protects an account
//! from a distributed guesser; counting per IP stops one client from spraying many accounts.

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

impl LoginThrottle {
    /// Builds a throttle allowing `max_failures` failures per `window`.
    pub fn new(cache: Cache, max_failures: u32, window: Duration) -> Self {
        Self {
            cache,
            max_failures,
            window,
        }
    }

    fn keys(email: &str, ip: Option<IpAddr>) -> Vec<String> {
        // The email is hashed so the cache holds no addresses in clear.
        let digest = hex::encode(Sha256::digest(email.as_bytes()));
        let mut keys = vec![format!("login-fail:email:{digest}")];
        if let Some(ip) = ip {
            keys.push(format!("login-fail:ip:{ip}"));
        }
        keys
    }

    /// Returns how long to wait when this email or IP has used up its failures, else `None`.
    pub async fn blocked_for(&self, email: &str, ip: Option<IpAddr>) -> Option<Duration> {
        let mut wait: Option<Duration> = None;
        for key in Self::keys(email, ip) {
            if let Some(w) = self.cache.peek_window(&key).await
                && w.count >= u64::from(self.max_failures)
            {
                wait = Some(wait.map_or(w.resets_in, |d| d.max(w.resets_in)));
            }
        }
        wait
    }

    /// Counts a failed attempt for this email and IP.
    pub async fn record_failure(&self, email: &str, ip: Option<IpAddr>) {
        for key in Self::keys(email, ip) {
            self.cache.incr_window(&key, self.window).await;
        }
    }

    /// Forgets the failures counted for this email (not for the IP) after a successful login.
    pub async fn record_success(&self, email: &str) {
        let keys = Self::keys(email, None);
        self.cache.delete(&keys).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn blocks_after_max_failures_until_the_window_ends() {
        let cache = Cache::new(None, "t", crate::metrics::Metrics::new().unwrap()).unwrap();
        let t = LoginThrottle::new(cache, 3, Duration::from_secs(900));
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        for _ in 0..2 {
            t.record_failure("a@example.com", Some(ip)).await;
        }
        assert_eq!(t.blocked_for("a@example.com", Some(ip)).await, None);
        t.record_failure("a@example.com", Some(ip)).await;
        let wait = t
            .blocked_for("a@example.com", None)
            .await
            .expect("email is blocked");
        assert!(wait <= Duration::from_secs(900) && wait > Duration::from_secs(890));
        assert!(
            t.blocked_for("b@example.com", Some(ip)).await.is_some(),
            "the IP is blocked for any email"
        );
        assert!(t.blocked_for("b@example.com", None).await.is_none());
        tokio::time::advance(Duration::from_secs(901)).await;
        assert_eq!(
            t.blocked_for("a@example.com", Some(ip)).await,
            None,
            "the window ended"
        );
    }

    #[tokio::test]
    async fn success_clears_the_email_counter_only() {
        let cache = Cache::new(None, "t", crate::metrics::Metrics::new().unwrap()).unwrap();
        let t = LoginThrottle::new(cache, 1, Duration::from_secs(60));
        let ip: IpAddr = "10.9.9.9".parse().unwrap();
        t.record_failure("c@example.com", Some(ip)).await;
        t.record_success("c@example.com").await;
        assert!(t.blocked_for("c@example.com", None).await.is_none());
        assert!(t.blocked_for("c@example.com", Some(ip)).await.is_some());
    }
}
