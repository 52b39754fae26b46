//! Faults met for real in the middle of a pass, each ending in the exact
//! expected keyspace after at most the next run: the server restarted on its
//! port (with its data, or back from an older snapshot), stalled longer than
//! `--timeout` (`CLIENT PAUSE`, `DEBUG SLEEP`), busy with another client's
//! script (`BUSY`), its script cache flushed and its scripts killed in a
//! loop, its primary crashed and a replica promoted by the Sentinels, and
//! SIGTERM while a call is held in the server.
//!
//! A transient fault is retried (`servers[i].retries`) from the checkpoint:
//! the pass resumes on the same server process, and starts over from cursor
//! 0 on another one (another `run_id`), because an old cursor would skip
//! keys there. A fault that is not transient fails the run with one line,
//! and the next run completes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::support::*;

/// How long a test waits for a pass to reach a point.
const WAIT: Duration = Duration::from_secs(20);

/// A keyspace of string keys for the built-in rules: `cache:N` without a
/// TTL (each gets one of an hour), `temp:N` (deleted) and `keep:N` (no rule
/// selects them).
struct Seeded {
    cache: u64,
    temp: u64,
    keep: u64,
    /// When the keys were written: no TTL the job gave can have run down
    /// further than the time since.
    at: Instant,
}

fn populated(con: &mut redis::Connection, cache: u64, temp: u64, keep: u64) -> Seeded {
    // MSET, not DEBUG POPULATE, which a replica never gets.
    for (prefix, count) in [("cache", cache), ("temp", temp), ("keep", keep)] {
        for first in (0..count).step_by(1000) {
            let mut mset = redis::cmd("MSET");
            for i in first..(first + 1000).min(count) {
                mset.arg(format!("{prefix}:{i}")).arg("v");
            }
            mset.exec(con).expect("MSET");
        }
    }
    Seeded {
        cache,
        temp,
        keep,
        at: Instant::now(),
    }
}

/// The keyspace is exactly what the built-in rules make of `seeded`: every
/// `cache:N` with a TTL the job gave since the keys were written (an hour
/// at most, and no less than an hour minus the time since, with a margin), every `keep:N`
/// without one, and nothing else (no `temp:N`).
#[track_caller]
fn assert_cleaned(con: &mut redis::Connection, seeded: &Seeded) {
    let after = keyspace(con);
    // A margin for the server's clock, which it reads once per command.
    let since = seeded.at.elapsed().as_millis() as i64 + 2_000;
    let ttls = (3_600_000 - since)..=3_600_000;
    let mut wrong: Vec<String> = Vec::new();
    for i in 0..seeded.cache {
        let key = format!("cache:{i}");
        match after.get(key.as_bytes()) {
            None => wrong.push(format!("missing    {key}")),
            Some(s) if !ttls.contains(&s.pttl) => wrong.push(format!(
                "different  {key}: pttl {} ms, want {ttls:?}",
                s.pttl
            )),
            Some(_) => {}
        }
    }
    for i in 0..seeded.keep {
        let key = format!("keep:{i}");
        match after.get(key.as_bytes()) {
            None => wrong.push(format!("missing    {key}")),
            Some(s) if s.pttl != -1 => {
                wrong.push(format!("different  {key}: pttl {} ms, want none", s.pttl))
            }
            Some(_) => {}
        }
    }
    let seeded_key = |key: &[u8]| {
        let key = String::from_utf8_lossy(key);
        let number = |prefix: &str| key.strip_prefix(prefix)?.parse::<u64>().ok();
        number("cache:").is_some_and(|n| n < seeded.cache)
            || number("keep:").is_some_and(|n| n < seeded.keep)
    };
    wrong.extend(
        after
            .keys()
            .filter(|key| !seeded_key(key))
            .map(|key| format!("unexpected {}", show(key))),
    );
    assert!(
        wrong.is_empty(),
        "the keyspace is not what the rules make of {} cache, {} temp and {} keep keys: {} \
         wrong keys, e.g.\n{}",
        seeded.cache,
        seeded.temp,
        seeded.keep,
        wrong.len(),
        wrong[..wrong.len().min(20)].join("\n")
    );
}

