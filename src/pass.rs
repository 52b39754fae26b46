//! One pass over one Redis node: SCAN the keyspace, match each key name
//! against the rules, and send the candidates in batches to the clean script,
//! keeping the next command queued in Redis while Redis runs one. The pass
//! takes its stop signal as a parameter, so a graceful stop is testable.
//!
//! Memory stays flat in the size of the keyspace: the pass holds at most one
//! SCAN reply, a few batches waiting, and the two commands in flight.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::OptionFuture;
use futures_util::stream::FuturesOrdered;
use redis::aio::MultiplexedConnection;
use redis::{ErrorKind, ServerErrorKind};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::batch::{self, Batch, Reply};
use crate::error::Error;
use crate::pacer::Pacer;
use crate::report::{Counts, Stop};
use crate::rules::Rules;
use crate::scripts::{Invoke, Script};

/// Commands (SCANs and script calls) the pass keeps sent to Redis at once:
/// one running, one queued behind it, so Redis never waits for the job
/// between two commands, yet another client waits behind at most two.
const MAX_IN_FLIGHT: usize = 2;

/// The least time between sending two commands when one is already in
/// flight: long enough for Redis to have read the first before the second
/// arrives, so each runs in its own event-loop turn and other clients are
/// served between them; well under the few hundred microseconds a command
/// takes at the default `--max-call-time`, so Redis does not run dry.
const STAGGER: Duration = Duration::from_micros(150);

/// The resolution of tokio's timer: shorter waits are done by yielding.
const TIMER_RESOLUTION: Duration = Duration::from_millis(1);

/// Batches cut but not yet sent before the pass stops scanning ahead.
const MAX_READY: usize = 2;

/// Settings of one pass.
#[derive(Debug, Clone)]
pub struct Options {
    /// The most keys one SCAN or one script call carries.
    pub batch_size: usize,
    /// How long one script call should run at most; batches are sized to it.
    pub max_call_time: Duration,
    /// Scan at most this many keys per second.
    pub rate_limit: Option<u32>,
    /// Stop cleanly once this much time has passed.
    pub max_runtime: Option<Duration>,
    /// How often to log progress.
    pub progress_interval: Duration,
}

/// How a pass ended.
#[derive(Debug)]
pub struct Outcome {
    /// What it did, up to where it stopped.
    pub counts: Counts,
    /// Whether it reached the end of the keyspace.
    pub complete: bool,
    /// Why it stopped early, if it was asked to.
    pub stopped_by: Option<Stop>,
    /// Why it failed, if it did.
    pub error: Option<Error>,
}

/// Runs one pass with `script` (already loaded) over the node behind `conn`.
/// When `stop` turns `Some`, the calls in flight are finished and the pass
/// returns.
pub async fn run(
    conn: MultiplexedConnection,
    rules: &Rules,
    script: &Script,
    options: &Options,
    stop: watch::Receiver<Option<Stop>>,
) -> Outcome {
    let mut pass = Pass {
        conn,
        rules,
        script,
        options,
        pacer: Pacer::new(
            options.batch_size,
            options.max_call_time,
            options.rate_limit,
        ),
        rules_arg: batch::rules_arg(rules).into(),
        scan_match: rules.scan_match(),
        counts: Counts::new(rules),
        started: Instant::now(),
        last_progress: Instant::now(),
        stop,
    };
    let result = pass.drive().await;
    let counts = pass.counts;
    match result {
        Ok(stopped_by) => Outcome {
            counts,
            complete: stopped_by.is_none(),
            stopped_by,
            error: None,
        },
        Err(error) => Outcome {
            counts,
            complete: false,
            stopped_by: None,
            error: Some(error),
        },
    }
}

struct Pass<'a> {
    conn: MultiplexedConnection,
    rules: &'a Rules,
    script: &'a Script,
    options: &'a Options,
    pacer: Pacer,
    rules_arg: Rc<str>,
    scan_match: Option<Vec<u8>>,
    counts: Counts,
    started: Instant,
    last_progress: Instant,
    stop: watch::Receiver<Option<Stop>>,
}

/// One SCAN step: the next cursor (0 at the end) and the keys it returned.
type ScanFuture = dyn Future<Output = Result<(u64, Vec<Vec<u8>>), Error>>;

/// One script call: its batch back, with the reply and how many times it
/// had to be resent.
type CallFuture<'a> = dyn Future<Output = (Batch, Result<(Reply, u64), Error>)> + 'a;

