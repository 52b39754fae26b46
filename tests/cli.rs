//! The command line itself: `--help`, usage errors (exit 2 before any
//! connection), and `scripts`, whose SHA-1s must be the ones a real run loads
//! into Redis.

use crate::support::*;

#[test]
fn help_lists_the_subcommands() {
    let out = janitor().arg("--help").run();
    out.assert_code(0);
    for sub in ["run", "check", "scripts"] {
        assert!(
            out.stdout.contains(sub),
            "--help lacks {sub}\n{}",
            out.dump()
        );
    }
}

#[test]
fn run_help_lists_every_flag() {
    let out = janitor().args(["run", "--help"]).run();
    out.assert_code(0);
    for flag in [
        "--url",
        "--password-file",
        "--tls-ca-file",
        "--tls-cert-file",
        "--tls-key-file",
        "--tls-server-name",
        "--tls-insecure",
        "--rules",
        "--dry-run",
        "--batch-size",
        "--max-runtime",
        "--max-server-share",
        "--rate-limit",
        "--timeout",
        "--log-format",
        "--output",
    ] {
        assert!(
            out.stdout.contains(flag),
            "run --help lacks {flag}\n{}",
            out.dump()
        );
    }
}

#[test]
fn usage_errors_exit_2_without_connecting() {
    // Nothing listens here: had the binary tried to connect it would exit 1.
    let url = dead_url();
    let cases: &[&[&str]] = &[
        &["run", "--bogus"],
        &["frobnicate"],
        &[],
        &["run", "--batch-size", "abc"],
        &["run", "--batch-size", "0"],
        &["run", "--batch-size", "-5"],
        &["run", "--max-runtime", "forever"],
        &["run", "--timeout", "soon"],
        &["run", "--output", "yaml"],
        &["run", "--log-format", "xml"],
        &["run", "--max-server-share", "0"],
        // Pauses that would overflow the clock.
        &["run", "--max-server-share", "1e-30"],
        &["run", "--max-server-share", "1.5"],
        &["run", "--max-server-share", "half"],
        &["run", "--max-call-time", "0s"],
        &["run", "--timeout", "0s"],
        &["run", "--progress-interval", "0s"],
        &["run", "--max-runtime", "0s"],
        // Beyond what Redis takes as an expiry, or the clock can hold.
        &["run", "--lock-ttl", "500000000y"],
        &["run", "--resume-max-age", "101y"],
        &["run", "--max-runtime", "500000000y"],
        // Settings that would have no effect: a push's timeout without a
        // push, the Sentinels' credentials without Sentinels.
        &["run", "--pushgateway-timeout", "3s"],
        &["run", "--sentinel-username", "watcher"],
        // A call that outlasts its lease, or whose reply cannot come within
        // the timeout.
        &["run", "--max-call-time", "1s", "--lock-ttl", "2s"],
        &["run", "--max-call-time", "3s", "--timeout", "5s"],
    ];
    let mut failures = Vec::new();
    for args in cases {
        let out = janitor().args(*args).env("REDIS_URL", &url).run();
        if out.code != 2 {
            failures.push(format!("{args:?}: {}", out.dump()));
        }
    }
    // A dry run takes no lease: its calls may outlast --lock-ttl. It gets
    // as far as connecting (exit 1).
    let dry = [
        "run",
        "--dry-run",
        "--max-call-time",
        "1s",
        "--lock-ttl",
        "2s",
    ];
    let out = janitor().args(dry).env("REDIS_URL", &url).run();
    if out.code != 1 {
        failures.push(format!("{dry:?}: {}", out.dump()));
    }
    assert!(
        failures.is_empty(),
        "not the exit code expected:\n{}",
        failures.join("\n\n")
    );
}

#[test]
fn bad_values_in_env_vars_exit_2_without_connecting() {
    let url = dead_url();
    let cases = [
        ("JANITOR_BATCH_SIZE", "abc"),
        ("JANITOR_MAX_RUNTIME", "forever"),
        ("JANITOR_OUTPUT", "yaml"),
        ("JANITOR_LOG_FORMAT", "xml"),
        ("JANITOR_MAX_SERVER_SHARE", "-1"),
        ("JANITOR_PUSHGATEWAY_TIMEOUT", "3s"),
        ("REDIS_SENTINEL_USERNAME", "watcher"),
    ];
    let mut failures = Vec::new();
    for (k, v) in cases {
        let out = janitor().arg("run").env("REDIS_URL", &url).env(k, v).run();
        if out.code != 2 {
            failures.push(format!("{k}={v}: {}", out.dump()));
        }
    }
    assert!(
        failures.is_empty(),
        "not exit 2:\n{}",
        failures.join("\n\n")
    );
}

