//! Rate limits of the HTTP API: token buckets per WireGuard token (every peer-API request), per
//! source (failed authentications; new connections, see `server`), and one global budget of
//! failed admin authentications. A source is an IPv4 address or an IPv6 /64 ([`source_key`]).
//!
//! The failed-authentication limit refuses only what would fail: an address over it still gets
//! through with the admin token (compared in memory) or with a WireGuard token this process has
//! seen succeed or minted lately ([`KnownTokens`]), so a flood of guesses from a node's address
//! cannot lock that node out. Other credentials from that address are refused without a
//! database query until its budget refills.
//!
//! The global failed-admin-auth budget bounds guesses at the admin token from everywhere at
//! once: a /48 holds 65,536 /64s, each with a budget of its own, so the per-source limit alone
//! would let one such network guess 65,536 times faster. Over the global budget a wrong admin
//! token is refused with `429` (compared in memory first), so the right one still gets through.
//!
//! Every table is bounded ([`Buckets`]): when full it forgets its least recently used keys,
//! never all of them, so a flood from many sources cannot reset the budgets of the others.
//!
//! Buckets live in memory, per process: with several replicas each one enforces its own budget,
//! which bounds what one client can do to any replica. Nothing here touches the store, so a
//! request over a limit costs no database query.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The configured limits (from `[api]`); a rate of 0 turns that limit off.
#[derive(Debug, Clone, Copy)]
pub struct RateLimits {
    /// Peer-API requests per second per WireGuard token.
    pub token_rate: f64,
    /// Burst size per WireGuard token.
    pub token_burst: u32,
    /// Failed authentications per second per source address.
    pub failed_auth_rate: f64,
    /// Burst size of failed authentications per source address.
    pub failed_auth_burst: u32,
    /// Failed admin authentications per second, from all sources together.
    pub failed_admin_auth_rate: f64,
    /// Burst size of failed admin authentications, from all sources together.
    pub failed_admin_auth_burst: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        let api = crate::config::ApiConfig::default();
        RateLimits::from_config(&api)
    }
}

impl RateLimits {
    /// The limits of an `[api]` section.
    pub fn from_config(api: &crate::config::ApiConfig) -> Self {
        RateLimits {
            token_rate: api.token_rate,
            token_burst: api.token_burst,
            failed_auth_rate: api.failed_auth_rate,
            failed_auth_burst: api.failed_auth_burst,
            failed_admin_auth_rate: api.failed_admin_auth_rate,
            failed_admin_auth_burst: api.failed_admin_auth_burst,
        }
    }

    /// No limits at all.
    pub fn off() -> Self {
        RateLimits {
            token_rate: 0.0,
            token_burst: 0,
            failed_auth_rate: 0.0,
            failed_auth_burst: 0,
            failed_admin_auth_rate: 0.0,
            failed_admin_auth_burst: 0,
        }
    }
}

/// The limiters one API instance shares between requests.
#[derive(Debug)]
pub struct Limiters {
    /// Per WireGuard token (its row id).
    pub tokens: Buckets<i64>,
    /// Per source ([`source_key`]), charged for failed authentications.
    pub failed_auth: Buckets<IpAddr>,
    /// All sources together, charged for wrong admin tokens.
    pub failed_admin_auth: Buckets<()>,
    /// WireGuard tokens known to be valid, let through an address's failed-auth limit.
    pub known_tokens: KnownTokens,
}

/// The key of a source address for the per-source limits (failed authentications, connection
/// caps and accept rate): an IPv6 address counts by its /64 (one host usually holds a whole
/// /64), an IPv4 address (also when mapped into IPv6) by itself.
pub fn source_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

impl Limiters {
    /// Applies new limits to the live tables (a configuration reload).
    pub fn retune(&self, limits: RateLimits) {
        self.tokens.retune(limits.token_rate, limits.token_burst);
        self.failed_auth
            .retune(limits.failed_auth_rate, limits.failed_auth_burst);
        self.failed_admin_auth.retune(
            limits.failed_admin_auth_rate,
            limits.failed_admin_auth_burst,
        );
    }

    /// Limiters for `limits`.
    pub fn new(limits: RateLimits) -> Self {
        Limiters {
            tokens: Buckets::new(limits.token_rate, limits.token_burst),
            failed_auth: Buckets::new(limits.failed_auth_rate, limits.failed_auth_burst),
            failed_admin_auth: Buckets::new(
                limits.failed_admin_auth_rate,
                limits.failed_admin_auth_burst,
            ),
            known_tokens: KnownTokens::default(),
        }
    }
}

/// WireGuard tokens known to be valid to this process: authenticated lately, or minted here.
/// Holds a keyed 64-bit hash of each secret (never the secret), for [`KNOWN_TOKEN_TTL`], at most
/// [`KNOWN_TOKENS`] of them (the oldest go first). A hit only earns a real check against the
/// store, so a hash collision cannot let a wrong token in.
#[derive(Debug, Default)]
pub struct KnownTokens {
    hasher: foldhash::fast::RandomState,
    // A std mutex: never held across an await; each critical section is a map operation.
    seen: Mutex<HashMap<u64, Instant>>,
}

