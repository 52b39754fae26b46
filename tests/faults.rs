//! Failures and races: an unreachable or silent server, wrong and right
//! passwords (never echoed), the server dying mid-pass, SCRIPT FLUSH racing
//! the pass, keys vanishing or expiring under it, LFU servers with an idle
//! rule, SIGTERM/SIGINT mid-pass (the checkpoint saved, the next run resuming
//! from it), and keys no rule takes staying untouched under concurrent
//! writes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

const PASSWORD: &str = "s3cret-Right-pw-71";

/// A failed run: exit 1, a partial report with `complete:false` and a
/// one-line `error`, and the cause on stderr.
#[track_caller]
fn assert_runtime_failure(out: &Outcome) -> serde_json::Value {
    out.assert_code(1);
    let report = out.report();
    assert_eq!(report["complete"], false, "{report:#}");
    assert!(
        report["error"]
            .as_str()
            .is_some_and(|e| !e.trim().is_empty()),
        "report.error should say why: {report:#}"
    );
    assert!(
        !out.stderr_lines().is_empty(),
        "no cause on stderr\n{}",
        out.dump()
    );
    report
}

fn lower_output(out: &Outcome) -> String {
    format!("{}\n{}", out.stdout, out.stderr).to_lowercase()
}

#[test]
fn unreachable_redis_exits_1_with_a_partial_report() {
    let url = dead_url();
    let out = run_json(&url).run();
    let report = assert_runtime_failure(&out);
    // The report names the server it could not reach.
    assert_eq!(
        report["servers"][0]["address"],
        url.trim_start_matches("redis://"),
        "{report:#}"
    );
    let text = lower_output(&out);
    assert!(
        text.contains("connect") || text.contains("refused"),
        "the message should say the connection failed\n{}",
        out.dump()
    );
    assert_eq!(field(&report, "keys_scanned"), 0, "{report:#}");
    assert!(report["stopped_by"].is_null(), "{report:#}");
    // The key mode asked for, even of a server never reached.
    let asked = if declared_mode() {
        "declared"
    } else {
        "server"
    };
    assert_eq!(report["servers"][0]["key_mode"], asked, "{report:#}");
}

#[test]
fn a_server_that_never_answers_fails_within_the_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    listener.set_nonblocking(true).unwrap();
    let holder = thread::spawn(move || {
        let mut held = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
            if let Ok((s, _)) = listener.accept() {
                held.push(s);
            }
            thread::sleep(Duration::from_millis(5));
        }
    });
    let started = Instant::now();
    let out = run_json(&format!("redis://127.0.0.1:{port}"))
        .args(["--timeout", "1s"])
        .timeout(Duration::from_secs(20))
        .run();
    stop.store(true, Ordering::Relaxed);
    holder.join().unwrap();
    assert_runtime_failure(&out);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?} with --timeout 1s",
        started.elapsed()
    );
}

#[test]
fn wrong_password_exits_1_mentions_authentication_and_never_echoes_it() {
    let server = RedisServer::start_with(&["--requirepass", PASSWORD]);
    let wrong = "Wrong-pw-9923";
    let pw_file = write_file(server.dir(), "pw", wrong);
    let out = run_json(&server.url())
        .arg("--password-file")
        .arg(&pw_file)
        .env("RUST_LOG", "debug")
        .run();
    assert_runtime_failure(&out);
    assert!(
        lower_output(&out).contains("auth"),
        "the message should mention authentication\n{}",
        out.dump()
    );
    for secret in [wrong, PASSWORD] {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "a password ({secret}) appears in the output\n{}",
            out.dump()
        );
    }
}

#[test]
fn wrong_password_in_the_url_is_never_echoed() {
    let server = RedisServer::start_with(&["--requirepass", PASSWORD]);
    let wrong = "Wrong-url-pw-5521";
    let url = format!("redis://:{wrong}@127.0.0.1:{}", server.port());
    let out = run_json(&url).env("RUST_LOG", "debug").run();
    assert_runtime_failure(&out);
    assert!(lower_output(&out).contains("auth"), "{}", out.dump());
    assert!(
        !out.stdout.contains(wrong) && !out.stderr.contains(wrong),
        "the URL's password appears in the output\n{}",
        out.dump()
    );
}

