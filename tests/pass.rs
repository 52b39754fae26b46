//! One full cleaning pass end to end: the built-in default rules, every
//! condition and both actions, first-matching-rule order, dry runs, empty and
//! large keyspaces, the report in JSON and text, `--max-runtime`, and where
//! the server address and database come from (flags, env vars, URL path, a
//! Unix socket's URL).

use crate::support::*;

/// A keyspace that exercises every default rule, and its expected outcome.
fn seed_mixed(con: &mut redis::Connection) {
    seed_all(
        con,
        &[
            (b"cache:a", "string", None),
            (b"cache:b", "hash", None),
            (b"cache:c", "list", None),
            (b"cache:soon", "string", Some(30)),
            (b"cache:soon2", "zset", Some(59)),
            (b"cache:mid", "string", Some(120)),
            (b"cache:later", "set", Some(7200)),
            (b"temp:1", "string", None),
            (b"temp:2", "list", Some(7200)),
            (b"temp:3", "stream", None),
            (b"user:1", "hash", None),
            (b"session:abc", "string", Some(30)),
            (b"cachex", "string", None),
            (b"temp", "string", None),
            (b"CACHE:upper", "string", None),
        ],
    );
}

/// The keys SCAN returns: the built-in rules' MATCH, `[ct][ae][cm][hp][:e]*`,
/// leaves `user:1`, `session:abc`, `temp` and `CACHE:upper` in Redis.
const MIXED_SCANNED: u64 = 11;
const MIXED_MATCHED: u64 = 10;
const MIXED_UNCHANGED: u64 = 2;

fn mixed_after_default_rules() -> Vec<(&'static [u8], &'static str, Ttl)> {
    vec![
        (b"cache:a", "string", Ttl::About(3600)),
        (b"cache:b", "hash", Ttl::About(3600)),
        (b"cache:c", "list", Ttl::About(3600)),
        (b"cache:mid", "string", Ttl::About(120)),
        (b"cache:later", "set", Ttl::About(7200)),
        (b"user:1", "hash", Ttl::Persistent),
        (b"session:abc", "string", Ttl::About(30)),
        (b"cachex", "string", Ttl::Persistent),
        (b"temp", "string", Ttl::Persistent),
        (b"CACHE:upper", "string", Ttl::Persistent),
    ]
}

fn default_rule_counts(missing: u64, soon: u64, temp: u64) -> Vec<(String, String, u64)> {
    vec![
        ("cache-missing-ttl".into(), "expire".into(), missing),
        ("cache-expiring-soon".into(), "delete".into(), soon),
        ("temp".into(), "delete".into(), temp),
    ]
}

#[test]
fn default_rules_clean_a_mixed_keyspace_exactly() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_mixed(&mut con);

    let out = run_json(&server.url()).run();
    out.assert_code(0);
    let report = out.report();

    assert_keyspace(&mut con, &mixed_after_default_rules());
    assert_eq!(
        rule_counts(&report),
        default_rule_counts(3, 2, 3),
        "{report:#}"
    );
    assert_eq!(report["complete"], true, "{report:#}");
    assert_eq!(report["dry_run"], false, "{report:#}");
    assert!(report["stopped_by"].is_null(), "{report:#}");
    assert!(report["error"].is_null(), "{report:#}");
    assert_eq!(field(&report, "keys_scanned"), MIXED_SCANNED, "{report:#}");
    assert_eq!(field(&report, "keys_matched"), MIXED_MATCHED, "{report:#}");
    assert_eq!(field(&report, "unchanged"), MIXED_UNCHANGED, "{report:#}");
    assert_eq!(field(&report, "vanished"), 0, "{report:#}");
    assert!(field(&report, "batches") >= 1, "{report:#}");
    assert_matched_accounted(&report);
    let (software, version) = software_and_version(&mut con);
    assert_eq!(report["server"]["software"], software, "{report:#}");
    assert_eq!(report["server"]["version"], version, "{report:#}");
    assert_eq!(report["servers"][0]["software"], software, "{report:#}");
    assert_eq!(report["servers"][0]["version"], version, "{report:#}");
    // A fresh run loads its script before the first call: no call meets
    // NOSCRIPT.
    assert_eq!(field(&report, "script_reloads"), 0, "{report:#}");
    assert!(
        report["server"]["address"]
            .as_str()
            .is_some_and(|a| a.contains(&server.port().to_string())),
        "server.address should name port {}: {report:#}",
        server.port()
    );
    assert!(
        report["duration_seconds"].as_f64().unwrap() < 60.0,
        "{report:#}"
    );
}

