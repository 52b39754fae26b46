//! How much work the pass asks of Redis per script call, and how often. The
//! script stops its own SCAN steps when its time budget is spent, by the
//! server's clock, the way Redis bounds its own active-expire cycle; the
//! pacer learns from each call's reply how long a key takes and what share
//! of a call the scan is (the rest is the writes that follow it), and sizes
//! the next call's steps and scan budget so that the whole call fits in
//! `--max-call-time`.
//!
//! It also spaces the calls. `--max-server-share` caps the share of Redis's
//! time the calls take: after a call that held Redis for `t`, the next one
//! waits `t * (1 / share - 1)`, so every call and the pause after it take
//! the share asked, and any window of time holds at most the share plus one
//! call. A call counts from the moment the job sent it to the moment its
//! reply arrived: that includes what the script's own clock leaves out
//! (parsing the call, setting up the script, writing the reply), and the
//! network's round trip too, so the share Redis sees is at most the cap.
//! `--rate-limit` spaces the calls so the pass looks at no more keys per
//! second than asked. The two combine: a call waits for both.
//!
//! Every method takes the time as an argument, so the tests run it on a
//! clock of their own.

use std::time::{Duration, Instant};

use crate::script::protocol::{MIN_STEP, Reply};

/// SCAN steps one call's budget holds. The script reads its clock after each
/// step and sizes the next to what is left of the budget, so a call fills its
/// budget in about this many steps, each costing a clock reading (measured
/// with bench/callgrind.sh: 2 steps cost 1% fewer instructions than 4).
const STEPS_PER_CALL: f64 = 2.0;

/// The COUNT of the first call's steps, before anything is measured.
const FIRST_STEP: usize = 100;

/// The scan's share of a call before the first measurement.
const FIRST_SCAN_SHARE: f64 = 0.75;

/// Calls per second at least, under a rate limit: it caps the keys one call
/// may look at, so the pass does not go in bursts of seconds.
const MIN_CALLS_PER_SECOND: u32 = 10;

/// Weight of the newest measurement in the moving averages.
const SMOOTHING: f64 = 0.3;

/// The default `--batch-size`: the most keys one call looks at.
pub const DEFAULT_MAX_KEYS: u32 = 10_000;

/// The default `--max-call-time`.
pub const DEFAULT_MAX_CALL_TIME: Duration = Duration::from_millis(1);

/// The default `--max-server-share`: chosen from the impact benchmark
/// (docs/performance.md).
pub const DEFAULT_MAX_SERVER_SHARE: f64 = 0.25;

/// What the pacer keeps the calls within.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// The most keys one call may look at (`--batch-size`).
    pub max_keys: usize,
    /// The longest one call should hold Redis (`--max-call-time`).
    pub max_call_time: Duration,
    /// Keys per second to look at, at most (`--rate-limit`).
    pub rate_limit: Option<u32>,
    /// The share of Redis's time the calls may take, in (0, 1]
    /// (`--max-server-share`).
    pub max_server_share: f64,
}

/// Step sizing and call spacing for one pass.
#[derive(Debug, Clone)]
pub struct Pacer {
    /// What the calls are kept within; `max_keys` already capped by the
    /// rate limit.
    limits: Limits,
    /// Moving average of the scan's cost per key looked at, in microseconds.
    micros_per_key: Option<f64>,
    /// Moving average of the scan's share of a call's time.
    scan_share: f64,
    /// When the pass started: the rate limit counts from here.
    started: Instant,
    /// Keys the calls so far looked at.
    looked_at: u64,
    /// The earliest the next call may go out under the share.
    share_allows: Instant,
}

impl Pacer {
    /// A pacer for a pass starting at `now`.
    pub fn new(limits: Limits, now: Instant) -> Pacer {
        let max_keys = match limits.rate_limit {
            Some(rate) => limits
                .max_keys
                .min((rate / MIN_CALLS_PER_SECOND).max(1) as usize),
            None => limits.max_keys,
        };
        Pacer {
            limits: Limits { max_keys, ..limits },
            micros_per_key: None,
            scan_share: FIRST_SCAN_SHARE,
            started: now,
            looked_at: 0,
            share_allows: now,
        }
    }

    /// The most keys the next call may look at.
    pub fn max_keys(&self) -> usize {
        self.limits.max_keys
    }

    /// How long the next call's scan may run, leaving the rest of the budget
    /// to its writes.
    pub fn scan_budget(&self) -> Duration {
        self.limits.max_call_time.mul_f64(self.scan_share)
    }

    /// The COUNT of the next call's first SCAN step: half its scan budget.
    pub fn step(&self) -> usize {
        let step = match self.micros_per_key {
            None => FIRST_STEP,
            Some(cost) => (self.scan_budget().as_micros() as f64 / STEPS_PER_CALL / cost) as usize,
        };
        step.max(MIN_STEP).min(self.limits.max_keys)
    }

