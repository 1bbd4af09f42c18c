//! Throttling of sign-in, registration and reset requests, per account and per client IP.
//!
//! Fixed windows of `throttle.window`: each (limit, key) pair counts events; at the limit,
//! further attempts are refused until the window ends. Counters live in memory, or in Redis
//! when `redis_url` is set so that every replica sees the same counts. If Redis cannot be
//! reached, the limiter falls back to its in-memory counters and logs a warning (at most once
//! a minute): throttling keeps working per replica rather than failing open or taking
//! sign-in down with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::config::ThrottleConfig;

/// What is being limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    LoginFailuresPerAccount,
    LoginsPerIp,
    RegistrationsPerIp,
    ResetsPerAccount,
    ResetsPerIp,
}

impl Limit {
    fn prefix(self) -> &'static str {
        match self {
            Self::LoginFailuresPerAccount => "login-account",
            Self::LoginsPerIp => "login-ip",
            Self::RegistrationsPerIp => "register-ip",
            Self::ResetsPerAccount => "reset-account",
            Self::ResetsPerIp => "reset-ip",
        }
    }

    fn max(self, config: &ThrottleConfig) -> u32 {
        match self {
            Self::LoginFailuresPerAccount => config.login_failures_per_account,
            Self::LoginsPerIp => config.logins_per_ip,
            Self::RegistrationsPerIp => config.registrations_per_ip,
            Self::ResetsPerAccount => config.resets_per_account,
            Self::ResetsPerIp => config.resets_per_ip,
        }
    }
}

/// Counts `INCR` and starts the window on the first hit, atomically.
const HIT_SCRIPT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
return {n, ttl}
";

#[derive(Clone)]
pub struct Throttle {
    config: Arc<ThrottleConfig>,
    local: Arc<Mutex<HashMap<String, (u32, Instant)>>>,
    redis: Option<Arc<RedisCounters>>,
}

struct RedisCounters {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    script: redis::Script,
    last_warning: Mutex<Option<Instant>>,
    /// After a failure Redis is skipped until this instant, so that an outage costs each
    /// request nothing rather than a connection timeout.
    down_until: Mutex<Option<Instant>>,
}

/// How long Redis is left alone after a failure.
const REDIS_BACKOFF: Duration = Duration::from_secs(5);

impl Throttle {
    /// A limiter; with a Redis URL, counters are shared through Redis.
    pub fn new(config: &ThrottleConfig, redis_url: &str) -> Result<Self, redis::RedisError> {
        let redis = if redis_url.is_empty() {
            None
        } else {
            Some(Arc::new(RedisCounters {
                client: redis::Client::open(redis_url)?,
                conn: OnceCell::new(),
                script: redis::Script::new(HIT_SCRIPT),
                last_warning: Mutex::new(None),
                down_until: Mutex::new(None),
            }))
        };
        Ok(Self {
            config: Arc::new(config.clone()),
            local: Arc::default(),
            redis,
        })
    }

    fn key(limit: Limit, key: &str) -> String {
        format!("tessera:throttle:{}:{}", limit.prefix(), key.to_lowercase())
    }

    /// `Some(retry_after)` when `key` has used up `limit` in the current window.
    pub async fn blocked(&self, limit: Limit, key: &str) -> Option<Duration> {
        let max = limit.max(&self.config);
        let key = Self::key(limit, key);
        let (count, remaining) = match self.redis_peek(&key).await {
            Some(found) => found,
            None => self.local_peek(&key),
        };
        (count >= max).then(|| remaining.max(Duration::from_secs(1)))
    }

    /// Counts one event against `limit` for `key`.
    pub async fn hit(&self, limit: Limit, key: &str) {
        let key = Self::key(limit, key);
        if !self.redis_hit(&key).await {
            self.local_hit(&key);
        }
    }

    /// Forgets the count (a successful sign-in clears the account's failures).
    pub async fn clear(&self, limit: Limit, key: &str) {
        let key = Self::key(limit, key);
        if let Some(redis) = &self.redis
            && let Some(mut conn) = redis.connection(self).await
        {
            let result: Result<(), _> = redis::cmd("DEL").arg(&key).query_async(&mut conn).await;
            if let Err(e) = result {
                redis.warn(&e);
            }
        }
        if let Ok(mut map) = self.local.lock() {
            map.remove(&key);
        }
    }

