//! Rules files: `check` accepts good files and the built-in default and
//! prints the effective rules; every kind of bad file is refused with exit 2
//! and one stderr line naming `path:line`, before any connection to Redis,
//! and a `run` with a bad file touches nothing.

use std::path::Path;

use crate::support::*;

const GOOD: &str = r#"# a comment
[[rule]]
name = "sessions"
pattern = "sess:*"
ttl_above = "2h"
action = "expire"
ttl = "30m"

[[rule]]
name = "old-hashes"
pattern = "h:[ab]?:*"
type = "hash"
idle_above = "1d"
action = "delete"

[[rule]]
name = "queues"
pattern = "q\\*literal"
no_ttl = true
action = "expire"
ttl = "4m30s"
"#;

#[test]
fn check_accepts_a_good_file_and_prints_its_rules() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_rules(dir.path(), GOOD);
    let out = janitor().args(["check", "--rules"]).arg(&path).run();
    out.assert_code(0);
    for needle in ["sessions", "sess:*", "old-hashes", "h:[ab]?:*", "queues"] {
        assert!(
            out.stdout.contains(needle),
            "check output lacks {needle:?}\n{}",
            out.dump()
        );
    }
    // Rule order is file order.
    let pos = |s: &str| out.stdout.find(s).unwrap();
    assert!(pos("sessions") < pos("old-hashes") && pos("old-hashes") < pos("queues"));
}

#[test]
fn check_without_rules_prints_the_built_in_default() {
    let out = janitor().arg("check").run();
    out.assert_code(0);
    for needle in [
        "cache-missing-ttl",
        "cache-expiring-soon",
        "temp",
        "cache:*",
        "temp:*",
    ] {
        assert!(
            out.stdout.contains(needle),
            "default rules output lacks {needle:?}\n{}",
            out.dump()
        );
    }
    let pos = |s: &str| out.stdout.find(s).unwrap();
    assert!(pos("cache-missing-ttl") < pos("cache-expiring-soon"));
}

#[test]
fn check_reads_the_rules_path_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_rules(dir.path(), GOOD);
    let out = janitor().arg("check").env("JANITOR_RULES", &path).run();
    out.assert_code(0);
    assert!(out.stdout.contains("old-hashes"), "{}", out.dump());
}

#[test]
fn check_touches_no_redis() {
    let server = RedisServer::start();
    let mut con = server.conn();
    let conns = total_connections(&mut con);
    let out = janitor().arg("check").env("REDIS_URL", server.url()).run();
    out.assert_code(0);
    assert_eq!(
        total_connections(&mut con),
        conns,
        "`check` connected to Redis"
    );
}

/// A bad rules file: its text, and the line numbers a message may name
/// (the offending key's line or its `[[rule]]` header; for a rule whose
/// conditions contradict each other, the condition's line); `None` when no
/// line applies (then only the path is required).
struct Bad {
    what: &'static str,
    toml: &'static str,
    lines: Option<&'static [usize]>,
}

