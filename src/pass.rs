//! One pass over one Redis node: call the clean script from cursor 0 until
//! SCAN's cursor comes back to 0. Each call runs SCAN steps inside Redis for
//! as long as its time budget allows and cleans the keys they return, so key
//! names never cross the network; the job only carries the cursor from one
//! call to the next, paced by what the calls report. The pass takes its stop
//! signal as a parameter, so a graceful stop is testable.
//!
//! Memory stays flat in the size of the keyspace: the pass holds one call's
//! arguments and reply.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio::sync::watch;
use tracing::{Level, debug, enabled, info};

use crate::error::Error;
use crate::exit::{Exit, Stop};
use crate::pacer::{CallStats, Limits, Pacer};
use crate::rules::Rules;
use crate::script::protocol::{Batch, Counts};
use crate::script::{Invoke, Layout, Mode, Script};
use crate::topology::field;

/// The default `--progress-interval`.
pub const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(10);

/// Calls between two samples of Redis's command statistics, from which the
/// pacer measures what a call costs beyond the script's own clock: often
/// enough to follow the server, seldom enough to cost nothing (one `INFO
/// commandstats` per 100 calls of about a millisecond).
const CALLS_PER_SAMPLE: u64 = 100;

/// The longest time between two samples, whatever the pace: a sample of a
/// writing pass on a cluster node also checks that the node is still a
/// primary.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Settings of one pass.
#[derive(Debug, Clone)]
pub struct Options {
    /// What the calls are kept within: keys, time, rate, share of Redis.
    pub limits: Limits,
    /// Stop cleanly once this much time has passed.
    pub max_runtime: Option<Duration>,
    /// How often to log progress.
    pub progress_interval: Duration,
}

/// How a pass, a node's work or a run ended: one of three, so a report
/// cannot say both "complete" and "failed".
#[derive(Debug)]
pub enum End {
    /// The pass reached the end of the keyspace.
    Complete,
    /// The pass stopped early, as it was asked to.
    Stopped(Stop),
    /// The pass failed.
    Failed(Error),
}

impl End {
    /// The exit code of a run that ended so.
    pub fn exit(&self) -> Exit {
        match self {
            End::Complete => Exit::Success,
            End::Stopped(stop) => stop.exit(),
            End::Failed(err) => err.exit_code(),
        }
    }

    /// How much this ending weighs when a run's nodes ended differently:
    /// a failure over a stop, a signal over `--max-runtime`, a stop over
    /// completion.
    pub fn weight(&self) -> u8 {
        match self {
            End::Complete => 0,
            End::Stopped(Stop::MaxRuntime) => 1,
            End::Stopped(Stop::Sigterm | Stop::Sigint) => 2,
            End::Failed(_) => 3,
        }
    }
}

/// Runs one pass with `script` (already loaded) over the node behind `conn`,
/// adding what it does to `counts`. `--max-runtime` counts from
/// `run_started`. When `stop` turns `Some`, the call in flight is finished
/// and the pass returns.
pub async fn run(
    conn: MultiplexedConnection,
    rules: &Rules,
    script: &Script,
    options: &Options,
    run_started: Instant,
    stop: watch::Receiver<Option<Stop>>,
    counts: &mut Counts,
) -> End {
    let now = Instant::now();
    let mut pass = Pass {
        conn,
        rules,
        script,
        options,
        pacer: Pacer::new(options.limits, now),
        counts,
        run_started,
        started: now,
        last_progress: now,
        last_sample: None,
        stop,
    };
    match pass.drive().await {
        Ok(None) => End::Complete,
        Ok(Some(stop)) => End::Stopped(stop),
        Err(err) => End::Failed(err),
    }
}

struct Pass<'a> {
    conn: MultiplexedConnection,
    rules: &'a Rules,
    script: &'a Script,
    options: &'a Options,
    pacer: Pacer,
    counts: &'a mut Counts,
    /// When the run started, for `--max-runtime`.
    run_started: Instant,
    /// When this pass started, for its rate.
    started: Instant,
    last_progress: Instant,
    last_sample: Option<(Instant, u64)>,
    stop: watch::Receiver<Option<Stop>>,
}

