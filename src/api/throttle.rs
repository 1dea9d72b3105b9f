//! The client-side throttle of one account: fixed windows where a limit is known, and an adaptive
//! pace that learns the server's limit from its 429s.
//!
//! - **Fixed windows** (`governor`): every configured `rate_limits` window must allow a request.
//!   CertCentral publishes its limits (contract 2.4: 100 per 5 s and 1000 per 3 min), so a
//!   CertCentral account gets those windows when none are configured.
//! - **Adaptive pace** (slow start, then additive-increase / multiplicative-decrease, as TCP does
//!   with a congestion window): DigiCert ONE publishes no numbers (contract 1.6). An account
//!   without fixed windows starts at [`START_RATE`] and grows it fourfold a second
//!   ([`START_GROWTH`]) while the server accepts and the pace is used, so an unlimited server is
//!   reached within a second or so and a limited one is passed gradually, with few requests in
//!   flight when its first 429 comes back. Accounts with fixed windows (configured, or
//!   CertCentral's) skip the slow start: the windows pace them, and the adaptive pace is uncapped
//!   until a 429. The first 429 sets the pace from the rate the server accepted since the pass
//!   began (no `Retry-After` wait has emptied that yet): [`FIRST_CUT`] of it (or of the slow
//!   start's pace, if lower) after a slow start, [`HARD_CUT`] of it after an uncapped start, and
//!   never below [`HARD_CUT`] of [`START_RATE`] (a 429 before much was accepted says little of a
//!   rate). A 429 soon after a cut cuts hard ([`HARD_CUT`]), one after a settled run
//!   ([`SETTLED`] successes) gently ([`SOFT_CUT`]); every second of successes then raises the
//!   pace by [`GROWTH_PER_SEC`], never past [`USE_HEADROOM`] times what was sent over the last
//!   second, so it settles around the server's limit and probes past it rarely.
//! - **429s without a rate pattern**: a 429 for the first request sent after a `Retry-After`
//!   wait met a server that had rested as long as it asked, which a rate cap (a token bucket, a
//!   window) lets through. Such a 429 does not cut: it undoes the hard cuts in a row before it,
//!   and later hard cuts stop at [`HARD_CUT`] of that pace, so random 429s (a server answering
//!   a share of requests 429 whatever the rate) cannot drive the pace towards [`MIN_RATE`]. (A
//!   server that rejects such requests and also caps below that bound is held back by its
//!   `Retry-After` waits alone, a few 429s a wait; `rate_limits` can pin it.)
//!
//! Modelled on a virtual clock (tests below): against a 40/s token bucket (0.2 s of burst, four
//! workers) 1 429 in 131 requests and 5 in 1,035, the pace ends at 41-43/s; against 20% random
//! 429s the pace stays at 10.8/s or more and the client sends 4.1/s (the `Retry-After` waits
//! allow under 5/s). Invariants: one 429 cuts once; the answers to requests sent before a cut
//! (in flight when it happened) do not cut again, so concurrent requests never cause a storm of
//! cuts; no request is sent before a `Retry-After` has passed; a slot is taken when its request
//! is sent, never booked ahead, so tasks that wake late together (a loaded machine) do not send
//! a burst.
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

/// Where the slow start begins, in requests per second.
const START_RATE: f64 = 30.0;
/// The slow start's growth: the pace is multiplied by e^(this) per second of successes (x4).
const START_GROWTH: f64 = std::f64::consts::LN_2 * 2.0;
/// The first 429 of a slow start paces at this share of the rate accepted since the pass began
/// (or of the slow start's own pace, if lower).
const FIRST_CUT: f64 = 0.85;
/// A 429 that comes soon after the last cut (fewer than [`SETTLED`] successes since) means the
/// pace is still far too high: cut hard. The first 429 without a slow start cuts hard too.
const HARD_CUT: f64 = 0.6;
/// A 429 after a settled run means the pace just probed past the limit: cut gently.
const SOFT_CUT: f64 = 0.9;
const SETTLED: u64 = 30;
/// After the first 429, the pace grows by this share per second of successes, probing for more.
const GROWTH_PER_SEC: f64 = 0.02;
/// The pace grows only while it is below this many times the rate sent over the last second.
const USE_HEADROOM: f64 = 2.0;
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

