//! Gentle to replicas, on a real primary with a real replica: a writing
//! pass pauses its calls while the replica lags past `--max-replica-lag`
//! (made to lag for real by freezing its process), resumes once it caught
//! up, and ends with the same right keyspace on both; while paused it keeps
//! its lease, and `--max-runtime` or SIGTERM end it with a report; `off`, a
//! bound above the lag and a dry run never pause. And the share of the
//! primary's time the calls took, as the report tells it, is the share
//! asked.

use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

/// The one rule: delete `temp:*`.
const TEMP_RULE: &str = r#"
[[rule]]
name = "temp"
pattern = "temp:*"
action = "delete"
"#;

/// Keys no rule takes, beside the lag filler.
const KEPT: [&[u8]; 3] = [b"keep:1", b"keep:2", b"user:temp:3"];

/// The filler's key: written while the replica is frozen, it puts the
/// replica this far behind before the job starts.
const FILLER: &[u8] = b"lag:filler";
const FILLER_BYTES: usize = 1 << 20;

/// A bound below the filler's lag.
const SMALL_BOUND: &str = "512KiB";
const SMALL_BOUND_BYTES: u64 = 512 * 1024;

/// How long a test keeps the replica frozen once the job paused: the pause
/// must hold that long, not one key deleted meanwhile.
const HOLD: Duration = Duration::from_secs(1);

/// The pass's samples, one every this many calls at most (pass.rs
/// `CALLS_PER_SAMPLE`): how many calls a pass may make after the lag
/// crossed the bound and before it reads the lag again.
const CALLS_PER_SAMPLE: u64 = 100;

/// `count` keys `prefix:0`.. through MSET, so that they replicate (`DEBUG
/// POPULATE` does not).
fn fill(con: &mut redis::Connection, prefix: &str, count: u64) {
    let keys: Vec<u64> = (0..count).collect();
    let mut pipe = redis::pipe();
    for chunk in keys.chunks(1000) {
        let mset = pipe.cmd("MSET").ignore();
        for i in chunk {
            mset.arg(format!("{prefix}:{i}")).arg("v");
        }
    }
    pipe.exec(con).expect("MSET");
}

/// The keys no rule takes, written through the primary.
fn seed_kept(con: &mut redis::Connection) {
    for key in KEPT {
        seed(con, key, "string", None);
    }
}

/// Writes the filler through the primary, whose frozen replica is then at
/// least its size behind (it acknowledged nothing since it froze).
fn make_lag(primary: &mut redis::Connection) {
    redis::cmd("SET")
        .arg(FILLER)
        .arg(vec![b'x'; FILLER_BYTES])
        .exec(primary)
        .expect("SET the filler");
    let lag = replica_lag(primary);
    assert!(
        lag.is_some_and(|lag| lag >= FILLER_BYTES as u64),
        "the frozen replica should lag by the filler at least: {lag:?}"
    );
}

/// What the primary, and the replica once caught up, hold after the pass.
fn cleaned(with_filler: bool) -> Vec<(&'static [u8], &'static str, Ttl)> {
    let mut keys: Vec<(&[u8], &str, Ttl)> = KEPT
        .iter()
        .map(|&key| (key, "string", Ttl::Persistent))
        .collect();
    if with_filler {
        keys.push((FILLER, "string", Ttl::Persistent));
    }
    keys
}

/// `replica_pause_seconds` of the run and of its one server, which agree.
#[track_caller]
fn pause_seconds(report: &serde_json::Value) -> f64 {
    let total = report["replica_pause_seconds"].as_f64();
    let server = report["servers"][0]["replica_pause_seconds"].as_f64();
    assert_eq!(total, server, "{report:#}");
    total.unwrap_or_else(|| panic!("no replica_pause_seconds: {report:#}"))
}

