//! The benchmark keyspace: the issue's mix of key classes, seeding it fast
//! (raw RESP written on one socket while a second thread reads the replies,
//! like `redis-cli --pipe`), and the exact check of the keyspace a method
//! leaves behind. Key names encode their class and index (`cache:nottl:17`),
//! so the check counts every class exactly, duplicates from SCAN included.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

/// The built-in rules' TTL for cache keys without one, in ms.
pub const EXPIRE_TO_MS: i64 = 3_600_000;
/// TTL of the short-lived cache keys (the rules delete keys under 60 s).
pub const SHORT_TTL_MS: i64 = 30_000;
/// TTL of the long-lived cache keys (no rule touches them).
pub const LONG_TTL_MS: i64 = 7_200_000;
/// Extra slack allowed on a TTL set during the run, in ms.
const TTL_SLACK_MS: i64 = 2_000;

/// The classes of keys, each with its own name prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Any other key: must stay, without a TTL.
    Keep = 0,
    /// `temp:*`: deleted.
    Temp = 1,
    /// `cache:*` without TTL: gets a 1 h TTL.
    NoTtl = 2,
    /// `cache:*` with a 30 s TTL: deleted.
    Short = 3,
    /// `cache:*` with a 2 h TTL: untouched.
    Long = 4,
}

impl Class {
    pub const ALL: [Class; 5] = [
        Class::Keep,
        Class::Temp,
        Class::NoTtl,
        Class::Short,
        Class::Long,
    ];

    /// The key name prefix, which encodes the class.
    pub fn prefix(self) -> &'static str {
        match self {
            Class::Keep => "keep:",
            Class::Temp => "temp:",
            Class::NoTtl => "cache:nottl:",
            Class::Short => "cache:short:",
            Class::Long => "cache:long:",
        }
    }

    /// The class and index a key name encodes, if it is one of ours.
    pub fn parse(key: &[u8]) -> Option<(Class, u64)> {
        Class::ALL.into_iter().find_map(|class| {
            let rest = key.strip_prefix(class.prefix().as_bytes())?;
            let text = std::str::from_utf8(rest).ok()?;
            let index = text.parse::<u64>().ok()?;
            // Only the canonical spelling (no leading zeros or sign).
            (index.to_string() == text).then_some((class, index))
        })
    }
}

/// The class of the `i`-th key of the seeding order: of every ten keys, four
/// stay, two are `temp:*`, two are TTL-less cache keys, one has a 30 s TTL
/// and one a 2 h TTL (40% / 20% / 40% cache, split 1/2, 1/4, 1/4).
fn class_of(i: u64) -> Class {
    match i % 10 {
        0..=3 => Class::Keep,
        4 | 5 => Class::Temp,
        6 | 7 => Class::NoTtl,
        8 => Class::Short,
        _ => Class::Long,
    }
}

/// How many keys of each class a keyspace of `n` keys holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    pub total: u64,
    pub counts: [u64; 5],
}

impl Mix {
    pub fn new(total: u64) -> Mix {
        let mut counts = [0u64; 5];
        let per_ten = [4, 2, 2, 1, 1];
        for class in Class::ALL {
            counts[class as usize] = total / 10 * per_ten[class as usize];
        }
        for i in total / 10 * 10..total {
            counts[class_of(i) as usize] += 1;
        }
        Mix { total, counts }
    }

    pub fn count(&self, class: Class) -> u64 {
        self.counts[class as usize]
    }
}

/// Writes `mix` into the (empty) server on `port`. Keys are interleaved by
/// class, except the 30 s ones, which are written last so that they are as
/// fresh as possible when the run starts.
pub fn seed(port: u16, mix: &Mix) -> Result<(), String> {
    let stream =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("seed: connect: {e}"))?;
    stream.set_nodelay(true).ok();
    let reader_stream = stream.try_clone().map_err(|e| format!("seed: {e}"))?;
    let expected = mix.total;
    let reader = thread::spawn(move || -> Result<(), String> {
        let mut reader = BufReader::with_capacity(1 << 16, reader_stream);
        let mut line = Vec::with_capacity(64);
        for _ in 0..expected {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| format!("seed: read: {e}"))?;
            if n == 0 {
                return Err("seed: the server closed the connection".into());
            }
            if line.first() != Some(&b'+') {
                return Err(format!("seed: unexpected reply {}", line.escape_ascii()));
            }
        }
        Ok(())
    });
    let mut out = BufWriter::with_capacity(1 << 20, stream);
    let mut next = [0u64; 5];
    let mut write = |out: &mut BufWriter<TcpStream>, class: Class| -> std::io::Result<()> {
        let index = next[class as usize];
        next[class as usize] += 1;
        let key = format!("{}{index}", class.prefix());
        let value = format!("v{index:08}");
        let ttl = match class {
            Class::Short => Some(SHORT_TTL_MS),
            Class::Long => Some(LONG_TTL_MS),
            _ => None,
        };
        let mut cmd = Vec::with_capacity(96);
        let args: usize = if ttl.is_some() { 5 } else { 3 };
        write!(cmd, "*{args}\r\n$3\r\nSET\r\n")?;
        for arg in [key.as_str(), value.as_str()] {
            write!(cmd, "${}\r\n{arg}\r\n", arg.len())?;
        }
        if let Some(ttl) = ttl {
            let ttl = ttl.to_string();
            write!(cmd, "$2\r\nPX\r\n${}\r\n{ttl}\r\n", ttl.len())?;
        }
        out.write_all(&cmd)
    };
    let written = (|| -> std::io::Result<()> {
        for i in 0..mix.total {
            let class = class_of(i);
            if class != Class::Short {
                write(&mut out, class)?;
            }
        }
        for _ in 0..mix.count(Class::Short) {
            write(&mut out, Class::Short)?;
        }
        out.flush()
    })();
    let read = reader
        .join()
        .map_err(|_| "seed: the reply reader panicked".to_string())?;
    written.map_err(|e| format!("seed: write: {e}"))?;
    read
}

