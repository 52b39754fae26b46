//! The declared-keys mode (`--key-mode`): the same rules leave the same
//! keyspace and the same counts in both modes, on a standalone server and
//! on a cluster; behind a proxy that refuses scripts touching undeclared
//! keys (a [`ScriptProxy`] in front of a real server) the job switches to
//! it by itself, declares the keys of one slot per call, and resumes a pass
//! across runs without a `run_id`. The fault tests of the lease and the
//! checkpoint run in this mode too: CI runs `lease::`, `resume::`,
//! `resilience::`, `faults::`, `cluster::`, `brakes::` and `replica::`
//! again with `JANITOR_TEST_KEY_MODE=declared`.

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::support::*;

/// Alibaba Cloud's proxy's refusal of a script that touches keys it did
/// not declare.
const ALIBABA: &str = "ERR bad lua script for redis cluster, all the keys that the script uses \
                       should be passed using the KEYS array";
/// Dragonfly's.
const DRAGONFLY: &str = "ERR Error running script (call to f_0123): @user_script:9: \
                         script tried accessing undeclared key, key: k:1";

/// A run of [`MIX_RULES`] (in `rules`) against `url` with `--key-mode
/// mode`, at full speed.
fn job(url: &str, rules: &Path, mode: &str) -> Janitor {
    paced_job(url, rules, mode, "1")
}

/// [`job`] at `--max-server-share share`.
fn paced_job(url: &str, rules: &Path, mode: &str, share: &str) -> Janitor {
    run_json(url)
        .arg("--rules")
        .arg(rules)
        .args(["--key-mode", mode, "--max-server-share", share])
}

/// The per-rule counts and the other totals of a report, which both modes
/// must agree on.
fn totals(report: &Json) -> (Vec<(String, String, u64)>, [u64; 5]) {
    let totals = [
        "keys_matched",
        "unchanged",
        "vanished",
        "moved",
        "keys_scanned",
    ]
    .map(|name| field(report, name));
    (rule_counts(report), totals)
}

#[test]
fn both_modes_leave_the_same_keyspace_and_counts_on_a_standalone_server() {
    let mix = Mix::new(3_000);
    // The declared-keys mode at full speed scans each step's keys in the
    // round trip before; paced, just before the step's calls.
    let runs = [("server", "1"), ("declared", "1"), ("declared", "0.5")].map(|(mode, share)| {
        let server = RedisServer::start();
        mix.seed(&mut server.conn());
        let rules = write_rules(server.dir(), MIX_RULES);
        let job = |url: &str, rules: &Path, mode: &str| paced_job(url, rules, mode, share);
        // A dry run predicts the real run, in either mode, and writes nothing.
        let before = digest(&mut server.conn());
        let dry = job(&server.url(), &rules, mode).arg("--dry-run").run();
        dry.assert_code(0);
        assert_eq!(
            digest(&mut server.conn()),
            before,
            "{mode}: a dry run wrote"
        );
        let scans = calls_of(&mut server.conn(), "scan");
        let out = job(&server.url(), &rules, mode).run();
        out.assert_code(0);
        let report = out.report();
        assert_eq!(report["complete"], true, "{report:#}");
        assert_eq!(totals(&dry.report()), totals(&report), "{mode}");
        if mode == "declared" {
            // One SCAN per step (a key scanned ahead is not scanned again),
            // and the probe of the job's permissions.
            let scanned = calls_of(&mut server.conn(), "scan") - scans;
            assert_eq!(
                scanned,
                field(&report, "batches") + 1,
                "{share}: {report:#}"
            );
        }
        assert_eq!(only_server(&report)["key_mode"], mode, "{report:#}");
        assert_eq!(only_server(&report)["key_mode_switched"], Json::Null);
        mix.assert_cleaned(&keyspace(&mut server.conn()), mode);
        (keyspace(&mut server.conn()), totals(&report))
    });
    for declared in &runs[1..] {
        assert_same_keyspace(&runs[0].0, &declared.0);
        assert_eq!(runs[0].1, declared.1);
    }
    assert_eq!(runs[1].1.0.iter().map(|r| r.2).sum::<u64>(), mix.acted());
}