#[test]
fn every_condition_decides_which_keys_are_acted_on() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_all(
        &mut con,
        &[
            (b"nottl:a", "string", None),
            (b"nottl:b", "string", Some(100)),
            (b"below:soon", "string", Some(50)),
            (b"below:far", "string", Some(500)),
            (b"below:none", "string", None),
            (b"above:far", "hash", Some(7200)),
            (b"above:near", "hash", Some(1800)),
            (b"above:none", "hash", None),
            (b"idle:old", "string", None),
            (b"idle:old-ttl", "list", Some(3000)),
            (b"idle:warm", "string", None),
            (b"idle:fresh", "string", None),
        ],
    );
    make_idle(&mut con, b"idle:old", 1000);
    make_idle(&mut con, b"idle:old-ttl", 1000);
    make_idle(&mut con, b"idle:warm", 400);

    let out = run_with_rules(
        &server,
        r#"
[[rule]]
name = "no-ttl"
pattern = "nottl:*"
no_ttl = true
action = "delete"

[[rule]]
name = "below"
pattern = "below:*"
ttl_below = "100s"
action = "delete"

[[rule]]
name = "above"
pattern = "above:*"
ttl_above = "1h"
action = "expire"
ttl = "10m"

[[rule]]
name = "idle"
pattern = "idle:*"
idle_above = "500s"
action = "delete"
"#,
    );
    out.assert_code(0);
    let report = out.report();

    assert_keyspace(
        &mut con,
        &[
            (b"nottl:b", "string", Ttl::About(100)),
            (b"below:far", "string", Ttl::About(500)),
            (b"below:none", "string", Ttl::Persistent),
            (b"above:far", "hash", Ttl::About(600)),
            (b"above:near", "hash", Ttl::About(1800)),
            (b"above:none", "hash", Ttl::Persistent),
            (b"idle:warm", "string", Ttl::Persistent),
            (b"idle:fresh", "string", Ttl::Persistent),
        ],
    );
    assert_eq!(
        rule_counts(&report),
        vec![
            ("no-ttl".into(), "delete".into(), 1),
            ("below".into(), "delete".into(), 1),
            ("above".into(), "expire".into(), 1),
            ("idle".into(), "delete".into(), 2),
        ],
        "{report:#}"
    );
    assert_eq!(field(&report, "keys_matched"), 12, "{report:#}");
    assert_eq!(field(&report, "unchanged"), 7, "{report:#}");
    assert_matched_accounted(&report);
}

#[test]
fn type_condition_selects_each_redis_type() {
    let server = RedisServer::start();
    let mut con = server.conn();
    let types = ["string", "list", "set", "zset", "hash", "stream"];
    let mut toml = String::new();
    for (i, t) in types.iter().enumerate() {
        toml.push_str(&format!(
            "[[rule]]\nname = \"t-{t}\"\npattern = \"t:*\"\ntype = \"{t}\"\naction = \"expire\"\nttl = \"{}s\"\n\n",
            (i + 1) * 1000
        ));
    }
    for t in types {
        seed(&mut con, format!("t:{t}").as_bytes(), t, None);
    }

    let out = run_with_rules(&server, &toml);
    out.assert_code(0);
    let report = out.report();

    let names: Vec<String> = types.iter().map(|t| format!("t:{t}")).collect();
    let expected: Vec<(&[u8], &str, Ttl)> = types
        .iter()
        .enumerate()
        .map(|(i, t)| (names[i].as_bytes(), *t, Ttl::About((i as u64 + 1) * 1000)))
        .collect();
    assert_keyspace(&mut con, &expected);
    let want: Vec<(String, String, u64)> = types
        .iter()
        .map(|t| (format!("t-{t}"), "expire".to_string(), 1))
        .collect();
    assert_eq!(rule_counts(&report), want, "{report:#}");
    assert_eq!(field(&report, "unchanged"), 0, "{report:#}");
}

const ORDER_KEYS: &[(&[u8], &str, Option<u64>)] = &[
    (b"k:hash", "hash", None),
    (b"k:str", "string", None),
    (b"k:str-ttl", "string", Some(500)),
];

