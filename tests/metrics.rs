//! The metrics a run pushes, read back from a real Pushgateway (Debian's)
//! and checked against the run's own report: every metric and label; a
//! second run replacing the first's series; the last success kept through a
//! failed and a skipped run, and a stop by SIGTERM (no success) or by
//! `--max-runtime` (a success); a dry run in its own group; a Pushgateway
//! that is down, answers 500 or never answers, which never changes the exit
//! code, nor a report that cannot be written; one that redirects, or answers
//! control characters; basic auth, with the password never logged, whatever
//! RUST_LOG asks of the HTTP client; an instance of `.` or `..`; the proxy
//! of the URL's scheme, and `NO_PROXY`; a signal during the push; an IPv6
//! node's brackets; one series per node on a cluster; the text through `promtool check metrics`;
//! bad settings refused before any connection; and docs/metrics.md's table
//! against what a run pushes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value as Json;

use crate::support::*;

/// Deletes `temp:`, gives `cache:` keys an hour, and one rule that never
/// matches (its series are there, at 0).
const RULES: &str = r#"
[[rule]]
name = "temp"
pattern = "temp:*"
action = "delete"

[[rule]]
name = "cache"
pattern = "cache:*"
no_ttl = true
action = "expire"
ttl = "1h"

[[rule]]
name = "never"
pattern = "nothing:*"
action = "delete"
"#;

/// [`RULES`] without `never`, and `cache` renamed.
const OTHER_RULES: &str = r#"
[[rule]]
name = "temp"
pattern = "temp:*"
action = "delete"

[[rule]]
name = "cache-ttl"
pattern = "cache:*"
no_ttl = true
action = "expire"
ttl = "2h"
"#;

/// Every metric a run pushes (docs/metrics.md's table).
const ALL_METRICS: [&str; 30] = [
    "redis_janitor_run_duration_seconds",
    "redis_janitor_run_max_runtime_seconds",
    "redis_janitor_run_exit_code",
    "redis_janitor_dry_run",
    "redis_janitor_last_run_timestamp_seconds",
    "redis_janitor_info",
    "redis_janitor_last_success_timestamp_seconds",
    "redis_janitor_keys_scanned_total",
    "redis_janitor_keys_examined_total",
    "redis_janitor_keys_matched_total",
    "redis_janitor_keys_unchanged_total",
    "redis_janitor_keys_vanished_total",
    "redis_janitor_keys_moved_total",
    "redis_janitor_keys_acted_total",
    "redis_janitor_keys_capped_total",
    "redis_janitor_script_calls_total",
    "redis_janitor_script_reloads_total",
    "redis_janitor_retries_total",
    "redis_janitor_failovers_total",
    "redis_janitor_replica_pause_seconds_total",
    "redis_janitor_estimated_freed_bytes_total",
    "redis_janitor_node_duration_seconds",
    "redis_janitor_pass_complete",
    "redis_janitor_pass_resumed",
    "redis_janitor_pass_locked",
    "redis_janitor_pass_started_timestamp_seconds",
    "redis_janitor_pass_progress_ratio",
    "redis_janitor_server_share_ratio",
    "redis_janitor_used_memory_bytes",
    "redis_janitor_db_keys",
];

/// A server with 300 `temp:`, 200 `cache:` and 100 other keys, its table
/// rehashed (so SCAN returns each key once).
fn seeded() -> RedisServer {
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "temp", 300);
    populate(&mut con, "cache", 200);
    populate(&mut con, "keep", 100);
    wait_for_rehash(&mut con);
    server
}

/// `run --output json` against `server` with `rules`, pushing to `gateway`.
fn pushing(server: &RedisServer, rules: &str, gateway: &str) -> Janitor {
    let rules = write_rules(server.dir(), rules);
    run_json(&server.url())
        .arg("--rules")
        .arg(rules)
        .args(["--pushgateway", gateway])
}

/// Now, in seconds since the Unix epoch.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The janitor's series in one group of the Pushgateway: `instance`'s,
/// the dry run's or the real run's.
fn group(gateway: &Pushgateway, instance: &str, dry_run: bool) -> Exposition {
    let all = gateway.metrics().with_prefix("redis_janitor_");
    let mine = |s: &Sample| {
        s.labels.get("job").map(String::as_str) == Some("redis-janitor")
            && s.labels.get("instance").map(String::as_str) == Some(instance)
            && s.labels.get("dry_run").map(String::as_str) == dry_run.then_some("true")
    };
    Exposition {
        samples: all.samples.iter().filter(|s| mine(s)).cloned().collect(),
        types: all.types,
    }
}

/// `pushed` is `reported`, but for the last digit: the exposition text and
/// the JSON report may write the same f64 with different digits.
#[track_caller]
fn assert_close(pushed: f64, reported: f64) {
    assert!(
        (pushed - reported).abs() <= 1e-12 * reported.abs().max(1.0),
        "pushed {pushed}, reported {reported}"
    );
}

/// A number of the report.
#[track_caller]
fn number(value: &Json) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

/// The warning lines of a run's stderr.
fn warnings(out: &Outcome) -> Vec<String> {
    out.stderr_lines()
        .into_iter()
        .filter(|l| l.contains("WARN"))
        .collect()
}

/// Checks the run's own metrics in `m` (one group) against `report`: no
/// `node` label, and the report's figures.
#[track_caller]
fn assert_run_metrics(m: &Exposition, report: &Json, exit: f64, ran: (f64, f64)) {
    for name in [
        "redis_janitor_run_duration_seconds",
        "redis_janitor_run_exit_code",
        "redis_janitor_dry_run",
        "redis_janitor_last_run_timestamp_seconds",
    ] {
        let sample = m.find(name, &[]);
        assert_eq!(sample.len(), 1, "{name}: {sample:#?}");
        assert!(!sample[0].labels.contains_key("node"), "{sample:#?}");
        assert_eq!(m.types[name], "gauge", "{name}");
    }
    let duration = m.value("redis_janitor_run_duration_seconds", &[]);
    assert_eq!(duration, number(&report["duration_seconds"]));
    assert!(duration > 0.0);
    assert_eq!(m.value("redis_janitor_run_exit_code", &[]), exit);
    let dry = if report["dry_run"] == true { 1.0 } else { 0.0 };
    assert_eq!(m.value("redis_janitor_dry_run", &[]), dry);
    let last_run = m.value("redis_janitor_last_run_timestamp_seconds", &[]);
    assert!(
        ran.0 <= last_run && last_run <= ran.1,
        "last run at {last_run}, the run was between {ran:?}"
    );
}

