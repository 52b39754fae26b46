//! One Redis node's share of a run, over its own connection: connect, read
//! what the server is (`INFO`), refuse what it cannot run before touching
//! anything, choose the script's variant, check that the user may run every
//! command the pass will send, load the script, take the node's lease and
//! read its checkpoint, and run the pass from where the checkpoint says.
//!
//! A transient fault (a lost connection, a timeout, `LOADING`, `BUSY`, a
//! cluster in flux, a demoted primary, a lost lease) is retried with a
//! bounded exponential backoff with jitter, from the checkpoint. A retry
//! never applies a call twice: a call's work and its checkpoint commit
//! together, so after a call whose reply was lost the checkpoint already
//! holds the cursor after it, and after a call that never ran it holds the
//! cursor before it. When a shard (cluster) or the service (Sentinel) fails
//! over, the retry goes to the new primary, where a new pass starts from
//! cursor 0: a cursor means nothing to another process, whose hash tables
//! are ordered by its own seed. Whatever happens, the node's outcome comes
//! back: what it did, and how it ended.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backon::BackoffBuilder;
use redis::aio::MultiplexedConnection;
use serde::Serialize;
use tokio::sync::watch;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::acl::{self, Command};
use crate::cap::Caps;
use crate::checkpoint::{self, Checkpoint, Start};
use crate::connection::Target;
use crate::error::Error;
use crate::exit::Stop;
use crate::lease::{self, LeaseClock};
use crate::pass::{self, Calls, End, Locked, Progress};
use crate::progress::Tables;
use crate::rules::Rules;
use crate::script::protocol::{Acquired, Claim, LeaseState, Op, PassId, StateKeys};
use crate::script::{Dialect, KeyMode, Layout, Mode, Script};
use crate::topology::{self, Node, Role, Source, field};

/// The longest each step after a stopped or disconnected pass may take
/// (see [`wrap_up_time`]): a server that answers at all answers these in
/// milliseconds.
const WRAP_UP_TIME: Duration = Duration::from_secs(1);

/// The most failovers one node's pass follows before it gives up.
const MAX_FAILOVERS: usize = 5;

/// The default `--retries`: the retries of a node's work after transient
/// faults in a row (a call that succeeds starts the count again): with
/// delays from 100 ms doubling to 5 s, each plus a jitter of up to as much
/// again: 26 to 53 s in all.
pub const DEFAULT_RETRIES: usize = 10;

/// What to do on each node.
#[derive(Debug, Clone)]
pub struct Task {
    /// The rules to apply.
    pub rules: Rules,
    /// Write nothing, count what would be done.
    pub dry_run: bool,
    /// How the pass runs.
    pub pass: pass::Options,
    /// Connect and reply timeout; also how long a failed-over shard is
    /// waited for.
    pub timeout: Duration,
    /// The lease's time to live (`--lock-ttl`); `None` with `--no-lock`.
    pub lock_ttl: Option<Duration>,
    /// How old a checkpoint may be to be resumed (`--resume-max-age`); also
    /// its time to live.
    pub resume_max_age: Duration,
    /// `--restart`: start a new pass whatever the checkpoint says.
    pub restart: bool,
    /// The most keys the run acts on, over all rules (`--max-keys`).
    pub max_keys: Option<u64>,
    /// How many transient faults in a row a node's work is retried after
    /// (`--retries`).
    pub retries: usize,
    /// How the calls get their keys (`--key-mode`); `None` (auto): the
    /// server-side SCAN, until the server refuses scripts that touch keys
    /// they did not declare.
    pub key_mode: Option<KeyMode>,
}

/// What every node of a run shares.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// What to do.
    pub task: &'a Task,
    /// Where the nodes were found: a Sentinel service is asked again for
    /// its primary after a fault.
    pub source: &'a Source,
    /// The nodes through which a cluster is asked for a shard's new primary
    /// after a failover: the seeds, then every node found.
    pub nodes: &'a [Target],
    /// When the run started: `--max-runtime` counts from there.
    pub started: Instant,
    /// The run's lease token (the same on every node).
    pub token: &'a str,
    /// How the run's leases name it.
    pub holder: &'a str,
    /// The run's caps, shared by its nodes.
    pub caps: &'a Caps,
}

/// A failover a node's pass followed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failover {
    /// The primary the pass was on.
    pub from: String,
    /// The new primary, where the pass started again from cursor 0.
    pub to: String,
}

/// What a server said it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerInfo {
    /// `host:port`.
    pub address: String,
    /// "Redis" or "Valkey".
    pub software: String,
    /// Its own version: `redis_version`, or `valkey_version` on Valkey.
    pub version: String,
}

