//! One pass over one Redis node: call the clean script from the pass's
//! start cursor (0, or a checkpoint's) until SCAN's cursor comes back to 0.
//! Each call runs SCAN steps inside Redis for as long as its time budget
//! allows and cleans the keys they return, so key names never cross the
//! network; the job only carries the cursor from one call to the next,
//! paced by what the calls report. Each writing call holds the run's lease
//! and saves the checkpoint in the same atomic call as its work; between
//! calls far apart the lease is renewed. In the declared-keys mode a step
//! is the job's own SCAN and the calls that clean its keys (`declared`),
//! and a call of its own saves the checkpoint after it and renews the
//! lease, refusing if the run lost it: in the next step's round trip, or
//! alone before the pass waits and when it ends. A step goes out at most a
//! third of the lease's time to live after the lease was last confirmed.
//! The pass takes its stop signal as a parameter, so a graceful stop is
//! testable. A writing pass on a primary also watches its replicas' lag,
//! and pauses its calls while the slowest lags more than
//! `--max-replica-lag` (see `replica`).
//!
//! Memory stays flat in the size of the keyspace: the pass holds one call's
//! arguments and reply (and, in a dry run, a few sample keys per rule).

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use serde::Serialize;
use tokio::sync::watch;
use tracing::{Level, debug, enabled, info, warn};

use crate::cap::Caps;
use crate::declared::{Declared, Stepped};
use crate::error::Error;
use crate::exit::{Exit, Stop};
use crate::lease::LeaseClock;
use crate::pacer::{CallStats, Limits, Pacer};
use crate::progress::{Pace, Tables};
use crate::replica::{self, Lag};
use crate::rules::Rules;
use crate::script::protocol::{Batch, Claim, Counts, Deadline, Op, PassId, Reply};
use crate::script::{Invoke, KeyMode, Layout, Mode, Script};
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

/// Sample keys a dry run keeps per rule.
pub const SAMPLES_PER_RULE: usize = 5;

/// The most calls of a dry run that return their keys for samples: the
/// samples come from the start of the pass, and cost nothing after.
const SAMPLING_CALLS: u64 = 100;

/// Settings of one pass.
#[derive(Debug, Clone)]
pub struct Options {
    /// What the calls are kept within: keys, time, rate, share of Redis.
    pub limits: Limits,
    /// Stop cleanly once this much time has passed.
    pub max_runtime: Option<Duration>,
    /// How often to log progress.
    pub progress_interval: Duration,
    /// Whether the calls estimate the bytes their deletes give back.
    pub estimate_freed: bool,
    /// Pause a writing pass's calls while a replica lags more than this
    /// many bytes of the replication stream (`--max-replica-lag`); `None`:
    /// never.
    pub max_replica_lag: Option<u64>,
}

/// How a pass, a node's work or a run ended: one of three, so a report
/// cannot say both "complete" and "failed".
#[derive(Debug)]
pub enum End {
    /// The pass reached the end of the keyspace.
    Complete,
    /// The pass stopped early, as it was asked to.
    Stopped(Stop),
    /// The node was skipped: another run holds its lease.
    Locked(Locked),
    /// The pass failed.
    Failed(Error),
}

/// Who held a node's lease when a run skipped it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Locked {
    /// The holder, as its lease names it (pod or host, and process).
    pub holder: String,
    /// Since when it holds the lease, in seconds since the Unix epoch.
    pub since: Option<f64>,
}

impl std::fmt::Display for Locked {
    /// "HOLDER, since 2026-12-02T16:59:14Z".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.holder)?;
        if let Some(secs) = self.since {
            let at = std::time::UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0));
            write!(f, ", since {}", humantime::format_rfc3339_seconds(at))?;
        }
        Ok(())
    }
}

impl End {
    /// The exit code of a run that ended so.
    pub fn exit(&self) -> Exit {
        match self {
            End::Complete | End::Locked(_) => Exit::Success,
            End::Stopped(stop) => stop.exit(),
            End::Failed(err) => err.exit_code(),
        }
    }

    /// Whether the node's work succeeded, so its last success is recorded:
    /// its pass completed, or stopped at `--max-runtime` with its progress
    /// saved. A node skipped for another run's lease did no work.
    pub fn succeeded(&self) -> bool {
        matches!(self, End::Complete | End::Stopped(Stop::MaxRuntime))
    }