/// Asserts that the primary and its replica, caught up, hold `expected`.
#[track_caller]
fn assert_both_hold(primary: &RedisServer, replica: &RedisServer, expected: &[(&[u8], &str, Ttl)]) {
    assert_keyspace(&mut primary.conn(), expected);
    wait_caught_up(primary, replica);
    assert_keyspace(&mut replica.conn(), expected);
}

#[test]
fn no_call_goes_out_while_a_replica_lags_past_the_bound_and_both_end_clean() {
    let primary = RedisServer::start();
    let mut con = primary.conn();
    fill(&mut con, "temp", 20_000);
    seed_kept(&mut con);
    let replica = start_replica(&primary);
    replica.freeze();
    make_lag(&mut con);
    let before = dbsize(&mut con);
    let rules = write_rules(primary.dir(), TEMP_RULE);
    // A lease of 300 ms, renewed every 100 ms: a pause that did not renew
    // it would lose it several times over.
    let mut running = run_json(&primary.url())
        .arg("--rules")
        .arg(&rules)
        .args(["--max-replica-lag", SMALL_BOUND, "--lock-ttl", "300ms"])
        .start();
    let paused = running
        .wait_for_stderr(JANITOR_TIMEOUT, |line| line.contains("calls paused"))
        .unwrap_or_else(|| panic!("no pause logged:\n{}", running.stderr_so_far()));
    assert!(
        paused.contains(&format!("max_replica_lag_bytes={SMALL_BOUND_BYTES}"))
            && paused.contains(&format!("replica={}", replica.host_port())),
        "{paused}"
    );
    // The pass read the lag before its first call: as long as the replica
    // stays frozen (it is the pause under test that time passes), no key
    // is deleted, the lag stays past the bound, and the run keeps its
    // lease.
    let token = lease_fields(&mut con).remove("token");
    assert!(token.is_some(), "no lease taken");
    let frozen = Instant::now();
    while frozen.elapsed() < HOLD {
        assert_eq!(
            dbsize(&mut con),
            before,
            "a key went while the replica lagged"
        );
        let lag = replica_lag(&mut con);
        assert!(lag.is_some_and(|lag| lag > SMALL_BOUND_BYTES), "{lag:?}");
        let held = lease_fields(&mut con).remove("token");
        assert_eq!(held, token, "the lease was lost");
        thread::sleep(Duration::from_millis(10));
    }
    replica.thaw();
    let out = running.wait();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(rule_keys(&report, "temp"), 20_000, "{report:#}");
    assert_eq!(report["complete"], true, "{report:#}");
    let pause = pause_seconds(&report);
    assert!(
        pause >= HOLD.as_secs_f64(),
        "paused {pause}s\n{}",
        out.dump()
    );
    assert!(
        out.stderr.contains("the replicas caught up: calls resumed"),
        "{}",
        out.dump()
    );
    assert!(out.stderr.contains("paused_seconds="), "{}", out.dump());
    // The lease held throughout: no call found it gone.
    assert_eq!(report["servers"][0]["retries"], 0, "{report:#}");
    assert_both_hold(&primary, &replica, &cleaned(true));
}