/// Waits until the pass has saved a checkpoint in the middle of the
/// keyspace (cursor not 0), and returns it; panics if the job ended first.
#[track_caller]
pub(crate) fn wait_for_checkpoint(
    running: &mut Running,
    con: &mut redis::Connection,
) -> BTreeMap<String, String> {
    let mut saved = None;
    wait_until(WAIT, "a checkpoint in the middle of the pass", || {
        saved = checkpoint(con).filter(|c| c["cursor"] != "0");
        saved.is_some() || running.exited()
    });
    assert!(
        !running.exited(),
        "the pass ended before the fault could land\n{}",
        running.stderr_so_far()
    );
    saved.unwrap()
}

/// Waits until the checkpoint records at least `calls` calls of the pass.
#[track_caller]
fn wait_for_calls(running: &mut Running, con: &mut redis::Connection, calls: u64) {
    wait_until(WAIT, "more calls of the pass", || {
        running.exited()
            || checkpoint(con)
                .is_some_and(|c| c["calls"].parse::<u64>().unwrap() >= calls && c["cursor"] != "0")
    });
    assert!(
        !running.exited(),
        "the pass ended before the fault could land\n{}",
        running.stderr_so_far()
    );
}

/// The report's only server entry.
#[track_caller]
fn only_server(report: &Json) -> &Json {
    let servers = report["servers"].as_array().expect("servers");
    assert_eq!(servers.len(), 1, "{report:#}");
    &servers[0]
}

/// A run that met a transient fault, retried and completed: exit 0, at
/// least one retry, a warning naming the fault. Returns its server entry.
#[track_caller]
fn assert_retried_and_complete(out: &Outcome) -> Json {
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["complete"], true, "{report:#}");
    let server = only_server(&report).clone();
    assert!(
        server["retries"].as_u64().unwrap() >= 1,
        "no retry after the fault: {report:#}"
    );
    assert!(
        out.stderr
            .contains("a transient fault; the node's work is retried from its checkpoint"),
        "{}",
        out.dump()
    );
    assert_matched_accounted(&report);
    server
}

/// A retry in the run went on with the run's pass from its checkpoint, on
/// the same server process (the report's `pass` tells how the run's pass
/// began; each attempt logs where it starts).
#[track_caller]
fn assert_retry_resumed(out: &Outcome) {
    assert!(
        out.stderr_lines()
            .iter()
            .any(|l| l.contains("pass resumed") && l.contains("reason=resumed the pass begun")),
        "{}",
        out.dump()
    );
}

/// The pass was resumed from an earlier run's checkpoint on the same server
/// process.
#[track_caller]
fn assert_resumed(server: &Json) {
    assert_eq!(server["pass"]["resumed"], true, "{server:#}");
    assert_ne!(server["pass"]["cursor"], 0, "{server:#}");
    assert!(
        server["pass"]["reason"]
            .as_str()
            .unwrap()
            .contains("resumed the pass"),
        "{server:#}"
    );
}

/// The pass started over from cursor 0: the checkpoint was another server
/// process's.
#[track_caller]
fn assert_started_over(server: &Json) {
    assert_eq!(server["pass"]["resumed"], false, "{server:#}");
    assert_eq!(server["pass"]["cursor"], 0, "{server:#}");
    assert!(
        server["pass"]["reason"]
            .as_str()
            .unwrap()
            .contains("another run_id"),
        "{server:#}"
    );
}

/// A run that failed fast: exit 1, a report whose `error` is one line, and
/// that line last on stderr. Returns the error.
#[track_caller]
fn assert_failed(out: &Outcome) -> String {
    out.assert_code(1);
    let report = out.report();
    let error = report["error"].as_str().expect("report.error").to_string();
    let last = out.stderr_lines().pop().unwrap_or_default();
    assert_eq!(
        last,
        format!("redis-janitor: error: {error}"),
        "{}",
        out.dump()
    );
    error
}

// ---------------------------------------------------------------------------
// a restart on the same port
// ---------------------------------------------------------------------------

