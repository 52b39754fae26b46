//! The clean script itself, called through the library's own call protocol
//! against a real server: what one call does and reports, where it stops,
//! and the cases a whole pass cannot force on demand (an error half-way
//! through a call).

use std::time::Duration;

use redis_janitor::lease;
use redis_janitor::rules::Rules;
use redis_janitor::script::protocol::{Batch, Claim, Counts, Deadline, Op, Reply};
use redis_janitor::script::{Invoke, KeyMode, Layout, Mode, Script};

use crate::support::*;

const RULES: &str = r#"
[[rule]]
name = "idle-cache"
pattern = "cache:*"
idle_above = "100s"
action = "delete"

[[rule]]
name = "cache-missing-ttl"
pattern = "cache:*"
no_ttl = true
action = "expire"
ttl = "1h"

[[rule]]
name = "temp"
pattern = "temp:*"
action = "delete"
"#;

/// A call from `cursor` with a generous budget, listing every matched key.
fn batch(cursor: u64, max_keys: usize) -> Batch {
    Batch {
        cursor,
        step: max_keys.min(100),
        scan_budget: Duration::from_secs(1),
        max_keys,
        report_keys: true,
        cap: None,
        rule_caps: vec![None; RULES.matches("[[rule]]").count()],
        estimate_freed: false,
    }
}

/// What a call sends beside its batch without a lease or checkpoint: the
/// state keys for a writing variant, none for a dry run.
fn claim(mode: Mode) -> Claim {
    Claim {
        keys: (mode == Mode::Write).then(|| lease::state_keys(None)),
        token: String::new(),
        lease_ttl: Duration::from_secs(60),
    }
}

fn test_rules() -> Rules {
    Rules::parse("test rules", RULES).unwrap()
}

/// The clean script for `rules` on `con`'s server, standalone.
fn compiled(con: &mut redis::Connection, rules: &Rules, mode: Mode, key_mode: KeyMode) -> Script {
    Script::clean(rules, mode, dialect(con), Layout::Standalone, key_mode).unwrap()
}

/// Runs one call of the clean script compiled for `rules` and returns its
/// reply.
fn call_with(
    con: &mut redis::Connection,
    rules: &Rules,
    mode: Mode,
    batch: &Batch,
) -> redis::RedisResult<Reply> {
    let script = compiled(con, rules, mode, KeyMode::Server);
    let batch = Batch {
        rule_caps: vec![None; rules.rules.len()],
        estimate_freed: false,
        ..batch.clone()
    };
    claim(mode)
        .command(&script, Invoke::Text, Op::Clean(&batch, None))
        .query(con)
}

/// Runs one call of the clean script for the test rules.
fn call(con: &mut redis::Connection, mode: Mode, batch: &Batch) -> redis::RedisResult<Reply> {
    call_with(con, &test_rules(), mode, batch)
}

/// Calls the script for `rules` from cursor 0 until the cursor comes back,
/// and returns the counts of the whole pass.
fn pass_with(con: &mut redis::Connection, rules: &Rules, mode: Mode, max_keys: usize) -> Counts {
    let mut counts = Counts::new(rules);
    let mut cursor = 0;
    loop {
        let reply = call_with(con, rules, mode, &batch(cursor, max_keys)).unwrap();
        reply.tally(rules, &mut counts).unwrap();
        if reply.cursor == 0 {
            return counts;
        }
        cursor = reply.cursor;
    }
}

/// A pass of the test rules.
fn pass(con: &mut redis::Connection, mode: Mode, max_keys: usize) -> Counts {
    pass_with(con, &test_rules(), mode, max_keys)
}

fn seed_mixed(con: &mut redis::Connection) {
    seed_all(
        con,
        &[
            (b"cache:a", "string", None),
            (b"cache:b", "hash", Some(7200)),
            (b"temp:\xff\x00", "list", Some(7200)),
            (b"temp:b", "string", None),
            (b"other:a", "string", None),
        ],
    );
}