/// Checks the per-node metrics of `server` (an entry of the report's
/// `servers`) in `m` (one group).
#[track_caller]
fn assert_node_metrics(m: &Exposition, server: &Json) {
    let address = server["address"].as_str().unwrap();
    let node = [("node", address)];
    let value = |name: &str| m.value(&format!("redis_janitor_{name}"), &node);
    let count = |field: &str| number(&server[field]);
    for (metric, field) in [
        ("keys_scanned_total", "keys_scanned"),
        ("keys_examined_total", "keys_examined"),
        ("keys_matched_total", "keys_matched"),
        ("keys_unchanged_total", "unchanged"),
        ("keys_vanished_total", "vanished"),
        ("keys_moved_total", "moved"),
        ("script_calls_total", "batches"),
        ("script_reloads_total", "script_reloads"),
        ("retries_total", "retries"),
        ("node_duration_seconds", "duration_seconds"),
    ] {
        assert_eq!(value(metric), count(field), "{metric} of {address}");
    }
    assert!(value("script_calls_total") > 0.0);
    let failovers = server["failovers"].as_array().unwrap().len() as f64;
    assert_eq!(value("failovers_total"), failovers);
    match server["estimated_freed_bytes"].as_f64() {
        Some(bytes) => assert_eq!(value("estimated_freed_bytes_total"), bytes),
        None => assert!(
            m.find("redis_janitor_estimated_freed_bytes_total", &node)
                .is_empty()
        ),
    }
    // One series per rule, 0 included.
    for rule in server["rules"].as_array().unwrap() {
        let labels = [
            ("node", address),
            ("rule", rule["name"].as_str().unwrap()),
            ("action", rule["action"].as_str().unwrap()),
        ];
        let acted = m.value("redis_janitor_keys_acted_total", &labels);
        assert_eq!(acted, number(&rule["keys"]), "{labels:?}");
        let capped = m.value("redis_janitor_keys_capped_total", &labels);
        assert_eq!(capped, number(&rule["capped"]), "{labels:?}");
    }
    let rules = server["rules"].as_array().unwrap().len();
    assert_eq!(m.find("redis_janitor_keys_acted_total", &node).len(), rules);
    assert_eq!(
        m.find("redis_janitor_keys_capped_total", &node).len(),
        rules
    );
    assert_close(
        value("replica_pause_seconds_total"),
        number(&server["replica_pause_seconds"]),
    );
    let flag = |yes: bool| if yes { 1.0 } else { 0.0 };
    let complete = server["complete"] == true;
    assert_eq!(value("pass_complete"), flag(complete));
    assert_eq!(value("pass_locked"), flag(server["stopped_by"] == "locked"));
    match server["pass"].as_object() {
        Some(pass) => {
            assert_eq!(value("pass_resumed"), flag(pass["resumed"] == true));
            assert_eq!(
                value("pass_started_timestamp_seconds"),
                number(&pass["started_at"])
            );
            let progress = value("pass_progress_ratio");
            assert!((0.0..=1.0).contains(&progress), "{progress}");
            if complete {
                assert_eq!(progress, 1.0);
            }
            let share = value("server_share_ratio");
            assert_close(share, number(&server["server_share"]));
            assert!(share > 0.0 && share <= 1.0, "{share}");
        }
        None => assert_eq!(value("pass_resumed"), 0.0),
    }
    match server["last_success_at"].as_f64() {
        Some(at) => assert_eq!(value("last_success_timestamp_seconds"), at),
        None => assert!(
            m.find("redis_janitor_last_success_timestamp_seconds", &node)
                .is_empty()
        ),
    }
    for (metric, field) in [
        ("used_memory_bytes", "used_memory_bytes"),
        ("db_keys", "db_keys"),
    ] {
        for at in ["start", "end"] {
            let labels = [("node", address), ("at", at)];
            let got = m.value(&format!("redis_janitor_{metric}"), &labels);
            assert_eq!(got, number(&server[field][at]), "{metric} {labels:?}");
        }
    }
    let info = m.find("redis_janitor_info", &node);
    assert_eq!(info.len(), 1, "{info:#?}");
    let labels = &info[0].labels;
    assert_eq!(info[0].value, 1.0);
    assert_eq!(labels["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(labels["script_version"], server["script"]["version"]);
    assert_eq!(labels["script_sha"], server["script"]["sha"]);
    assert_eq!(labels["server"], server["software"]);
    assert_eq!(labels["server_version"], server["version"]);
    assert_eq!(labels["key_mode"], server["key_mode"]);
}

/// Checks that every series of `m` names a node of `report`, or none.
#[track_caller]
fn assert_nodes_are_the_reports(m: &Exposition, report: &Json) {
    let servers: BTreeSet<&str> = report["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["address"].as_str().unwrap())
        .collect();
    let nodes: BTreeSet<&str> = m
        .samples
        .iter()
        .filter_map(|s| s.labels.get("node").map(String::as_str))
        .collect();
    assert_eq!(nodes, servers);
}

#[test]
fn a_run_pushes_every_metric_and_label_with_the_reports_figures() {
    let server = seeded();
    let gateway = Pushgateway::start();
    let before = unix_now();
    let out = pushing(&server, RULES, &gateway.url())
        .args(["--estimate-freed", "--max-runtime", "1h"])
        .run();
    let after = unix_now();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(rule_keys(&report, "temp"), 300, "{report:#}");
    assert_eq!(rule_keys(&report, "cache"), 200, "{report:#}");
    let group_url = format!(
        "{}/metrics/job/redis-janitor/instance/{}",
        gateway.url(),
        server.host_port()
    );
    let pushed: Vec<String> = (out.stderr_lines().into_iter())
        .filter(|l| l.contains("INFO") && l.contains("metrics pushed"))
        .collect();
    assert!(
        matches!(&pushed[..], [line] if line.contains(&group_url)),
        "one info line naming the group\n{}",
        out.dump()
    );

    let m = group(&gateway, &server.host_port(), false);
    assert_eq!(
        m.names(),
        ALL_METRICS.iter().map(|n| n.to_string()).collect(),
        "the metrics pushed"
    );
    for name in m.names() {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        assert_eq!(m.types[&name], kind, "{name}");
    }
    // Every series is of the group: the Pushgateway's grouping labels.
    assert_eq!(
        m.samples.len(),
        gateway
            .metrics()
            .with_prefix("redis_janitor_")
            .samples
            .len()
    );
    assert_run_metrics(&m, &report, 0.0, (before, after));
    assert_eq!(
        m.value("redis_janitor_run_max_runtime_seconds", &[]),
        3600.0
    );
    let only = only_server(&report);
    assert_node_metrics(&m, only);
    assert_nodes_are_the_reports(&m, &report);
    let instance = server.host_port();
    let node = [("node", instance.as_str())];
    assert_eq!(m.value("redis_janitor_pass_complete", &node), 1.0);
    assert_eq!(m.value("redis_janitor_pass_resumed", &node), 0.0);
    assert_eq!(m.value("redis_janitor_keys_scanned_total", &node), 500.0);
    assert!(m.value("redis_janitor_estimated_freed_bytes_total", &node) > 0.0);
    // The last success is this run's, kept in Redis (and the report's).
    let last_success = m.value("redis_janitor_last_success_timestamp_seconds", &node);
    assert!(before - 1.0 <= last_success && last_success <= after + 1.0);
    // DBSIZE before, and after: the keys kept, and the job's own
    // (checkpoint, history).
    let own = state_keys(&mut server.conn()).len() as f64;
    assert_eq!(
        m.value("redis_janitor_db_keys", &[node[0], ("at", "start")]),
        600.0
    );
    assert_eq!(
        m.value("redis_janitor_db_keys", &[node[0], ("at", "end")]),
        300.0 + own
    );
}

#[test]
fn the_text_pushed_is_one_put_of_format_0_0_4_that_promtool_accepts() {
    let server = seeded();
    let stub = HttpStub::start(Answer::Status(200, ""));
    let out = pushing(&server, RULES, &format!("{}/prefix/", stub.url()))
        .args(["--pushgateway-instance", "prod/cache 1"])
        .args(["--estimate-freed", "--max-runtime", "1h"])
        .run();
    out.assert_code(0);
    let requests = stub.requests();
    let [request] = &requests[..] else {
        panic!("one request expected: {requests:#?}")
    };
    assert_eq!(request.method, "PUT");
    // An instance with a slash takes the Pushgateway's base64 form.
    assert_eq!(
        request.path,
        "/prefix/metrics/job/redis-janitor/instance@base64/cHJvZC9jYWNoZSAx"
    );
    assert_eq!(request.headers["content-type"], "text/plain; version=0.0.4");
    assert!(!request.headers.contains_key("authorization"));
    assert_promtool_accepts(&request.body);
    let text = Exposition::parse(&request.body);
    assert_eq!(text.names().len(), ALL_METRICS.len());
    assert_node_metrics(&text, only_server(&out.report()));
}

#[test]
fn a_second_run_replaces_the_first_runs_series() {
    let server = seeded();
    let gateway = Pushgateway::start();
    let instance = server.host_port();
    pushing(&server, RULES, &gateway.url()).run().assert_code(0);
    let first = group(&gateway, &instance, false);
    assert_eq!(first.find("redis_janitor_keys_acted_total", &[]).len(), 3);

    let mut con = server.conn();
    populate(&mut con, "temp", 50);
    let before = unix_now();
    let out = pushing(&server, OTHER_RULES, &gateway.url()).run();
    out.assert_code(0);
    let report = out.report();
    let second = group(&gateway, &instance, false);
    // The series of the rules gone are gone; the new rule's are there.
    let rules: BTreeSet<&str> = second
        .find("redis_janitor_keys_acted_total", &[])
        .iter()
        .map(|s| s.labels["rule"].as_str())
        .collect();
    assert_eq!(rules, BTreeSet::from(["temp", "cache-ttl"]));
    assert!(
        second
            .find("redis_janitor_keys_capped_total", &[("rule", "never")])
            .is_empty()
    );
    // The values are the second run's, not sums.
    let acted = |m: &Exposition| m.value("redis_janitor_keys_acted_total", &[("rule", "temp")]);
    assert_eq!(acted(&first), 300.0);
    assert_eq!(acted(&second), 50.0);
    assert_run_metrics(&second, &report, 0.0, (before, unix_now()));
    assert_node_metrics(&second, only_server(&report));
    // Neither --max-runtime nor --estimate-freed this time: their series
    // are gone too.
    assert!(
        !second
            .names()
            .contains("redis_janitor_run_max_runtime_seconds")
    );
    assert!(
        !second
            .names()
            .contains("redis_janitor_estimated_freed_bytes_total")
    );
}

#[test]
fn a_failed_or_skipped_run_keeps_the_last_success() {
    let server = seeded();
    let gateway = Pushgateway::start();
    let instance = server.host_port();
    let out = pushing(&server, RULES, &gateway.url()).run();
    out.assert_code(0);
    let succeeded = number(&only_server(&out.report())["last_success_at"]);
    let last_success = |m: &Exposition| {
        m.value(
            "redis_janitor_last_success_timestamp_seconds",
            &[("node", &instance)],
        )
    };
    assert_eq!(last_success(&group(&gateway, &instance, false)), succeeded);

    // A cap reached, in either key mode: the run fails (exit 1), its push
    // says so, and the last success is still the first run's. The cap
    // stopped the pass's first step, which stayed at the keyspace's start.
    let mut con = server.conn();
    populate(&mut con, "temp", 300);
    let node = [("node", instance.as_str())];
    for mode in ["server", "declared"] {
        let before = unix_now();
        let out = pushing(&server, RULES, &gateway.url())
            .args(["--max-keys", "10", "--key-mode", mode])
            .run();
        out.assert_code(1);
        let report = out.report();
        assert_eq!(number(&only_server(&report)["last_success_at"]), succeeded);
        let m = group(&gateway, &instance, false);
        assert_run_metrics(&m, &report, 1.0, (before, unix_now()));
        assert_node_metrics(&m, only_server(&report));
        assert_eq!(last_success(&m), succeeded);
        assert_eq!(m.value("redis_janitor_pass_complete", &node), 0.0);
        assert_eq!(
            m.value("redis_janitor_pass_progress_ratio", &node),
            0.0,
            "{mode}"
        );
        assert!(
            m.value(
                "redis_janitor_keys_capped_total",
                &[node[0], ("rule", "temp")]
            ) > 0.0
        );
    }

    // Another run's lease: the node is skipped (exit 0), which is no
    // success either.
    let since_ms = server_time_ms(&mut con);
    hold_lease_for_another_run(&mut con, "another (pid 1)", since_ms);
    let before = unix_now();
    let out = pushing(&server, RULES, &gateway.url()).run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["stopped_by"], "locked", "{report:#}");
    let m = group(&gateway, &instance, false);
    assert_run_metrics(&m, &report, 0.0, (before, unix_now()));
    assert_eq!(m.value("redis_janitor_pass_locked", &node), 1.0);
    assert_eq!(m.value("redis_janitor_pass_complete", &node), 0.0);
    assert_eq!(m.value("redis_janitor_script_calls_total", &node), 0.0);
    assert_eq!(last_success(&m), succeeded);
    // The rules' series are there, at 0.
    assert_eq!(m.find("redis_janitor_keys_acted_total", &node).len(), 3);
}

#[test]
fn a_stopped_run_pushes_its_exit_code_and_a_stop_at_max_runtime_is_a_success() {
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "cache", 200_000);
    let gateway = Pushgateway::start();
    let instance = server.host_port();
    let node = [("node", instance.as_str())];

    // SIGTERM mid-pass: exit 143, and no success to push yet.
    let mut running = pushing(&server, RULES, &gateway.url())
        .args(["--batch-size", "10"])
        .start();
    wait_until(Duration::from_secs(30), "the first checkpoint", || {
        running.exited() || checkpoint(&mut con).is_some()
    });
    assert!(!running.exited(), "{}", running.stderr_so_far());
    let before = unix_now();
    running.signal("TERM");
    let out = running.wait();
    out.assert_code(143);
    let report = out.report();
    let m = group(&gateway, &instance, false);
    assert_run_metrics(&m, &report, 143.0, (before, unix_now()));
    assert_node_metrics(&m, only_server(&report));
    assert_eq!(m.value("redis_janitor_pass_complete", &node), 0.0);
    assert!(m.value("redis_janitor_pass_progress_ratio", &node) < 1.0);
    assert!(
        m.find("redis_janitor_last_success_timestamp_seconds", &[])
            .is_empty()
    );
    let began = m.value("redis_janitor_pass_started_timestamp_seconds", &node);

    // --max-runtime: a clean stop (exit 0) whose checkpoint is saved, which
    // is a success; the pass it resumed began in the first run.
    let before = unix_now();
    let out = pushing(&server, RULES, &gateway.url())
        .args(["--batch-size", "10", "--max-runtime", "300ms"])
        .run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["stopped_by"], "max_runtime", "{report:#}");
    let m = group(&gateway, &instance, false);
    assert_run_metrics(&m, &report, 0.0, (before, unix_now()));
    assert_node_metrics(&m, only_server(&report));
    assert_eq!(m.value("redis_janitor_run_max_runtime_seconds", &[]), 0.3);
    assert_eq!(m.value("redis_janitor_pass_complete", &node), 0.0);
    assert_eq!(m.value("redis_janitor_pass_resumed", &node), 1.0);
    assert_eq!(
        m.value("redis_janitor_pass_started_timestamp_seconds", &node),
        began
    );
    let last_success = m.value("redis_janitor_last_success_timestamp_seconds", &node);
    assert!(before - 1.0 <= last_success && last_success <= unix_now() + 1.0);
}