impl Pass<'_> {
    /// The pass loop: one script call at a time, each from the cursor the
    /// last one returned, until the cursor is back to 0 or a stop comes.
    async fn drive(&mut self) -> Result<Option<Stop>, Error> {
        let mut cursor = 0;
        loop {
            if let Some(stop) = self.wait_for_turn().await {
                return Ok(Some(stop));
            }
            let batch = Batch {
                cursor,
                step: self.pacer.step(),
                scan_budget: self.pacer.scan_budget(),
                max_keys: self.pacer.max_keys(),
                report_keys: enabled!(Level::DEBUG),
            };
            if self.sample_due() {
                self.sample().await?;
            }
            let sent = Instant::now();
            let (reply, resent) = self.script.call(&mut self.conn, &batch).await?;
            self.pacer.record(&reply, sent, Instant::now());
            if resent {
                self.pacer.resent();
            }
            reply.tally(self.rules, self.counts)?;
            self.counts.script_reloads += u64::from(resent);
            self.log_progress();
            if reply.cursor == 0 {
                return Ok(None);
            }
            cursor = reply.cursor;
        }
    }

    /// Waits until the pacer lets the next call go out. Returns the stop
    /// instead if one comes first (a signal, or `--max-runtime`).
    async fn wait_for_turn(&mut self) -> Option<Stop> {
        let deadline = self.options.max_runtime.map(|max| self.run_started + max);
        loop {
            if let Some(stop) = self.stop_requested() {
                return Some(stop);
            }
            let at = self.pacer.next_call_at();
            if at <= Instant::now() {
                return None;
            }
            let wake = deadline.map_or(at, |deadline| deadline.min(at));
            tokio::select! {
                () = tokio::time::sleep_until(wake.into()) => {}
                Ok(()) = self.stop.changed() => {}
            }
        }
    }

    /// Whether the next call is preceded by a sample: every
    /// [`CALLS_PER_SAMPLE`] calls, and at least every [`SAMPLE_INTERVAL`].
    fn sample_due(&self) -> bool {
        self.last_sample.is_none_or(|(at, batches)| {
            self.counts.batches >= batches + CALLS_PER_SAMPLE || at.elapsed() >= SAMPLE_INTERVAL
        })
    }

    /// Samples the server: its command statistics for the pacer and, for a
    /// writing pass on a cluster node, its role. A cluster node that became
    /// a replica (a failover) fails the pass with [`Error::Replica`]; on
    /// Redis 7 the script's flags refuse the call on a replica anyway, but
    /// Redis 6.2 would run it, and every key would be refused.
    async fn sample(&mut self) -> Result<(), Error> {
        self.last_sample = Some((Instant::now(), self.counts.batches));
        self.sample_call_stats().await;
        if self.script.layout == Layout::Cluster && self.script.mode == Mode::Write {
            let replication: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut self.conn)
                .await
                .map_err(|err| Error::from_redis("INFO replication", &err))?;
            if field(&replication, "role") == Some("slave") {
                return Err(Error::Replica(
                    "the cluster node is a replica now (a failover)".to_string(),
                ));
            }
        }
        Ok(())
    }

    /// Gives the pacer Redis's statistics of the command that runs the
    /// script. They only refine the pacing: a server that does not give
    /// them leaves the pacer with its estimate.
    async fn sample_call_stats(&mut self) {
        let command = self.script.invocation(Invoke::Sha).0.to_lowercase();
        let info: Result<String, _> = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.conn)
            .await;
        match info.map(|info| call_stats(&info, &command)) {
            Ok(Some(stats)) => self.pacer.calibrate(stats),
            Ok(None) => self.pacer.calibrate(CallStats { calls: 0, usec: 0 }),
            Err(err) => debug!(error = %err, "no command statistics"),
        }
    }

    fn stop_requested(&self) -> Option<Stop> {
        stop_due(&self.stop, self.options.max_runtime, self.run_started)
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

/// The stop due now: a signal, or the end of `max_runtime` counted from
/// `run_started`.
pub fn stop_due(
    stop: &watch::Receiver<Option<Stop>>,
    max_runtime: Option<Duration>,
    run_started: Instant,
) -> Option<Stop> {
    (*stop.borrow()).or_else(|| {
        max_runtime
            .is_some_and(|max| run_started.elapsed() >= max)
            .then_some(Stop::MaxRuntime)
    })
}

/// The calls and microseconds of `command` in `INFO commandstats` output
/// (`cmdstat_evalsha:calls=2,usec=112,...`); `None` before its first call.
fn call_stats(info: &str, command: &str) -> Option<CallStats> {
    let line = info
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:")))?;
    let field = |name: &str| {
        line.split(',')
            .find_map(|kv| kv.strip_prefix(name)?.parse().ok())
    };
    Some(CallStats {
        calls: field("calls=")?,
        usec: field("usec=")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_stats_are_read_for_the_one_command() {
        let info = "# Commandstats\r\ncmdstat_evalsha_ro:calls=7,usec=70,usec_per_call=10.00\r\n\
                    cmdstat_evalsha:calls=2753,usec=2889871,usec_per_call=1049.72,rejected_calls=0\r\n";
        assert_eq!(
            call_stats(info, "evalsha"),
            Some(CallStats {
                calls: 2753,
                usec: 2_889_871
            })
        );
        assert_eq!(
            call_stats(info, "evalsha_ro"),
            Some(CallStats { calls: 7, usec: 70 })
        );
        assert_eq!(call_stats(info, "eval"), None);
    }

    #[test]
    fn a_run_ends_with_the_weightiest_of_its_nodes_endings() {
        let endings = [
            End::Complete,
            End::Stopped(Stop::MaxRuntime),
            End::Stopped(Stop::Sigterm),
            End::Failed(Error::Redis(String::new())),
        ];
        let weights: Vec<u8> = endings.iter().map(End::weight).collect();
        assert_eq!(weights, [0, 1, 2, 3]);
        assert_eq!(End::Stopped(Stop::Sigint).weight(), 2);
        let exits: Vec<Exit> = endings.iter().map(End::exit).collect();
        assert_eq!(
            exits,
            [
                Exit::Success,
                Exit::Success,
                Exit::Terminated,
                Exit::Failure
            ]
        );
        assert_eq!(End::Failed(Error::Usage(String::new())).exit(), Exit::Usage);
    }
}