const BAD: &[Bad] = &[
    Bad {
        what: "toml syntax error",
        toml: "[[rule]]\nname = \"a\"\npattern = \"a:*\naction = \"delete\"\n",
        lines: Some(&[3]),
    },
    Bad {
        what: "unknown key",
        toml: "[[rule]]\nname = \"a\"\npattern = \"a:*\"\naction = \"delete\"\ncolour = \"blue\"\n",
        lines: Some(&[5]),
    },
    Bad {
        what: "unknown top-level key",
        toml: "ruls = 1\n[[rule]]\nname = \"a\"\npattern = \"a:*\"\naction = \"delete\"\n",
        lines: Some(&[1]),
    },
    Bad {
        what: "empty rule list",
        toml: "# nothing here\n",
        lines: None,
    },
    Bad {
        what: "duplicate names",
        toml: "[[rule]]\nname = \"a\"\npattern = \"a:*\"\naction = \"delete\"\n\n\
               [[rule]]\nname = \"a\"\npattern = \"b:*\"\naction = \"delete\"\n",
        lines: Some(&[6, 7]),
    },
    Bad {
        what: "a rule name of two lines",
        toml: "[[rule]]\nname = \"a\\nERROR forged\"\npattern = \"a:*\"\naction = \"delete\"\n",
        lines: Some(&[2]),
    },
    Bad {
        what: "empty glob",
        toml: "[[rule]]\nname = \"a\"\npattern = \"\"\naction = \"delete\"\n",
        lines: Some(&[1, 3]),
    },
    Bad {
        what: "unclosed [ in glob",
        toml: "[[rule]]\nname = \"a\"\npattern = \"a:[bc\"\naction = \"delete\"\n",
        lines: Some(&[1, 3]),
    },
    Bad {
        what: "trailing backslash in glob",
        toml: "[[rule]]\nname = \"a\"\npattern = \"a:\\\\\"\naction = \"delete\"\n",
        lines: Some(&[1, 3]),
    },
    Bad {
        what: "glob range from ASCII to non-ASCII",
        toml: "[[rule]]\nname = \"a\"\npattern = \"user:[a-\u{e9}]*\"\naction = \"delete\"\n",
        lines: Some(&[1, 3]),
    },
    Bad {
        what: "expire without ttl",
        toml: "[[rule]]\nname = \"a\"\npattern = \"a:*\"\naction = \"expire\"\n",
        lines: Some(&[1, 4]),
    },
    Bad {
        what: "ttl on a delete",
        toml: "[[rule]]\nname = \"a\"\npattern = \"a:*\"\naction = \"delete\"\nttl = \"1h\"\n",
        lines: Some(&[1, 4, 5]),
    },
    Bad {
        what: "unknown action",
        toml: "[[rule]]\nname = \"a\"\npattern = \"a:*\"\naction = \"archive\"\n",
        lines: Some(&[1, 4]),
    },
    Bad {
        what: "missing pattern",
        toml: "[[rule]]\nname = \"a\"\naction = \"delete\"\n",
        lines: Some(&[1, 2, 3]),
    },
    Bad {
        what: "unknown type",
        toml: "[[rule]]\nname = \"a\"\npattern = \"a:*\"\ntype = \"bitmap\"\naction = \"delete\"\n",
        lines: Some(&[1, 4]),
    },
    Bad {
        what: "bad ttl duration",
        toml: "[[rule]]\nname = \"a\"\npattern = \"a:*\"\naction = \"expire\"\nttl = \"soon\"\n",
        lines: Some(&[1, 5]),
    },
    Bad {
        what: "bad ttl_below duration",
        toml: "[[rule]]\nname = \"a\"\npattern = \"a:*\"\nttl_below = \"5 parsecs\"\naction = \"delete\"\n",
        lines: Some(&[1, 4]),
    },
    Bad {
        what: "negative idle_above",
        toml: "[[rule]]\nname = \"a\"\npattern = \"a:*\"\nidle_above = \"-1s\"\naction = \"delete\"\n",
        lines: Some(&[1, 4]),
    },
    Bad {
        what: "duration as a number",
        toml: "[[rule]]\nname = \"a\"\npattern = \"a:*\"\nttl_above = 60\naction = \"delete\"\n",
        lines: Some(&[1, 4]),
    },
    Bad {
        what: "no_ttl with ttl_below",
        toml: "[[rule]]\nname = \"a\"\npattern = \"a:*\"\nno_ttl = true\nttl_below = \"60s\"\naction = \"delete\"\n",
        lines: Some(&[5]),
    },
    Bad {
        what: "no_ttl with ttl_above",
        toml: "[[rule]]\nname = \"a\"\npattern = \"a:*\"\nno_ttl = true\nttl_above = \"60s\"\naction = \"delete\"\n",
        lines: Some(&[5]),
    },
    Bad {
        what: "ttl_above above ttl_below",
        toml: "[[rule]]\nname = \"a\"\npattern = \"a:*\"\nttl_above = \"1h\"\nttl_below = \"10m\"\naction = \"delete\"\n",
        lines: Some(&[4]),
    },
    Bad {
        what: "ttl_above equal to ttl_below",
        toml: "[[rule]]\nname = \"a\"\npattern = \"a:*\"\nttl_above = \"1m\"\nttl_below = \"60s\"\naction = \"delete\"\n",
        lines: Some(&[4]),
    },
    Bad {
        what: "ttl_below of zero",
        toml: "[[rule]]\nname = \"a\"\npattern = \"a:*\"\nttl_below = \"0s\"\naction = \"delete\"\n",
        lines: Some(&[4]),
    },
    Bad {
        what: "a ttl longer than 100 years",
        toml: "[[rule]]\nname = \"a\"\npattern = \"a:*\"\naction = \"expire\"\nttl = \"1000000000y\"\n",
        lines: Some(&[5]),
    },
    Bad {
        what: "a ttl_above longer than 100 years",
        toml: "[[rule]]\nname = \"a\"\npattern = \"a:*\"\nttl_above = \"101y\"\naction = \"delete\"\n",
        lines: Some(&[4]),
    },
    Bad {
        what: "an idle_above longer than 100 years",
        toml: "[[rule]]\nname = \"a\"\npattern = \"a:*\"\nidle_above = \"36600d\"\naction = \"delete\"\n",
        lines: Some(&[4]),
    },
    Bad {
        what: "a sub-millisecond ttl_below",
        toml: "[[rule]]\nname = \"a\"\npattern = \"a:*\"\nttl_below = \"500us\"\naction = \"delete\"\n",
        lines: Some(&[4]),
    },
    Bad {
        what: "a ttl with a fraction of a millisecond",
        toml: "[[rule]]\nname = \"a\"\npattern = \"a:*\"\naction = \"expire\"\nttl = \"1s 500us\"\n",
        lines: Some(&[5]),
    },
    Bad {
        what: "contradiction in the second rule",
        toml: "[[rule]]\nname = \"a\"\npattern = \"a:*\"\naction = \"delete\"\n\n\
               [[rule]]\nname = \"b\"\npattern = \"b:*\"\nttl_above = \"1h\"\n\
               ttl_below = \"1m\"\naction = \"delete\"\n",
        lines: Some(&[9]),
    },
    Bad {
        what: "second rule bad, first good",
        toml: "[[rule]]\nname = \"a\"\npattern = \"a:*\"\naction = \"delete\"\n\n\
               [[rule]]\nname = \"b\"\npattern = \"b:*\"\ntype = \"blob\"\naction = \"delete\"\n",
        lines: Some(&[6, 9]),
    },
];