/// The pass's work between Redis and the job: where the SCAN is, the
/// commands in flight, and the batches waiting to be sent.
#[derive(Default)]
struct Work<'a> {
    /// Where the next SCAN starts; `None` once the keyspace is done.
    cursor: Option<u64>,
    /// The SCAN in flight, if any.
    scanning: Option<Pin<Box<ScanFuture>>>,
    /// The COUNT of the last SCAN sent.
    scan_count: usize,
    /// The script calls in flight, oldest first.
    calls: FuturesOrdered<Pin<Box<CallFuture<'a>>>>,
    /// The batch candidates are being added to.
    building: Batch,
    /// Batches cut and waiting to be sent.
    ready: VecDeque<Batch>,
    /// When the last command went out.
    last_sent: Option<Instant>,
}

impl Work<'_> {
    /// What [`next`] decides on.
    fn flow(&self) -> Flow {
        Flow {
            calls: self.calls.len(),
            scanning: self.scanning.is_some(),
            cursor: self.cursor,
            ready: self.ready.len(),
            last_sent: self.last_sent,
        }
    }

    /// Whether nothing is in flight and nothing is left to send.
    fn idle(&self) -> bool {
        self.flow().in_flight() == 0 && self.ready.is_empty() && self.cursor.is_none()
    }

    /// Moves the batch being built, if not empty, to the ready ones.
    fn cut(&mut self) {
        if !self.building.is_empty() {
            self.ready.push_back(std::mem::take(&mut self.building));
        }
    }

    /// Drops everything not yet sent, keeping the calls in flight: they
    /// finish, nothing more goes out.
    fn abandon(&mut self) {
        self.cursor = None;
        self.scanning = None;
        self.ready.clear();
        self.building = Batch::default();
    }
}

impl<'a> Pass<'a> {
    /// The pass loop, event-driven over one multiplexed connection. It keeps
    /// two commands in flight, sent one at a time: as one answers, the next
    /// goes out, a SCAN when few batches wait and none is in flight, else
    /// the next batch's script call. Redis thus always has the next command
    /// queued while it runs one, and runs each in its own event-loop turn.
    async fn drive(&mut self) -> Result<Option<Stop>, Error> {
        let deadline = self.options.max_runtime.map(|max| self.started + max);
        let mut stop_signal = self.stop.clone();
        let mut work = Work {
            cursor: Some(0),
            ..Work::default()
        };
        let mut stopped = None;
        loop {
            if stopped.is_none() {
                stopped = self.stop_requested();
                if stopped.is_some() {
                    work.abandon();
                }
            }
            let resume_at = self.send(&mut work);
            if work.idle() {
                return Ok(stopped);
            }
            tokio::select! {
                // A call's reply before a SCAN's: it frees a slot, so the next
                // command goes out before the job works through a SCAN reply.
                biased;
                Some((batch, result)) = work.calls.next(), if !work.calls.is_empty() => {
                    let (reply, resent) = result?;
                    batch.tally(&reply, self.rules, &mut self.counts)?;
                    self.counts.script_reloads += resent;
                    self.pacer.record(batch.len(), reply.micros);
                }
                Some(result) = OptionFuture::from(work.scanning.as_mut()), if work.scanning.is_some() => {
                    work.scanning = None;
                    let (next, keys) = result?;
                    work.cursor = (next != 0).then_some(next);
                    let scanned = keys.len();
                    self.counts.keys_scanned += scanned as u64;
                    let mut matched = 0;
                    for key in keys {
                        matched += usize::from(self.add(key, &mut work));
                    }
                    if work.cursor.is_none() {
                        work.cut();
                    }
                    self.pacer.record_scan(work.scan_count, matched);
                }
                () = pause_until(resume_at), if resume_at.is_some() => {}
                // Wake up for a stop even while waiting on a rate-limited SCAN.
                Ok(()) = stop_signal.changed(), if stopped.is_none() => {}
                () = sleep_until(deadline), if stopped.is_none() && deadline.is_some() => {}
            }
            self.log_progress();
        }
    }

    /// Sends what [`next`] says until it says to wait. Returns when to look
    /// again, if it is waiting for a time rather than for a reply.
    fn send(&self, work: &mut Work<'a>) -> Option<Instant> {
        loop {
            let scan_at = self.pacer.next_scan_at(self.started);
            match next(&work.flow(), scan_at, Instant::now()) {
                Next::Scan(cursor) => {
                    work.scan_count = self.pacer.scan_count();
                    work.scanning = Some(Box::pin(scan(
                        self.conn.clone(),
                        cursor,
                        work.scan_count,
                        self.scan_match.clone(),
                    )));
                }
                Next::Call => {
                    let batch = work.ready.pop_front().expect("a batch is ready");
                    let rules_arg = Rc::clone(&self.rules_arg);
                    work.calls.push_back(Box::pin(call(
                        self.conn.clone(),
                        self.script,
                        batch,
                        rules_arg,
                    )));
                }
                Next::WaitUntil(at) => return Some(at),
                Next::WaitForReply => return None,
            }
            work.last_sent = Some(Instant::now());
        }
    }

