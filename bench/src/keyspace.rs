//! The benchmark keyspace: the issue's mix of key classes, seeding it fast
//! (raw RESP written on one socket while a second thread reads the replies,
//! like `redis-cli --pipe`), and the exact check of the keyspace a method
//! leaves behind. Key names encode their class and index (`cache:nottl:17`),
//! so the check counts every class exactly, duplicates from SCAN included.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::{Shutdown, TcpStream};
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

/// The keys in the order they are written: the classes interleaved as
/// [`class_of`] deals them, except the 30 s ones, which come last so that
/// they are as fresh as possible when the run starts.
fn seeding_order(mix: &Mix) -> impl Iterator<Item = (Class, u64)> {
    let mut next = [0u64; 5];
    let interleaved = (0..mix.total)
        .map(class_of)
        .filter(|&class| class != Class::Short)
        .map(move |class| {
            let index = next[class as usize];
            next[class as usize] += 1;
            (class, index)
        });
    interleaved.chain((0..mix.count(Class::Short)).map(|index| (Class::Short, index)))
}

/// The name of the `index`-th key of `class`.
pub fn key_name(class: Class, index: u64) -> String {
    format!("{}{index}", class.prefix())
}

/// The SET command (RESP) that seeds `key`, the `index`-th of `class`, with
/// its class's TTL.
fn set_command(class: Class, index: u64, key: &str) -> Vec<u8> {
    let value = format!("v{index:08}");
    let ttl = match class {
        Class::Short => Some(SHORT_TTL_MS.to_string()),
        Class::Long => Some(LONG_TTL_MS.to_string()),
        _ => None,
    };
    let mut cmd = Vec::with_capacity(96);
    let args = if ttl.is_some() { 5 } else { 3 };
    // Writing to a Vec cannot fail.
    let _ = write!(cmd, "*{args}\r\n$3\r\nSET\r\n");
    for arg in [key, value.as_str()] {
        let _ = write!(cmd, "${}\r\n{arg}\r\n", arg.len());
    }
    if let Some(ttl) = ttl {
        let _ = write!(cmd, "$2\r\nPX\r\n${}\r\n{ttl}\r\n", ttl.len());
    }
    cmd
}

/// Writes `mix` into the (empty) server on `port` (see [`seed_nodes`]).
pub fn seed(port: u16, mix: &Mix) -> Result<(), String> {
    seed_nodes(&[port], |_| 0, mix)
}

/// Writes `mix` into the (empty) servers on `ports`, each key into the one
/// `node_of` its name picks (on a cluster: its slot's primary). One socket
/// per server, written by this thread in [`seeding_order`] while a thread
/// per server reads the replies.
pub fn seed_nodes(
    ports: &[u16],
    node_of: impl Fn(&[u8]) -> usize,
    mix: &Mix,
) -> Result<(), String> {
    let mut expected = vec![0u64; ports.len()];
    for (class, index) in seeding_order(mix) {
        expected[node_of(key_name(class, index).as_bytes())] += 1;
    }
    let mut outs = Vec::with_capacity(ports.len());
    let mut readers = Vec::with_capacity(ports.len());
    for (&port, &replies) in ports.iter().zip(&expected) {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .map_err(|e| format!("seed: connect to {port}: {e}"))?;
        stream.set_nodelay(true).ok();
        let reader_stream = stream.try_clone().map_err(|e| format!("seed: {e}"))?;
        readers.push(thread::spawn(move || {
            read_ok_replies(reader_stream, replies)
        }));
        outs.push(BufWriter::with_capacity(1 << 20, stream));
    }
    let written = (|| -> std::io::Result<()> {
        for (class, index) in seeding_order(mix) {
            let key = key_name(class, index);
            outs[node_of(key.as_bytes())].write_all(&set_command(class, index, &key))?;
        }
        outs.iter_mut().try_for_each(Write::flush)
    })();
    let mut read = Ok(());
    for reader in readers {
        let result = reader
            .join()
            .map_err(|_| "seed: a reply reader panicked".to_string())?;
        read = read.and(result);
    }
    // A reader's error says why a write failed (it closed the socket).
    read?;
    written.map_err(|e| format!("seed: write: {e}"))
}

