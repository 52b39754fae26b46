//! The safety brakes on a runaway rule: a rule's `max_keys` and the run's
//! `--max-keys` stop the run once a key is left for them, with exit 1 and a
//! one-line message naming the rule and the cap; exactly the capped number
//! of keys is acted on, the other rules go on within the calls made, the
//! checkpoint records where the pass stopped and the next run resumes there.
//! A cap met but never exceeded is no failure. On a cluster the caps are
//! shared by every primary. A dry run lists a few escaped sample keys per
//! rule, and reaches its caps as a real run would, writing nothing; `check`
//! prints a rule's cap.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;

use crate::support::*;

/// A runaway `temp` rule capped at 100 keys, and a `cache` rule without a
/// cap that gives a TTL to the cache keys without one.
const CAPPED_TEMP: &str = r#"
[[rule]]
name = "temp"
pattern = "temp:*"
action = "delete"
max_keys = 100

[[rule]]
name = "cache"
pattern = "cache:*"
no_ttl = true
action = "expire"
ttl = "1h"
"#;

/// [`CAPPED_TEMP`] without its cap.
fn uncapped() -> String {
    CAPPED_TEMP.replace("max_keys = 100\n", "")
}

/// The first words of the message of a rule's cap reached.
fn rule_cap_message(rule: &str, max: u64) -> String {
    format!("rule {rule:?} reached its cap, max_keys = {max}")
}

/// The first words of the message of the run's cap reached at `rule`.
fn run_cap_message(max: u64, rule: &str) -> String {
    format!("the run reached its cap, --max-keys {max}, at rule {rule:?}")
}

/// The report's rule named `name`.
#[track_caller]
fn rule<'a>(report: &'a Json, name: &str) -> &'a Json {
    report["rules"]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["name"] == name))
        .unwrap_or_else(|| panic!("no rule {name:?} in report {report:#}"))
}

/// `capped` of the report's rule named `name`.
#[track_caller]
fn capped(report: &Json, name: &str) -> u64 {
    rule(report, name)["capped"]
        .as_u64()
        .unwrap_or_else(|| panic!("rule {name:?} has no u64 `capped`: {report:#}"))
}

/// The keys all rules acted on, and those they left for a cap.
fn acted_and_capped(report: &Json) -> (u64, u64) {
    let rules = report["rules"].as_array().cloned().unwrap_or_default();
    let sum = |f: &str| rules.iter().map(|r| r[f].as_u64().unwrap()).sum();
    (sum("keys"), sum("capped"))
}

/// A run stopped by a cap: exit 1, a partial report whose `error` starts
/// with `message`, and that same error as stderr's last line (in text log
/// format). Returns the report.
#[track_caller]
fn assert_capped_run(out: &Outcome, message: &str) -> Json {
    out.assert_code(1);
    let report = out.report();
    assert_eq!(report["complete"], false, "{report:#}");
    assert!(report["stopped_by"].is_null(), "{report:#}");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with(message),
        "report.error should start with {message:?}: {report:#}"
    );
    let last = out.stderr_lines().pop().unwrap_or_default();
    assert_eq!(
        last,
        format!("redis-janitor: error: {error}"),
        "stderr's last line should be the report's error\n{}",
        out.dump()
    );
    report
}

/// The matched keys are each acted on, left for a cap, or left unchanged:
/// none is lost from the counts.
#[track_caller]
fn assert_every_matched_key_accounted(report: &Json) {
    let (acted, capped) = acted_and_capped(report);
    assert_eq!(
        field(report, "keys_matched"),
        acted + capped + field(report, "unchanged") + field(report, "vanished"),
        "keys_matched != acted + capped + unchanged + vanished in {report:#}"
    );
}

/// The keys of the connection's database whose name starts with `prefix`.
fn keys_with_prefix(con: &mut redis::Connection, prefix: &[u8]) -> BTreeSet<Vec<u8>> {
    keyspace(con)
        .into_keys()
        .filter(|k| k.starts_with(prefix))
        .collect()
}

/// The checkpoint's numeric field `name`.
#[track_caller]
fn number(checkpoint: &BTreeMap<String, String>, name: &str) -> u64 {
    checkpoint
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("checkpoint field {name} is not a number: {checkpoint:?}"))
}