#[test]
fn a_dry_run_pushes_to_its_own_group_and_leaves_the_real_runs_series() {
    let server = seeded();
    let gateway = Pushgateway::start();
    let instance = server.host_port();
    let out = pushing(&server, RULES, &gateway.url()).run();
    out.assert_code(0);
    let succeeded = number(&only_server(&out.report())["last_success_at"]);
    let real = group(&gateway, &instance, false);

    let mut con = server.conn();
    populate(&mut con, "temp", 40);
    wait_for_rehash(&mut con);
    let before = unix_now();
    let out = pushing(&server, RULES, &gateway.url())
        .arg("--dry-run")
        .run();
    out.assert_code(0);
    let report = out.report();
    let dry = group(&gateway, &instance, true);
    assert_run_metrics(&dry, &report, 0.0, (before, unix_now()));
    assert_node_metrics(&dry, only_server(&report));
    assert_eq!(dry.value("redis_janitor_dry_run", &[]), 1.0);
    let temp = [("node", instance.as_str()), ("rule", "temp")];
    assert_eq!(dry.value("redis_janitor_keys_acted_total", &temp), 40.0);
    // A dry run is no success: the last success is the real run's.
    assert_eq!(
        dry.value(
            "redis_janitor_last_success_timestamp_seconds",
            &[("node", &instance)]
        ),
        succeeded
    );
    // The real run's group is as it was.
    assert_eq!(group(&gateway, &instance, false).samples, real.samples);
    assert_eq!(real.value("redis_janitor_dry_run", &[]), 0.0);
    assert_eq!(real.value("redis_janitor_keys_acted_total", &temp), 300.0);
}

