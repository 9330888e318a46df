//! `AdaptiveLimit`: how many requests of one kind (file transfers, history reads, log-batch
//! writes) a copy keeps in flight to one server, learned from the answers instead of fixed.
//!
//! On loopback a few requests in flight keep a server busy; 50 ms away the same few leave it
//! idle most of the time (a copy is then bound by round trips / requests in flight), and a
//! throttling server wants fewer. No fixed number is right for both, so the limit is found the
//! way TCP finds its congestion window:
//!
//! - **Slow start** (RFC 5681 §3.1): from its starting value (the old fixed cap) the limit
//!   grows by one for every good answer — it doubles per window of answers — until the first
//!   sign of trouble. (Growing by one per window from the start would take a copy of 500 small
//!   files most of its files to get from 8 to 32.)
//! - **Additive increase** (congestion avoidance, RFC 5681 §3.1): after that, one more for every
//!   window of good answers (as many answers as the limit).
//! - **Multiplicative decrease**: halved on a 429, a 503 or an answer carrying `Retry-After`
//!   (the server said so), and when the latency climbs past `TOLERANCE` times the best seen
//!   (queueing: more requests in flight only wait longer, as in TCP Vegas and Netflix's
//!   concurrency-limits, whose `Gradient2Limit` compares a short-term and a long-term RTT).
//!   At most once per window: answers to requests sent under the old limit are still coming,
//!   and a burst of 429s to them is one signal, not several (TCP reduces once per window too).
//!   And at most once per `Retry-After` period: the refusals that come while the server's asked
//!   wait runs are about the same overload. (Without this, a server refusing a tenth of the
//!   writes whatever their rate — the bench's `--throttle` — drives AIMD down to about 4 in
//!   flight, sqrt(2 / 0.1), the textbook TCP result under random loss (Mathis et al., 1997),
//!   and a copy that took 25 s with 8 fixed slots took 42-54 s.)
//! - **Only while used**: the limit grows only when at least half of it is in flight (Netflix's
//!   rule; TCP's congestion-window validation, RFC 7661), so a caller with little to send does
//!   not build up a limit it never tested.
//! - Clamped to `[1, max]`, `max` being the caller's upper bound (`--concurrency` for files).
//!   Latency alone never takes it below its starting value (the fixed cap it replaces, measured
//!   good on loopback): on the bench's 2 cores, shared with the servers, every latency climbs
//!   when the CPU is busy, and going under the old caps for that did not make copies faster
//!   (workload 3 on the 50 ms link: 76.7 s against 69.5 s with the fixed caps, one run each).
//!   Only the server's own word (429, 503, `Retry-After`) takes it lower, down to 1.
//!
//! Latency is smoothed (an exponentially weighted average with weight 1/8, TCP's SRTT,
//! RFC 6298) so that one slow answer does not halve the limit. The best latency seen is the
//! floor it is compared with; the floor creeps up toward what is observed (1/256 of the gap per
//! answer), so that one lucky answer, or a route that got slower for good, does not pin it.
//! After a decrease for latency the smoothed value starts afresh from the answers that follow.
//! Within `NOISE` (2 ms) of the floor nothing is queueing, whatever the ratio.
//!
//! Pure logic: no clocks. Callers time their requests and hand in durations.

use std::time::Duration;

/// Latency past this multiple of the floor means requests queue: the limit backs off.
pub const TOLERANCE: f64 = 2.0;
/// Weight of a new sample in the smoothed latency.
const SMOOTHING: f64 = 1.0 / 8.0;
/// How fast the floor follows the latency observed.
const FLOOR_CREEP: f64 = 1.0 / 256.0;
/// Latency this close to the floor is noise, whatever the ratio (a loopback answer of 0.2 ms
/// and one of 0.6 ms say nothing about queueing).
const NOISE: f64 = 0.002;

/// One kind of work to one server: its current limit and what it has learned.
#[derive(Debug, Clone)]
pub struct AdaptiveLimit {
    limit: usize,
    /// Where it started: latency back-offs stop there.
    start: usize,
    max: usize,
    /// Until the first back-off, every good answer adds one.
    slow_start: bool,
    /// Good answers since the limit last grew (congestion avoidance).
    acked: usize,
    /// Answers to wait for before the limit may be decreased again.
    hold: usize,
    /// No decrease for overload before this time (the caller's clock, `overloaded`'s `now`).
    quiet_until: Duration,
    /// The lowest latency seen (creeping), in seconds.
    floor: Option<f64>,
    /// The smoothed latency, in seconds.
    smoothed: Option<f64>,
    /// The highest limit reached.
    peak: usize,
    /// Back-offs: for an overloaded server, for latency.
    backoffs: (u32, u32),
}