    /// Learns from one call, sent at `sent`, whose `reply` arrived at
    /// `received`.
    pub fn record(&mut self, reply: &Reply, sent: Instant, received: Instant) {
        self.looked_at += reply.looked_at;
        let held = received.saturating_duration_since(sent);
        let share = self.limits.max_server_share;
        self.share_allows = received + held.mul_f64((1.0 - share) / share);
        if reply.looked_at == 0 || reply.micros == 0 {
            return;
        }
        let cost = (reply.scan_micros as f64 / reply.looked_at as f64).max(0.01);
        self.micros_per_key = Some(match self.micros_per_key {
            Some(average) => average + SMOOTHING * (cost - average),
            None => cost,
        });
        let share = (reply.scan_micros as f64 / reply.micros as f64).clamp(0.1, 1.0);
        self.scan_share += SMOOTHING * (share - self.scan_share);
    }

    /// When the next call may go out: once the last call's pause under the
    /// share is over, and once the keys looked at so far are within the rate
    /// limit. At or before the time of the last reply when nothing holds it.
    pub fn next_call_at(&self) -> Instant {
        let by_rate = self.limits.rate_limit.map(|rate| {
            self.started + Duration::from_secs_f64(self.looked_at as f64 / f64::from(rate))
        });
        by_rate.map_or(self.share_allows, |at| at.max(self.share_allows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_keys: usize, rate_limit: Option<u32>, max_server_share: f64) -> Limits {
        Limits {
            max_keys,
            max_call_time: Duration::from_millis(1),
            rate_limit,
            max_server_share,
        }
    }

    fn reply(looked_at: u64, scan_micros: u64, micros: u64) -> Reply {
        Reply {
            looked_at,
            scan_micros,
            micros,
            ..Reply::default()
        }
    }

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn steps_are_half_the_scan_budget() {
        let now = Instant::now();
        let mut pacer = Pacer::new(limits(10_000, None, 1.0), now);
        assert_eq!(pacer.step(), FIRST_STEP);
        assert_eq!(pacer.scan_budget(), us(750));
        // 1000 keys scanned in 500 µs of a 1000 µs call: 0.5 µs per key; the
        // scan's share moves from 0.75 towards 0.5.
        pacer.record(&reply(1000, 500, 1000), now, now + us(1000));
        assert_eq!(pacer.scan_budget(), us(675));
        assert_eq!(pacer.step(), 675);
    }

    #[test]
    fn the_estimates_are_moving_averages_of_the_calls() {
        let now = Instant::now();
        let mut pacer = Pacer::new(limits(100_000, None, 1.0), now);
        // 2 µs per key, scan 80% of the call: share 0.75 + 0.3 * 0.05.
        pacer.record(&reply(200, 400, 500), now, now);
        assert_eq!(pacer.scan_budget(), us(765));
        assert_eq!(pacer.step(), 191); // 765 / 2 / 2.0
        // 0.5 µs per key: the cost moves 30% of the way, to 1.55 µs; a scan
        // of 100% moves the share to 0.765 + 0.3 * 0.235.
        pacer.record(&reply(1000, 500, 500), now, now);
        assert_eq!(pacer.scan_budget().as_micros(), 835);
        assert_eq!(pacer.step(), 269); // 835 / 2 / 1.55
        // A call that looked at nothing teaches nothing.
        pacer.record(&reply(0, 0, 0), now, now);
        assert_eq!(pacer.step(), 269);
    }

    #[test]
    fn steps_stay_within_bounds() {
        let now = Instant::now();
        let mut slow = Pacer::new(limits(10_000, None, 1.0), now);
        slow.record(&reply(10, 100_000, 100_000), now, now);
        assert_eq!(slow.step(), MIN_STEP);
        let mut cheap = Pacer::new(limits(500, None, 1.0), now);
        cheap.record(&reply(500, 1, 2), now, now);
        assert_eq!(cheap.step(), 500);
        assert_eq!(Pacer::new(limits(5, None, 1.0), now).step(), 5);
    }

    #[test]
    fn calls_are_spaced_by_the_rate_limit_on_the_keys_looked_at() {
        let started = Instant::now();
        let mut unlimited = Pacer::new(limits(1000, None, 1.0), started);
        unlimited.record(&reply(5000, 10, 20), started, started + us(20));
        assert_eq!(unlimited.next_call_at(), started + us(20));
        let mut limited = Pacer::new(limits(1000, Some(2000), 1.0), started);
        assert_eq!(limited.next_call_at(), started);
        limited.record(&reply(4000, 10, 20), started, started + us(20));
        limited.record(&reply(1000, 10, 20), started, started + us(40));
        assert_eq!(
            limited.next_call_at(),
            started + Duration::from_millis(2500)
        );
    }

    #[test]
    fn a_rate_limit_caps_the_keys_of_one_call() {
        let now = Instant::now();
        assert_eq!(
            Pacer::new(limits(10_000, Some(2000), 1.0), now).max_keys(),
            200
        );
        assert_eq!(
            Pacer::new(limits(100, Some(2000), 1.0), now).max_keys(),
            100
        );
        assert_eq!(Pacer::new(limits(100, Some(5), 1.0), now).max_keys(), 1);
    }

    #[test]
    fn after_a_call_the_share_pauses_the_rest_of_its_period() {
        let sent = Instant::now();
        let mut pacer = Pacer::new(limits(1000, None, 0.25), sent);
        // Held 2 ms at a quarter of Redis's time: 6 ms of pause.
        pacer.record(&reply(100, 10, 20), sent, sent + us(2000));
        assert_eq!(pacer.next_call_at(), sent + us(8000));
        // The rate limit, when later, wins.
        let mut both = Pacer::new(limits(1000, Some(10_000), 0.25), sent);
        both.record(&reply(1000, 10, 20), sent, sent + us(2000));
        assert_eq!(both.next_call_at(), sent + Duration::from_millis(100));
    }

    /// Runs a pass of `calls` calls on a fake clock, each as soon as the
    /// pacer lets it, holding Redis for `held(i)`; returns each call's
    /// (start, end).
    fn simulate(
        pacer: &mut Pacer,
        start: Instant,
        calls: usize,
        held: impl Fn(usize) -> Duration,
    ) -> Vec<(Instant, Instant)> {
        let mut now = start;
        let mut spans = Vec::new();
        for i in 0..calls {
            now = now.max(pacer.next_call_at());
            let end = now + held(i);
            pacer.record(&reply(100, 500, 800), now, end);
            spans.push((now, end));
            now = end;
        }
        spans
    }

    /// The most time the calls spent in any window of `window` starting at
    /// a call's start (the windows in which the most time can fall).
    fn busiest(spans: &[(Instant, Instant)], window: Duration) -> Duration {
        spans
            .iter()
            .map(|&(from, _)| {
                let to = from + window;
                spans
                    .iter()
                    .filter(|&&(start, _)| start < to)
                    .map(|&(start, end)| end.min(to).saturating_duration_since(start.max(from)))
                    .sum()
            })
            .max()
            .unwrap_or_default()
    }

    #[test]
    fn no_second_holds_more_than_the_share_plus_one_call() {
        let mut rng = fastrand::Rng::with_seed(0x5a4e);
        for share in [0.01, 0.1, 0.25, 0.5, 0.9] {
            let start = Instant::now();
            let mut pacer = Pacer::new(limits(10_000, None, share), start);
            // Calls of 0.1 to 5 ms, and now and then one of 50 ms (a
            // stall): the cap holds whatever they take.
            let held: Vec<Duration> = (0..3000)
                .map(|i| match i % 97 {
                    0 => Duration::from_millis(50),
                    _ => us(rng.u64(100..5000)),
                })
                .collect();
            let spans = simulate(&mut pacer, start, held.len(), |i| held[i]);
            let longest = held.iter().max().copied().unwrap();
            let second = Duration::from_secs(1);
            let busiest = busiest(&spans, second);
            assert!(
                busiest <= second.mul_f64(share) + longest,
                "share {share}: {busiest:?} of a second busy"
            );
            // And the share is used, not just respected: over the whole
            // pass the calls take it within a percent.
            let total: Duration = held.iter().sum();
            let wall = spans.last().unwrap().1 - start;
            let used = total.as_secs_f64() / wall.as_secs_f64();
            assert!(
                (used - share).abs() < 0.01 * share.max(0.1),
                "share {share}: used {used}"
            );
        }
    }

    #[test]
    fn a_share_of_one_sends_the_next_call_at_once() {
        let start = Instant::now();
        let mut pacer = Pacer::new(limits(10_000, None, 1.0), start);
        let spans = simulate(&mut pacer, start, 100, |_| us(1000));
        for pair in spans.windows(2) {
            assert_eq!(pair[0].1, pair[1].0);
        }
    }

    #[test]
    fn share_and_rate_limit_combine_each_at_most_its_own() {
        let start = Instant::now();
        // 100 keys per call at 20,000 keys/s: a call every 5 ms by the rate;
        // 2 ms calls at a share of 0.25: one every 8 ms by the share.
        let mut pacer = Pacer::new(limits(100, Some(20_000), 0.25), start);
        let spans = simulate(&mut pacer, start, 500, |_| us(2000));
        let wall = spans.last().unwrap().1 - start;
        let keys_per_second = 500.0 * 100.0 / wall.as_secs_f64();
        assert!(keys_per_second <= 20_000.0, "{keys_per_second}");
        let busy = 500.0 * 0.002 / wall.as_secs_f64();
        assert!((busy - 0.25).abs() < 0.005, "{busy}");
    }
}