#[test]
fn keys_no_pattern_matches_go_back_to_redis_in_no_call() {
    // `*:tmp` and `*:old` share no literal prefix, so SCAN has no MATCH
    // and answers every key: the 20000 others' names alone are over 2 MB as
    // calls' KEYS, far above what the job sends however it sizes its steps.
    let other = format!("keep{}", "-".repeat(100));
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, &other, 20_000);
    populate(&mut con, "x", 100);
    for i in 0..100 {
        let _: () = redis::cmd("RENAME")
            .arg(format!("x:{i}"))
            .arg(format!("x:{i}:tmp"))
            .query(&mut con)
            .unwrap();
    }
    let rules = write_rules(
        server.dir(),
        "[[rule]]\nname = \"tmp\"\npattern = \"*:tmp\"\naction = \"delete\"\n\n\
         [[rule]]\nname = \"old\"\npattern = \"*:old\"\naction = \"delete\"\n",
    );
    let received = |con: &mut redis::Connection| -> u64 {
        info_field(con, "stats", "total_net_input_bytes")
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = received(&mut con);
    let out = job(&server.url(), &rules, "declared").run();
    out.assert_code(0);
    let sent = received(&mut con) - before;
    assert_eq!(rule_keys(&out.report(), "tmp"), 100, "{:#}", out.report());
    let left = keyspace(&mut con);
    assert!(left.keys().all(|key| !key.ends_with(b":tmp")), "{left:?}");
    let others = left.keys().filter(|key| key.starts_with(other.as_bytes()));
    assert_eq!(others.count(), 20_000);
    assert!(sent < 1_000_000, "the job sent Redis {sent} bytes");
}

#[test]
fn both_modes_leave_the_same_keyspace_and_counts_on_a_3_primary_cluster() {
    let mix = Mix::new(3_000);
    let runs = ["server", "declared"].map(|mode| {
        let cluster = RedisCluster::start(3, 0);
        mix.seed_cluster(&cluster);
        let rules = write_rules(cluster.nodes[0].dir(), MIX_RULES);
        let out = job(&cluster.url(), &rules, mode).run();
        out.assert_code(0);
        let report = out.report();
        assert_eq!(report["complete"], true, "{report:#}");
        let servers = report["servers"].as_array().unwrap();
        assert_eq!(servers.len(), 3, "{report:#}");
        assert!(servers.iter().all(|s| s["key_mode"] == mode), "{report:#}");
        mix.assert_cleaned(&cluster.keyspace(), mode);
        (cluster.keyspace(), totals(&report))
    });
    assert_same_keyspace(&runs[0].0, &runs[1].0);
    assert_eq!(runs[0].1, runs[1].1);
}

#[test]
fn on_a_cluster_a_step_gathers_scans_until_its_calls_declare_several_keys_each() {
    // 12,000 keys of 1,500 hash tags: about 500 slots per primary, 8 keys
    // each. A SCAN step of a few hundred keys holds about one key per slot
    // on a Redis that keeps one dictionary for all slots (7.0, 6.2): a call
    // per key, unless the step gathers SCANs first. Newer servers walk the
    // slots in order, and a step's keys share a few slots anyway.
    const TAGS: usize = 1_500;
    const PER_TAG: usize = 8;
    let cluster = RedisCluster::start(3, 0);
    let mut con = cluster.client();
    for tag in (0..TAGS).step_by(100) {
        let mut pipe = redis::cluster::cluster_pipe();
        for key in
            (tag..tag + 100).flat_map(|t| (0..PER_TAG).map(move |i| format!("k:cache:{{{t}}}:{i}")))
        {
            pipe.cmd("SET").arg(key).arg("v").ignore();
        }
        pipe.exec(&mut con).expect("cluster pipeline of SETs");
    }
    let rules = write_rules(cluster.nodes[0].dir(), MIX_RULES);
    let calls = |cluster: &RedisCluster| -> u64 {
        cluster
            .primaries()
            .iter()
            .map(|node| script_calls(&mut node.conn()))
            .sum()
    };
    let before = calls(&cluster);
    let out = paced_job(&cluster.url(), &rules, "declared", "0.5").run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["complete"], true, "{report:#}");
    let keys = (TAGS * PER_TAG) as u64;
    assert_eq!(rule_keys(&report, "cache"), keys, "{report:#}");
    let left = cluster.keyspace();
    assert_eq!(left.len() as u64, keys);
    assert!(
        left.values().all(|key| (1..=3_600_000).contains(&key.pttl)),
        "a key without the rule's TTL"
    );
    // The calls (with each step's save, the lease's and the permission
    // probe's): about one per slot and step, where a call per key would
    // be 12,000.
    let made = calls(&cluster) - before;
    assert!(
        made <= keys / 4,
        "{made} script calls for {keys} keys: {report:#}"
    );
}