impl std::fmt::Display for ServerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} {})", self.address, self.software, self.version)
    }
}

/// The node's memory and keys at one moment, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// `used_memory` in `INFO memory`, in bytes.
    pub used_memory: u64,
    /// `DBSIZE`: the keys of the database, the job's own included.
    pub keys: u64,
}

/// What one node's work came to.
#[derive(Debug)]
pub struct NodeOutcome {
    /// The node's `host:port` (after a failover, the new primary's).
    pub address: String,
    /// Whether it is a primary or a replica.
    pub role: Role,
    /// What the server is, once `INFO` answered.
    pub server: Option<ServerInfo>,
    /// The script the pass ran, once it was chosen for the server.
    pub script: Option<Script>,
    /// What the passes did, up to where they ended.
    pub progress: Progress,
    /// Where the (last) pass started, and why there.
    pub start: Option<Start>,
    /// How long the node's work took.
    pub duration: Duration,
    /// How it ended.
    pub end: End,
    /// The failovers its pass followed, each a new pass from cursor 0.
    pub failovers: Vec<Failover>,
    /// The transient faults its work was retried after.
    pub retries: usize,
    /// The `run_id` of the server process the last attempt ran on.
    pub run_id: Option<String>,
    /// The node before its first pass started.
    pub at_start: Option<Snapshot>,
    /// The node after its last attempt.
    pub at_end: Option<Snapshot>,
    /// When a run last cleaned the node successfully (ms of the server's
    /// clock), as the node's history says after this run's work.
    pub last_success_ms: Option<u64>,
    /// How the calls get their keys.
    pub key_mode: KeyMode,
    /// Why the node switched to the declared-keys mode by itself: the
    /// server's refusal of the server-side variant.
    pub switched: Option<String>,
    /// The keys acted on as the node's last attempt took its lease: by its
    /// pass's checkpoint, and by the job's counts (see [`charge_lost`]).
    pub acted_at_take: Option<ActedAt>,
}

/// What [`NodeOutcome::acted_at_take`] records.
#[derive(Debug, Clone, Copy)]
pub struct ActedAt {
    /// The pass the checkpoint records: when it began (ms, server time).
    pass_started_ms: u64,
    /// The keys its checkpoint says the pass acted on.
    checkpoint: u64,
    /// The keys the job counted, over all the node's attempts.
    counted: u64,
}

impl NodeOutcome {
    /// The outcome of a node nothing was done on yet.
    pub fn new(address: String, role: Role, rules: &Rules) -> NodeOutcome {
        NodeOutcome {
            address,
            role,
            server: None,
            script: None,
            progress: Progress::new(rules),
            start: None,
            duration: Duration::ZERO,
            end: End::Complete,
            failovers: Vec::new(),
            retries: 0,
            run_id: None,
            at_start: None,
            at_end: None,
            last_success_ms: None,
            key_mode: KeyMode::Server,
            switched: None,
            acted_at_take: None,
        }
    }
}