/// The one stderr line names `path:LINE` with LINE among the allowed ones.
#[track_caller]
fn assert_names_file_and_line(out: &Outcome, path: &Path, bad: &Bad) {
    let line = out.one_line_stderr();
    let p = path.display().to_string();
    assert!(
        line.contains(&p),
        "[{}] message does not name the file {p}: {line:?}",
        bad.what
    );
    if let Some(allowed) = bad.lines {
        let ok = allowed
            .iter()
            .any(|n| line.contains(&format!("{p}:{n}:")) || line.contains(&format!("{p}:{n} ")));
        assert!(
            ok,
            "[{}] message does not name {p}:<line> with line in {allowed:?}: {line:?}",
            bad.what
        );
    }
}

#[test]
fn check_refuses_every_kind_of_bad_rules_file_with_exit_2_and_file_line() {
    assert_every_bad_file_refused(|path| janitor().args(["check", "--rules"]).arg(path));
}

#[test]
fn run_refuses_bad_rules_with_exit_2_before_connecting() {
    // Nothing listens on the URL: a connection attempt would give exit 1.
    let url = dead_url();
    assert_every_bad_file_refused(|path| {
        janitor().args(["run", "--url", &url, "--rules"]).arg(path)
    });
}

/// Runs `command` on each file of [`BAD`] and checks that every one is
/// refused with exit 2 and a message naming the file and line; reports all
/// the files that were not, at once.
fn assert_every_bad_file_refused(command: impl Fn(&Path) -> Janitor) {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, bad) in BAD.iter().enumerate() {
        let path = write_file(dir.path(), &format!("bad-{i}.toml"), bad.toml);
        let out = command(&path).run();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            out.assert_code(2);
            assert_names_file_and_line(&out, &path, bad);
        }));
        if result.is_err() {
            failures.push(format!("{}: {}", bad.what, out.dump()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad files not refused as specified:\n{}",
        failures.len(),
        BAD.len(),
        failures.join("\n\n")
    );
}

/// Files that are not rules files: each refused with exit 2 and a message
/// naming the path and what is wrong, before anything else happens.
#[test]
fn files_that_are_not_text_or_too_large_are_refused_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let rule = "[[rule]]\nname = \"a\"\npattern = \"a:*\"\naction = \"delete\"\n";
    let mut big = rule.as_bytes().to_vec();
    big.resize(1024 * 1024 + 1, b'\n');
    let mut latin1 = rule.as_bytes().to_vec();
    latin1.extend(b"# caf\xe9\n");
    let mut binary = rule.as_bytes().to_vec();
    binary.extend(b"\x7fELF\x00\x01");
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("big.toml", big, "larger than 1024 KiB"),
        ("latin1.toml", latin1, "line 5: not UTF-8"),
        ("binary.toml", binary, "line 5: a NUL byte"),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        assert_rules_file_refused(&path, expected);
    }
    // The limit itself is allowed.
    let mut fits = rule.as_bytes().to_vec();
    fits.resize(1024 * 1024, b'\n');
    let path = dir.path().join("fits.toml");
    std::fs::write(&path, fits).unwrap();
    janitor()
        .arg("check")
        .arg("--rules")
        .arg(&path)
        .run()
        .assert_code(0);
    // A directory, and a device that never ends, are refused too.
    for (path, expected) in [
        (dir.path(), "is a directory"),
        (std::path::Path::new("/dev/zero"), "larger than"),
    ] {
        let out = janitor().args(["check", "--rules"]).arg(path).run();
        out.assert_code(2);
        assert!(out.one_line_stderr().contains(expected), "{}", out.dump());
    }
}