    fn local_peek(&self, key: &str) -> (u32, Duration) {
        let now = Instant::now();
        let Ok(map) = self.local.lock() else {
            return (0, Duration::ZERO);
        };
        match map.get(key) {
            Some((count, ends)) if *ends > now => (*count, *ends - now),
            _ => (0, Duration::ZERO),
        }
    }

    fn local_hit(&self, key: &str) {
        let now = Instant::now();
        let window = self.config.window;
        let Ok(mut map) = self.local.lock() else {
            return;
        };
        // Bound memory: drop finished windows now and then.
        if map.len() > 10_000 {
            map.retain(|_, (_, ends)| *ends > now);
        }
        let entry = map.entry(key.to_owned()).or_insert((0, now + window));
        if entry.1 <= now {
            *entry = (0, now + window);
        }
        entry.0 = entry.0.saturating_add(1);
    }

    async fn redis_peek(&self, key: &str) -> Option<(u32, Duration)> {
        let redis = self.redis.as_ref()?;
        let mut conn = redis.connection(self).await?;
        let result: Result<(Option<u32>, i64), _> = redis::pipe()
            .get(key)
            .pttl(key)
            .query_async(&mut conn)
            .await;
        match result {
            Ok((count, ttl)) => Some((
                count.unwrap_or(0),
                Duration::from_millis(u64::try_from(ttl).unwrap_or(0)),
            )),
            Err(e) => {
                redis.warn(&e);
                None
            }
        }
    }

    async fn redis_hit(&self, key: &str) -> bool {
        let Some(redis) = &self.redis else {
            return false;
        };
        let Some(mut conn) = redis.connection(self).await else {
            return false;
        };
        let window_ms = u64::try_from(self.config.window.as_millis()).unwrap_or(u64::MAX);
        let result: Result<(u32, i64), _> = redis
            .script
            .key(key)
            .arg(window_ms)
            .invoke_async(&mut conn)
            .await;
        match result {
            Ok(_) => true,
            Err(e) => {
                redis.warn(&e);
                false
            }
        }
    }
}

impl RedisCounters {
    /// The shared connection, made on first use; `None` (and a warning) while Redis is down.
    async fn connection(&self, _throttle: &Throttle) -> Option<ConnectionManager> {
        if self
            .down_until
            .lock()
            .ok()?
            .is_some_and(|until| Instant::now() < until)
        {
            return None;
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(1);
        let made = self
            .conn
            .get_or_try_init(|| ConnectionManager::new_with_config(self.client.clone(), config))
            .await;
        match made {
            Ok(conn) => Some(conn.clone()),
            Err(e) => {
                self.warn(&e);
                None
            }
        }
    }

    fn warn(&self, error: &redis::RedisError) {
        if let Ok(mut down) = self.down_until.lock() {
            *down = Some(Instant::now() + REDIS_BACKOFF);
        }
        let Ok(mut last) = self.last_warning.lock() else {
            return;
        };
        if last.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
            *last = Some(Instant::now());
            tracing::warn!(%error, "Redis is unavailable; throttling with this replica's own counters");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ThrottleConfig {
        ThrottleConfig {
            window: Duration::from_millis(300),
            login_failures_per_account: 2,
            ..ThrottleConfig::default()
        }
    }

    #[tokio::test]
    async fn local_counters_block_at_the_limit_and_lift_after_the_window() {
        let t = Throttle::new(&config(), "").unwrap();
        assert!(
            t.blocked(Limit::LoginFailuresPerAccount, "alice")
                .await
                .is_none()
        );
        t.hit(Limit::LoginFailuresPerAccount, "Alice").await;
        assert!(
            t.blocked(Limit::LoginFailuresPerAccount, "alice")
                .await
                .is_none()
        );
        t.hit(Limit::LoginFailuresPerAccount, "alice").await;
        assert!(
            t.blocked(Limit::LoginFailuresPerAccount, "ALICE")
                .await
                .is_some(),
            "case-insensitive key"
        );
        assert!(
            t.blocked(Limit::LoginFailuresPerAccount, "bob")
                .await
                .is_none()
        );
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(
            t.blocked(Limit::LoginFailuresPerAccount, "alice")
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn an_unreachable_redis_falls_back_to_local_counters() {
        // Nothing listens on port 1.
        let t = Throttle::new(&config(), "redis://127.0.0.1:1/").unwrap();
        t.hit(Limit::LoginFailuresPerAccount, "carol").await;
        t.hit(Limit::LoginFailuresPerAccount, "carol").await;
        assert!(
            t.blocked(Limit::LoginFailuresPerAccount, "carol")
                .await
                .is_some()
        );
    }
}