/// The server restarts on its port mid-pass, its data back from `dump.rdb`
/// with the checkpoint of the old process: the job retries until the new
/// process answers, sees another `run_id` in the checkpoint, and starts a
/// new pass from cursor 0, which completes. With [`Halt::Kill`] the data
/// come back from a snapshot taken a few calls before the crash, so the
/// work of those calls is lost and done again.
fn restarted_mid_pass(halt: Halt) {
    let mut server = RedisServer::start();
    let mut con = server.conn();
    let seeded = populated(&mut con, 10_000, 3_000, 1_000);
    let old_run_id = server.run_id();
    let mut running = run_json(&server.url())
        .args(["--rate-limit", "10000"])
        .start();
    let saved = wait_for_checkpoint(&mut running, &mut con);
    if let Halt::Kill = halt {
        redis::cmd("SAVE").exec(&mut con).unwrap();
        let calls: u64 = saved["calls"].parse().unwrap();
        wait_for_calls(&mut running, &mut con, calls + 3);
    }
    drop(con);
    server.restart(halt, &[]);
    let new_run_id = server.run_id();
    assert_ne!(new_run_id, old_run_id);

    let out = running.wait();
    let server_entry = assert_retried_and_complete(&out);
    assert_started_over(&server_entry);
    assert!(server_entry["failovers"].as_array().unwrap().is_empty());
    let report = out.report();
    let expired = rule_keys(&report, "cache-missing-ttl");
    match halt {
        // Nothing was lost: no key was acted on twice (a call whose reply
        // the shutdown cut is done, but not counted).
        Halt::Shutdown => assert!(
            expired <= seeded.cache && rule_keys(&report, "temp") <= seeded.temp,
            "{report:#}"
        ),
        // The calls after the snapshot were lost with the crash, and done
        // again by the new pass.
        Halt::Kill => assert!(expired > seeded.cache, "{report:#}"),
    }
    let mut con = server.conn();
    assert_cleaned(&mut con, &seeded);
    let after = checkpoint(&mut con).expect("a checkpoint after the pass");
    assert_eq!(
        (&*after["cursor"], &*after["done"]),
        ("0", "1"),
        "{after:?}"
    );
    assert_eq!(after["run_id"], new_run_id, "{after:?}");
}

#[test]
fn a_server_restarted_mid_pass_with_its_data_gets_a_new_pass_from_cursor_0() {
    restarted_mid_pass(Halt::Shutdown);
}

#[test]
fn a_server_crashed_mid_pass_and_back_from_an_older_snapshot_is_cleaned_by_a_new_pass() {
    restarted_mid_pass(Halt::Kill);
}

// ---------------------------------------------------------------------------
// a server that stalls longer than --timeout
// ---------------------------------------------------------------------------

/// The server stalls (`stall`) for a second mid-pass, with `--timeout
/// 300ms`: the call times out, the job retries until the server answers
/// again, and resumes the pass from its checkpoint on the same process.
fn stalled_longer_than_the_timeout(stall: fn(&mut redis::Connection)) {
    let server = RedisServer::start();
    let mut con = server.conn();
    let seeded = populated(&mut con, 10_000, 3_000, 1_000);
    let mut running = run_json(&server.url())
        .args(["--timeout", "300ms", "--rate-limit", "10000"])
        .start();
    wait_for_checkpoint(&mut running, &mut con);
    stall(&mut con);
    let out = running.wait();
    assert_retried_and_complete(&out);
    assert_retry_resumed(&out);
    assert!(
        out.stderr.contains("timed out"),
        "the warning should say the call timed out\n{}",
        out.dump()
    );
    assert_cleaned(&mut con, &seeded);
}

#[test]
fn client_pause_all_longer_than_the_timeout_is_retried_and_the_pass_resumes() {
    stalled_longer_than_the_timeout(|con| {
        redis::cmd("CLIENT")
            .arg(&["PAUSE", "1000", "ALL"])
            .exec(con)
            .unwrap();
    });
}

#[test]
fn client_pause_write_longer_than_the_timeout_is_retried_and_the_pass_resumes() {
    stalled_longer_than_the_timeout(|con| {
        redis::cmd("CLIENT")
            .arg(&["PAUSE", "1000", "WRITE"])
            .exec(con)
            .unwrap();
    });
}