#[test]
fn the_longest_ttl_allowed_is_set_and_compared_exactly() {
    // 100 years: PEXPIRE takes it (the server adds its clock to it), and
    // PTTL values compare with it in Lua without rounding.
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_all(
        &mut con,
        &[(b"a:new", "string", None), (b"b:old", "string", Some(3600))],
    );
    let out = run_with_rules(
        &server,
        "[[rule]]\nname = \"forever\"\npattern = \"a:*\"\nno_ttl = true\naction = \"expire\"\nttl = \"100y\"\n\
         [[rule]]\nname = \"never\"\npattern = \"b:*\"\nttl_above = \"100y\"\naction = \"delete\"\n",
    );
    out.assert_code(0);
    assert_eq!(rule_keys(&out.report(), "forever"), 1, "{}", out.dump());
    let hundred_years_ms: i64 = 100 * 31_557_600 * 1000;
    let pttl: i64 = redis::cmd("PTTL").arg("a:new").query(&mut con).unwrap();
    assert!(
        (hundred_years_ms - 60_000..=hundred_years_ms).contains(&pttl),
        "PTTL {pttl}"
    );
    assert_keyspace(
        &mut con,
        &[
            (b"a:new", "string", Ttl::About(100 * 31_557_600)),
            (b"b:old", "string", Ttl::About(3600)),
        ],
    );
}

#[test]
fn a_rule_holding_the_templates_markers_runs_as_check_says() {
    // `check` accepts what `run` accepts: it compiles every script variant.
    let text = "[[rule]]\nname = \"-- compiled: setup\"\npattern = \"x-- compiled: decide*\"\naction = \"delete\"\n";
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_all(
        &mut con,
        &[
            (b"x-- compiled: decide 1", "string", None),
            (b"x", "string", None),
        ],
    );
    let path = write_rules(server.dir(), text);
    janitor()
        .args(["check", "--rules"])
        .arg(&path)
        .run()
        .assert_code(0);
    janitor()
        .args(["scripts", "--rules"])
        .arg(&path)
        .run()
        .assert_code(0);
    let out = run_with_rules(&server, text);
    out.assert_code(0);
    assert_keyspace(&mut con, &[(b"x", "string", Ttl::Persistent)]);
}

#[test]
fn a_missing_rules_file_is_exit_2_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    assert_rules_file_refused(
        &dir.path().join("does-not-exist.toml"),
        "cannot read the rules file",
    );
}

/// `check` and `run` with the rules file `path` both exit 2, before any
/// connection, with one line naming the path and holding `expected`.
fn assert_rules_file_refused(path: &std::path::Path, expected: &str) {
    for sub in ["check", "run"] {
        let out = janitor()
            .args([sub, "--rules"])
            .arg(path)
            .env("REDIS_URL", dead_url())
            .run();
        out.assert_code(2);
        let line = out.one_line_stderr();
        assert!(
            line.contains(&path.display().to_string()) && line.contains(expected),
            "{sub} {}: {line:?}",
            path.display()
        );
    }
}