    /// How much this ending weighs when a run's nodes ended differently:
    /// a failure over a stop, a signal over `--max-runtime`, a stop over a
    /// node skipped for its lease, that over completion.
    pub fn weight(&self) -> u8 {
        match self {
            End::Complete => 0,
            End::Locked(_) => 1,
            End::Stopped(Stop::MaxRuntime) => 2,
            End::Stopped(Stop::Sigterm | Stop::Sigint) => 3,
            End::Failed(_) => 4,
        }
    }
}

/// What the calls of a pass send besides their batches.
#[derive(Clone, Copy)]
pub struct Calls<'a> {
    /// The script, already loaded.
    pub script: &'a Script,
    /// The node's state keys, the run's lease token and its time to live.
    pub claim: &'a Claim,
    /// The pass the checkpoint records; `None` in a dry run, which keeps
    /// its cursor in memory only.
    pub pass: Option<&'a PassId>,
    /// The lease as the run took it; `None` without a lease
    /// (`--no-lock`, a dry run).
    pub lease: Option<LeaseClock>,
    /// The run's caps, shared with its other nodes.
    pub caps: &'a Caps,
    /// How the server keeps its keys in hash tables, which says how far a
    /// cursor the calls return has gone.
    pub tables: &'a Tables,
}

/// What a node's passes did, kept across its retries.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// What the calls did.
    pub counts: Counts,
    /// Where the next call starts.
    pub cursor: u64,
    /// The share of the keyspace the pass has covered, from 0 to 1 (when
    /// it completes), read from the cursor.
    pub done: f64,
    /// In a dry run, a few of the keys each rule would act on, in rule order.
    pub samples: Vec<Vec<Vec<u8>>>,
    /// How long the calls held Redis, as `--max-server-share` charged them.
    pub held: Duration,
    /// How long the passes ran, from their first call's wait to their end.
    pub elapsed: Duration,
    /// How long the calls were paused for lagging replicas.
    pub replica_pause: Duration,
    /// The earliest the next call may go out under the share, as the last
    /// pass left it: a retry's first call waits for it too.
    pub share_allows: Option<Instant>,
}

impl Progress {
    /// Nothing done yet, for `rules`.
    pub fn new(rules: &Rules) -> Progress {
        Progress {
            counts: Counts::new(rules),
            cursor: 0,
            done: 0.0,
            samples: vec![Vec::new(); rules.rules.len()],
            held: Duration::ZERO,
            elapsed: Duration::ZERO,
            replica_pause: Duration::ZERO,
            share_allows: None,
        }
    }

    /// The share of Redis's time the calls took while the passes ran
    /// (their pauses included); `None` before a pass ran.
    pub fn server_share(&self) -> Option<f64> {
        (!self.elapsed.is_zero()).then(|| self.held.as_secs_f64() / self.elapsed.as_secs_f64())
    }
}

/// Runs one pass with `calls` over the node behind `conn`, from
/// `progress.cursor`, adding what it does to `progress`. `--max-runtime`
/// counts from `run_started`. When `stop` turns `Some`, the call in flight
/// is finished and the pass returns.
pub async fn run(
    conn: MultiplexedConnection,
    rules: &Rules,
    calls: Calls<'_>,
    options: &Options,
    run_started: Instant,
    stop: watch::Receiver<Option<Stop>>,
    progress: &mut Progress,
) -> End {
    let now = Instant::now();
    progress.done = calls.tables.share(progress.cursor);
    let pace = Pace {
        started: now,
        from: progress.done,
        scanned: progress.counts.keys_scanned,
    };
    let mut pass = Pass {
        conn,
        rules,
        calls,
        options,
        pacer: Pacer::new(options.limits, now).after(progress.share_allows),
        progress,
        run_started,
        pace,
        last_progress: now,
        last_sample: None,
        held_at: calls.lease.map_or(now, |lease| lease.taken()),
        lease: calls.lease,
        sampling_calls: 0,
        declared: (calls.script.key_mode == KeyMode::Declared)
            .then(|| Declared::new(calls.script.layout, &options.limits)),
        stop,
    };
    let mut driven = pass.drive().await;
    // A declared-keys pass that ends (or stops) saves its last checkpoint.
    if matches!(driven, Ok(_) | Err(Error::Capped(_)))
        && let Err(err) = pass.flush().await
    {
        driven = Err(err);
    }
    pass.progress.held += pass.pacer.held();
    pass.progress.share_allows = Some(pass.pacer.share_allows());
    pass.progress.elapsed += pass.pace.started.elapsed();
    match driven {
        Ok(None) => End::Complete,
        Ok(Some(stop)) => End::Stopped(stop),
        Err(err) => End::Failed(err),
    }
}

