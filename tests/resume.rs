//! A checkpoint that moves with the work: a pass cut into many runs, by
//! `--max-runtime` or by `kill -9` at random moments, ends exactly where one
//! uninterrupted run ends, with no call's work lost and none applied twice;
//! what makes a run start a new pass instead (`--restart`, other rules, an
//! expired or stale checkpoint, a restarted server), which it says, and
//! which skips no key; dry runs, which write nothing and never resume; and
//! the reserved prefix, whose keys no rule selects, not even
//! `pattern = "*"`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value as Json;

use crate::support::*;

/// Keys of the mixes most tests seed: a pass over them at the pace of
/// [`SLOW`] lasts about two thirds of a second.
const KEYS: usize = 2_000;

/// Small calls at a fixed rate, so that a pass of [`KEYS`] keys lasts long
/// enough to be cut.
const SLOW: [&str; 4] = ["--rate-limit", "3000", "--batch-size", "50"];

/// The standalone server's `run_id`.
fn run_id(con: &mut redis::Connection) -> String {
    info_field(con, "server", "run_id").expect("run_id in INFO server")
}

/// `run --output json --rules RULES` against `server`.
fn job(server: &RedisServer, rules: &Path) -> Janitor {
    run_json(&server.url()).arg("--rules").arg(rules)
}

/// Where a run's pass started: `servers[0].pass`, which must be there.
#[track_caller]
fn pass_of(report: &Json) -> &Json {
    let pass = &only_server(report)["pass"];
    assert!(pass.is_object(), "no pass in the report: {report:#}");
    pass
}

/// Asserts that the run started a new pass from cursor 0, and why.
#[track_caller]
fn assert_new_pass(report: &Json, why: &str) {
    let pass = pass_of(report);
    assert_eq!(pass["resumed"], false, "{report:#}");
    assert_eq!(pass["cursor"], 0, "{report:#}");
    assert!(
        pass["reason"].as_str().is_some_and(|r| r.contains(why)),
        "the reason should mention {why:?}: {report:#}"
    );
}

/// Runs `rules` over `server` at the pace of [`SLOW`] and stops it with
/// SIGTERM once its checkpoint is mid-pass (a cursor other than 0); returns
/// its report.
fn partial_pass(server: &RedisServer, rules: &Path, extra: &[&str]) -> Json {
    let mut con = server.conn();
    let mut running = job(server, rules).args(SLOW).args(extra).start();
    wait_until(Duration::from_secs(20), "a checkpoint mid-pass", || {
        running.exited() || checkpoint(&mut con).is_some_and(|cp| hash_u64(&cp, "cursor") != 0)
    });
    assert!(
        !running.exited(),
        "the pass ended before it could be stopped\n{}",
        running.stderr_so_far()
    );
    running.signal("TERM");
    let out = running.wait();
    out.assert_code(143);
    let report = out.report();
    assert_eq!(report["stopped_by"], "sigterm", "{report:#}");
    report
}

/// The keys a run of [`MIX_RULES`] deleted.
fn deleted(report: &Json) -> u64 {
    rule_keys(report, "doomed") + rule_keys(report, "soon")
}

/// Asserts that a complete pass of [`MIX_RULES`] began after `first`, a
/// partial one, deleted part of `mix`: the new pass scanned every key
/// left (so it started from cursor 0), its checkpoint says so, and the
/// keyspace is exactly what the rules leave.
#[track_caller]
fn assert_new_pass_cleaned_all(
    con: &mut redis::Connection,
    mix: &Mix,
    first: &Json,
    report: &Json,
) {
    assert_eq!(report["complete"], true, "{report:#}");
    let left = mix.len() - deleted(first);
    assert_eq!(field(report, "keys_scanned"), left, "{report:#}");
    assert_eq!(
        keys_acted(first) + keys_acted(report),
        mix.acted(),
        "{report:#}"
    );
    let cp = the_checkpoint(con);
    assert_eq!(hash_u64(&cp, "cursor"), 0, "{cp:?}");
    assert_eq!(hash_u64(&cp, "scanned"), left, "{cp:?}");
    assert_eq!(hash_u64(&cp, "acted"), keys_acted(report), "{cp:?}");
    assert_eq!(cp["run_id"], run_id(con), "{cp:?}");
    mix.assert_cleaned(&keyspace(con), "after the new pass");
}