#[test]
fn a_step_whose_keys_are_spread_thin_gathers_no_longer_than_its_time_limit() {
    // 600,000 keys no rule selects and 20,000 that one deletes, on a
    // cluster of one primary: the keys a SCAN step finds to clean are each
    // of another slot, and 20,000 of them never make calls of 8 keys a
    // slot, so a step would gather SCANs to the end of the node (about a
    // second of Redis's time), past the pass's stop checks, its lease
    // renewals and its pace. It gathers for 100 ms at most.
    let cluster = RedisCluster::start(1, 0);
    let node = &cluster.nodes[0];
    let mut con = node.conn();
    populate(&mut con, "other", 600_000);
    populate(&mut con, "k:del", 20_000);
    let rules = write_rules(node.dir(), MIX_RULES);
    let out = paced_job(&cluster.url(), &rules, "declared", "1").run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["complete"], true, "{report:#}");
    assert_eq!(rule_keys(&report, "doomed"), 20_000, "{report:#}");
    assert_eq!(dbsize(&mut con), 600_000);
    let steps = field(&report, "batches");
    assert!(steps >= 3, "{steps} steps walked 620,000 keys: {report:#}");
}

#[test]
fn a_call_refused_after_others_of_its_step_ran_leaves_what_they_did_counted() {
    // A user that may touch the keys of the hash tags {a0}..{a199} but not
    // those of {b}: the one call of a step that declares {b}'s slot is
    // refused (NOPERM, before it runs), while the step's other calls,
    // one per slot, delete their keys. The run fails, and its report
    // counts every key they deleted.
    let cluster = RedisCluster::start(1, 0);
    let node = &cluster.nodes[0];
    let mut con = node.conn();
    let mut pipe = redis::pipe();
    for tag in (0..200).map(|t| format!("a{t}")).chain(["b".to_string()]) {
        for i in 0..5 {
            pipe.set(format!("k:del:{{{tag}}}:{i}"), "v").ignore();
        }
    }
    pipe.exec(&mut con).expect("pipeline of SETs");
    let password = "declared-acl-pw-3301";
    let full = redis_janitor::acl::setuser_line(
        "janitor",
        redis_janitor::acl::Access::Clean,
        dialect(&mut con),
    );
    let limited = full.replace(" ~* ", " ~__redis-janitor__:* ~k:del:{a* ");
    assert_ne!(limited, full);
    acl_setuser(&mut con, &limited, password);
    let rules = write_rules(node.dir(), MIX_RULES);
    let url = format!("redis://janitor:{password}@127.0.0.1:{}", node.port());
    let out = paced_job(&url, &rules, "declared", "1").run();
    out.assert_code(1);
    assert!(
        out.stderr.to_lowercase().contains("noperm"),
        "{}",
        out.dump()
    );
    let report = out.report();
    assert_eq!(report["complete"], false, "{report:#}");
    let left = dbsize(&mut con);
    assert!(left < 1_000, "no call of the step ran: {left} keys left");
    assert_eq!(rule_keys(&report, "doomed"), 1_005 - left, "{report:#}");
    let refused: u64 = redis::cmd("EXISTS")
        .arg(
            (0..5)
                .map(|i| format!("k:del:{{b}}:{i}"))
                .collect::<Vec<_>>(),
        )
        .query(&mut con)
        .expect("EXISTS");
    assert_eq!(refused, 5, "a key of the refused call was deleted");
}

/// A proxy in front of `server` that refuses scripts calling SCAN with
/// `refusal` and keys of several slots with CROSSSLOT, like a managed
/// cluster's proxy.
fn refusing_proxy(server: &RedisServer, refusal: &str, hide_run_id: bool) -> ScriptProxy {
    ScriptProxy::start(
        server,
        Behaviour {
            refuse_scan_scripts: Some(refusal.to_string()),
            check_slots: true,
            hide_run_id,
            ..Behaviour::default()
        },
    )
}