#[test]
fn a_pushgateway_down_failing_or_silent_never_changes_the_exit_code() {
    let server = seeded();
    let rules = write_rules(server.dir(), RULES);
    let warned = |out: &Outcome, what: &str| {
        let warnings = warnings(out);
        assert!(
            matches!(&warnings[..], [line] if line.contains("could not be pushed")
                && line.contains(what)),
            "one warning saying {what:?}\n{}",
            out.dump()
        );
    };

    // Down: nothing listens.
    let down = dead_url().replace("redis://", "http://");
    let out = pushing(&server, RULES, &down).run();
    out.assert_code(0);
    assert_eq!(out.report()["complete"], true);
    warned(&out, "no answer");

    // Answers 500: the status and its answer are in the warning.
    let failing = HttpStub::start(Answer::Status(500, "broken\non purpose"));
    let out = pushing(&server, RULES, &failing.url()).run();
    out.assert_code(0);
    warned(&out, "status=500");
    warned(&out, "HTTP 500: broken on purpose");
    assert_eq!(failing.requests().len(), 1);

    // Never answers: the push gives up at --pushgateway-timeout.
    let silent = HttpStub::start(Answer::Never);
    let started = Instant::now();
    let out = pushing(&server, RULES, &silent.url())
        .args(["--pushgateway-timeout", "300ms"])
        .run();
    out.assert_code(0);
    warned(&out, "no answer within 300ms (--pushgateway-timeout)");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    // A run that fails still pushes (exit code 1 in its metrics), and a
    // failed push leaves its exit code 1.
    let out = run_json(&dead_url())
        .arg("--rules")
        .arg(&rules)
        .args(["--pushgateway", &failing.url(), "--retries", "0"])
        .run();
    out.assert_code(1);
    warned(&out, "status=500");
    let requests = failing.requests();
    let text = Exposition::parse(&requests.last().unwrap().body);
    assert_eq!(text.value("redis_janitor_run_exit_code", &[]), 1.0);
    assert!(out.stderr_lines().last().unwrap().contains("error"));
}

