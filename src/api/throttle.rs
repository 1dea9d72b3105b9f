//! The client-side throttle of one account: fixed windows where a limit is known, and an adaptive
//! pace that learns the server's limit from its 429s.
//!
//! - **Fixed windows** (`governor`): every configured `rate_limits` window must allow a request.
//!   CertCentral publishes its limits (contract 2.4: 100 per 5 s and 1000 per 3 min), so a
//!   CertCentral account gets those windows when none are configured.
//! - **Adaptive pace** (additive-increase / multiplicative-decrease, as TCP does with a congestion
//!   window): DigiCert ONE publishes no numbers (contract 1.6), so its accounts start with no cap. The
//!   first 429 sets the pace to [`HARD_CUT`] of the rate the server accepted so far; a 429 soon
//!   after a cut cuts hard again, one after a settled run ([`SETTLED`] successes) gently
//!   ([`SOFT_CUT`]); every second of successes raises the pace by [`GROWTH_PER_SEC`], so it settles
//!   around the server's limit and probes past it rarely (a model of a token-bucket server,
//!   sequential client, `Retry-After: 1`: mean 0.8-0.85 of the limit, 429s 0.1-1.3%). One 429 cuts once: the
//!   answers to requests sent before the cut (in flight when it happened) do not cut again, so
//!   concurrent requests never cause a storm of cuts, and no request is sent before a
//!   `Retry-After` has passed. A slot is taken when its request is sent, never booked ahead, so
//!   tasks that wake late together (a loaded machine) do not send a burst.
//!
//! The pace is kept for the client's life (one pass); [`Throttle::pace`] reports it.
//!
//! A `std::sync::Mutex` guards the pace: it is held for a few arithmetic operations and never
//! across an `.await`.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::settings::{AccountKind, RateLimit};