impl AdaptiveLimit {
    /// A limit starting at `start`, never above `max` (both at least 1).
    pub fn new(start: usize, max: usize) -> AdaptiveLimit {
        let max = max.max(1);
        let limit = start.clamp(1, max);
        AdaptiveLimit {
            limit,
            start: limit,
            max,
            slow_start: true,
            acked: 0,
            hold: 0,
            quiet_until: Duration::ZERO,
            floor: None,
            smoothed: None,
            peak: limit,
            backoffs: (0, 0),
        }
    }

    /// A new upper bound (a caller's flag), keeping what was learned.
    pub fn set_max(&mut self, max: usize) {
        self.max = max.max(1);
        self.limit = self.limit.min(self.max);
        self.start = self.start.min(self.max);
    }

    /// How many may be in flight now.
    pub fn get(&self) -> usize {
        self.limit
    }

    /// The highest limit reached so far.
    pub fn peak(&self) -> usize {
        self.peak
    }

    /// A good answer, `in_flight` (this one included) having been in flight with it. `latency`
    /// is how long it took, when that says something about the server (`None` for a transfer
    /// whose time is its size's, not the server's).
    pub fn answered(&mut self, latency: Option<Duration>, in_flight: usize) {
        self.hold = self.hold.saturating_sub(1);
        if let Some(latency) = latency {
            if self.queueing(latency.as_secs_f64()) && self.hold == 0 {
                self.backoffs.1 += 1;
                self.smoothed = None;
                return self.decrease(self.start);
            }
        }
        if in_flight * 2 < self.limit {
            return;
        }
        if self.slow_start {
            self.grow();
        } else {
            self.acked += 1;
            if self.acked >= self.limit {
                self.acked = 0;
                self.grow();
            }
        }
    }

    /// An answer that says the server is overloaded: 429, 503, or any with `Retry-After`
    /// (`retry_after`, the wait it asked). `now` is the caller's clock (any fixed epoch).
    pub fn overloaded(&mut self, now: Duration, retry_after: Option<Duration>) {
        self.hold = self.hold.saturating_sub(1);
        if self.hold == 0 && now >= self.quiet_until {
            self.backoffs.0 += 1;
            self.quiet_until = now + retry_after.unwrap_or_default();
            self.decrease(1);
        }
    }

    /// What it settled on, for a phase line: "limit 24 (peak 32, 2 back-offs for 429/503)".
    pub fn summary(&self) -> String {
        let mut text = format!("limit settled at {}", self.limit);
        if self.peak != self.limit {
            text += &format!(" (peak {})", self.peak);
        }
        let (overload, latency) = self.backoffs;
        if overload > 0 {
            text += &format!(", {overload} back-off(s) for 429/503");
        }
        if latency > 0 {
            text += &format!(", {latency} for latency");
        }
        text
    }

    /// Takes in a latency sample: whether the smoothed latency is past the tolerance.
    fn queueing(&mut self, sample: f64) -> bool {
        let floor = match self.floor {
            Some(floor) if sample >= floor => floor + (sample - floor) * FLOOR_CREEP,
            _ => sample,
        };
        self.floor = Some(floor);
        let smoothed = match self.smoothed {
            Some(s) => s + (sample - s) * SMOOTHING,
            None => sample,
        };
        self.smoothed = Some(smoothed);
        smoothed > TOLERANCE * floor && smoothed - floor > NOISE
    }

    fn grow(&mut self) {
        self.limit = (self.limit + 1).min(self.max);
        self.peak = self.peak.max(self.limit);
    }