/// A server seeded with the mix of `n` keys, and the mix's rules in its
/// directory.
fn seeded(n: usize, rules: &str) -> (RedisServer, Mix, std::path::PathBuf) {
    let server = RedisServer::start();
    let mix = Mix::new(n);
    mix.seed(&mut server.conn());
    let rules = write_rules(server.dir(), rules);
    (server, mix, rules)
}

/// Asserts that `one` and `other` hold the same keys, each of the same
/// type, each with a TTL in both or in neither, the two at most
/// `within_ms` apart (the time between the runs that set them).
#[track_caller]
fn assert_same_outcome(
    one: &BTreeMap<Vec<u8>, KeyState>,
    other: &BTreeMap<Vec<u8>, KeyState>,
    within_ms: i64,
) {
    let names: BTreeSet<&Vec<u8>> = one.keys().chain(other.keys()).collect();
    let diff: Vec<String> = names
        .into_iter()
        .filter(|key| match (one.get(*key), other.get(*key)) {
            (Some(a), Some(b)) => {
                a.kind != b.kind
                    || (a.pttl == -1) != (b.pttl == -1)
                    || (a.pttl - b.pttl).abs() > within_ms
            }
            _ => true,
        })
        .map(|key| format!("{}: {:?} / {:?}", show(key), one.get(key), other.get(key)))
        .collect();
    assert!(
        diff.is_empty(),
        "the keyspaces differ (TTLs within {within_ms} ms):\n{}",
        diff.join("\n")
    );
}