#[test]
fn max_runtime_and_sigterm_end_a_pause_with_the_report_and_no_success() {
    let primary = RedisServer::start();
    let mut con = primary.conn();
    fill(&mut con, "temp", 5_000);
    seed_kept(&mut con);
    let replica = start_replica(&primary);
    replica.freeze();
    make_lag(&mut con);
    let before = dbsize(&mut con);
    let rules = write_rules(primary.dir(), TEMP_RULE);
    let paused_run = || {
        run_json(&primary.url())
            .arg("--rules")
            .arg(&rules)
            .args(["--max-replica-lag", SMALL_BOUND])
    };
    let out = paused_run().args(["--max-runtime", "1s"]).run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["stopped_by"], "max_runtime", "{report:#}");
    let pause = pause_seconds(&report);
    assert!(pause > 0.5, "paused {pause}s\n{}", out.dump());
    assert!(
        out.stderr
            .contains("the pass stops while paused for its replicas"),
        "{}",
        out.dump()
    );
    // Stopped before its first call, the run cleaned nothing: it records no
    // success, or runs that always pause so would look healthy.
    assert_eq!(report["batches"], 0, "{report:#}");
    assert!(
        only_server(&report)["last_success_at"].is_null(),
        "{report:#}"
    );
    let recorded: Option<u64> = redis::cmd("HGET")
        .arg(history_key())
        .arg("last_success")
        .query(&mut con)
        .unwrap();
    assert_eq!(recorded, None, "{}", out.dump());
    let mut running = paused_run().start();
    running
        .wait_for_stderr(JANITOR_TIMEOUT, |line| line.contains("calls paused"))
        .unwrap_or_else(|| panic!("no pause logged:\n{}", running.stderr_so_far()));
    running.signal("TERM");
    let out = running.wait();
    out.assert_code(143);
    let report = out.report();
    assert_eq!(report["stopped_by"], "sigterm", "{report:#}");
    assert!(pause_seconds(&report) > 0.0, "{report:#}");
    // Neither run deleted anything while the replica lagged.
    assert_eq!(dbsize(&mut con), before);
    replica.thaw();
}

#[test]
fn a_replica_falling_behind_mid_pass_stops_the_calls_within_one_sample() {
    let primary = RedisServer::start();
    let mut con = primary.conn();
    let keys = 300_000;
    fill(&mut con, "temp", keys);
    seed_kept(&mut con);
    let replica = start_replica(&primary);
    let rules = write_rules(primary.dir(), TEMP_RULE);
    let bound = 256 * 1024;
    let running = run_json(&primary.url())
        .arg("--rules")
        .arg(&rules)
        .args(["--max-replica-lag", "256KiB"])
        .start();
    let total = keys + KEPT.len() as u64;
    wait_until(JANITOR_TIMEOUT, "the pass to delete its first keys", || {
        dbsize(&mut con) < total
    });
    replica.freeze();
    // From the first moment the lag is seen past the bound, the pass makes
    // at most one sample's calls, then none while the replica stays frozen.
    // A declared-keys step is two script calls: its clean and its save.
    let per_step = if declared_mode() { 2 } else { 1 };
    let mut crossed: Option<u64> = None;
    let mut last = (script_calls(&mut con), Instant::now());
    let deadline = Instant::now() + JANITOR_TIMEOUT;
    while last.1.elapsed() < HOLD {
        assert!(Instant::now() < deadline, "the calls never stopped");
        let lag = replica_lag(&mut con).unwrap_or(0);
        let calls = script_calls(&mut con);
        if lag > bound && crossed.is_none() {
            crossed = Some(calls);
        }
        if let Some(at) = crossed {
            assert!(
                calls <= at + per_step * (CALLS_PER_SAMPLE + 1),
                "{} calls after the lag passed the bound",
                calls - at
            );
        }
        if calls != last.0 {
            last = (calls, Instant::now());
        }
        thread::sleep(Duration::from_millis(2));
    }
    assert!(crossed.is_some(), "the lag never passed the bound");
    assert!(dbsize(&mut con) > KEPT.len() as u64, "the pass ended");
    replica.thaw();
    let out = running.wait();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(rule_keys(&report, "temp"), keys, "{report:#}");
    let pause = pause_seconds(&report);
    assert!(
        pause >= HOLD.as_secs_f64(),
        "paused {pause}s\n{}",
        out.dump()
    );
    assert_both_hold(&primary, &replica, &cleaned(false));
}

