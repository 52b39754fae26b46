//! Test harness shared by every integration test module: starts a private
//! `redis-server` per test on a free loopback port, runs the `redis-janitor`
//! binary with a clean environment, and snapshots / compares keyspaces with a
//! readable, escaped diff.
//!
//! Modelled on redis-rs's `redis-test/src/server.rs` and
//! `redis/tests/support/mod.rs`. Nothing here ever talks to 127.0.0.1:6379.
//! Certificates and a TLS server serving them, with or without mutual TLS,
//! are in [`tls`]. A real Pushgateway, and a stand-in HTTP server, are in
//! `pushgateway`. A replica of a test server, and freezing it so it lags,
//! are in `replica`. A proxy in front of a test server that refuses scripts
//! calling SCAN or declaring keys of several slots, and hides INFO's run id,
//! is in `proxy`. What a server ran, as MONITOR shows it, is in `monitor`.

#![allow(dead_code)]

pub mod tls;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use redis_janitor::lease;
use redis_janitor::script::protocol::RESERVED_PREFIX;

mod cluster;
mod monitor;
mod proxy;
mod pushgateway;
mod replica;
mod restart;
mod runs;
mod sentinel;
pub use cluster::*;
pub use monitor::*;
pub use proxy::*;
pub use pushgateway::*;
pub use replica::*;
pub use restart::*;
pub use runs::*;
pub use sentinel::*;

/// How long a server may take to answer its first PING.
const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one janitor invocation may take before the test fails (instead of
/// hanging CI).
pub const JANITOR_TIMEOUT: Duration = Duration::from_secs(60);
/// Tolerance, in milliseconds, when comparing a TTL to an expected value.
pub const TTL_TOLERANCE_MS: i64 = 5_000;

// ---------------------------------------------------------------------------
// redis-server
// ---------------------------------------------------------------------------

/// A private `redis-server` process, killed when dropped.
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    log_file: PathBuf,
}

/// The server binary the tests run against: `REDIS_SERVER_BIN` (CI runs
/// the suite once per server version), else `redis-server` from the PATH.
pub fn server_bin() -> String {
    std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".to_string())
}

/// A server binary built with TLS, for the TLS tests: `REDIS_TLS_SERVER_BIN`,
/// else `redis-server` from the PATH (Debian's is built with TLS; the PyPI
/// wheels of the other versions are not).
fn tls_server_bin() -> String {
    std::env::var("REDIS_TLS_SERVER_BIN").unwrap_or_else(|_| "redis-server".to_string())
}