#[test]
fn on_off_settings_set_to_false_in_the_environment_are_off() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_all(
        &mut con,
        &[(b"temp:1", "string", None), (b"keep", "string", None)],
    );
    let out = run_json(&server.url())
        .env("JANITOR_FROM_REPLICAS", "false")
        .env("JANITOR_NO_LOCK", "false")
        .args(["--lock-ttl", "10s"])
        .run();
    out.assert_code(0);
    assert_keyspace(&mut con, &[(b"keep", "string", Ttl::Persistent)]);
    // Set to true, it still needs --dry-run.
    let out = run_json(&dead_url())
        .env("JANITOR_FROM_REPLICAS", "true")
        .run();
    out.assert_code(2);
    assert!(
        out.one_line_stderr().contains("--dry-run"),
        "{}",
        out.dump()
    );
}

#[test]
fn a_url_given_without_url_is_refused_without_its_password() {
    // A space in a password ends no URL: the credentials are the whole
    // quoted value's up to its last '@'.
    // Nor does a forgotten scheme.
    let urls = ["Pos-Secret-77", "Pos Secret 77"]
        .map(|password| format!("redis://janitor:{password}@127.0.0.1:1"));
    for url in urls
        .iter()
        .map(String::as_str)
        .chain(["janitor:Pos-Secret-77@127.0.0.1:1"])
    {
        let out = janitor().args(["run", url]).run();
        out.assert_code(2);
        assert!(out.stderr.contains("unexpected argument"), "{}", out.dump());
        assert!(!out.stderr.contains("Secret"), "{}", out.dump());
    }
}

#[test]
fn an_empty_url_or_redis_host_is_a_usage_error_not_the_default_server() {
    // Had an empty value meant "unset", these would reach 127.0.0.1:6379:
    // dry runs, so that such a regression still writes nothing there.
    let dry_run = || janitor().args(["run", "--dry-run", "--timeout", "1s"]);
    let dead = dead_url();
    let outs = [
        dry_run().args(["--url", ""]).run(),
        dry_run().args(["--url", " ", "--url", &dead]).run(),
        dry_run().env("REDIS_URL", "").run(),
        dry_run().env("REDIS_HOST", "").run(),
        dry_run().env("REDIS_URL", " ").env("REDIS_HOST", "").run(),
    ];
    for out in outs {
        out.assert_code(2);
        let line = out.one_line_stderr();
        assert!(line.contains("is empty"), "{}", out.dump());
    }
    // An empty REDIS_URL beside REDIS_HOST (a manifest that sets both)
    // leaves the server to REDIS_HOST, as when REDIS_URL is unset.
    let server = RedisServer::start();
    let out = dry_run()
        .args(["--output", "json"])
        .env("REDIS_URL", "")
        .env("REDIS_HOST", server.host_port())
        .run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(
        report["servers"][0]["address"],
        server.host_port(),
        "{report:#}"
    );
}

#[test]
fn a_url_given_where_a_file_is_expected_is_refused_without_its_password() {
    let url = "redis://janitor:Pos-Secret-77@127.0.0.1:1";
    for args in [
        vec!["check", "--rules", url],
        vec!["run", "--url", &dead_url(), "--password-file", url],
        vec!["--log-format", "json", "check", "--rules", url],
    ] {
        let out = janitor().args(&args).run();
        out.assert_code(2);
        assert!(out.stderr.contains("127.0.0.1:1"), "{}", out.dump());
        assert!(!out.stderr.contains("Secret"), "{}", out.dump());
    }
}