/// Cleans `node` as `context` says, retrying after transient faults and
/// following its failovers.
pub async fn clean(
    mut node: Node,
    context: Context<'_>,
    stop: watch::Receiver<Option<Stop>>,
) -> NodeOutcome {
    let started = Instant::now();
    let task = context.task;
    let mut outcome = NodeOutcome::new(node.target.address(), node.role, &task.rules);
    outcome.key_mode = task.key_mode.unwrap_or(KeyMode::Server);
    if let Some(stop) = pass::stop_due(&stop, task.pass.max_runtime, context.started) {
        // A node whose turn comes after the stop (--concurrency) is not
        // cleaned. At --max-runtime, a planned end, it is looked at for the
        // report and the push, a second at most; after a signal the run
        // ends without waiting for more servers.
        outcome.end = End::Stopped(stop);
        if stop == Stop::MaxRuntime {
            let looked = glance(&node, task, &mut outcome);
            let _ = tokio::time::timeout(task.timeout.min(WRAP_UP_TIME), looked).await;
        }
        return outcome;
    }
    let mut backoff = backoff(task.retries);
    // The fault the node's work is being retried after.
    let mut fault: Option<Error> = None;
    loop {
        let calls_before = outcome.progress.counts.batches;
        // Every event of the node's work names the node; where bars are
        // shown (a terminal), the span carries the node's progress bar.
        let span = info_span!(
            "node",
            address = %node.target.address(),
            indicatif.pb_show = tracing::field::Empty
        );
        let end = clean_once(&node, context, &mut outcome, stop.clone())
            .instrument(span)
            .await;
        let called = outcome.progress.counts.batches > calls_before;
        if matches!(end, End::Complete)
            && outcome.failovers.len() < MAX_FAILOVERS
            && let Some(new) = failed_over_during(&node, context, stop.clone()).await
        {
            let cause = Error::Replica(FAILED_OVER_DURING_THE_PASS.to_string());
            follow(&mut outcome, &new, &cause);
            node = new;
            // As after a fault: the old primary's work is lost, so an
            // attempt on the new one that --max-runtime stops before its
            // first call ends the node's work with it, and records no
            // success (see `cut_short`).
            fault = Some(cause);
            continue;
        }
        let err = match (end, fault.take()) {
            // --max-runtime ran out while a retry had not made a call yet:
            // the fault is how the node's work ended (see below).
            (end, Some(err)) if cut_short(&end, called) => {
                outcome.end = End::Failed(err);
                break;
            }
            (End::Failed(err), _) => err,
            (end, _) => {
                outcome.end = end;
                break;
            }
        };
        if switch_key_mode(&mut outcome, &err, task) {
            continue;
        }
        if outcome.progress.counts.batches > calls_before {
            backoff = self::backoff(task.retries);
        }
        let delay = match backoff.next() {
            Some(delay) if err.is_transient() => delay,
            _ => {
                outcome.end = End::Failed(err);
                break;
            }
        };
        warn!(
            node = %node.target.address(),
            error = %err,
            retry_in = ?delay,
            "a transient fault; the node's work is retried from its checkpoint"
        );
        // The delay, then where the node went (asking other servers, which
        // may stall too): a stop ends either.
        let stopped = pass::stop_comes(stop.clone(), task.pass.max_runtime, context.started);
        let retried = async {
            tokio::time::sleep(delay).await;
            relocate(&node, &err, context, outcome.failovers.len()).await
        };
        let relocated = tokio::select! {
            new = retried => Ok(new),
            stop = stopped => Err(stop),
        };
        let relocated = match relocated {
            Ok(relocated) => relocated,
            // --max-runtime ran out while the node was failing: the fault
            // is how its work ended.
            Err(Stop::MaxRuntime) => {
                outcome.end = End::Failed(err);
                break;
            }
            Err(signal) => {
                outcome.end = End::Stopped(signal);
                break;
            }
        };
        outcome.retries += 1;
        if let Some(new) = relocated {
            if new.target.address() != node.target.address() {
                follow(&mut outcome, &new, &err);
            }
            node = new;
        }
        fault = Some(err);
    }
    outcome.duration = started.elapsed();
    outcome
}

/// Switches the node to the declared-keys mode when `err` says the server
/// refuses the server-side variant and `--key-mode` is auto, and says so.
/// Nothing was applied: the refused call (or its first undeclared key)
/// failed before the script's first write (see `lua/<version>/clean.lua`).
fn switch_key_mode(outcome: &mut NodeOutcome, err: &Error, task: &Task) -> bool {
    let Error::Undeclared(refusal) = err else {
        return false;
    };
    if task.key_mode.is_some() || outcome.key_mode == KeyMode::Declared {
        return false;
    }
    warn!(
        %refusal,
        "the server refuses scripts that touch keys they do not declare; \
         switching to the declared-keys mode (--key-mode declared)"
    );
    outcome.key_mode = KeyMode::Declared;
    outcome.switched = Some(refusal.clone());
    true
}

/// Why a pass that completed on a Sentinel's primary is done again on
/// another (see [`failed_over_during`]).
const FAILED_OVER_DURING_THE_PASS: &str = "the Sentinels named another primary by the end of the \
     pass: the old one still took writes, which it loses when it becomes a replica of the new one";

/// The primary the Sentinels name after a writing pass completed on
/// `node`, if it is another node: after `SENTINEL FAILOVER` the old
/// primary goes on taking writes, without a fault the job could see, until
/// the Sentinels make it a replica of the new one, and then it drops them.
/// `None` for any other source, a dry run, and Sentinels that do not answer
/// within the timeout (a pass found no sign of a failover), or before a
/// signal: a stop does not wait for Sentinels that stall.
async fn failed_over_during(
    node: &Node,
    context: Context<'_>,
    stop: watch::Receiver<Option<Stop>>,
) -> Option<Node> {
    let task = context.task;
    if task.dry_run || node.role != Role::Primary || !matches!(context.source, Source::Sentinel(_))
    {
        return None;
    }
    let named = tokio::select! {
        named = named_by_sentinels(context, false) => named?,
        signal = pass::stop_comes(stop, None, context.started) => {
            debug!(?signal, "a stop came while the Sentinels were asked after the pass");
            return None;
        }
    };
    (named.target.address() != node.target.address()).then_some(named)
}