#[test]
fn no_password_on_a_protected_server_exits_1_mentioning_authentication() {
    let server = RedisServer::start_with(&["--requirepass", PASSWORD]);
    let out = run_json(&server.url()).run();
    assert_runtime_failure(&out);
    assert!(lower_output(&out).contains("auth"), "{}", out.dump());
}

fn seed_protected(server: &RedisServer) -> redis::Connection {
    let mut con = server.conn_with_password(PASSWORD);
    seed_all(
        &mut con,
        &[
            (b"temp:1", "string", None),
            (b"cache:1", "hash", None),
            (b"keep", "string", None),
        ],
    );
    con
}

#[track_caller]
fn assert_protected_cleaned(con: &mut redis::Connection, out: &Outcome) {
    out.assert_code(0);
    out.report();
    assert!(
        !out.stdout.contains(PASSWORD) && !out.stderr.contains(PASSWORD),
        "the password appears in the output\n{}",
        out.dump()
    );
    assert_keyspace(
        con,
        &[
            (b"cache:1", "hash", Ttl::About(3600)),
            (b"keep", "string", Ttl::Persistent),
        ],
    );
}

#[test]
fn password_file_with_the_right_password_works_and_is_never_echoed() {
    let server = RedisServer::start_with(&["--requirepass", PASSWORD]);
    let mut con = seed_protected(&server);
    let pw_file = write_file(server.dir(), "pw", PASSWORD);
    let out = run_json(&server.url())
        .arg("--password-file")
        .arg(&pw_file)
        .env("RUST_LOG", "debug")
        .run();
    assert_protected_cleaned(&mut con, &out);
}

#[test]
fn a_comma_in_the_urls_password_is_part_of_it_and_never_echoed() {
    let (head, tail) = ("Head-pw-48", "Tail-pw-48");
    let password = format!("{head},{tail}");
    let server = RedisServer::start_with(&["--requirepass", &password]);
    let mut con = server.conn_with_password(&password);
    seed_all(
        &mut con,
        &[(b"cache:1", "hash", None), (b"keep", "string", None)],
    );
    let url = format!("redis://:{password}@127.0.0.1:{}", server.port());
    let out = run_json(&url).env("RUST_LOG", "debug").run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(
        report["servers"][0]["address"],
        format!("127.0.0.1:{}", server.port()),
        "{report:#}"
    );
    for part in [head, tail] {
        assert!(
            !out.stdout.contains(part) && !out.stderr.contains(part),
            "part of the password ({part}) appears in the output\n{}",
            out.dump()
        );
    }
    assert_keyspace(
        &mut con,
        &[
            (b"cache:1", "hash", Ttl::About(3600)),
            (b"keep", "string", Ttl::Persistent),
        ],
    );
}

#[test]
fn password_file_overrides_the_password_in_the_url() {
    let server = RedisServer::start_with(&["--requirepass", PASSWORD]);
    let mut con = seed_protected(&server);
    let pw_file = write_file(server.dir(), "pw", PASSWORD);
    let url = format!("redis://:not-this-one@127.0.0.1:{}", server.port());
    let out = run_json(&url).arg("--password-file").arg(&pw_file).run();
    assert_protected_cleaned(&mut con, &out);
}

#[test]
fn password_file_can_come_from_the_environment() {
    let server = RedisServer::start_with(&["--requirepass", PASSWORD]);
    let mut con = seed_protected(&server);
    let pw_file = write_file(server.dir(), "pw", PASSWORD);
    let out = run_json(&server.url())
        .env("REDIS_PASSWORD_FILE", &pw_file)
        .run();
    assert_protected_cleaned(&mut con, &out);
}

#[test]
fn password_file_with_a_trailing_newline_is_trimmed() {
    // `echo pw > file` and most secret mounts end the file with a newline.
    let server = RedisServer::start_with(&["--requirepass", PASSWORD]);
    let mut con = seed_protected(&server);
    let pw_file = write_file(server.dir(), "pw", &format!("{PASSWORD}\n"));
    let out = run_json(&server.url())
        .arg("--password-file")
        .arg(&pw_file)
        .run();
    assert_protected_cleaned(&mut con, &out);
}