#[test]
fn the_first_rule_in_file_order_whose_conditions_hold_acts() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_all(&mut con, ORDER_KEYS);
    let out = run_with_rules(
        &server,
        r#"
[[rule]]
name = "hashes"
pattern = "k:*"
type = "hash"
action = "delete"

[[rule]]
name = "persistent"
pattern = "k:*"
no_ttl = true
action = "expire"
ttl = "1h"

[[rule]]
name = "rest"
pattern = "k:*"
action = "delete"
"#,
    );
    out.assert_code(0);
    let report = out.report();
    assert_keyspace(&mut con, &[(b"k:str", "string", Ttl::About(3600))]);
    assert_eq!(
        rule_counts(&report),
        vec![
            ("hashes".into(), "delete".into(), 1),
            ("persistent".into(), "expire".into(), 1),
            ("rest".into(), "delete".into(), 1),
        ],
        "{report:#}"
    );
}

#[test]
fn swapping_two_rules_changes_which_one_acts() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_all(&mut con, ORDER_KEYS);
    let out = run_with_rules(
        &server,
        r#"
[[rule]]
name = "persistent"
pattern = "k:*"
no_ttl = true
action = "expire"
ttl = "1h"

[[rule]]
name = "hashes"
pattern = "k:*"
type = "hash"
action = "delete"

[[rule]]
name = "rest"
pattern = "k:*"
action = "delete"
"#,
    );
    out.assert_code(0);
    let report = out.report();
    assert_keyspace(
        &mut con,
        &[
            (b"k:hash", "hash", Ttl::About(3600)),
            (b"k:str", "string", Ttl::About(3600)),
        ],
    );
    assert_eq!(
        rule_counts(&report),
        vec![
            ("persistent".into(), "expire".into(), 2),
            ("hashes".into(), "delete".into(), 0),
            ("rest".into(), "delete".into(), 1),
        ],
        "{report:#}"
    );
}

#[test]
fn expire_never_lengthens_a_shorter_ttl() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_all(
        &mut con,
        &[
            (b"e:none", "string", None),
            (b"e:short", "string", Some(100)),
            (b"e:long", "set", Some(3 * 3600)),
        ],
    );
    let out = run_with_rules(
        &server,
        r#"
[[rule]]
name = "cap"
pattern = "e:*"
action = "expire"
ttl = "1h"
"#,
    );
    out.assert_code(0);
    let report = out.report();
    assert_keyspace(
        &mut con,
        &[
            (b"e:none", "string", Ttl::About(3600)),
            (b"e:short", "string", Ttl::About(100)),
            (b"e:long", "set", Ttl::About(3600)),
        ],
    );
    assert_eq!(rule_keys(&report, "cap"), 2, "{report:#}");
    assert_eq!(field(&report, "unchanged"), 1, "{report:#}");
    assert_matched_accounted(&report);
}

#[test]
fn dry_run_changes_nothing_and_predicts_the_real_run() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_mixed(&mut con);
    let digest_before = digest(&mut con);
    let before = keyspace(&mut con);

    let dry = run_json(&server.url()).arg("--dry-run").run();
    dry.assert_code(0);
    let dry_report = dry.report();

    assert_eq!(
        digest(&mut con),
        digest_before,
        "dry run changed the dataset"
    );
    assert_same_keyspace(&before, &keyspace(&mut con));
    assert_eq!(dry_report["dry_run"], true, "{dry_report:#}");
    assert_eq!(dry_report["complete"], true, "{dry_report:#}");
    assert_eq!(
        rule_counts(&dry_report),
        default_rule_counts(3, 2, 3),
        "{dry_report:#}"
    );

    let real = run_json(&server.url()).run();
    real.assert_code(0);
    let real_report = real.report();
    assert_eq!(real_report["dry_run"], false, "{real_report:#}");
    assert_eq!(rule_counts(&real_report), rule_counts(&dry_report));
    for f in ["keys_scanned", "keys_matched", "unchanged", "vanished"] {
        assert_eq!(
            field(&real_report, f),
            field(&dry_report, f),
            "{f} differs: dry {dry_report:#} real {real_report:#}"
        );
    }
    assert_keyspace(&mut con, &mixed_after_default_rules());
}

