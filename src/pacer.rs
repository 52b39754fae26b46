//! How much work the pass asks of Redis per script call, and how often. The
//! script stops its own SCAN steps when its time budget is spent, by its
//! stopwatch, the way Redis bounds its own active-expire cycle; the
//! pacer learns from each call's reply how long a key takes and what share
//! of a call the scan is (the rest is the writes that follow it), and sizes
//! the next call's steps and scan budget so that the whole call fits in
//! `--max-call-time`.
//!
//! It also spaces the calls. `--max-server-share` caps the share of Redis's
//! time the calls take: a call that held Redis for `t` starts a period of
//! `t / share`, and the next call goes out when it ends (or when the reply
//! arrives, if that is later). Each call and the rest of its period take the
//! share asked, the network's round trip included, so any window of time
//! holds at most the share plus one call. The periods follow each other on
//! a schedule: a call that went out a little late, as the runtime's timer
//! wakes the job up to a millisecond after it was due, does not push the
//! next periods later. A call holds Redis for what the script's own clock says it ran,
//! plus what that clock leaves out: parsing the call, setting up the script,
//! writing the reply ([`Overhead`]). The pass measures that part from
//! Redis's command statistics now and then; until the first measurement, it
//! is the least difference, over the last calls, between the job's view of a
//! call (from sending it to its reply) and the script's clock, which also
//! holds the network's round trip and so errs on the gentle side. Either way
//! the time a call waited behind other clients is not the job's, and a call
//! never counts for more than the job's view of it.
//! `--rate-limit` spaces the calls so the pass looks at no more keys per
//! second than asked. The two combine: a call waits for both. A pause of the
//! whole pass (for lagging replicas) is not made up for after it: the rate
//! counts from the pass's start, less its pauses.
//!
//! The time the pacer charges each call is also what the report shows as
//! the job's share of Redis's time: [`Pacer::held`] adds it up.
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

/// The calls over which the least overhead (the job's view of a call minus
/// the script's clock) is taken: enough to find one that waited behind no
/// other client, few enough to follow a change of network.
const OVERHEAD_CALLS: usize = 64;

/// How late a call may go out and its period still start when the last one
/// ended: the runtime's timer wakes the job up to 1 ms after it was due.
/// Without this the pauses would add up to a smaller share than asked (0.66
/// for 0.5, measured); with it, a window holds at most this much of the
/// share's time more.
const CATCH_UP: Duration = Duration::from_millis(2);

/// Redis's own count of the calls of one command and the time they took
/// (`INFO commandstats`), as the pass samples it for the command that runs
/// its script.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallStats {
    /// `calls=`: calls so far.
    pub calls: u64,
    /// `usec=`: microseconds they took, each call whole.
    pub usec: u64,
}

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

impl Limits {
    /// Whether the calls follow each other at once: no share below 1, no
    /// rate limit.
    pub fn full_speed(&self) -> bool {
        self.max_server_share >= 1.0 && self.rate_limit.is_none()
    }
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
    /// When the pass started, moved later by its pauses: the rate limit
    /// counts from here.
    started: Instant,
    /// Keys the calls so far looked at.
    looked_at: u64,
    /// The earliest the next call may go out under the share.
    share_allows: Instant,
    /// What a call costs Redis beyond the script's own clock.
    overhead: Overhead,
    /// What a declared-keys round trip holds Redis for per key.
    step_cost: StepCost,
    /// What the calls so far held Redis for, as the share charged them.
    held: Duration,
    /// Whether the script's stopwatch stands still (Redis 7.2 and 7.3: see
    /// [`Pacer::record`]).
    stopped_clock: bool,
}