/// Events counted over the last second, in O(1): the current second's count plus the share of
/// the previous second's that the sliding window still covers.
#[derive(Debug, Clone, Copy)]
struct LastSecond {
    since: Instant,
    current: u64,
    previous: u64,
}

impl LastSecond {
    fn new(now: Instant) -> LastSecond {
        LastSecond {
            since: now,
            current: 0,
            previous: 0,
        }
    }

    fn roll(&mut self, now: Instant) {
        let age = now.saturating_duration_since(self.since);
        if age >= Duration::from_secs(2) {
            *self = LastSecond::new(now);
        } else if age >= Duration::from_secs(1) {
            self.previous = self.current;
            self.current = 0;
            self.since += Duration::from_secs(1);
        }
    }

    fn add(&mut self, now: Instant) {
        self.roll(now);
        self.current += 1;
    }

    /// Events per second over the last second, or over `span` when less has passed.
    fn per_sec(&mut self, now: Instant, span: Duration) -> f64 {
        self.roll(now);
        let frac = now
            .saturating_duration_since(self.since)
            .as_secs_f64()
            .min(1.0);
        let count = self.previous as f64 * (1.0 - frac) + self.current as f64;
        count / span.as_secs_f64().clamp(0.05, 1.0)
    }
}

#[derive(Debug)]
struct Adaptive {
    /// The pace in requests per second; `None`: no cap (fixed windows pace the account, and no
    /// 429 was seen yet).
    pace: Option<f64>,
    /// Whether a 429 has set the pace (the slow start, or the uncapped start, is over).
    found: bool,
    /// When the next request may be sent (the pace's slot, or the end of a `Retry-After`).
    next_slot: Instant,
    /// Requests sent before this instant answer for the pace before the last cut.
    last_cut: Option<Instant>,
    last_growth: Instant,
    /// The first request, and the successes since: the rate that drew the first 429.
    first_sent: Option<Instant>,
    accepted: u64,
    /// Requests sent over the last second (the pace grows only while it is used).
    sent: LastSecond,
    /// The end of the last `Retry-After` wait, and the first request sent after it.
    waited_until: Option<Instant>,
    first_after_wait: Option<Instant>,
    /// Quick cuts in a row (each soon after the last), and the pace before the first of them.
    quick_cuts: u32,
    before_quick: f64,
    /// A pace that drew 429s without a rate pattern: quick cuts stop at [`HARD_CUT`] of it.
    patternless: Option<f64>,
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
        let slow_start = limits.is_empty();
        Throttle {
            limiters,
            adaptive: Mutex::new(Adaptive::new(now, slow_start)),
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
            .map(|a| (a.pace.filter(|_| a.found), a.limited))
            .unwrap_or((None, 0));
        Pace {
            rate,
            limited,
            fixed_windows: !self.limiters.is_empty(),
        }
    }
}

impl Adaptive {
    /// `slow_start`: begin at [`START_RATE`]; otherwise uncapped until a 429.
    fn new(now: Instant, slow_start: bool) -> Adaptive {
        Adaptive {
            pace: slow_start.then_some(START_RATE),
            found: false,
            next_slot: now,
            last_cut: None,
            last_growth: now,
            first_sent: None,
            accepted: 0,
            sent: LastSecond::new(now),
            waited_until: None,
            first_after_wait: None,
            quick_cuts: 0,
            before_quick: 0.0,
            patternless: None,
            since_cut: 0,
            limited: 0,
        }
    }