/// A 429 that comes soon after the last cut (fewer than [`SETTLED`] successes since) means the
/// pace is still far too high: cut hard.
const HARD_CUT: f64 = 0.6;
/// A 429 after a settled run means the pace just probed past the limit: cut gently.
const SOFT_CUT: f64 = 0.9;
const SETTLED: u64 = 30;
/// The pace grows by this share per second of successes, probing for more.
const GROWTH_PER_SEC: f64 = 0.02;
/// The pace never drops below one request in five seconds.
const MIN_RATE: f64 = 0.2;

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
    /// Requests sent before this instant answer for the pace before the last cut.
    last_cut: Option<Instant>,
    last_growth: Instant,
    /// The first request, and the successes since: the rate that drew the first 429.
    first_sent: Option<Instant>,
    accepted: u64,
    /// Successes since the last cut.
    since_cut: u64,
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
    ///
    /// The slot is taken when the request is sent, never booked ahead: tasks that overslept (a
    /// loaded machine, a stalled runtime) wake to find the slot taken and wait again, so a stall
    /// is never followed by a burst that the server would answer with 429s.
    pub async fn acquire(&self) -> Instant {
        for l in &self.limiters {
            l.until_ready().await;
        }
        loop {
            let now = Instant::now();
            let wait = match self.adaptive.lock() {
                Ok(mut a) => a.try_send(now),
                Err(_) => Ok(now),
            };
            match wait {
                Ok(sent) => return sent,
                Err(until) => tokio::time::sleep_until(until.into()).await,
            }
        }
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
            last_cut: None,
            last_growth: now,
            first_sent: None,
            accepted: 0,
            since_cut: 0,
            limited: 0,
        }
    }

    /// `Ok(now)` when a request may be sent now (the slot is taken), `Err(when)` to wait.
    fn try_send(&mut self, now: Instant) -> Result<Instant, Instant> {
        if now < self.next_slot {
            return Err(self.next_slot);
        }
        self.first_sent.get_or_insert(now);
        if let Some(r) = self.rate {
            self.next_slot = now + Duration::from_secs_f64(1.0 / r);
        }
        Ok(now)
    }

    fn on_limited(&mut self, sent: Instant, now: Instant, retry_after: Option<Duration>) {
        self.limited += 1;
        // Wait out the server's word before anything else is sent.
        if let Some(ra) = retry_after {
            self.next_slot = self.next_slot.max(now + ra);
        }
        if self.last_cut.is_some_and(|cut| sent < cut) {
            // In flight when the pace was last cut: it answers for the old pace.
            return;
        }
        let next = match self.rate {
            // Uncapped until now: start from the rate the server accepted so far.
            None => {
                let span = self
                    .first_sent
                    .map_or(1.0, |f| now.saturating_duration_since(f).as_secs_f64())
                    .max(0.01);
                (self.accepted.max(1) as f64 / span) * HARD_CUT
            }
            Some(r) if self.since_cut < SETTLED => r * HARD_CUT,
            Some(r) => r * SOFT_CUT,
        };
        let rate = next.max(MIN_RATE);
        self.rate = Some(rate);
        self.last_cut = Some(now);
        self.last_growth = now;
        self.since_cut = 0;
        tracing::info!(
            event = "rate_limited",
            rate_rps = rate,
            "the server answered 429: pacing requests at {rate:.1}/s"
        );
    }

    fn on_success(&mut self, sent: Instant, now: Instant) {
        self.accepted += 1;
        self.since_cut += 1;
        let Some(r) = self.rate else { return };
        if self.last_cut.is_some_and(|cut| sent < cut) {
            return;
        }
        let elapsed = now
            .saturating_duration_since(self.last_growth)
            .as_secs_f64();
        self.last_growth = now;
        self.rate = Some(r * (1.0 + GROWTH_PER_SEC * elapsed.min(1.0)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a 429 there is no cap; the first one paces below the rate the server accepted,
    /// and answers to requests sent before a cut do not cut again.
    #[test]
    fn a_429_sets_a_pace_and_in_flight_answers_do_not_cut_twice() {
        let t0 = Instant::now();
        let mut a = Adaptive::new(t0);
        // 50 accepted per second for two seconds, sent as fast as they come.
        for i in 0..100u64 {
            let t = t0 + Duration::from_millis(i * 20);
            assert_eq!(a.try_send(t), Ok(t), "no cap yet");
            a.on_success(t, t);
        }
        let now = t0 + Duration::from_millis(2000);
        let early = t0 + Duration::from_millis(1990);
        a.on_limited(early, now, Some(Duration::from_secs(1)));
        let r = a.rate.expect("paced");
        assert!((29.0..=31.0).contains(&r), "{r}");
        assert!(
            a.next_slot >= now + Duration::from_secs(1),
            "Retry-After honoured"
        );
        // Another 429 for a request already in flight at the cut: no second cut.
        a.on_limited(early, now + Duration::from_millis(5), None);
        assert_eq!(a.rate, Some(r));
        assert_eq!(a.limited, 2);
    }

    /// A 429 soon after a cut cuts hard, one after a settled run gently; successes raise the
    /// pace by a few percent per second.
    #[test]
    fn hard_then_soft_cuts_and_slow_growth() {
        let t0 = Instant::now();
        let mut a = Adaptive::new(t0);
        a.rate = Some(100.0);
        a.since_cut = SETTLED;
        a.on_limited(t0, t0, None);
        assert_eq!(a.rate, Some(90.0), "settled: soft cut");
        let t1 = t0 + Duration::from_millis(100);
        a.on_limited(t1, t1, None);
        assert_eq!(a.rate, Some(54.0), "right after a cut: hard cut");
        let mut t = t1;
        for _ in 0..400 {
            t += Duration::from_millis(25);
            a.on_success(t, t);
        }
        let r = a.rate.expect("rate");
        assert!(
            r > 54.0 * 1.15 && r < 54.0 * 1.25,
            "ten seconds of growth: {r}"
        );
    }

    /// A model of the e2e setting on a virtual clock: a token-bucket server (15/s, burst 3,
    /// `Retry-After: 1`), four concurrent workers with 20-60 ms answers, and a machine that
    /// stalls every worker for 300 ms now and then (every worker oversleeps together). The pace
    /// settles near the limit and 429s stay rare: a stall never releases a burst.
    #[test]
    fn four_workers_settle_near_a_token_bucket_through_stalls() {
        let t0 = Instant::now();
        let ms = |n: u64| Duration::from_millis(n);
        let mut a = Adaptive::new(t0);
        let (cap, burst) = (15.0f64, 3.0f64);
        let (mut tokens, mut counted) = (burst, t0);
        // (when the worker acts next, the answer it is waiting for: (sent, limited))
        let mut workers: Vec<(Instant, Option<(Instant, bool)>)> = vec![(t0, None); 4];
        let mut seed = 7u64;
        let mut rand = move |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let (mut sent, mut limited) = (0u64, 0u64);
        let end = t0 + Duration::from_secs(120);
        let mut next_stall = t0 + ms(2000);
        while let Some(i) = (0..workers.len()).min_by_key(|&i| workers[i].0) {
            let mut now = workers[i].0;
            if now >= end {
                break;
            }
            if now >= next_stall {
                // Every worker wakes 300 ms late.
                for w in &mut workers {
                    w.0 = w.0.max(next_stall + ms(300));
                }
                next_stall += ms(1000 + rand(3000));
                continue;
            }
            if let Some((at, was_limited)) = workers[i].1.take() {
                let ra = was_limited.then(|| Duration::from_secs(1));
                if was_limited {
                    a.on_limited(at, now, ra);
                } else {
                    a.on_success(at, now);
                }
            }
            match a.try_send(now) {
                Err(until) => workers[i].0 = until,
                Ok(at) => {
                    now = at;
                    sent += 1;
                    let arrival = now + ms(5);
                    tokens =
                        (tokens + arrival.duration_since(counted).as_secs_f64() * cap).min(burst);
                    counted = arrival;
                    let over = tokens < 1.0;
                    if over {
                        limited += 1;
                    } else {
                        tokens -= 1.0;
                    }
                    workers[i] = (now + ms(20 + rand(40)), Some((at, over)));
                }
            }
        }
        let rate = sent as f64 / 120.0;
        assert!(
            (limited as f64) < 0.03 * sent as f64,
            "{limited} 429s in {sent} requests"
        );
        assert!((10.0..=15.5).contains(&rate), "{rate} requests/s");
    }

    /// CertCentral gets its documented windows unless others are configured; DigiCert ONE none.
    #[test]
    fn windows_per_api() {
        assert!(
            Throttle::for_account(AccountKind::CertCentral, &[])
                .pace()
                .fixed_windows
        );
        assert!(
            !Throttle::for_account(AccountKind::DigicertOne, &[])
                .pace()
                .fixed_windows
        );
        let pinned = [RateLimit {
            requests: 10,
            per_secs: 1,
        }];
        assert!(
            Throttle::for_account(AccountKind::DigicertOne, &pinned)
                .pace()
                .fixed_windows
        );
    }
}