#[test]
fn a_server_that_refuses_undeclared_keys_switches_the_job_to_declared_keys_by_itself() {
    for refusal in [ALIBABA, DRAGONFLY] {
        let server = RedisServer::start();
        let mix = Mix::new(2_000);
        mix.seed(&mut server.conn());
        let rules = write_rules(server.dir(), MIX_RULES);
        let proxy = refusing_proxy(&server, refusal, false);
        let out = run_json(&proxy.url())
            .arg("--rules")
            .arg(&rules)
            .args(["--max-server-share", "1"])
            .run();
        out.assert_code(0);
        let report = out.report();
        assert_eq!(report["complete"], true, "{report:#}");
        let entry = only_server(&report);
        assert_eq!(entry["key_mode"], "declared", "{report:#}");
        let switched = entry["key_mode_switched"].as_str().unwrap_or_default();
        assert!(switched.contains(&refusal[4..]), "{refusal}: {report:#}");
        assert!(
            out.stderr
                .contains("switching to the declared-keys mode (--key-mode declared)"),
            "{}",
            out.dump()
        );
        // The first call of the server-side variant was refused, and so was
        // the first declared call over keys of several slots; every call
        // after declared the keys of one slot.
        assert_eq!(proxy.refused(), 1, "{}", out.dump());
        assert_eq!(proxy.cross_slot(), 1, "{}", out.dump());
        assert!(proxy.scripts() > 1);
        mix.assert_cleaned(&keyspace(&mut server.conn()), refusal);
        assert_eq!(field(&report, "keys_scanned"), mix.len(), "{report:#}");
    }
}

#[test]
fn with_key_mode_server_such_a_server_fails_the_run_in_one_line_and_nothing_changes() {
    let server = RedisServer::start();
    let mix = Mix::new(500);
    mix.seed(&mut server.conn());
    let before = digest(&mut server.conn());
    let proxy = refusing_proxy(&server, ALIBABA, false);
    let out = run_json(&proxy.url()).args(["--key-mode", "server"]).run();
    out.assert_code(1);
    let error = out.report()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains("KEYS array"), "{}", out.dump());
    assert!(error.contains("--key-mode declared"), "{}", out.dump());
    assert_eq!(only_server(&out.report())["key_mode"], "server");
    assert_eq!(
        digest(&mut server.conn()),
        before,
        "a refused run changed data"
    );
}

#[test]
fn every_declared_call_carries_a_deadline_no_later_than_the_lease_it_stands_for() {
    deadlines_stay_within_the_lease(|job| job);
}

/// The job's own clock may run faster than the server's (two machines'
/// clocks drift, and a server's may be set back): a deadline reckoned from
/// the time the job measured since it took the lease would come after the
/// lease's expiry on a long run. Here the job's clock runs three times as
/// fast as the server's (libfaketime), as if it had drifted by two seconds
/// a second.
#[test]
fn a_deadline_stays_within_the_lease_when_the_jobs_clock_runs_fast() {
    deadlines_stay_within_the_lease(|job| {
        job.env("LD_PRELOAD", faketime_library())
            .env("FAKETIME", "+0 x3")
    });
}

/// libfaketime, which Debian's `faketime` package installs (`.ci/run` does).
fn faketime_library() -> PathBuf {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|dir| dir.path().join("faketime/libfaketime.so.1"))
        .find(|path| path.exists());
    found.expect("libfaketime is missing: apt-get install faketime")
}

/// A declared call cannot read the lease: it refuses from the deadline its
/// run sends, which must never come after the lease, as the run last
/// renewed it *and knew it*, may have expired. A step's save goes out with
/// its calls, so the run cannot count on that save's renewal (the save may
/// be refused) before its reply: the calls' deadline stands on the
/// renewals before. The server's own record says when each call ran and
/// when each renewal set the lease's expiry. `setup` sets the job up.
fn deadlines_stay_within_the_lease(setup: impl FnOnce(Janitor) -> Janitor) {
    let server = RedisServer::start();
    let mix = Mix::new(3_000);
    mix.seed(&mut server.conn());
    let rules = write_rules(server.dir(), MIX_RULES);
    let ttl_ms = 500;
    let mut out = None;
    let seen = monitor(&server, || {
        out = Some(
            setup(job(&server.url(), &rules, "declared"))
                .args(["--lock-ttl", "500ms", "--batch-size", "100"])
                .run(),
        );
    });
    let out = out.unwrap();
    out.assert_code(0);
    mix.assert_cleaned(&keyspace(&mut server.conn()), "after the run");

    let lease = String::from_utf8(redis_janitor::lease::state_keys(None).lease).unwrap();
    // The lease's expiry as the run knows it, and as the last save set it
    // (known once the next round trip goes out).
    let (mut known_ms, mut saved_ms) = (None, None);
    let mut in_save = false;
    let mut calls = 0;
    for command in &seen {
        let ms = command.micros / 1000;
        match command.args.as_slice() {
            [name, key, ttl] if command.from_script && name == "PEXPIRE" && *key == lease => {
                let expiry = Some(ms + ttl.parse::<u64>().unwrap());
                if in_save {
                    saved_ms = expiry;
                } else {
                    known_ms = expiry;
                }
            }
            [name, _, keys, rest @ ..] if !command.from_script && name.starts_with("EVAL") => {
                let [op, token, deadline, ..] = &rest[keys.parse::<usize>().unwrap()..] else {
                    continue;
                };
                in_save = op == "save";
                if in_save {
                    known_ms = saved_ms.or(known_ms);
                }
                // A declared clean call: no token, its deadline in ARGV[3].
                if op != "clean" || !token.is_empty() {
                    continue;
                }
                let deadline: i64 = deadline.parse().unwrap();
                let known_ms = known_ms.expect("a declared call before the lease was taken");
                assert!(
                    (0..=known_ms as i64).contains(&deadline),
                    "a call at {ms} ms sent the deadline {deadline}, after the lease's expiry \
                     as the run knew it, {known_ms}"
                );
                // Each step renews the lease at full speed: a deadline much
                // nearer would not come from the renewals.
                assert!(
                    deadline >= (ms + ttl_ms / 2) as i64,
                    "a call at {ms} ms sent the deadline {deadline}, under half the lease's \
                     {ttl_ms} ms away"
                );
                calls += 1;
            }
            _ => {}
        }
    }
    assert!(calls >= 5, "{calls} declared calls seen\n{}", out.dump());
}

