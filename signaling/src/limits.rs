//! Rate limits: brute-force protection for `POST /v1/pin-join`, and the
//! per-IP buckets in front of session creation and token minting.
//!
//! A 6-digit PIN is guessable (one in a million per try, far better when
//! thousands of PINs are valid for a big room), so guessing must be slow:
//! - token buckets per client IP and per room code bound the rate of tries;
//! - N consecutive failures from one IP lock that IP out for a while, even
//!   with the right PIN;
//! - a ceiling on failures per room code (within one lockout period) locks
//!   the code, against guessers spread over many addresses.
//!
//! Hand-written rather than `governor`: two small keyed buckets plus the
//! lockout counters that `governor` does not provide, without its
//! dependency tree. Time is passed in, so tests are exact. State is in
//! memory (a restart forgets it) and pruned of idle entries as it grows.
//!
//! [`KeyedBuckets`] is the one token-bucket map; [`PinGuard`] adds the
//! lockout counters on top, [`RequestGuard`] applies it per client IP to
//! `whip`/`whep`/`join` (sessions) and to the token-minting routes, as a
//! route layer ([`limit_sessions`], [`limit_minting`]) so a refused request
//! costs no database or media work.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The configured limits (`Settings::pin_limits`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinLimits {
    /// Tries per minute from one IP (also the burst).
    pub per_ip_per_minute: u32,
    /// Tries per minute at one room code, from anywhere.
    pub per_room_per_minute: u32,
    /// Consecutive failures from one IP before it is locked out.
    pub failures_before_lockout: u32,
    /// How long a lockout lasts, seconds.
    pub lockout_s: u64,
    /// Failures at one room code within `lockout_s` before the code is
    /// locked for `lockout_s`.
    pub room_failures_before_lockout: u32,
}

impl Default for PinLimits {
    fn default() -> Self {
        Self {
            per_ip_per_minute: 10,
            per_room_per_minute: 120,
            failures_before_lockout: 5,
            lockout_s: 900,
            room_failures_before_lockout: 100,
        }
    }
}

/// Why a try is refused before the PIN is even looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Too fast: retry after this long.
    RateLimited(Duration),
    /// Locked out: retry after this long.
    LockedOut(Duration),
}

impl Refusal {
    /// Whole seconds for `Retry-After`, at least 1.
    pub fn retry_after_s(self) -> u64 {
        let (Refusal::RateLimited(d) | Refusal::LockedOut(d)) = self;
        d.as_secs_f64().ceil().max(1.0) as u64
    }
}

/// What a failure led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lockouts {
    pub ip: bool,
    pub room: bool,
}

/// A bucket's shape: how many requests at once, and how fast it refills.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Capacity: requests allowed back to back from a full bucket.
    pub burst: u32,
    /// Tokens added per second.
    pub per_second: f64,
}

impl Rate {
    /// `n` per minute, with a burst of `n` (the PIN limits' shape).
    pub fn per_minute(n: u32) -> Self {
        Self {
            burst: n.max(1),
            per_second: f64::from(n.max(1)) / 60.0,
        }
    }

    /// How long an untouched bucket takes to fill up again: after that its
    /// entry says nothing a fresh one would not, so it may be pruned.
    fn refill_time(self) -> Duration {
        Duration::from_secs_f64(f64::from(self.burst.max(1)) / self.per_second.max(1e-9))
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: f64::from(rate.burst.max(1)),
            at: now,
        }
    }

    /// Takes one token, or says how long until one is there.
    fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        let per_second = rate.per_second.max(1e-9);
        let capacity = f64::from(rate.burst.max(1));
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(capacity);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / per_second))
        }
    }
}