/// The node the Sentinels name now (the primary, or with `from_replicas`
/// a replica), asked within the timeout in all, as one command; `None`
/// when they do not answer in time.
async fn named_by_sentinels(context: Context<'_>, from_replicas: bool) -> Option<Node> {
    let timeout = context.task.timeout;
    let asked = topology::discover(context.source, timeout, from_replicas);
    match tokio::time::timeout(timeout, asked).await {
        Ok(Ok(mut nodes)) if !nodes.is_empty() => Some(nodes.swap_remove(0)),
        Ok(Ok(_)) => None,
        Ok(Err(err)) => {
            debug!(error = %err, "the Sentinels did not answer");
            None
        }
        Err(_) => {
            debug!("the Sentinels did not answer in time");
            None
        }
    }
}

/// Records in `outcome` that the node's primary failed over to `new`,
/// where a new pass starts.
fn follow(outcome: &mut NodeOutcome, new: &Node, cause: &dyn std::fmt::Display) {
    let failover = Failover {
        from: outcome.address.clone(),
        to: new.target.address(),
    };
    warn!(
        from = %failover.from,
        to = %failover.to,
        %cause,
        "the primary failed over; a new pass starts from cursor 0 on the new one"
    );
    outcome.address = failover.to.clone();
    outcome.role = new.role;
    outcome.failovers.push(failover);
}

/// The delays between `retries` retries: exponential from 100 ms to 5 s,
/// with jitter.
fn backoff(retries: usize) -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(retries)
        .with_jitter()
        .build()
}

/// Where `node` is after `err`: a cluster shard's new primary if it may
/// have failed over, the primary a Sentinel names now, or (`None`) the same
/// node.
async fn relocate(
    node: &Node,
    err: &Error,
    context: Context<'_>,
    failovers: usize,
) -> Option<Node> {
    if let Source::Sentinel(_) = context.source {
        // Within the timeout in all: a retry's delays stay what --retries
        // says. Without an answer, the same node is retried.
        return named_by_sentinels(context, node.role == Role::Replica).await;
    }
    if failovers >= MAX_FAILOVERS || !may_be_failover(node, err) {
        return None;
    }
    topology::new_primary(context.nodes, node, context.task.timeout)
        .await
        .ok()
        .flatten()
}

/// Whether `err` on `node` may mean its shard failed over: the node
/// became a replica (which refuses writes, or redirects the job's own keys
/// to the new primary), or it went away. Only a cluster says where its
/// shard went.
fn may_be_failover(node: &Node, err: &Error) -> bool {
    node.shard.is_some()
        && matches!(
            err,
            Error::Replica(_) | Error::Connection(_) | Error::Unavailable(_)
        )
}

/// Whether an attempt that ended so was cut short: --max-runtime ran out
/// before it made a call (`called`), so it cleaned nothing and saved no
/// checkpoint. It records no success, or the node's last success would
/// stay fresh while runs that never get to a call (a replica lagging for
/// the whole window, say) clean nothing. A retry cut short ends the node's
/// work with the fault it was retrying after (see `clean`).
fn cut_short(end: &End, called: bool) -> bool {
    !called && matches!(end, End::Stopped(Stop::MaxRuntime))
}

/// One attempt at `node`: prepare it and do its [`work`], adding to
/// `outcome`, then read the node's memory, keys and last success.
async fn clean_once(
    node: &Node,
    context: Context<'_>,
    outcome: &mut NodeOutcome,
    stop: watch::Receiver<Option<Stop>>,
) -> End {
    let task = context.task;
    // Nothing is written before the pass: a signal does not wait for a
    // server that stalls while the job connects and prepares (--max-runtime
    // does, within the timeout: see `run`).
    let signalled = pass::stop_comes(stop.clone(), None, context.started);
    let setup = async {
        let mut conn = node.target.connect(task.timeout).await?;
        let prepared = prepare(&mut conn, node, task, outcome).await?;
        Ok::<_, Error>((conn, prepared))
    };
    let (mut conn, prepared) = tokio::select! {
        setup = setup => match setup {
            Ok(setup) => setup,
            Err(err) => return End::Failed(err),
        },
        signal = signalled => return End::Stopped(signal),
    };
    let state_keys = lease::state_keys(prepared.slot);
    let end = work(
        &mut conn,
        &prepared,
        &state_keys,
        context,
        outcome,
        stop.clone(),
    )
    .await;
    // Whatever the ending: the node now, and its last success (this run's,
    // or an earlier one's), for the report.
    let after = async {
        outcome.at_end = snapshot(&mut conn).await.or(outcome.at_end);
        outcome.last_success_ms = last_success(&mut conn, &state_keys.history)
            .await
            .or(outcome.last_success_ms);
    };
    let _ = tokio::time::timeout(wrap_up_time(&end, &stop, context), after).await;
    outcome.run_id = Some(prepared.run_id);
    end
}