/// How many tokens [`KnownTokens`] remembers.
pub const KNOWN_TOKENS: usize = 10_000;

/// How long [`KnownTokens`] remembers a token after its last success.
pub const KNOWN_TOKEN_TTL: Duration = Duration::from_secs(3600);

impl KnownTokens {
    fn key(&self, secret: &str) -> u64 {
        use std::hash::BuildHasher as _;
        self.hasher.hash_one(secret)
    }

    /// Remembers `secret` as valid (now).
    pub fn insert(&self, secret: &str) {
        let key = self.key(secret);
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= KNOWN_TOKENS && !seen.contains_key(&key) {
            seen.retain(|_, at| now.saturating_duration_since(*at) < KNOWN_TOKEN_TTL);
            if seen.len() >= KNOWN_TOKENS
                && let Some(oldest) = seen.iter().min_by_key(|(_, at)| **at).map(|(k, _)| *k)
            {
                seen.remove(&oldest);
            }
        }
        seen.insert(key, now);
    }

    /// Forgets `secret` (it failed).
    pub fn remove(&self, secret: &str) {
        let key = self.key(secret);
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }

    /// Whether `secret` is known to be valid.
    pub fn contains(&self, secret: &str) -> bool {
        let key = self.key(secret);
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .is_some_and(|at| at.elapsed() < KNOWN_TOKEN_TTL)
    }
}

/// The most keys a [`Buckets`] table holds by default.
pub const MAX_KEYS: usize = 40_000;

/// Token buckets by key: each key may spend `burst` at once, refilled at `rate` per second.
///
/// The table holds at most `capacity` keys. A new key over it first drops the buckets that are
/// full again (they hold nothing a new bucket would not); when more than three quarters of the
/// capacity are still in use, the least recently used keys go until three quarters remain. The
/// table is never cleared: a flood of new keys pushes out the keys it is made of (and the
/// oldest), while a key in use keeps its spent budget. Each clean-up scans the table once and
/// frees at least a quarter of it, so its cost spread over the keys added is constant.
#[derive(Debug)]
pub struct Buckets<K> {
    /// Refill per second, as `f64` bits: a reload retunes a live table ([`Buckets::retune`]).
    rate: AtomicU64,
    /// Bucket size, as `f64` bits.
    burst: AtomicU64,
    capacity: usize,
    // A std mutex: it is never held across an await, and each critical section is a map lookup.
    state: Mutex<HashMap<K, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    /// Last refilled, which is when the key was last used.
    at: Instant,
}

impl<K: Hash + Eq + Copy> Buckets<K> {
    /// Buckets of `burst` refilled at `rate` per second; `rate` 0 means unlimited. At most
    /// [`MAX_KEYS`] keys.
    pub fn new(rate: f64, burst: u32) -> Self {
        Buckets::with_capacity(rate, burst, MAX_KEYS)
    }

    /// Like [`Buckets::new`], holding at most `capacity` keys (at least 4).
    pub fn with_capacity(rate: f64, burst: u32, capacity: usize) -> Self {
        Buckets {
            rate: AtomicU64::new(rate.to_bits()),
            burst: AtomicU64::new(f64::from(burst.max(1)).to_bits()),
            capacity: capacity.max(4),
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Sets a new rate and burst (a configuration reload). Keys keep what they have spent; a
    /// bucket fuller than the new burst is cut down at its next use.
    pub fn retune(&self, rate: f64, burst: u32) {
        self.rate.store(rate.to_bits(), Ordering::Relaxed);
        self.burst
            .store(f64::from(burst.max(1)).to_bits(), Ordering::Relaxed);
    }

    fn rate(&self) -> f64 {
        f64::from_bits(self.rate.load(Ordering::Relaxed))
    }

    fn burst(&self) -> f64 {
        f64::from_bits(self.burst.load(Ordering::Relaxed))
    }

    /// Makes room for one new key in a full table (see the type's docs).
    fn make_room(&self, state: &mut HashMap<K, Bucket>, now: Instant) {
        let (rate, burst) = (self.rate(), self.burst());
        state.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
        });
        let keep = self.capacity / 4 * 3;
        if state.len() <= keep {
            return;
        }
        // The time of the `len - keep`-th least recent use: everything used no later goes.
        let mut times: Vec<Instant> = state.values().map(|b| b.at).collect();
        let drop = times.len() - keep;
        let (_, cutoff, _) = times.select_nth_unstable(drop - 1);
        let cutoff = *cutoff;
        state.retain(|_, b| b.at > cutoff);
    }

