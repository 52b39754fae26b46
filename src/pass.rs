//! One pass over one Redis node: SCAN the keyspace, match each key name
//! against the rules, and send the candidates in batches to the clean script,
//! keeping the next SCAN in flight while a batch's script runs. The pass takes
//! its stop signal as a parameter, so a graceful stop is testable.
//!
//! Memory stays flat in the size of the keyspace: the pass holds at most one
//! SCAN reply, a few batches waiting, and the batches in flight.

use std::collections::VecDeque;
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

/// Script calls in flight at once. Redis runs everything one client has
/// pipelined before it serves the next client, so each queued call adds to
/// what another client waits behind; measured (bench/), one call with the
/// next SCAN queued ahead of it kept the other client's p99 under 2 ms, two
/// did not, for a few percent of throughput.
const MAX_CALLS_IN_FLIGHT: usize = 1;

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
/// When `stop` turns `Some`, the batch in flight is finished and the pass
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

impl Pass<'_> {
    /// The pass loop, event-driven over one multiplexed connection: a SCAN
    /// goes out as soon as the previous one answers, and each batch's script
    /// call as soon as the batch is cut and a call slot is free. The SCAN is
    /// sent ahead of the calls, so its reply arrives, and the next batch is
    /// cut, while Redis runs a script: Redis waits for the job only for the
    /// round trip between two calls.
    async fn drive(&mut self) -> Result<Option<Stop>, Error> {
        let script = self.script;
        let deadline = self.options.max_runtime.map(|max| self.started + max);
        let mut stop_signal = self.stop.clone();
        let mut cursor = Some(0u64);
        let mut scanning = None;
        let mut calls = FuturesOrdered::new();
        let mut building = Batch::default();
        let mut ready = VecDeque::new();
        let mut stopped = None;
        loop {
            if stopped.is_none() {
                stopped = self.stop_requested();
                if stopped.is_some() {
                    // Finish the calls in flight; send nothing more.
                    cursor = None;
                    scanning = None;
                    ready.clear();
                    building = Batch::default();
                }
            }
            // Scan further only while few batches wait: memory stays bounded.
            if scanning.is_none()
                && ready.len() < MAX_READY
                && let Some(at) = cursor
            {
                let not_before = self
                    .pacer
                    .next_scan_at(self.started, self.counts.keys_scanned);
                let (count, pattern) = (self.pacer.scan_count(), self.scan_match.clone());
                scanning = Some(Box::pin(scan(
                    self.conn.clone(),
                    at,
                    count,
                    pattern,
                    not_before,
                )));
            }
            if cursor.is_none() && scanning.is_none() && !building.is_empty() {
                ready.push_back(std::mem::take(&mut building));
            }
            while calls.len() < MAX_CALLS_IN_FLIGHT
                && let Some(batch) = ready.pop_front()
            {
                let rules_arg = Rc::clone(&self.rules_arg);
                calls.push_back(call(self.conn.clone(), script, batch, rules_arg));
            }
            if scanning.is_none() && calls.is_empty() {
                return Ok(stopped);
            }
            tokio::select! {
                biased;
                Some(result) = OptionFuture::from(scanning.as_mut()), if scanning.is_some() => {
                    scanning = None;
                    let (next, keys) = result?;
                    cursor = (next != 0).then_some(next);
                    let scanned = keys.len();
                    self.counts.keys_scanned += scanned as u64;
                    let mut matched = 0;
                    for key in keys {
                        matched += usize::from(self.add(key, &mut building, &mut ready));
                    }
                    self.pacer.record_scan(scanned, matched);
                }
                Some((batch, result)) = calls.next(), if !calls.is_empty() => {
                    let (reply, resent) = result?;
                    batch.tally(&reply, self.rules, &mut self.counts)?;
                    self.counts.script_reloads += resent;
                    self.pacer.record(batch.len(), reply.micros);
                }
                // Wake up for a stop even while waiting on a rate-limited SCAN.
                Ok(()) = stop_signal.changed(), if stopped.is_none() => {}
                () = sleep_until(deadline), if stopped.is_none() && deadline.is_some() => {}
            }
            self.log_progress();
        }
    }

    /// Files `key` into the batch being built when some rule's pattern
    /// matches it, cutting a new batch when that one is full. Returns
    /// whether it matched.
    fn add(&self, key: Vec<u8>, building: &mut Batch, ready: &mut VecDeque<Batch>) -> bool {
        let set = self.rules.candidates(&key);
        if set == 0 {
            return false;
        }
        if let Err(key) = building.push(key, set) {
            ready.push_back(std::mem::take(building));
            building
                .push(key, set)
                .expect("an empty batch takes any key");
        }
        if building.len() >= self.pacer.batch_size() {
            ready.push_back(std::mem::take(building));
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

/// One SCAN step, sent no earlier than `not_before`: the next cursor (0 at
/// the end) and the keys it returned.
async fn scan(
    mut conn: MultiplexedConnection,
    cursor: u64,
    count: usize,
    pattern: Option<Vec<u8>>,
    not_before: Option<Instant>,
) -> Result<(u64, Vec<Vec<u8>>), Error> {
    if let Some(at) = not_before {
        tokio::time::sleep_until(at.into()).await;
    }
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