/// How long each step after a node's pass (giving its lease back, reading
/// the node for the report) may take: the timeout; at most
/// [`WRAP_UP_TIME`] once a stop is due or the pass lost its connection.
/// A server that stalled would hold each of them for the whole timeout,
/// and a stop would take several (the report and the push come after).
fn wrap_up_time(end: &End, stop: &watch::Receiver<Option<Stop>>, context: Context<'_>) -> Duration {
    let task = context.task;
    let stopping = pass::stop_due(stop, task.pass.max_runtime, context.started).is_some();
    match stopping || matches!(end, End::Stopped(_) | End::Failed(Error::Connection(_))) {
        true => task.timeout.min(WRAP_UP_TIME),
        false => task.timeout,
    }
}

/// The work of one attempt on a prepared node: take its lease and run the
/// pass from its checkpoint (or, in a dry run, from where the last attempt
/// on the same server process stopped), then give the lease back.
async fn work(
    conn: &mut MultiplexedConnection,
    prepared: &Prepared,
    state_keys: &StateKeys,
    context: Context<'_>,
    outcome: &mut NodeOutcome,
    stop: watch::Receiver<Option<Stop>>,
) -> End {
    let task = context.task;
    let script = outcome.script.clone().expect("prepared");
    let claim = Claim {
        keys: (!task.dry_run).then(|| state_keys.clone()),
        token: match task.lock_ttl {
            Some(_) if !task.dry_run => context.token.to_string(),
            _ => String::new(),
        },
        lease_ttl: task.lock_ttl.unwrap_or(lease::DEFAULT_LOCK_TTL),
    };
    let (pass_id, lease) = if task.dry_run {
        let start = dry_start(outcome, &prepared.run_id);
        outcome.progress.cursor = start.cursor;
        outcome.start = Some(start);
        (None, None)
    } else {
        match take(conn, &script, &claim, context, &prepared.run_id, outcome).await {
            Ok(Ok((pass_id, lease))) => (Some(pass_id), lease),
            Ok(Err(locked)) => return End::Locked(locked),
            Err(err) => return End::Failed(err),
        }
    };
    let calls_before = outcome.progress.counts.batches;
    let calls = Calls {
        script: &script,
        claim: &claim,
        pass: pass_id.as_ref(),
        lease,
        caps: context.caps,
        tables: &prepared.tables,
    };
    let end = pass::run(
        conn.clone(),
        &task.rules,
        calls,
        &task.pass,
        context.started,
        stop.clone(),
        &mut outcome.progress,
    )
    .await;
    // Whatever the ending: a retry takes the lease again (or finds another
    // run cleaning the node, which is as good); a crashed run's lease
    // expires by itself after --lock-ttl. A success is recorded, with or
    // without a lease; not for an attempt cut short (see `cut_short`).
    let called = outcome.progress.counts.batches > calls_before;
    let succeeded = end.succeeded() && !cut_short(&end, called);
    if claim.keys.is_some() && (!claim.token.is_empty() || succeeded) {
        let released = release(conn, &script, &claim, succeeded);
        match tokio::time::timeout(wrap_up_time(&end, &stop, context), released).await {
            Ok(resent) => outcome.progress.counts.script_reloads += u64::from(resent),
            Err(_) => debug!("the lease could not be given back in time; it expires by itself"),
        }
    }
    end
}

/// What a node the run stopped before cleaning is like: its server, keys
/// and memory, and its last success, for the report and the metrics (a
/// push replaces the run's whole group: a node missing from it would lose
/// its last success there). Best effort: what the node does not answer,
/// the report shows as unknown.
async fn glance(node: &Node, task: &Task, outcome: &mut NodeOutcome) {
    let Ok(mut conn) = node.target.connect(task.timeout).await else {
        return;
    };
    let Ok(server) = topology::info(&mut conn, &outcome.address, "server").await else {
        return;
    };
    outcome.server = Some(server_info(&server, &outcome.address));
    outcome.at_start = snapshot(&mut conn).await;
    outcome.at_end = outcome.at_start;
    let slot = match &node.shard {
        None => None,
        Some(_) => {
            if node.role == Role::Replica {
                // A cluster replica serves reads only to a connection that asks.
                let _ = redis::cmd("READONLY").exec_async(&mut conn).await;
            }
            let slots = topology::served_slots(&mut conn, node, &server).await;
            let Some(&(slot, _)) = slots.as_deref().ok().and_then(<[_]>::first) else {
                return;
            };
            Some(slot)
        }
    };
    let history = lease::state_keys(slot).history;
    outcome.last_success_ms = last_success(&mut conn, &history).await;
}