    /// `Ok(now)` when a request may be sent now (the slot is taken), `Err(when)` to wait.
    fn try_send(&mut self, now: Instant) -> Result<Instant, Instant> {
        if now < self.next_slot {
            return Err(self.next_slot);
        }
        if self.first_sent.is_none() {
            self.first_sent = Some(now);
            self.sent = LastSecond::new(now);
            self.last_growth = now;
        }
        if self.first_after_wait.is_none() && self.waited_until.is_some_and(|w| now >= w) {
            self.first_after_wait = Some(now);
        }
        self.sent.add(now);
        if let Some(r) = self.pace {
            self.next_slot = now + Duration::from_secs_f64(1.0 / r);
        }
        Ok(now)
    }

    /// How long requests have been sent.
    fn span(&self, now: Instant) -> Duration {
        self.first_sent
            .map_or(Duration::ZERO, |f| now.saturating_duration_since(f))
    }

    fn on_limited(&mut self, sent: Instant, now: Instant, retry_after: Option<Duration>) {
        self.limited += 1;
        // The first request after a `Retry-After` wait met a server that had rested as long
        // as it asked: a rate cap (a token bucket, a window) lets it through, so this 429 has
        // no rate pattern.
        let patternless = self.first_after_wait == Some(sent);
        // Wait out the server's word before anything else is sent.
        if let Some(ra) = retry_after {
            self.next_slot = self.next_slot.max(now + ra);
            self.waited_until = Some(self.next_slot);
            self.first_after_wait = None;
        }
        if self.last_cut.is_some_and(|cut| sent < cut) {
            // In flight when the pace was last cut: it answers for the old pace.
            return;
        }
        if let (true, true, Some(r)) = (patternless, self.found, self.pace) {
            // The quick cuts since the last settled pace were drawn by 429s like this one:
            // undo them, and keep later ones from going far below that pace.
            let before = if self.quick_cuts > 0 {
                self.before_quick.max(r)
            } else {
                r
            };
            self.patternless = Some(self.patternless.map_or(before, |p| p.max(before)));
            self.pace = Some(before);
            self.quick_cuts = 0;
            tracing::info!(
                event = "rate_limited",
                rate_rps = before,
                "the server answered 429 after resting: not a rate limit, pacing at {before:.1}/s"
            );
            return;
        }
        let next = match self.pace {
            // The first 429: start from the rate the server accepted since the pass began (no
            // wait has emptied it yet), or the slow start's pace if lower. A 429 with next to
            // nothing accepted yet says little of a rate: it paces at no less than HARD_CUT of
            // the slow start's first pace.
            _ if !self.found => {
                let span = self.span(now).as_secs_f64();
                let accepted = self.accepted.max(1) as f64;
                let cut = match self.pace {
                    Some(p) => p.min(accepted / span.max(0.05)) * FIRST_CUT,
                    None => accepted / span.max(0.01) * HARD_CUT,
                };
                cut.max(START_RATE * HARD_CUT)
            }
            Some(r) if self.since_cut < SETTLED => {
                if self.quick_cuts == 0 {
                    self.before_quick = r;
                }
                self.quick_cuts += 1;
                let floor = self.patternless.map_or(0.0, |p| p * HARD_CUT);
                (r * HARD_CUT).max(floor.min(r))
            }
            Some(r) => {
                self.quick_cuts = 0;
                r * SOFT_CUT
            }
            // Unreachable (a found pace is set), but a pace is never invented here.
            None => START_RATE,
        };
        let rate = next.max(MIN_RATE);
        self.pace = Some(rate);
        self.found = true;
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
        let Some(r) = self.pace else { return };
        if self.last_cut.is_some_and(|cut| sent < cut) {
            return;
        }
        let elapsed = now
            .saturating_duration_since(self.last_growth)
            .as_secs_f64()
            .min(1.0);
        self.last_growth = now;
        // A pace the client does not use is not raised (it would only tell of an unused limit).
        let span = self.span(now);
        if r >= USE_HEADROOM * self.sent.per_sec(now, span) {
            return;
        }
        let grown = if self.found {
            r * (1.0 + GROWTH_PER_SEC * elapsed)
        } else {
            r * (START_GROWTH * elapsed).exp()
        };
        self.pace = Some(grown);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without fixed windows the pace starts at the slow start's rate, with them there is no
    /// cap; the first 429 paces below the rate the server accepted, and answers to requests
    /// sent before a cut do not cut again.
    #[test]
    fn a_429_sets_a_pace_and_in_flight_answers_do_not_cut_twice() {
        let t0 = Instant::now();
        assert_eq!(Adaptive::new(t0, true).pace, Some(START_RATE));
        let mut a = Adaptive::new(t0, false);
        // 50 accepted per second for two seconds, sent as fast as they come.
        for i in 0..100u64 {
            let t = t0 + Duration::from_millis(i * 20);
            assert_eq!(a.try_send(t), Ok(t), "no cap yet");
            a.on_success(t, t);
        }
        let now = t0 + Duration::from_millis(2000);
        let early = t0 + Duration::from_millis(1990);
        a.on_limited(early, now, Some(Duration::from_secs(1)));
        let r = a.pace.expect("paced");
        assert!((29.0..=31.0).contains(&r), "{r}");
        assert!(
            a.next_slot >= now + Duration::from_secs(1),
            "Retry-After honoured"
        );
        // Another 429 for a request already in flight at the cut: no second cut.
        a.on_limited(early, now + Duration::from_millis(5), None);
        assert_eq!(a.pace, Some(r));
        assert_eq!(a.limited, 2);
    }

    /// The first 429 of a slow start paces at FIRST_CUT of what was accepted since the pass
    /// began, or of the slow start's pace if lower; a 429 that comes before anything was
    /// accepted keeps HARD_CUT of the slow start's pace instead of pacing near zero.
    #[test]
    fn a_slow_start_is_cut_from_the_rate_accepted_since_the_pass_began() {
        let t0 = Instant::now();
        let mut a = Adaptive::new(t0, true);
        assert_eq!(a.try_send(t0), Ok(t0));
        let t = t0 + Duration::from_millis(10);
        a.on_limited(t0, t, Some(Duration::from_secs(1)));
        assert_eq!(a.pace, Some(START_RATE * HARD_CUT), "first answer a 429");
        let mut b = Adaptive::new(t0, true);
        b.pace = Some(80.0);
        b.first_sent = Some(t0);
        b.accepted = 40;
        let t = t0 + Duration::from_secs(1);
        b.on_limited(t, t, None);
        let r = b.pace.expect("paced");
        assert!((r - 40.0 * FIRST_CUT).abs() < 1e-9, "{r}");
    }

    /// A 429 soon after a cut cuts hard, one after a settled run gently; successes raise the
    /// pace by a few percent per second.
    #[test]
    fn hard_then_soft_cuts_and_slow_growth() {
        let t0 = Instant::now();
        let mut a = Adaptive::new(t0, false);
        a.pace = Some(100.0);
        a.found = true;
        a.since_cut = SETTLED;
        a.on_limited(t0, t0, None);
        assert_eq!(a.pace, Some(90.0), "settled: soft cut");
        let t1 = t0 + Duration::from_millis(100);
        a.on_limited(t1, t1, None);
        assert_eq!(a.pace, Some(54.0), "right after a cut: hard cut");
        let mut t = t1;
        for _ in 0..400 {
            t += Duration::from_millis(25);
            assert_eq!(a.try_send(t), Ok(t));
            a.on_success(t, t);
        }
        let r = a.pace.expect("rate");
        assert!(
            r > 54.0 * 1.15 && r < 54.0 * 1.25,
            "ten seconds of growth: {r}"
        );
    }

    /// A 429 for the first request sent after a `Retry-After` wait does not cut: it undoes the
    /// hard cuts in a row before it, and later hard cuts stop at HARD_CUT of that pace. A 429
    /// for a later request after the wait cuts as before.
    #[test]
    fn a_429_after_resting_undoes_hard_cuts_and_bounds_later_ones() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let ra = Some(Duration::from_secs(1));
        let mut a = Adaptive::new(t0, false);
        a.pace = Some(20.0);
        a.found = true;
        assert_eq!(a.try_send(ms(0)), Ok(ms(0)));
        a.on_limited(ms(0), ms(10), ra);
        assert_eq!(a.pace, Some(12.0), "a hard cut");
        // After the wait: the first request is not limited, the second is: a hard cut.
        assert_eq!(a.try_send(ms(1010)), Ok(ms(1010)));
        assert_eq!(a.try_send(ms(1100)), Ok(ms(1100)));
        a.on_success(ms(1010), ms(1050));
        a.on_limited(ms(1100), ms(1150), ra);
        let r = a.pace.unwrap_or(0.0);
        assert!((r - 7.2).abs() < 1e-9, "a second hard cut: {r}");
        assert!(a.patternless.is_none());
        // After this wait the first request is limited: no rate pattern.
        let first = ms(2150);
        assert_eq!(a.try_send(first), Ok(first));
        a.on_limited(first, ms(2200), ra);
        assert_eq!(a.pace, Some(20.0), "the hard cuts are undone");
        assert_eq!(a.patternless, Some(20.0));
        assert_eq!(a.limited, 3);
        // Hard cuts in a row now stop at 12/s.
        let mut t = 3200;
        for _ in 0..5 {
            assert_eq!(a.try_send(ms(t)), Ok(ms(t)));
            a.on_success(ms(t), ms(t + 10));
            let second = t + 200;
            assert_eq!(a.try_send(ms(second)), Ok(ms(second)));
            a.on_limited(ms(second), ms(second + 10), ra);
            t = second + 1010;
        }
        let r = a.pace.unwrap_or(0.0);
        assert!((r - 12.0).abs() < 1e-9, "{r}");
    }

