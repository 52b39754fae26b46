//! One run per node, with fencing: two runs started together, on one
//! server and on a cluster, clean each node once between them (the other
//! run skips it as locked, with exit 0); a node whose lease another run
//! holds is left untouched, and the report says by whom; a run frozen past
//! its lease (SIGSTOP), or whose lease another run took or that vanished,
//! acts on nothing more until it holds the lease again (within each key
//! mode's guarantee); and `--no-lock` and `--lock-ttl` as they are given.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value as Json;

use crate::support::*;

/// `run --output json` of [`MIX_RULES`] (in `rules`) against `url`, paced
/// so that a pass of a couple of thousand keys lasts about a second: two
/// runs started together overlap.
fn slow_job(url: &str, rules: &Path) -> Janitor {
    run_json(url)
        .arg("--rules")
        .arg(rules)
        .args(["--rate-limit", "2000", "--batch-size", "50"])
}

/// A private server seeded with a [`Mix`] of 2,000 keys, a connection to
/// it, the mix, and the mix's rules ([`MIX_RULES`]) in a file.
fn mixed_server() -> (RedisServer, redis::Connection, Mix, PathBuf) {
    let server = RedisServer::start();
    let mut con = server.conn();
    let mix = Mix::new(2_000);
    mix.seed(&mut con);
    let rules = write_rules(server.dir(), MIX_RULES);
    (server, con, mix, rules)
}

/// Starts `job`, run A, and returns it once its pass has scanned 200
/// keys (by its checkpoint), still running.
fn start_a(job: Janitor, con: &mut redis::Connection) -> Running {
    let mut a = job.start();
    wait_until(Duration::from_secs(20), "A's first 200 keys", || {
        a.exited() || checkpoint(con).is_some_and(|cp| hash_u64(&cp, "scanned") >= 200)
    });
    assert!(!a.exited(), "A ended early\n{}", a.stderr_so_far());
    a
}

/// Seconds since the Unix epoch, now.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// How a lease names the run of process `pid` (`HOST (pid N)`).
fn held_by(holder: &Json, pid: u32) -> bool {
    holder
        .as_str()
        .is_some_and(|h| h.ends_with(&format!("(pid {pid})")))
}

/// Asserts that `server` (a report's `servers` entry) was skipped because
/// the run of process `pid` held its lease, since a moment after
/// `started` (Unix seconds), and that the run did nothing there.
#[track_caller]
fn assert_skipped_for(server: &Json, pid: u32, started: f64, report: &Json) {
    assert_eq!(server["complete"], false, "{report:#}");
    assert_eq!(server["stopped_by"], "locked", "{report:#}");
    assert!(server["error"].is_null(), "{report:#}");
    let locked = &server["locked"];
    assert!(
        held_by(&locked["holder"], pid),
        "the holder should be the run of pid {pid}: {report:#}"
    );
    let since = locked["since"].as_f64().expect("locked.since");
    assert!(
        since >= started - 1.0 && since <= unix_now() + 1.0,
        "locked.since {since} is not during the test: {report:#}"
    );
    assert_eq!(server["batches"], 0, "{report:#}");
    assert_eq!(server["keys_scanned"], 0, "{report:#}");
}

#[test]
fn two_runs_started_together_one_cleans_the_other_is_skipped() {
    let (server, mut con, mix, rules) = mixed_server();
    let started = unix_now();

    let (a, b) = (
        slow_job(&server.url(), &rules).start(),
        slow_job(&server.url(), &rules).start(),
    );
    let pids = [a.pid(), b.pid()];
    let outs = [a.wait(), b.wait()];
    for out in &outs {
        out.assert_code(0);
    }
    let reports = [outs[0].report(), outs[1].report()];
    let winner = match (
        reports[0]["complete"] == true,
        reports[1]["complete"] == true,
    ) {
        (true, false) => 0,
        (false, true) => 1,
        // Both runs' logs say how each took the lease, and any retry.
        _ => panic!(
            "exactly one run should clean:\n{}\n{}",
            outs[0].dump(),
            outs[1].dump()
        ),
    };
    let (won, lost) = (&reports[winner], &reports[1 - winner]);
    assert_eq!(lost["stopped_by"], "locked", "{lost:#}");
    assert_skipped_for(only_server(lost), pids[winner], started, lost);
    assert_eq!(keys_acted(won), mix.acted(), "{won:#}");
    assert_eq!(keys_acted(lost), 0, "{lost:#}");

    mix.assert_cleaned(&keyspace(&mut con), "after the two runs");
    // The winner gave its lease back, and its checkpoint holds the pass.
    assert!(!lease_held(&mut con), "the lease outlived both runs");
    let cp = the_checkpoint(&mut con);
    assert_eq!(hash_u64(&cp, "cursor"), 0, "{cp:?}");
    assert_eq!(hash_u64(&cp, "acted"), mix.acted(), "{cp:?}");
    assert_eq!(hash_u64(&cp, "scanned"), mix.len(), "{cp:?}");
}