/// One token bucket per key (a client IP, say), all of the same [`Rate`].
/// Entries idle long enough to be full again are dropped once the map
/// holds more than [`PRUNE_ABOVE`] of them.
#[derive(Debug)]
pub struct KeyedBuckets<K> {
    rate: Rate,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: std::hash::Hash + Eq + Clone> KeyedBuckets<K> {
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token from `key`'s bucket, or says how long until one is there.
    pub fn take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            let idle = self.rate.refill_time();
            buckets.retain(|_, b| now.saturating_duration_since(b.at) < idle);
        }
        if let Some(bucket) = buckets.get_mut(key) {
            return bucket.take(self.rate, now);
        }
        let mut bucket = Bucket::full(self.rate, now);
        let taken = bucket.take(self.rate, now);
        buckets.insert(key.clone(), bucket);
        taken
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug)]
struct Client {
    bucket: Bucket,
    failures: u32,
    locked_until: Option<Instant>,
}

#[derive(Debug)]
struct Code {
    bucket: Bucket,
    /// Failures since `window_start`.
    failures: u32,
    window_start: Instant,
    locked_until: Option<Instant>,
}

/// Entries kept before idle ones are pruned.
const PRUNE_ABOVE: usize = 50_000;

/// The limiter: one per router.
#[derive(Debug)]
pub struct PinGuard {
    limits: PinLimits,
    state: Mutex<(HashMap<IpAddr, Client>, HashMap<String, Code>)>,
}

impl PinGuard {
    pub fn new(limits: PinLimits) -> Self {
        Self {
            limits,
            state: Mutex::new((HashMap::new(), HashMap::new())),
        }
    }

    fn lockout(&self) -> Duration {
        Duration::from_secs(self.limits.lockout_s)
    }

    /// Whether a try from `ip` at `code` may go ahead now; takes a token
    /// from both buckets when it may.
    pub fn admit(&self, ip: IpAddr, code: &str, now: Instant) -> Result<(), Refusal> {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (clients, codes) = &mut *guard;
        if clients.len() > PRUNE_ABOVE || codes.len() > PRUNE_ABOVE {
            let idle = Duration::from_secs(60).max(self.lockout());
            clients.retain(|_, c| now.saturating_duration_since(c.bucket.at) < idle);
            codes.retain(|_, c| now.saturating_duration_since(c.bucket.at) < idle);
        }
        let client = clients.entry(ip).or_insert_with(|| Client {
            bucket: Bucket::full(Rate::per_minute(self.limits.per_ip_per_minute), now),
            failures: 0,
            locked_until: None,
        });
        if let Some(until) = client.locked_until {
            if until > now {
                return Err(Refusal::LockedOut(until - now));
            }
            client.locked_until = None;
        }
        let code = codes.entry(code.to_owned()).or_insert_with(|| Code {
            bucket: Bucket::full(Rate::per_minute(self.limits.per_room_per_minute), now),
            failures: 0,
            window_start: now,
            locked_until: None,
        });
        if let Some(until) = code.locked_until {
            if until > now {
                return Err(Refusal::LockedOut(until - now));
            }
            code.locked_until = None;
        }
        client
            .bucket
            .take(Rate::per_minute(self.limits.per_ip_per_minute), now)
            .map_err(Refusal::RateLimited)?;
        code.bucket
            .take(Rate::per_minute(self.limits.per_room_per_minute), now)
            .map_err(Refusal::RateLimited)
    }

    /// Records a wrong code or PIN; says whether it locked the IP or the code.
    pub fn failed(&self, ip: IpAddr, code: &str, now: Instant) -> Lockouts {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (clients, codes) = &mut *guard;
        let mut out = Lockouts {
            ip: false,
            room: false,
        };
        if let Some(client) = clients.get_mut(&ip) {
            client.failures += 1;
            if client.failures >= self.limits.failures_before_lockout.max(1) {
                client.failures = 0;
                client.locked_until = Some(now + self.lockout());
                out.ip = true;
            }
        }
        if let Some(c) = codes.get_mut(code) {
            if now.saturating_duration_since(c.window_start) >= self.lockout() {
                c.window_start = now;
                c.failures = 0;
            }
            c.failures += 1;
            if c.failures >= self.limits.room_failures_before_lockout.max(1) {
                c.failures = 0;
                c.window_start = now;
                c.locked_until = Some(now + self.lockout());
                out.room = true;
            }
        }
        out
    }