/// The keys of the debug outcome events (`--log-format json`,
/// `RUST_LOG=redis_janitor=debug`) whose message is `message` and, when
/// given, whose rule is `rule`. The keys are plain ASCII, so the escaped
/// form is the key between quotes.
fn logged_keys(out: &Outcome, message: &str, rule: Option<&str>) -> BTreeSet<Vec<u8>> {
    out.stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            serde_json::from_str::<Json>(line)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line:?}"))
        })
        .filter(|event| event["message"] == message)
        .filter(|event| rule.is_none_or(|rule| event["rule"] == rule))
        .map(|event| {
            let key = event["key"].as_str().expect("the event names its key");
            let bare = key
                .strip_prefix('"')
                .and_then(|k| k.strip_suffix('"'))
                .filter(|k| !k.contains('\\'))
                .unwrap_or_else(|| panic!("not a plain quoted key: {key}"));
            bare.as_bytes().to_vec()
        })
        .collect()
}

#[test]
fn a_rule_cap_stops_a_runaway_rule_and_the_next_run_resumes_where_it_stopped() {
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "temp", 1000);
    populate(&mut con, "cache", 300);
    let rules = write_rules(server.dir(), CAPPED_TEMP);
    // Calls of at most 100 keys: the pass takes many, and the cap stops it
    // after a few.
    let run = || {
        run_json(&server.url())
            .arg("--rules")
            .arg(&rules)
            .args(["--batch-size", "100"])
    };

    // Run 1, with the debug outcome stream: which keys each rule acted on,
    // and which the cap left.
    let first = run()
        .args(["--log-format", "json"])
        .env("RUST_LOG", "redis_janitor=debug")
        .run();
    first.assert_code(1);
    let report = first.report();
    let message = report["error"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(&rule_cap_message("temp", 100)),
        "{report:#}"
    );
    let last: Json = serde_json::from_str(first.stderr.lines().last().unwrap()).unwrap();
    assert_eq!(last["error"], message, "{}", first.dump());
    let deleted = logged_keys(
        &first,
        "rule deletes key, unless it had vanished",
        Some("temp"),
    );
    let left = logged_keys(&first, "a cap was reached; key left as it was", None);
    let expired = logged_keys(&first, "rule acts on key", Some("cache"));
    // Exactly the cap was acted on; the keys beyond it are counted.
    assert_eq!(rule_keys(&report, "temp"), 100, "{report:#}");
    assert_eq!(deleted.len(), 100, "{}", first.dump());
    assert!(capped(&report, "temp") > 0, "{report:#}");
    assert_eq!(capped(&report, "temp"), left.len() as u64, "{report:#}");
    assert!(left.iter().all(|k| k.starts_with(b"temp:")), "{left:?}");
    assert_eq!(dbsize(&mut con), 1200);
    // The other rule acted on every key of its own in the calls made,
    // the last one too: every key SCAN returned was acted on or left for
    // the cap.
    assert_eq!(rule_keys(&report, "cache"), expired.len() as u64);
    assert_eq!(capped(&report, "cache"), 0, "{report:#}");
    assert_eq!(field(&report, "unchanged"), 0, "{report:#}");
    assert_eq!(
        field(&report, "keys_matched"),
        100 + capped(&report, "temp") + rule_keys(&report, "cache"),
        "{report:#}"
    );
    assert_every_matched_key_accounted(&report);
    // The keyspace, key by key.
    let mut expected: Vec<(Vec<u8>, Ttl)> = Vec::new();
    for i in 0..1000 {
        let key = format!("temp:{i}").into_bytes();
        if !deleted.contains(&key) {
            expected.push((key, Ttl::Persistent));
        }
    }
    for i in 0..300 {
        let key = format!("cache:{i}").into_bytes();
        let ttl = if expired.contains(&key) {
            Ttl::About(3600)
        } else {
            Ttl::Persistent
        };
        expected.push((key, ttl));
    }
    let expected: Vec<(&[u8], &str, Ttl)> = expected
        .iter()
        .map(|(k, ttl)| (k.as_slice(), "string", *ttl))
        .collect();
    assert_keyspace(&mut con, &expected);
    // The checkpoint records where the pass stopped, and what it did.
    let saved = checkpoint(&mut con).expect("a checkpoint after a capped run");
    let stopped_at = number(&saved, "cursor");
    assert_eq!(saved["done"], "0", "{saved:?}");
    assert_eq!(
        saved["fingerprint"], report["script"]["fingerprint"],
        "{saved:?}"
    );
    assert_eq!(number(&saved, "calls"), field(&report, "batches"));
    assert_eq!(number(&saved, "scanned"), field(&report, "keys_scanned"));
    assert_eq!(
        number(&saved, "acted"),
        100 + rule_keys(&report, "cache"),
        "{saved:?}"
    );

    // Run 2, same rules: it resumes there (the start of the SCAN step in
    // which run 1 reached its cap, so no key the cap left is skipped) and
    // stops at the cap again, having acted first on the keys run 1 left.
    let second = run().run();
    let report2 = assert_capped_run(&second, &rule_cap_message("temp", 100));
    let pass = &report2["servers"][0]["pass"];
    assert_eq!(pass["resumed"], true, "{report2:#}");
    assert_eq!(pass["cursor"], stopped_at, "{report2:#}");
    assert_eq!(rule_keys(&report2, "temp"), 100, "{report2:#}");
    assert!(capped(&report2, "temp") > 0, "{report2:#}");
    assert_every_matched_key_accounted(&report2);
    let temp_left = keys_with_prefix(&mut con, b"temp:");
    assert_eq!(temp_left.len(), 800);
    assert!(left.len() <= 100, "{left:?}");
    assert!(
        left.is_disjoint(&temp_left),
        "run 2 skipped keys the cap left in run 1: {:?}",
        left.intersection(&temp_left).collect::<Vec<_>>()
    );
    assert_eq!(
        expires_count(&mut con, 0),
        rule_keys(&report, "cache") + rule_keys(&report2, "cache")
    );
    let resumed = checkpoint(&mut con).expect("a checkpoint after run 2");
    assert_eq!(
        resumed["started"], saved["started"],
        "one pass: {resumed:?}"
    );
    assert_eq!(
        number(&resumed, "calls"),
        field(&report, "batches") + field(&report2, "batches")
    );
    assert_eq!(
        number(&resumed, "acted"),
        200 + rule_keys(&report, "cache") + rule_keys(&report2, "cache")
    );

    // The contrast: a new pass from cursor 0 meets the keys run 1 left for
    // its cap before any other, and deletes them.
    let third = run().arg("--restart").run();
    let report3 = assert_capped_run(&third, &rule_cap_message("temp", 100));
    assert_eq!(
        report3["servers"][0]["pass"]["resumed"], false,
        "{report3:#}"
    );
    assert_eq!(rule_keys(&report3, "temp"), 100, "{report3:#}");
    let now_left = keys_with_prefix(&mut con, b"temp:");
    assert_eq!(now_left.len(), 700);
    assert!(
        left.iter().any(|k| !now_left.contains(k)),
        "a new pass did not come to the keys left for the cap first"
    );
}