/// What a method must have left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The keyspace as seeded (the bare SCAN changes nothing).
    Unchanged,
    /// The rules applied: no `temp:*`, no 30 s cache keys, TTL-less cache
    /// keys now expire in about 1 h, everything else as seeded.
    Cleaned,
}

/// Checks the whole keyspace against `expect`. `seeded` is when seeding
/// started and `run_started` when the method started: they bound the TTLs
/// that may have elapsed. Returns a list of problems, empty when all is right.
pub fn verify(
    conn: &mut redis::Connection,
    mix: &Mix,
    expect: Expect,
    seeded: Instant,
    run_started: Instant,
) -> Result<Vec<String>, String> {
    let mut seen: Vec<Vec<bool>> = Class::ALL
        .iter()
        .map(|&c| vec![false; mix.count(c) as usize])
        .collect();
    let mut problems = Vec::new();
    let mut bad_ttl = [0u64; 5];
    let mut first_bad_ttl: [Option<String>; 5] = Default::default();
    let mut foreign = 0u64;
    // The PTTL each class may show, `seed_age` and `run_age` ms after seeding
    // and the run started (plus slack).
    let allowed = |class: Class, pttl: i64, seed_age: i64, run_age: i64| -> bool {
        match (class, expect) {
            (Class::Keep | Class::Temp, _) | (Class::NoTtl, Expect::Unchanged) => pttl == -1,
            (Class::NoTtl, Expect::Cleaned) => {
                (EXPIRE_TO_MS - run_age..=EXPIRE_TO_MS).contains(&pttl)
            }
            (Class::Short, _) => (0..=SHORT_TTL_MS).contains(&pttl),
            (Class::Long, _) => (LONG_TTL_MS - seed_age..=LONG_TTL_MS).contains(&pttl),
        }
    };
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(10_000)
            .query(conn)
            .map_err(|e| format!("check: SCAN: {e}"))?;
        let mut pipe = redis::pipe();
        let mut ours = Vec::with_capacity(keys.len());
        for key in &keys {
            match Class::parse(key).filter(|&(c, i)| i < mix.count(c)) {
                Some((class, index)) => {
                    seen[class as usize][index as usize] = true;
                    pipe.cmd("PTTL").arg(key.as_slice());
                    ours.push((class, key));
                }
                None => {
                    foreign += 1;
                    if foreign <= 3 {
                        problems.push(format!("unexpected key {}", key.escape_ascii()));
                    }
                }
            }
        }
        if !ours.is_empty() {
            let pttls: Vec<i64> = pipe.query(conn).map_err(|e| format!("check: PTTL: {e}"))?;
            let seed_age = seeded.elapsed().as_millis() as i64 + TTL_SLACK_MS;
            let run_age = run_started.elapsed().as_millis() as i64 + TTL_SLACK_MS;
            for ((class, key), pttl) in ours.into_iter().zip(pttls) {
                // -2: expired or deleted since SCAN saw it; counted below.
                if pttl != -2 && !allowed(class, pttl, seed_age, run_age) {
                    bad_ttl[class as usize] += 1;
                    first_bad_ttl[class as usize]
                        .get_or_insert_with(|| format!("{} has PTTL {pttl}", key.escape_ascii()));
                }
            }
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    if foreign > 3 {
        problems.push(format!("{foreign} unexpected keys in all"));
    }
    for class in Class::ALL {
        let present = seen[class as usize].iter().filter(|&&s| s).count() as u64;
        let want = match (class, expect) {
            (Class::Temp | Class::Short, Expect::Cleaned) => 0,
            _ => mix.count(class),
        };
        if present != want {
            problems.push(format!(
                "{}*: {present} keys present, expected {want}",
                class.prefix()
            ));
        }
        if bad_ttl[class as usize] > 0 {
            problems.push(format!(
                "{}*: {} keys with a wrong TTL (e.g. {})",
                class.prefix(),
                bad_ttl[class as usize],
                first_bad_ttl[class as usize].as_deref().unwrap_or("?")
            ));
        }
    }
    Ok(problems)
}

/// How long ago the 30 s keys may have started expiring by themselves: past
/// this, a method may find fewer of them than were seeded.
pub fn short_keys_may_expire(seeded: Instant) -> bool {
    seeded.elapsed() > Duration::from_millis(SHORT_TTL_MS as u64 - 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_has_the_issues_proportions() {
        let mix = Mix::new(1_000_000);
        assert_eq!(mix.counts, [400_000, 200_000, 200_000, 100_000, 100_000]);
        let odd = Mix::new(17);
        assert_eq!(odd.counts.iter().sum::<u64>(), 17);
        assert_eq!(odd.counts, [8, 4, 3, 1, 1]);
    }

    #[test]
    fn key_names_encode_class_and_index() {
        assert_eq!(Class::parse(b"cache:nottl:17"), Some((Class::NoTtl, 17)));
        assert_eq!(Class::parse(b"cache:long:0"), Some((Class::Long, 0)));
        assert_eq!(Class::parse(b"keep:9"), Some((Class::Keep, 9)));
        assert_eq!(Class::parse(b"cache:x:1"), None);
        assert_eq!(Class::parse(b"temp:01"), None);
        assert_eq!(Class::parse(b"temp:"), None);
    }
}