/// Runs the job over 200 000 keys with `args`, kills the server with
/// `kill -9` once the pass began, and returns how the job ended.
fn killed_mid_pass(args: &[&str]) -> Outcome {
    let mut server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "cache", 200_000);
    let mut running = run_json(&server.url())
        .args(["--batch-size", "10"])
        .args(args)
        .start();
    wait_until(Duration::from_secs(30), "the first script call", || {
        running.exited() || script_calls(&mut con) >= 1
    });
    assert!(
        !running.exited(),
        "the pass ended before the server was killed"
    );
    drop(con);
    server.kill9();
    running.wait()
}

#[test]
fn server_killed_mid_pass_exits_1_with_a_partial_report() {
    // Two retries (about 0.3 s) instead of the default ten (half a minute).
    let out = killed_mid_pass(&["--retries", "2"]);
    let report = assert_runtime_failure(&out);
    assert!(report["stopped_by"].is_null(), "{report:#}");
    assert!(
        rule_keys(&report, "cache-missing-ttl") < 200_000,
        "{report:#}"
    );
    // A lost server may come back: the run fails only once its retries are
    // spent, each one warned about.
    let retries = report["servers"][0]["retries"].as_u64().unwrap();
    assert_eq!(retries, 2, "{report:#}");
    let warned = out
        .stderr_lines()
        .iter()
        .filter(|l| l.contains("a transient fault; the node's work is retried"))
        .count();
    assert_eq!(warned as u64, retries, "{}", out.dump());
}

#[test]
fn max_runtime_reached_while_retrying_a_lost_server_is_a_failure_not_a_stop() {
    let out = killed_mid_pass(&["--retries", "50", "--max-runtime", "1s"]);
    // The fault, not the clock, ended the node's work: exit 1, with the cause.
    let report = assert_runtime_failure(&out);
    assert!(report["stopped_by"].is_null(), "{report:#}");
    assert!(
        report["servers"][0]["retries"].as_u64().unwrap() >= 1,
        "{report:#}"
    );
}

/// 1 500 `cache:` (expired to 1h), 1 500 `temp:` (deleted), 500 `keep:`.
fn seed_for_flush(con: &mut redis::Connection) {
    populate(con, "cache", 1_500);
    populate(con, "temp", 1_500);
    populate(con, "keep", 500);
}

#[track_caller]
fn assert_flush_pass_result(con: &mut redis::Connection, report: &serde_json::Value) {
    assert_eq!(report["complete"], true, "{report:#}");
    // The job sends the script's text only after a NOSCRIPT reply, whatever
    // the call (taking, renewing or giving back the lease, a save, a clean
    // call): each is one reload. Its one other EVAL is the permission check
    // before the pass (`EVAL "return 0" 0`).
    assert_eq!(report["servers"][0]["retries"], 0, "{report:#}");
    assert_eq!(
        field(report, "script_reloads"),
        calls_of(con, "eval") + calls_of(con, "eval_ro") - 1,
        "script_reloads against the EVALs the server ran, less the permission check's: {report:#}"
    );
    assert_eq!(
        rule_counts(report),
        vec![
            ("cache-missing-ttl".into(), "expire".into(), 1_500),
            ("cache-expiring-soon".into(), "delete".into(), 0),
            ("temp".into(), "delete".into(), 1_500),
        ],
        "{report:#}"
    );
    // Each cache key got a TTL of 1h during the pass: what is left of it is
    // at most 1h, and no less than 1h minus the pass and a margin.
    let pass_ms = (report["duration_seconds"].as_f64().unwrap() * 1000.0) as i64;
    let lowest = 3_600_000 - pass_ms - TTL_TOLERANCE_MS;
    let after = keyspace(con);
    let bad: Vec<String> = after
        .iter()
        .filter(|(k, s)| {
            if k.starts_with(b"cache:") {
                !(lowest..=3_600_000).contains(&s.pttl)
            } else {
                !k.starts_with(b"keep:") || s.pttl != -1
            }
        })
        .map(|(k, s)| format!("{} {s:?}", show(k)))
        .collect();
    assert!(
        bad.is_empty(),
        "{} wrong keys after the pass, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
    assert_eq!(after.len(), 2_000);
}

#[test]
fn script_flushed_mid_pass_is_reloaded_and_the_pass_completes() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_for_flush(&mut con);
    let mut running = run_json(&server.url())
        .args(["--batch-size", "1"])
        .args(FULL_SPEED)
        .start();
    // Flush the script cache five times, each after 50 more script calls, so
    // every flush is followed by batches that must reload it.
    let mut flushes = 0u64;
    while flushes < 5 {
        let target = script_calls(&mut con) + 50;
        wait_until(Duration::from_secs(30), "50 more script calls", || {
            running.exited() || script_calls(&mut con) >= target
        });
        if running.exited() {
            break;
        }
        redis::cmd("SCRIPT").arg("FLUSH").exec(&mut con).unwrap();
        flushes += 1;
    }
    let out = running.wait();
    out.assert_code(0);
    let report = out.report();
    assert!(flushes >= 1, "the pass ended before the first flush");
    let reloads = field(&report, "script_reloads");
    assert!(
        reloads >= 1,
        "{flushes} flushes, script_reloads {reloads}: {report:#}"
    );
    assert_flush_pass_result(&mut con, &report);
}