/// 100 temp keys under a cap of 100, 50 cache keys without a TTL under a
/// cap of 50, 20 with one, and `--max-keys 150`: every cap is met exactly,
/// none exceeded, so the run completes with exit 0 in the exact final
/// state. `batch` are the run's extra arguments.
fn assert_caps_met_exactly_complete(batch: &[&str]) {
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "temp", 100);
    populate(&mut con, "cache", 50);
    for i in 0..20 {
        seed(
            &mut con,
            format!("cache:ttl:{i}").as_bytes(),
            "string",
            Some(7200),
        );
    }
    let rules = write_rules(
        server.dir(),
        &CAPPED_TEMP.replace("ttl = \"1h\"", "ttl = \"1h\"\nmax_keys = 50"),
    );
    let out = run_json(&server.url())
        .arg("--rules")
        .arg(&rules)
        .args(["--max-keys", "150"])
        .args(batch)
        .run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["complete"], true, "{report:#}");
    assert!(report["error"].is_null(), "{report:#}");
    assert_eq!(rule_keys(&report, "temp"), 100, "{report:#}");
    assert_eq!(rule_keys(&report, "cache"), 50, "{report:#}");
    assert_eq!(acted_and_capped(&report).1, 0, "{report:#}");
    let mut expected: Vec<(Vec<u8>, Ttl)> = (0..50)
        .map(|i| (format!("cache:{i}").into_bytes(), Ttl::About(3600)))
        .collect();
    expected.extend((0..20).map(|i| (format!("cache:ttl:{i}").into_bytes(), Ttl::About(7200))));
    let expected: Vec<(&[u8], &str, Ttl)> = expected
        .iter()
        .map(|(k, ttl)| (k.as_slice(), "string", *ttl))
        .collect();
    assert_keyspace(&mut con, &expected);
    assert_eq!(checkpoint(&mut con).unwrap()["cursor"], "0");
}

