//! Unusual key names (binary bytes, NUL, spaces, newlines, quotes, glob
//! characters, a 100 kB name, empty prefixes, the empty key) are matched and
//! acted on exactly like ordinary keys, and are escaped in the debug log.

use crate::support::*;

fn long_key(prefix: &[u8], fill: impl Fn(usize) -> u8) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend((0..100 * 1024).map(fill));
    key
}

#[test]
fn unusual_key_names_are_cleaned_like_any_other() {
    let server = RedisServer::start();
    let mut con = server.conn();
    let long_temp = long_key(b"temp:", |_| b'x');
    let long_cache = long_key(b"cache:", |i| (i % 256) as u8);
    let long_keep = long_key(b"keep:", |i| b"\n\0\xff "[i % 4]);
    let temp_keys: Vec<&[u8]> = vec![
        b"temp:\xff\xfe\x00bin",
        b"temp:with space",
        b"temp:line\nbreak",
        b"temp:\r\n\t",
        b"temp:\"double\" 'single'",
        b"temp:back\\slash",
        b"temp:*",
        b"temp:[abc]?",
        "temp:\u{2603} snowman".as_bytes(),
        &long_temp,
    ];
    for key in &temp_keys {
        seed(&mut con, key, "string", None);
    }
    seed_all(
        &mut con,
        &[
            (b"cache:\x00", "hash", None),
            (b"cache:\xff\xff", "string", None),
            (b"cache:new\nline", "list", None),
            (b"cache: space", "string", Some(30)),
            (b"keep:\xff", "string", None),
            (b"keep:\x00", "set", None),
            (b"\x00temp:x", "string", None),
            (b"tem\x00p:x", "string", None),
            (b"", "string", None),
        ],
    );
    seed(&mut con, &long_cache, "string", None);
    seed(&mut con, &long_keep, "string", None);

    let out = run_json(&server.url()).run();
    out.assert_code(0);
    let report = out.report();

    assert_keyspace(
        &mut con,
        &[
            (b"cache:\x00", "hash", Ttl::About(3600)),
            (b"cache:\xff\xff", "string", Ttl::About(3600)),
            (b"cache:new\nline", "list", Ttl::About(3600)),
            (&long_cache, "string", Ttl::About(3600)),
            (b"keep:\xff", "string", Ttl::Persistent),
            (b"keep:\x00", "set", Ttl::Persistent),
            (b"\x00temp:x", "string", Ttl::Persistent),
            (b"tem\x00p:x", "string", Ttl::Persistent),
            (b"", "string", Ttl::Persistent),
            (&long_keep, "string", Ttl::Persistent),
        ],
    );
    assert_eq!(
        rule_keys(&report, "temp"),
        temp_keys.len() as u64,
        "{report:#}"
    );
    assert_eq!(rule_keys(&report, "cache-missing-ttl"), 4, "{report:#}");
    assert_eq!(rule_keys(&report, "cache-expiring-soon"), 1, "{report:#}");
    // The built-in rules' MATCH leaves the six keys no rule takes in Redis.
    assert_eq!(field(&report, "keys_scanned"), 15, "{report:#}");
    assert_eq!(field(&report, "unchanged"), 0, "{report:#}");
    assert_matched_accounted(&report);
}

#[test]
fn dry_run_over_unusual_key_names_predicts_the_real_run() {
    let server = RedisServer::start();
    let mut con = server.conn();
    let long_temp = long_key(b"temp:", |i| (i % 256) as u8);
    seed_all(
        &mut con,
        &[
            (b"temp:\x00\xff", "string", None),
            (b"temp:\n", "list", None),
            (b"cache:\x00", "string", None),
            (b"cache:\xc3\x28", "string", Some(10)),
        ],
    );
    seed(&mut con, &long_temp, "hash", None);
    let before = digest(&mut con);
    let dry = run_json(&server.url()).arg("--dry-run").run();
    dry.assert_code(0);
    let dry_report = dry.report();
    assert_eq!(digest(&mut con), before, "dry run changed the dataset");
    let real = run_json(&server.url()).run();
    real.assert_code(0);
    let real_report = real.report();
    assert_eq!(rule_counts(&dry_report), rule_counts(&real_report));
    assert_eq!(rule_keys(&real_report, "temp"), 3, "{real_report:#}");
    assert_keyspace(&mut con, &[(b"cache:\x00", "string", Ttl::About(3600))]);
}

