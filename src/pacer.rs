//! How much work the pass asks of Redis at a time, and how fast. Each script
//! call reports how long it ran; the pacer keeps a moving average of the cost
//! per key and sizes the next batches so that one call stays within the time
//! budget (`--max-call-time`), the way Redis bounds its own active-expire
//! cycle. With `--rate-limit` it also spaces the SCANs so the pass scans no
//! more keys per second than asked.

use std::time::{Duration, Instant};

/// The smallest batch the pacer will cut, however slow keys are: below this,
/// per-call overhead dominates.
const MIN_BATCH: usize = 16;

/// The batch size before the first measurement.
const FIRST_BATCH: usize = 100;

/// Batches' worth of candidates one SCAN asks for. Measured (bench/): at
/// exactly one, the batches waiting ran out about 250 times per 1M keys and
/// Redis waited for the job; at 1.25, about 40 times.
const SCAN_AHEAD: f64 = 1.25;

/// Weight of the newest measurement in the moving average.
const SMOOTHING: f64 = 0.3;

/// Share of the budget the script itself may use; the rest is left for what
/// Redis does around it (parsing the call, building KEYS, the reply).
const HEADROOM: f64 = 0.75;

/// Batch sizing and SCAN spacing for one pass.
#[derive(Debug, Clone)]
pub struct Pacer {
    /// Most keys one call or one SCAN may carry (`--batch-size`).
    max_batch: usize,
    /// Longest one script call should run.
    budget: Duration,
    /// Keys per second to scan at most (`--rate-limit`).
    rate_limit: Option<u32>,
    /// Moving average of the script's cost per key, in microseconds.
    micros_per_key: Option<f64>,
    /// Keys per call for the next batches.
    target: usize,
    /// Moving average of the candidates per key a SCAN looks at (its
    /// COUNT): the share of keys some rule's pattern matches.
    match_ratio: f64,
    /// Keys the SCANs sent so far asked Redis to look at (their COUNTs).
    looked_at: u64,
}

impl Pacer {
    /// A pacer for batches of at most `max_batch` keys and calls of at most
    /// `budget`, scanning at most `rate_limit` keys per second.
    pub fn new(max_batch: usize, budget: Duration, rate_limit: Option<u32>) -> Pacer {
        Pacer {
            max_batch,
            budget,
            rate_limit,
            micros_per_key: None,
            target: FIRST_BATCH.min(max_batch),
            match_ratio: 1.0,
            looked_at: 0,
        }
    }

    /// How many keys the next batch should carry.
    pub fn batch_size(&self) -> usize {
        self.target
    }

    /// The next SCAN's COUNT: enough keys for a little more than one batch
    /// of candidates, so that batches pile up a little ahead of the calls
    /// and Redis never waits for the job between two, yet no SCAN holds
    /// Redis much longer than a call.
    pub fn scan_count(&self) -> usize {
        let count = SCAN_AHEAD * self.target as f64 / self.match_ratio.max(0.1);
        (count as usize).clamp(self.target, self.max_batch)
    }

    /// Learns from one SCAN with COUNT `count` that returned `matched`
    /// candidates. Redis looks at about COUNT keys whether or not a MATCH
    /// filters them, so the share is taken of COUNT, not of what came back.
    pub fn record_scan(&mut self, count: usize, matched: usize) {
        self.looked_at += count as u64;
        if count > 0 {
            let ratio = (matched as f64 / count as f64).min(1.0);
            self.match_ratio = SMOOTHING * ratio + (1.0 - SMOOTHING) * self.match_ratio;
        }
    }

    /// Learns from one call that handled `keys` keys in `micros` microseconds
    /// of script time.
    pub fn record(&mut self, keys: usize, micros: u64) {
        if keys == 0 {
            return;
        }
        let cost = (micros as f64 / keys as f64).max(0.01);
        let average = match self.micros_per_key {
            Some(average) => SMOOTHING * cost + (1.0 - SMOOTHING) * average,
            None => cost,
        };
        self.micros_per_key = Some(average);
        let fits = HEADROOM * self.budget.as_micros() as f64 / average;
        self.target = (fits as usize).clamp(MIN_BATCH.min(self.max_batch), self.max_batch);
    }

    /// When the next SCAN may go out, for a pass that started at `started`:
    /// the keys the SCANs so far looked at, at the rate limit. `None` when
    /// there is no rate limit.
    pub fn next_scan_at(&self, started: Instant) -> Option<Instant> {
        let rate = self.rate_limit?;
        Some(started + Duration::from_secs_f64(self.looked_at as f64 / f64::from(rate)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_shrink_to_fit_the_budget_and_grow_back() {
        let mut pacer = Pacer::new(1000, Duration::from_millis(1), None);
        assert_eq!(pacer.batch_size(), 100);
        // 100 keys in 200 µs: 2 µs per key, 750 µs of budget fit 375 keys.
        pacer.record(100, 200);
        assert_eq!(pacer.batch_size(), 375);
        // Keys become very slow: the batch shrinks, but not below the floor.
        for _ in 0..20 {
            pacer.record(375, 375_000);
        }
        assert_eq!(pacer.batch_size(), MIN_BATCH);
        // And very cheap: it grows back, up to --batch-size.
        for _ in 0..50 {
            pacer.record(16, 1);
        }
        assert_eq!(pacer.batch_size(), 1000);
    }

    #[test]
    fn the_batch_never_exceeds_batch_size() {
        let mut pacer = Pacer::new(10, Duration::from_millis(5), None);
        assert_eq!(pacer.batch_size(), 10);
        pacer.record(10, 1);
        assert_eq!(pacer.batch_size(), 10);
        let mut tiny = Pacer::new(4, Duration::from_micros(1), None);
        tiny.record(4, 1000);
        assert_eq!(tiny.batch_size(), 4);
    }

    #[test]
    fn scans_fetch_a_little_more_than_one_batch_of_candidates() {
        let mut pacer = Pacer::new(1000, Duration::from_millis(1), None);
        assert_eq!(pacer.scan_count(), 125);
        for _ in 0..30 {
            pacer.record_scan(1000, 250);
        }
        assert!(
            (495..=500).contains(&pacer.scan_count()),
            "{}",
            pacer.scan_count()
        );
        for _ in 0..30 {
            pacer.record_scan(1000, 0);
        }
        assert_eq!(pacer.scan_count(), 1000);
    }

    #[test]
    fn scans_are_spaced_by_the_rate_limit_on_the_keys_looked_at() {
        let started = Instant::now();
        let mut unlimited = Pacer::new(1000, Duration::from_millis(1), None);
        unlimited.record_scan(5000, 10);
        assert_eq!(unlimited.next_scan_at(started), None);
        let mut limited = Pacer::new(1000, Duration::from_millis(1), Some(2000));
        assert_eq!(limited.next_scan_at(started), Some(started));
        // A MATCH let only 10 of the 5000 keys through: the wait counts all.
        limited.record_scan(4000, 10);
        limited.record_scan(1000, 0);
        assert_eq!(
            limited.next_scan_at(started),
            Some(started + Duration::from_millis(2500))
        );
    }

    #[test]
    fn the_match_ratio_is_of_the_keys_looked_at() {
        // A MATCH returned 100 keys of 1000 looked at, all candidates: the
        // next SCANs must look at ten times a batch, not one batch.
        let mut pacer = Pacer::new(10_000, Duration::from_millis(1), None);
        for _ in 0..30 {
            pacer.record_scan(1000, 100);
        }
        assert!(
            (1240..=1250).contains(&pacer.scan_count()),
            "{}",
            pacer.scan_count()
        );
    }
}