#[test]
fn dry_run_from_env_changes_nothing() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_mixed(&mut con);
    let digest_before = digest(&mut con);
    let out = run_json(&server.url()).env("JANITOR_DRY_RUN", "true").run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["dry_run"], true, "{report:#}");
    assert_eq!(
        digest(&mut con),
        digest_before,
        "JANITOR_DRY_RUN run changed data"
    );
}

#[test]
fn an_empty_database_is_a_complete_pass_with_zero_counts() {
    let server = RedisServer::start();
    let mut con = server.conn();
    let out = run_json(&server.url()).run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["complete"], true, "{report:#}");
    for f in ["keys_scanned", "keys_matched", "vanished", "unchanged"] {
        assert_eq!(field(&report, f), 0, "{f}: {report:#}");
    }
    assert_eq!(
        field(&report, "batches"),
        1,
        "one call finds the keyspace empty: {report:#}"
    );
    assert_eq!(rule_counts(&report), default_rule_counts(0, 0, 0));
    assert_eq!(dbsize(&mut con), 0);
}

#[test]
fn a_keyspace_of_many_batches_is_cleaned_completely() {
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "cache", 10_000);
    populate(&mut con, "temp", 10_000);
    populate(&mut con, "keep", 5_000);

    let out = run_json(&server.url()).args(["--batch-size", "100"]).run();
    out.assert_code(0);
    let report = out.report();

    let after = keyspace(&mut con);
    assert_eq!(after.len(), 15_000, "temp keys left or others lost");
    let mut wrong = Vec::new();
    for (key, state) in &after {
        let ok = if key.starts_with(b"cache:") {
            state.kind == "string" && (state.pttl - 3_600_000).abs() <= TTL_TOLERANCE_MS
        } else if key.starts_with(b"keep:") {
            state.kind == "string" && state.pttl == -1
        } else {
            false
        };
        if !ok {
            wrong.push(format!("{} {:?}", show(key), state));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} keys in the wrong state, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    assert_eq!(
        rule_counts(&report),
        default_rule_counts(10_000, 0, 10_000),
        "{report:#}"
    );
    assert_eq!(report["complete"], true, "{report:#}");
    // Every cache and temp key came back from SCAN; its MATCH left the keep
    // keys in Redis.
    assert!(field(&report, "keys_scanned") >= 20_000, "{report:#}");
    assert!(field(&report, "batches") >= 200, "{report:#}");
    assert_matched_accounted(&report);
}

#[test]
fn json_output_is_exactly_one_object_with_every_field() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_mixed(&mut con);
    let out = run_json(&server.url()).run();
    out.assert_code(0);
    // report() rejects anything but exactly one JSON object, and checks the
    // type of every documented field.
    let report = out.report();
    let obj = report.as_object().unwrap();
    for f in [
        "complete",
        "dry_run",
        "stopped_by",
        "error",
        "keys_scanned",
        "keys_matched",
        "batches",
        "duration_seconds",
        "vanished",
        "unchanged",
        "rules",
        "script",
        "script_reloads",
        "server",
        "servers",
    ] {
        assert!(obj.contains_key(f), "missing {f}: {report:#}");
    }
    let servers = report["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 1, "{report:#}");
    for f in [
        "address",
        "software",
        "version",
        "complete",
        "stopped_by",
        "error",
        "keys_scanned",
        "rules",
        "duration_seconds",
        "script",
    ] {
        assert!(
            servers[0].get(f).is_some(),
            "servers[0] lacks {f}: {report:#}"
        );
    }
    assert_eq!(servers[0]["script"], report["script"], "{report:#}");
    assert_eq!(servers[0]["rules"], report["rules"], "{report:#}");
}

#[test]
fn output_json_can_come_from_the_environment() {
    let server = RedisServer::start();
    let out = janitor()
        .args(["run", "--url", &server.url()])
        .env("JANITOR_OUTPUT", "json")
        .run();
    out.assert_code(0);
    out.report();
}

#[test]
fn text_output_is_a_readable_report_not_json() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_mixed(&mut con);
    let out = janitor()
        .args(["run", "--url", &server.url(), "--output", "text"])
        .run();
    out.assert_code(0);
    assert!(
        !out.stdout.trim().is_empty(),
        "empty text report\n{}",
        out.dump()
    );
    assert!(
        serde_json::from_str::<serde_json::Value>(&out.stdout).is_err(),
        "--output text printed JSON\n{}",
        out.dump()
    );
    // Each rule's line names it and its key count.
    for (name, count) in [
        ("cache-missing-ttl", 3),
        ("cache-expiring-soon", 2),
        ("temp", 3),
    ] {
        let line = out.stdout.lines().find(|l| {
            l.split(|c: char| c.is_whitespace() || c == ':')
                .any(|w| w == name)
        });
        let line = line
            .unwrap_or_else(|| panic!("no line for rule {name} in text report\n{}", out.dump()));
        assert!(
            line.split(|c: char| !c.is_ascii_digit())
                .any(|n| n == count.to_string()),
            "rule {name}'s line {line:?} lacks its count {count}\n{}",
            out.dump()
        );
    }
    assert_keyspace(&mut con, &mixed_after_default_rules());
}

