//! Brute-force protection for `POST /v1/pin-join`.
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

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes one token, or says how long until one is there.
    fn take(&mut self, per_minute: u32, now: Instant) -> Result<(), Duration> {
        let rate = f64::from(per_minute.max(1)) / 60.0;
        let capacity = f64::from(per_minute.max(1));
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(capacity);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
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
            bucket: Bucket {
                tokens: f64::from(self.limits.per_ip_per_minute.max(1)),
                at: now,
            },
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
            bucket: Bucket {
                tokens: f64::from(self.limits.per_room_per_minute.max(1)),
                at: now,
            },
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
            .take(self.limits.per_ip_per_minute, now)
            .map_err(Refusal::RateLimited)?;
        code.bucket
            .take(self.limits.per_room_per_minute, now)
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
}
