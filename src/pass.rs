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
use redis::{ErrorKind, ServerErrorKind};
use tokio::sync::watch;
use tracing::{Level, enabled, info, warn};

use crate::batch::{Batch, Reply};
use crate::error::Error;
use crate::exit::Stop;
use crate::pacer::Pacer;
use crate::report::Counts;
use crate::rules::Rules;
use crate::scripts::{Invoke, Script};

/// Settings of one pass.
#[derive(Debug, Clone)]
pub struct Options {
    /// The most keys one script call looks at.
    pub batch_size: usize,
    /// How long one script call should run at most; its SCAN steps stop
    /// when the budget is spent.
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
/// When `stop` turns `Some`, the call in flight is finished and the pass
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
    counts: Counts,
    started: Instant,
    last_progress: Instant,
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
            let (reply, resent) = call(&mut self.conn, self.script, &batch).await?;
            reply.tally(self.rules, &mut self.counts)?;
            self.counts.script_reloads += resent;
            self.pacer
                .record(reply.looked_at, reply.scan_micros, reply.micros);
            self.log_progress();
            if reply.cursor == 0 {
                return Ok(None);
            }
            cursor = reply.cursor;
        }
    }

    /// Waits until the rate limit lets the next call go out. Returns the
    /// stop instead if one comes first (a signal, or `--max-runtime`).
    async fn wait_for_turn(&mut self) -> Option<Stop> {
        let deadline = self.options.max_runtime.map(|max| self.started + max);
        loop {
            if let Some(stop) = self.stop_requested() {
                return Some(stop);
            }
            let at = self
                .pacer
                .next_call_at(self.started)
                .filter(|&at| at > Instant::now())?;
            let wake = deadline.map_or(at, |deadline| deadline.min(at));
            tokio::select! {
                () = tokio::time::sleep_until(wake.into()) => {}
                Ok(()) = self.stop.changed() => {}
            }
        }
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

/// Runs one script call by SHA. On NOSCRIPT (cache flushed, restart,
/// failover) it sends the call again with the script's text, which loads and
/// runs it in one step, so a flush cannot slip in between. Returns the reply
/// and how many times the call had to be sent again (0 or 1).
async fn call(
    conn: &mut MultiplexedConnection,
    script: &Script,
    batch: &Batch,
) -> Result<(Reply, u64), Error> {
    match batch.command(script, Invoke::Sha).query_async(conn).await {
        Ok(reply) => Ok((reply, 0)),
        Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            warn!(
                sha = %script.sha,
                "the script is no longer in Redis's cache (flushed, restarted \
                 or failed over); sending it again"
            );
            let reply = batch
                .command(script, Invoke::Text)
                .query_async(conn)
                .await
                .map_err(|err| script_error(script, &err))?;
            Ok((reply, 1))
        }
        Err(err) => Err(script_error(script, &err)),
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
