//! The client-side throttle of one account: fixed windows where a limit is known, and an adaptive
//! pace that learns the server's limit from its 429s.
//!
//! - **Fixed windows** (`governor`): every configured `rate_limits` window must allow a request.
//!   CertCentral publishes its limits (contract 2.4: 100 per 5 s and 1000 per 3 min), so a
//!   CertCentral account gets those windows when none are configured.
//! - **Adaptive pace** (additive-increase / multiplicative-decrease, as TCP does with a congestion
//!   window): DigiCert ONE publishes no numbers (contract 1.6), so its accounts start with no cap. The
//!   first 429 sets the pace to [`CUT`] of the rate at which the server was seen to accept requests
//!   (successes per second over the last two seconds, not counting time spent waiting out a
//!   `Retry-After`), and every second of successes raises it by [`GROWTH_PER_SEC`], so the pace
//!   settles just under the server's limit and probes past it rarely. One 429 cuts once: the
//!   answers to requests sent before the cut (in flight when it happened) do not cut again, so
//!   concurrent requests never cause a storm of cuts, and no request is sent before a
//!   `Retry-After` has passed.
//!
//! The pace is kept for the client's life (one pass); [`Throttle::pace`] reports it.
//!
//! A `std::sync::Mutex` guards the pace: it is held for a few arithmetic operations and never
//! across an `.await`.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::{AccountKind, RateLimit};

/// A 429 sets the pace to this share of the rate the server was seen to accept.
const CUT: f64 = 0.9;
/// The pace grows by this share per second of successes, probing for more.
const GROWTH_PER_SEC: f64 = 0.01;
/// The pace never drops below one request in five seconds.
const MIN_RATE: f64 = 0.2;
/// Successes kept to measure the rate the server accepts.
const RECENT: usize = 512;
/// The window over which the accepted rate is measured.
const WINDOW: Duration = Duration::from_secs(2);

/// The documented CertCentral windows (contract 2.4).
pub fn certcentral_limits() -> Vec<RateLimit> {
    vec![
        RateLimit {
            requests: 100,
            per_secs: 5,
        },
        RateLimit {
            requests: 1000,
            per_secs: 180,
        },
    ]
}

/// What the throttle has learned, for summaries and metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// Requests per second the adaptive pace allows now; `None` while no 429 was seen (no cap).
    pub rate: Option<f64>,
    /// 429 answers seen by the throttle.
    pub limited: u64,
    /// Whether fixed windows apply too (configured, or CertCentral's documented ones).
    pub fixed_windows: bool,
}

#[derive(Debug)]
struct Adaptive {
    rate: Option<f64>,
    /// When the next request may be sent (the pace's slot, or the end of a `Retry-After`).
    next_slot: Instant,
    /// The end of the last `Retry-After` wait: time spent waiting is not time the server
    /// was accepting requests.
    paused_until: Instant,
    /// Requests sent before this instant answer for the pace before the last cut.
    last_cut: Option<Instant>,
    last_growth: Instant,
    /// When recent successful answers arrived.
    accepted: VecDeque<Instant>,
    limited: u64,
}

pub struct Throttle {
    limiters: Vec<DefaultDirectRateLimiter>,
    adaptive: Mutex<Adaptive>,
}

impl Throttle {
    /// The throttle of an account of `kind`: `configured` windows if any, CertCentral's
    /// documented ones otherwise, none for DigiCert ONE; the adaptive pace in every case.
    pub fn for_account(kind: AccountKind, configured: &[RateLimit]) -> Throttle {
        let limits = match (configured.is_empty(), kind) {
            (false, _) => configured.to_vec(),
            (true, AccountKind::CertCentral) => certcentral_limits(),
            (true, AccountKind::DigicertOne) => Vec::new(),
        };
        let limiters = limits
            .iter()
            .filter_map(|l| {
                let burst = NonZeroU32::new(l.requests)?;
                let period = Duration::from_secs(u64::from(l.per_secs)) / l.requests;
                let quota =
                    Quota::with_period(period.max(Duration::from_nanos(1)))?.allow_burst(burst);
                Some(RateLimiter::direct(quota))
            })
            .collect();
        let now = Instant::now();
        Throttle {
            limiters,
            adaptive: Mutex::new(Adaptive::new(now)),
        }
    }

    /// Wait until a request may be sent; returns its send time (hand it back to
    /// [`Throttle::record`]).
    pub async fn acquire(&self) -> Instant {
        for l in &self.limiters {
            l.until_ready().await;
        }
        let slot = match self.adaptive.lock() {
            Ok(mut a) => a.take_slot(Instant::now()),
            Err(_) => Instant::now(),
        };
        tokio::time::sleep_until(slot.into()).await;
        slot
    }

    /// The answer to a request sent at `sent`: `limited` for a 429 (with its `Retry-After`).
    pub fn record(&self, sent: Instant, limited: bool, retry_after: Option<Duration>) {
        if let Ok(mut a) = self.adaptive.lock() {
            let now = Instant::now();
            if limited {
                a.on_limited(sent, now, retry_after);
            } else {
                a.on_success(sent, now);
            }
        }
    }

    pub fn pace(&self) -> Pace {
        let (rate, limited) = self
            .adaptive
            .lock()
            .map(|a| (a.rate, a.limited))
            .unwrap_or((None, 0));
        Pace {
            rate,
            limited,
            fixed_windows: !self.limiters.is_empty(),
        }
    }
}