#[test]
fn a_lease_expires_by_itself_from_when_it_is_taken_and_each_writing_call_renews_it() {
    let server = RedisServer::start();
    let mut con = server.conn();
    let script = compiled(&mut con, &test_rules(), Mode::Write, KeyMode::Server);
    let claim = Claim {
        token: "7".repeat(32),
        ..claim(Mode::Write)
    };
    let lease = lease::state_keys(None).lease;
    let pttl =
        |con: &mut redis::Connection| -> i64 { redis::cmd("PTTL").arg(&lease).query(con).unwrap() };
    let since = |con: &mut redis::Connection| -> String {
        redis::cmd("HGET")
            .arg(&lease)
            .arg("since")
            .query(con)
            .unwrap()
    };
    let shorten = |con: &mut redis::Connection| {
        let _: () = redis::cmd("PEXPIRE")
            .arg(&lease)
            .arg(1_000)
            .query(con)
            .unwrap();
    };
    let acquire = |con: &mut redis::Connection| {
        let op = Op::Acquire {
            holder: "test (pid 1)",
        };
        let _: redis::Value = claim.command(&script, Invoke::Text, op).query(con).unwrap();
    };

    // A run that dies right after taking the lease blocks the node for
    // --lock-ttl at most, even before its first call.
    acquire(&mut con);
    assert!(
        (59_000..=60_000).contains(&pttl(&mut con)),
        "{}",
        pttl(&mut con)
    );
    // Taken again by the same run (a retry): renewed, still held since the
    // first time.
    shorten(&mut con);
    redis::cmd("HSET")
        .arg(&lease)
        .arg("since")
        .arg(1)
        .exec(&mut con)
        .unwrap();
    acquire(&mut con);
    assert!(pttl(&mut con) >= 59_000, "{}", pttl(&mut con));
    assert_eq!(since(&mut con), "1");
    // A writing call renews it.
    shorten(&mut con);
    let _: Reply = claim
        .command(&script, Invoke::Text, Op::Clean(&batch(0, 10), None))
        .query(&mut con)
        .unwrap();
    assert!(pttl(&mut con) >= 59_000, "{}", pttl(&mut con));
}

#[test]
fn one_call_cleans_what_its_scan_returns_and_reports_every_matched_key() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_mixed(&mut con);
    let reply = call(&mut con, Mode::Write, &batch(0, 10_000)).unwrap();
    assert_eq!(reply.cursor, 0, "{reply:?}");
    // The MATCH `[ct][ae][cm][hp][:e]*` keeps `other:a` out of the reply.
    assert_eq!(
        (
            reply.returned,
            reply.matched,
            reply.unchanged,
            reply.vanished
        ),
        (4, 4, 1, 0),
        "{reply:?}"
    );
    assert_eq!(reply.acted, [0, 1, 2]);
    assert!(reply.micros >= reply.scan_micros, "{reply:?}");
    let mut fates: Vec<(Vec<u8>, u8)> = reply.keys.into_iter().zip(reply.outcomes).collect();
    fates.sort();
    let expected: [(&[u8], u8); 4] = [
        (b"cache:a", 3),
        (b"cache:b", 1),
        (b"temp:\xff\x00", 131),
        (b"temp:b", 131),
    ];
    let mut expected: Vec<(Vec<u8>, u8)> = expected.iter().map(|(k, o)| (k.to_vec(), *o)).collect();
    expected.sort();
    assert_eq!(fates, expected);
    assert_keyspace(
        &mut con,
        &[
            (b"cache:a", "string", Ttl::About(3600)),
            (b"cache:b", "hash", Ttl::About(7200)),
            (b"other:a", "string", Ttl::Persistent),
        ],
    );
}

#[test]
fn a_call_looks_at_no_more_keys_than_allowed_and_the_next_goes_on_from_its_cursor() {
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "temp", 500);
    let first = call(&mut con, Mode::Write, &batch(0, 100)).unwrap();
    assert_eq!(first.looked_at, 100, "{first:?}");
    assert_ne!(first.cursor, 0, "{first:?}");
    assert!(
        dbsize(&mut con) >= 380,
        "one call deleted {} keys",
        500 - dbsize(&mut con)
    );
    let counts = pass(&mut con, Mode::Write, 100);
    assert!(counts.batches >= 4, "{counts:?}");
    assert_eq!(dbsize(&mut con), 0);
}

#[test]
fn a_dry_run_counts_exactly_what_a_real_run_does() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_mixed(&mut con);
    let before = digest(&mut con);
    let dry = pass(&mut con, Mode::ReadOnly, 10_000);
    assert_eq!(digest(&mut con), before, "a dry run wrote");
    let real = pass(&mut con, Mode::Write, 10_000);
    assert_eq!(dry, real);
    assert_eq!(real.per_rule, [0, 1, 2]);
}