#[test]
fn script_flush_looping_throughout_the_pass_is_survived() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_for_flush(&mut con);

    let stop = Arc::new(AtomicBool::new(false));
    let flushes = Arc::new(AtomicU64::new(0));
    let flusher = {
        let stop = Arc::clone(&stop);
        let flushes = Arc::clone(&flushes);
        let mut fcon = server.conn();
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(50);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                redis::cmd("SCRIPT").arg("FLUSH").exec(&mut fcon).unwrap();
                flushes.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // The flusher must be running before the job starts, or a loaded
    // machine could let the whole pass slip in before its first flush.
    wait_until(Duration::from_secs(10), "the first SCRIPT FLUSH", || {
        flushes.load(Ordering::Relaxed) > 0
    });
    let out = run_json(&server.url())
        .args(["--batch-size", "1"])
        .args(FULL_SPEED)
        .run();
    stop.store(true, Ordering::Relaxed);
    flusher.join().unwrap();

    out.assert_code(0);
    let report = out.report();
    assert!(
        field(&report, "script_reloads") >= 1,
        "SCRIPT FLUSH ran {} times during the pass but script_reloads is 0: {report:#}",
        flushes.load(Ordering::Relaxed)
    );
    assert_flush_pass_result(&mut con, &report);
}

#[test]
fn keys_deleted_or_expiring_during_the_pass_are_accounted_for() {
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "cache", 5_000);
    populate(&mut con, "temp", 5_000);
    populate(&mut con, "keep", 2_000);
    // Keys that expire by themselves while the pass runs.
    let mut pipe = redis::pipe();
    for i in 0..2_000u64 {
        pipe.cmd("SET")
            .arg(format!("cache:px:{i}"))
            .arg("v")
            .arg("PX")
            .arg(1 + i)
            .ignore();
    }
    pipe.exec(&mut con).unwrap();

    let running = run_json(&server.url())
        .args(["--batch-size", "10"])
        .args(FULL_SPEED)
        .start();
    // A concurrent client unlinks half the target keys.
    let mut dcon = server.conn();
    for chunk in (0..5_000u64).collect::<Vec<_>>().chunks(50) {
        let mut pipe = redis::pipe();
        for i in chunk {
            let key = if i % 2 == 0 {
                format!("cache:{i}")
            } else {
                format!("temp:{i}")
            };
            pipe.cmd("UNLINK").arg(key).ignore();
        }
        pipe.exec(&mut dcon).unwrap();
    }
    let out = running.wait();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["complete"], true, "{report:#}");
    assert_matched_accounted(&report);
    assert!(rule_keys(&report, "temp") <= 5_000, "{report:#}");

    let after = keyspace(&mut con);
    let mut bad = Vec::new();
    let mut cache_left = 0;
    for (k, s) in &after {
        let name = String::from_utf8_lossy(k);
        let ok = if let Some(n) = name.strip_prefix("cache:") {
            cache_left += 1;
            n.parse::<u64>().is_ok_and(|n| n % 2 == 1)
                && (s.pttl - 3_600_000).abs() <= TTL_TOLERANCE_MS
        } else {
            name.starts_with("keep:") && s.pttl == -1
        };
        if !ok {
            bad.push(format!("{} {s:?}", show(k)));
        }
    }
    assert!(
        bad.is_empty(),
        "{} wrong keys, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
    assert_eq!(cache_left, 2_500);
    assert_eq!(after.len(), 2_500 + 2_000);
}

