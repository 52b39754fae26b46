//! The benchmark's own `redis-server`: started on a free loopback port in a
//! temp dir (`--save "" --appendonly no`), killed when dropped and, through
//! PR_SET_PDEATHSIG, when the benchmark dies. Also reads the INFO counters
//! the benchmark compares before and after each run. Never touches 6379.

use std::collections::HashMap;
use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a fresh server may take to answer its first PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The major version `bin --version` prints (`Redis server v=7.0.15 ...`),
/// if it does.
fn major_version(bin: &str) -> Option<u32> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().find_map(|w| w.strip_prefix("v="))?;
    version.split('.').next()?.parse().ok()
}

/// A private redis-server process.
pub struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

/// The INFO counters read around each run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// Main thread CPU seconds, user + system.
    pub cpu_main: f64,
    /// Seconds Redis spent running scripts (`EVAL`, `EVALSHA` and their
    /// `_RO` forms), by its own command statistics: each call whole, its
    /// set-up and reply included, without the time spent on other clients.
    pub scripts: f64,
    /// Seconds Redis spent in `SCAN` commands, by the same statistics: those
    /// a script calls (counted in its call's time too) and those a client
    /// sends, such as the job's own in its declared-keys mode.
    pub scans: f64,
    /// Bytes read from clients.
    pub net_in: u64,
    /// Bytes written to clients.
    pub net_out: u64,
}

impl Server {
    /// Starts `bin` in `dir` on a free port, retrying on another port if one
    /// is raced away.
    pub fn start(bin: &str, dir: &Path) -> Result<Server, String> {
        Server::start_with(bin, dir, &[], free_port)
    }

    /// Starts `bin` in `dir` with `extra` arguments on a port from `port`
    /// (called again for each retry when a port is raced away).
    pub fn start_with(
        bin: &str,
        dir: &Path,
        extra: &[&str],
        port: fn() -> Result<u16, String>,
    ) -> Result<Server, String> {
        // DEBUG (see `settle`) is off by default from Redis 7 on, and
        // Redis 6.2 refuses the directive that turns it on.
        let debug: &[&str] = match major_version(bin) {
            Some(major) if major < 7 => &[],
            _ => &["--enable-debug-command", "yes"],
        };
        for attempt in 0..10 {
            let port = port()?;
            // The server logs to its standard output, into this file, where
            // a refused directive goes too.
            let log = dir.join(format!("redis-{attempt}.log"));
            let output =
                File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
            let errors = output
                .try_clone()
                .map_err(|e| format!("cannot reopen {}: {e}", log.display()))?;
            let mut cmd = Command::new(bin);
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir)
                .args(debug)
                // A script that runs long (the server-side bound) blocks other
                // clients instead of answering them BUSY: the PING client then
                // measures the whole block, and the bound is not slowed down.
                // (`lua-time-limit`: Redis 6.2's name, which 7 and later keep
                // for `busy-reply-threshold`.)
                .args(["--lua-time-limit", "0"])
                // Every command that holds Redis 2 ms or more goes to the slow
                // log, where the benchmark finds the longest of each run.
                .args(["--slowlog-log-slower-than", "2000"])
                .args(["--slowlog-max-len", "1024"])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(output)
                .stderr(errors);
            die_with_parent(&mut cmd);
            let child = cmd.spawn().map_err(|e| {
                format!("cannot run `{bin}`: {e} (install it: apt-get install redis-server)")
            })?;
            let mut server = Server { child, port, log };
            let deadline = Instant::now() + READY_TIMEOUT;
            loop {
                if let Ok(Some(status)) = server.child.try_wait() {
                    let log = server.log_tail();
                    if log.contains("Address already in use") {
                        break;
                    }
                    return Err(format!(
                        "redis-server exited early ({status}); its log:\n{log}"
                    ));
                }
                if server
                    .connect()
                    .is_ok_and(|mut c| redis::cmd("PING").query::<String>(&mut c).is_ok())
                {
                    return Ok(server);
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "redis-server not ready after {READY_TIMEOUT:?}; its log:\n{}",
                        server.log_tail()
                    ));
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        Err("could not start redis-server on a free port after 10 attempts".into())
    }