/// One call of the declared variant of the test rules over `keys`, which
/// refuses from `deadline` on.
fn declared_call_until(
    con: &mut redis::Connection,
    mode: Mode,
    keys: &[&[u8]],
    deadline: Deadline,
) -> redis::RedisResult<Reply> {
    let script = compiled(con, &test_rules(), mode, KeyMode::Declared);
    let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
    let op = Op::Declared(&batch(0, 10), &keys, deadline);
    claim(mode).command(&script, Invoke::Text, op).query(con)
}

/// One call of the declared variant of the test rules over `keys`, for a
/// run without a lease.
fn declared_call(con: &mut redis::Connection, mode: Mode, keys: &[&[u8]]) -> Reply {
    declared_call_until(con, mode, keys, Deadline::None).unwrap()
}

/// The server's clock, in ms.
fn server_ms(con: &mut redis::Connection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(con).unwrap();
    secs * 1000 + micros / 1000
}

#[test]
fn a_declared_call_refuses_to_act_once_its_deadline_has_come() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed(&mut con, b"cache:a", "string", None);
    seed(&mut con, b"temp:a", "string", None);
    let keys: &[&[u8]] = &[b"cache:a", b"temp:a"];
    let before = digest(&mut con);
    // The run's lease may have expired: another run may hold it now.
    let now = server_ms(&mut con);
    let refused = declared_call_until(&mut con, Mode::Write, keys, Deadline::At(now))
        .expect_err("a call at its deadline acted");
    assert_eq!(refused.code(), Some("LEASELOST"), "{refused}");
    assert!(refused.to_string().contains("deadline"), "{refused}");
    assert_eq!(digest(&mut con), before, "a refused call wrote");
    // Before its deadline the call acts.
    let later = Deadline::At(server_ms(&mut con) + 60_000);
    let reply = declared_call_until(&mut con, Mode::Write, keys, later).unwrap();
    assert_eq!(reply.acted, [0, 1, 1], "{reply:?}");
    assert_keyspace(&mut con, &[(b"cache:a", "string", Ttl::About(3600))]);
}

#[test]
fn a_declared_key_gone_before_its_call_is_counted_as_vanished_and_left_alone() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed(&mut con, b"cache:a", "string", None);
    // `cache:gone` was in the job's SCAN, and deleted before the call.
    let reply = declared_call(&mut con, Mode::Write, &[b"cache:gone", b"cache:a"]);
    assert_eq!(reply.matched, 2, "{reply:?}");
    assert_eq!(reply.vanished, 1, "{reply:?}");
    assert_eq!(reply.unchanged, 0, "{reply:?}");
    assert_eq!(reply.acted, [0, 1, 0], "{reply:?}");
    assert_keyspace(&mut con, &[(b"cache:a", "string", Ttl::About(3600))]);
}

#[test]
fn a_key_declared_twice_counts_once_in_a_dry_run_as_in_a_real_one() {
    // SCAN may return a key twice; an unconditional delete acts on it once.
    let server = RedisServer::start();
    let mut con = server.conn();
    seed(&mut con, b"temp:a", "string", None);
    let twice: &[&[u8]] = &[b"temp:a", b"temp:a"];
    let dry = declared_call(&mut con, Mode::ReadOnly, twice);
    let real = declared_call(&mut con, Mode::Write, twice);
    for reply in [&dry, &real] {
        assert_eq!(reply.acted, [0, 0, 1], "dry {dry:?}\nreal {real:?}");
        assert_eq!(reply.vanished, 1, "dry {dry:?}\nreal {real:?}");
    }
    assert_keyspace(&mut con, &[]);
}

#[test]
fn an_error_in_the_checks_leaves_the_whole_call_unapplied() {
    // Under an LFU policy OBJECT IDLETIME fails. The temp keys need no check,
    // yet they must survive: nothing is written before every key the call's
    // SCAN steps returned has been checked.
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "temp", 200);
    seed_all(&mut con, &[(b"cache:then", "string", None)]);
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lfu")
        .exec(&mut con)
        .unwrap();
    let before = digest(&mut con);
    let err = call(&mut con, Mode::Write, &batch(0, 10_000))
        .expect_err("OBJECT IDLETIME must fail under LFU");
    assert!(err.to_string().contains("LFU"), "{err}");
    assert_eq!(digest(&mut con), before);
}