    /// Files `key` into the batch being built when some rule's pattern
    /// matches it, cutting a new batch when that one is full. Returns
    /// whether it matched.
    fn add(&self, key: Vec<u8>, work: &mut Work) -> bool {
        let set = self.rules.candidates(&key);
        if set == 0 {
            return false;
        }
        if let Err(key) = work.building.push(key, set) {
            work.cut();
            work.building
                .push(key, set)
                .expect("an empty batch takes any key");
        }
        if work.building.len() >= self.pacer.batch_size() {
            work.cut();
        }
        true
    }

    fn stop_requested(&self) -> Option<Stop> {
        if let Some(stop) = *self.stop.borrow() {
            return Some(stop);
        }
        let max = self.options.max_runtime?;
        (self.started.elapsed() >= max).then_some(Stop::MaxRuntime)
    }

    fn log_progress(&mut self) {
        if self.last_progress.elapsed() < self.options.progress_interval {
            return;
        }
        self.last_progress = Instant::now();
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-3);
        info!(
            keys_scanned = self.counts.keys_scanned,
            keys_matched = self.counts.keys_matched,
            keys_acted = self.counts.acted(),
            keys_per_second = (self.counts.keys_scanned as f64 / elapsed).round(),
            "progress"
        );
    }
}

/// The state of a pass that decides what it sends next.
#[derive(Debug, Clone, Copy)]
struct Flow {
    /// Script calls in flight.
    calls: usize,
    /// Whether a SCAN is in flight.
    scanning: bool,
    /// Where the next SCAN starts; `None` once the keyspace is done.
    cursor: Option<u64>,
    /// Batches cut and waiting to be sent.
    ready: usize,
    /// When the last command went out.
    last_sent: Option<Instant>,
}

impl Flow {
    fn in_flight(&self) -> usize {
        self.calls + usize::from(self.scanning)
    }
}

/// What the pass does next.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Send a SCAN from this cursor.
    Scan(u64),
    /// Send the next ready batch's script call.
    Call,
    /// Send nothing before this time.
    WaitUntil(Instant),
    /// Send nothing before a reply arrives.
    WaitForReply,
}

/// Decides what to send next: nothing while [`MAX_IN_FLIGHT`] commands are
/// in flight or the last went out less than [`STAGGER`] ago; else a SCAN if
/// none is in flight, fewer than [`MAX_READY`] batches wait and the rate
/// limit allows one (`scan_at`, if any, is the earliest time it does); else
/// a ready batch's call.
fn next(flow: &Flow, scan_at: Option<Instant>, now: Instant) -> Next {
    let in_flight = flow.in_flight();
    if in_flight >= MAX_IN_FLIGHT {
        return Next::WaitForReply;
    }
    if in_flight > 0
        && let Some(at) = flow.last_sent.map(|sent| sent + STAGGER)
        && at > now
    {
        return Next::WaitUntil(at);
    }
    let scan = match flow.cursor {
        Some(cursor) if !flow.scanning && flow.ready < MAX_READY => Some(cursor),
        _ => None,
    };
    let scan_wait = scan_at.filter(|&at| at > now);
    match (scan, scan_wait) {
        (Some(cursor), None) => Next::Scan(cursor),
        _ if flow.ready > 0 => Next::Call,
        (Some(_), Some(at)) => Next::WaitUntil(at),
        _ => Next::WaitForReply,
    }
}

/// One SCAN step: the next cursor (0 at the end) and the keys it returned.
async fn scan(
    mut conn: MultiplexedConnection,
    cursor: u64,
    count: usize,
    pattern: Option<Vec<u8>>,
) -> Result<(u64, Vec<Vec<u8>>), Error> {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor);
    if let Some(pattern) = pattern {
        cmd.arg("MATCH").arg(pattern);
    }
    cmd.arg("COUNT").arg(count);
    cmd.query_async(&mut conn)
        .await
        .map_err(|err| Error::from_redis("SCAN failed", &err))
}