/// The node's memory and keys now; `None` if it does not answer (the
/// report then shows none).
async fn snapshot(conn: &mut MultiplexedConnection) -> Option<Snapshot> {
    let memory: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .ok()?;
    let keys: u64 = redis::cmd("DBSIZE").query_async(conn).await.ok()?;
    Some(Snapshot {
        used_memory: field(&memory, "used_memory")?.parse().ok()?,
        keys,
    })
}

/// When a run last cleaned the node successfully, from its `history` key.
async fn last_success(conn: &mut MultiplexedConnection, history: &[u8]) -> Option<u64> {
    let ms: Option<u64> = redis::cmd("HGET")
        .arg(history)
        .arg("last_success")
        .query_async(conn)
        .await
        .inspect_err(|err| debug!(error = %err, "the node's last success could not be read"))
        .ok()?;
    ms
}

/// Takes the node's lease (unless `--no-lock`) and decides from its
/// checkpoint where the pass starts, recorded in `outcome.start`: the pass,
/// and the server's clock as the run took the lease (none without one).
/// Another run's lease: who holds it, and since when.
async fn take(
    conn: &mut MultiplexedConnection,
    script: &Script,
    claim: &Claim,
    context: Context<'_>,
    run_id: &str,
    outcome: &mut NodeOutcome,
) -> Result<Result<(PassId, Option<LeaseClock>), Locked>, Error> {
    let task = context.task;
    let sent = Instant::now();
    let (acquired, resent): (Acquired, bool) = script
        .call(
            conn,
            claim,
            Op::Acquire {
                holder: context.holder,
            },
        )
        .await?;
    outcome.progress.counts.script_reloads += u64::from(resent);
    match acquired.lease {
        LeaseState::Held => {}
        LeaseState::Locked => {
            let locked = Locked {
                holder: acquired.holder,
                since: acquired.since_ms.map(|ms| ms as f64 / 1000.0),
            };
            info!(
                holder = %locked,
                "another run holds the node's lease; the node is skipped"
            );
            return Ok(Err(locked));
        }
        LeaseState::Refused => {
            // Retried: the next attempt may find memory freed.
            return Err(Error::Unavailable(format!(
                "the server refused to write the lease: {}",
                acquired.holder
            )));
        }
    }
    let stored = Checkpoint::parse(&acquired.checkpoint);
    // --restart asks for a new pass once: a retry in the same run resumes
    // the pass this run began, once a call of it saved the checkpoint.
    // Until then the checkpoint is still the pass --restart left, which a
    // retry must not resume.
    let own_pass = outcome
        .start
        .as_ref()
        .zip(stored.as_ref())
        .is_some_and(|(began, stored)| stored.started_ms == began.started_ms);
    let start = checkpoint::start(
        stored.as_ref(),
        checkpoint::Wanted {
            fingerprint: &script.fingerprint,
            run_id,
            now_ms: acquired.now_ms,
            max_age: task.resume_max_age,
            restart: task.restart && !own_pass,
        },
    );
    info!(
        resumed = start.resumed,
        cursor = start.cursor,
        reason = %start.reason,
        "pass {}",
        if start.resumed { "resumed" } else { "begins" }
    );
    let pass_id = PassId {
        fingerprint: script.fingerprint.clone(),
        run_id: run_id.to_string(),
        started_ms: start.started_ms,
        max_age: task.resume_max_age,
    };
    charge_lost(outcome, stored.as_ref(), &start, context.caps).await;
    outcome.progress.cursor = start.cursor;
    // A retry that resumes the pass this run began keeps the run's start:
    // the report says how the run's pass began, not how a retry went on.
    let began_here = outcome
        .start
        .as_ref()
        .is_some_and(|began| began.started_ms == start.started_ms && start.resumed);
    if !began_here {
        outcome.start = Some(start);
    }
    let clock =
        (!claim.token.is_empty()).then(|| LeaseClock::new(acquired.now_ms, sent, claim.lease_ttl));
    Ok(Ok((pass_id, clock)))
}