#[test]
fn an_idle_rule_on_an_lfu_server_fails_before_changing_anything() {
    for policy in ["allkeys-lfu", "volatile-lfu"] {
        let server = RedisServer::start_with(&["--maxmemory-policy", policy]);
        let mut con = server.conn();
        seed_all(
            &mut con,
            &[
                (b"temp:1", "string", None),
                (b"old:1", "string", None),
                (b"cache:1", "string", None),
            ],
        );
        let before = digest(&mut con);
        let out = run_with_rules(
            &server,
            "[[rule]]\nname = \"temp\"\npattern = \"temp:*\"\naction = \"delete\"\n\n\
             [[rule]]\nname = \"stale\"\npattern = \"old:*\"\nidle_above = \"1h\"\naction = \"delete\"\n",
        );
        assert_runtime_failure(&out);
        // The job refuses before its first call and names the rule and the
        // policy (not Redis's own error from the script).
        let line = out.one_line_stderr();
        assert!(
            line.contains("rule \"stale\" uses idle_above") && line.contains(policy),
            "[{policy}] the message should name the rule and the LFU policy\n{}",
            out.dump()
        );
        assert_eq!(
            script_calls(&mut con),
            0,
            "[{policy}] the script was called"
        );
        assert_eq!(digest(&mut con), before, "[{policy}] data changed");
    }
}

#[test]
fn rules_without_idle_work_on_an_lfu_server() {
    let server = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lfu"]);
    let mut con = server.conn();
    seed_all(
        &mut con,
        &[(b"temp:1", "string", None), (b"cache:1", "string", None)],
    );
    let out = run_json(&server.url()).run();
    out.assert_code(0);
    assert_keyspace(&mut con, &[(b"cache:1", "string", Ttl::About(3600))]);
}

fn signal_mid_pass(signal: &str, code: i32, stopped_by: &str) {
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "cache", 200_000);
    let mut running = run_json(&server.url()).args(["--batch-size", "10"]).start();
    // Wait for the log to say the pass started, then for the first call of
    // the pass to have saved its checkpoint on the server (the script calls
    // before it, the ACL probe's and the lease's, save none): the signal
    // lands mid-pass.
    let started = running.wait_for_stderr(Duration::from_secs(30), |l| l.contains("pass started"));
    assert!(
        started.is_some(),
        "no \"pass started\" line on stderr\n{}",
        running.stderr_so_far()
    );
    wait_until(Duration::from_secs(30), "the first checkpoint", || {
        running.exited() || checkpoint(&mut con).is_some()
    });
    assert!(
        !running.exited(),
        "the pass ended before the signal could be sent\n{}",
        running.stderr_so_far()
    );
    // The job's connection shows in CLIENT LIST under its name.
    let clients = client_list(&mut con);
    assert!(
        clients.lines().any(|l| l.contains(" name=redis-janitor ")),
        "{clients}"
    );
    running.signal(signal);
    let out = running.wait();
    out.assert_code(code);
    let report = out.report();
    assert_eq!(report["complete"], false, "{report:#}");
    assert_eq!(report["stopped_by"], stopped_by, "{report:#}");
    let expired = rule_keys(&report, "cache-missing-ttl");
    assert!(expired < 200_000, "pass was not interrupted: {report:#}");
    // The call in flight was finished and counted: the server and the
    // report agree on how many keys got a TTL.
    assert_eq!(
        expires_count(&mut con, 0),
        expired,
        "keys with a TTL on the server != report's count: {report:#}"
    );
    assert_eq!(dbsize(&mut con), 200_000);
    assert_matched_accounted(&report);

    // That call also saved the checkpoint: where the pass stopped, with the
    // pass's totals as the report gives them.
    let saved = checkpoint(&mut con).expect("a checkpoint after the signal");
    let number = |f: &str| saved[f].parse::<u64>().unwrap();
    assert_ne!(number("cursor"), 0, "{saved:?}");
    assert_eq!(saved["done"], "0", "{saved:?}");
    assert_eq!(number("calls"), field(&report, "batches"), "{saved:?}");
    assert_eq!(
        number("scanned"),
        field(&report, "keys_scanned"),
        "{saved:?}"
    );
    assert_eq!(number("acted"), expired, "{saved:?}");
    // The next run resumes there and completes: every key got its TTL, each
    // once over the two runs.
    let next = run_json(&server.url()).args(FULL_SPEED).run();
    next.assert_code(0);
    let next_report = next.report();
    let pass = &next_report["servers"][0]["pass"];
    assert_eq!(pass["resumed"], true, "{next_report:#}");
    assert_eq!(
        pass["cursor"].as_u64(),
        Some(number("cursor")),
        "{next_report:#}"
    );
    assert_eq!(
        expired + rule_keys(&next_report, "cache-missing-ttl"),
        200_000,
        "{next_report:#}"
    );
    assert_eq!(expires_count(&mut con, 0), 200_000);
    assert_eq!(dbsize(&mut con), 200_000);
}