    /// The URL the job and the methods connect to.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new connection with a generous reply timeout (the server-side bound
    /// blocks the server for seconds).
    pub fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(self.url())?;
        let conn = client.get_connection_with_timeout(Duration::from_secs(5))?;
        conn.set_read_timeout(Some(Duration::from_secs(900)))?;
        conn.set_write_timeout(Some(Duration::from_secs(60)))?;
        Ok(conn)
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Fails when the server process has exited.
    pub fn alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "redis-server died ({status}); its log:\n{}",
                self.log_tail()
            )),
            Err(e) => Err(format!("cannot check redis-server: {e}")),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes the child get SIGKILL when the benchmark dies, so no redis-server is
/// left behind by a crash or a `kill -9` of the benchmark.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

/// One INFO section as a map of its `field:value` lines.
pub fn info(
    conn: &mut redis::Connection,
    section: &str,
) -> redis::RedisResult<HashMap<String, String>> {
    let text: String = redis::cmd("INFO").arg(section).query(conn)?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

/// The counters compared around a run.
pub fn counters(conn: &mut redis::Connection) -> redis::RedisResult<Counters> {
    let cpu = info(conn, "cpu")?;
    let stats = info(conn, "stats")?;
    let commands = info(conn, "commandstats")?;
    let secs = |names: &[&str]| {
        names
            .iter()
            .filter_map(|c| commands.get(&format!("cmdstat_{c}")))
            .filter_map(|s| s.split(',').find_map(|kv| kv.strip_prefix("usec=")))
            .filter_map(|usec| usec.parse::<f64>().ok())
            .sum::<f64>()
            / 1e6
    };
    let scripts = secs(&["evalsha", "evalsha_ro", "eval", "eval_ro"]);
    let scans = secs(&["scan"]);
    let f = |m: &HashMap<String, String>, k: &str| m.get(k).and_then(|v| v.parse::<f64>().ok());
    // Redis < 6.2 has no per-thread figures: fall back to the process's.
    let cpu_main = match (
        f(&cpu, "used_cpu_user_main_thread"),
        f(&cpu, "used_cpu_sys_main_thread"),
    ) {
        (Some(u), Some(s)) => u + s,
        _ => f(&cpu, "used_cpu_user").unwrap_or(0.0) + f(&cpu, "used_cpu_sys").unwrap_or(0.0),
    };
    let u = |k: &str| f(&stats, k).unwrap_or(0.0) as u64;
    Ok(Counters {
        cpu_main,
        scripts,
        scans,
        net_in: u("total_net_input_bytes"),
        net_out: u("total_net_output_bytes"),
    })
}

/// Empties the server, freeing the keys before it answers: a lazy free
/// (ASYNC) would run in a background thread during the next run.
pub fn flush(conn: &mut redis::Connection) -> Result<(), String> {
    redis::cmd("FLUSHALL")
        .arg("SYNC")
        .query::<()>(conn)
        .map_err(|e| format!("FLUSHALL: {e}"))
}

/// The number of keys the server holds.
pub fn dbsize(conn: &mut redis::Connection) -> Result<u64, String> {
    redis::cmd("DBSIZE")
        .query(conn)
        .map_err(|e| format!("DBSIZE: {e}"))
}

/// The longest command, in ms, since the last call (0 when none took 2 ms),
/// from the slow log, which this empties. Redis 7 also logs the commands a
/// script calls, but none takes longer than the script that called it.
pub fn longest_command(conn: &mut redis::Connection) -> redis::RedisResult<f64> {
    // An entry: id, timestamp, microseconds, arguments, client address, name.
    type Entry = (u64, u64, u64, redis::Value, redis::Value, redis::Value);
    let entries: Vec<Entry> = redis::cmd("SLOWLOG").arg("GET").arg(-1).query(conn)?;
    redis::cmd("SLOWLOG").arg("RESET").query::<()>(conn)?;
    let longest = entries.iter().map(|e| e.2).max().unwrap_or(0);
    Ok(longest as f64 / 1000.0)
}

/// Waits (up to 3 s) until the main dict is not rehashing, so that every run
/// starts from the same table layout. Needs the DEBUG command; skipped when
/// the server refuses it.
pub fn settle(conn: &mut redis::Connection) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        match redis::cmd("DEBUG")
            .arg("HTSTATS")
            .arg(0)
            .query::<String>(conn)
        {
            Ok(stats) if stats.contains("rehashing") => thread::sleep(Duration::from_millis(10)),
            _ => return,
        }
    }
}