impl Adaptive {
    fn new(now: Instant) -> Adaptive {
        Adaptive {
            rate: None,
            next_slot: now,
            paused_until: now,
            last_cut: None,
            last_growth: now,
            accepted: VecDeque::with_capacity(RECENT),
            limited: 0,
        }
    }

    fn take_slot(&mut self, now: Instant) -> Instant {
        let slot = self.next_slot.max(now);
        if let Some(r) = self.rate {
            self.next_slot = slot + Duration::from_secs_f64(1.0 / r);
        }
        slot
    }

    /// The rate at which the server accepted requests lately: successes per second over the
    /// last [`WINDOW`], not counting time spent waiting out a `Retry-After`. `None` with too few.
    fn accepted_rate(&self, now: Instant) -> Option<f64> {
        let from = now
            .checked_sub(WINDOW)
            .unwrap_or(now)
            .max(self.paused_until);
        let n = self.accepted.iter().filter(|t| **t >= from).count();
        let span = now.saturating_duration_since(from).as_secs_f64();
        (n >= 4 && span > 0.0).then(|| n as f64 / span)
    }

    fn on_limited(&mut self, sent: Instant, now: Instant, retry_after: Option<Duration>) {
        self.limited += 1;
        let accepted = self.accepted_rate(now);
        // Wait out the server's word before anything else is sent.
        if let Some(ra) = retry_after {
            self.next_slot = self.next_slot.max(now + ra);
            self.paused_until = self.paused_until.max(now + ra);
        }
        if self.last_cut.is_some_and(|cut| sent < cut) {
            // In flight when the pace was last cut: it answers for the old pace.
            return;
        }
        let current = self.rate.unwrap_or(f64::INFINITY);
        let next = match accepted {
            Some(accepted) => accepted.min(current) * CUT,
            // Too few answers to measure: halve (or start at one per second).
            None if current.is_finite() => current * 0.5,
            None => 1.0,
        };
        let rate = next.max(MIN_RATE);
        self.rate = Some(rate);
        self.last_cut = Some(now);
        self.last_growth = now;
        tracing::info!(
            event = "rate_limited",
            rate_rps = rate,
            "the server answered 429: pacing requests at {rate:.1}/s"
        );
    }

    fn on_success(&mut self, sent: Instant, now: Instant) {
        if self.accepted.len() == RECENT {
            self.accepted.pop_front();
        }
        self.accepted.push_back(now);
        let Some(r) = self.rate else { return };
        if self.last_cut.is_some_and(|cut| sent < cut) {
            return;
        }
        let elapsed = now.saturating_duration_since(self.last_growth).as_secs_f64();
        self.last_growth = now;
        self.rate = Some(r * (1.0 + GROWTH_PER_SEC * elapsed.min(1.0)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a 429 there is no cap; a 429 paces at a share of the rate the server accepted,
    /// and answers to requests sent before a cut do not cut again.
    #[test]
    fn a_429_paces_at_the_accepted_rate_and_in_flight_answers_do_not_cut_twice() {
        let t0 = Instant::now();
        let mut a = Adaptive::new(t0);
        // 50 accepted per second for two seconds, sent as fast as they come.
        for i in 0..100u64 {
            let t = t0 + Duration::from_millis(i * 20);
            assert!(a.take_slot(t) <= t, "no cap yet");
            a.on_success(t, t);
        }
        let now = t0 + Duration::from_millis(2000);
        let early = t0 + Duration::from_millis(1990);
        a.on_limited(early, now, Some(Duration::from_secs(1)));
        let r = a.rate.expect("paced");
        assert!((40.0..=50.0).contains(&r), "{r}");
        assert!(a.next_slot >= now + Duration::from_secs(1), "Retry-After honoured");
        // Another 429 for a request already in flight at the cut: no second cut.
        a.on_limited(early, now + Duration::from_millis(5), None);
        assert_eq!(a.rate, Some(r));
        assert_eq!(a.limited, 2);
    }

    /// Successes raise the pace slowly (a percent per second), so it probes past the limit
    /// rarely; the time spent waiting out a Retry-After does not count as accepted time.
    #[test]
    fn pace_probes_slowly_and_pauses_do_not_dilute_the_estimate() {
        let t0 = Instant::now();
        let mut a = Adaptive::new(t0);
        a.rate = Some(40.0);
        a.last_cut = Some(t0);
        let mut t = t0;
        for _ in 0..400 {
            t += Duration::from_millis(25);
            a.on_success(t, t);
        }
        let r = a.rate.expect("rate");
        assert!(r > 40.0 && r < 40.0 * 1.12, "ten seconds of probing: {r}");
        // A 429, a one-second wait, then 40/s accepted for a second: the estimate is 40/s.
        a.on_limited(t, t, Some(Duration::from_secs(1)));
        let resume = t + Duration::from_secs(1);
        for i in 1..=40u64 {
            let at = resume + Duration::from_millis(i * 25);
            a.on_success(at, at);
        }
        let now = resume + Duration::from_millis(1000);
        let est = a.accepted_rate(now).expect("enough answers");
        assert!((38.0..=42.0).contains(&est), "{est}");
    }

    /// CertCentral gets its documented windows unless others are configured; DigiCert ONE none.
    #[test]
    fn windows_per_api() {
        assert!(Throttle::for_account(AccountKind::CertCentral, &[]).pace().fixed_windows);
        assert!(!Throttle::for_account(AccountKind::DigicertOne, &[]).pace().fixed_windows);
        let pinned = [RateLimit {
            requests: 10,
            per_secs: 1,
        }];
        assert!(Throttle::for_account(AccountKind::DigicertOne, &pinned).pace().fixed_windows);
    }
}