#[test]
fn max_runtime_stops_a_long_pass_with_exit_0_and_a_partial_report() {
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "cache", 300_000);

    let out = run_json(&server.url())
        .args(["--max-runtime", "300ms", "--batch-size", "100"])
        .run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["complete"], false, "{report:#}");
    assert_eq!(report["stopped_by"], "max_runtime", "{report:#}");
    assert_eq!(
        report["servers"][0]["stopped_by"], "max_runtime",
        "{report:#}"
    );
    assert!(report["error"].is_null(), "{report:#}");
    // It ran for its max runtime, not less: the run, whose start (finding
    // the nodes) --max-runtime counts from.
    assert!(
        report["duration_seconds"].as_f64().unwrap() >= 0.3,
        "{report:#}"
    );
    let expired = rule_keys(&report, "cache-missing-ttl");
    assert!(expired < 300_000, "the whole keyspace was done: {report:#}");
    assert_eq!(
        expires_count(&mut con, 0),
        expired,
        "keys with a TTL on the server != report's count"
    );
    assert_eq!(dbsize(&mut con), 300_000);
    assert_matched_accounted(&report);
}

#[test]
fn max_runtime_can_come_from_the_environment() {
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "cache", 300_000);
    let out = run_json(&server.url())
        .env("JANITOR_MAX_RUNTIME", "1ms")
        .env("JANITOR_BATCH_SIZE", "100")
        .run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["stopped_by"], "max_runtime", "{report:#}");
    assert_eq!(report["complete"], false, "{report:#}");
}

#[test]
fn rules_and_batch_size_can_come_from_the_environment() {
    let server = RedisServer::start();
    let mut con = server.conn();
    let rules = write_rules(
        server.dir(),
        "[[rule]]\nname = \"x\"\npattern = \"x:*\"\naction = \"delete\"\n",
    );
    for i in 0..50 {
        seed(&mut con, format!("x:{i}").as_bytes(), "string", None);
    }
    seed(&mut con, b"temp:kept", "string", None);
    let out = janitor()
        .args(["run", "--url", &server.url()])
        .env("JANITOR_RULES", &rules)
        .env("JANITOR_BATCH_SIZE", "1")
        .env("JANITOR_OUTPUT", "json")
        .run();
    out.assert_code(0);
    let report = out.report();
    assert_keyspace(&mut con, &[(b"temp:kept", "string", Ttl::Persistent)]);
    assert_eq!(
        rule_counts(&report),
        vec![("x".into(), "delete".into(), 50)],
        "{report:#}"
    );
    // Each call looks at one key, but SCAN returns a whole hash bucket (on
    // Valkey 8.1, up to 7 keys in one): the 50 keys take many calls, not
    // the default's one.
    assert!(field(&report, "batches") >= 5, "{report:#}");
}

#[test]
fn redis_host_is_used_when_redis_url_is_unset() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_mixed(&mut con);
    let out = janitor()
        .args(["run", "--output", "json"])
        .env("REDIS_HOST", server.host_port())
        .run();
    out.assert_code(0);
    let report = out.report();
    assert_keyspace(&mut con, &mixed_after_default_rules());
    assert!(
        report["server"]["address"]
            .as_str()
            .is_some_and(|a| a.contains(&server.port().to_string())),
        "{report:#}"
    );
}