    /// A client that sends less than its pace allows does not raise it: at 10 requests a
    /// second the pace stops below twice that.
    #[test]
    fn an_unused_pace_does_not_grow() {
        let t0 = Instant::now();
        let mut a = Adaptive::new(t0, true);
        let mut t = t0;
        for _ in 0..300 {
            t += Duration::from_millis(100);
            assert_eq!(a.try_send(t), Ok(t));
            a.on_success(t, t);
        }
        let r = a.pace.expect("rate");
        assert!(r <= USE_HEADROOM * 10.0 * 1.1 + START_RATE, "{r}");
        let mut b = Adaptive::new(t0, true);
        b.found = true;
        b.pace = Some(30.0);
        let mut t = t0;
        for _ in 0..300 {
            t += Duration::from_millis(100);
            assert_eq!(b.try_send(t), Ok(t));
            b.on_success(t, t);
        }
        // (The first request alone, over the first instants, looks faster than it is.)
        let r = b.pace.expect("rate");
        assert!(r < 30.5, "10/s sent: a pace of 30/s is not raised: {r}");
    }

    fn adaptive(now: Instant, slow_start: bool) -> Adaptive {
        Adaptive::new(now, slow_start)
    }

    fn pace_of(a: &Adaptive) -> Option<f64> {
        a.pace.filter(|_| a.found)
    }