#[test]
fn debug_sleep_longer_than_the_timeout_is_retried_and_the_pass_resumes() {
    stalled_longer_than_the_timeout(|con| {
        redis::cmd("DEBUG").arg(&["SLEEP", "1"]).exec(con).unwrap();
    });
}

/// The job's connection drops mid-pass while the server holds writes
/// (`CLIENT PAUSE WRITE`) past `--max-runtime`: the retry connects, waits
/// for the pause, takes the lease and stops before its first call. The
/// fault ends the node's work (exit 1), and a failed run leaves the node's
/// history as it was: the retry that made no call records no success.
#[test]
fn a_retry_stopped_by_max_runtime_before_its_first_call_records_no_success() {
    let server = RedisServer::start();
    let mut con = server.conn();
    populated(&mut con, 10_000, 3_000, 1_000);
    let mut running = run_json(&server.url())
        .args(["--rate-limit", "2000", "--max-runtime", "3s"])
        .args(["--timeout", "20s"])
        .start();
    wait_for_checkpoint(&mut running, &mut con);
    redis::cmd("CLIENT")
        .arg(&["PAUSE", "5000", "WRITE"])
        .exec(&mut con)
        .unwrap();
    let killed: u64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
        .query(&mut con)
        .unwrap();
    assert!(killed >= 1);
    let out = running.wait();
    assert_failed(&out);
    let report = out.report();
    assert_eq!(report["complete"], false, "{report:#}");
    assert!(
        only_server(&report)["retries"].as_u64().unwrap() >= 1,
        "{report:#}"
    );
    let history: Option<String> = redis::cmd("HGET")
        .arg(redis_janitor::lease::state_keys(None).history)
        .arg("last_success")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        history,
        None,
        "a failed run recorded a success\n{}",
        out.dump()
    );
    assert!(
        only_server(&report)["last_success_at"].is_null(),
        "{report:#}"
    );
}

/// The other side of the rule above: the job's connection drops mid-pass,
/// the retry resumes the pass and makes calls, and then `--max-runtime`
/// runs out. The retry went on with the work, so the run ends as a planned
/// stop (exit 0, `stopped_by` max_runtime) that records the node's success,
/// as a first attempt stopped so does.
#[test]
fn a_retry_that_made_calls_and_was_stopped_by_max_runtime_records_a_success() {
    let server = RedisServer::start();
    let mut con = server.conn();
    populated(&mut con, 10_000, 3_000, 1_000);
    let mut running = run_json(&server.url())
        .args(["--rate-limit", "2000", "--max-runtime", "3s"])
        .start();
    let saved = wait_for_checkpoint(&mut running, &mut con);
    let calls_before: u64 = saved["calls"].parse().unwrap();
    let killed: u64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
        .query(&mut con)
        .unwrap();
    assert!(killed >= 1);
    // The retry resumes and calls on before --max-runtime runs out.
    wait_for_calls(&mut running, &mut con, calls_before + 3);
    let out = running.wait();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["stopped_by"], "max_runtime", "{report:#}");
    assert_eq!(report["complete"], false, "{report:#}");
    let server_entry = only_server(&report);
    assert!(server_entry["retries"].as_u64().unwrap() >= 1, "{report:#}");
    assert_retry_resumed(&out);
    let history: Option<String> = redis::cmd("HGET")
        .arg(redis_janitor::lease::state_keys(None).history)
        .arg("last_success")
        .query(&mut con)
        .unwrap();
    assert!(
        history.is_some(),
        "a retry that made calls and stopped at --max-runtime recorded no success\n{}",
        out.dump()
    );
    assert!(server_entry["last_success_at"].is_number(), "{report:#}");
}

// ---------------------------------------------------------------------------
// BUSY
// ---------------------------------------------------------------------------

/// Runs a script on `server` that holds it for `millis` without writing.
fn busy_script(server: &RedisServer, millis: u64) -> thread::JoinHandle<()> {
    let mut con = server.conn();
    thread::spawn(move || {
        redis::cmd("EVAL")
            .arg(
                "local function now() local t = redis.call('TIME') \
                 return t[1] * 1000000 + t[2] end \
                 local from = now() \
                 repeat until now() - from > tonumber(ARGV[1]) * 1000 \
                 return 1",
            )
            .arg(0)
            .arg(millis)
            .exec(&mut con)
            .expect("the busy script");
    })
}