#[test]
fn run_with_bad_rules_touches_nothing() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_all(
        &mut con,
        &[
            (b"temp:1", "string", None),
            (b"cache:1", "string", None),
            (b"a:1", "string", None),
        ],
    );
    let digest_before = digest(&mut con);
    let conns = total_connections(&mut con);
    // Valid first rule that would delete a:1, invalid second rule.
    let path = write_rules(
        server.dir(),
        "[[rule]]\nname = \"a\"\npattern = \"a:*\"\naction = \"delete\"\n\n\
         [[rule]]\nname = \"b\"\npattern = \"b:*\"\naction = \"expire\"\n",
    );
    let out = run_json(&server.url()).arg("--rules").arg(&path).run();
    out.assert_code(2);
    assert_eq!(
        digest(&mut con),
        digest_before,
        "bad rules run changed data"
    );
    assert_eq!(
        total_connections(&mut con),
        conns,
        "a run with a bad rules file connected to Redis"
    );
    // Same through JANITOR_RULES.
    let out = janitor()
        .args(["run", "--url", &server.url()])
        .env("JANITOR_RULES", &path)
        .run();
    out.assert_code(2);
    assert_eq!(digest(&mut con), digest_before);
    assert_eq!(total_connections(&mut con), conns);
}

/// A rules file whose second rule, `capped`, has `max_keys = VALUE` on
/// line 10.
fn with_max_keys(value: &str) -> String {
    format!(
        "[[rule]]\nname = \"a\"\npattern = \"a:*\"\naction = \"delete\"\n\n\
         [[rule]]\nname = \"capped\"\npattern = \"b:*\"\naction = \"delete\"\nmax_keys = {value}\n"
    )
}

#[test]
fn max_keys_takes_any_whole_number_from_1_and_check_prints_it() {
    let dir = tempfile::tempdir().unwrap();
    // The largest is TOML's largest integer.
    for value in ["1", "100", "1_000", "9223372036854775807"] {
        let path = write_rules(dir.path(), &with_max_keys(value));
        let out = janitor().args(["check", "--rules"]).arg(&path).run();
        out.assert_code(0);
        let printed = format!("max_keys = {}", value.replace('_', ""));
        assert_eq!(
            out.stdout
                .lines()
                .filter(|l| l.starts_with("max_keys"))
                .collect::<Vec<_>>(),
            [printed.as_str()],
            "{}",
            out.dump()
        );
    }
}

/// `check` and `run` (before connecting) refuse the rules file with
/// `max_keys = VALUE` for each of `values`: exit 2 and one line naming the
/// file, line 10 and the rule. Reports every value that was not, at once.
fn assert_max_keys_refused(values: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let url = dead_url();
    let mut failures = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let path = write_file(
            dir.path(),
            &format!("max-keys-{i}.toml"),
            &with_max_keys(value),
        );
        let p = path.display().to_string();
        for sub in ["check", "run"] {
            let out = janitor()
                .args([sub, "--rules"])
                .arg(&path)
                .env("REDIS_URL", &url)
                .run();
            let lines = out.stderr_lines();
            let ok = out.code == 2
                && lines.len() == 1
                && (lines[0].contains(&format!("{p}:10:"))
                    || lines[0].contains(&format!("{p}:10 ")))
                && lines[0].contains("\"capped\"");
            if !ok {
                failures.push(format!("max_keys = {value}, {sub}: {}", out.dump()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} refused without exit 2 and a line naming the file, line 10 and rule \"capped\":\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn max_keys_below_1_is_refused_naming_the_file_line_and_rule() {
    assert_max_keys_refused(&["0", "-1", "-9223372036854775808"]);
}

#[test]
fn max_keys_of_another_type_is_refused_naming_the_file_line_and_rule() {
    assert_max_keys_refused(&["1.5", "1e3", "\"100\"", "true", "[100]"]);
}

#[test]
fn max_keys_beyond_toml_integers_is_refused_by_the_toml_parser_naming_the_file_and_line() {
    // TOML itself has no integer above 2^63 - 1: the parser refuses the
    // file before any rule is read, so its message cannot name the rule.
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(
        dir.path(),
        "huge.toml",
        &with_max_keys("9223372036854775808"),
    );
    let out = janitor().args(["check", "--rules"]).arg(&path).run();
    out.assert_code(2);
    let lines = out.stderr_lines();
    assert_eq!(lines.len(), 1, "{}", out.dump());
    assert!(
        lines[0].contains(&format!("{}:10:", path.display())),
        "{}",
        out.dump()
    );
}