    /// A server and concurrent clients on a virtual clock.
    struct Model {
        /// The server's token bucket: requests per second (0: no cap), and seconds of burst.
        cap: f64,
        burst_secs: f64,
        /// The server also answers this share of requests 429 at random (no rate pattern).
        random_429: f64,
        workers: usize,
        /// A request reaches the server this long after it is sent.
        arrival_ms: u64,
        /// The answer comes this many milliseconds after the send, plus up to `rtt_spread_ms`;
        /// a 429 after `limited_ms` if set.
        rtt_ms: u64,
        rtt_spread_ms: u64,
        limited_ms: Option<u64>,
        /// A worker waits this long after a success before its next request (a busy writer).
        think_ms: u64,
        /// Every worker wakes 300 ms late now and then (a loaded machine).
        stalls: bool,
        /// Stop after this many accepted requests or this many seconds, whichever comes first.
        requests: u64,
        secs: u64,
        /// Fixed windows elsewhere pace the account: no slow start.
        fixed_windows: bool,
    }

    #[derive(Debug)]
    struct Outcome {
        sent: u64,
        limited: u64,
        /// The pace at the end, and the lowest it was after the first quarter of the run.
        pace: Option<f64>,
        lowest: Option<f64>,
        /// A pace that 429s without a rate pattern were seen under.
        patternless: Option<f64>,
        secs: f64,
    }