    fn enabled(&self) -> bool {
        self.rate() > 0.0 && self.rate().is_finite()
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate()).min(self.burst());
        bucket.at = now;
    }

    /// How long until one unit is available again, rounded up to whole seconds (at least 1),
    /// for `Retry-After`.
    fn wait(&self, bucket: &Bucket) -> Duration {
        let secs = ((1.0 - bucket.tokens) / self.rate()).ceil().max(1.0);
        Duration::from_secs(secs.min(86_400.0) as u64)
    }

    /// Spends one unit for `key`. `Err` carries how long to wait when the bucket is empty.
    pub fn take(&self, key: K) -> Result<(), Duration> {
        if !self.enabled() {
            return Ok(());
        }
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.len() >= self.capacity && !state.contains_key(&key) {
            self.make_room(&mut state, now);
        }
        let bucket = state.entry(key).or_insert(Bucket {
            tokens: self.burst(),
            at: now,
        });
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.wait(bucket))
        }
    }

    /// Whether `key`'s bucket is empty now, without spending anything. `Err` carries how long
    /// to wait.
    pub fn check(&self, key: K) -> Result<(), Duration> {
        if !self.enabled() {
            return Ok(());
        }
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.get_mut(&key) {
            None => Ok(()),
            Some(bucket) => {
                self.refill(bucket, now);
                if bucket.tokens >= 1.0 {
                    Ok(())
                } else {
                    Err(self.wait(bucket))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refuses_with_a_wait() {
        let buckets = Buckets::new(1.0, 3);
        for _ in 0..3 {
            assert!(buckets.take(1).is_ok());
        }
        assert_eq!(buckets.take(1), Err(Duration::from_secs(1)));
        assert_eq!(buckets.check(1), Err(Duration::from_secs(1)));
        // Another key has its own bucket.
        assert!(buckets.take(2).is_ok());
        assert!(buckets.check(3).is_ok());
    }

    #[test]
    fn known_tokens_are_remembered_and_bounded() {
        let known = KnownTokens::default();
        known.insert("a");
        assert!(known.contains("a"));
        assert!(!known.contains("b"));
        known.remove("a");
        assert!(!known.contains("a"));
        for i in 0..KNOWN_TOKENS + 10 {
            known.insert(&i.to_string());
        }
        assert_eq!(known.seen.lock().unwrap().len(), KNOWN_TOKENS);
        assert!(
            known.contains(&(KNOWN_TOKENS + 9).to_string()),
            "the newest stays"
        );
    }

    #[test]
    fn rate_zero_is_unlimited() {
        let buckets = Buckets::new(0.0, 1);
        for _ in 0..1000 {
            assert!(buckets.take(1).is_ok());
        }
    }

    #[test]
    fn many_keys_stay_bounded_and_a_busy_key_keeps_its_spent_budget() {
        // A slow refill: every bucket stays spent, so pruning full buckets frees nothing.
        let capacity = 1_000;
        let buckets = Buckets::with_capacity(0.001, 1, capacity);
        assert!(buckets.take(-1).is_ok());
        assert!(buckets.take(-1).is_err());
        for key in 0..(capacity as i64 * 10) {
            let _ = buckets.take(key);
            let len = buckets.state.lock().unwrap().len();
            assert!(len <= capacity, "{len} keys");
            if key % 100 == 0 {
                // The limited key keeps asking: it is in use, so it is never the one evicted.
                assert!(buckets.take(-1).is_err(), "the spent budget was forgotten");
            }
        }
        // Never cleared: at least three quarters of the capacity stay.
        assert!(buckets.state.lock().unwrap().len() >= capacity / 4 * 3);
        // The newest keys are still there, still spent.
        assert!(buckets.check(capacity as i64 * 10 - 1).is_err());
    }

    #[test]
    fn full_buckets_are_dropped_first() {
        let buckets = Buckets::with_capacity(1_000_000.0, 5, 8);
        for key in 0..8 {
            let _ = buckets.take(key);
        }
        // Refilled at once (a huge rate): all full, so a new key clears them and nothing else.
        std::thread::sleep(Duration::from_millis(2));
        assert!(buckets.take(100).is_ok());
        assert_eq!(buckets.state.lock().unwrap().len(), 1);
    }

    #[test]
    fn sources_are_keyed_by_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(source_key(mapped), v4);
        assert_ne!(source_key("192.0.2.2".parse().unwrap()), v4);
        // One budget for the whole /64.
        let buckets = Buckets::new(0.001, 2);
        assert!(buckets.take(source_key(a)).is_ok());
        assert!(buckets.take(source_key(b)).is_ok());
        assert!(buckets.take(source_key(a)).is_err());
        assert!(buckets.take(source_key(c)).is_ok());
    }

    #[test]
    fn the_global_admin_budget_is_one_bucket_for_everyone() {
        let limiters = Limiters::new(RateLimits {
            failed_admin_auth_rate: 0.001,
            failed_admin_auth_burst: 3,
            ..RateLimits::off()
        });
        for _ in 0..3 {
            assert!(limiters.failed_admin_auth.take(()).is_ok());
        }
        assert!(limiters.failed_admin_auth.check(()).is_err());
        // The per-source limits are off here: they never refuse.
        assert!(
            limiters
                .failed_auth
                .check("192.0.2.1".parse().unwrap())
                .is_ok()
        );
    }
}