#[test]
fn off_or_a_bound_above_the_lag_never_pauses() {
    let primary = RedisServer::start();
    let mut con = primary.conn();
    seed_kept(&mut con);
    let replica = start_replica(&primary);
    replica.freeze();
    make_lag(&mut con);
    let rules = write_rules(primary.dir(), TEMP_RULE);
    let runs = [
        (
            "--max-replica-lag off",
            run_json(&primary.url()).args(["--max-replica-lag", "off"]),
        ),
        (
            "JANITOR_MAX_REPLICA_LAG=off",
            run_json(&primary.url()).env("JANITOR_MAX_REPLICA_LAG", "off"),
        ),
        (
            "a bound above the lag",
            run_json(&primary.url()).args(["--max-replica-lag", "1GiB"]),
        ),
        ("the default bound, 16 MiB", run_json(&primary.url())),
    ];
    for (how, janitor) in runs {
        fill(&mut con, "temp", 5_000);
        // The replica stays frozen: a run that waited for it would not end.
        let out = janitor.arg("--rules").arg(&rules).run();
        out.assert_code(0);
        let report = out.report();
        assert_eq!(rule_keys(&report, "temp"), 5_000, "{how}: {report:#}");
        assert_eq!(pause_seconds(&report), 0.0, "{how}: {report:#}");
        assert!(
            !out.stderr.contains("calls paused"),
            "{how}: {}",
            out.dump()
        );
        assert_keyspace(&mut con, &cleaned(true));
        let lag = replica_lag(&mut con);
        assert!(
            lag.is_some_and(|lag| lag >= FILLER_BYTES as u64),
            "{how}: {lag:?}"
        );
    }
    replica.thaw();
    assert_both_hold(&primary, &replica, &cleaned(true));
}

#[test]
fn a_dry_run_never_waits_for_replicas() {
    let primary = RedisServer::start();
    let mut con = primary.conn();
    fill(&mut con, "temp", 5_000);
    seed_kept(&mut con);
    let replica = start_replica(&primary);
    replica.freeze();
    make_lag(&mut con);
    let before = keyspace(&mut con);
    let rules = write_rules(primary.dir(), TEMP_RULE);
    let out = run_json(&primary.url())
        .arg("--rules")
        .arg(&rules)
        .args(["--dry-run", "--max-replica-lag", "1B"])
        .run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["dry_run"], true, "{report:#}");
    assert_eq!(rule_keys(&report, "temp"), 5_000, "{report:#}");
    assert_eq!(pause_seconds(&report), 0.0, "{report:#}");
    assert!(!out.stderr.contains("calls paused"), "{}", out.dump());
    assert_same_keyspace(&before, &keyspace(&mut con));
    replica.thaw();
}

#[test]
fn the_reported_server_share_is_the_share_asked() {
    let primary = RedisServer::start();
    let mut con = primary.conn();
    seed_kept(&mut con);
    let replica = start_replica(&primary);
    let rules = write_rules(primary.dir(), TEMP_RULE);
    let keys = 100_000;
    let mut share_of = |share: &str| -> f64 {
        fill(&mut con, "temp", keys);
        let out = run_json(&primary.url())
            .arg("--rules")
            .arg(&rules)
            .args(["--max-server-share", share])
            .run();
        out.assert_code(0);
        let report = out.report();
        assert_eq!(rule_keys(&report, "temp"), keys, "{report:#}");
        let used = report["servers"][0]["server_share"].as_f64();
        used.unwrap_or_else(|| panic!("no server_share: {report:#}"))
    };
    let tenth = share_of("0.1");
    let full = share_of("1");
    eprintln!("server shares: asked 0.1, used {tenth}; asked 1, used {full}");
    assert!(tenth > 0.0 && tenth <= 0.12, "asked 0.1, used {tenth}");
    // At full speed the share is what the job's round trips leave: 0.8 on
    // an idle machine, 0.42 with two other test suites building beside,
    // 0.24 to 0.28 with a build or other tests on 2 cores. A pass paced at
    // the tenth whatever it is asked would report about the tenth's share
    // again. (Against a quarter, 0.28 at full speed was 1.19 times it, on a
    // loaded machine: too near to tell.)
    assert!(full > tenth * 1.6, "asked 1, used {full} (0.1: {tenth})");
    assert_both_hold(&primary, &replica, &cleaned(false));
}