#[test]
fn a_value_the_arguments_refuse_is_one_json_line_in_the_json_log_format() {
    for (env, args) in [
        (Some("json"), vec!["run", "--max-keys", "0"]),
        (None, vec!["--log-format", "json", "run", "--max-keys", "0"]),
        (None, vec!["run", "--log-format=json", "--max-keys", "0"]),
    ] {
        let mut job = janitor().args(&args);
        if let Some(format) = env {
            job = job.env("JANITOR_LOG_FORMAT", format);
        }
        let out = job.run();
        out.assert_code(2);
        let line = out.one_line_stderr();
        let event: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {}", out.dump()));
        assert_eq!(event["level"], "ERROR", "{line}");
        assert_eq!(event["message"], "run failed", "{line}");
        let error = event["error"].as_str().unwrap_or_default();
        assert!(error.contains("--max-keys"), "{line}");
    }
    // The text format keeps clap's message, with its tip.
    let out = janitor().args(["run", "--max-keys", "0"]).run();
    out.assert_code(2);
    assert!(
        out.stderr.starts_with("error: invalid value '0'"),
        "{}",
        out.dump()
    );
}

#[test]
fn a_malformed_url_is_a_usage_error_that_says_why_and_shows_no_password() {
    let out = janitor().args(["run", "--url", "not a url"]).run();
    // A URL that cannot be parsed is bad usage, found before connecting.
    out.assert_code(2);
    for (url, shown, why) in [
        (
            "redis://u:Pw-Secret@h:65536",
            "'redis://***@h:65536'",
            "invalid port number",
        ),
        ("redis://h:0", "'redis://h:0'", "port 0"),
        ("redis://h:1/abc", "'redis://h:1/abc'", "database number"),
        (
            "redis://u:Pw-Secret@h:1/-1",
            "'redis://***@h:1/-1'",
            "below 0",
        ),
        (
            "http://u:Pw-Secret@h:1",
            "'http://***@h:1'",
            "not a Redis one",
        ),
        // Without "://", nothing of the value is shown: it may be a
        // password given in the URL's place, or hold one in a query.
        ("u:Pw-Secret@h:1", "not shown", "no scheme"),
        ("Pw-Secret", "not shown", "no scheme"),
        (
            "unix:/run/redis.sock?pass=Pw-Secret",
            "not shown",
            "scheme unix: must be followed by //",
        ),
        (
            "redis+unix:/r.sock?user=j&pass=Pw-Secret",
            "not shown",
            "scheme redis+unix: must be followed by //",
        ),
        (
            "redis:h?pass=Pw-Secret",
            "not shown",
            "scheme redis: must be followed by //",
        ),
        // The second host of a list, with the first's credentials.
        (
            "redis://u:Pw-Secret@h:1,h2:99999",
            "'redis://***@h2:99999'",
            "invalid port",
        ),
        (
            "redis+sentinel://u:Pw-Secret@h:1/m/x",
            "'redis+sentinel://***@h:1/m/x'",
            "no number",
        ),
        (
            "redis+sentinel://h:1/",
            "'redis+sentinel://h:1/'",
            "no service name",
        ),
    ] {
        let out = janitor().args(["run", "--url", url]).run();
        out.assert_code(2);
        let line = out.one_line_stderr();
        assert!(line.contains(shown) && line.contains(why), "{url}: {line}");
        assert!(!line.contains("Secret"), "{line}");
        // Nor in the JSON log a cluster ships.
        let out = janitor()
            .args(["--log-format", "json", "run", "--url", url])
            .run();
        out.assert_code(2);
        assert!(out.stderr.contains(why), "{}", out.dump());
        assert!(!out.stderr.contains("Secret"), "{}", out.dump());
    }
}

/// `(line, sha)` for every line of `scripts` output with a 40-hex token.
fn script_lines(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| {
            l.split(|c: char| !c.is_ascii_hexdigit())
                .find(|w| is_sha1(w))
                .map(|sha| (l.to_string(), sha.to_ascii_lowercase()))
        })
        .collect()
}

#[test]
fn scripts_lists_each_script_with_a_sha1_and_touches_no_redis() {
    let out = janitor().arg("scripts").env("REDIS_URL", dead_url()).run();
    out.assert_code(0);
    let lines = script_lines(&out.stdout);
    assert!(
        !lines.is_empty(),
        "no SHA-1 in `scripts` output\n{}",
        out.dump()
    );
    let non_empty = out.stdout.lines().filter(|l| !l.trim().is_empty()).count();
    assert_eq!(
        non_empty,
        lines.len(),
        "every line of `scripts` should be one script with its SHA\n{}",
        out.dump()
    );
}