#[test]
fn caps_met_exactly_in_one_call_complete_with_exit_0() {
    assert_caps_met_exactly_complete(&[]);
}

#[test]
fn caps_met_exactly_over_many_small_calls_complete_with_exit_0() {
    // Calls of one key: each takes its share of the caps, and the last
    // ones are granted none. SCAN returns a whole hash bucket, often more
    // keys than a call's COUNT: they are no reason to stop either.
    assert_caps_met_exactly_complete(&["--batch-size", "1"]);
}

#[test]
fn caps_larger_than_a_call_stop_the_run_at_exactly_the_cap() {
    // The usual setting: a cap many calls long. The run acts on exactly
    // the cap, and the message names the cap that was set.
    let server = RedisServer::start();
    let mut con = server.conn();
    let rules = write_rules(server.dir(), CAPPED_TEMP);
    let cases: [(&[&str], String); 2] = [
        (&[], rule_cap_message("temp", 100)),
        (&["--max-keys", "100"], run_cap_message(100, "temp")),
    ];
    for (args, message) in cases {
        redis::cmd("FLUSHALL").exec(&mut con).unwrap();
        populate(&mut con, "temp", 1000);
        let rules_arg = if args.is_empty() {
            rules.clone()
        } else {
            write_file(server.dir(), "uncapped.toml", &uncapped())
        };
        let out = run_json(&server.url())
            .arg("--rules")
            .arg(&rules_arg)
            .args(["--batch-size", "10"])
            .args(args)
            .run();
        let report = assert_capped_run(&out, &message);
        assert_eq!(rule_keys(&report, "temp"), 100, "{report:#}");
        assert_eq!(dbsize(&mut con), 900, "{report:#}");
        assert!(!out.stderr.contains("--max-keys 0"), "{}", out.dump());
    }
}