#[test]
fn a_script_error_is_not_sent_again_as_text_only_noscript_is() {
    // Script::call falls back to the script's text on NOSCRIPT, and only
    // then: any other error comes back as it is.
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_all(&mut con, &[(b"cache:1", "string", None)]);
    let rules = test_rules();
    let script = compiled(&mut con, &rules, Mode::Write, KeyMode::Server);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut conn = runtime.block_on(async {
        let client = redis::Client::open(server.url()).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
    });
    // Not loaded: the call by SHA meets NOSCRIPT and is sent again as text.
    let (reply, resent) = runtime
        .block_on(script.call::<Reply>(
            &mut conn,
            &claim(Mode::Write),
            Op::Clean(&batch(0, 100), None),
        ))
        .unwrap();
    assert!(resent && reply.cursor == 0, "{reply:?}");
    assert_eq!(calls_of(&mut con, "eval"), 1);
    // Under an LFU policy the idle rule's check fails: an error, not resent.
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lfu")
        .exec(&mut con)
        .unwrap();
    let err = runtime
        .block_on(script.call::<Reply>(
            &mut conn,
            &claim(Mode::Write),
            Op::Clean(&batch(0, 100), None),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("LFU"), "{err}");
    assert_eq!(
        calls_of(&mut con, "eval"),
        1,
        "the failed call was sent again"
    );
    assert_eq!(calls_of(&mut con, "evalsha"), 2);
}

#[test]
fn a_spent_time_budget_stops_the_call_after_one_step() {
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "temp", 5000);
    let spent = Batch {
        scan_budget: Duration::ZERO,
        ..batch(0, 10_000)
    };
    let reply = call(&mut con, Mode::Write, &spent).unwrap();
    assert_eq!(reply.looked_at, 100, "{reply:?}");
    assert_ne!(reply.cursor, 0, "{reply:?}");
    assert_eq!(dbsize(&mut con), 5000 - reply.returned);
}

#[test]
fn a_call_times_its_steps_by_a_stopwatch_that_runs_and_fills_its_budget() {
    // Since Redis 7.2 TIME stands still within a call; the script times
    // itself with os.clock there (Redis 7.4+, Valkey 8+), and with TIME
    // before. Redis 7.2 and 7.3 have neither clock: a call makes one step.
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "temp", 50_000);
    let (software, version) = software_and_version(&mut con);
    let two_ms = Batch {
        scan_budget: Duration::from_millis(2),
        ..batch(0, 50_000)
    };
    let reply = call(&mut con, Mode::Write, &two_ms).unwrap();
    let summary = format!(
        "{software} {version}: {} keys in {} us ({} us scanning)",
        reply.looked_at, reply.micros, reply.scan_micros
    );
    let stopped =
        software == "Redis" && (version.starts_with("7.2.") || version.starts_with("7.3."));
    if stopped {
        assert_eq!((reply.looked_at, reply.micros), (100, 0), "{summary}");
    } else {
        // 100-key steps until the budget is spent: several, not all.
        assert!(reply.scan_micros >= 1_500, "{summary}");
        assert!(reply.micros >= reply.scan_micros, "{summary}");
        assert!((200..50_000).contains(&reply.looked_at), "{summary}");
    }
    assert_eq!(dbsize(&mut con), 50_000 - reply.returned);
}

#[test]
fn a_call_whose_stopwatch_stands_still_makes_one_step() {
    // Redis 7.2 and 7.3, which no test server here is, freeze TIME within a
    // call and have no os.clock. Any later server does the same to the
    // script with os.clock hidden: it must then make one step and say it
    // timed 0 us, which the job reads as a stopwatch that stands still.
    // Before 7.2 TIME runs, and the script times itself by it.
    let server = RedisServer::start();
    let mut con = server.conn();
    populate(&mut con, "temp", 50_000);
    let mut script = compiled(&mut con, &test_rules(), Mode::Write, KeyMode::Server);
    let finds_os_clock = "rawget(_G, 'os')";
    assert_eq!(script.text.matches(finds_os_clock).count(), 2);
    script.text = script.text.replace(finds_os_clock, "(nil)");
    let two_ms = Batch {
        scan_budget: Duration::from_millis(2),
        ..batch(0, 50_000)
    };
    let reply: Reply = claim(Mode::Write)
        .command(&script, Invoke::Text, Op::Clean(&two_ms, None))
        .query(&mut con)
        .unwrap();
    let summary = format!(
        "{}: {} keys in {} us",
        server_version(&mut con),
        reply.looked_at,
        reply.micros
    );
    if time_stands_still_in_a_call(&mut con) {
        assert_eq!((reply.looked_at, reply.micros), (100, 0), "{summary}");
    } else {
        assert!((200..50_000).contains(&reply.looked_at), "{summary}");
    }
    assert_eq!(dbsize(&mut con), 50_000 - reply.returned);
}