#[test]
fn a_server_busy_with_another_clients_script_is_retried_until_it_answers() {
    let server = RedisServer::start();
    let mut con = server.conn();
    // Other clients get BUSY once a script has run for 100 ms.
    redis::cmd("CONFIG")
        .arg(&["SET", "lua-time-limit", "100"])
        .exec(&mut con)
        .unwrap();
    let seeded = populated(&mut con, 10_000, 3_000, 1_000);
    let mut running = run_json(&server.url())
        .args(["--rate-limit", "10000"])
        .start();
    wait_for_checkpoint(&mut running, &mut con);
    let busy = busy_script(&server, 1_500);
    let line = running.wait_for_stderr(WAIT, |l| l.contains("a transient fault"));
    assert!(
        line.as_deref().is_some_and(|l| l.contains("BUSY")),
        "the job should retry after BUSY: {line:?}\n{}",
        running.stderr_so_far()
    );
    busy.join().unwrap();
    let out = running.wait();
    assert_retried_and_complete(&out);
    assert_retry_resumed(&out);
    assert_cleaned(&mut con, &seeded);
}

// ---------------------------------------------------------------------------
// SCRIPT KILL and SCRIPT FLUSH in a loop
// ---------------------------------------------------------------------------

/// What the SCRIPT KILLs and FLUSHes of [`kill_and_flush_in_a_loop`] got.
#[derive(Debug, Default)]
struct Killer {
    /// SCRIPT KILLs that killed a script (OK).
    killed: AtomicU64,
    /// SCRIPT KILLs that reached a script that had written (UNKILLABLE).
    unkillable: AtomicU64,
    /// SCRIPT KILLs that found no script running past the threshold.
    not_busy: AtomicU64,
    /// SCRIPT FLUSHes done (not refused with BUSY).
    flushed: AtomicU64,
}

/// Runs `job` while another client sends SCRIPT KILL and SCRIPT FLUSH in a
/// loop, with a busy threshold of 1 ms, so that every call of the job's that
/// runs longer can be asked to die. With `kill_after_checkpoint` the kills
/// wait for the pass's first checkpoint in the middle of the keyspace.
/// Returns the job's outcome and what the loop got.
fn kill_and_flush_in_a_loop(
    server: &RedisServer,
    job: Janitor,
    kill_after_checkpoint: bool,
) -> (Outcome, Killer) {
    redis::cmd("CONFIG")
        .arg(&["SET", "lua-time-limit", "1"])
        .exec(&mut server.conn())
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let killer = Arc::new(Killer::default());
    let looping = {
        let (stop, killer) = (Arc::clone(&stop), Arc::clone(&killer));
        let mut con = server.conn();
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(50);
            let checkpoint_key = redis_janitor::lease::state_keys(None).checkpoint;
            let mut armed = !kill_after_checkpoint;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if !armed {
                    // BUSY while a call runs past the threshold: not yet.
                    let cursor: redis::RedisResult<Option<u64>> = redis::cmd("HGET")
                        .arg(&checkpoint_key)
                        .arg("cursor")
                        .query(&mut con);
                    armed = matches!(cursor, Ok(Some(c)) if c != 0);
                } else {
                    match redis::cmd("SCRIPT").arg("KILL").exec(&mut con) {
                        Ok(()) => &killer.killed,
                        Err(err) if err.code() == Some("UNKILLABLE") => &killer.unkillable,
                        Err(err) if err.code() == Some("NOTBUSY") => &killer.not_busy,
                        Err(err) => panic!("SCRIPT KILL: {err}"),
                    }
                    .fetch_add(1, Ordering::Relaxed);
                }
                match redis::cmd("SCRIPT").arg("FLUSH").exec(&mut con) {
                    Ok(()) => {
                        killer.flushed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(err) if err.code() == Some("BUSY") => {}
                    Err(err) => panic!("SCRIPT FLUSH: {err}"),
                }
            }
        })
    };
    // The loop must be under way before the job starts.
    wait_until(WAIT, "the first SCRIPT FLUSH", || {
        killer.flushed.load(Ordering::Relaxed) > 0
    });
    let out = job.run();
    stop.store(true, Ordering::Relaxed);
    looping.join().unwrap();
    redis::cmd("CONFIG")
        .arg(&["SET", "lua-time-limit", "5000"])
        .exec(&mut server.conn())
        .unwrap();
    let killer = Arc::try_unwrap(killer).unwrap();
    (out, killer)
}