/// Charges to the caps what calls whose replies were lost acted on: a retry
/// that resumes the pass the node's last attempt ran finds its checkpoint
/// past what the job counted since that attempt took the lease, by the keys
/// those calls acted on (each saved the checkpoint with its work). Records
/// where this attempt starts from. See `cap`.
async fn charge_lost(
    outcome: &mut NodeOutcome,
    stored: Option<&Checkpoint>,
    start: &Start,
    caps: &Caps,
) {
    let counted = outcome.progress.counts.per_rule.iter().sum();
    let checkpoint = match stored {
        Some(stored) if start.resumed => stored.acted,
        _ => 0,
    };
    if let Some(last) = outcome.acted_at_take
        && start.resumed
        && last.pass_started_ms == start.started_ms
    {
        let expected = last.checkpoint + (counted - last.counted);
        let lost = checkpoint.saturating_sub(expected);
        if lost > 0 {
            warn!(
                keys = lost,
                "calls whose replies were lost acted on keys the report does not count; \
                 the caps count them"
            );
            caps.charge_lost(lost).await;
        }
    }
    outcome.acted_at_take = Some(ActedAt {
        pass_started_ms: start.started_ms,
        checkpoint,
        counted,
    });
}

/// Where a dry run's pass starts: where its last attempt stopped, on the
/// same server process; else cursor 0. A dry run writes nothing, so its
/// cursor lives in memory only.
fn dry_start(outcome: &NodeOutcome, run_id: &str) -> Start {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    match &outcome.start {
        Some(start) if outcome.run_id.as_deref() == Some(run_id) => Start {
            cursor: outcome.progress.cursor,
            reason: "a dry run resumes where its last attempt stopped, in memory".into(),
            ..start.clone()
        },
        _ => Start {
            cursor: 0,
            started_ms: now.as_millis() as u64,
            started_at: now.as_secs_f64(),
            resumed: false,
            reason: "a dry run keeps its cursor in memory only: it starts from cursor 0".into(),
        },
    }
}

/// Gives the lease back, so the next run need not wait for it to expire,
/// and records the node's last success when the work `succeeded`. A
/// failure only costs that wait (and that record). Answers whether the call
/// had to send the script's text again.
async fn release(
    conn: &mut MultiplexedConnection,
    script: &Script,
    claim: &Claim,
    succeeded: bool,
) -> bool {
    let op = Op::Release { succeeded };
    match script.call::<i64>(conn, claim, op).await {
        Ok((_, resent)) => resent,
        Err(err) => {
            debug!(error = %err, "the lease could not be given back; it expires by itself");
            false
        }
    }
}

/// What the pass needs to know about the server, learnt while preparing.
struct Prepared {
    /// The server process's `run_id`.
    run_id: String,
    /// On a cluster node: a slot it serves now, for its state keys.
    slot: Option<u16>,
    /// How it keeps its keys in hash tables, to read its cursors.
    tables: Tables,
}

/// Everything before the first call, recorded in `outcome` as it is learnt.
async fn prepare(
    conn: &mut MultiplexedConnection,
    node: &Node,
    task: &Task,
    outcome: &mut NodeOutcome,
) -> Result<Prepared, Error> {
    let address = outcome.address.clone();
    let server = topology::info(conn, &address, "server").await?;
    if topology::is_cluster(&server) != (node.layout == Layout::Cluster) {
        return Err(Error::Unsupported(format!(
            "{address} changed between cluster and standalone mode during the run"
        )));
    }
    let dialect = Dialect::for_version(field(&server, "redis_version").unwrap_or_default());
    let info = server_info(&server, &address);
    outcome.server = Some(info.clone());
    if task.rules.uses_idle_time() {
        refuse_lfu(conn, &address, &task.rules).await?;
    }
    let mode = if task.dry_run {
        Mode::ReadOnly
    } else {
        Mode::Write
    };
    if mode == Mode::ReadOnly && node.layout == Layout::Cluster {
        // A cluster replica serves reads only to a connection that asks.
        redis::cmd("READONLY")
            .exec_async(conn)
            .await
            .map_err(|err| Command::Readonly.refused(&address, &err))?;
    }
    let script = outcome.script.insert(Script::clean(
        &task.rules,
        mode,
        dialect,
        node.layout,
        outcome.key_mode,
    )?);
    let mut needed = acl::needed(&task.rules, mode, dialect);
    if task.pass.estimate_freed {
        needed.push(Command::MemoryUsage);
    }
    acl::probe(conn, &address, &needed).await?;
    if outcome.at_start.is_none() {
        outcome.at_start = snapshot(conn).await;
    }
    script
        .load(conn)
        .await
        .map_err(|err| Command::ScriptLoad.advise(err))?;
    // A cluster node's slots: the first holds the node's own keys (a dry
    // run reads its history there), and on a node with one table per slot
    // they tell how far a cursor has gone.
    let slots = match &node.shard {
        Some(_) => topology::served_slots(conn, node, &server).await?,
        None => Vec::new(),
    };
    let slot = slots.first().map(|range| range.0);
    let tables = match node.shard {
        Some(_) => Tables::of_cluster_node(&info.software, &info.version, slots),
        None => Tables::One,
    };
    info!(
        server = %info,
        script = %script.name,
        script_version = %script.version,
        script_sha = %script.sha,
        variant = %script.variant(),
        role = ?node.role,
        rules = %task.rules.source,
        dry_run = task.dry_run,
        "pass started"
    );
    Ok(Prepared {
        run_id: field(&server, "run_id").unwrap_or_default().to_string(),
        slot,
        tables,
    })
}