#[test]
fn redis_url_env_is_used_and_wins_over_redis_host() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_mixed(&mut con);
    let out = janitor()
        .args(["run", "--output", "json"])
        .env("REDIS_URL", server.url())
        .env("REDIS_HOST", dead_url().trim_start_matches("redis://"))
        .run();
    out.assert_code(0);
    assert_keyspace(&mut con, &mixed_after_default_rules());
}

#[test]
fn url_flag_wins_over_redis_url_env() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_mixed(&mut con);
    let out = run_json(&server.url()).env("REDIS_URL", dead_url()).run();
    out.assert_code(0);
    assert_keyspace(&mut con, &mixed_after_default_rules());
}

#[test]
fn the_database_in_the_url_is_the_one_cleaned() {
    let server = RedisServer::start();
    let mut db3 = server.conn_db(3);
    let mut db0 = server.conn_db(0);
    seed_mixed(&mut db3);
    seed_mixed(&mut db0);
    let db0_before = keyspace(&mut db0);

    let out = run_json(&server.url_db(3)).run();
    out.assert_code(0);
    let report = out.report();

    assert_keyspace(&mut db3, &mixed_after_default_rules());
    assert_same_keyspace(&db0_before, &keyspace(&mut db0));
    assert_eq!(field(&report, "keys_scanned"), MIXED_SCANNED, "{report:#}");
}

#[test]
fn a_server_is_reached_on_its_unix_socket() {
    let sockets = tempfile::tempdir().unwrap();
    let socket = sockets.path().join("redis.sock");
    let server = RedisServer::start_with(&["--unixsocket", socket.to_str().unwrap()]);
    let mut db2 = server.conn_db(2);
    let mut db0 = server.conn_db(0);
    seed_mixed(&mut db2);
    seed_mixed(&mut db0);
    let db0_before = keyspace(&mut db0);

    for url in [
        format!("unix://{}?db=2", socket.display()),
        format!("redis+unix://{}?db=2", socket.display()),
    ] {
        let out = run_json(&url).run();
        out.assert_code(0);
        let report = out.report();
        assert_eq!(
            report["servers"][0]["address"],
            socket.to_str().unwrap(),
            "{report:#}"
        );
        assert_keyspace(&mut db2, &mixed_after_default_rules());
    }
    assert_same_keyspace(&db0_before, &keyspace(&mut db0));
}

#[test]
fn json_log_format_writes_one_json_object_per_stderr_line() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_mixed(&mut con);
    for (flag, env) in [(true, false), (false, true)] {
        let mut j = run_json(&server.url()).env("RUST_LOG", "debug");
        if flag {
            j = j.args(["--log-format", "json"]);
        }
        if env {
            j = j.env("JANITOR_LOG_FORMAT", "json");
        }
        let out = j.run();
        out.assert_code(0);
        let report = out.report();
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert!(!lines.is_empty(), "no log lines at debug\n{}", out.dump());
        let events: Vec<serde_json::Value> = lines
            .iter()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("log line is not JSON ({e}): {line:?}\n{}", out.dump())
                })
            })
            .collect();
        assert!(events.iter().all(|v| v.is_object()), "{}", out.dump());
        // Log pipelines see how the pass ended, with its counts.
        let finished = events
            .iter()
            .find(|v| v["message"] == "pass finished")
            .unwrap_or_else(|| panic!("no \"pass finished\" event\n{}", out.dump()));
        assert_eq!(finished["complete"], true, "{finished}");
        assert!(finished.get("stopped_by").is_none(), "{finished}");
        assert_eq!(
            finished["keys_scanned"], report["keys_scanned"],
            "{finished}"
        );
    }
}

/// Runs the job with `--batch-size 100 --rate-limit RATE`; returns its
/// outcome, which exited 0, and how long it took.
fn rate_limited_run(server: &RedisServer, rate: &str) -> (Outcome, std::time::Duration) {
    let started = std::time::Instant::now();
    let outcome = janitor()
        .args(["run", "--output", "json", "--batch-size", "100"])
        .args(["--rate-limit", rate, "--url", &server.url()])
        .run();
    let elapsed = started.elapsed();
    outcome.assert_code(0);
    (outcome, elapsed)
}