#[test]
fn a_run_whose_report_cannot_be_written_still_pushes_and_says_exit_code_1() {
    let server = seeded();
    let stub = HttpStub::start(Answer::Status(200, ""));
    let out = pushing(&server, RULES, &stub.url()).run_into_full_disk();
    out.assert_code(1);
    assert!(
        out.stderr.contains("cannot write to stdout"),
        "{}",
        out.dump()
    );
    let requests = stub.requests();
    let [request] = &requests[..] else {
        panic!("one request expected: {requests:#?}\n{}", out.dump())
    };
    let text = Exposition::parse(&request.body);
    assert_eq!(text.value("redis_janitor_run_exit_code", &[]), 1.0);
    let instance = server.host_port();
    let node = [("node", instance.as_str())];
    assert_eq!(text.value("redis_janitor_pass_complete", &node), 1.0);
}

/// The `Authorization` header's value for [`PUSH_USER`] and
/// [`PUSH_PASSWORD`]: `Basic <base64>`'s base64.
fn basic_auth_pair() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{PUSH_USER}:{PUSH_PASSWORD}"))
}

/// Checks that neither the push password, nor its header's value, nor any
/// piece of it shows in the run's output: a dump of the request could split
/// the header's value over lines. (Pieces that could be hex digits of a SHA
/// in a log line are left out.)
#[track_caller]
fn assert_password_never_shown(out: &Outcome) {
    let pair = basic_auth_pair();
    let pieces = (0..=pair.len() - 6)
        .map(|i| &pair[i..i + 6])
        .filter(|piece| !piece.bytes().all(|b| b.is_ascii_hexdigit()));
    for secret in [PUSH_PASSWORD, pair.as_str()].into_iter().chain(pieces) {
        assert!(
            !out.stderr.contains(secret),
            "{secret} logged\n{}",
            out.dump()
        );
        assert!(
            !out.stdout.contains(secret),
            "{secret} printed\n{}",
            out.dump()
        );
    }
}

#[test]
fn basic_auth_reaches_the_pushgateway_and_the_password_is_never_logged() {
    let server = seeded();
    let gateway = Pushgateway::start_with_basic_auth();
    let password_file = write_file(server.dir(), "push-password", &format!("{PUSH_PASSWORD}\n"));
    let host = gateway.url().replace("http://", "");
    let pair = basic_auth_pair();
    let never_logged = assert_password_never_shown;
    let pushed = |instance: &str| !group(&gateway, instance, false).samples.is_empty();

    // The user from a flag, the password from a file; with every line the
    // job (and its HTTP client) logs at `trace`.
    let out = pushing(&server, RULES, &gateway.url())
        .args(["--pushgateway-instance", "by-flags"])
        .args(["--pushgateway-username", PUSH_USER])
        .arg("--pushgateway-password-file")
        .arg(&password_file)
        .env("RUST_LOG", "trace")
        .run();
    out.assert_code(0);
    assert!(warnings(&out).is_empty(), "{}", out.dump());
    never_logged(&out);
    assert!(pushed("by-flags"));

    // Both from the URL.
    let out = pushing(
        &server,
        RULES,
        &format!("http://{PUSH_USER}:{PUSH_PASSWORD}@{host}"),
    )
    .args(["--pushgateway-instance", "by-url"])
    .env("RUST_LOG", "debug")
    .run();
    out.assert_code(0);
    assert!(warnings(&out).is_empty(), "{}", out.dump());
    never_logged(&out);
    assert!(pushed("by-url"));

    // The file's password wins over the URL's.
    let out = pushing(&server, RULES, &format!("http://{PUSH_USER}:wrong@{host}"))
        .args(["--pushgateway-instance", "file-wins"])
        .arg("--pushgateway-password-file")
        .arg(&password_file)
        .run();
    out.assert_code(0);
    assert!(pushed("file-wins"), "{}", out.dump());
    // At the default level the HTTP client logs nothing of its own.
    assert!(!out.stderr.contains("DEBUG"), "{}", out.dump());

    // A wrong password: refused (401), logged, and the exit code is 0.
    let out = pushing(&server, RULES, &format!("http://{PUSH_USER}:wrong@{host}"))
        .args(["--pushgateway-instance", "refused"])
        .run();
    out.assert_code(0);
    let warnings = warnings(&out);
    assert!(
        matches!(&warnings[..], [line] if line.contains("status=401")),
        "{}",
        out.dump()
    );
    assert!(!out.stderr.contains("wrong"), "{}", out.dump());
    assert!(!pushed("refused"));
    // What is sent is the standard header.
    let stub = HttpStub::start(Answer::Status(200, ""));
    pushing(
        &server,
        RULES,
        &format!(
            "http://{PUSH_USER}:{PUSH_PASSWORD}@{}",
            stub.url().replace("http://", "")
        ),
    )
    .run()
    .assert_code(0);
    let requests = stub.requests();
    assert_eq!(
        requests[0].headers["authorization"],
        format!("Basic {pair}")
    );
}