/// Reads `replies` replies from `stream`, each of which must be `+OK`. On
/// a wrong reply it shuts the socket, so that the writer fails instead of
/// blocking on a full socket no one reads.
fn read_ok_replies(stream: TcpStream, replies: u64) -> Result<(), String> {
    let mut reader = BufReader::with_capacity(1 << 16, stream);
    let mut line = Vec::with_capacity(64);
    let result = (|| {
        for _ in 0..replies {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| format!("seed: read: {e}"))?;
            if n == 0 {
                return Err("seed: the server closed the connection".to_string());
            }
            if line.first() != Some(&b'+') {
                return Err(format!("seed: unexpected reply {}", line.escape_ascii()));
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = reader.get_ref().shutdown(Shutdown::Both);
    }
    result
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

/// The prefix of the job's own keys (its lease and checkpoint; the job's
/// `RESERVED_PREFIX`), which the check leaves out.
const JOB_PREFIX: &[u8] = b"__redis-janitor__:";

/// Checks the whole keyspace against `expect`: the union of the keyspaces
/// of `conns` (one server, or every primary of a cluster). `seeded` is when
/// seeding started and `run_started` when the method started: they bound the
/// TTLs that may have elapsed. Returns a list of problems, empty when all is
/// right.
pub fn verify(
    conns: &mut [redis::Connection],
    mix: &Mix,
    expect: Expect,
    seeded: Instant,
    run_started: Instant,
) -> Result<Vec<String>, String> {
    let mut check = Check::new(mix, expect, seeded, run_started);
    for conn in conns {
        check.scan(conn)?;
    }
    Ok(check.problems())
}

/// What [`verify`] found so far.
struct Check<'a> {
    mix: &'a Mix,
    expect: Expect,
    seeded: Instant,
    run_started: Instant,
    /// Per class, per index: whether the key was seen on any server.
    seen: Vec<Vec<bool>>,
    /// Per class: keys whose TTL is not what `expect` allows, and the first.
    bad_ttl: [u64; 5],
    first_bad_ttl: [Option<String>; 5],
    /// Keys that are not of the mix.
    foreign: u64,
    problems: Vec<String>,
}

impl<'a> Check<'a> {
    fn new(mix: &'a Mix, expect: Expect, seeded: Instant, run_started: Instant) -> Check<'a> {
        Check {
            mix,
            expect,
            seeded,
            run_started,
            seen: Class::ALL
                .iter()
                .map(|&c| vec![false; mix.count(c) as usize])
                .collect(),
            bad_ttl: [0; 5],
            first_bad_ttl: Default::default(),
            foreign: 0,
            problems: Vec::new(),
        }
    }

    /// Whether a key of `class` may show `pttl`, `seed_age` and `run_age` ms
    /// after seeding and the run started (plus slack).
    fn allowed(&self, class: Class, pttl: i64, seed_age: i64, run_age: i64) -> bool {
        match (class, self.expect) {
            (Class::Keep | Class::Temp, _) | (Class::NoTtl, Expect::Unchanged) => pttl == -1,
            (Class::NoTtl, Expect::Cleaned) => {
                (EXPIRE_TO_MS - run_age..=EXPIRE_TO_MS).contains(&pttl)
            }
            (Class::Short, _) => (0..=SHORT_TTL_MS).contains(&pttl),
            (Class::Long, _) => (LONG_TTL_MS - seed_age..=LONG_TTL_MS).contains(&pttl),
        }
    }

    /// SCANs one server's whole keyspace, with a pipelined PTTL per batch.
    fn scan(&mut self, conn: &mut redis::Connection) -> Result<(), String> {
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(10_000)
                .query(conn)
                .map_err(|e| format!("check: SCAN: {e}"))?;
            self.batch(conn, &keys)?;
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Marks one SCAN batch's keys as seen and checks their TTLs.
    fn batch(&mut self, conn: &mut redis::Connection, keys: &[Vec<u8>]) -> Result<(), String> {
        let mut pipe = redis::pipe();
        let mut ours = Vec::with_capacity(keys.len());
        for key in keys {
            if key.starts_with(JOB_PREFIX) {
                // The job's own lease and checkpoint: not the mix's.
                continue;
            }
            match Class::parse(key).filter(|&(c, i)| i < self.mix.count(c)) {
                Some((class, index)) => {
                    self.seen[class as usize][index as usize] = true;
                    pipe.cmd("PTTL").arg(key.as_slice());
                    ours.push((class, key));
                }
                None => {
                    self.foreign += 1;
                    if self.foreign <= 3 {
                        self.problems
                            .push(format!("unexpected key {}", key.escape_ascii()));
                    }
                }
            }
        }
        if ours.is_empty() {
            return Ok(());
        }
        let pttls: Vec<i64> = pipe.query(conn).map_err(|e| format!("check: PTTL: {e}"))?;
        let seed_age = self.seeded.elapsed().as_millis() as i64 + TTL_SLACK_MS;
        let run_age = self.run_started.elapsed().as_millis() as i64 + TTL_SLACK_MS;
        for ((class, key), pttl) in ours.into_iter().zip(pttls) {
            // -2: expired or deleted since SCAN saw it; counted below.
            if pttl != -2 && !self.allowed(class, pttl, seed_age, run_age) {
                self.bad_ttl[class as usize] += 1;
                self.first_bad_ttl[class as usize]
                    .get_or_insert_with(|| format!("{} has PTTL {pttl}", key.escape_ascii()));
            }
        }
        Ok(())
    }

    /// Everything found wrong, once every server was scanned.
    fn problems(mut self) -> Vec<String> {
        if self.foreign > 3 {
            self.problems
                .push(format!("{} unexpected keys in all", self.foreign));
        }
        for class in Class::ALL {
            let present = self.seen[class as usize].iter().filter(|&&s| s).count() as u64;
            let want = match (class, self.expect) {
                (Class::Temp | Class::Short, Expect::Cleaned) => 0,
                _ => self.mix.count(class),
            };
            if present != want {
                self.problems.push(format!(
                    "{}*: {present} keys present, expected {want}",
                    class.prefix()
                ));
            }
            if self.bad_ttl[class as usize] > 0 {
                self.problems.push(format!(
                    "{}*: {} keys with a wrong TTL (e.g. {})",
                    class.prefix(),
                    self.bad_ttl[class as usize],
                    self.first_bad_ttl[class as usize].as_deref().unwrap_or("?")
                ));
            }
        }
        self.problems
    }
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