    /// Halves the limit, not below `least`.
    fn decrease(&mut self, least: usize) {
        // The answers to what is in flight under the old limit are one window.
        self.hold = self.limit;
        self.limit = (self.limit / 2).max(least).min(self.limit).max(1);
        self.slow_start = false;
        self.acked = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTT: Duration = Duration::from_millis(50);

    /// `n` good answers at `latency`, each with the whole limit in flight.
    fn good(limit: &mut AdaptiveLimit, n: usize, latency: Duration) {
        for _ in 0..n {
            let in_flight = limit.get();
            limit.answered(Some(latency), in_flight);
        }
    }

    #[test]
    fn grows_under_steady_latency_up_to_its_max() {
        let mut l = AdaptiveLimit::new(8, 32);
        good(&mut l, 8, RTT);
        assert_eq!(l.get(), 16, "slow start doubles per window");
        good(&mut l, 100, RTT);
        assert_eq!((l.get(), l.peak()), (32, 32), "never above max");
        assert_eq!(l.summary(), "limit settled at 32");
    }

    #[test]
    fn halves_on_overload_once_per_window_then_grows_by_one_per_window() {
        let mut l = AdaptiveLimit::new(8, 64);
        good(&mut l, 8, RTT);
        assert_eq!(l.get(), 16);
        // A burst of 429s to the requests in flight: one halving, not sixteen.
        for _ in 0..16 {
            l.overloaded(Duration::ZERO, None);
        }
        assert_eq!(l.get(), 8);
        // The window past, another 429 halves again.
        l.overloaded(Duration::ZERO, None);
        assert_eq!(l.get(), 4);
        // Recovers: additive now, one per window of answers.
        good(&mut l, 3, RTT);
        assert_eq!(l.get(), 4);
        good(&mut l, 1, RTT);
        assert_eq!(l.get(), 5);
        good(&mut l, 5 + 6 + 7, RTT);
        assert_eq!(l.get(), 8);
        assert!(
            l.summary().contains("2 back-off(s) for 429/503"),
            "{}",
            l.summary()
        );
    }

    #[test]
    fn one_back_off_per_retry_after_period() {
        let mut l = AdaptiveLimit::new(8, 32);
        let second = Duration::from_secs(1);
        l.overloaded(Duration::ZERO, Some(second));
        assert_eq!(l.get(), 4);
        // A tenth of the answers refused for the next second: no further halving in it.
        for i in 1..40u32 {
            let now = second * i / 40;
            if i % 10 == 0 {
                l.overloaded(now, Some(second));
            } else {
                l.answered(Some(RTT), l.get());
            }
        }
        assert_eq!(l.get(), 9, "grown by one per window meanwhile");
        // The period over, the next refusal halves it.
        l.overloaded(second, Some(second));
        assert_eq!(l.get(), 4);
    }

    #[test]
    fn backs_off_when_latency_climbs_past_the_tolerance() {
        let mut l = AdaptiveLimit::new(4, 64);
        good(&mut l, 12, RTT);
        assert_eq!(l.get(), 16);
        // Requests queue: latency triples. The smoothed value crosses 2x after a few answers.
        good(&mut l, 6, RTT * 3);
        assert!(l.get() < 16, "backed off: {}", l.get());
        // However long it lasts, latency does not take it below where it started.
        let mut slow = l.clone();
        let least = (0..500)
            .map(|_| {
                good(&mut slow, 1, RTT * 6);
                slow.get()
            })
            .min();
        assert_eq!(least, Some(4));
        let after = l.get();
        // One slow answer among good ones is smoothed away: no back-off.
        good(&mut l, 40, RTT);
        let grown = l.get();
        assert!(grown > after, "recovered: {grown}");
        l.answered(Some(RTT * 3), grown);
        good(&mut l, 1, RTT);
        assert!(l.get() >= grown, "a single spike does not halve it");
        assert!(l.summary().contains("for latency"), "{}", l.summary());
    }

    #[test]
    fn a_slower_route_for_good_is_accepted_after_a_while() {
        let mut l = AdaptiveLimit::new(8, 16);
        good(&mut l, 20, RTT);
        // Latency doubles and a half for good, whatever the limit: the floor follows it and the
        // limit stops being halved.
        good(&mut l, 3000, RTT * 5 / 2);
        let settled = l.get();
        good(&mut l, 200, RTT * 5 / 2);
        assert!(l.get() >= settled && l.get() > 4, "{}", l.get());
    }

    #[test]
    fn sub_millisecond_jitter_is_not_queueing() {
        let mut l = AdaptiveLimit::new(8, 64);
        for i in 0..200 {
            let in_flight = l.get();
            l.answered(Some(Duration::from_micros(100 + (i % 3) * 400)), in_flight);
        }
        assert_eq!(l.get(), 64);
    }

    #[test]
    fn clamped_to_one_and_grows_only_when_used() {
        let mut l = AdaptiveLimit::new(0, 0);
        assert_eq!(l.get(), 1);
        for _ in 0..10 {
            l.overloaded(Duration::ZERO, None);
            l.answered(None, 1);
        }
        assert_eq!(l.get(), 1);
        let mut l = AdaptiveLimit::new(8, 32);
        for _ in 0..50 {
            l.answered(Some(RTT), 2);
        }
        assert_eq!(l.get(), 8, "two in flight do not test a limit of eight");
        // Transfers timed by their size count as answers without a latency.
        for _ in 0..8 {
            l.answered(None, 8);
        }
        assert_eq!(l.get(), 16);
    }
}