#[test]
fn a_trace_directive_for_the_http_clients_modules_never_logs_the_authorization_header() {
    let server = seeded();
    let gateway = Pushgateway::start_with_basic_auth();
    let host = gateway.url().replace("http://", "");
    let url = format!("http://{PUSH_USER}:{PUSH_PASSWORD}@{host}");
    // A directive for a module outranks one for its crate: the module that
    // dumps each request in hex, and every other, at `trace`.
    for (instance, rust_log) in [
        ("module", "ureq_proto::util=trace"),
        (
            "modules",
            "info,ureq=trace,ureq_proto=trace,ureq_proto::util=trace",
        ),
    ] {
        let out = pushing(&server, RULES, &url)
            .args(["--pushgateway-instance", instance])
            .env("RUST_LOG", rust_log)
            .run();
        out.assert_code(0);
        assert_password_never_shown(&out);
        assert!(
            !out.stderr.to_ascii_lowercase().contains("authorization"),
            "{rust_log}\n{}",
            out.dump()
        );
        assert!(warnings(&out).is_empty(), "{}", out.dump());
        assert!(
            !group(&gateway, instance, false).samples.is_empty(),
            "{}",
            out.dump()
        );
    }
    // Its debug lines still show when asked for.
    let out = pushing(&server, RULES, &url)
        .args(["--pushgateway-instance", "debug"])
        .env("RUST_LOG", "ureq=debug")
        .run();
    out.assert_code(0);
    assert!(out.stderr.contains("DEBUG"), "{}", out.dump());
    assert_password_never_shown(&out);
}

#[test]
fn an_instance_of_one_or_two_dots_is_pushed_in_the_base64_form() {
    let server = seeded();
    let gateway = Pushgateway::start();
    for instance in [".", ".."] {
        let out = pushing(&server, RULES, &gateway.url())
            .args(["--pushgateway-instance", instance])
            .run();
        out.assert_code(0);
        assert!(warnings(&out).is_empty(), "{instance}\n{}", out.dump());
        let m = group(&gateway, instance, false);
        let temp = [("rule", "temp")];
        let acted = m.find("redis_janitor_keys_acted_total", &temp);
        assert_eq!(acted.len(), 1, "{instance}: {:#?}", gateway.metrics());
    }
}

#[test]
fn a_redirect_is_a_failed_push_that_says_its_status_and_location() {
    let server = seeded();
    let redirecting = HttpStub::start(Answer::Redirect(307, "http://127.0.0.1:1/elsewhere"));
    let out = pushing(&server, RULES, &redirecting.url()).run();
    out.assert_code(0);
    let warnings = warnings(&out);
    assert!(
        matches!(&warnings[..], [line] if line.contains("status=307")
            && line.contains("HTTP 307 to http://127.0.0.1:1/elsewhere")),
        "{}",
        out.dump()
    );
    assert_eq!(redirecting.requests().len(), 1);
}

#[test]
fn a_pushgateway_answer_with_control_characters_is_logged_escaped() {
    let server = seeded();
    let failing = HttpStub::start(Answer::Status(
        500,
        "\x1b[2J\x1b]0;owned\x07 \u{9b}31mred\x1b[0m",
    ));
    let out = pushing(&server, RULES, &failing.url()).run();
    out.assert_code(0);
    // Nothing the Pushgateway said reaches the terminal as a control byte
    // (the logs are not coloured: stderr is not a terminal).
    let controls: Vec<char> = (out.stderr.chars())
        .filter(|c| c.is_control() && *c != '\n')
        .collect();
    assert!(controls.is_empty(), "{controls:?}\n{}", out.dump());
    let warnings = warnings(&out);
    assert!(
        matches!(&warnings[..], [line] if line.contains(
            r"HTTP 500: \u{1b}[2J\u{1b}]0;owned\u{7} \u{9b}31mred\u{1b}[0m"
        )),
        "{}",
        out.dump()
    );
}

