//! The figures a report gives beside its counts, checked against the real
//! server: the memory the deletes give back (estimated by `MEMORY USAGE`),
//! `used_memory` and the keyspace's size before and after, the keys the
//! SCAN steps examined, and each node's last success, kept in Redis beside
//! the checkpoint so that a failed, skipped or dry run still reports it.

use serde_json::Value as Json;

use crate::support::*;

/// Deletes every `big:` key.
const DELETE_BIG: &str = r#"
[[rule]]
name = "big"
pattern = "big:*"
action = "delete"
"#;

/// Keys of `big:` and their value size: the estimate's known keyspace.
const BIG_KEYS: u64 = 2_000;
const VALUE_BYTES: u64 = 1_000;

/// `DEBUG POPULATE count prefix size`: `count` strings of `size` bytes.
fn populate_sized(con: &mut redis::Connection, prefix: &str, count: u64, size: u64) {
    redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(count)
        .arg(prefix)
        .arg(size)
        .exec(con)
        .expect("DEBUG POPULATE");
}

/// A span of the report, `{"start": N, "end": N}`, as two numbers.
#[track_caller]
fn span(value: &Json) -> (u64, u64) {
    let side = |name: &str| {
        value[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no {name} in {value}"))
    };
    (side("start"), side("end"))
}

/// The report's `last_success_at` of its only server.
fn last_success(report: &Json) -> Option<f64> {
    only_server(report)["last_success_at"].as_f64()
}

#[test]
fn the_estimate_of_the_memory_freed_matches_a_keyspace_of_known_size() {
    let server = RedisServer::start();
    let mut con = server.conn();
    populate_sized(&mut con, "big", BIG_KEYS, VALUE_BYTES);
    populate(&mut con, "small", 500);
    let rules = write_rules(server.dir(), DELETE_BIG);

    // A dry run estimates as the real run will, and frees nothing.
    let dry = run_json(&server.url())
        .args(["--rules", rules.to_str().unwrap()])
        .args(["--estimate-freed", "--dry-run"])
        .run();
    dry.assert_code(0);
    let would = dry.report()["estimated_freed_bytes"].as_u64().unwrap();
    assert_eq!(dbsize(&mut con), BIG_KEYS + 500);

    let out = run_json(&server.url())
        .args(["--rules", rules.to_str().unwrap(), "--estimate-freed"])
        .run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(rule_keys(&report, "big"), BIG_KEYS, "{}", out.dump());
    let freed = report["estimated_freed_bytes"].as_u64().unwrap();
    assert_eq!(freed, would, "the dry run's estimate is the run's");
    // Each value's bytes, and at most a little more for the key, its
    // object and the allocator's rounding.
    assert!(
        (BIG_KEYS * VALUE_BYTES..=BIG_KEYS * (VALUE_BYTES + 200)).contains(&freed),
        "{freed} bytes estimated for {BIG_KEYS} values of {VALUE_BYTES} bytes"
    );
    assert_eq!(
        only_server(&report)["estimated_freed_bytes"].as_u64(),
        Some(freed)
    );
    // used_memory fell by about the estimate (the strings are freed at
    // once; the rest is the keyspace's tables and the job's own keys).
    let (before, after) = span(&report["used_memory_bytes"]);
    let fell = before.saturating_sub(after);
    assert!(
        fell as f64 > 0.8 * freed as f64 && (fell as f64) < 1.25 * freed as f64,
        "used_memory fell by {fell} bytes, the estimate is {freed}\n{report:#}"
    );
    assert_eq!(
        span(&only_server(&report)["used_memory_bytes"]),
        (before, after)
    );
    assert_keyspace_size(&mut con, 500);
}

/// The keyspace holds `n` keys of the user's (the job's own aside).
#[track_caller]
fn assert_keyspace_size(con: &mut redis::Connection, n: u64) {
    assert_eq!(dbsize(con), n);
}

#[test]
fn without_the_flag_no_memory_is_asked_and_the_estimate_is_null() {
    let server = RedisServer::start();
    let mut con = server.conn();
    populate_sized(&mut con, "big", 100, VALUE_BYTES);
    let out = run_with_rules(&server, DELETE_BIG);
    out.assert_code(0);
    let report = out.report();
    assert_eq!(rule_keys(&report, "big"), 100);
    assert!(report["estimated_freed_bytes"].is_null(), "{report:#}");
    // Redis 6.2 counts subcommands under their command.
    assert_eq!(
        calls_of(&mut con, "memory|usage") + calls_of(&mut con, "memory"),
        0
    );
    assert!(!out.stdout.contains("MEMORY USAGE"), "{}", out.dump());
}

#[test]
fn the_keyspace_size_is_counted_before_and_after_and_the_keys_examined_with_it() {
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "big", 3_000);
    populate(&mut con, "other", 1_000);
    let out = run_with_rules(&server, DELETE_BIG);
    out.assert_code(0);
    let report = out.report();
    // DBSIZE counts the job's own keys too: after the run, its checkpoint
    // and its history.
    let own = state_keys(&mut con).len() as u64;
    assert_eq!(own, 2, "{:?}", state_keys(&mut con));
    assert_eq!(span(&report["db_keys"]), (4_000, 1_000 + own), "{report:#}");
    // MATCH big:* returned only the big keys, but the steps looked at
    // every key: their COUNTs add up to about the keyspace (Redis answers
    // a COUNT with whole hash buckets, a little more or less than asked;
    // measured 4000 to 4340 on the four servers).
    assert_eq!(field(&report, "keys_scanned"), 3_000, "{report:#}");
    let examined = field(&report, "keys_examined");
    assert!((3_600..=5_000).contains(&examined), "{report:#}");
    let text = janitor()
        .args(["run", "--url", &server.url(), "--dry-run", "--rules"])
        .arg(write_rules(server.dir(), DELETE_BIG))
        .run();
    text.assert_code(0);
    let line = format!(
        "keyspace        {0} keys at start, {0} keys at end",
        1_000 + own
    );
    assert!(text.stdout.contains(&line), "{}", text.dump());
}