    /// A successful join: the IP's run of failures ends.
    pub fn succeeded(&self, ip: IpAddr) {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = guard.0.get_mut(&ip) {
            client.failures = 0;
        }
    }
}

/// Per-client-IP limits on creating sessions and minting tokens
/// (`Settings::request_limits`).
///
/// The defaults are generous on purpose: a booth's phones often share one
/// carrier-grade-NAT address, so hundreds of listeners can arrive from one
/// IP within seconds of a QR code going up. A burst of 120 with 60 per
/// second lets 600 phones behind one address in within ~8 s, while still
/// capping one abusive address at 60 session setups (ICE agents, DTLS
/// handshakes) a second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RequestLimits {
    /// `POST /v1/rooms/{id}/whip`, `/whep`, `/join`.
    pub sessions: Rate,
    /// `POST /v1/rooms/{id}/tokens`, `POST /v1/pins`, `GET
    /// /v1/rooms/{id}/invite`, `POST /v1/keys`. All need an operator
    /// credential, so the limit is looser: it bounds a leaked key or a
    /// runaway script, not a normal bulk issue (PINs for a whole org).
    pub minting: Rate,
}

/// Default [`RequestLimits::sessions`].
pub const DEFAULT_SESSION_RATE: Rate = Rate {
    burst: 120,
    per_second: 60.0,
};

/// Default [`RequestLimits::minting`].
pub const DEFAULT_MINT_RATE: Rate = Rate {
    burst: 600,
    per_second: 100.0,
};

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            sessions: DEFAULT_SESSION_RATE,
            minting: DEFAULT_MINT_RATE,
        }
    }
}

/// Which limit a route falls under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestClass {
    Session,
    Minting,
}

/// The buckets of [`RequestLimits`], one per router.
#[derive(Debug)]
pub struct RequestGuard {
    sessions: KeyedBuckets<IpAddr>,
    minting: KeyedBuckets<IpAddr>,
}

impl RequestGuard {
    pub fn new(limits: RequestLimits) -> Self {
        Self {
            sessions: KeyedBuckets::new(limits.sessions),
            minting: KeyedBuckets::new(limits.minting),
        }
    }

    /// Whether a request of `class` from `ip` may go ahead now.
    pub fn admit(&self, class: RequestClass, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        let buckets = match class {
            RequestClass::Session => &self.sessions,
            RequestClass::Minting => &self.minting,
        };
        buckets.take(&ip, now).map_err(Refusal::RateLimited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> PinLimits {
        PinLimits {
            per_ip_per_minute: 6,
            per_room_per_minute: 1000,
            failures_before_lockout: 3,
            lockout_s: 60,
            room_failures_before_lockout: 1000,
        }
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn consecutive_failures_lock_an_ip_until_the_lockout_ends() {
        let guard = PinGuard::new(limits());
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(guard.admit(A, "1", t0), Ok(()));
            assert_eq!(guard.failed(A, "1", t0).ip, i == 2);
        }
        let refused = guard
            .admit(A, "1", t0 + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(refused, Refusal::LockedOut(Duration::from_secs(50)));
        assert_eq!(refused.retry_after_s(), 50);
        // Another IP is not affected; the locked one is let in after.
        assert_eq!(guard.admit(B, "1", t0), Ok(()));
        assert_eq!(guard.admit(A, "1", t0 + Duration::from_secs(61)), Ok(()));
    }

    #[test]
    fn a_success_resets_the_run_of_failures() {
        let guard = PinGuard::new(limits());
        let t0 = Instant::now();
        for _ in 0..2 {
            guard.admit(A, "1", t0).unwrap();
            assert!(!guard.failed(A, "1", t0).ip);
        }
        guard.succeeded(A);
        guard.admit(A, "1", t0).unwrap();
        assert!(!guard.failed(A, "1", t0).ip);
    }

    #[test]
    fn the_bucket_refills_at_the_configured_rate() {
        let guard = PinGuard::new(limits());
        let t0 = Instant::now();
        for _ in 0..6 {
            guard.admit(A, "1", t0).unwrap();
        }
        let Err(Refusal::RateLimited(wait)) = guard.admit(A, "1", t0) else {
            panic!("the seventh try within a minute passes");
        };
        assert_eq!(wait.as_secs(), 10);
        assert_eq!(guard.admit(A, "1", t0 + Duration::from_secs(10)), Ok(()));
    }

    #[test]
    fn failures_from_many_ips_lock_the_room_code() {
        let guard = PinGuard::new(PinLimits {
            room_failures_before_lockout: 4,
            ..limits()
        });
        let t0 = Instant::now();
        for i in 0..4u8 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 0, i));
            guard.admit(ip, "12345678", t0).unwrap();
            assert_eq!(guard.failed(ip, "12345678", t0).room, i == 3);
        }
        assert!(matches!(
            guard.admit(B, "12345678", t0),
            Err(Refusal::LockedOut(_))
        ));
        assert_eq!(guard.admit(B, "87654321", t0), Ok(()));
    }