/// A run whose server stalls (`DEBUG SLEEP`) stops at a signal within
/// about its timeout: a call in flight has that long, and what follows it
/// (giving the lease back, reading the node for the report) a second each.
/// Each of those used to wait the whole timeout too: 3 s became 12 s.
#[test]
fn a_signal_to_a_run_whose_server_stalls_stops_within_about_the_timeout() {
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "cache", 200_000);
    let mut running = run_json(&server.url())
        .args(["--timeout", "3s", "--max-server-share", "0.2"])
        .start();
    wait_until(Duration::from_secs(30), "the first checkpoint", || {
        running.exited() || checkpoint(&mut con).is_some()
    });
    assert!(!running.exited(), "{}", running.stderr_so_far());
    // The server's main thread sleeps: sent on a socket of the test's own,
    // whose reply it does not wait for.
    let mut staller = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    std::io::Write::write_all(&mut staller, b"DEBUG SLEEP 60\r\n").unwrap();
    wait_until(Duration::from_secs(10), "the server stalls", || {
        !ping_raw(server.port())
    });
    let signalled = Instant::now();
    running.signal("TERM");
    let out = running.wait();
    let took = signalled.elapsed();
    out.assert_code(143);
    assert_eq!(out.report()["stopped_by"], "sigterm", "{}", out.dump());
    assert!(
        took < Duration::from_secs(7),
        "took {took:?}: {}",
        out.dump()
    );
}

/// A signal while the job looks for its nodes, at a server that accepts
/// connections and never answers, stops the run at once: exit 143 and a
/// report, not a connection failure (exit 1) once the timeout passed.
#[test]
fn a_signal_while_the_job_connects_stops_it_at_once() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&accepted);
    let holder = thread::spawn(move || {
        // Held open, never answered, until the test ends.
        let (socket, _) = listener.accept().unwrap();
        seen.store(true, Ordering::Relaxed);
        socket
    });
    let running = run_json(&format!("redis://127.0.0.1:{port}"))
        .args(["--timeout", "20s"])
        .start();
    wait_until(Duration::from_secs(10), "the job connects", || {
        accepted.load(Ordering::Relaxed)
    });
    let signalled = Instant::now();
    running.signal("TERM");
    let out = running.wait();
    let took = signalled.elapsed();
    drop(holder.join().unwrap());
    out.assert_code(143);
    let report = out.report();
    assert_eq!(report["stopped_by"], "sigterm", "{report:#}");
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}: {}",
        out.dump()
    );
}

/// --max-runtime running out while the job waits for a server that never
/// answers is no clean stop: the server is unreachable, exit 1, once the
/// timeout passed.
#[test]
fn max_runtime_reached_before_the_server_answers_is_a_failure() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = thread::spawn(move || listener.accept().map(|(socket, _)| socket));
    let started = Instant::now();
    let out = run_json(&format!("redis://127.0.0.1:{port}"))
        .args(["--timeout", "2s", "--max-runtime", "1s"])
        .run();
    let took = started.elapsed();
    drop(holder.join().unwrap());
    let report = assert_runtime_failure(&out);
    assert!(report["stopped_by"].is_null(), "{report:#}");
    assert!(
        took < Duration::from_secs(10),
        "took {took:?}: {}",
        out.dump()
    );
}

