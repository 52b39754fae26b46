//! The Redis user the job logs in as. The lines `redis-janitor acl` prints,
//! which the operator's guide shows, let a dry run and a real run with every
//! kind of rule complete on the server under test, and nothing more. A user
//! lacking any one command the pass needs, or a server that renamed one away,
//! is refused before anything is written (else a call could delete keys and
//! then fail on its first `PEXPIRE`, half-applied), with a message naming the
//! command and the permission to add.

use redis_janitor::acl::{self, Command};
use redis_janitor::rules::Rules;
use redis_janitor::script::{Dialect, Mode};

use crate::support::*;

const PASSWORD: &str = "acl-test-pw-8812";

/// A rule of every kind: each condition, both actions, a delete without
/// conditions.
const EVERY_KIND: &str = r#"
[[rule]]
name = "no-ttl"
pattern = "a:*"
no_ttl = true
action = "expire"
ttl = "1h"

[[rule]]
name = "soon"
pattern = "b:*"
ttl_below = "100s"
action = "delete"

[[rule]]
name = "far"
pattern = "c:*"
ttl_above = "2h"
action = "expire"
ttl = "1h"

[[rule]]
name = "hashes"
pattern = "d:*"
type = "hash"
action = "delete"

[[rule]]
name = "idle"
pattern = "e:*"
idle_above = "500s"
action = "delete"

[[rule]]
name = "temp"
pattern = "temp:*"
action = "delete"
"#;

fn seed_every_kind(con: &mut redis::Connection) {
    seed_all(
        con,
        &[
            (b"a:1", "string", None),
            (b"a:2", "string", Some(50)),
            (b"b:1", "string", Some(50)),
            (b"b:2", "string", Some(500)),
            (b"c:1", "set", Some(3 * 3600)),
            (b"c:2", "set", Some(1800)),
            (b"d:1", "hash", None),
            (b"d:2", "string", None),
            (b"e:1", "list", None),
            (b"e:2", "list", None),
            (b"temp:1", "string", None),
            (b"keep", "string", None),
        ],
    );
    make_idle(con, b"e:1", 1000);
}

fn every_kind_cleaned(con: &mut redis::Connection) {
    assert_keyspace(
        con,
        &[
            (b"a:1", "string", Ttl::About(3600)),
            (b"a:2", "string", Ttl::About(50)),
            (b"b:2", "string", Ttl::About(500)),
            (b"c:1", "set", Ttl::About(3600)),
            (b"c:2", "set", Ttl::About(1800)),
            (b"d:2", "string", Ttl::Persistent),
            (b"e:2", "list", Ttl::Persistent),
            (b"keep", "string", Ttl::Persistent),
        ],
    );
}

/// The `ACL SETUSER` line `redis-janitor acl` prints for `user` on servers
/// of `dialect`.
fn acl_line(dialect: Dialect, user: &str) -> String {
    let out = janitor().arg("acl").run();
    out.assert_code(0);
    let heading = match dialect {
        Dialect::Redis7 => "# Redis 7",
        Dialect::Legacy => "# Redis 6.2",
    };
    let mut lines = out.stdout.lines();
    while let Some(line) = lines.next() {
        let next = lines.next().unwrap_or_default();
        if line.starts_with(heading) && next.starts_with(&format!("ACL SETUSER {user} ")) {
            return next.to_string();
        }
    }
    panic!("no line for {user} under {heading:?}\n{}", out.dump());
}

/// `run` as `user`, with the rules of every kind.
fn run_as(server: &RedisServer, user: &str, extra: &[&str]) -> Outcome {
    run_rules_as(server, user, EVERY_KIND, extra)
}

/// `run` as `user`, with `rules`.
fn run_rules_as(server: &RedisServer, user: &str, rules: &str, extra: &[&str]) -> Outcome {
    let rules = write_rules(server.dir(), rules);
    let password = write_file(server.dir(), "password", PASSWORD);
    janitor()
        .args(["run", "--output", "json", "--url"])
        .arg(format!("redis://{user}@127.0.0.1:{}", server.port()))
        .arg("--rules")
        .arg(&rules)
        .arg("--password-file")
        .arg(&password)
        .args(extra)
        .run()
}