/// Calls that run long enough (10 ms, many keys each) to be asked to die,
/// one after the other. A declared-keys step's round trip spends that time
/// on its SCAN and its call together, so its call gets 30 ms.
fn long_calls() -> [&'static str; 6] {
    let max_call_time = if declared_mode() { "30ms" } else { "10ms" };
    [
        "--max-call-time",
        max_call_time,
        "--batch-size",
        "100000",
        "--max-server-share",
        "1",
    ]
}

#[test]
fn script_kill_and_flush_in_a_loop_cannot_stop_a_run_that_holds_the_lease() {
    if declared_mode() {
        // A declared call holds no lease (the job's keys are in another
        // slot), so SCRIPT KILL may kill it before its first write, as it
        // may without a lease: that case is
        // `script_kill_may_end_a_run_without_the_lease_and_the_next_run_completes`.
        return;
    }
    // The loop may miss every call of a run on a loaded machine (its thread
    // is not scheduled while the job's few calls run): up to five runs, each
    // of which must complete untouched, until a SCRIPT KILL meets a call.
    for _ in 0..5 {
        let server = RedisServer::start();
        let mut con = server.conn();
        let seeded = populated(&mut con, 60_000, 20_000, 5_000);
        let (out, killer) =
            kill_and_flush_in_a_loop(&server, run_json(&server.url()).args(long_calls()), false);
        // Every writing call renews the lease before anything else: a
        // write, after which Redis refuses to kill the script.
        out.assert_code(0);
        let report = out.report();
        assert_eq!(report["complete"], true, "{report:#}");
        assert_eq!(killer.killed.into_inner(), 0, "{report:#}");
        assert_eq!(rule_keys(&report, "cache-missing-ttl"), seeded.cache);
        assert_eq!(rule_keys(&report, "temp"), seeded.temp);
        assert_cleaned(&mut con, &seeded);
        if killer.unkillable.into_inner() >= 1 {
            assert!(field(&report, "script_reloads") >= 1, "{report:#}");
            return;
        }
    }
    panic!("in five runs no SCRIPT KILL reached a call of the job");
}

/// Without a lease (`--no-lock`) a call's SCAN steps come before any write,
/// so SCRIPT KILL can kill it: the run fails at once with one line (killing
/// the job's script is an operator's act, not a fault to retry), leaving
/// the checkpoint of its last call, and the next run, without the loop,
/// resumes from there and completes.
#[test]
fn script_kill_may_end_a_run_without_the_lease_and_the_next_run_completes() {
    let ((server, seeded), out, killer) = until_a_kill_lands(|| {
        let server = RedisServer::start();
        let seeded = populated(&mut server.conn(), 60_000, 20_000, 5_000);
        let (out, killer) = kill_and_flush_in_a_loop(
            &server,
            run_json(&server.url()).args(long_calls()).arg("--no-lock"),
            true,
        );
        ((server, seeded), out, killer)
    });
    let mut con = server.conn();
    assert_killed(&out, &killer);
    let saved = checkpoint(&mut con).expect("the killed run's checkpoint");
    assert_ne!(saved["cursor"], "0", "{saved:?}");

    let next = run_json(&server.url())
        .args(FULL_SPEED)
        .arg("--no-lock")
        .run();
    next.assert_code(0);
    let report = next.report();
    assert_eq!(report["complete"], true, "{report:#}");
    // The failed run left its checkpoint; the next run resumed from it.
    let server_entry = only_server(&report);
    assert_resumed(server_entry);
    assert_eq!(
        server_entry["pass"]["cursor"].as_u64().unwrap().to_string(),
        saved["cursor"],
        "{report:#}"
    );
    assert_cleaned(&mut con, &seeded);
}

