//! How much work the pass asks of Redis per script call, and how fast. The
//! script stops its own SCAN steps when its time budget is spent, by the
//! server's clock, the way Redis bounds its own active-expire cycle; the
//! pacer learns from each call's reply how long a key takes and what share
//! of a call the scan is (the rest is the writes that follow it), and sizes
//! the next call's steps and scan budget so that the whole call fits in
//! `--max-call-time`. With `--rate-limit` it also spaces the calls so the
//! pass looks at no more keys per second than asked.

use std::time::{Duration, Instant};

/// SCAN steps one call's budget holds. The script reads its clock after each
/// step and sizes the next to what is left of the budget, so a call fills its
/// budget in about this many steps, each costing a clock reading (measured
/// with bench/callgrind.sh: 2 steps cost 1% fewer instructions than 4).
const STEPS_PER_CALL: f64 = 2.0;

/// The COUNT of the first call's steps, before anything is measured.
const FIRST_STEP: usize = 100;

/// The smallest step, however slow keys are: below this, the cost of each
/// SCAN and clock reading dominates. The clean script's own MIN_STEP, which
/// sizes the steps after the first, is the same.
const MIN_STEP: usize = 10;

/// The scan's share of a call before the first measurement.
const FIRST_SCAN_SHARE: f64 = 0.75;

/// Calls per second at least, under a rate limit: it caps the keys one call
/// may look at, so the pass does not go in bursts of seconds.
const MIN_CALLS_PER_SECOND: u32 = 10;

/// Weight of the newest measurement in the moving averages.
const SMOOTHING: f64 = 0.3;

/// Step sizing and call spacing for one pass.
#[derive(Debug, Clone)]
pub struct Pacer {
    /// Most keys one call may look at.
    max_keys: usize,
    /// Longest one script call should run.
    budget: Duration,
    /// Keys per second to look at, at most (`--rate-limit`).
    rate_limit: Option<u32>,
    /// Moving average of the scan's cost per key looked at, in microseconds.
    micros_per_key: Option<f64>,
    /// Moving average of the scan's share of a call's time.
    scan_share: f64,
    /// Keys the calls so far looked at.
    looked_at: u64,
}

impl Pacer {
    /// A pacer for calls that look at `max_keys` keys at most and run for
    /// `budget` at most, looking at `rate_limit` keys per second at most.
    pub fn new(max_keys: usize, budget: Duration, rate_limit: Option<u32>) -> Pacer {
        let max_keys = match rate_limit {
            Some(rate) => max_keys.min((rate / MIN_CALLS_PER_SECOND).max(1) as usize),
            None => max_keys,
        };
        Pacer {
            max_keys,
            budget,
            rate_limit,
            micros_per_key: None,
            scan_share: FIRST_SCAN_SHARE,
            looked_at: 0,
        }
    }

    /// The most keys the next call may look at.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// How long the next call's scan may run, leaving the rest of the budget
    /// to its writes.
    pub fn scan_budget(&self) -> Duration {
        self.budget.mul_f64(self.scan_share)
    }

    /// The COUNT of the next call's first SCAN step: half its scan budget.
    pub fn step(&self) -> usize {
        let step = match self.micros_per_key {
            None => FIRST_STEP,
            Some(cost) => (self.scan_budget().as_micros() as f64 / STEPS_PER_CALL / cost) as usize,
        };
        step.max(MIN_STEP).min(self.max_keys)
    }

    /// Learns from one call that looked at `looked_at` keys, scanned them
    /// in `scan_micros` and ran `micros` in all.
    pub fn record(&mut self, looked_at: u64, scan_micros: u64, micros: u64) {
        self.looked_at += looked_at;
        if looked_at == 0 || micros == 0 {
            return;
        }
        let cost = (scan_micros as f64 / looked_at as f64).max(0.01);
        self.micros_per_key = Some(match self.micros_per_key {
            Some(average) => average + SMOOTHING * (cost - average),
            None => cost,
        });
        let share = (scan_micros as f64 / micros as f64).clamp(0.1, 1.0);
        self.scan_share += SMOOTHING * (share - self.scan_share);
    }

    /// When the next call may go out, for a pass that started at `started`:
    /// the keys the calls so far looked at, at the rate limit. `None` when
    /// there is no rate limit.
    pub fn next_call_at(&self, started: Instant) -> Option<Instant> {
        let rate = self.rate_limit?;
        Some(started + Duration::from_secs_f64(self.looked_at as f64 / f64::from(rate)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_half_the_scan_budget() {
        let mut pacer = Pacer::new(10_000, Duration::from_millis(1), None);
        assert_eq!(pacer.step(), FIRST_STEP);
        assert_eq!(pacer.scan_budget(), Duration::from_micros(750));
        // 1000 keys scanned in 500 µs of a 1000 µs call: 0.5 µs per key; the
        // scan's share moves from 0.75 towards 0.5.
        pacer.record(1000, 500, 1000);
        assert_eq!(pacer.scan_budget(), Duration::from_micros(675));
        assert_eq!(pacer.step(), 675);
    }

    #[test]
    fn steps_stay_within_bounds() {
        let mut slow = Pacer::new(10_000, Duration::from_millis(1), None);
        slow.record(10, 100_000, 100_000);
        assert_eq!(slow.step(), MIN_STEP);
        let mut cheap = Pacer::new(500, Duration::from_millis(1), None);
        cheap.record(500, 1, 2);
        assert_eq!(cheap.step(), 500);
        assert_eq!(Pacer::new(5, Duration::from_millis(1), None).step(), 5);
    }

    #[test]
    fn calls_are_spaced_by_the_rate_limit_on_the_keys_looked_at() {
        let started = Instant::now();
        let mut unlimited = Pacer::new(1000, Duration::from_millis(1), None);
        unlimited.record(5000, 10, 20);
        assert_eq!(unlimited.next_call_at(started), None);
        let mut limited = Pacer::new(1000, Duration::from_millis(1), Some(2000));
        assert_eq!(limited.next_call_at(started), Some(started));
        limited.record(4000, 10, 20);
        limited.record(1000, 10, 20);
        assert_eq!(
            limited.next_call_at(started),
            Some(started + Duration::from_millis(2500))
        );
    }

    #[test]
    fn a_rate_limit_caps_the_keys_of_one_call() {
        assert_eq!(
            Pacer::new(10_000, Duration::from_millis(1), Some(2000)).max_keys(),
            200
        );
        assert_eq!(
            Pacer::new(100, Duration::from_millis(1), Some(2000)).max_keys(),
            100
        );
        assert_eq!(
            Pacer::new(100, Duration::from_millis(1), Some(5)).max_keys(),
            1
        );
    }
}