#[test]
fn the_proxy_is_the_gateway_urls_schemes_and_no_proxy_exempts_it() {
    let server = seeded();
    let gateway = Pushgateway::start();
    let proxy = HttpStub::start(Answer::Status(502, "a proxy"));
    let push = |instance: &str, vars: &[(&str, &str)]| {
        let mut janitor =
            pushing(&server, RULES, &gateway.url()).args(["--pushgateway-instance", instance]);
        for (name, value) in vars {
            janitor = janitor.env(name, value);
        }
        let out = janitor.run();
        out.assert_code(0);
        out
    };
    let proxied = |out: &Outcome| {
        let requests = proxy.requests();
        let gateway_port = gateway.url().rsplit(':').next().unwrap().to_string();
        assert!(
            requests
                .last()
                .is_some_and(|r| r.path.contains(&gateway_port)),
            "{requests:#?}\n{}",
            out.dump()
        );
        assert_eq!(warnings(out).len(), 1, "{}", out.dump());
    };
    let direct = |out: &Outcome, instance: &str| {
        assert!(warnings(out).is_empty(), "{}", out.dump());
        assert!(!group(&gateway, instance, false).samples.is_empty());
    };

    // HTTPS_PROXY is for https:// URLs only.
    let out = push("https-proxy", &[("HTTPS_PROXY", &proxy.url())]);
    direct(&out, "https-proxy");
    let out = push("https-proxy-lower", &[("https_proxy", &proxy.url())]);
    direct(&out, "https-proxy-lower");
    assert!(proxy.requests().is_empty(), "{:#?}", proxy.requests());
    // HTTP_PROXY is, and ALL_PROXY in its absence.
    proxied(&push("http-proxy", &[("HTTP_PROXY", &proxy.url())]));
    proxied(&push("all-proxy", &[("ALL_PROXY", &proxy.url())]));
    let used = proxy.requests().len();
    // NO_PROXY exempts the gateway's host.
    let out = push(
        "no-proxy",
        &[
            ("ALL_PROXY", &proxy.url()),
            ("NO_PROXY", "localhost,127.0.0.1"),
        ],
    );
    direct(&out, "no-proxy");
    assert_eq!(proxy.requests().len(), used);
}

#[test]
fn a_signal_during_the_push_ends_it_at_once_with_the_runs_exit_code() {
    let server = seeded();
    let silent = HttpStub::start(Answer::Never);
    for signal in ["TERM", "INT"] {
        let mut running = pushing(&server, RULES, &silent.url())
            .args(["--pushgateway-timeout", "30s", "--dry-run"])
            .env("RUST_LOG", "info,redis_janitor::push=debug")
            .start();
        let pushing_line = running.wait_for_stderr(Duration::from_secs(60), |line| {
            line.contains("pushing the metrics")
        });
        assert!(pushing_line.is_some(), "{}", running.stderr_so_far());
        let signalled = Instant::now();
        running.signal(signal);
        let out = running.wait_timeout(Duration::from_secs(20));
        let waited = signalled.elapsed();
        out.assert_code(0);
        assert!(waited < Duration::from_secs(3), "{signal}: {waited:?}");
        // The run was over: its report is whole, and says it completed.
        assert_eq!(out.report()["complete"], true, "{}", out.dump());
        assert!(
            warnings(&out)
                .iter()
                .any(|l| l.contains("push is abandoned")),
            "{}",
            out.dump()
        );
        // No call was in flight: the stop's own warning is not given.
        assert!(
            !warnings(&out).iter().any(|l| l.contains("call in flight")),
            "{}",
            out.dump()
        );
    }

    // A failed run (a cap reached) keeps its exit code and says why.
    let mut running = pushing(&server, RULES, &silent.url())
        .args(["--pushgateway-timeout", "30s", "--max-keys", "5"])
        .env("RUST_LOG", "info,redis_janitor::push=debug")
        .start();
    let pushing_line = running.wait_for_stderr(Duration::from_secs(60), |line| {
        line.contains("pushing the metrics")
    });
    assert!(pushing_line.is_some(), "{}", running.stderr_so_far());
    running.signal("TERM");
    let out = running.wait_timeout(Duration::from_secs(20));
    out.assert_code(1);
    let last = out.stderr_lines().pop().unwrap_or_default();
    assert!(last.contains("reached its cap"), "{}", out.dump());

    // A run that a SIGTERM stopped pushes; a second signal during the push
    // exits at once, with that signal's code, as during the run.
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "cache", 200_000);
    let mut running = pushing(&server, RULES, &silent.url())
        .args(["--batch-size", "10", "--pushgateway-timeout", "30s"])
        .env("RUST_LOG", "info,redis_janitor::push=debug")
        .start();
    wait_until(Duration::from_secs(30), "the first checkpoint", || {
        running.exited() || checkpoint(&mut con).is_some()
    });
    running.signal("TERM");
    let pushing_line = running.wait_for_stderr(Duration::from_secs(60), |line| {
        line.contains("pushing the metrics")
    });
    assert!(pushing_line.is_some(), "{}", running.stderr_so_far());
    let signalled = Instant::now();
    running.signal("INT");
    let out = running.wait_timeout(Duration::from_secs(20));
    let waited = signalled.elapsed();
    out.assert_code(130);
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    assert_eq!(out.report()["stopped_by"], "sigterm", "{}", out.dump());
}

#[test]
fn an_ipv6_node_is_named_in_brackets_in_the_report_and_the_labels() {
    let server = RedisServer::start_with(&["--bind", "127.0.0.1", "::1"]);
    populate(&mut server.conn(), "temp", 10);
    let gateway = Pushgateway::start();
    let rules = write_rules(server.dir(), RULES);
    let out = run_json(&format!("redis://[::1]:{}", server.port()))
        .arg("--rules")
        .arg(&rules)
        .args(["--pushgateway", &gateway.url()])
        .run();
    out.assert_code(0);
    let address = format!("[::1]:{}", server.port());
    assert_eq!(only_server(&out.report())["address"], address.as_str());
    let m = group(&gateway, &address, false);
    let node = [("node", address.as_str())];
    assert_eq!(m.value("redis_janitor_pass_complete", &node), 1.0);
    let temp = [("node", address.as_str()), ("rule", "temp")];
    assert_eq!(m.value("redis_janitor_keys_acted_total", &temp), 10.0);
}