/// The users `ACL LOG` names, one per refusal logged.
fn acl_log_users(con: &mut redis::Connection) -> Vec<String> {
    let entries: Vec<std::collections::HashMap<String, redis::Value>> =
        redis::cmd("ACL").arg("LOG").query(con).expect("ACL LOG");
    entries
        .iter()
        .map(|e| match e.get("username") {
            Some(redis::Value::BulkString(name)) => String::from_utf8_lossy(name).into_owned(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn the_operators_guide_shows_the_lines_acl_prints() {
    let out = janitor().arg("acl").env("REDIS_URL", dead_url()).run();
    out.assert_code(0);
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("ACL SETUSER"))
        .collect();
    assert_eq!(lines.len(), 4, "{}", out.dump());
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .unwrap();
    for line in lines {
        assert!(
            guide.lines().any(|l| l == line),
            "docs/operations.md lacks the line `redis-janitor acl` prints:\n{line}"
        );
    }
}

#[test]
fn the_generated_users_run_every_kind_of_rule_and_no_more() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_every_kind(&mut con);
    let dialect = dialect(&mut con);
    acl_setuser(&mut con, &acl_line(dialect, "janitor"), PASSWORD);
    acl_setuser(&mut con, &acl_line(dialect, "janitor-ro"), PASSWORD);
    redis::cmd("ACL")
        .arg("LOG")
        .arg("RESET")
        .exec(&mut con)
        .unwrap();
    let before = digest(&mut con);

    let expected = vec![
        ("no-ttl".to_string(), "expire".to_string(), 1),
        ("soon".into(), "delete".into(), 1),
        ("far".into(), "expire".into(), 1),
        ("hashes".into(), "delete".into(), 1),
        ("idle".into(), "delete".into(), 1),
        ("temp".into(), "delete".into(), 1),
    ];
    for user in ["janitor", "janitor-ro"] {
        let dry = run_as(&server, user, &["--dry-run"]);
        dry.assert_code(0);
        assert_eq!(
            rule_counts(&dry.report()),
            expected,
            "{user}: {}",
            dry.dump()
        );
        assert_eq!(digest(&mut con), before, "{user}'s dry run wrote");
    }
    assert_eq!(acl_log_users(&mut con), Vec::<String>::new());

    // The dry-run user may not write: refused before the first call.
    let refused = run_as(&server, "janitor-ro", &[]);
    refused.assert_code(1);
    assert!(
        refused.one_line_stderr().contains("add +"),
        "{}",
        refused.dump()
    );
    assert_eq!(digest(&mut con), before, "the refused run wrote");
    assert!(
        acl_log_users(&mut con).iter().all(|u| u == "janitor-ro"),
        "{:?}",
        acl_log_users(&mut con)
    );

    redis::cmd("ACL")
        .arg("LOG")
        .arg("RESET")
        .exec(&mut con)
        .unwrap();
    let real = run_as(&server, "janitor", &[]);
    real.assert_code(0);
    assert_eq!(rule_counts(&real.report()), expected, "{}", real.dump());
    every_kind_cleaned(&mut con);
    assert_eq!(acl_log_users(&mut con), Vec::<String>::new());
}

#[test]
fn a_user_lacking_any_command_the_pass_needs_is_refused_before_it_writes() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_every_kind(&mut con);
    populate(&mut con, "temp", 500);
    let before = digest(&mut con);
    let dialect = dialect(&mut con);
    let rules = Rules::parse("every kind", EVERY_KIND).unwrap();
    let full = acl_line(dialect, "janitor");
    let mut failures = Vec::new();
    for (mode, extra) in [(Mode::Write, &[][..]), (Mode::ReadOnly, &["--dry-run"][..])] {
        for command in acl::needed(&rules, mode, dialect) {
            if command == Command::ClientSetname {
                continue; // the connection's name is optional: see below
            }
            let permission = command.permission();
            let line: Vec<&str> = full.split(' ').filter(|w| *w != permission).collect();
            acl_setuser(&mut con, &line.join(" "), PASSWORD);
            let out = run_as(&server, "janitor", extra);
            let message = out.stderr.trim().to_string();
            let named =
                message.contains(&why(command)) && message.contains(&format!("add {permission} "));
            if out.code != 1 || !named || digest(&mut con) != before {
                failures.push(format!("without {permission} ({mode:?}): {}", out.dump()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_user_whose_key_patterns_leave_out_the_jobs_own_keys_is_told_so() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_every_kind(&mut con);
    let before = digest(&mut con);
    let dialect = dialect(&mut con);
    // Every key the rules select (`EVERY_KIND`), none of the job's own.
    let narrow = acl_line(dialect, "janitor").replace(" ~* ", " ~a:* ~b:* ~c:* ~d:* ~e:* ");
    acl_setuser(&mut con, &narrow, PASSWORD);
    let out = run_as(&server, "janitor", &[]);
    out.assert_code(1);
    let message = out.stderr.trim();
    assert!(
        message.contains("must allow the job's own keys: add ~__redis-janitor__:*"),
        "{}",
        out.dump()
    );
    // Not a command to add: the user has them all.
    assert!(
        !message.contains(" to the Redis user's ACL"),
        "{}",
        out.dump()
    );
    assert_eq!(digest(&mut con), before, "{}", out.dump());
}

#[test]
fn a_user_that_may_not_read_every_key_the_rules_select_is_told_so_and_nothing_is_written() {
    let server = RedisServer::start();
    let mut con = server.conn();
    let dialect = dialect(&mut con);
    seed_cache_and_temp(&mut con);
    let before = digest(&mut con);
    // The `cache:` keys the rules check are out of the user's reach.
    let narrow = acl_line(dialect, "janitor").replace(" ~* ", " ~temp:* ~__redis-janitor__:* ");
    acl_setuser(&mut con, &narrow, PASSWORD);
    for mode in ["server", "declared"] {
        let out = run_rules_as(
            &server,
            "janitor",
            &rules(EXPIRE, EXPIRE),
            &["--key-mode", mode],
        );
        out.assert_code(1);
        assert!(
            out.stderr
                .contains("may not read every key the rules select (its ACL key patterns"),
            "{mode}: {}",
            out.dump()
        );
        assert_eq!(digest(&mut con), before, "{mode}: {}", out.dump());
    }
}

/// Three `cache:` and three `temp:` keys without TTL, for [`rules`].
fn seed_cache_and_temp(con: &mut redis::Connection) {
    for i in 0..3 {
        for prefix in ["cache", "temp"] {
            redis::cmd("SET")
                .arg(format!("{prefix}:{i}"))
                .arg("v")
                .exec(con)
                .unwrap();
        }
    }
}

/// Rules for `cache:*` and then `temp:*` keys, acting as `cache` and
/// `temp` say ([`DELETE`] or [`EXPIRE`]): the narrowed users below may not
/// write all their keys.
fn rules(cache: &str, temp: &str) -> String {
    format!(
        "[[rule]]\nname = \"cache\"\npattern = \"cache:*\"\n{cache}\n\n\
         [[rule]]\nname = \"temp\"\npattern = \"temp:*\"\n{temp}\n"
    )
}

/// A delete without conditions: a script call's write that no check reads
/// first.
const DELETE: &str = "action = \"delete\"";
/// An expire of keys without a TTL.
const EXPIRE: &str = "no_ttl = true\naction = \"expire\"\nttl = \"1h\"";

#[test]
fn a_user_that_may_not_write_every_key_the_rules_select_writes_nothing() {
    // Redis checks a script's key permissions command by command: a user
    // whose key patterns are narrower than the rules' would have a call's
    // write of a `temp:` key refused after its writes of `cache:` keys
    // had run. The call checks every key it is to write before the first.
    let server = RedisServer::start();
    let mut con = server.conn();
    let dialect = dialect(&mut con);
    let full = acl_line(dialect, "janitor");
    let own = "~__redis-janitor__:*";
    // The empty pattern (`~` alone) matches the empty key only, which the
    // call's check of every key at once must not take for all stars.
    let mut cases = vec![
        (rules(DELETE, DELETE), format!("~cache:* {own}"), None),
        (rules(DELETE, DELETE), format!("~ ~cache:* {own}"), None),
    ];
    if dialect == Dialect::Redis7 {
        // Every key readable (their checks pass), `cache:` ones writable.
        cases.push((rules(EXPIRE, EXPIRE), format!("%R~* ~cache:* {own}"), None));
        cases.push((
            rules(EXPIRE, EXPIRE),
            format!("%R~* ~ ~cache:* {own}"),
            None,
        ));
        // A selector that may UNLINK `temp:` keys, not PEXPIRE them: each
        // write is checked as the command it will be.
        cases.push((
            rules(DELETE, EXPIRE),
            format!("%R~* ~cache:* {own}"),
            Some("(~temp:* +unlink)"),
        ));
        // Rules over `temp:` keys only, which a selector lets the user
        // UNLINK, not PEXPIRE: Redis's check of the keys a declared-keys
        // call declares passes by that selector, before the call runs.
        cases.push((
            format!(
                "[[rule]]\nname = \"temp-0\"\npattern = \"temp:0\"\n{DELETE}\n\n\
                 [[rule]]\nname = \"temp\"\npattern = \"temp:*\"\n{EXPIRE}\n"
            ),
            format!("%R~* ~cache:* {own}"),
            Some("(~temp:* +evalsha +unlink)"),
        ));
    }
    let runs = cases
        .iter()
        .flat_map(|case| ["server", "declared"].map(|mode| (case, mode)));
    for ((toml, keys, selector), mode) in runs {
        redis::cmd("FLUSHALL").exec(&mut con).unwrap();
        seed_cache_and_temp(&mut con);
        let before = digest(&mut con);
        acl_setuser(
            &mut con,
            &full.replace(" ~* ", &format!(" {keys} ")),
            PASSWORD,
        );
        if let Some(selector) = selector {
            redis::cmd("ACL")
                .arg(&["SETUSER", "janitor", *selector][..])
                .exec(&mut con)
                .unwrap();
        }
        let out = run_rules_as(&server, "janitor", toml, &["--key-mode", mode]);
        out.assert_code(1);
        let message = out.report()["error"].to_string().to_lowercase();
        assert!(
            message.contains("noperm") || message.contains("can't access"),
            "{mode} {keys} {selector:?}: {}",
            out.dump()
        );
        assert_eq!(
            digest(&mut con),
            before,
            "{mode} {keys} {selector:?}: a call wrote: {}",
            out.dump()
        );
    }
}

#[test]
fn a_user_without_unlink_runs_rules_that_only_expire() {
    // The check of the keys a call writes must not ask for a command the
    // rules do not need.
    let server = RedisServer::start();
    let mut con = server.conn();
    let line = acl_line(dialect(&mut con), "janitor").replace(" +unlink", "");
    acl_setuser(&mut con, &line, PASSWORD);
    for i in 0..3 {
        redis::cmd("SET")
            .arg(format!("cache:{i}"))
            .arg("v")
            .exec(&mut con)
            .unwrap();
    }
    let out = run_rules_as(&server, "janitor", &rules(EXPIRE, EXPIRE), &[]);
    out.assert_code(0);
    assert_keyspace(
        &mut con,
        &[
            (b"cache:0", "string", Ttl::About(3600)),
            (b"cache:1", "string", Ttl::About(3600)),
            (b"cache:2", "string", Ttl::About(3600)),
        ],
    );
}

/// What the refusal of `command` says: the command, and what the job needs
/// it for.
fn why(command: Command) -> String {
    let name = command.name();
    match command {
        Command::ScriptLoad => format!("{name} of script clean"),
        Command::Info => format!("{name}, which the job reads the server's version"),
        Command::Evalsha | Command::EvalshaRo => format!("{name}, which runs the clean script"),
        Command::Eval | Command::EvalRo => {
            format!("{name}, which sends the clean script again after a NOSCRIPT")
        }
        Command::Hget | Command::Hmget | Command::Hgetall | Command::Hset | Command::Del => {
            format!(
                "{name}, which the job keeps the node's lease, checkpoint and last success with"
            )
        }
        Command::Dbsize => format!("{name}, which the job counts the keys for its report with"),
        _ => format!("{name}, which the clean script calls"),
    }
}

#[test]
fn a_user_that_may_not_name_its_connection_still_runs() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_every_kind(&mut con);
    let full = acl_line(dialect(&mut con), "janitor");
    let line: Vec<&str> = full
        .split(' ')
        .filter(|w| *w != "+client|setname")
        .collect();
    acl_setuser(&mut con, &line.join(" "), PASSWORD);
    let out = run_as(&server, "janitor", &[]);
    out.assert_code(0);
    assert!(out.stderr.contains("unnamed"), "{}", out.dump());
    every_kind_cleaned(&mut con);
}

#[test]
fn a_command_renamed_away_is_named_and_nothing_is_written() {
    for command in ["SCAN", "PEXPIRE", "TIME"] {
        let server = RedisServer::start_with(&["--rename-command", command, ""]);
        let mut con = server.conn();
        seed_every_kind(&mut con);
        let before = digest(&mut con);
        let rules = write_rules(server.dir(), EVERY_KIND);
        let out = run_json(&server.url()).arg("--rules").arg(&rules).run();
        out.assert_code(1);
        let line = out.one_line_stderr();
        assert!(line.contains(command), "[{command}] {}", out.dump());
        assert!(!line.contains("primary"), "[{command}] {}", out.dump());
        assert_eq!(digest(&mut con), before, "[{command}] written");
    }
}

#[test]
fn on_a_cluster_the_generated_users_suffice_and_a_missing_cluster_permission_is_named() {
    let cluster = RedisCluster::start(3, 1);
    seed_all(
        &mut cluster.client(),
        &[
            (b"temp:1", "string", None),
            (b"temp:2", "string", None),
            (b"temp:3", "string", None),
            (b"keep", "string", None),
        ],
    );
    let dialect = dialect(&mut cluster.nodes[0].conn());
    let (command, permission) = match dialect {
        Dialect::Redis7 => ("CLUSTER SHARDS", "+cluster|shards"),
        Dialect::Legacy => ("CLUSTER SLOTS", "+cluster|slots"),
    };
    let without = |line: String, permission: &str| line.replace(&format!(" {permission}"), "");
    // ACL users are per node: each node gets them.
    let set_users = |clean: &str, dry_run: &str| {
        for node in &cluster.nodes {
            acl_setuser(&mut node.conn(), clean, PASSWORD);
            acl_setuser(&mut node.conn(), dry_run, PASSWORD);
        }
    };
    let password = write_file(cluster.nodes[0].dir(), "password", PASSWORD);
    let run = |user: &str, extra: &[&str]| {
        janitor()
            .args(["run", "--output", "json", "--url"])
            .arg(format!("redis://{user}@{}", cluster.nodes[0].host_port()))
            .arg("--password-file")
            .arg(&password)
            .args(extra)
            .run()
    };

    set_users(
        &without(acl_line(dialect, "janitor"), permission),
        &without(acl_line(dialect, "janitor-ro"), "+readonly"),
    );
    let out = run("janitor", &[]);
    out.assert_code(1);
    for words in [command, "finds the cluster's nodes", permission] {
        assert!(out.stderr.contains(words), "{words}: {}", out.dump());
    }
    let out = run("janitor-ro", &["--dry-run", "--from-replicas"]);
    out.assert_code(1);
    for words in ["READONLY", "read from a cluster replica", "+readonly"] {
        assert!(out.stderr.contains(words), "{words}: {}", out.dump());
    }
    assert_eq!(cluster.dbsize(), 4);

    set_users(
        &acl_line(dialect, "janitor"),
        &acl_line(dialect, "janitor-ro"),
    );
    let out = run("janitor-ro", &["--dry-run", "--from-replicas"]);
    out.assert_code(0);
    assert_eq!(rule_keys(&out.report(), "temp"), 3);
    let out = run("janitor", &[]);
    out.assert_code(0);
    assert_eq!(rule_keys(&out.report(), "temp"), 3);
    assert_eq!(cluster.dbsize(), 1);

    // A user that may not read some keys the rules select: a node's refusal
    // of such a key is no slot served elsewhere. Redis 7 tells the two
    // apart, and the call ends with NOPERM before its first write; on 6.2
    // the keys count as moved and are left alone. The keys share a slot,
    // so one call of one node meets them all.
    seed_all(
        &mut cluster.client(),
        &[
            (b"cache:{x}1", "string", None),
            (b"cache:{x}2", "string", None),
            (b"temp:{x}1", "string", None),
            (b"temp:{x}2", "string", None),
        ],
    );
    let before = cluster.keyspace();
    let narrow = acl_line(dialect, "janitor").replace(" ~* ", " ~cache:* ~__redis-janitor__:* ");
    set_users(&narrow, &acl_line(dialect, "janitor-ro"));
    let path = write_rules(cluster.nodes[0].dir(), &rules(EXPIRE, EXPIRE));
    let out = run("janitor", &["--rules", path.to_str().unwrap()]);
    if dialect == Dialect::Redis7 {
        out.assert_code(1);
        let message = out.report()["error"].to_string().to_lowercase();
        assert!(message.contains("noperm"), "{}", out.dump());
        assert_eq!(cluster.keyspace(), before, "a call wrote: {}", out.dump());
    } else {
        out.assert_code(0);
        assert_eq!(out.report()["moved"], 2, "{}", out.dump());
        let temp: Vec<_> = cluster
            .keyspace()
            .into_iter()
            .filter(|(k, _)| k.starts_with(b"temp:"))
            .collect();
        let temp_before: Vec<_> = before
            .into_iter()
            .filter(|(k, _)| k.starts_with(b"temp:"))
            .collect();
        assert_eq!(temp, temp_before, "{}", out.dump());
    }
}