#[test]
fn the_last_success_survives_failed_skipped_and_dry_runs() {
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "big", 100);
    let rules = write_rules(server.dir(), DELETE_BIG);
    let run = |extra: &[&str]| {
        run_json(&server.url())
            .args(["--rules", rules.to_str().unwrap()])
            .args(extra)
            .run()
    };

    // No run succeeded yet: a dry run says so, and records nothing.
    let dry = run(&["--dry-run"]);
    dry.assert_code(0);
    assert_eq!(last_success(&dry.report()), None, "{}", dry.dump());

    let first = run(&[]);
    first.assert_code(0);
    let succeeded = last_success(&first.report()).expect("a last success");
    let history = &state_keys(&mut con)[&history_key()];
    assert_eq!(hash_u64(history, "last_success") as f64 / 1000.0, succeeded);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(history_key())
        .query(&mut con)
        .unwrap();
    assert!(
        ttl > 29 * 24 * 3_600_000,
        "the history expires in 30 days: {ttl}"
    );

    // A failed run (a cap reached) reports the last success, unchanged.
    populate(&mut con, "big", 100);
    let failed = run(&["--max-keys", "10"]);
    failed.assert_code(1);
    assert_eq!(last_success(&failed.report()), Some(succeeded));

    // A run skipped for another run's lease: unchanged too.
    hold_lease_for_another_run(&mut con, "another (pid 1)", 1);
    let skipped = run(&[]);
    skipped.assert_code(0);
    assert_eq!(skipped.report()["stopped_by"], "locked");
    assert_eq!(last_success(&skipped.report()), Some(succeeded));
    redis::cmd("DEL").arg(lease_key()).exec(&mut con).unwrap();

    // A dry run: unchanged. A run with --no-lock that succeeds records.
    let dry = run(&["--dry-run"]);
    assert_eq!(last_success(&dry.report()), Some(succeeded));
    let later = run(&["--no-lock"]);
    later.assert_code(0);
    let recorded = last_success(&later.report()).unwrap();
    assert!(recorded > succeeded, "{recorded} after {succeeded}");
    assert_keyspace_size(&mut con, 0);
}