/// Runs of [`MIX_RULES`] through `url`, one per key mode of `modes` in
/// turn, each cut short by `--max-runtime`, until one completes the pass
/// over the mix `server` holds: at least three runs, each after the first
/// resuming the pass, which checkpoints every key scanned and leaves the
/// mix cleaned. Returns the reports.
fn cut_runs_complete_one_pass(
    server: &RedisServer,
    mix: &Mix,
    url: &str,
    modes: &[&str],
) -> Vec<Json> {
    let rules = write_rules(server.dir(), MIX_RULES);
    let mut runs = Vec::new();
    for mode in modes.iter().cycle().take(40) {
        let out = run_json(url)
            .arg("--rules")
            .arg(&rules)
            .args(["--key-mode", mode, "--rate-limit", "5000"])
            .args(["--batch-size", "100", "--max-runtime", "150ms"])
            .run();
        out.assert_code(0);
        let report = out.report();
        runs.push(report.clone());
        if report["complete"] == true {
            break;
        }
    }
    assert!(runs.len() >= 3, "the pass was not cut: {} runs", runs.len());
    let last = runs.last().unwrap();
    assert_eq!(last["complete"], true, "{last:#}");
    for report in &runs[1..] {
        assert_eq!(only_server(report)["pass"]["resumed"], true, "{report:#}");
    }
    let checkpoint = checkpoint(&mut server.conn()).expect("the pass's checkpoint");
    assert_eq!(checkpoint["done"], "1", "{checkpoint:?}");
    assert_eq!(
        checkpoint["scanned"],
        mix.len().to_string(),
        "{checkpoint:?}"
    );
    mix.assert_cleaned(&keyspace(&mut server.conn()), "after the runs");
    runs
}

#[test]
fn a_pass_cut_in_one_key_mode_resumes_in_the_other() {
    // As `--key-mode auto` does on a server that refuses the scanned
    // variant only once a call touches a key: each run begins in the
    // default mode and switches.
    let server = RedisServer::start();
    let mix = Mix::new(3_000);
    mix.seed(&mut server.conn());
    cut_runs_complete_one_pass(&server, &mix, &server.url(), &["declared", "server"]);
}

#[test]
fn behind_a_proxy_without_run_id_a_pass_cut_into_runs_resumes_and_completes() {
    let server = RedisServer::start();
    let mix = Mix::new(3_000);
    mix.seed(&mut server.conn());
    let proxy = refusing_proxy(&server, ALIBABA, true);
    let runs = cut_runs_complete_one_pass(&server, &mix, &proxy.url(), &["declared"]);
    // Every run after the first says that a restart cannot be told without
    // a run_id, and the checkpoint records none.
    for report in &runs[1..] {
        let reason = only_server(report)["pass"]["reason"].as_str().unwrap();
        assert!(reason.contains("gives no run_id"), "{report:#}");
    }
    let checkpoint = checkpoint(&mut server.conn()).expect("the pass's checkpoint");
    assert_eq!(checkpoint["run_id"], "", "{checkpoint:?}");
}