#[test]
fn a_cluster_pushes_one_series_per_node() {
    let cluster = RedisCluster::start(3, 0);
    cluster.populate("temp", 300);
    cluster.populate("cache", 200);
    let gateway = Pushgateway::start();
    let rules = write_rules(cluster.nodes[0].dir(), RULES);
    let before = unix_now();
    let out = run_json(&cluster.url())
        .arg("--rules")
        .arg(&rules)
        .args(["--pushgateway", &gateway.url()])
        .run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["servers"].as_array().unwrap().len(), 3);
    // The group is the first seed's.
    let m = group(&gateway, &cluster.nodes[0].host_port(), false);
    assert_run_metrics(&m, &report, 0.0, (before, unix_now()));
    assert_nodes_are_the_reports(&m, &report);
    for server in report["servers"].as_array().unwrap() {
        assert_node_metrics(&m, server);
    }
    let deleted: f64 = m
        .find("redis_janitor_keys_acted_total", &[("rule", "temp")])
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(deleted, 300.0);
    assert_eq!(m.find("redis_janitor_keys_scanned_total", &[]).len(), 3);
}

/// A run that stops at --max-runtime before it gets to some nodes (one at a
/// time, --concurrency 1) still reads their last success, keys and memory:
/// its push replaces the whole group, which would otherwise lose the last
/// success of every node the run did not get to.
#[test]
fn a_run_that_stops_before_some_nodes_still_pushes_their_last_success() {
    let cluster = RedisCluster::start(3, 0);
    cluster.populate("temp", 300);
    let gateway = Pushgateway::start();
    let rules = write_rules(cluster.nodes[0].dir(), RULES);
    let run = || {
        run_json(&cluster.url())
            .arg("--rules")
            .arg(&rules)
            .args(["--pushgateway", &gateway.url()])
    };
    let out = run().run();
    out.assert_code(0);
    let first = out.report();
    // Enough keys that the first node's pass outlasts --max-runtime.
    cluster.populate("temp", 30_000);
    let out = run()
        .args(["--concurrency", "1", "--max-runtime", "300ms"])
        .args(["--batch-size", "10", "--rate-limit", "1000"])
        .run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["stopped_by"], "max_runtime", "{report:#}");
    let servers = report["servers"].as_array().unwrap();
    let untouched: Vec<&Json> = servers
        .iter()
        .filter(|server| server["keys_scanned"] == 0)
        .collect();
    assert!(!untouched.is_empty(), "{report:#}");
    let m = group(&gateway, &cluster.nodes[0].host_port(), false);
    assert_nodes_are_the_reports(&m, &report);
    for server in untouched {
        let address = server["address"].as_str().unwrap();
        let before = first["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["address"] == address)
            .unwrap();
        assert_eq!(server["last_success_at"], before["last_success_at"]);
        assert_eq!(
            m.value(
                "redis_janitor_last_success_timestamp_seconds",
                &[("node", address)]
            ),
            number(&before["last_success_at"])
        );
        assert!(number(&server["db_keys"]["start"]) > 5_000.0, "{server:#}");
        assert_eq!(server["db_keys"]["start"], server["db_keys"]["end"]);
    }
    assert!(report["db_keys"]["start"].is_number(), "{report:#}");
    assert_eq!(
        m.find("redis_janitor_last_success_timestamp_seconds", &[])
            .len(),
        3,
        "every node's last success is pushed"
    );
}

#[test]
fn a_bad_pushgateway_setting_is_a_usage_error_before_any_connection() {
    // The Redis URL is dead: a connection attempt would exit 1. The job's
    // own checks say why in one line; clap's (a flag without --pushgateway,
    // a bad duration) in its usage message.
    for (args, one_line) in [
        (vec!["--pushgateway", "ftp://u:secret@p:9091"], true),
        (vec!["--pushgateway", "http://u:secret@p:9091/?x=1"], true),
        (vec!["--pushgateway", "u:secret@p:9091"], true),
        (
            vec![
                "--pushgateway",
                "http://p:9091",
                "--pushgateway-password-file",
                "/nonexistent/secret",
            ],
            true,
        ),
        (vec!["--pushgateway-instance", "x"], false),
        (
            vec![
                "--pushgateway",
                "http://p:9091",
                "--pushgateway-timeout",
                "0s",
            ],
            false,
        ),
    ] {
        let out = run_json(&dead_url()).args(&args).run();
        out.assert_code(2);
        if one_line {
            out.one_line_stderr();
        }
        assert!(
            out.stderr.contains("pushgateway"),
            "{args:?}\n{}",
            out.dump()
        );
        assert!(!out.stderr.contains("u:secret"), "{args:?}\n{}", out.dump());
        assert!(out.stdout.is_empty(), "{}", out.dump());
    }
}

#[test]
fn the_docs_table_lists_exactly_the_metrics_a_run_pushes() {
    let server = seeded();
    let gateway = Pushgateway::start();
    pushing(&server, RULES, &gateway.url())
        .args(["--estimate-freed", "--max-runtime", "1h"])
        .run()
        .assert_code(0);
    let m = group(&gateway, &server.host_port(), false);
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md"))
        .expect("docs/metrics.md");
    // `| \`name\` | type | \`label\`, ... | meaning |`
    let rows: Vec<Vec<&str>> = docs
        .lines()
        .filter(|l| l.starts_with("| `redis_janitor_"))
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    let documented: BTreeSet<String> = rows
        .iter()
        .map(|row| row[1].trim_matches('`').to_string())
        .collect();
    assert_eq!(documented.len(), rows.len(), "a metric documented twice");
    assert_eq!(documented, m.names(), "docs/metrics.md's table vs the push");
    for row in rows {
        let name = row[1].trim_matches('`');
        assert_eq!(row[2], m.types[name], "the type of {name}");
        let labels: BTreeSet<&str> = row[3]
            .split(',')
            .map(|l| l.trim().trim_matches('`'))
            .filter(|l| !l.is_empty())
            .collect();
        let pushed: BTreeSet<&str> = m
            .find(name, &[])
            .iter()
            .flat_map(|s| s.labels.keys())
            .map(String::as_str)
            .filter(|l| !["job", "instance"].contains(l))
            .collect();
        assert_eq!(labels, pushed, "the labels of {name}");
    }
}