/// Refuses rules that need idle times on a server under an LFU policy,
/// where Redis does not track them.
async fn refuse_lfu(
    conn: &mut MultiplexedConnection,
    address: &str,
    rules: &Rules,
) -> Result<(), Error> {
    let memory = topology::info(conn, address, "memory").await?;
    let policy = field(&memory, "maxmemory_policy").unwrap_or_default();
    match rules
        .rules
        .iter()
        .find(|r| r.conditions.idle_above.is_some())
    {
        Some(rule) if policy.contains("lfu") => Err(Error::Unsupported(format!(
            "rule {:?} uses idle_above, but {address} has maxmemory-policy {policy}: \
             Redis does not track idle time under an LFU policy; nothing was touched",
            rule.name
        ))),
        _ => Ok(()),
    }
}

/// What `INFO server` says the server is. Valkey reports a Redis version
/// for compatibility (`redis_version:7.2.4`) beside its own.
fn server_info(server: &str, address: &str) -> ServerInfo {
    let (software, version) = match field(server, "valkey_version") {
        Some(version) => ("Valkey", version),
        None => ("Redis", field(server, "redis_version").unwrap_or("unknown")),
    };
    ServerInfo {
        address: address.to_string(),
        software: software.to_string(),
        version: version.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::TlsOptions;
    use crate::topology::Shard;

    fn node(shard: Option<Shard>) -> Node {
        Node {
            target: Target::resolve(Some("redis://h:1"), None, None, &TlsOptions::default())
                .unwrap(),
            role: Role::Primary,
            layout: Layout::Cluster,
            shard,
        }
    }

    #[test]
    fn retries_wait_100_ms_to_5_s_with_a_jitter_of_their_own() {
        let delays: Vec<Duration> = backoff(DEFAULT_RETRIES).collect();
        assert_eq!(delays.len(), DEFAULT_RETRIES);
        // Jitter adds up to the delay itself.
        assert!(delays[0] >= Duration::from_millis(100) && delays[0] <= Duration::from_millis(200));
        assert!(delays.iter().all(|&d| d <= Duration::from_secs(10)));
        // Each node's (and each process's) retries draw their own jitter,
        // or nodes and jobs failing together would retry in lockstep.
        assert_ne!(delays, backoff(DEFAULT_RETRIES).collect::<Vec<_>>());
    }

    #[test]
    fn only_a_lost_node_or_a_demoted_one_of_a_cluster_shard_may_have_failed_over() {
        let shard = Shard {
            primary: "p".into(),
            ids: vec!["p".into(), "r".into()],
        };
        let clustered = node(Some(shard));
        let alone = node(None);
        let gone = Error::Connection("gone".into());
        let demoted = Error::Replica("READONLY".into());
        assert!(may_be_failover(&clustered, &gone));
        assert!(may_be_failover(&clustered, &demoted));
        assert!(!may_be_failover(&alone, &gone));
        assert!(!may_be_failover(&alone, &demoted));
        // A script error, a refused permission: no new primary would help,
        // so the run fails at once instead of asking the cluster.
        for err in [
            Error::Script("x".into()),
            Error::Permission("x".into()),
            Error::Auth("x".into()),
        ] {
            assert!(!may_be_failover(&clustered, &err), "{err}");
        }
    }

    #[test]
    fn valkey_is_named_with_its_own_version() {
        let valkey =
            "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.1.8\r\n";
        assert_eq!(server_info(valkey, "h:1").to_string(), "h:1 (Valkey 8.1.8)");
        let redis = "# Server\r\nredis_version:8.2.3\r\n";
        assert_eq!(server_info(redis, "h:1").to_string(), "h:1 (Redis 8.2.3)");
    }
}