#[test]
fn a_pass_cut_by_max_runtime_into_many_runs_ends_as_one_uninterrupted_run() {
    let mix = Mix::new(3_000);
    let (whole, cut) = (RedisServer::start(), RedisServer::start());
    let (mut wcon, mut ccon) = (whole.conn(), cut.conn());
    mix.seed(&mut wcon);
    mix.seed(&mut ccon);

    let one = job(&whole, &write_rules(whole.dir(), MIX_RULES)).run();
    one.assert_code(0);
    let one = one.report();
    assert_eq!(one["complete"], true, "{one:#}");
    // SCAN MATCH k:* returns every key of the mix, and each once.
    assert_eq!(field(&one, "keys_scanned"), mix.len(), "{one:#}");
    assert_eq!(keys_acted(&one), mix.acted(), "{one:#}");
    mix.assert_cleaned(&keyspace(&mut wcon), "one uninterrupted run");

    let rules = write_rules(cut.dir(), MIX_RULES);
    let mut runs: Vec<Json> = Vec::new();
    let mut resumed = 0;
    loop {
        assert!(runs.len() < 100, "the pass did not end in 100 runs");
        let before = checkpoint(&mut ccon);
        let out = job(&cut, &rules)
            .args(["--max-runtime", "150ms", "--rate-limit", "4000"])
            .args(["--batch-size", "50"])
            .run();
        out.assert_code(0);
        let report = out.report();
        let n = runs.len() + 1;
        let pass = &only_server(&report)["pass"];
        if pass.is_null() {
            // --max-runtime ran out before the run reached the node (a
            // slow start on a loaded machine): it did nothing.
            assert_eq!(report["stopped_by"], "max_runtime", "run {n}: {report:#}");
            assert_eq!(field(&report, "batches"), 0, "run {n}: {report:#}");
            assert_eq!(checkpoint(&mut ccon), before, "run {n}");
            continue;
        }
        match &before {
            // Each run continues the pass from where the last one's
            // checkpoint stands, a pass begun by the first run.
            Some(cp) => {
                assert_eq!(pass["resumed"], true, "run {n}: {report:#}");
                assert_eq!(
                    pass["cursor"],
                    hash_u64(cp, "cursor"),
                    "run {n}: {report:#}"
                );
                assert_eq!(
                    pass["started_at"].as_f64(),
                    Some(hash_u64(cp, "started") as f64 / 1000.0),
                    "run {n}: {report:#}"
                );
                resumed += 1;
            }
            None => assert_new_pass(&report, "no checkpoint"),
        }
        let complete = report["complete"] == true;
        if !complete {
            assert_eq!(report["stopped_by"], "max_runtime", "run {n}: {report:#}");
            if let Some(cp) = checkpoint(&mut ccon) {
                assert_ne!(hash_u64(&cp, "cursor"), 0, "run {n}: {cp:?}");
                assert_eq!(hash_u64(&cp, "done"), 0, "run {n}: {cp:?}");
            }
        }
        runs.push(report);
        if complete {
            break;
        }
    }
    assert!(
        resumed >= 3,
        "the pass should take several runs: {} runs, {resumed} resumed",
        runs.len()
    );

    // The same keyspace as after one run: every key, its type and its TTL.
    let within = mix.made.elapsed().as_millis() as i64 + TTL_TOLERANCE_MS;
    assert_same_outcome(&keyspace(&mut wcon), &keyspace(&mut ccon), within);
    mix.assert_cleaned(&keyspace(&mut ccon), "the pass cut into runs");
    // The runs' counts add up to the one run's, and so do the checkpoint's
    // totals over the pass: no key seen twice, no call counted twice.
    let sum = |f: &str| runs.iter().map(|r| field(r, f)).sum::<u64>();
    assert_eq!(sum("keys_scanned"), field(&one, "keys_scanned"));
    for (r, (name, action, keys)) in rule_counts(&one).into_iter().enumerate() {
        let runs_keys: u64 = runs.iter().map(|run| rule_counts(run)[r].2).sum();
        assert_eq!(runs_keys, keys, "rule {name} ({action})");
    }
    let cp = the_checkpoint(&mut ccon);
    assert_eq!(hash_u64(&cp, "cursor"), 0, "{cp:?}");
    assert_eq!(hash_u64(&cp, "done"), 1, "{cp:?}");
    assert_eq!(
        hash_u64(&cp, "scanned"),
        field(&one, "keys_scanned"),
        "{cp:?}"
    );
    assert_eq!(hash_u64(&cp, "acted"), keys_acted(&one), "{cp:?}");
    assert_eq!(hash_u64(&cp, "calls"), sum("batches"), "{cp:?}");
    let whole_cp = the_checkpoint(&mut wcon);
    assert_eq!(hash_u64(&whole_cp, "scanned"), hash_u64(&cp, "scanned"));
    assert_eq!(hash_u64(&whole_cp, "acted"), hash_u64(&cp, "acted"));

    // The pass is done: the next run begins a new one, with new totals.
    let out = job(&cut, &rules).run();
    out.assert_code(0);
    let report = out.report();
    assert_new_pass(&report, "completed");
    assert_eq!(keys_acted(&report), 0, "{report:#}");
    let cp = the_checkpoint(&mut ccon);
    assert_eq!(hash_u64(&cp, "scanned"), mix.kept(), "{cp:?}");
    assert_eq!(hash_u64(&cp, "acted"), 0, "{cp:?}");
}

/// The seed of the random kill moments, printed with every failure;
/// `RESUME_KILL_SEED` tries another.
const KILL_SEED: u64 = 0x13_5eed;
/// Runs killed before the one that ends the pass.
const KILLS: u64 = 12;

/// Waits until the server has dropped every connection of the job: what
/// a killed run had sent has run by then, so the state no longer moves.
fn wait_for_job_disconnected(con: &mut redis::Connection) {
    wait_until(
        Duration::from_secs(10),
        "the killed run's connections to close",
        || !client_list(con).contains(" name=redis-janitor "),
    );
}

/// The most keys one call of [`kill_9_at_random_moments_loses_no_progress_and_repeats_no_call`]
/// looks at (`--batch-size`).
const BATCH: u64 = 40;