#[test]
fn a_node_whose_lease_another_run_holds_is_left_untouched_and_the_report_says_by_whom() {
    let server = RedisServer::start();
    let mut con = server.conn();
    let mix = Mix::new(200);
    mix.seed(&mut con);
    let rules = write_rules(server.dir(), MIX_RULES);
    let since_ms = server_time_ms(&mut con) - 5_000;
    hold_lease_for_another_run(&mut con, "cleaner-7f9c (pid 1)", since_ms);
    let before = digest(&mut con);

    let out = run_json(&server.url()).arg("--rules").arg(&rules).run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["complete"], false, "{report:#}");
    assert_eq!(report["stopped_by"], "locked", "{report:#}");
    assert!(report["error"].is_null(), "{report:#}");
    let locked = &only_server(&report)["locked"];
    assert_eq!(locked["holder"], "cleaner-7f9c (pid 1)", "{report:#}");
    assert_eq!(
        locked["since"].as_f64(),
        Some(since_ms as f64 / 1000.0),
        "{report:#}"
    );
    assert_eq!(field(&report, "batches"), 0, "{report:#}");
    // Nothing touched: not the keys, not the lease (neither renewed nor
    // taken), and no checkpoint.
    assert_eq!(digest(&mut con), before, "a skipped run wrote");

    let text = janitor()
        .args(["run", "--url", &server.url(), "--output", "text"])
        .arg("--rules")
        .arg(&rules)
        .run();
    text.assert_code(0);
    let first = text.stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("redis-janitor run: pass skipped")
            && first.contains("cleaner-7f9c (pid 1)"),
        "the text report should say the node was skipped, and for whom\n{}",
        text.dump()
    );
    assert_eq!(digest(&mut con), before, "a skipped run wrote");

    // A dry run neither checks nor takes a lease: it counts as usual.
    let dry = run_json(&server.url())
        .arg("--rules")
        .arg(&rules)
        .arg("--dry-run")
        .run();
    dry.assert_code(0);
    let report = dry.report();
    assert_eq!(report["complete"], true, "{report:#}");
    assert_eq!(keys_acted(&report), mix.acted(), "{report:#}");
    assert_eq!(digest(&mut con), before, "a dry run wrote");

    // Once the lease is gone, the next run cleans.
    redis::cmd("DEL").arg(lease_key()).exec(&mut con).unwrap();
    let out = run_json(&server.url()).arg("--rules").arg(&rules).run();
    out.assert_code(0);
    assert_eq!(out.report()["complete"], true, "{}", out.dump());
    mix.assert_cleaned(&keyspace(&mut con), "after the lease was gone");
}