/// What Redis spends on each call beyond what the script's own clock says:
/// measured from its command statistics, or estimated from the job's view.
#[derive(Debug, Clone, Default)]
struct Overhead {
    /// The last calls' job's view minus the script's clock, newest last.
    round_trips: std::collections::VecDeque<Duration>,
    /// The last clean measurement, per call.
    measured: Option<Duration>,
    /// The statistics at the last sample.
    sample: Option<CallStats>,
    /// The job's calls since that sample.
    calls: u64,
    /// Their microseconds by the script's clock.
    micros: u64,
    /// Whether one of them was sent again (NOSCRIPT): its text ran under
    /// another command, so the sample cannot tell the overhead.
    resent: bool,
}

impl Overhead {
    /// Notes a call the script timed at `script` and the job at `round_trip`.
    fn record(&mut self, script: Duration, round_trip: Duration) {
        if self.round_trips.len() == OVERHEAD_CALLS {
            self.round_trips.pop_front();
        }
        self.round_trips
            .push_back(round_trip.saturating_sub(script));
        self.calls += 1;
        self.micros += script.as_micros() as u64;
    }

    /// Takes a new sample of the statistics: when the calls Redis counted
    /// since the last one are exactly the job's own, what they took beyond
    /// the script's clock, per call, is the overhead.
    fn calibrate(&mut self, stats: CallStats) {
        if let Some(last) = self.sample
            && !self.resent
            && self.calls > 0
            && stats.calls.checked_sub(last.calls) == Some(self.calls)
            && let Some(usec) = stats.usec.checked_sub(last.usec)
        {
            self.measured = Some(Duration::from_micros(
                usec.saturating_sub(self.micros) / self.calls,
            ));
        }
        *self = Overhead {
            round_trips: std::mem::take(&mut self.round_trips),
            measured: self.measured,
            sample: Some(stats),
            ..Overhead::default()
        };
    }

    /// The overhead per call: measured, else the least of the last calls.
    fn per_call(&self) -> Duration {
        self.measured
            .or_else(|| self.round_trips.iter().min().copied())
            .unwrap_or_default()
    }
}

/// What a declared-keys step's round trip holds Redis for beyond what the
/// script's own clock says of its calls (the step's SCAN, the checkpoint's
/// save, each call's set-up and reply), per key the SCAN looked at: the
/// job's SCANs and script calls as Redis's command statistics time them
/// (their sum over `SCAN` and the script's command), less the script's
/// clock, measured between two samples during which the calls Redis
/// counted are exactly the job's own.
#[derive(Debug, Clone, Default)]
struct StepCost {
    /// The last clean measurement, in microseconds per key looked at.
    per_key: Option<f64>,
    /// The statistics at the last sample.
    sample: Option<CallStats>,
    /// The job's commands since that sample.
    commands: u64,
    /// The keys their steps looked at.
    looked_at: u64,
    /// Their calls' microseconds by the script's clock.
    micros: u64,
}