/// A dry run's calls never write, so SCRIPT KILL can kill any of them: the
/// run fails with one line, and the next dry run completes, having changed
/// nothing.
#[test]
fn script_kill_may_end_a_dry_run_and_the_next_dry_run_completes() {
    let ((server, seeded, before), out, killer) = until_a_kill_lands(|| {
        let server = RedisServer::start();
        let seeded = populated(&mut server.conn(), 60_000, 20_000, 5_000);
        let before = digest(&mut server.conn());
        let (out, killer) = kill_and_flush_in_a_loop(
            &server,
            run_json(&server.url()).args(long_calls()).arg("--dry-run"),
            false,
        );
        ((server, seeded, before), out, killer)
    });
    let mut con = server.conn();
    assert_killed(&out, &killer);

    let next = run_json(&server.url())
        .args(FULL_SPEED)
        .arg("--dry-run")
        .run();
    next.assert_code(0);
    let report = next.report();
    assert_eq!(report["complete"], true, "{report:#}");
    assert_eq!(rule_keys(&report, "cache-missing-ttl"), seeded.cache);
    assert_eq!(rule_keys(&report, "temp"), seeded.temp);
    assert_eq!(digest(&mut con), before, "a dry run changed the data");
}

/// Runs `attempt` (a fresh server and keyspace, and a run under the kill
/// loop) until a SCRIPT KILL lands on one of the job's calls, at most five
/// times: whether one lands before the job finishes depends on how the
/// machine schedules the loop against the job's calls, not on the job (on
/// a loaded machine the job has finished before a kill got in). The last
/// attempt is returned either way, for [`assert_killed`] to judge.
fn until_a_kill_lands<T>(
    mut attempt: impl FnMut() -> (T, Outcome, Killer),
) -> (T, Outcome, Killer) {
    let mut last = attempt();
    for _ in 1..5 {
        if last.2.killed.load(Ordering::Relaxed) >= 1 {
            break;
        }
        last = attempt();
    }
    last
}

/// A SCRIPT KILL landed on one of the job's calls, and that failed the run
/// at once, with one line naming it.
#[track_caller]
fn assert_killed(out: &Outcome, killer: &Killer) {
    assert!(
        killer.killed.load(Ordering::Relaxed) >= 1,
        "no SCRIPT KILL landed: {killer:?}\n{}",
        out.dump()
    );
    let error = assert_failed(out);
    assert!(
        error.contains("SCRIPT KILL"),
        "the error should say the script was killed: {error}"
    );
    assert_eq!(only_server(&out.report())["retries"], 0, "{}", out.dump());
}

// ---------------------------------------------------------------------------
// a replica promoted mid-pass (Sentinel; a cluster's is in `cluster`)
// ---------------------------------------------------------------------------

#[test]
fn a_primary_crashed_mid_pass_is_followed_through_the_sentinels_to_the_promoted_replica() {
    let mut setup = SentinelSetup::start();
    let password = write_file(setup.replica.dir(), "sentinel-password", SENTINEL_PASSWORD);
    let mut primary = SentinelSetup::data_conn(&setup.primary);
    let seeded = populated(&mut primary, 5_000, 1_500, 500);
    let mut replica = SentinelSetup::data_conn(&setup.replica);
    wait_until(WAIT, "the keys to reach the replica", || {
        dbsize(&mut replica) == 7_000
    });
    let (old, new) = (setup.primary.host_port(), setup.replica.host_port());
    let mut running = run_json(&setup.url())
        .arg("--sentinel-password-file")
        .arg(&password)
        .args(["--rate-limit", "10000"])
        .start();
    // The replica holds the pass's checkpoint, with the old primary's
    // run_id, when the primary dies.
    wait_until(WAIT, "a checkpoint of the pass on the replica", || {
        running.exited() || checkpoint(&mut replica).is_some_and(|c| c["cursor"] != "0")
    });
    assert!(
        !running.exited(),
        "the pass ended before the primary died\n{}",
        running.stderr_so_far()
    );
    drop(primary);
    setup.primary.kill9();

    let out = running.wait();
    let server = assert_retried_and_complete(&out);
    assert_eq!(server["address"], new, "{server:#}");
    assert_eq!(
        server["failovers"],
        serde_json::json!([{ "from": old, "to": new }]),
        "{server:#}"
    );
    assert_started_over(&server);
    assert!(
        out.stderr
            .contains("a new pass starts from cursor 0 on the new one"),
        "{}",
        out.dump()
    );
    // The promotion closed the clients' connections.
    let mut replica = SentinelSetup::data_conn(&setup.replica);
    assert_cleaned(&mut replica, &seeded);
    let after = checkpoint(&mut replica).expect("a checkpoint on the new primary");
    assert_eq!(
        (&*after["cursor"], &*after["done"]),
        ("0", "1"),
        "{after:?}"
    );
    assert_eq!(
        Some(&after["run_id"]),
        info_field(&mut replica, "server", "run_id").as_ref()
    );
}