#[test]
fn two_runs_started_together_on_a_cluster_clean_each_node_once() {
    let cluster = RedisCluster::start(3, 0);
    let mix = Mix::new(3_000);
    mix.seed_cluster(&cluster);
    let rules = write_rules(cluster.nodes[0].dir(), MIX_RULES);
    let started = unix_now();

    let (a, b) = (
        slow_job(&cluster.url(), &rules).start(),
        slow_job(&cluster.url(), &rules).start(),
    );
    let pids = [a.pid(), b.pid()];
    let outs = [a.wait(), b.wait()];
    for out in &outs {
        out.assert_code(0);
    }
    let reports = [outs[0].report(), outs[1].report()];
    let entry = |r: usize, address: &str| -> Json {
        reports[r]["servers"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["address"] == address))
            .cloned()
            .unwrap_or_else(|| panic!("no entry for {address}: {:#}", reports[r]))
    };
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3);
    for node in &primaries {
        let address = node.host_port();
        let entries = [entry(0, &address), entry(1, &address)];
        let cleaned: Vec<usize> = (0..2).filter(|&r| entries[r]["complete"] == true).collect();
        let &[winner] = cleaned.as_slice() else {
            panic!(
                "{address} should be cleaned by exactly one run:\n{:#}\n{:#}",
                entries[0], entries[1]
            );
        };
        assert_skipped_for(
            &entries[1 - winner],
            pids[winner],
            started,
            &reports[1 - winner],
        );
        // The node gave its lease back; its checkpoint holds the pass.
        let state = state_keys(&mut node.conn());
        assert!(
            !state.keys().any(|k| k.ends_with(b":lease")),
            "{address} kept a lease: {state:?}"
        );
        let cps: Vec<_> = state
            .iter()
            .filter(|(k, _)| k.ends_with(b":checkpoint"))
            .collect();
        assert_eq!(cps.len(), 1, "{address}: {state:?}");
        assert_eq!(hash_u64(cps[0].1, "cursor"), 0, "{address}: {state:?}");
        assert_eq!(
            hash_u64(cps[0].1, "acted"),
            keys_acted(&entries[winner]),
            "{address}: {state:?}"
        );
    }
    assert_eq!(
        keys_acted(&reports[0]) + keys_acted(&reports[1]),
        mix.acted()
    );
    mix.assert_cleaned(&cluster.keyspace(), "after the two runs");
}

/// The most keys one step of a run of `--batch-size batch` acts on in the
/// declared-keys mode: twice `batch` (SCAN's COUNT is the buckets it
/// visits, and a bucket may hold more than one key).
fn step_most(batch: u64) -> u64 {
    2 * batch
}

/// The most keys a run of `--batch-size batch` acts on in the
/// declared-keys mode after its lease changed hands before it expired, or
/// before without its checkpoint counting them: two steps (the one whose
/// save had not gone out yet, and the one sent with or after it, whose
/// deadline had not come).
fn late_most(batch: u64) -> u64 {
    2 * step_most(batch)
}

#[test]
fn a_run_frozen_past_its_lease_cannot_act_after_another_took_over() {
    let (server, mut con, mix, rules) = mixed_server();
    let selected = mix.acted();

    // A: a short lease and small, slow calls.
    let a = start_a(
        run_json(&server.url())
            .arg("--rules")
            .arg(&rules)
            .args(["--lock-ttl", "500ms", "--rate-limit", "2000"])
            .args(["--batch-size", "20"]),
        &mut con,
    );
    // A freezes (a GC pause, a stopped VM) and its lease runs out.
    a.signal("STOP");
    wait_for_lease_gone(&mut con);
    let at_stop = the_checkpoint(&mut con);

    // B takes the lease and continues A's pass from its checkpoint.
    let mut b = slow_job(&server.url(), &rules).start();
    let b_pid = b.pid();
    wait_until(Duration::from_secs(20), "B to take the lease", || {
        b.exited()
            || lease_fields(&mut con)
                .get("holder")
                .is_some_and(|h| h.ends_with(&format!("(pid {b_pid})")))
    });
    assert!(!b.exited(), "B ended early\n{}", b.stderr_so_far());
    // A wakes up: its next call is refused.
    a.signal("CONT");
    let (a, b) = (a.wait(), b.wait());
    a.assert_code(0);
    b.assert_code(0);
    let (ra, rb) = (a.report(), b.report());

    assert!(
        a.stderr.contains("LEASELOST"),
        "A should log that it lost its lease\n{}",
        a.dump()
    );
    assert!(field(only_server(&ra), "retries") >= 1, "{ra:#}");
    assert_eq!(rb["complete"], true, "{rb:#}");
    let b_pass = &only_server(&rb)["pass"];
    assert_eq!(b_pass["resumed"], true, "{rb:#}");
    assert_eq!(b_pass["cursor"], hash_u64(&at_stop, "cursor"), "{rb:#}");

    // Each selected key acted on once, by A or by B.
    assert_eq!(
        keys_acted(&ra) + keys_acted(&rb),
        selected,
        "A {ra:#}\nB {rb:#}"
    );
    // What A acted on beyond its checkpoint at the freeze: nothing, since
    // every call commits with its checkpoint and checks the lease. In the
    // declared-keys mode a step's checkpoint is saved with the next step,
    // so the step A made just before it froze is not in it, and never will
    // be: that save is refused. A step sent after its lease expired is
    // refused by its deadline (see docs/declared-keys.md).
    let late = keys_acted(&ra) - hash_u64(&at_stop, "acted");
    if declared_mode() {
        assert!(late <= step_most(20), "A {ra:#}\nat the freeze {at_stop:?}");
    } else {
        assert_eq!(late, 0, "A acted after its freeze: {ra:#}\n{at_stop:?}");
    }
    mix.assert_cleaned(&keyspace(&mut con), "after A and B");
    assert!(!lease_held(&mut con), "a lease outlived both runs");
    let cp = the_checkpoint(&mut con);
    assert_eq!(hash_u64(&cp, "cursor"), 0, "{cp:?}");
    if ra["stopped_by"] == "locked" {
        // A retried, found B's lease and stepped aside. The pass A began
        // and B finished saw every key once, less what A's unsaved step
        // deleted before B's SCAN came by.
        assert!(
            held_by(&only_server(&ra)["locked"]["holder"], b_pid),
            "{ra:#}"
        );
        let scanned = hash_u64(&cp, "scanned");
        assert!((mix.len() - late..=mix.len()).contains(&scanned), "{cp:?}");
        assert_eq!(hash_u64(&cp, "acted"), selected - late, "{cp:?}");
    } else {
        // B had already finished: A took the lease again and, the pass
        // being complete, began a new one, which found nothing to do.
        assert_eq!(ra["complete"], true, "{ra:#}");
        let pass = &only_server(&ra)["pass"];
        assert_eq!(pass["resumed"], false, "{ra:#}");
        assert!(
            pass["reason"]
                .as_str()
                .is_some_and(|r| r.contains("completed")),
            "{ra:#}"
        );
        assert_eq!(hash_u64(&cp, "acted"), 0, "{cp:?}");
        assert_eq!(hash_u64(&cp, "scanned"), mix.kept(), "{cp:?}");
    }
}