/// Whether TIME answers the same before and after some milliseconds of
/// work within one script call (Redis 7.2 and later, Valkey).
fn time_stands_still_in_a_call(con: &mut redis::Connection) -> bool {
    redis::cmd("EVAL")
        .arg(
            "local before = redis.call('TIME') \
             for i = 1, 5000000 do end \
             local after = redis.call('TIME') \
             return (before[1] == after[1] and before[2] == after[2]) and 1 or 0",
        )
        .arg(0)
        .query::<i64>(con)
        .expect("EVAL of the TIME probe")
        == 1
}

#[test]
fn rule_names_and_patterns_are_data_in_the_compiled_script() {
    // Every byte of a name or pattern that could end a Lua string or
    // comment, or start code, is in here (a name is one line); the script
    // must still delete exactly the keys the pattern matches.
    let rules = Rules::parse(
        "hostile rules",
        r#"
[[rule]]
name = "x]] return 1 --]]\" end --[["
pattern = "q\"]]\n--\\[*"
action = "delete"

[[rule]]
name = "never"
pattern = "q\"]]\n--[x]*"
type = "hash"
action = "expire"
ttl = "1h"
"#,
    )
    .unwrap();
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_all(
        &mut con,
        &[
            (b"q\"]]\n--[1", "string", None),
            (b"q\"]]\n--[\xff", "string", None),
            (b"q\"]]\n--x", "string", None),
            (b"q\"]]\n-[1", "string", None),
            (b"other", "string", None),
        ],
    );
    let counts = pass_with(&mut con, &rules, Mode::Write, 10_000);
    assert_eq!(counts.per_rule, [2, 0]);
    assert_eq!(counts.unchanged, 1, "{counts:?}");
    assert_keyspace(
        &mut con,
        &[
            (b"q\"]]\n--x", "string", Ttl::Persistent),
            (b"q\"]]\n-[1", "string", Ttl::Persistent),
            (b"other", "string", Ttl::Persistent),
        ],
    );
}

#[test]
fn the_most_rules_a_file_may_hold_compile_into_one_script() {
    // 64 rules of every matcher kind and condition: Lua's limits on a
    // function (locals, upvalues, constants, jumps) must all hold.
    let mut text = String::new();
    for i in 0..redis_janitor::rules::MAX_RULES {
        let (pattern, extra) = match i % 4 {
            0 => (format!("k{i}:*"), ""),
            1 => (format!("*:k{i}"), "type = \"string\""),
            2 => (format!("k{i}?[xy]*z"), "ttl_below = \"1h\""),
            _ => (format!("k{i}:*"), "no_ttl = true\nidle_above = \"1h\""),
        };
        text.push_str(&format!(
            "[[rule]]\nname = \"r{i}\"\npattern = \"{pattern}\"\n{extra}\naction = \"delete\"\n"
        ));
    }
    let rules = Rules::parse("64 rules", &text).unwrap();
    let server = RedisServer::start();
    let mut con = server.conn();
    let mut keys: Vec<(Vec<u8>, Option<u64>)> = Vec::new();
    for i in 0..rules.rules.len() {
        let key = match i % 4 {
            0 | 3 => format!("k{i}:a"),
            1 => format!("a:k{i}"),
            _ => format!("k{i}.x..z"),
        };
        keys.push((key.into_bytes(), (i % 4 == 2).then_some(60)));
    }
    keys.push((b"k0".to_vec(), None));
    let seeded: Vec<(&[u8], &str, Option<u64>)> = keys
        .iter()
        .map(|(k, ttl)| (k.as_slice(), "string", *ttl))
        .collect();
    seed_all(&mut con, &seeded);
    // A key just written has not been idle for an hour: those rules leave
    // their key alone.
    let counts = pass_with(&mut con, &rules, Mode::Write, 10_000);
    let acted: Vec<u64> = (0..rules.rules.len())
        .map(|i| u64::from(i % 4 != 3))
        .collect();
    assert_eq!(counts.per_rule, acted);
    let left: Vec<(&[u8], &str, Ttl)> = seeded
        .iter()
        .enumerate()
        .filter(|(i, _)| *i % 4 == 3 || *i == rules.rules.len())
        .map(|(_, (k, t, _))| (*k, *t, Ttl::Persistent))
        .collect();
    assert_keyspace(&mut con, &left);
}