    #[test]
    fn keyed_buckets_allow_the_burst_then_refill_per_second() {
        let buckets = KeyedBuckets::new(Rate {
            burst: 3,
            per_second: 2.0,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(buckets.take(&A, t0), Ok(()));
        }
        assert_eq!(buckets.take(&A, t0), Err(Duration::from_millis(500)));
        // Another key has its own full bucket.
        assert_eq!(buckets.take(&B, t0), Ok(()));
        assert_eq!(buckets.take(&A, t0 + Duration::from_millis(500)), Ok(()));
        assert!(buckets.take(&A, t0 + Duration::from_millis(500)).is_err());
        // Refill never exceeds the burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(buckets.take(&A, later), Ok(()));
        }
        assert!(buckets.take(&A, later).is_err());
    }

    #[test]
    fn keyed_buckets_prune_idle_entries_once_large() {
        let buckets = KeyedBuckets::new(Rate {
            burst: 1,
            per_second: 1.0,
        });
        let t0 = Instant::now();
        for i in 0..=PRUNE_ABOVE as u32 {
            buckets
                .take(&IpAddr::V4(std::net::Ipv4Addr::from(i)), t0)
                .unwrap();
        }
        assert_eq!(buckets.len(), PRUNE_ABOVE + 1);
        // All full again after a second: the next take prunes them all.
        buckets.take(&A, t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(buckets.len(), 1);
    }

    #[test]
    fn request_classes_have_separate_buckets() {
        let guard = RequestGuard::new(RequestLimits {
            sessions: Rate {
                burst: 1,
                per_second: 1.0,
            },
            minting: Rate {
                burst: 2,
                per_second: 1.0,
            },
        });
        let t0 = Instant::now();
        assert_eq!(guard.admit(RequestClass::Session, A, t0), Ok(()));
        let refused = guard.admit(RequestClass::Session, A, t0).unwrap_err();
        assert_eq!(refused, Refusal::RateLimited(Duration::from_secs(1)));
        assert_eq!(refused.retry_after_s(), 1);
        assert_eq!(guard.admit(RequestClass::Minting, A, t0), Ok(()));
        assert_eq!(guard.admit(RequestClass::Minting, A, t0), Ok(()));
        assert!(guard.admit(RequestClass::Minting, A, t0).is_err());
        assert_eq!(guard.admit(RequestClass::Session, B, t0), Ok(()));
    }

    #[test]
    fn the_default_session_limit_lets_a_booth_behind_one_nat_in() {
        // 600 phones behind one address, arriving over 10 s.
        let guard = RequestGuard::new(RequestLimits::default());
        let t0 = Instant::now();
        let admitted = (0..600u64)
            .filter(|i| {
                let at = t0 + Duration::from_millis(i * 10_000 / 600);
                guard.admit(RequestClass::Session, A, at).is_ok()
            })
            .count();
        assert_eq!(admitted, 600);
    }
}