    impl Model {
        fn new(cap: f64, requests: u64) -> Model {
            Model {
                cap,
                burst_secs: 0.2,
                random_429: 0.0,
                workers: 4,
                arrival_ms: 1,
                rtt_ms: 5,
                rtt_spread_ms: 20,
                limited_ms: Some(2),
                think_ms: 0,
                stalls: false,
                requests,
                secs: 600,
                fixed_windows: false,
            }
        }

        fn run(&self) -> Outcome {
            let t0 = Instant::now();
            let ms = |n: u64| Duration::from_millis(n);
            let mut a = adaptive(t0, !self.fixed_windows);
            let burst = (self.cap * self.burst_secs).max(1.0);
            let (mut tokens, mut counted) = (burst, t0);
            // (when the worker acts next, the answer it is waiting for: (sent, limited))
            let mut workers: Vec<(Instant, Option<(Instant, bool)>)> =
                vec![(t0, None); self.workers];
            let mut seed = 7u64;
            let mut rand = move |n: u64| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 33) % n.max(1)
            };
            let (mut sent, mut limited, mut accepted) = (0u64, 0u64, 0u64);
            let mut lowest: Option<f64> = None;
            let end = t0 + Duration::from_secs(self.secs);
            let mut next_stall = t0 + ms(2000);
            let mut last = t0;
            while let Some(i) = (0..workers.len()).min_by_key(|&i| workers[i].0) {
                let mut now = workers[i].0;
                if now >= end || accepted >= self.requests {
                    break;
                }
                let late = now >= t0 + Duration::from_secs(self.secs / 4);
                if self.stalls && now >= next_stall {
                    for w in &mut workers {
                        w.0 = w.0.max(next_stall + ms(300));
                    }
                    next_stall += ms(1000 + rand(3000));
                    continue;
                }
                if let Some((at, was_limited)) = workers[i].1.take() {
                    last = now;
                    if was_limited {
                        a.on_limited(at, now, Some(Duration::from_secs(1)));
                    } else {
                        accepted += 1;
                        a.on_success(at, now);
                        if self.think_ms > 0 {
                            workers[i].0 = now + ms(self.think_ms);
                            continue;
                        }
                    }
                    if a.limited > 0 && late {
                        let r = pace_of(&a).unwrap_or(f64::INFINITY);
                        lowest = Some(lowest.map_or(r, |l| l.min(r)));
                    }
                }
                match a.try_send(now) {
                    Err(until) => workers[i].0 = until,
                    Ok(at) => {
                        now = at;
                        sent += 1;
                        let arrival = now + ms(self.arrival_ms);
                        let over = if self.cap > 0.0 {
                            tokens = (tokens
                                + arrival.duration_since(counted).as_secs_f64() * self.cap)
                                .min(burst);
                            counted = arrival;
                            tokens < 1.0
                        } else {
                            false
                        };
                        let random = self.random_429 > 0.0
                            && (rand(1_000_000) as f64) < self.random_429 * 1e6;
                        let limited_now = over || random;
                        if limited_now {
                            limited += 1;
                        } else if self.cap > 0.0 {
                            tokens -= 1.0;
                        }
                        let answer = match (limited_now, self.limited_ms) {
                            (true, Some(l)) => ms(l),
                            _ => ms(self.rtt_ms + rand(self.rtt_spread_ms)),
                        };
                        workers[i] = (now + answer, Some((at, limited_now)));
                    }
                }
            }
            Outcome {
                sent,
                limited,
                pace: pace_of(&a),
                lowest,
                patternless: a.patternless,
                secs: last.duration_since(t0).as_secs_f64(),
            }
        }
    }

    /// The e2e setting: a token bucket (15/s, burst 3), four workers with 20-60 ms answers,
    /// and a machine that stalls every worker for 300 ms now and then (every worker oversleeps
    /// together). The pace settles near the limit and 429s stay rare: a stall never releases
    /// a burst.
    #[test]
    fn four_workers_settle_near_a_token_bucket_through_stalls() {
        for fixed_windows in [true, false] {
            let o = Model {
                arrival_ms: 5,
                rtt_ms: 20,
                rtt_spread_ms: 40,
                limited_ms: None,
                stalls: true,
                requests: u64::MAX,
                secs: 120,
                fixed_windows,
                ..Model::new(15.0, 0)
            }
            .run();
            let rate = o.sent as f64 / 120.0;
            assert!(
                (o.limited as f64) < 0.03 * o.sent as f64,
                "fixed windows {fixed_windows}: {o:?}"
            );
            assert!(
                (10.0..=15.5).contains(&rate),
                "fixed windows {fixed_windows}: {rate} requests/s: {o:?}"
            );
        }
    }

    /// The collect benchmark's short rate-limited run: a server capped at 40/s (0.2 s of
    /// burst), four day windows in flight with fast answers, about 130 requests. Finding the
    /// limit costs under 2% of 429s, and the pace ends within 20% of it.
    #[test]
    fn a_capped_server_is_found_with_few_429s() {
        for requests in [130, 1030] {
            let o = Model::new(40.0, requests).run();
            let share = o.limited as f64 / o.sent as f64;
            assert!(share < 0.02, "{requests} requests: {o:?}");
            let pace = o.pace.unwrap_or(f64::NAN);
            assert!((32.0..=48.0).contains(&pace), "{requests} requests: {o:?}");
            assert_eq!(o.patternless, None, "a cap has a rate pattern: {o:?}");
        }
    }

    /// A server without a cap that answers 20% of requests 429 at random (`Retry-After: 1`,
    /// the simulator's `rate-limit=0.2`): four workers whose 80 ms answers allow 50 requests/s,
    /// for two minutes. No rate draws fewer 429s, so the pace must not collapse towards
    /// [`MIN_RATE`] (it did, with a cut for every 429): after the first half-minute it stays at
    /// 5/s or more, and the client sends nearly as much as the `Retry-After` waits allow.
    #[test]
    fn random_429s_do_not_collapse_the_pace() {
        for fixed_windows in [false, true] {
            let o = Model {
                random_429: 0.2,
                rtt_ms: 70,
                rtt_spread_ms: 20,
                limited_ms: None,
                requests: u64::MAX,
                secs: 120,
                fixed_windows,
                ..Model::new(0.0, 0)
            }
            .run();
            let lowest = o.lowest.unwrap_or(f64::NAN);
            assert!(lowest >= 5.0, "fixed windows {fixed_windows}: {o:?}");
            // Each 429 stops every request for a second, one in five is a 429: under 5/s
            // whatever the pace; a pace at 0.2/s would send 0.2/s.
            let rate = o.sent as f64 / o.secs;
            assert!(
                rate >= 3.0,
                "fixed windows {fixed_windows}: {rate}/s: {o:?}"
            );
        }
    }

    /// Without a limit, the slow start reaches a fast client's own rate within about a second:
    /// 300 requests from clients that could send 200 a second take under 2.5 s.
    #[test]
    fn an_unlimited_server_is_reached_quickly() {
        let o = Model {
            rtt_ms: 20,
            rtt_spread_ms: 1,
            ..Model::new(0.0, 300)
        }
        .run();
        assert_eq!(o.limited, 0);
        assert!(o.secs < 2.5, "{o:?}");
    }

    /// A client slower than the server's limit (a busy writer: 100 ms between a worker's
    /// requests, about 37/s in all against a cap of 60/s) never draws a 429 by inflating an
    /// unused pace and then bursting.
    #[test]
    fn a_slow_client_draws_no_429s() {
        let o = Model {
            think_ms: 100,
            ..Model::new(60.0, 1000)
        }
        .run();
        assert_eq!(o.limited, 0, "{o:?}");
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