/// The major version `bin --version` prints (`... v=7.0.15 ...`).
fn major_version(bin: &str) -> u32 {
    static VERSIONS: Mutex<BTreeMap<String, u32>> = Mutex::new(BTreeMap::new());
    let mut versions = VERSIONS.lock().unwrap_or_else(|e| e.into_inner());
    *versions.entry(bin.to_string()).or_insert_with(|| {
        let out = Command::new(bin)
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{bin} --version`: {e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .find_map(|w| w.strip_prefix("v="))
            .and_then(|v| v.split('.').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no version in `{bin} --version`: {text}"))
    })
}

/// A loopback port that was free a moment ago (bind to :0, read, drop).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// A URL on which nothing listens: any connection attempt is refused.
/// Port 1 (outside the ephemeral range, so no test server can take it) when
/// it refuses connections, else a port that was free a moment ago.
pub fn dead_url() -> String {
    let refused = |port: u16| {
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
    };
    let port = if refused(1) { 1 } else { free_port() };
    format!("redis://127.0.0.1:{port}")
}

enum Start {
    Ready,
    PortTaken,
}

impl RedisServer {
    /// A plain server with the harness's default arguments.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server with extra `redis-server` arguments, e.g.
    /// `&["--requirepass", "pw"]` or `&["--maxmemory-policy", "allkeys-lfu"]`.
    pub fn start_with(extra_args: &[&str]) -> Self {
        Self::start_bin(&server_bin(), extra_args, free_port)
    }

    /// A server built with TLS (see [`tls_server_bin`]), with extra arguments.
    pub fn start_tls(extra_args: &[&str]) -> Self {
        Self::start_bin(&tls_server_bin(), extra_args, free_port)
    }

    /// A server on a port from `pick_port` (a cluster node needs its bus
    /// port, 10000 higher, free too).
    pub fn start_bin(bin: &str, extra_args: &[&str], pick_port: fn() -> u16) -> Self {
        Self::spawn(bin, &[], extra_args, pick_port)
    }

    /// `bin` with `leading` arguments first (a config file, `--sentinel`),
    /// then the harness's, then `extra_args`.
    fn spawn(bin: &str, leading: &[&str], extra_args: &[&str], pick_port: fn() -> u16) -> Self {
        // DEBUG is always enabled before Redis 7, which does not know the
        // setting.
        let debug: &[&str] = if major_version(bin) >= 7 {
            &["--enable-debug-command", "yes"]
        } else {
            &[]
        };
        for _attempt in 0..10 {
            let dir = tempfile::Builder::new()
                .prefix("janitor-redis")
                .tempdir()
                .expect("create tempdir for redis-server");
            let log_file = dir.path().join("redis.log");
            // What the server prints before its log is open (a bad
            // setting) goes to stdout.
            let stdout = std::fs::File::create(dir.path().join("stdout.log"))
                .expect("create the server's stdout file");
            let port = pick_port();
            let mut cmd = Command::new(bin);
            cmd.args(leading)
                .arg("--port")
                .arg(port.to_string())
                .arg("--bind")
                .arg("127.0.0.1")
                .arg("--save")
                .arg("")
                .arg("--appendonly")
                .arg("no")
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(&log_file)
                .args(debug)
                .args(extra_args)
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(Stdio::null());
            let child = match cmd.spawn() {
                Ok(child) => child,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
                    "cannot run `{bin}`: not found. Install Redis (`apt-get install redis-server`) \
                     or point REDIS_SERVER_BIN at a redis-server binary"
                ),
                Err(err) => panic!("cannot run `{bin}`: {err}"),
            };
            let mut server = RedisServer {
                child,
                port,
                dir,
                log_file,
            };
            match server.wait_ready(0) {
                Start::Ready => return server,
                Start::PortTaken => {
                    // Port raced with another test: drop (kill) and retry.
                    continue;
                }
            }
        }
        panic!("could not start redis-server on a free port after 10 attempts");
    }

    /// Waits until this process serves its port: its own log says it is
    /// ready for the `after + 1`th time (a restarted server appends to the
    /// log of the process before it). A PING would not do: another test's
    /// server that won the port answers it while this one is still failing
    /// to bind, and the test would run against that other server.
    fn wait_ready(&mut self, after: usize) -> Start {
        let deadline = Instant::now() + SERVER_READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait redis-server") {
                let log = self.log();
                if log.contains("Address already in use") {
                    return Start::PortTaken;
                }
                panic!(
                    "redis-server exited early ({status}) on port {}; its log:\n{log}",
                    self.port
                );
            }
            if self.times_ready() > after {
                return Start::Ready;
            }
            if Instant::now() > deadline {
                panic!(
                    "redis-server on port {} not ready after {:?}; its log:\n{}",
                    self.port,
                    SERVER_READY_TIMEOUT,
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// URL selecting database `db`.
    pub fn url_db(&self, db: u32) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    /// `host:port`, the form `REDIS_HOST` takes.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The temp directory owned by this server (also handy for rules files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A synchronous connection to db 0.
    pub fn conn(&self) -> redis::Connection {
        connect(&self.url())
    }

    /// A synchronous connection to database `db`.
    pub fn conn_db(&self, db: u32) -> redis::Connection {
        connect(&self.url_db(db))
    }

    /// A connection to a server started with `--requirepass`.
    pub fn conn_with_password(&self, password: &str) -> redis::Connection {
        connect(&format!("redis://:{password}@127.0.0.1:{}", self.port))
    }

    /// How many times a process logged that it serves this server's port
    /// (once it has bound its ports and loaded its data): a server, or a
    /// Sentinel, which logs no "Ready" line.
    fn times_ready(&self) -> usize {
        let log = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        log.lines()
            .filter(|line| {
                line.contains("Ready to accept connections") || line.contains("Sentinel ID is")
            })
            .count()
    }

    /// The server's log, and whatever it printed before the log was open.
    pub fn log(&self) -> String {
        let stdout =
            std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default();
        let log = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        format!("{stdout}{log}")
    }

    /// Kill the server with SIGKILL (no shutdown, no goodbye).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "---- redis-server log (port {}) ----\n{}---- end of redis-server log ----",
                self.port,
                self.log()
            );
        }
    }
}

/// PING over a raw socket; any reply (`+PONG`, `-NOAUTH ...`) except
/// `-LOADING` within a second means the server is accepting commands.
pub fn ping_raw(port: u16) -> bool {
    let addr = ([127, 0, 0, 1], port).into();
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(n) if n > 0 => {
            let reply = &buf[..n];
            (reply.starts_with(b"+") || reply.starts_with(b"-")) && !reply.starts_with(b"-LOADING")
        }
        _ => false,
    }
}

fn connect(url: &str) -> redis::Connection {
    let client = redis::Client::open(url).unwrap_or_else(|e| panic!("bad url {url}: {e}"));
    let con = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    con.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("set_read_timeout");
    con
}

// ---------------------------------------------------------------------------
// the janitor binary
// ---------------------------------------------------------------------------

/// Environment variables the binary reads; removed so the host's environment
/// never leaks into a test.
const SCRUBBED_ENV: &[&str] = &[
    "REDIS_URL",
    "REDIS_HOST",
    "REDIS_PASSWORD_FILE",
    "REDIS_TLS_CA_FILE",
    "REDIS_TLS_CERT_FILE",
    "REDIS_TLS_KEY_FILE",
    "REDIS_TLS_SERVER_NAME",
    "REDIS_TLS_INSECURE",
    "RUST_LOG",
    // The push to a Pushgateway honours proxies; the tests' are on loopback.
    "ALL_PROXY",
    "all_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// Builder over `std::process::Command` for the `redis-janitor` binary.
pub struct Janitor {
    cmd: Command,
    timeout: Duration,
}

/// A `redis-janitor` command with a scrubbed environment.
pub fn janitor() -> Janitor {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_redis-janitor"));
    for name in SCRUBBED_ENV {
        cmd.env_remove(name);
    }
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("JANITOR_") {
            cmd.env_remove(&name);
        }
    }
    // CI runs the fault tests once more in the declared-keys mode: the
    // same faults, the same guarantees.
    if let Ok(mode) = std::env::var(TEST_KEY_MODE) {
        cmd.env("JANITOR_KEY_MODE", mode);
    }
    cmd.stdin(Stdio::null());
    Janitor {
        cmd,
        timeout: JANITOR_TIMEOUT,
    }
}

/// The variable that sets `--key-mode` for every run of the tests (CI sets
/// it to `declared` for the fault tests).
pub const TEST_KEY_MODE: &str = "JANITOR_TEST_KEY_MODE";

/// Whether the tests run the job in the declared-keys mode (see
/// [`TEST_KEY_MODE`]), where a few guarantees differ by design (see
/// docs/declared-keys.md).
pub fn declared_mode() -> bool {
    std::env::var(TEST_KEY_MODE).is_ok_and(|mode| mode == "declared")
}

impl Janitor {
    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Override the time after which `run()` kills the binary and fails.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Run to completion (bounded by the timeout) and collect the outcome.
    pub fn run(self) -> Outcome {
        let timeout = self.timeout;
        self.start().wait_timeout(timeout)
    }

    /// Run with stdout on `/dev/full`, where every write fails (no space
    /// left on device); the outcome's stdout is empty.
    pub fn run_into_full_disk(mut self) -> Outcome {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("open /dev/full");
        let out = self
            .cmd
            .stdout(full)
            .stderr(Stdio::piped())
            .output()
            .expect("run redis-janitor");
        Outcome {
            code: exit_code(out.status),
            stdout: String::new(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            raw_stdout: Vec::new(),
            raw_stderr: out.stderr,
        }
    }

    /// Spawn with stdout/stderr piped; the caller owns the child.
    pub fn spawn(mut self) -> Child {
        self.cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn redis-janitor")
    }

    /// Spawn and immediately start draining stdout and stderr in the
    /// background (so a chatty child never blocks on a full pipe); stderr
    /// lines can be awaited while it runs.
    pub fn start(self) -> Running {
        let timeout = self.timeout;
        let mut child = self.spawn();
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        let out_thread = thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = BufReader::new(stdout).read_to_end(&mut buf);
            buf
        });
        let (line_tx, line_rx) = mpsc::channel();
        let err_buf = Arc::new(Mutex::new(Vec::new()));
        let err_buf2 = Arc::clone(&err_buf);
        let err_thread = thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        err_buf2.lock().unwrap().extend_from_slice(&line);
                        let _ = line_tx.send(String::from_utf8_lossy(&line).into_owned());
                    }
                }
            }
        });
        Running {
            child,
            out_thread: Some(out_thread),
            err_thread: Some(err_thread),
            err_buf,
            lines: line_rx,
            timeout,
        }
    }
}

/// A janitor process running in the background.
pub struct Running {
    child: Child,
    out_thread: Option<thread::JoinHandle<Vec<u8>>>,
    err_thread: Option<thread::JoinHandle<()>>,
    err_buf: Arc<Mutex<Vec<u8>>>,
    lines: mpsc::Receiver<String>,
    timeout: Duration,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has already exited.
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_some()
    }

    /// Stderr so far.
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.err_buf.lock().unwrap()).into_owned()
    }

    /// Wait (bounded) for a stderr line satisfying `pred`; returns it, or
    /// `None` if the process closed stderr or the time ran out first.
    pub fn wait_for_stderr(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return Some(line),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Send a signal by name (`"TERM"`, `"INT"`) with `kill(1)`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Wait with the builder's timeout.
    pub fn wait(self) -> Outcome {
        let timeout = self.timeout;
        self.wait_timeout(timeout)
    }

    /// Wait for exit; kill and panic (with the output so far) past `timeout`.
    pub fn wait_timeout(mut self, timeout: Duration) -> Outcome {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait redis-janitor") {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            thread::sleep(Duration::from_millis(5));
        };
        let stdout = self.out_thread.take().unwrap().join().unwrap_or_default();
        let _ = self.err_thread.take().unwrap().join();
        let raw_stderr = self.err_buf.lock().unwrap().clone();
        let outcome = Outcome {
            code: status.map(exit_code).unwrap_or(i32::MIN),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&raw_stderr).into_owned(),
            raw_stdout: stdout,
            raw_stderr,
        };
        if status.is_none() {
            panic!(
                "redis-janitor did not exit within {timeout:?}; killed it.\n{}",
                outcome.dump()
            );
        }
        outcome
    }
}

impl Drop for Running {
    /// A test that panics mid-run must not leave the binary running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Exit code, or `-signal` when the process was killed by a signal it did
/// not handle (so a test can tell "exited 143" from "died of SIGTERM").
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| -status.signal().unwrap_or(0))
}

/// What one janitor invocation did.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub raw_stdout: Vec<u8>,
    pub raw_stderr: Vec<u8>,
}

impl Outcome {
    /// Stdout and stderr, for failure messages.
    pub fn dump(&self) -> String {
        format!(
            "exit code: {}\n---- stdout ----\n{}\n---- stderr ----\n{}\n---- end ----",
            self.code, self.stdout, self.stderr
        )
    }

    /// Assert the exit code, printing stdout/stderr on mismatch.
    #[track_caller]
    pub fn assert_code(&self, expected: i32) -> &Self {
        assert_eq!(
            self.code,
            expected,
            "expected exit code {expected}, got {}\n{}",
            self.code,
            self.dump()
        );
        self
    }

    /// Parse stdout as exactly one JSON object (the report).
    #[track_caller]
    pub fn report(&self) -> Json {
        let mut values = serde_json::Deserializer::from_str(&self.stdout).into_iter::<Json>();
        let first = match values.next() {
            Some(Ok(v)) => v,
            Some(Err(e)) => panic!("stdout is not JSON ({e})\n{}", self.dump()),
            None => panic!("stdout is empty, expected one JSON object\n{}", self.dump()),
        };
        if let Some(extra) = values.next() {
            panic!(
                "stdout holds more than one JSON value (next: {extra:?})\n{}",
                self.dump()
            );
        }
        assert!(
            first.is_object(),
            "stdout JSON is not an object\n{}",
            self.dump()
        );
        check_report_shape(&first, self);
        first
    }

    /// Stderr with ANSI colour sequences removed, lines trimmed, blank lines
    /// dropped.
    pub fn stderr_lines(&self) -> Vec<String> {
        strip_ansi(&self.stderr)
            .lines()
            .map(|l| l.trim_end().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// Assert that stderr is exactly one non-empty line, and return it.
    #[track_caller]
    pub fn one_line_stderr(&self) -> String {
        let lines = self.stderr_lines();
        assert_eq!(
            lines.len(),
            1,
            "expected exactly one line on stderr\n{}",
            self.dump()
        );
        lines.into_iter().next().unwrap()
    }
}

/// Remove ANSI CSI escape sequences (`ESC [ ... letter`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn is_u64(v: &Json) -> bool {
    v.as_u64().is_some()
}

/// Every report carries every field with the right JSON type.
#[track_caller]
fn check_report_shape(r: &Json, o: &Outcome) {
    let mut problems = Vec::new();
    let mut need = |field: &str, ok: bool| {
        if !ok {
            problems.push(format!("{field}: {:?}", r.get(field)));
        }
    };
    need("complete", r["complete"].is_boolean());
    need("dry_run", r["dry_run"].is_boolean());
    need(
        "stopped_by",
        r["stopped_by"].is_null()
            || matches!(
                r["stopped_by"].as_str(),
                Some("max_runtime" | "sigterm" | "sigint" | "locked")
            ),
    );
    need(
        "error",
        r["error"].is_null() || r["error"].as_str().is_some_and(|e| !e.contains('\n')),
    );
    for f in [
        "keys_scanned",
        "keys_matched",
        "batches",
        "vanished",
        "unchanged",
        "script_reloads",
    ] {
        need(f, is_u64(&r[f]));
    }
    need(
        "duration_seconds",
        r["duration_seconds"].as_f64().is_some_and(|d| d >= 0.0),
    );
    need(
        "replica_pause_seconds",
        r["replica_pause_seconds"]
            .as_f64()
            .is_some_and(|d| d >= 0.0),
    );
    need(
        "rules",
        r["rules"].as_array().is_some_and(|rules| {
            rules.iter().all(|rule| {
                rule["name"].is_string()
                    && matches!(rule["action"].as_str(), Some("delete" | "expire"))
                    && is_u64(&rule["keys"])
            })
        }),
    );
    // The script variant depends on the server, so a run that failed before
    // it was chosen carries `script: null`.
    need(
        "script",
        r["script"].is_null()
            || r["script"]["name"].is_string()
                && r["script"]["version"].is_string()
                && r["script"]["sha"].as_str().is_some_and(is_sha1),
    );
    need(
        "server",
        r["server"].is_null()
            || ["address", "software", "version"]
                .iter()
                .all(|f| r["server"][f].is_string()),
    );
    // One state: complete, or stopped with a reason, or failed with an error.
    let states = [
        r["complete"] == true,
        !r["stopped_by"].is_null(),
        !r["error"].is_null(),
    ];
    need(
        "complete/stopped_by/error",
        states.iter().filter(|&&s| s).count() == 1,
    );
    // One entry per server, whose counts add up to the totals.
    let servers = r["servers"].as_array().cloned().unwrap_or_default();
    need(
        "servers",
        !servers.is_empty()
            && servers.iter().all(|s| {
                s["address"].is_string() && s["complete"].is_boolean() && is_u64(&s["keys_scanned"])
            }),
    );
    // The calls' share of a server's time, as the pacer charged them: at
    // most all of it.
    need(
        "servers' server_share",
        servers.iter().all(|s| {
            s["server_share"].is_null()
                || s["server_share"]
                    .as_f64()
                    .is_some_and(|share| (0.0..=1.0).contains(&share))
        }),
    );
    for f in [
        "keys_scanned",
        "keys_matched",
        "batches",
        "vanished",
        "unchanged",
    ] {
        let sum: u64 = servers.iter().filter_map(|s| s[f].as_u64()).sum();
        need(&format!("sum of servers' {f}"), r[f].as_u64() == Some(sum));
    }
    assert!(
        problems.is_empty(),
        "report fields missing or of the wrong type: {problems:?}\n{}",
        o.dump()
    );
}

/// 40 lowercase-or-uppercase hex characters.
pub fn is_sha1(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `keys` of the report's rule named `name` (panics if absent).
#[track_caller]
pub fn rule_keys(report: &Json, name: &str) -> u64 {
    report["rules"]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["name"] == name))
        .and_then(|r| r["keys"].as_u64())
        .unwrap_or_else(|| panic!("no rule {name:?} in report {report:#}"))
}

/// `[(name, action, keys)]` of the report, in report order.
pub fn rule_counts(report: &Json) -> Vec<(String, String, u64)> {
    report["rules"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .map(|r| {
                    (
                        r["name"].as_str().unwrap_or_default().to_string(),
                        r["action"].as_str().unwrap_or_default().to_string(),
                        r["keys"].as_u64().unwrap_or(u64::MAX),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The report's u64 field.
#[track_caller]
pub fn field(report: &Json, name: &str) -> u64 {
    report[name]
        .as_u64()
        .unwrap_or_else(|| panic!("report field {name} is not a u64: {report:#}"))
}

/// The bookkeeping identity: every matched key was acted on by a rule,
/// vanished, or left unchanged.
#[track_caller]
pub fn assert_matched_accounted(report: &Json) {
    let acted: u64 = rule_counts(report).iter().map(|(_, _, k)| k).sum();
    assert_eq!(
        field(report, "keys_matched"),
        acted + field(report, "vanished") + field(report, "unchanged") + field(report, "moved"),
        "keys_matched != sum(rules.keys) + vanished + unchanged + moved in {report:#}"
    );
}

/// Write `toml` to `dir/rules.toml` and return the path.
pub fn write_rules(dir: &Path, toml: &str) -> PathBuf {
    write_file(dir, "rules.toml", toml)
}

/// Write `contents` to `dir/name` and return the path.
pub fn write_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write file");
    path
}

// ---------------------------------------------------------------------------
// keyspace snapshots
// ---------------------------------------------------------------------------

/// Type and remaining TTL of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyState {
    /// `string`, `list`, `set`, `zset`, `hash`, `stream`.
    pub kind: String,
    /// PTTL in milliseconds; -1 when the key has no expiry.
    pub pttl: i64,
}

/// Every key of the connection's database with its type and PTTL, but the
/// job's own (the lease and the checkpoint, under the reserved prefix: see
/// [`state_keys`]).
pub fn keyspace(con: &mut redis::Connection) -> BTreeMap<Vec<u8>, KeyState> {
    keyspace_of(con, false)
}

/// The job's own keys in the connection's database, with their fields.
pub fn state_keys(con: &mut redis::Connection) -> BTreeMap<Vec<u8>, BTreeMap<String, String>> {
    let mut pattern = RESERVED_PREFIX.to_vec();
    pattern.push(b'*');
    let names: Vec<Vec<u8>> = redis::cmd("KEYS").arg(pattern).query(con).expect("KEYS");
    names
        .into_iter()
        .map(|name| {
            let fields = redis::cmd("HGETALL")
                .arg(&name)
                .query(con)
                .expect("HGETALL");
            (name, fields)
        })
        .collect()
}

/// The node's checkpoint (standalone), if there is one: its fields.
pub fn checkpoint(con: &mut redis::Connection) -> Option<BTreeMap<String, String>> {
    let fields: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(lease::state_keys(None).checkpoint)
        .query(con)
        .expect("HGETALL");
    (!fields.is_empty()).then_some(fields)
}

/// [`keyspace`], with `asking` each key asked for after `ASKING`: on a
/// cluster node, so that the keys of a slot it is importing answer too.
pub fn keyspace_of(con: &mut redis::Connection, asking: bool) -> BTreeMap<Vec<u8>, KeyState> {
    let mut names = BTreeSet::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(con)
            .expect("SCAN");
        names.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let names: Vec<Vec<u8>> = names.into_iter().collect();
    let mut out = BTreeMap::new();
    for chunk in names.chunks(500) {
        let mut pipe = redis::pipe();
        for key in chunk {
            if asking {
                pipe.cmd("ASKING").ignore();
            }
            pipe.cmd("TYPE").arg(key);
            if asking {
                pipe.cmd("ASKING").ignore();
            }
            pipe.cmd("PTTL").arg(key);
        }
        let replies: Vec<redis::Value> = pipe.query(con).expect("TYPE/PTTL pipeline");
        for (key, pair) in chunk.iter().zip(replies.chunks(2)) {
            let kind = match &pair[0] {
                redis::Value::SimpleString(s) => s.clone(),
                redis::Value::Okay => "OK".to_string(),
                redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                other => panic!("TYPE reply {other:?}"),
            };
            let pttl = match &pair[1] {
                redis::Value::Int(i) => *i,
                other => panic!("PTTL reply {other:?}"),
            };
            if kind != "none" && !key.starts_with(RESERVED_PREFIX) {
                out.insert(key.clone(), KeyState { kind, pttl });
            }
        }
    }
    out
}

/// Readable form of a key: printable ASCII as is, everything else escaped
/// (`\n`, `\x00`, `\xff`); very long keys are shortened.
pub fn show(key: &[u8]) -> String {
    let escaped: String = key
        .iter()
        .take(60)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    if key.len() > 60 {
        format!("\"{escaped}\"...({} bytes)", key.len())
    } else {
        format!("\"{escaped}\"")
    }
}

/// What a key's TTL should be after the run.
#[derive(Clone, Copy, Debug)]
pub enum Ttl {
    /// No expiry.
    Persistent,
    /// An expiry of about this many seconds (± `TTL_TOLERANCE_MS`).
    About(u64),
}

/// Expected final state of one key.
#[derive(Clone, Debug)]
pub struct Want {
    pub kind: String,
    pub ttl: Ttl,
}

impl Want {
    pub fn new(kind: &str, ttl: Ttl) -> Self {
        Want {
            kind: kind.to_string(),
            ttl,
        }
    }

    fn accepts(&self, s: &KeyState) -> bool {
        self.kind == s.kind
            && match self.ttl {
                Ttl::Persistent => s.pttl == -1,
                Ttl::About(secs) => {
                    s.pttl > 0 && (s.pttl - secs as i64 * 1000).abs() <= TTL_TOLERANCE_MS
                }
            }
    }
}

fn show_state(s: &KeyState) -> String {
    if s.pttl == -1 {
        format!("{} (no ttl)", s.kind)
    } else {
        format!("{} (pttl {} ms)", s.kind, s.pttl)
    }
}

fn show_want(w: &Want) -> String {
    match w.ttl {
        Ttl::Persistent => format!("{} (no ttl)", w.kind),
        Ttl::About(secs) => format!("{} (ttl ~{secs}s)", w.kind),
    }
}

/// Diff lines between an actual keyspace and the expectation; empty if they
/// agree.
pub fn keyspace_diff(
    actual: &BTreeMap<Vec<u8>, KeyState>,
    expected: &BTreeMap<Vec<u8>, Want>,
) -> Vec<String> {
    let mut diff = Vec::new();
    for (key, want) in expected {
        match actual.get(key) {
            None => diff.push(format!(
                "- missing    {}: want {}",
                show(key),
                show_want(want)
            )),
            Some(s) if !want.accepts(s) => diff.push(format!(
                "~ different  {}: want {}, got {}",
                show(key),
                show_want(want),
                show_state(s)
            )),
            Some(_) => {}
        }
    }
    for (key, s) in actual {
        if !expected.contains_key(key) {
            diff.push(format!("+ unexpected {}: {}", show(key), show_state(s)));
        }
    }
    diff
}

/// Assert that the database holds exactly `expected` (key, type, TTL).
#[track_caller]
pub fn assert_keyspace(con: &mut redis::Connection, expected: &[(&[u8], &str, Ttl)]) {
    let expected: BTreeMap<Vec<u8>, Want> = expected
        .iter()
        .map(|(k, kind, ttl)| (k.to_vec(), Want::new(kind, *ttl)))
        .collect();
    let actual = keyspace(con);
    let diff = keyspace_diff(&actual, &expected);
    assert!(
        diff.is_empty(),
        "keyspace differs from the expectation ({} keys present, {} expected):\n{}",
        actual.len(),
        expected.len(),
        diff.join("\n")
    );
}

/// Assert that two snapshots hold the same keys and types, and that TTLs only
/// went down by the time that passed (no key gained, lost or changed an
/// expiry).
#[track_caller]
pub fn assert_same_keyspace(
    before: &BTreeMap<Vec<u8>, KeyState>,
    after: &BTreeMap<Vec<u8>, KeyState>,
) {
    let expected: BTreeMap<Vec<u8>, Want> = before
        .iter()
        .map(|(k, s)| {
            let ttl = if s.pttl == -1 {
                Ttl::Persistent
            } else {
                Ttl::About((s.pttl as u64).div_ceil(1000))
            };
            (k.clone(), Want::new(&s.kind, ttl))
        })
        .collect();
    let diff = keyspace_diff(after, &expected);
    assert!(diff.is_empty(), "keyspace changed:\n{}", diff.join("\n"));
}

// ---------------------------------------------------------------------------
// seeding and server introspection
// ---------------------------------------------------------------------------

/// Create `key` holding a small value of type `kind`, with an expiry of
/// `ttl_secs` seconds if given.
pub fn seed(con: &mut impl redis::ConnectionLike, key: &[u8], kind: &str, ttl_secs: Option<u64>) {
    let c = match kind {
        "string" => {
            let mut c = redis::cmd("SET");
            c.arg(key).arg("v");
            c
        }
        "list" => {
            let mut c = redis::cmd("RPUSH");
            c.arg(key).arg("a").arg("b");
            c
        }
        "set" => {
            let mut c = redis::cmd("SADD");
            c.arg(key).arg("a").arg("b");
            c
        }
        "zset" => {
            let mut c = redis::cmd("ZADD");
            c.arg(key).arg(1).arg("a");
            c
        }
        "hash" => {
            let mut c = redis::cmd("HSET");
            c.arg(key).arg("f").arg("v");
            c
        }
        "stream" => {
            let mut c = redis::cmd("XADD");
            c.arg(key).arg("*").arg("f").arg("v");
            c
        }
        other => panic!("seed: unknown type {other}"),
    };
    c.exec(con).expect("seed key");
    if let Some(secs) = ttl_secs {
        redis::cmd("EXPIRE")
            .arg(key)
            .arg(secs)
            .exec(con)
            .expect("EXPIRE");
    }
}

/// Seed many keys at once: `(key, type, ttl_secs)`.
pub fn seed_all(con: &mut impl redis::ConnectionLike, keys: &[(&[u8], &str, Option<u64>)]) {
    for (key, kind, ttl) in keys {
        seed(con, key, kind, *ttl);
    }
}

/// `DEBUG POPULATE count prefix`: `count` string keys `prefix:0`.. without TTL.
pub fn populate(con: &mut redis::Connection, prefix: &str, count: u64) {
    redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(count)
        .arg(prefix)
        .exec(con)
        .expect("DEBUG POPULATE");
}

/// Make `key` look idle for `secs` seconds without sleeping:
/// DUMP + RESTORE key <pttl> payload REPLACE IDLETIME secs.
pub fn make_idle(con: &mut redis::Connection, key: &[u8], secs: u64) {
    let payload: Vec<u8> = redis::cmd("DUMP").arg(key).query(con).expect("DUMP");
    let pttl: i64 = redis::cmd("PTTL").arg(key).query(con).expect("PTTL");
    redis::cmd("RESTORE")
        .arg(key)
        .arg(pttl.max(0))
        .arg(payload)
        .arg("REPLACE")
        .arg("IDLETIME")
        .arg(secs)
        .exec(con)
        .expect("RESTORE IDLETIME");
}

/// `OBJECT IDLETIME key`.
pub fn idle_time(con: &mut redis::Connection, key: &[u8]) -> i64 {
    redis::cmd("OBJECT")
        .arg("IDLETIME")
        .arg(key)
        .query(con)
        .expect("OBJECT IDLETIME")
}

/// `DEBUG DIGEST`: changes with any value or expiry change, in any db.
pub fn digest(con: &mut redis::Connection) -> String {
    redis::cmd("DEBUG")
        .arg("DIGEST")
        .query(con)
        .expect("DEBUG DIGEST")
}

/// The keys of the connection's database, but the job's own.
pub fn dbsize(con: &mut redis::Connection) -> u64 {
    let all: u64 = redis::cmd("DBSIZE").query(con).expect("DBSIZE");
    all - state_keys(con).len() as u64
}

/// One `field:value` of `INFO section`.
pub fn info_field(con: &mut redis::Connection, section: &str, name: &str) -> Option<String> {
    let info: String = redis::cmd("INFO").arg(section).query(con).expect("INFO");
    info.lines().find_map(|l| {
        l.strip_prefix(&format!("{name}:"))
            .map(|v| v.trim().to_string())
    })
}

/// How many times `command` (lower case, e.g. `evalsha`) ran on the
/// server since its statistics were last reset (`INFO commandstats`).
pub fn calls_of(con: &mut redis::Connection, command: &str) -> u64 {
    command_stat(con, command, "calls")
}

/// The microseconds those calls of `command` took, by Redis's own clock.
pub fn usec_of(con: &mut redis::Connection, command: &str) -> u64 {
    command_stat(con, command, "usec")
}

/// The field `name` of `command`'s line in `INFO commandstats` (0 when
/// the command has not run).
fn command_stat(con: &mut redis::Connection, command: &str, name: &str) -> u64 {
    info_field(con, "commandstats", &format!("cmdstat_{command}"))
        .and_then(|stats| {
            stats.split(',').find_map(|kv| {
                kv.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('='))
                    .and_then(|n| n.parse().ok())
            })
        })
        .unwrap_or(0)
}

/// `redis_version` from INFO server (on Valkey, the Redis version it is
/// compatible with).
pub fn server_version(con: &mut redis::Connection) -> String {
    info_field(con, "server", "redis_version").expect("redis_version in INFO")
}

/// What the server is, as the report must name it: ("Valkey", its own
/// version) on Valkey, ("Redis", `redis_version`) otherwise.
pub fn software_and_version(con: &mut redis::Connection) -> (String, String) {
    match info_field(con, "server", "valkey_version") {
        Some(version) => ("Valkey".into(), version),
        None => ("Redis".into(), server_version(con)),
    }
}

/// The script dialect for the server behind `con`.
pub fn dialect(con: &mut redis::Connection) -> redis_janitor::script::Dialect {
    redis_janitor::script::Dialect::for_version(&server_version(con))
}

/// `CLIENT LIST`: one line per connection, with its `name=`.
pub fn client_list(con: &mut redis::Connection) -> String {
    redis::cmd("CLIENT")
        .arg("LIST")
        .query(con)
        .expect("CLIENT LIST")
}

/// `ACL SETUSER` from a line as `redis-janitor acl` prints it, with
/// `>PASSWORD` replaced by `password`.
pub fn acl_setuser(con: &mut redis::Connection, line: &str, password: &str) {
    let words: Vec<String> = line
        .split_whitespace()
        .map(|w| w.replace(">PASSWORD", &format!(">{password}")))
        .collect();
    assert_eq!(words[..2], ["ACL", "SETUSER"], "{line}");
    redis::cmd("ACL")
        .arg(&words[1..])
        .exec(con)
        .unwrap_or_else(|e| panic!("{line}: {e}"));
}

/// Connections accepted so far (includes the caller's own).
pub fn total_connections(con: &mut redis::Connection) -> u64 {
    info_field(con, "stats", "total_connections_received")
        .expect("total_connections_received")
        .parse()
        .expect("number")
}

/// Calls of EVAL/EVALSHA (and their _RO forms) completed so far.
pub fn script_calls(con: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(con)
        .expect("INFO commandstats");
    info.lines()
        .filter(|l| {
            [
                "cmdstat_evalsha:",
                "cmdstat_eval:",
                "cmdstat_evalsha_ro:",
                "cmdstat_eval_ro:",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .filter_map(|l| {
            l.split([':', ','])
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum()
}

/// Poll (bounded) until `cond` holds; panics with `what` on timeout.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(2));
    }
}

/// Arguments that let a pass go at full speed, for the tests that race a
/// pass with other clients many calls long and do not test its pace.
pub const FULL_SPEED: [&str; 2] = ["--max-server-share", "1"];

/// `redis-janitor run --url URL --output json`, the common invocation.
pub fn run_json(url: &str) -> Janitor {
    janitor().args(["run", "--url", url, "--output", "json"])
}

/// `expires=` of `db{db}` in INFO keyspace (0 when the db is empty), but
/// the job's own keys; `con` must be on `db`.
pub fn expires_count(con: &mut redis::Connection, db: u32) -> u64 {
    let all = info_field(con, "keyspace", &format!("db{db}"))
        .and_then(|v| {
            v.split(',')
                .find_map(|kv| kv.strip_prefix("expires="))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0);
    // The job's own keys all expire.
    all - state_keys(con).len() as u64
}

/// `run --output json` against `server` with `toml` as the rules file,
/// written to the server's directory.
pub fn run_with_rules(server: &RedisServer, toml: &str) -> Outcome {
    let rules = write_rules(server.dir(), toml);
    run_json(&server.url()).arg("--rules").arg(&rules).run()
}