#[test]
fn patterns_with_an_empty_prefix_match_like_any_other() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_all(
        &mut con,
        &[
            (b":tmp", "string", None),
            (b"a:tmp", "string", None),
            (b"::tmp", "list", None),
            (b":x", "string", None),
            (b":", "string", None),
            (b":tmp:", "hash", None),
            (b"x:", "string", None),
            (b"tmp", "string", None),
            (b"a:tmpx", "string", None),
            (b"", "string", None),
        ],
    );
    let out = run_with_rules(
        &server,
        r#"
[[rule]]
name = "tmp-suffix"
pattern = "*:tmp"
action = "delete"

[[rule]]
name = "colon-prefix"
pattern = ":*"
action = "expire"
ttl = "1h"
"#,
    );
    out.assert_code(0);
    let report = out.report();
    assert_keyspace(
        &mut con,
        &[
            (b":x", "string", Ttl::About(3600)),
            (b":", "string", Ttl::About(3600)),
            (b":tmp:", "hash", Ttl::About(3600)),
            (b"x:", "string", Ttl::Persistent),
            (b"tmp", "string", Ttl::Persistent),
            (b"a:tmpx", "string", Ttl::Persistent),
            (b"", "string", Ttl::Persistent),
        ],
    );
    assert_eq!(
        rule_counts(&report),
        vec![
            ("tmp-suffix".into(), "delete".into(), 3),
            ("colon-prefix".into(), "expire".into(), 3),
        ],
        "{report:#}"
    );
}

#[test]
fn a_star_pattern_takes_the_empty_key_too() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_all(
        &mut con,
        &[
            (b"", "string", None),
            (b"x", "set", None),
            (b"y", "string", Some(100)),
        ],
    );
    let out = run_with_rules(
        &server,
        "[[rule]]\nname = \"all\"\npattern = \"*\"\nno_ttl = true\naction = \"expire\"\nttl = \"1h\"\n",
    );
    out.assert_code(0);
    let report = out.report();
    assert_keyspace(
        &mut con,
        &[
            (b"", "string", Ttl::About(3600)),
            (b"x", "set", Ttl::About(3600)),
            (b"y", "string", Ttl::About(100)),
        ],
    );
    assert_eq!(rule_keys(&report, "all"), 2, "{report:#}");
    assert_eq!(field(&report, "unchanged"), 1, "{report:#}");
}

#[test]
fn debug_log_shows_hostile_key_names_escaped_on_one_line() {
    let server = RedisServer::start();
    let mut con = server.conn();
    seed_all(
        &mut con,
        &[
            (b"temp:evil\nINJECTED-LINE", "string", None),
            (b"temp:cr\rCARRIAGE", "string", None),
            (b"temp:bin\xff\x00tail", "string", None),
            (b"temp:\x1b[31mRED", "string", None),
        ],
    );
    let out = run_json(&server.url()).env("RUST_LOG", "debug").run();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(rule_keys(&report, "temp"), 4, "{report:#}");
    assert_eq!(dbsize(&mut con), 0);

    let stderr = std::str::from_utf8(&out.raw_stderr).unwrap_or_else(|e| {
        panic!(
            "stderr holds raw non-UTF-8 bytes (an unescaped key?): {e}\n{}",
            out.dump()
        )
    });
    assert!(
        stderr.contains("INJECTED-LINE"),
        "the debug log does not show the key temp:evil\\nINJECTED-LINE at all\n{}",
        out.dump()
    );
    for line in stderr.split('\n') {
        assert!(
            !line.starts_with("INJECTED-LINE"),
            "a raw newline in a key split a log line: {line:?}\n{}",
            out.dump()
        );
        assert!(
            !line.contains('\r'),
            "raw carriage return in a log line: {line:?}"
        );
    }
    let evil_line = stderr
        .lines()
        .find(|l| l.contains("INJECTED-LINE"))
        .unwrap();
    assert!(
        evil_line.contains("temp:evil"),
        "key is not on one line: {evil_line:?}"
    );
    assert!(
        !stderr.contains("\u{1b}[31mRED"),
        "a raw escape sequence from a key reached the log\n{}",
        out.dump()
    );
    assert!(
        stderr.contains("tail"),
        "the binary key temp:bin\\xff\\x00tail is not in the debug log\n{}",
        out.dump()
    );
}