/// The most keys a declared-keys step of that test returns: SCAN's COUNT
/// is the buckets it visits, and a bucket may hold more than one key.
const STEP_MOST: u64 = 2 * BATCH;

#[test]
fn kill_9_at_random_moments_loses_no_progress_and_repeats_no_call() {
    let seed = std::env::var("RESUME_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(KILL_SEED);
    eprintln!("kill moments from seed {seed:#x} (RESUME_KILL_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);
    let (server, mix, rules) = seeded(2_500, MIX_RULES);
    let mut con = server.conn();
    let selected = mix.acted();
    let batch = BATCH.to_string();
    let pace = ["--rate-limit", "4000", "--batch-size", &batch];
    let mut kills: u64 = 0;
    let mut scanned = 0;
    let last = loop {
        // The first run's lease lasts long enough for the check below on a
        // loaded machine; the others', 200 ms, are waited for.
        let lock_ttl = if kills == 0 { "10s" } else { "200ms" };
        let running = job(&server, &rules)
            .args(pace)
            .args(["--lock-ttl", lock_ttl])
            .start();
        if kills == KILLS {
            break running.wait();
        }
        let mut running = running;
        let pid = running.pid();
        wait_until(Duration::from_secs(20), "the run to take the lease", || {
            running.exited() || lease_held(&mut con)
        });
        let delay = rng.u64(0..60);
        thread::sleep(Duration::from_millis(delay));
        if running.exited() {
            // It ended the pass before its kill.
            break running.wait();
        }
        running.signal("KILL");
        let out = running.wait();
        if out.code == 0 {
            // It ended the pass just before its kill.
            break out;
        }
        assert_eq!(out.code, -9, "{}", out.dump());
        kills += 1;
        let at = format!("seed {seed:#x}, kill {kills}, {delay} ms after the lease");
        wait_for_job_disconnected(&mut con);

        // The work and its checkpoint commit in one call: the checkpoint
        // counts exactly the keys acted on so far, and never goes back. In
        // the declared-keys mode the checkpoint is saved after the step's
        // calls: each kill in between leaves at most that step's keys acted
        // on and not counted, and the next run repeats the step (finding
        // them done).
        let cp = checkpoint(&mut con);
        let (cp_acted, cp_scanned) = cp.as_ref().map_or((0, 0), |cp| {
            (hash_u64(cp, "acted"), hash_u64(cp, "scanned"))
        });
        let acted_so_far = selected - mix.left_to_act(&mut con);
        if declared_mode() {
            assert!(
                (acted_so_far.saturating_sub(kills * STEP_MOST)..=acted_so_far).contains(&cp_acted),
                "{at}: {acted_so_far} acted on, checkpoint {cp:?}"
            );
        } else {
            assert_eq!(cp_acted, acted_so_far, "{at}: checkpoint {cp:?}");
        }
        assert!(cp_scanned >= scanned, "{at}: progress lost: {cp:?}");
        scanned = cp_scanned;

        if kills == 1 {
            // The dead run's lease outlives it: the next run is skipped,
            // and touches nothing.
            assert!(lease_held(&mut con), "{at}: the lease died with its run");
            let before = digest(&mut con);
            let out = job(&server, &rules).args(pace).run();
            out.assert_code(0);
            let report = out.report();
            assert_eq!(report["stopped_by"], "locked", "{at}: {report:#}");
            let holder = only_server(&report)["locked"]["holder"].clone();
            assert!(
                holder
                    .as_str()
                    .is_some_and(|h| h.ends_with(&format!("(pid {pid})"))),
                "{at}: the holder should be the killed run (pid {pid}): {report:#}"
            );
            assert_eq!(field(&report, "batches"), 0, "{at}: {report:#}");
            assert_eq!(digest(&mut con), before, "{at}: a skipped run wrote");
            // Not ten seconds: as if its --lock-ttl had been the others'.
            redis::cmd("PEXPIRE")
                .arg(lease_key())
                .arg(200)
                .exec(&mut con)
                .unwrap();
        }
        // The next run waits for the dead run's lease to expire.
        wait_for_lease_gone(&mut con);
    };
    let at = format!("seed {seed:#x}, after {kills} kills");
    last.assert_code(0);
    let report = last.report();
    assert_eq!(report["complete"], true, "{at}: {report:#}");
    assert!(kills >= 5, "{at}: the pass ended too soon to be cut");
    assert_eq!(pass_of(&report)["resumed"], true, "{at}: {report:#}");

    // Over the whole pass: every key seen once, every selected key acted on
    // once, the keyspace exact. (SCAN returns a key twice only after its
    // hash table shrinks: the mix was seeded into a settled table, see
    // `Mix::seed`, and deleting two fifths of it never shrinks it.)
    // In the declared-keys mode each kill may lose the count of one step,
    // which the next run repeats over the keys the lost step left (those it
    // deleted are gone): both totals are within a step per kill.
    let cp = the_checkpoint(&mut con);
    assert_eq!(hash_u64(&cp, "cursor"), 0, "{at}: {cp:?}");
    let (scanned, acted) = (hash_u64(&cp, "scanned"), hash_u64(&cp, "acted"));
    if declared_mode() {
        let repeated = kills * STEP_MOST;
        assert!(
            (mix.len() - repeated..=mix.len() + repeated).contains(&scanned),
            "{at}: {cp:?}"
        );
        assert!(
            (selected - repeated..=selected).contains(&acted),
            "{at}: {cp:?}"
        );
    } else {
        assert_eq!(scanned, mix.len(), "{at}: {cp:?}");
        assert_eq!(acted, selected, "{at}: {cp:?}");
    }
    mix.assert_cleaned(&keyspace(&mut con), &at);
    assert!(!lease_held(&mut con), "{at}: the last run kept its lease");
}

#[test]
fn restart_starts_a_new_pass_from_cursor_0() {
    let (server, mix, rules) = seeded(KEYS, MIX_RULES);
    let first = partial_pass(&server, &rules, &[]);
    let out = job(&server, &rules).arg("--restart").run();
    out.assert_code(0);
    let report = out.report();
    assert_new_pass(&report, "--restart");
    assert_new_pass_cleaned_all(&mut server.conn(), &mix, &first, &report);
}

#[test]
fn restart_asks_for_one_new_pass_which_a_retry_in_the_same_run_resumes() {
    let (server, mix, rules) = seeded(KEYS, MIX_RULES);
    let first = partial_pass(&server, &rules, &[]);
    let first_started = hash_u64(&the_checkpoint(&mut server.conn()), "started");
    let mut con = server.conn();
    let running = job(&server, &rules).args(SLOW).arg("--restart").start();
    wait_until(
        Duration::from_secs(20),
        "the new pass's first calls",
        || {
            checkpoint(&mut con).is_some_and(|cp| {
                hash_u64(&cp, "started") != first_started && hash_u64(&cp, "calls") >= 3
            })
        },
    );
    // The run's connection drops (this one is spared): the run retries
    // from the checkpoint of the pass it began, not from cursor 0 again.
    let killed: u64 = redis::cmd("CLIENT")
        .arg(&["KILL", "USER", "default", "SKIPME", "yes"])
        .query(&mut con)
        .unwrap();
    assert!(killed >= 1);
    let out = running.wait();
    out.assert_code(0);
    let report = out.report();
    assert!(field(only_server(&report), "retries") >= 1, "{report:#}");
    // The report tells how the run's pass began: anew, for --restart (the
    // retry went on with it).
    let pass = pass_of(&report);
    assert_eq!(pass["resumed"], false, "{report:#}");
    assert!(
        pass["reason"].as_str().unwrap().contains("--restart"),
        "{report:#}"
    );
    assert_eq!(pass["cursor"], 0, "{report:#}");
    let started = hash_u64(&the_checkpoint(&mut con), "started");
    assert_ne!(started, first_started);
    assert_eq!(pass["started_at"].as_f64(), Some(started as f64 / 1000.0));
    // Had the retry started over, the new pass would have seen some keys
    // twice, and its checkpoint would count fewer.
    assert_new_pass_cleaned_all(&mut con, &mix, &first, &report);
}

#[test]
fn restart_is_kept_by_a_retry_after_a_first_call_that_never_ran() {
    let (server, mix, rules) = seeded(KEYS, MIX_RULES);
    let first = partial_pass(&server, &rules, &[]);
    let first_started = hash_u64(&the_checkpoint(&mut server.conn()), "started");
    // The run takes the lease and chooses a new pass; its first call is
    // lost before it reaches Redis, so the checkpoint is still the old
    // pass's when the retry takes the lease again.
    let proxy = ScriptProxy::start(
        &server,
        Behaviour {
            drop_clean_call: Some(1),
            ..Behaviour::default()
        },
    );
    let out = run_json(&proxy.url())
        .arg("--rules")
        .arg(&rules)
        .arg("--restart")
        .run();
    out.assert_code(0);
    let report = out.report();
    assert!(field(only_server(&report), "retries") >= 1, "{report:#}");
    // The retry goes on with the new pass --restart asked for, not with
    // the old one from its cursor: the keys before it are scanned again.
    assert_new_pass(&report, "--restart");
    let mut con = server.conn();
    assert_ne!(
        hash_u64(&the_checkpoint(&mut con), "started"),
        first_started
    );
    if declared_mode() {
        // The dropped call's step scanned its keys, and the retry scans
        // them again (see docs/declared-keys.md): the report counts them
        // twice, the checkpoint once.
        assert_eq!(report["complete"], true, "{report:#}");
        let cp = the_checkpoint(&mut con);
        assert_eq!(hash_u64(&cp, "cursor"), 0, "{cp:?}");
        assert_eq!(hash_u64(&cp, "scanned"), mix.len() - deleted(&first));
        assert_eq!(keys_acted(&first) + keys_acted(&report), mix.acted());
        mix.assert_cleaned(&keyspace(&mut con), "after the new pass");
    } else {
        assert_new_pass_cleaned_all(&mut con, &mix, &first, &report);
    }
}

#[test]
fn changed_rules_start_a_new_pass_that_skips_no_key() {
    let (server, mix, rules) = seeded(KEYS, MIX_RULES_WITHOUT_CACHE);
    let first = partial_pass(&server, &rules, &[]);
    // Resuming would leave the cache keys the first run's cursor had passed
    // without their TTL.
    let rules = write_rules(server.dir(), MIX_RULES);
    let out = job(&server, &rules).run();
    out.assert_code(0);
    let report = out.report();
    assert_new_pass(&report, "rules");
    assert_new_pass_cleaned_all(&mut server.conn(), &mix, &first, &report);
}

#[test]
fn an_expired_checkpoint_starts_a_new_pass() {
    let (server, mix, rules) = seeded(KEYS, MIX_RULES);
    let mut con = server.conn();
    let max_age = ["--resume-max-age", "200ms"];
    let first = partial_pass(&server, &rules, &max_age);
    // --resume-max-age is also the checkpoint's expiry.
    let pttl: i64 = redis::cmd("PTTL")
        .arg(checkpoint_key())
        .query(&mut con)
        .unwrap();
    assert!(pttl <= 200, "checkpoint PTTL {pttl}");
    wait_until(Duration::from_secs(10), "the checkpoint to expire", || {
        checkpoint(&mut con).is_none()
    });
    let out = job(&server, &rules).args(max_age).run();
    out.assert_code(0);
    let report = out.report();
    assert_new_pass(&report, "no checkpoint");
    assert_new_pass_cleaned_all(&mut con, &mix, &first, &report);
}

#[test]
fn a_checkpoint_older_than_resume_max_age_starts_a_new_pass() {
    let (server, mix, rules) = seeded(KEYS, MIX_RULES);
    let mut con = server.conn();
    let first = partial_pass(&server, &rules, &[]);
    // Saved two hours ago, by the server's clock.
    let stale = server_time_ms(&mut con) - 2 * 3600 * 1000;
    redis::cmd("HSET")
        .arg(checkpoint_key())
        .arg("saved")
        .arg(stale)
        .exec(&mut con)
        .unwrap();
    let out = job(&server, &rules).args(["--resume-max-age", "1h"]).run();
    out.assert_code(0);
    let report = out.report();
    assert_new_pass(&report, "older than --resume-max-age");
    assert_new_pass_cleaned_all(&mut con, &mix, &first, &report);
}

#[test]
fn a_restarted_server_starts_a_new_pass_that_skips_no_key() {
    let (mut server, mix, rules) = seeded(KEYS, MIX_RULES);
    let first = partial_pass(&server, &rules, &[]);
    let mut con = server.conn();
    let old_run_id = run_id(&mut con);
    // The keyspace and the checkpoint survive the restart in an RDB file;
    // the new process has another run_id, and its own hash table order.
    redis::cmd("SAVE").exec(&mut con).unwrap();
    drop(con);
    server.restart(Halt::Kill, &[]);
    let mut con = server.conn();
    assert_ne!(run_id(&mut con), old_run_id);
    let cp = the_checkpoint(&mut con);
    assert_eq!(cp["run_id"], old_run_id, "{cp:?}");
    assert_ne!(hash_u64(&cp, "cursor"), 0, "{cp:?}");

    let out = job(&server, &rules).run();
    out.assert_code(0);
    let report = out.report();
    assert_new_pass(&report, "restarted");
    assert_new_pass_cleaned_all(&mut con, &mix, &first, &report);
}

/// Asserts a dry run that wrote nothing and began its own pass at 0.
#[track_caller]
fn assert_dry_run_wrote_nothing(
    con: &mut redis::Connection,
    out: &Outcome,
    digest_before: &str,
    state_before: &BTreeMap<Vec<u8>, BTreeMap<String, String>>,
) -> Json {
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["dry_run"], true, "{report:#}");
    assert_new_pass(&report, "dry run");
    assert_eq!(digest(con), digest_before, "a dry run changed the dataset");
    assert_eq!(
        &state_keys(con),
        state_before,
        "a dry run wrote the job's keys"
    );
    report
}

#[test]
fn dry_runs_write_nothing_and_never_resume() {
    let (server, _mix, rules) = seeded(KEYS, MIX_RULES);
    let mut con = server.conn();
    let before = digest(&mut con);
    // Two dry runs, each cut short: the second starts from 0 again.
    for n in 1..=2 {
        let out = job(&server, &rules)
            .args(["--dry-run", "--max-runtime", "300ms"])
            .args(SLOW)
            .run();
        let report = assert_dry_run_wrote_nothing(&mut con, &out, &before, &BTreeMap::new());
        assert_eq!(
            report["stopped_by"], "max_runtime",
            "dry run {n}: {report:#}"
        );
    }
}

#[test]
fn a_dry_run_neither_resumes_nor_moves_a_real_pass_checkpoint() {
    let (server, mix, rules) = seeded(KEYS, MIX_RULES);
    let mut con = server.conn();
    partial_pass(&server, &rules, &[]);
    let cp = the_checkpoint(&mut con);
    let (digest_before, state_before) = (digest(&mut con), state_keys(&mut con));

    let out = job(&server, &rules).arg("--dry-run").run();
    let report = assert_dry_run_wrote_nothing(&mut con, &out, &digest_before, &state_before);
    assert_eq!(report["complete"], true, "{report:#}");

    // The real pass resumes where it stood before the dry run.
    let out = job(&server, &rules).run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(pass_of(&report)["resumed"], true, "{report:#}");
    assert_eq!(
        pass_of(&report)["cursor"],
        hash_u64(&cp, "cursor"),
        "{report:#}"
    );
    mix.assert_cleaned(&keyspace(&mut con), "after the dry run and the real one");
}

/// Everything but the job's keys: `pattern = "*"` deletes it all.
const DELETE_ALL: &str = "[[rule]]\nname = \"all\"\npattern = \"*\"\naction = \"delete\"\n";

#[test]
fn pattern_star_never_selects_the_jobs_own_keys_nor_one_under_the_prefix() {
    let server = RedisServer::start();
    let mut con = server.conn();
    let kinds = ["string", "list", "set", "zset", "hash", "stream"];
    for i in 0..300usize {
        let ttl = [None, Some(7200)][i % 2];
        seed(&mut con, format!("u:{i}").as_bytes(), kinds[i % 6], ttl);
    }
    // The empty name, and the prefix without its colon: a rule selects them.
    seed(&mut con, b"", "string", None);
    seed(&mut con, b"__redis-janitor__", "hash", None);
    // A key of the user's under the reserved prefix: no rule selects it.
    let lookalike = b"__redis-janitor__:x";
    seed(&mut con, lookalike, "hash", Some(7200));
    let rules = write_rules(server.dir(), DELETE_ALL);

    // Small calls: the lease is there from the first and the checkpoint
    // from the second, so SCAN returns them to many of the calls that
    // follow.
    let out = job(&server, &rules).args(["--batch-size", "10"]).run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["complete"], true, "{report:#}");
    assert_eq!(rule_keys(&report, "all"), 302, "{report:#}");
    assert!(field(&report, "batches") >= 10, "{report:#}");
    assert_keyspace(&mut con, &[]);

    // Left alone: the user's key, as it was, and the job's checkpoint with
    // the pass's totals and its history with the last success. The lease
    // was given back.
    let state = state_keys(&mut con);
    let names: BTreeSet<&[u8]> = state.keys().map(Vec::as_slice).collect();
    assert_eq!(
        names,
        [&checkpoint_key()[..], &history_key()[..], &lookalike[..]].into(),
        "{state:?}"
    );
    let fields: BTreeMap<String, String> = [("f".to_string(), "v".to_string())].into();
    assert_eq!(state[&lookalike[..]], fields);
    let pttl: i64 = redis::cmd("PTTL").arg(lookalike).query(&mut con).unwrap();
    assert!(
        (7_200_000 - TTL_TOLERANCE_MS..=7_200_000).contains(&pttl),
        "{pttl}"
    );
    let cp = the_checkpoint(&mut con);
    assert_eq!(hash_u64(&cp, "cursor"), 0, "{cp:?}");
    assert_eq!(cp["fingerprint"], report["script"]["fingerprint"], "{cp:?}");
    assert_eq!(cp["run_id"], run_id(&mut con), "{cp:?}");
    assert_eq!(hash_u64(&cp, "calls"), field(&report, "batches"), "{cp:?}");
    assert_eq!(
        hash_u64(&cp, "scanned"),
        field(&report, "keys_scanned"),
        "{cp:?}"
    );
    assert_eq!(hash_u64(&cp, "acted"), 302, "{cp:?}");
    assert!(hash_u64(&cp, "started") <= hash_u64(&cp, "saved"), "{cp:?}");
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let started_at = pass_of(&report)["started_at"].as_f64().unwrap();
    assert_eq!(
        started_at,
        hash_u64(&cp, "started") as f64 / 1000.0,
        "{report:#}"
    );
    assert!(hash_u64(&cp, "saved").abs_diff(now_ms) < 60_000, "{cp:?}");
    let history = &state[&history_key()];
    let last_success = hash_u64(history, "last_success");
    assert!(last_success >= hash_u64(&cp, "saved"), "{history:?} {cp:?}");
    assert_eq!(
        report["servers"][0]["last_success_at"].as_f64(),
        Some(last_success as f64 / 1000.0),
        "{report:#}"
    );
    // SCAN returned the lease (there throughout) and the lookalike, besides
    // the 302 keys deleted.
    assert!(field(&report, "keys_scanned") >= 304, "{report:#}");
}

#[test]
fn check_says_keys_under_the_reserved_prefix_are_never_selected() {
    let dir = tempfile::tempdir().unwrap();
    let rules = write_rules(dir.path(), DELETE_ALL);
    let out = janitor().arg("check").arg("--rules").arg(&rules).run();
    out.assert_code(0);
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("__redis-janitor__:"))
        .unwrap_or_else(|| panic!("no line names the reserved prefix\n{}", out.dump()));
    assert!(line.contains("select"), "{line}");
}