impl StepCost {
    /// Takes a new sample of the statistics.
    fn calibrate(&mut self, stats: CallStats) {
        if let Some(last) = self.sample
            && self.looked_at > 0
            && stats.calls.checked_sub(last.calls) == Some(self.commands)
            && let Some(usec) = stats.usec.checked_sub(last.usec)
        {
            let beyond = usec.saturating_sub(self.micros);
            self.per_key = Some(beyond as f64 / self.looked_at as f64);
        }
        *self = StepCost {
            per_key: self.per_key,
            sample: Some(stats),
            ..StepCost::default()
        };
    }
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
            overhead: Overhead::default(),
            step_cost: StepCost::default(),
            held: Duration::ZERO,
            stopped_clock: false,
        }
    }

    /// `self`, whose first call waits until `share_allows` too: the share's
    /// pause after the last call of an earlier pass on the node (a retry).
    pub fn after(mut self, share_allows: Option<Instant>) -> Pacer {
        self.share_allows = self
            .share_allows
            .max(share_allows.unwrap_or(self.share_allows));
        self
    }

    /// The earliest the next call may go out under the share.
    pub fn share_allows(&self) -> Instant {
        self.share_allows
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

    /// The COUNT of the next call's first SCAN step: half its scan budget,
    /// or all of it where the script's stopwatch stands still and a call
    /// makes one step.
    pub fn step(&self) -> usize {
        let steps = if self.stopped_clock {
            1.0
        } else {
            STEPS_PER_CALL
        };
        let step = match self.micros_per_key {
            None => FIRST_STEP,
            Some(cost) => (self.scan_budget().as_micros() as f64 / steps / cost) as usize,
        };
        step.max(MIN_STEP).min(self.limits.max_keys)
    }

    /// Learns from one call, sent at `sent`, whose `reply` arrived at
    /// `received`. A call that looked at keys in no time by the script's
    /// stopwatch tells that it stands still (Redis 7.2 and 7.3: TIME stands
    /// still within a call, and scripts have no `os.clock`): from then on
    /// the pass learns the cost of a key from each call's round trip
    /// instead (the gentle side: it holds the network's too; an average
    /// from Redis's statistics would lag behind growing calls and let them
    /// grow on), and a call makes one step.
    pub fn record(&mut self, reply: &Reply, sent: Instant, received: Instant) {
        if reply.micros == 0 && reply.looked_at > 0 {
            self.stopped_clock = true;
        }
        let round_trip = received.saturating_duration_since(sent);
        let held = self.charge(reply, round_trip);
        let micros = if self.stopped_clock {
            let micros = round_trip.as_micros() as u64;
            ((micros as f64 * self.scan_share) as u64, micros)
        } else {
            (reply.scan_micros, reply.micros)
        };
        self.learn(reply.looked_at, micros, sent, held);
    }

    /// Learns from one declared-keys step's round trip of `commands` SCANs
    /// and script calls, sent at `sent`, whose last reply arrived at
    /// `received`: the calls cleaning the `looked_at` keys of the step's
    /// SCAN, which their script's clock timed at `script` in all, with the
    /// last step's checkpoint and the next step's SCAN, which it does not
    /// see. The round trip holds Redis for `script` plus what Redis's
    /// statistics measure beyond the script's clock per key looked at (see
    /// [`Pacer::calibrate_steps`]), at most the round trip; until the first
    /// measurement, for the whole round trip (the gentle side). The cost
    /// per key is learnt from it, the scan's share being the whole: the
    /// step's SCAN COUNT is then what fits in `--max-call-time`.
    pub fn record_round_trip(
        &mut self,
        looked_at: u64,
        commands: u64,
        script: Duration,
        sent: Instant,
        received: Instant,
    ) {
        let round_trip = received.saturating_duration_since(sent);
        let cost = &mut self.step_cost;
        cost.commands += commands;
        cost.looked_at += looked_at;
        cost.micros += script.as_micros() as u64;
        let held = match cost.per_key {
            Some(per_key) => {
                let beyond = Duration::from_secs_f64(per_key * looked_at as f64 / 1_000_000.0);
                round_trip.min(script + beyond)
            }
            None => round_trip,
        };
        let micros = held.as_micros() as u64;
        self.learn(looked_at, (micros, micros), sent, held);
    }

    /// Learns from one call (or round trip) sent at `sent` that held Redis
    /// for `held` and looked at `looked_at` keys, its scan taking the first
    /// of `micros` and the whole call the second.
    fn learn(&mut self, looked_at: u64, micros: (u64, u64), sent: Instant, held: Duration) {
        self.looked_at += looked_at;
        let share = self.limits.max_server_share;
        self.held += held;
        // The period runs from when the last one ended, or from when this
        // call went out if that is later; but a call that went out at most
        // CATCH_UP late keeps to the schedule, so that the timer's late
        // wake-ups do not add up.
        let late = sent.checked_sub(CATCH_UP).unwrap_or(sent);
        self.share_allows = self.share_allows.max(late) + held.div_f64(share);
        let (scan_micros, micros) = micros;
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

    /// How long a call that took `round_trip` in the job's view held Redis:
    /// the script's clock plus the overhead per call, at most `round_trip`.
    /// Where the script's stopwatch stands still, the overhead is the whole
    /// call: as measured, else the call's own round trip (the least of the
    /// last calls' would be a smaller call's).
    fn charge(&mut self, reply: &Reply, round_trip: Duration) -> Duration {
        let script = Duration::from_micros(reply.micros);
        self.overhead.record(script, round_trip);
        let overhead = if self.stopped_clock {
            self.overhead.measured.unwrap_or(round_trip)
        } else {
            self.overhead.per_call()
        };
        (script + overhead).min(round_trip)
    }

    /// What the calls so far held Redis for, each as `--max-server-share`
    /// charged it: the script's clock plus the overhead per call, at most
    /// the job's view of the call.
    pub fn held(&self) -> Duration {
        self.held
    }

    /// Notes that the pass paused for `pause` (its replicas lagged): the
    /// rate limit does not let the calls after it catch up on the keys the
    /// pause did not look at.
    pub fn paused(&mut self, pause: Duration) {
        self.started += pause;
    }

    /// Notes that the last call was sent again as text after NOSCRIPT.
    pub fn resent(&mut self) {
        self.overhead.resent = true;
    }

    /// Takes a sample of Redis's statistics for the command that runs the
    /// script, to measure what a call costs beyond the script's clock.
    pub fn calibrate(&mut self, stats: CallStats) {
        self.overhead.calibrate(stats);
    }

    /// Notes a script call of a declared-keys pass besides its steps (a
    /// checkpoint saved alone, a renewal), which Redis's statistics count
    /// with the steps' calls.
    pub fn other_call(&mut self) {
        self.step_cost.commands += 1;
    }

    /// Takes a sample of Redis's statistics for a declared-keys pass: the
    /// sum of `SCAN`'s and the script command's, to measure what its round
    /// trips hold Redis for per key looked at.
    pub fn calibrate_steps(&mut self, stats: CallStats) {
        self.step_cost.calibrate(stats);
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
        // A call that looked at nothing teaches nothing, however long it
        // took (SCAN steps over empty buckets).
        pacer.record(&reply(0, 0, 0), now, now);
        pacer.record(&reply(0, 300, 400), now, now);
        assert_eq!(pacer.step(), 269);
        assert_eq!(pacer.scan_budget().as_micros(), 835);
    }

    #[test]
    fn a_stopwatch_that_stands_still_sizes_one_step_from_the_round_trip() {
        let start = Instant::now();
        let mut pacer = Pacer::new(limits(10_000, None, 0.5), start);
        pacer.calibrate(stats(0, 0));
        // Redis 7.2: 100 keys in no time by the script's stopwatch, 400 µs
        // by the job's: 4 µs a key, 3 of them the scan's (its share stays
        // 0.75). One step then fills the whole budget: 250 keys, 1 ms.
        pacer.record(&reply(100, 0, 0), start, start + us(400));
        assert_eq!(pacer.step(), 250);
        // Charged the round trip until Redis measures the calls.
        assert_eq!(pacer.held(), us(400));
        assert_eq!(pacer.next_call_at(), start + us(800));
        // Then what Redis measured, 300 µs a call; the cost of a key is
        // still learnt from the round trip (1100 µs for 250 keys: 3.3 µs
        // scanning, the average moving from 3 to 3.09).
        pacer.calibrate(stats(1, 300));
        let sent = start + us(800);
        pacer.record(&reply(250, 0, 0), sent, sent + us(1100));
        assert_eq!(pacer.held(), us(700));
        assert_eq!(pacer.step(), 242);
        // Once it stood still, the pass does not trust the stopwatch again:
        // the server does not change its clocks.
        pacer.record(&reply(250, 700, 1000), sent, sent + us(1100));
        assert!(pacer.stopped_clock);
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
        // Held 2 ms at a quarter of Redis's time: a period of 8 ms.
        pacer.record(&reply(100, 10, 20), sent, sent + us(2000));
        assert_eq!(pacer.next_call_at(), sent + us(8000));
        // The rate limit, when later, wins.
        let mut both = Pacer::new(limits(1000, Some(10_000), 0.25), sent);
        both.record(&reply(1000, 10, 20), sent, sent + us(2000));
        assert_eq!(both.next_call_at(), sent + Duration::from_millis(100));
    }

    #[test]
    fn a_pass_after_another_waits_out_the_last_calls_pause() {
        let sent = Instant::now();
        let mut first = Pacer::new(limits(1000, None, 0.1), sent);
        first.record(&reply(100, 10, 20), sent, sent + us(2000));
        assert_eq!(first.share_allows(), sent + us(20_000));
        let retry = Pacer::new(limits(1000, None, 0.1), sent + us(5000));
        assert_eq!(retry.clone().after(None).next_call_at(), sent + us(5000));
        let retry = retry.after(Some(first.share_allows()));
        assert_eq!(retry.next_call_at(), sent + us(20_000));
        // A pause already over does not hold the retry back.
        let late = Pacer::new(limits(1000, None, 0.1), sent + us(30_000));
        assert_eq!(
            late.after(Some(first.share_allows())).next_call_at(),
            sent + us(30_000)
        );
    }

    /// What Redis spends on a call beyond the script's own clock, in the
    /// simulations.
    const SET_UP: Duration = Duration::from_micros(50);

    /// One simulated call: how long the script ran, and how long the call
    /// waited behind other clients first (which holds Redis for them, not
    /// for the job).
    struct Call {
        script: Duration,
        waited: Duration,
    }

    /// Runs `calls` on a fake clock, each as soon as the pacer lets it;
    /// returns the spans during which each held Redis.
    fn simulate(pacer: &mut Pacer, start: Instant, calls: &[Call]) -> Vec<(Instant, Instant)> {
        let mut now = start;
        let mut spans = Vec::new();
        for call in calls {
            // The timer wakes the job up late, up to a millisecond, as
            // tokio's does.
            let late = match pacer.next_call_at() > now {
                true => us(call.script.as_micros() as u64 % 1000),
                false => Duration::ZERO,
            };
            let sent = now.max(pacer.next_call_at() + late);
            let from = sent + call.waited;
            let to = from + call.script + SET_UP;
            let micros = call.script.as_micros() as u64;
            pacer.record(&reply(100, micros * 4 / 5, micros), sent, to);
            spans.push((from, to));
            now = to;
        }
        spans
    }

    /// The most time the calls held Redis in any window of `window`
    /// starting at a call's start (the windows in which the most can fall).
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
            // Calls of 0.1 to 5 ms, now and then one of 50 ms; a quarter of
            // them wait up to 3 ms behind other clients first. The cap
            // holds whatever they take.
            let calls: Vec<Call> = (0..3000)
                .map(|i| Call {
                    script: match i % 97 {
                        0 => Duration::from_millis(50),
                        _ => us(rng.u64(100..5000)),
                    },
                    waited: match i % 4 {
                        0 => us(rng.u64(0..3000)),
                        _ => Duration::ZERO,
                    },
                })
                .collect();
            let spans = simulate(&mut pacer, start, &calls);
            let held: Vec<Duration> = spans.iter().map(|&(from, to)| to - from).collect();
            let longest = held.iter().max().copied().unwrap();
            let second = Duration::from_secs(1);
            let busiest = busiest(&spans, second);
            assert!(
                busiest <= second.mul_f64(share) + longest,
                "share {share}: {busiest:?} of a second busy"
            );
            // And the share is used, not just respected: the timer's late
            // wake-ups do not add up, and the waits mostly fit in the
            // periods.
            let total = held.iter().sum::<Duration>().as_secs_f64();
            let wall = (spans.last().unwrap().1 - start).as_secs_f64();
            let used = total / wall;
            assert!(
                used <= share * 1.001 && used >= share * 0.97,
                "share {share}: used {used}"
            );
        }
    }

    #[test]
    fn a_share_of_one_sends_the_next_call_at_once() {
        let start = Instant::now();
        let mut pacer = Pacer::new(limits(10_000, None, 1.0), start);
        let calls: Vec<Call> = (0..100)
            .map(|_| Call {
                script: us(1000),
                waited: Duration::ZERO,
            })
            .collect();
        let spans = simulate(&mut pacer, start, &calls);
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
        let calls: Vec<Call> = (0..500)
            .map(|_| Call {
                script: us(2000) - SET_UP,
                waited: Duration::ZERO,
            })
            .collect();
        let spans = simulate(&mut pacer, start, &calls);
        let wall = spans.last().unwrap().1 - start;
        let keys_per_second = 500.0 * 100.0 / wall.as_secs_f64();
        assert!(keys_per_second <= 20_000.0, "{keys_per_second}");
        let busy = 500.0 * 0.002 / wall.as_secs_f64();
        assert!((busy - 0.25).abs() < 0.005, "{busy}");
    }

    #[test]
    fn the_overhead_is_measured_from_the_statistics_of_the_jobs_own_calls() {
        let mut overhead = Overhead::default();
        // Until a sample is measured, the least round trip beyond the script.
        overhead.record(us(1000), us(1300));
        overhead.record(us(1000), us(1200));
        assert_eq!(overhead.per_call(), us(200));
        // The first sample only sets the start.
        overhead.calibrate(stats(10, 50_000));
        assert_eq!(overhead.per_call(), us(200));
        // Two calls of 1 ms by the script, which Redis counted at 2.1 ms.
        overhead.record(us(1000), us(1300));
        overhead.record(us(1000), us(1300));
        overhead.calibrate(stats(12, 52_100));
        assert_eq!(overhead.per_call(), us(50));
        // Another client's script call among the job's: no measurement.
        overhead.record(us(1000), us(1300));
        overhead.calibrate(stats(14, 60_000));
        assert_eq!(overhead.per_call(), us(50));
        // A call sent again after NOSCRIPT: no measurement either.
        overhead.record(us(1000), us(1300));
        overhead.resent = true;
        overhead.calibrate(stats(15, 70_000));
        assert_eq!(overhead.per_call(), us(50));
        // Statistics reset (CONFIG RESETSTAT): no measurement, a new start.
        overhead.record(us(1000), us(1300));
        overhead.calibrate(stats(1, 2000));
        assert_eq!(overhead.per_call(), us(50));
        overhead.record(us(1000), us(1300));
        overhead.calibrate(stats(2, 3000));
        assert_eq!(overhead.per_call(), Duration::ZERO);
        // No call between two samples: nothing to measure.
        overhead.calibrate(stats(2, 3000));
        assert_eq!(overhead.per_call(), Duration::ZERO);
    }

    #[test]
    fn a_call_sent_again_after_noscript_is_not_measured() {
        let start = Instant::now();
        let mut pacer = Pacer::new(limits(1000, None, 0.5), start);
        pacer.calibrate(stats(0, 0));
        pacer.record(&reply(100, 800, 1000), start, start + us(1500));
        pacer.resent();
        // Redis counted the EVAL, not an EVALSHA: this sample says nothing.
        pacer.calibrate(stats(1, 1100));
        assert_eq!(pacer.overhead.per_call(), us(500));
    }

    #[test]
    fn a_measured_overhead_counts_instead_of_the_round_trip() {
        let start = Instant::now();
        let mut pacer = Pacer::new(limits(1000, None, 0.5), start);
        pacer.calibrate(stats(0, 0));
        pacer.record(&reply(100, 800, 1000), start, start + us(1500));
        // Before a measurement: 1 ms + 0.5 ms, a period of 3 ms.
        assert_eq!(pacer.next_call_at(), start + us(3000));
        assert_eq!(pacer.held(), us(1500));
        pacer.calibrate(stats(1, 1100));
        let sent = start + us(3000);
        pacer.record(&reply(100, 800, 1000), sent, sent + us(1500));
        // After it: 1 ms + 0.1 ms, a period of 2.2 ms.
        assert_eq!(pacer.next_call_at(), sent + us(2200));
        assert_eq!(pacer.held(), us(1500) + us(1100));
    }

    #[test]
    fn the_time_held_adds_up_what_the_share_charged_each_call() {
        let start = Instant::now();
        let mut pacer = Pacer::new(limits(10_000, None, 0.25), start);
        assert_eq!(pacer.held(), Duration::ZERO);
        let calls: Vec<Call> = (0..400)
            .map(|i| Call {
                script: us(500 + i % 7 * 100),
                waited: Duration::ZERO,
            })
            .collect();
        let spans = simulate(&mut pacer, start, &calls);
        let held: Duration = spans.iter().map(|&(from, to)| to - from).sum();
        assert_eq!(pacer.held(), held);
        // Over the pass, that is the share asked: what the report shows.
        let end = spans.last().unwrap().1;
        let share = pacer.held().as_secs_f64() / (end - start).as_secs_f64();
        assert!((share - 0.25).abs() < 0.01, "{share}");
        // A call that waited 5 ms behind other clients is charged its own
        // time, not theirs.
        simulate(
            &mut pacer,
            end,
            &[Call {
                script: us(1000),
                waited: Duration::from_millis(5),
            }],
        );
        assert_eq!(pacer.held(), held + us(1000) + SET_UP);
    }

    #[test]
    fn a_pause_of_the_pass_is_not_made_up_for_under_the_rate_limit() {
        let started = Instant::now();
        let second = Duration::from_secs(1);
        let mut pacer = Pacer::new(limits(1000, Some(1000), 1.0), started);
        // 1000 keys at 1000 keys/s: the next call 1 s after the start.
        pacer.record(&reply(1000, 10, 20), started, started + us(20));
        assert_eq!(pacer.next_call_at(), started + second);
        // The pass paused 5 s for its replicas: the next call still waits
        // its second, counted without the pause, instead of going at once
        // and the ones after it in a burst.
        pacer.paused(5 * second);
        assert_eq!(pacer.next_call_at(), started + 6 * second);
        // The time held is the calls', not the pause's.
        assert_eq!(pacer.held(), us(20));
    }

    #[test]
    fn waiting_behind_other_clients_is_not_the_calls_own_time() {
        let start = Instant::now();
        let mut pacer = Pacer::new(limits(1000, None, 0.5), start);
        // A call the script timed at 1 ms, back 1.1 ms after it was sent:
        // 0.1 ms of network and set-up, counted: a period of 2.2 ms.
        pacer.record(&reply(100, 800, 1000), start, start + us(1100));
        assert_eq!(pacer.next_call_at(), start + us(2200));
        // The next waited 5 ms behind other clients: it counts as its own
        // 1 ms plus the least overhead seen, 0.1 ms, and as its period is
        // over when its reply comes, the next call may go at once.
        let sent = start + us(2200);
        pacer.record(&reply(100, 800, 1000), sent, sent + us(6100));
        assert_eq!(pacer.next_call_at(), sent + us(2200));
        // A reply faster than the script's own clock counts as the job saw
        // it; sent 3.9 ms after its period could begin, it keeps 2 ms of
        // that to the schedule (CATCH_UP).
        let sent = sent + us(6100);
        pacer.record(&reply(100, 800, 3000), sent, sent + us(2000));
        assert_eq!(pacer.next_call_at(), sent - CATCH_UP + us(4000));
    }

    #[test]
    fn the_least_overhead_is_that_of_the_last_calls() {
        let mut overhead = Overhead::default();
        overhead.record(us(1000), us(1000));
        for _ in 1..OVERHEAD_CALLS {
            overhead.record(us(1000), us(3000));
        }
        assert_eq!(overhead.per_call(), Duration::ZERO);
        // A slower network for longer than that is the new floor.
        overhead.record(us(1000), us(3000));
        assert_eq!(overhead.per_call(), us(2000));
    }

    /// Redis's statistics of the job's commands: `calls` calls, `usec` µs.
    fn stats(calls: u64, usec: u64) -> CallStats {
        CallStats { calls, usec }
    }

    #[test]
    fn a_declared_round_trip_counts_whole_until_redis_measures_it() {
        let start = Instant::now();
        let mut pacer = Pacer::new(limits(10_000, None, 0.5), start);
        // Nothing measured yet: the round trip of 2 ms over 1000 keys (its
        // calls 600 µs by the script's clock) is charged whole, 2 µs per
        // key, its scan share moving towards 1.
        pacer.record_round_trip(1000, 3, us(600), start, start + us(2000));
        assert_eq!(pacer.held(), us(2000));
        assert_eq!(pacer.next_call_at(), start + us(4000));
        assert_eq!(pacer.scan_budget(), us(825));
        assert_eq!(pacer.step(), 206); // 825 / 2 / 2.0
        // Redis counted exactly the job's commands since the first sample
        // (three round trips of one command each), 1500 µs for their 3000
        // keys, of which the script's clock saw 900: 0.2 µs per key beyond.
        pacer.calibrate_steps(stats(10, 100));
        let sent = start + us(4000);
        for _ in 0..3 {
            pacer.record_round_trip(1000, 1, us(300), sent, sent + us(2000));
        }
        pacer.calibrate_steps(stats(13, 1600));
        let held = pacer.held();
        pacer.record_round_trip(1000, 3, us(400), sent, sent + us(2000));
        assert_eq!(pacer.held() - held, us(600));
        // The job's own saves and renewals between steps count as its own:
        // 1800 µs for 2000 keys, 800 of them by the script's clock.
        pacer.other_call();
        pacer.record_round_trip(1000, 2, us(400), sent, sent + us(2000));
        pacer.calibrate_steps(stats(19, 3400));
        let held = pacer.held();
        pacer.record_round_trip(1000, 3, us(400), sent, sent + us(2000));
        assert_eq!(pacer.held() - held, us(900));
        // Another client's SCAN or script in a period: no new measure.
        pacer.record_round_trip(1000, 3, us(400), sent, sent + us(2000));
        pacer.calibrate_steps(stats(21, 9000));
        let held = pacer.held();
        pacer.record_round_trip(1000, 3, us(400), sent, sent + us(2000));
        assert_eq!(pacer.held() - held, us(900));
        // Never more than the round trip.
        let held = pacer.held();
        pacer.record_round_trip(10_000, 3, us(900), sent, sent + us(1000));
        assert_eq!(pacer.held() - held, us(1000));
        // The two round trips since the blurred sample: 4600 µs for 11000
        // keys, 1300 by the script's clock, 0.3 µs per key beyond. A sample
        // with no step since the last one measures nothing.
        pacer.calibrate_steps(stats(27, 13_600));
        pacer.calibrate_steps(stats(27, 13_600));
        let held = pacer.held();
        pacer.record_round_trip(1000, 3, us(400), sent, sent + us(2000));
        assert_eq!(pacer.held() - held, us(700));
    }

    #[test]
    fn only_a_pass_without_share_or_rate_limit_runs_at_full_speed() {
        assert!(limits(10_000, None, 1.0).full_speed());
        assert!(!limits(10_000, None, 0.99).full_speed());
        assert!(!limits(10_000, Some(1_000), 1.0).full_speed());
    }
}