#[test]
fn rate_limit_spaces_the_scan_and_still_completes() {
    // 3000 keys at 6000 keys/s cannot take less than about half a second;
    // without a limit the pass takes a few milliseconds.
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "temp", 3000);
    let (outcome, elapsed) = rate_limited_run(&server, "6000");
    let report = outcome.report();
    assert_eq!(report["complete"], true, "{}", outcome.dump());
    assert_eq!(rule_keys(&report, "temp"), 3000);
    assert_eq!(dbsize(&mut con), 0);
    assert!(
        elapsed >= std::time::Duration::from_millis(400),
        "3000 keys at 6000 keys/s took only {elapsed:?}"
    );
}

#[test]
fn rate_limit_counts_the_keys_redis_looks_at_not_only_those_it_returns() {
    // The MATCH returns only the 3000 temp keys, but Redis looks at all
    // 12000: at 12000 keys/s that takes about a second, not a quarter.
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "temp", 3000);
    populate(&mut con, "keep", 9000);
    let (outcome, elapsed) = rate_limited_run(&server, "12000");
    let report = outcome.report();
    assert_eq!(rule_keys(&report, "temp"), 3000, "{}", outcome.dump());
    assert_eq!(dbsize(&mut con), 9000);
    assert!(
        elapsed >= std::time::Duration::from_millis(800),
        "12000 keys at 12000 keys/s took only {elapsed:?}"
    );
}

#[test]
fn a_tiny_call_budget_still_cleans_everything() {
    // SCAN steps shrink to the floor when the budget is far below one key's
    // cost; the outcome must not change.
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "cache:x", 2000);
    populate(&mut con, "temp", 2000);
    let outcome = janitor()
        .args(["run", "--output", "json", "--max-call-time", "1us"])
        .args(["--url", &server.url()])
        .run();
    outcome.assert_code(0);
    let report = outcome.report();
    assert_eq!(rule_keys(&report, "temp"), 2000, "{}", outcome.dump());
    assert_eq!(rule_keys(&report, "cache-missing-ttl"), 2000);
    assert!(
        field(&report, "batches") >= 4000 / 100,
        "{}",
        outcome.dump()
    );
    assert_eq!(dbsize(&mut con), 2000);
    assert_eq!(expires_count(&mut con, 0), 2000);
}

#[test]
fn each_call_holds_redis_about_the_max_call_time() {
    // The script times its SCAN steps with a stopwatch and ends when its
    // budget is spent. Since Redis 7.2 TIME stands still within a call: timed
    // by it, the calls of a v8 script looked at all of --batch-size (10,000
    // keys) and held Redis 15 ms each on Redis 8.2 and Valkey 8.1 (the CI's
    // server matrix runs this test on both). The budget is 2 ms; a call may
    // overrun it by one key's writes, and this machine is shared.
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "cache:x", 50_000);
    populate(&mut con, "temp", 50_000);
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .exec(&mut con)
        .unwrap();
    let out = run_json(&server.url())
        .args(["--max-server-share", "1", "--max-call-time", "2ms"])
        .run();
    out.assert_code(0);
    let (calls, usec) = (calls_of(&mut con, "evalsha"), usec_of(&mut con, "evalsha"));
    assert!(
        usec / calls <= 6_000,
        "{calls} calls held Redis {usec} us, {} us each\n{}",
        usec / calls,
        out.dump()
    );
    assert_eq!(dbsize(&mut con), 50_000);
    assert_eq!(expires_count(&mut con, 0), 50_000);
}

#[test]
fn the_pass_samples_redis_command_statistics_as_it_goes() {
    // The pacer learns what a call costs Redis beyond the script's clock
    // from INFO commandstats, sampled every 100 calls; a writing pass reads
    // INFO replication with each sample too, for its replicas' lag.
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "temp", 5000);
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .exec(&mut con)
        .unwrap();
    let out = run_json(&server.url())
        .args(["--batch-size", "1", "--max-server-share", "1"])
        .run();
    out.assert_code(0);
    // Hundreds of calls (a SCAN bucket each), so that the samples
    // outnumber the few INFO calls of the start and the end (the server,
    // its memory before and after).
    let calls = field(&out.report(), "batches");
    assert!(calls >= 500, "{calls} calls");
    let infos = calls_of(&mut con, "info");
    let samples = calls / 100;
    assert!(
        infos >= 2 * samples && infos <= 2 * samples + 7,
        "{infos} INFO calls for {calls} script calls"
    );
}