#[test]
fn the_sha_from_scripts_and_the_report_is_loaded_after_a_run() {
    // The rules are compiled into the script: `scripts` lists the SHAs for
    // the rules it is given, and those are what a run with them loads.
    let server = RedisServer::start();
    let mut con = server.conn();
    seed(&mut con, b"temp:1", "string", None);
    let rules = write_rules(
        server.dir(),
        "[[rule]]\nname = \"temp\"\npattern = \"temp:*\"\naction = \"delete\"\n",
    );

    let listed = janitor().arg("scripts").arg("--rules").arg(&rules).run();
    listed.assert_code(0);
    let lines = script_lines(&listed.stdout);
    let builtin = script_lines(&janitor().arg("scripts").run().stdout);
    assert!(
        lines
            .iter()
            .all(|(_, sha)| builtin.iter().all(|(_, b)| b != sha)),
        "other rules, same SHAs:\n{}",
        listed.stdout
    );

    let out = run_json(&server.url()).arg("--rules").arg(&rules).run();
    out.assert_code(0);
    let report = out.report();
    let sha = report["script"]["sha"]
        .as_str()
        .unwrap()
        .to_ascii_lowercase();
    let name = report["script"]["name"].as_str().unwrap();
    let version = report["script"]["version"].as_str().unwrap();

    let (line, _) = lines.iter().find(|(_, s)| *s == sha).unwrap_or_else(|| {
        panic!(
            "report's script sha {sha} not listed by `scripts`:\n{}",
            listed.stdout
        )
    });
    assert!(
        line.contains(name) && line.contains(version),
        "`scripts` line for {sha} lacks name {name:?} / version {version:?}: {line:?}"
    );
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .query(&mut con)
        .unwrap();
    assert_eq!(
        exists,
        vec![1],
        "SCRIPT EXISTS {sha} is false after a run: the listed SHA is not what Redis computed"
    );
    assert_eq!(dbsize(&mut con), 0);
}

#[test]
fn output_that_cannot_be_written_is_exit_1_with_one_line_not_a_panic() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed(&mut con, b"temp:1", "string", None);
    let url = server.url();
    let cases: [&[&str]; 4] = [&["run", "--url", &url], &["check"], &["scripts"], &["acl"]];
    for args in cases {
        let out = janitor().args(args).run_into_full_disk();
        out.assert_code(1);
        let line = out.stderr_lines().last().cloned().unwrap_or_default();
        assert!(
            line.contains("cannot write to stdout") && !out.stderr.contains("panicked"),
            "{args:?}: {}",
            out.dump()
        );
    }
    // The run did its work before its report could not be printed.
    assert_eq!(dbsize(&mut con), 0);
}

#[test]
fn acl_prints_a_line_per_user_and_server_generation_and_touches_no_redis() {
    let out = janitor().arg("acl").env("REDIS_URL", dead_url()).run();
    out.assert_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 8, "{}", out.dump());
    for pair in lines.chunks(2) {
        assert!(pair[0].starts_with("# "), "{}", out.dump());
        assert!(pair[1].starts_with("ACL SETUSER janitor"), "{}", out.dump());
        assert!(pair[1].contains(" reset on >PASSWORD "), "{}", out.dump());
    }
}

#[test]
fn every_test_the_readmes_safety_section_names_exists() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = readme
        .split("\n## Safety\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("the README has a Safety section");
    // `module::test_name`, each quoted as code; `module::` alone names the
    // whole module.
    let named: Vec<&str> = section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|code| {
            code.contains("::")
                && code
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b':')
        })
        .collect();
    assert!(named.len() >= 15, "{named:?}");
    for name in named {
        let (module, test) = name.split_once("::").unwrap();
        let file = root.join(format!("tests/{module}.rs"));
        let source = std::fs::read_to_string(&file)
            .unwrap_or_else(|err| panic!("{name}: {}: {err}", file.display()));
        assert!(
            test.is_empty() || source.contains(&format!("fn {test}(")),
            "the README's Safety section names {name}, which tests/{module}.rs does not hold"
        );
    }
}