struct Pass<'a> {
    conn: MultiplexedConnection,
    rules: &'a Rules,
    calls: Calls<'a>,
    options: &'a Options,
    pacer: Pacer,
    progress: &'a mut Progress,
    /// When the run started, for `--max-runtime`.
    run_started: Instant,
    /// Where and when this pass started in this run, for its rate and the
    /// time left.
    pace: Pace,
    last_progress: Instant,
    last_sample: Option<(Instant, u64)>,
    /// When the call that last renewed the lease was sent (any call; the
    /// lease's `acquire` at first).
    held_at: Instant,
    /// The lease as the last renewing call that read the server's clock
    /// left it, for the deadline of the declared calls.
    lease: Option<LeaseClock>,
    /// The dry run's calls that returned their keys for samples.
    sampling_calls: u64,
    /// The declared-keys mode's state across steps; `None` in the default
    /// mode.
    declared: Option<Declared>,
    stop: watch::Receiver<Option<Stop>>,
}

impl Pass<'_> {
    /// The pass loop: one script call at a time, each from the cursor the
    /// last one returned, until the cursor is back to 0, a stop comes, or a
    /// cap is reached.
    async fn drive(&mut self) -> Result<Option<Stop>, Error> {
        loop {
            if let Some(stop) = self.wait_for_turn().await? {
                return Ok(Some(stop));
            }
            if let Some(reached) = self.calls.caps.reached() {
                return Err(Error::Capped(reached));
            }
            if self.sample_due()
                && let Some(stop) = self.sample().await?
            {
                return Ok(Some(stop));
            }
            let turn = self.calls.caps.turn().await;
            // A stop that came while the pass waited for its turn (another
            // node's call held it) goes before the call.
            if let Some(stop) = self.stop_requested() {
                return Ok(Some(stop));
            }
            let batch = Batch {
                cursor: self.progress.cursor,
                step: self.pacer.step(),
                scan_budget: self.pacer.scan_budget(),
                max_keys: self.pacer.max_keys(),
                report_keys: enabled!(Level::DEBUG) || self.wants_samples(),
                cap: turn.grant.run,
                rule_caps: turn.grant.rules.clone(),
                estimate_freed: self.options.estimate_freed,
            };
            let sent = Instant::now();
            // A call whose reply was lost is not counted against the caps
            // (see `cap`).
            let Stepped {
                reply,
                reloads,
                renewed,
                commands,
                fault,
            } = self.step(&batch).await?;
            if let Some(server_ms) = renewed {
                self.renewed(sent, server_ms);
            }
            match self.calls.script.key_mode {
                KeyMode::Server => self.pacer.record(&reply, sent, Instant::now()),
                KeyMode::Declared => {
                    let received = Instant::now();
                    let script = Duration::from_micros(reply.micros);
                    self.pacer
                        .record_round_trip(reply.looked_at, commands, script, sent, received);
                }
            }
            if reloads > 0 {
                self.pacer.resent();
            }
            turn.settle(&reply.acted, &reply.capped, self.rules);
            reply.tally(self.rules, &mut self.progress.counts)?;
            self.progress.counts.script_reloads += reloads;
            self.keep_samples(&reply, batch.report_keys);
            // A declared-keys step's round trip saved the step before it.
            let saved_at = match self.declared {
                Some(_) => batch.cursor,
                None => reply.cursor,
            };
            self.note_checkpoint(&reply.checkpoint, saved_at);
            // Cursor 0 is the keyspace's end, unless the step stayed at the
            // start: a cap left keys there, or a declared step failed.
            let stayed = reply.cursor == batch.cursor
                && (fault.is_some() || reply.capped.iter().any(|&n| n > 0));
            self.progress.done = match reply.cursor {
                0 if !stayed => 1.0,
                cursor => self.calls.tables.share(cursor),
            };
            self.log_progress();
            self.progress.cursor = reply.cursor;
            if let Some(fault) = fault {
                return Err(fault);
            }
            if let Some(reached) = self.calls.caps.reached() {
                return Err(Error::Capped(reached));
            }
            if reply.cursor == 0 {
                return Ok(None);
            }
        }
    }

    /// One step of the pass: one call of the scanned variant, which also
    /// checks the lease and saves the checkpoint; or, in the declared-keys
    /// mode, the calls cleaning the keys of the job's SCAN, with the last
    /// step's checkpoint and the next step's SCAN (see `declared`).
    async fn step(&mut self, batch: &Batch) -> Result<Stepped, Error> {
        let calls = self.calls;
        let latest = self.renew_at();
        let Some(declared) = &mut self.declared else {
            let op = Op::Clean(batch, self.calls.pass);
            let (reply, resent) = self
                .calls
                .script
                .call(&mut self.conn, self.calls.claim, op)
                .await?;
            return Ok(Stepped {
                reply,
                reloads: u64::from(resent),
                renewed: Some(None),
                commands: 1,
                fault: None,
            });
        };
        let deadline = match self.lease {
            Some(lease) => Deadline::At(lease.deadline()),
            None => Deadline::None,
        };
        declared
            .step(&self.conn, calls, self.rules, batch, deadline, latest)
            .await
    }

    /// Saves the checkpoint after a declared-keys pass's last step, if it
    /// is not saved yet (renewing the lease): whether a save went out. A
    /// pass does so before it waits and when it ends, so that only a run
    /// stopped or frozen between a step's reply and its next round trip
    /// leaves a step unsaved.
    async fn flush(&mut self) -> Result<bool, Error> {
        let calls = self.calls;
        let Some(declared) = &mut self.declared else {
            return Ok(false);
        };
        let sent = Instant::now();
        let Some(((answer, server_ms), resent)) = declared.flush(&mut self.conn, calls).await?
        else {
            return Ok(false);
        };
        self.progress.counts.script_reloads += u64::from(resent);
        self.pacer.other_call();
        self.renewed(sent, Some(server_ms));
        self.note_checkpoint(&answer, self.progress.cursor);
        Ok(true)
    }

    /// Whether a dry run still wants sample keys: a rule has fewer than
    /// [`SAMPLES_PER_RULE`], within the first [`SAMPLING_CALLS`] calls.
    fn wants_samples(&self) -> bool {
        self.calls.script.mode == Mode::ReadOnly
            && self.sampling_calls < SAMPLING_CALLS
            && self
                .progress
                .samples
                .iter()
                .any(|keys| keys.len() < SAMPLES_PER_RULE)
    }

    /// Keeps a dry run's first keys per rule from a call that reported its
    /// keys.
    fn keep_samples(&mut self, reply: &Reply, reported: bool) {
        if !reported || self.calls.script.mode != Mode::ReadOnly {
            return;
        }
        self.sampling_calls += 1;
        for (rule, key) in reply.acted_keys(self.rules) {
            let samples = &mut self.progress.samples[rule];
            if samples.len() < SAMPLES_PER_RULE {
                samples.push(key.to_vec());
            }
        }
    }

    /// Warns when the server refused the checkpoint's write (Redis 6.2 at
    /// maxmemory may): `answer` is what the save answered ('' when none
    /// went out). The call's work stands, and the next call saves the
    /// checkpoint again.
    fn note_checkpoint(&self, answer: &str, cursor: u64) {
        if self.calls.pass.is_some() && !answer.is_empty() && answer != "saved" {
            warn!(
                error = %answer,
                cursor,
                "the server refused to save the checkpoint; the next call saves it again"
            );
        }
    }

    /// Waits until the pacer lets the next call go out, renewing the lease
    /// when the wait outlasts a third of it. Returns the stop instead if
    /// one comes first (a signal, or `--max-runtime`).
    async fn wait_for_turn(&mut self) -> Result<Option<Stop>, Error> {
        let at = self.pacer.next_call_at();
        self.wait_until(at).await
    }

    /// Waits until `at`, renewing the lease when the wait outlasts a third
    /// of it; a declared-keys pass first saves its last step. Returns the
    /// stop instead if one comes first.
    async fn wait_until(&mut self, at: Instant) -> Result<Option<Stop>, Error> {
        if at > Instant::now() {
            self.flush().await?;
        }
        let deadline = self.options.max_runtime.map(|max| self.run_started + max);
        loop {
            if let Some(stop) = self.stop_requested() {
                return Ok(Some(stop));
            }
            let renew_at = self.renew_at();
            if renew_at.is_some_and(|at| at <= Instant::now()) {
                self.renew().await?;
                continue;
            }
            if at <= Instant::now() {
                return Ok(None);
            }
            let wake = [Some(at), deadline, renew_at].into_iter().flatten().min();
            tokio::select! {
                () = tokio::time::sleep_until(wake.unwrap_or(at).into()) => {}
                Ok(()) = self.stop.changed() => {}
            }
        }
    }

    /// When the lease is due for renewal, if the run holds one: a third of
    /// its time to live after the last call that renewed it.
    fn renew_at(&self) -> Option<Instant> {
        let claim = self.calls.claim;
        (!claim.token.is_empty()).then(|| self.held_at + claim.lease_ttl / 3)
    }

    /// Renews the lease; fails if the run no longer holds it.
    async fn renew(&mut self) -> Result<(), Error> {
        let sent = Instant::now();
        let (server_ms, resent) = self
            .calls
            .script
            .call::<u64>(&mut self.conn, self.calls.claim, Op::Renew)
            .await?;
        self.progress.counts.script_reloads += u64::from(resent);
        self.pacer.other_call();
        self.renewed(sent, Some(server_ms));
        Ok(())
    }

    /// The lease was renewed by a call sent at `sent`, which read the
    /// server's clock as `server_ms` if it says (a default-mode call does
    /// not: its calls read the lease itself and need no deadline).
    fn renewed(&mut self, sent: Instant, server_ms: Option<u64>) {
        self.held_at = sent;
        if let Some(server_ms) = server_ms {
            self.lease = self.lease.map(|lease| lease.renewed(server_ms, sent));
        }
    }

    /// Whether the next call is preceded by a sample: every
    /// [`CALLS_PER_SAMPLE`] calls, and at least every [`SAMPLE_INTERVAL`].
    fn sample_due(&self) -> bool {
        self.last_sample.is_none_or(|(at, batches)| {
            self.progress.counts.batches >= batches + CALLS_PER_SAMPLE
                || at.elapsed() >= SAMPLE_INTERVAL
        })
    }

    /// Samples the server: its command statistics for the pacer and, for a
    /// writing pass, its replication: on a cluster node its role, and its
    /// replicas' lag, which pauses the calls while it exceeds the bound. A
    /// cluster node that became a replica (a failover) fails the pass with
    /// [`Error::Replica`]; on Redis 7 the script's flags refuse the call on
    /// a replica anyway, but Redis 6.2 would run it, and every key would be
    /// refused. Returns the stop that came during a pause.
    async fn sample(&mut self) -> Result<Option<Stop>, Error> {
        self.last_sample = Some((Instant::now(), self.progress.counts.batches));
        let stopped = self.stopped();
        tokio::select! {
            () = self.sample_call_stats() => {}
            stop = stopped => return Ok(Some(stop)),
        }
        let script = self.calls.script;
        let cluster = script.layout == Layout::Cluster;
        let bound = self.options.max_replica_lag;
        // A dry run writes nothing for replicas to follow (and may read
        // from one): it never watches them.
        if script.mode != Mode::Write || (!cluster && bound.is_none()) {
            return Ok(None);
        }
        let replication = match self.replication().await {
            Err(stop) => return Ok(Some(stop)),
            Ok(Ok(replication)) => replication,
            Ok(Err(err)) if cluster => return Err(Error::from_redis("INFO replication", &err)),
            Ok(Err(err)) => {
                debug!(error = %err, "no replication information: the replicas' lag is not watched");
                return Ok(None);
            }
        };
        if cluster && field(&replication, "role") == Some("slave") {
            return Err(Error::Replica(
                "the cluster node is a replica now (a failover)".to_string(),
            ));
        }
        match (bound, Lag::worst(&replication)) {
            (Some(bound), Some(lag)) if lag.bytes > bound => {
                self.wait_for_replicas(lag, bound).await
            }
            _ => Ok(None),
        }
    }

    /// `INFO replication`, or the stop that came first.
    async fn replication(&mut self) -> Result<Result<String, redis::RedisError>, Stop> {
        let stopped = self.stopped();
        let mut info = redis::cmd("INFO");
        info.arg("replication");
        tokio::select! {
            info = info.query_async(&mut self.conn) => Ok(info),
            stop = stopped => Err(stop),
        }
    }

    /// The stop, when one comes (see [`stop_comes`]): what the pass's
    /// sampling commands race, which a server that stalls would hold for
    /// the whole timeout each. A call is never raced: its reply tells what
    /// it did.
    fn stopped(&self) -> impl Future<Output = Stop> + 'static {
        stop_comes(
            self.stop.clone(),
            self.options.max_runtime,
            self.run_started,
        )
    }

    /// Pauses the calls while the slowest replica, `lag` behind now, lags
    /// more than `bound` bytes, reading the lag again every
    /// [`replica::RECHECK_INTERVAL`]; the lease is renewed meanwhile, and
    /// a signal or `--max-runtime` ends the pause and the pass. A lag that
    /// cannot be read any more ends the pause. The pause is counted in the
    /// node's progress.
    async fn wait_for_replicas(&mut self, lag: Lag, bound: u64) -> Result<Option<Stop>, Error> {
        let started = Instant::now();
        info!(
            replica = %lag.replica,
            lag_bytes = lag.bytes,
            max_replica_lag_bytes = bound,
            "a replica lags behind: calls paused until it is within --max-replica-lag"
        );
        let ended = loop {
            match self
                .wait_until(Instant::now() + replica::RECHECK_INTERVAL)
                .await
            {
                Ok(None) => {}
                stopped => break stopped,
            }
            match self.replication().await {
                Err(stop) => break Ok(Some(stop)),
                Ok(Ok(info)) if Lag::worst(&info).is_some_and(|lag| lag.bytes > bound) => {}
                Ok(Ok(_)) => break Ok(None),
                Ok(Err(err)) => {
                    debug!(error = %err, "no replication information: the calls resume");
                    break Ok(None);
                }
            }
        };
        let paused = started.elapsed();
        self.progress.replica_pause += paused;
        self.pacer.paused(paused);
        let seconds = paused.as_secs_f64();
        match ended {
            Ok(None) => info!(
                paused_seconds = seconds,
                "the replicas caught up: calls resumed"
            ),
            _ => info!(
                paused_seconds = seconds,
                "the pass stops while paused for its replicas"
            ),
        }
        ended
    }

    /// Gives the pacer Redis's statistics of the command that runs the
    /// script. They only refine the pacing: a server that does not give
    /// them leaves the pacer with its estimate.
    async fn sample_call_stats(&mut self) {
        let command = self.calls.script.invocation(Invoke::Sha).0.to_lowercase();
        let info: Result<String, _> = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.conn)
            .await;
        let info = match info {
            Ok(info) => info,
            Err(err) => return debug!(error = %err, "no command statistics"),
        };
        let stats = |command: &str| call_stats(&info, command).unwrap_or_default();
        if self.declared.is_some() {
            let (calls, scans) = (stats(&command), stats("scan"));
            self.pacer.calibrate_steps(CallStats {
                calls: calls.calls + scans.calls,
                usec: calls.usec + scans.usec,
            });
        } else {
            self.pacer.calibrate(stats(&command));
        }
    }

    fn stop_requested(&self) -> Option<Stop> {
        stop_due(&self.stop, self.options.max_runtime, self.run_started)
    }

    /// Shows where the pass stands: on the node's progress bar after every
    /// call (where bars are shown), in a log line every
    /// `--progress-interval`.
    fn log_progress(&mut self) {
        let snapshot = self
            .pace
            .snapshot(&self.progress.counts, self.progress.done);
        snapshot.show();
        if self.last_progress.elapsed() >= self.options.progress_interval {
            self.last_progress = Instant::now();
            snapshot.log();
        }
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

/// The stop, when one comes: a signal, or the end of `max_runtime` counted
/// from `run_started`. For a wait that must not outlast a stop: a command
/// to a server that stalls holds its caller for the whole timeout.
pub async fn stop_comes(
    mut stop: watch::Receiver<Option<Stop>>,
    max_runtime: Option<Duration>,
    run_started: Instant,
) -> Stop {
    let deadline = max_runtime.map(|max| run_started + max);
    loop {
        if let Some(stop) = stop_due(&stop, max_runtime, run_started) {
            return stop;
        }
        tokio::select! {
            () = tokio::time::sleep_until(deadline.unwrap_or(run_started).into()),
                if deadline.is_some() => {}
            changed = stop.changed() => {
                if changed.is_err() {
                    // No signal can come any more.
                    std::future::pending::<()>().await;
                }
            }
        }
    }
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
        assert_eq!(weights, [0, 2, 3, 4]);
        assert_eq!(End::Stopped(Stop::Sigint).weight(), 3);
        let locked = End::Locked(Locked {
            holder: "other".into(),
            since: None,
        });
        assert_eq!(locked.weight(), 1);
        // A node skipped for another run's lease is no failure to retry.
        assert_eq!(locked.exit(), Exit::Success);
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
