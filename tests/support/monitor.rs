//! What a test server ran, as `MONITOR` shows it: every command, from a
//! client or from a script, with the server's time when it ran.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::thread;

use super::RedisServer;

/// The line that ends a [`monitor`]: an `ECHO` of it, sent once the work
/// watched is done.
const END: &str = "redis-janitor-test:monitor-end";

/// One command as `MONITOR` shows it.
#[derive(Debug, Clone)]
pub struct Monitored {
    /// The server's clock when it ran, in microseconds.
    pub micros: u64,
    /// Whether a script ran it (`redis.call`).
    pub from_script: bool,
    /// The command and its arguments (escapes undone but `\xNN`, kept as
    /// written: the tests read names and numbers).
    pub args: Vec<String>,
}

/// Every command `server` ran while `work` ran, in order.
pub fn monitor(server: &RedisServer, work: impl FnOnce()) -> Vec<Monitored> {
    let stream = TcpStream::connect(("127.0.0.1", server.port())).expect("connect for MONITOR");
    let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
    (&stream).write_all(b"MONITOR\r\n").expect("send MONITOR");
    let mut ok = String::new();
    reader.read_line(&mut ok).expect("MONITOR's reply");
    assert_eq!(ok.trim_end(), "+OK", "MONITOR refused");
    let lines = thread::spawn(move || {
        let mut seen = Vec::new();
        for line in reader.lines() {
            let line = line.expect("a MONITOR line");
            if line.contains(END) {
                break;
            }
            seen.push(parse(&line));
        }
        seen
    });
    work();
    redis::cmd("ECHO")
        .arg(END)
        .exec(&mut server.conn())
        .expect("ECHO");
    lines.join().expect("the MONITOR reader")
}

/// `+1796314363.981137 [0 lua] "PEXPIRE" "key" "60000"`, one line of it.
fn parse(line: &str) -> Monitored {
    let line = line.strip_prefix('+').unwrap_or(line);
    let (time, rest) = line.split_once(' ').expect("a time");
    let (secs, frac) = time.split_once('.').expect("seconds.micros");
    let (client, command) = rest.split_once("] ").expect("[db client]");
    Monitored {
        micros: secs.parse::<u64>().unwrap() * 1_000_000 + frac.parse::<u64>().unwrap(),
        from_script: client.ends_with(" lua"),
        args: quoted(command),
    }
}

/// The quoted strings of `text`, with `\"` and `\\` undone.
fn quoted(text: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut arg = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some(c @ ('"' | '\\')) => arg.push(c),
                    Some(c) => {
                        arg.push('\\');
                        arg.push(c);
                    }
                    None => {}
                },
                c => arg.push(c),
            }
        }
        args.push(arg);
    }
    args
}