// ---------------------------------------------------------------------------
// SIGTERM while a call is in flight
// ---------------------------------------------------------------------------

/// `CLIENT PAUSE WRITE` holds the job's next call in the server (a script
/// that may write waits there), SIGTERM comes while it is held, then the
/// pause ends: the job waits for the call, counts it, and exits 143; the
/// call saved the checkpoint, with the pass's totals as the report gives
/// them; the next run resumes there and completes.
#[test]
fn sigterm_while_a_call_is_held_waits_for_it_and_its_checkpoint_then_exits_143() {
    let server = RedisServer::start();
    let mut con = server.conn();
    let seeded = populated(&mut con, 10_000, 3_000, 1_000);
    let mut running = run_json(&server.url())
        .args(["--rate-limit", "10000"])
        .start();
    wait_for_checkpoint(&mut running, &mut con);
    redis::cmd("CLIENT")
        .arg(&["PAUSE", "20000", "WRITE"])
        .exec(&mut con)
        .unwrap();
    wait_until(WAIT, "the job's call to be held by the pause", || {
        client_list(&mut con)
            .lines()
            .any(|l| l.contains(" name=redis-janitor ") && l.contains(" flags=b "))
    });
    // No call can end while the pause holds: this is the checkpoint before
    // the held one.
    let held = checkpoint(&mut con).unwrap();
    running.signal("TERM");
    let line = running.wait_for_stderr(WAIT, |l| l.contains("stopping after the call in flight"));
    assert!(line.is_some(), "{}", running.stderr_so_far());
    assert!(
        !running.exited(),
        "the job exited while its call was held\n{}",
        running.stderr_so_far()
    );
    redis::cmd("CLIENT").arg("UNPAUSE").exec(&mut con).unwrap();

    let out = running.wait();
    out.assert_code(143);
    let report = out.report();
    assert_eq!(report["stopped_by"], "sigterm", "{report:#}");
    let saved = checkpoint(&mut con).expect("a checkpoint after SIGTERM");
    let number = |c: &BTreeMap<String, String>, f: &str| c[f].parse::<u64>().unwrap();
    // The held call ran, after the signal, and saved the checkpoint; the job
    // had its reply: the report counts it.
    assert_eq!(number(&saved, "calls"), number(&held, "calls") + 1);
    assert_eq!(number(&saved, "calls"), field(&report, "batches"));
    assert_eq!(number(&saved, "scanned"), field(&report, "keys_scanned"));
    let acted: u64 = rule_counts(&report).iter().map(|(_, _, keys)| keys).sum();
    assert_eq!(number(&saved, "acted"), acted, "{report:#}");
    assert_ne!(saved["cursor"], "0", "{report:#}");
    assert_eq!(saved["done"], "0", "{saved:?}");

    let next = run_json(&server.url()).args(FULL_SPEED).run();
    next.assert_code(0);
    let next_report = next.report();
    let server_entry = only_server(&next_report);
    assert_resumed(server_entry);
    assert_eq!(
        server_entry["pass"]["cursor"].as_u64(),
        Some(number(&saved, "cursor"))
    );
    // Resumed without loss or repetition: each key acted on once, over the
    // two runs.
    for (rule, total) in [("cache-missing-ttl", seeded.cache), ("temp", seeded.temp)] {
        assert_eq!(
            rule_keys(&report, rule) + rule_keys(&next_report, rule),
            total,
            "{rule}: {report:#}\n{next_report:#}"
        );
    }
    assert_cleaned(&mut con, &seeded);
}