#[test]
fn a_run_whose_lease_another_run_took_over_acts_on_nothing_more() {
    let (server, mut con, _, rules) = mixed_server();
    let a = start_a(slow_job(&server.url(), &rules), &mut con);

    // Another run holds the lease from now on (as if A's had run out), in
    // one transaction with a look at the checkpoint and the keyspace. A
    // is not paused: its very next call finds the lease gone.
    let other = "cleaner-7f9c (pid 1)";
    let since = server_time_ms(&mut con);
    let (at_takeover, digest_at): (BTreeMap<String, String>, String) = redis::pipe()
        .atomic()
        .cmd("HSET")
        .arg(lease_key())
        .arg(&["token", "0123456789abcdef0123456789abcdef", "holder", other])
        .arg("since")
        .arg(since)
        .ignore()
        .cmd("HGETALL")
        .arg(checkpoint_key())
        .cmd("DEBUG")
        .arg("DIGEST")
        .query(&mut con)
        .unwrap();
    let a = a.wait();
    a.assert_code(0);
    let ra = a.report();
    assert!(a.stderr.contains("LEASELOST"), "{}", a.dump());
    assert_eq!(ra["stopped_by"], "locked", "{ra:#}");
    assert_eq!(only_server(&ra)["locked"]["holder"], other, "{ra:#}");

    // A's checkpoint never moved again: every save checks the lease.
    assert_eq!(the_checkpoint(&mut con), at_takeover);
    let late = keys_acted(&ra) - hash_u64(&at_takeover, "acted");
    if declared_mode() {
        // A step's calls hold no lease: the step A sent when the lease
        // changed hands acts, and only the save after it is refused.
        assert!(late <= late_most(50), "A {ra:#}\n{at_takeover:?}");
    } else {
        // Every call checks the lease first: nothing at all changed.
        assert_eq!(late, 0, "A acted after the takeover: {ra:#}");
        assert_eq!(digest(&mut con), digest_at, "A wrote after the takeover");
    }
}