/// Runs one batch's script call by SHA. On NOSCRIPT (cache flushed, restart,
/// failover) it resends the batch with the script's text, which loads and
/// runs it in one step: redis-rs's own fallback cannot help here, since the
/// call is pipelined with a SCAN. Gives the batch back with the reply and how
/// many times it had to be sent again (0 or 1).
async fn call(
    mut conn: MultiplexedConnection,
    script: &Script,
    batch: Batch,
    rules_arg: Rc<str>,
) -> (Batch, Result<(Reply, u64), Error>) {
    let by_sha = batch.command(script, Invoke::Sha, &rules_arg);
    let result = match by_sha.query_async(&mut conn).await {
        Ok(reply) => Ok((reply_of(reply), 0)),
        Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            warn!(
                sha = %script.sha,
                "the script is no longer in Redis's cache (flushed, restarted \
                 or failed over); sending it again"
            );
            let by_text = batch.command(script, Invoke::Text, &rules_arg);
            by_text
                .query_async(&mut conn)
                .await
                .map(|reply| (reply_of(reply), 1))
                .map_err(|err| script_error(script, &err))
        }
        Err(err) => Err(script_error(script, &err)),
    };
    (batch, result)
}

/// The script's reply array as a [`Reply`].
fn reply_of((outcomes, micros, gone): (Vec<u8>, u64, Vec<u64>)) -> Reply {
    Reply {
        outcomes,
        micros,
        gone,
    }
}

/// Waits until `at`, the end of a stagger or of a rate-limited SCAN's wait:
/// closer than the timer's 1 ms resolution by yielding to the runtime (which
/// meanwhile lets the connection's task write the last command), further by
/// sleeping.
async fn pause_until(at: Option<Instant>) {
    match at {
        Some(at) if at.saturating_duration_since(Instant::now()) < TIMER_RESOLUTION => {
            tokio::task::yield_now().await;
        }
        at => sleep_until(at).await,
    }
}

/// Sleeps until `deadline`; never returns without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// A failed script call: connection and permission problems keep their kind,
/// any other error reply is the script's.
fn script_error(script: &Script, err: &redis::RedisError) -> Error {
    let context = format!("script {} {} failed", script.name, script.version);
    match Error::from_redis(&context, err) {
        Error::Redis(message) => Error::Script(message),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(
        calls: usize,
        scanning: bool,
        ready: usize,
        sent_ago: Option<Duration>,
    ) -> (Flow, Instant) {
        let now = Instant::now() + Duration::from_secs(1);
        let flow = Flow {
            calls,
            scanning,
            cursor: Some(7),
            ready,
            last_sent: sent_ago.map(|ago| now - ago),
        };
        (flow, now)
    }

    const LONG_AGO: Option<Duration> = Some(Duration::from_millis(1));

    #[test]
    fn an_idle_pass_scans_first() {
        let (flow, now) = state(0, false, 0, None);
        assert_eq!(next(&flow, None, now), Next::Scan(7));
    }

    #[test]
    fn a_second_command_waits_for_the_stagger() {
        let (flow, now) = state(0, true, 1, Some(Duration::from_micros(10)));
        assert_eq!(
            next(&flow, None, now),
            Next::WaitUntil(now - Duration::from_micros(10) + STAGGER)
        );
        let (flow, now) = state(0, true, 1, LONG_AGO);
        assert_eq!(next(&flow, None, now), Next::Call);
    }

    #[test]
    fn no_more_than_two_commands_are_in_flight() {
        let (flow, now) = state(1, true, 2, LONG_AGO);
        assert_eq!(next(&flow, None, now), Next::WaitForReply);
        let (flow, now) = state(2, false, 2, LONG_AGO);
        assert_eq!(next(&flow, None, now), Next::WaitForReply);
    }

    #[test]
    fn scans_while_few_batches_wait_and_calls_otherwise() {
        let (flow, now) = state(1, false, MAX_READY - 1, LONG_AGO);
        assert_eq!(next(&flow, None, now), Next::Scan(7));
        let (flow, now) = state(1, false, MAX_READY, LONG_AGO);
        assert_eq!(next(&flow, None, now), Next::Call);
    }

    #[test]
    fn at_the_end_of_the_keyspace_only_calls_go_out() {
        let (mut flow, now) = state(0, false, 1, None);
        flow.cursor = None;
        assert_eq!(next(&flow, None, now), Next::Call);
        flow.ready = 0;
        assert_eq!(next(&flow, None, now), Next::WaitForReply);
    }

    #[test]
    fn the_rate_limit_holds_scans_back_but_not_calls() {
        let (flow, now) = state(0, false, 1, LONG_AGO);
        let later = now + Duration::from_millis(5);
        assert_eq!(next(&flow, Some(later), now), Next::Call);
        let (flow, now) = state(0, false, 0, LONG_AGO);
        assert_eq!(next(&flow, Some(later), now), Next::WaitUntil(later));
        assert_eq!(next(&flow, Some(now), now), Next::Scan(7));
    }
}