#[test]
fn sigterm_mid_pass_finishes_the_batch_and_exits_143_with_a_report() {
    signal_mid_pass("TERM", 143, "sigterm");
}

#[test]
fn sigint_mid_pass_finishes_the_batch_and_exits_130_with_a_report() {
    signal_mid_pass("INT", 130, "sigint");
}

/// DUMP payload and PTTL of every key in `keys`.
fn fingerprints(
    con: &mut redis::Connection,
    keys: &[Vec<u8>],
) -> BTreeMap<Vec<u8>, (Vec<u8>, i64)> {
    keys.iter()
        .map(|k| {
            let dump: Vec<u8> = redis::cmd("DUMP").arg(k).query(con).unwrap();
            let pttl: i64 = redis::cmd("PTTL").arg(k).query(con).unwrap();
            (k.clone(), (dump, pttl))
        })
        .collect()
}

#[test]
fn keys_no_rule_takes_are_never_modified_under_concurrent_writes() {
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "cache", 10_000);
    populate(&mut con, "temp", 10_000);
    // Guards: names close to the patterns, every type, with and without TTL.
    let kinds = ["string", "list", "set", "zset", "hash", "stream"];
    let mut guards = Vec::new();
    for i in 0..120usize {
        let prefix = ["cachex:", "Temp:", "cache", "tmp:", "user:", "cache_"][i % 6];
        let key = format!("{prefix}{i}").into_bytes();
        let ttl = [None, Some(7200), Some(30)][i % 3];
        seed(&mut con, &key, kinds[i % kinds.len()], ttl);
        guards.push(key);
    }
    let before = fingerprints(&mut con, &guards);

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let mut wcon = server.conn();
        thread::spawn(move || {
            let mut last: BTreeMap<String, u64> = BTreeMap::new();
            let deadline = Instant::now() + Duration::from_secs(40);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let user = format!("user:w:{}", n % 50);
                let mut pipe = redis::pipe();
                pipe.cmd("HSET").arg(&user).arg("f").arg(n).ignore();
                pipe.cmd("SET").arg(format!("cache:w:{n}")).arg(n).ignore();
                pipe.cmd("SET")
                    .arg(format!("temp:w:{n}"))
                    .arg(n)
                    .arg("EX")
                    .arg(30)
                    .ignore();
                pipe.cmd("DEL")
                    .arg(format!("cache:w:{}", n.saturating_sub(20)))
                    .ignore();
                pipe.exec(&mut wcon).unwrap();
                last.insert(user, n);
                n += 1;
            }
            last
        })
    };
    let out = run_json(&server.url())
        .args(["--batch-size", "5"])
        .args(FULL_SPEED)
        .run();
    stop.store(true, Ordering::Relaxed);
    let last = writer.join().unwrap();

    out.assert_code(0);
    let report = out.report();
    assert_matched_accounted(&report);

    let after = fingerprints(&mut con, &guards);
    let mut changed = Vec::new();
    for (k, (dump, pttl)) in &before {
        let (dump2, pttl2) = &after[k];
        let ttl_ok = if *pttl == -1 {
            *pttl2 == -1
        } else {
            *pttl2 > 0 && *pttl2 <= *pttl && pttl - pttl2 <= TTL_TOLERANCE_MS * 6
        };
        if dump != dump2 || !ttl_ok {
            changed.push(format!(
                "{}: pttl {pttl} -> {pttl2}, value changed: {}",
                show(k),
                dump != dump2
            ));
        }
    }
    assert!(
        changed.is_empty(),
        "untouched keys were modified: {changed:?}"
    );
    for (user, n) in last {
        let v: Option<u64> = redis::cmd("HGET")
            .arg(&user)
            .arg("f")
            .query(&mut con)
            .unwrap();
        let pttl: i64 = redis::cmd("PTTL").arg(&user).query(&mut con).unwrap();
        assert_eq!(v, Some(n), "{user} lost the writer's last value");
        assert_eq!(pttl, -1, "{user} got a TTL");
    }
}