#[test]
fn a_run_whose_lease_vanished_acts_only_once_it_holds_it_again() {
    let (server, mut con, mix, rules) = mixed_server();
    let selected = mix.acted();
    let a = start_a(slow_job(&server.url(), &rules), &mut con);
    // The lease is gone, as when it expired or a failover lost it: another
    // run may take it at any moment, so A must not act without it.
    redis::cmd("DEL").arg(lease_key()).exec(&mut con).unwrap();

    let a = a.wait();
    a.assert_code(0);
    let ra = a.report();
    assert!(
        a.stderr.contains("LEASELOST") && a.stderr.contains("the lease expired or was lost"),
        "{}",
        a.dump()
    );
    // A took the lease again and went on from its checkpoint: every key
    // acted on once.
    assert_eq!(ra["complete"], true, "{ra:#}");
    assert!(field(only_server(&ra), "retries") >= 1, "{ra:#}");
    assert_eq!(keys_acted(&ra), selected, "{ra:#}");
    mix.assert_cleaned(&keyspace(&mut con), "after A");
    assert!(!lease_held(&mut con), "A kept its lease");
    let cp = the_checkpoint(&mut con);
    assert_eq!(hash_u64(&cp, "cursor"), 0, "{cp:?}");
    let acted = hash_u64(&cp, "acted");
    if declared_mode() {
        // The step whose save found the lease gone is not counted.
        assert!(
            (selected - late_most(50)..=selected).contains(&acted),
            "{cp:?}"
        );
    } else {
        assert_eq!(acted, selected, "{cp:?}");
    }
}

#[test]
fn with_no_lock_two_runs_clean_at_once_and_no_lease_ever_appears() {
    let (server, mut con, mix, rules) = mixed_server();

    let mut a = slow_job(&server.url(), &rules).arg("--no-lock").start();
    // As a base manifest's lease setting and an overlay's JANITOR_NO_LOCK
    // give it.
    let mut b = slow_job(&server.url(), &rules)
        .env("JANITOR_LOCK_TTL", "1m")
        .env("JANITOR_NO_LOCK", "true")
        .start();
    let mut polls_while_writing = 0;
    wait_until(Duration::from_secs(30), "both runs to end", || {
        assert!(!lease_held(&mut con), "a lease appeared with --no-lock");
        if checkpoint(&mut con).is_some() {
            polls_while_writing += 1;
        }
        a.exited() && b.exited()
    });
    assert!(polls_while_writing > 0, "the runs were never seen writing");
    let (a, b) = (a.wait(), b.wait());
    a.assert_code(0);
    b.assert_code(0);
    let (ra, rb) = (a.report(), b.report());
    for r in [&ra, &rb] {
        assert_eq!(r["complete"], true, "{r:#}");
        assert!(only_server(r)["locked"].is_null(), "{r:#}");
        assert!(field(r, "batches") > 0, "{r:#}");
    }
    // Each action is atomic: a key one run acted on, the other found gone
    // or already expiring.
    assert_eq!(
        keys_acted(&ra) + keys_acted(&rb),
        mix.acted(),
        "{ra:#}\n{rb:#}"
    );
    mix.assert_cleaned(&keyspace(&mut con), "after two runs without a lease");
    assert!(!lease_held(&mut con));
}

#[test]
fn a_lock_ttl_below_100ms_is_refused_before_connecting() {
    let out = run_json(&dead_url()).args(["--lock-ttl", "50ms"]).run();
    out.assert_code(2);
    let line = out.one_line_stderr();
    assert!(
        line.contains("--lock-ttl") && line.contains("100ms"),
        "the message should name the flag and its minimum\n{}",
        out.dump()
    );
    // Without a lease its time to live is not even read: the run goes on
    // (to find nothing listening).
    let out = run_json(&dead_url())
        .args(["--lock-ttl", "50ms", "--no-lock"])
        .run();
    out.assert_code(1);
}

#[test]
fn a_lock_ttl_of_100ms_is_enough_for_a_whole_pass() {
    let server = RedisServer::start();
    let mut con = server.conn();
    let mix = Mix::new(1_000);
    mix.seed(&mut con);
    let rules = write_rules(server.dir(), MIX_RULES);
    // Calls 100 ms apart or more: the lease is renewed between them.
    let out = run_json(&server.url())
        .arg("--rules")
        .arg(&rules)
        .args(["--lock-ttl", "100ms", "--rate-limit", "2000"])
        .args(["--batch-size", "250"])
        .run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["complete"], true, "{report:#}");
    mix.assert_cleaned(&keyspace(&mut con), "with a 100 ms lease");
}