#[test]
fn the_run_cap_stops_the_run_over_all_rules_and_the_next_run_resumes() {
    // The built-in rules: cache keys without a TTL get one, temp keys go.
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "temp", 600);
    populate(&mut con, "cache", 600);
    let run = || run_json(&server.url()).args(["--batch-size", "100"]);

    let first = run().args(["--max-keys", "100"]).run();
    first.assert_code(1);
    let report = first.report();
    // The rule named is the first whose key was left for the cap: on one
    // server, only the last call leaves keys for a cap.
    let reached_at = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["capped"].as_u64().unwrap() > 0)
        .map(|r| r["name"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no rule left a key for the cap: {report:#}"));
    let report = assert_capped_run(&first, &run_cap_message(100, &reached_at));
    assert_eq!(acted_and_capped(&report).0, 100, "{report:#}");
    assert_eq!(rule_keys(&report, "cache-expiring-soon"), 0);
    assert_every_matched_key_accounted(&report);
    assert_eq!(field(&report, "unchanged"), 0, "{report:#}");
    let deleted = rule_keys(&report, "temp");
    let expired = rule_keys(&report, "cache-missing-ttl");
    assert_eq!(dbsize(&mut con), 1200 - deleted);
    assert_eq!(expires_count(&mut con, 0), expired);
    assert_eq!(
        keys_with_prefix(&mut con, b"temp:").len() as u64,
        600 - deleted
    );
    let saved = checkpoint(&mut con).expect("a checkpoint after a capped run");
    // The capped call rewinds to the start of its SCAN step, which may be
    // the pass's first (cursor 0): the pass is not done either way.
    let stopped_at = number(&saved, "cursor");
    assert_eq!(saved["done"], "0", "{saved:?}");
    assert_eq!(number(&saved, "acted"), 100, "{saved:?}");

    // The next run, its cap from the environment, resumes there and acts
    // on 100 keys more.
    let second = run().env("JANITOR_MAX_KEYS", "100").run();
    let report2 = assert_capped_run(&second, "the run reached its cap, --max-keys 100, at rule");
    let pass = &report2["servers"][0]["pass"];
    assert_eq!(pass["resumed"], true, "{report2:#}");
    assert_eq!(pass["cursor"], stopped_at, "{report2:#}");
    assert_eq!(acted_and_capped(&report2).0, 100, "{report2:#}");
    assert_every_matched_key_accounted(&report2);
    let deleted2 = rule_keys(&report2, "temp");
    let expired2 = rule_keys(&report2, "cache-missing-ttl");
    assert_eq!(dbsize(&mut con), 1200 - deleted - deleted2);
    assert_eq!(expires_count(&mut con, 0), expired + expired2);
    let resumed = checkpoint(&mut con).unwrap();
    assert_eq!(resumed["started"], saved["started"], "{resumed:?}");
    assert_eq!(number(&resumed, "acted"), 200, "{resumed:?}");
}

/// The keys left on the cluster with `prefix`, and the sum of `acted` of
/// the primaries' checkpoints.
fn cluster_left_and_checkpointed(cluster: &RedisCluster, prefix: &[u8]) -> (u64, u64) {
    let left = cluster
        .keyspace()
        .keys()
        .filter(|k| k.starts_with(prefix))
        .count() as u64;
    let mut acted = 0;
    for node in cluster.primaries() {
        for (name, fields) in state_keys(&mut node.conn()) {
            if name.ends_with(b":checkpoint") {
                acted += fields["acted"].parse::<u64>().unwrap();
            }
        }
    }
    (left, acted)
}

#[test]
fn the_caps_are_shared_by_every_node_of_a_cluster() {
    let cluster = RedisCluster::start(3, 0);
    cluster.populate("temp", 3000);
    for node in cluster.primaries() {
        assert!(dbsize(&mut node.conn()) > 900, "{}", cluster.logs());
    }

    // The run's cap, over the built-in rules.
    let out = run_json(&cluster.url()).args(["--max-keys", "100"]).run();
    let report = assert_capped_run(&out, &run_cap_message(100, "temp"));
    let acted = rule_keys(&report, "temp");
    assert!(acted > 0 && acted <= 100, "{report:#}");
    let servers = report["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 3, "{report:#}");
    for server in servers {
        assert_eq!(server["error"], report["error"], "{report:#}");
    }
    let (left, checkpointed) = cluster_left_and_checkpointed(&cluster, b"temp:");
    assert_eq!(left, 3000 - acted, "{report:#}");
    assert_eq!(checkpointed, acted, "the checkpoints' acted");

    // A rule's cap, the same.
    let rules = write_rules(
        cluster.nodes[0].dir(),
        "[[rule]]\nname = \"temp\"\npattern = \"temp:*\"\naction = \"delete\"\nmax_keys = 100\n",
    );
    let out = run_json(&cluster.url()).arg("--rules").arg(&rules).run();
    let report2 = assert_capped_run(&out, &rule_cap_message("temp", 100));
    let acted2 = rule_keys(&report2, "temp");
    assert!(acted2 > 0 && acted2 <= 100, "{report2:#}");
    let (left, _) = cluster_left_and_checkpointed(&cluster, b"temp:");
    assert_eq!(left, 3000 - acted - acted2, "{report2:#}");
}

#[test]
fn a_cap_met_exactly_on_a_cluster_completes_with_exit_0() {
    // 300 keys over 3 primaries and a cap of 300: no key is beyond the
    // cap, whichever node acts on which share of it.
    let cluster = RedisCluster::start(3, 0);
    cluster.populate("temp", 300);
    let rules = write_rules(
        cluster.nodes[0].dir(),
        "[[rule]]\nname = \"temp\"\npattern = \"temp:*\"\naction = \"delete\"\nmax_keys = 300\n",
    );
    let out = run_json(&cluster.url()).arg("--rules").arg(&rules).run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(rule_keys(&report, "temp"), 300, "{report:#}");
    assert_eq!(capped(&report, "temp"), 0, "{report:#}");
    assert_eq!(cluster.dbsize(), 0);

    cluster.populate("temp", 300);
    let out = run_json(&cluster.url()).args(["--max-keys", "300"]).run();
    out.assert_code(0);
    assert_eq!(rule_keys(&out.report(), "temp"), 300, "{}", out.dump());
    assert_eq!(cluster.dbsize(), 0);
}

/// Rules whose dry run shows samples: `temp` matches three keys with odd
/// bytes, `cache-missing-ttl` twenty, `cache-expiring-soon` two, `none`
/// none.
const SAMPLED: &str = r#"
[[rule]]
name = "temp"
pattern = "temp:*"
action = "delete"

[[rule]]
name = "cache-missing-ttl"
pattern = "cache:*"
no_ttl = true
action = "expire"
ttl = "1h"

[[rule]]
name = "cache-expiring-soon"
pattern = "cache:*"
ttl_below = "60s"
action = "delete"

[[rule]]
name = "none"
pattern = "none:*"
action = "delete"
"#;

/// The key with a `\xff` byte and a newline, and how the report writes it.
const ODD_KEY: &[u8] = b"temp:\xff\nline";
const ODD_KEY_ESCAPED: &str = r#""temp:\xff\nline""#;
/// A key with quotes and a backslash, and how the report writes it.
const QUOTED_KEY: &[u8] = b"temp:\"q\"\\";
const QUOTED_KEY_ESCAPED: &str = r#""temp:\"q\"\\""#;

fn seed_sampled(con: &mut redis::Connection) {
    seed_all(
        con,
        &[
            (ODD_KEY, "string", None),
            (QUOTED_KEY, "hash", None),
            (b"temp:plain", "list", Some(7200)),
            (b"cache:soon:0", "string", Some(30)),
            (b"cache:soon:1", "set", Some(30)),
            (b"user:1", "string", None),
        ],
    );
    for i in 0..20 {
        seed(con, format!("cache:{i}").as_bytes(), "string", None);
        seed(
            con,
            format!("cache:ttl:{i}").as_bytes(),
            "string",
            Some(7200),
        );
    }
}

/// The report's samples of rule `name`, as a set.
#[track_caller]
fn samples(report: &Json, name: &str) -> BTreeSet<String> {
    let list = rule(report, name)["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("rule {name:?} has no samples list: {report:#}"));
    let set: BTreeSet<String> = list
        .iter()
        .map(|s| s.as_str().expect("a sample is a string").to_string())
        .collect();
    assert_eq!(set.len(), list.len(), "samples repeat: {report:#}");
    set
}

/// The text report's sample lines, per rule line above them.
fn text_samples(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("  rule ") {
            let name = rest.split_whitespace().next().unwrap().to_string();
            out.entry(name.clone()).or_default();
            current = Some(name);
        } else if let Some(sample) = line.strip_prefix("    sample        ") {
            let rule = current.clone().expect("a sample line under a rule line");
            out.get_mut(&rule).unwrap().insert(sample.to_string());
        } else {
            current = None;
        }
    }
    out
}

#[test]
fn a_dry_run_reports_escaped_sample_keys_per_rule_and_a_real_run_none() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_sampled(&mut con);
    let digest_before = digest(&mut con);
    let rules = write_rules(server.dir(), SAMPLED);

    let dry = run_json(&server.url())
        .arg("--rules")
        .arg(&rules)
        .arg("--dry-run")
        .run();
    dry.assert_code(0);
    let report = dry.report();
    assert_eq!(digest(&mut con), digest_before, "the dry run wrote");
    // Escaped: the report is one line without the key's raw bytes.
    assert_eq!(dry.stdout.trim_end().lines().count(), 1, "{}", dry.dump());
    assert!(!dry.raw_stdout.contains(&0xff), "{}", dry.dump());
    let set = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        samples(&report, "temp"),
        set(&[ODD_KEY_ESCAPED, QUOTED_KEY_ESCAPED, "\"temp:plain\""]),
        "{report:#}"
    );
    // Up to five, of the keys the rule would act on: not those with a TTL,
    // nor those an earlier rule takes.
    let missing = samples(&report, "cache-missing-ttl");
    let candidates: BTreeSet<String> = (0..20)
        .map(|i| show(format!("cache:{i}").as_bytes()))
        .collect();
    assert_eq!(missing.len(), 5, "{report:#}");
    assert!(missing.is_subset(&candidates), "{report:#}");
    assert_eq!(
        samples(&report, "cache-expiring-soon"),
        set(&["\"cache:soon:0\"", "\"cache:soon:1\""]),
        "{report:#}"
    );
    assert_eq!(rule(&report, "none")["samples"], serde_json::json!([]));
    assert_eq!(rule_keys(&report, "cache-missing-ttl"), 20, "{report:#}");

    // The text report: the same samples, each on a `sample` line under its
    // rule.
    let text = janitor()
        .args([
            "run",
            "--url",
            &server.url(),
            "--output",
            "text",
            "--dry-run",
        ])
        .arg("--rules")
        .arg(&rules)
        .run();
    text.assert_code(0);
    assert!(
        text.stdout
            .lines()
            .any(|l| l == format!("    sample        {ODD_KEY_ESCAPED}")),
        "{}",
        text.dump()
    );
    let from_text = text_samples(&text.stdout);
    for name in ["temp", "cache-expiring-soon", "none"] {
        assert_eq!(from_text[name], samples(&report, name), "{}", text.dump());
    }
    assert_eq!(from_text["cache-missing-ttl"].len(), 5, "{}", text.dump());
    assert!(from_text["cache-missing-ttl"].is_subset(&candidates));
    assert_eq!(digest(&mut con), digest_before, "the dry run wrote");

    // A real run reports no samples, in JSON or in text.
    let real = run_json(&server.url()).arg("--rules").arg(&rules).run();
    real.assert_code(0);
    let real_report = real.report();
    for r in real_report["rules"].as_array().unwrap() {
        assert!(r.get("samples").is_none(), "{real_report:#}");
    }
    assert_eq!(rule_counts(&real_report), rule_counts(&report));
    seed_sampled(&mut con);
    let text = janitor()
        .args(["run", "--url", &server.url(), "--output", "text"])
        .arg("--rules")
        .arg(&rules)
        .run();
    text.assert_code(0);
    assert!(!text.stdout.contains("sample"), "{}", text.dump());
}

/// The text report's rule lines: per rule, the keys it would act on (or
/// acted on) and those it left for a cap.
fn text_rule_lines(text: &str) -> BTreeMap<String, (u64, u64)> {
    let number_before = |line: &str, what: &str| -> Option<u64> {
        let head = &line[..line.find(what)?];
        head.rsplit(' ').next()?.parse().ok()
    };
    text.lines()
        .filter_map(|line| {
            let name = line.strip_prefix("  rule ")?.split_whitespace().next()?;
            let keys = number_before(line, " keys (")
                .unwrap_or_else(|| panic!("no key count in {line:?}"));
            let left = number_before(line, " more left for a cap").unwrap_or(0);
            Some((name.to_string(), (keys, left)))
        })
        .collect()
}

#[test]
fn a_dry_run_reaches_its_caps_as_a_run_would_and_writes_nothing() {
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "temp", 1000);
    populate(&mut con, "cache", 300);
    let capped_rules = write_rules(server.dir(), CAPPED_TEMP);
    let uncapped_rules = write_file(server.dir(), "uncapped.toml", &uncapped());
    let digest_before = digest(&mut con);
    let cases = [
        (&capped_rules, None, rule_cap_message("temp", 100)),
        (
            &uncapped_rules,
            Some("100"),
            "the run reached its cap, --max-keys 100, at rule".to_string(),
        ),
    ];
    for (rules, max_keys, message) in cases {
        let dry_run = |output: &str| {
            let mut j = janitor()
                .args(["run", "--url", &server.url(), "--dry-run"])
                .args(["--output", output, "--batch-size", "100", "--rules"])
                .arg(rules);
            if let Some(max) = max_keys {
                j = j.args(["--max-keys", max]);
            }
            j.run()
        };
        let out = dry_run("json");
        let report = assert_capped_run(&out, &message);
        assert_eq!(report["dry_run"], true, "{report:#}");
        // Exactly the cap: the rule's own, or all rules' together.
        let (acted, capped_keys) = acted_and_capped(&report);
        let counted = match max_keys {
            None => rule_keys(&report, "temp"),
            Some(_) => acted,
        };
        assert_eq!(counted, 100, "{report:#}");
        assert!(capped_keys > 0, "{report:#}");
        assert_every_matched_key_accounted(&report);
        assert_eq!(samples(&report, "temp").len(), 5, "{report:#}");
        assert_eq!(digest(&mut con), digest_before, "the dry run wrote");
        assert!(
            state_keys(&mut con).is_empty(),
            "the dry run wrote its state"
        );
        // The text report says so too: the failure, and the keys the rule
        // would have acted on beyond the cap.
        let text = dry_run("text");
        text.assert_code(1);
        let first = text.stdout.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("redis-janitor dry run: pass failed: ") && first.contains(&message),
            "{}",
            text.dump()
        );
        let lines = text_rule_lines(&text.stdout);
        let counted = match max_keys {
            None => lines["temp"].0,
            Some(_) => lines.values().map(|(keys, _)| keys).sum(),
        };
        assert_eq!(counted, 100, "{}", text.dump());
        assert!(lines.values().any(|&(_, left)| left > 0), "{}", text.dump());
        assert_eq!(digest(&mut con), digest_before, "the dry run wrote");
    }
}

#[test]
fn check_prints_a_rules_cap_in_the_normalized_rules() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_rules(dir.path(), CAPPED_TEMP);
    let out = janitor().args(["check", "--rules"]).arg(&path).run();
    out.assert_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("max_keys")).count(),
        1,
        "{}",
        out.dump()
    );
    assert!(lines.contains(&"max_keys = 100"), "{}", out.dump());
    // Under its own rule, not the one without a cap.
    let at = |needle: &str| out.stdout.find(needle).unwrap();
    assert!(at("name = \"temp\"") < at("max_keys = 100"));
    assert!(at("max_keys = 100") < at("name = \"cache\""));
    // The output is a rules file that `check` reads back to itself.
    let again = write_file(dir.path(), "again.toml", &out.stdout);
    let out2 = janitor().args(["check", "--rules"]).arg(&again).run();
    out2.assert_code(0);
    let body = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&out2.stdout), body(&out.stdout));
}

/// Calls whose replies were lost acted all the same, and saved the
/// checkpoint with their work: the retry after each finds the keys they
/// acted on there, and charges them to the caps, so the run's cap holds on
/// the server (without, each lost call's keys came on top of it). The
/// declared-keys mode saves its checkpoint after a call's reply, and cannot
/// tell (see `cap`).
#[test]
fn keys_acted_on_by_calls_whose_replies_were_lost_count_against_the_caps() {
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "temp", 3_000);
    wait_for_rehash(&mut con);
    let proxy = ScriptProxy::start(
        &server,
        Behaviour {
            lose_clean_replies: Some(3),
            ..Behaviour::default()
        },
    );
    let out = run_json(&proxy.url())
        .args(["--key-mode", "server", "--max-keys", "600"])
        .args(["--batch-size", "50", "--max-server-share", "1"])
        .run();
    let report = assert_capped_run(&out, &run_cap_message(600, "temp"));
    assert!(
        out.stderr.contains("calls whose replies were lost"),
        "{}",
        out.dump()
    );
    assert!(
        report["servers"][0]["retries"].as_u64().unwrap() >= 2,
        "{report:#}"
    );
    let deleted = 3_000 - keys_with_prefix(&mut con, b"temp:").len() as u64;
    assert!(
        (500..=600).contains(&deleted),
        "deleted {deleted} with --max-keys 600:\n{}",
        out.dump()
    );
    // The report counts what the calls it got the replies of did.
    assert!(rule_keys(&report, "temp") < deleted, "{report:#}");
}
