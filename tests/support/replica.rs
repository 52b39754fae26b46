//! A replica of a test server, and a way to make it lag for real: the
//! replica is started with `--replicaof` on a free port and is ready once
//! its link is up and the primary lists it online, caught up. Freezing it
//! (`SIGSTOP`) stops it reading the replication stream and acknowledging
//! its offset, which is exactly what a replica that cannot keep up looks
//! like to the primary: still online, its acknowledged offset falling
//! behind `master_repl_offset` by every byte written meanwhile.

use super::*;

/// How long a replica may take to sync, or to catch up.
const REPLICA_TIMEOUT: Duration = Duration::from_secs(30);

/// A replica of `primary`, in sync: its link up, the primary listing it
/// online with its offset acknowledged up to date. The primary's diskless
/// sync delay (5 s by default on Redis 7) is set to 0 first.
pub fn start_replica(primary: &RedisServer) -> RedisServer {
    let mut con = primary.conn();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("repl-diskless-sync-delay")
        .arg(0)
        .exec(&mut con)
        .expect("CONFIG SET repl-diskless-sync-delay");
    let port = primary.port().to_string();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    let mut replica_con = replica.conn();
    wait_until(REPLICA_TIMEOUT, "the replica's link to be up", || {
        info_field(&mut replica_con, "replication", "master_link_status").as_deref() == Some("up")
    });
    // A replica reports offset 0 until its first acknowledgement, and a
    // primary that wrote nothing since the sync is at offset 0 too: a
    // PUBLISH (which every primary replicates) moves the offset on, and WAIT
    // asks the replica to acknowledge it now rather than within a second.
    redis::cmd("PUBLISH")
        .arg("redis-janitor-tests")
        .arg("sync")
        .exec(&mut con)
        .expect("PUBLISH");
    let _: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(REPLICA_TIMEOUT.as_millis() as u64)
        .query(&mut con)
        .expect("WAIT");
    wait_until(
        REPLICA_TIMEOUT,
        "the primary to list the replica online and caught up",
        || replica_lag(&mut con) == Some(0),
    );
    replica
}

/// The lag of the primary's one online replica that has acknowledged
/// anything: `master_repl_offset` minus the offset it acknowledged. Read
/// here apart from the job's own reading, which it checks.
pub fn replica_lag(primary: &mut redis::Connection) -> Option<u64> {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(primary)
        .expect("INFO replication");
    let field = |line: &str, name: &str| -> Option<u64> {
        line.split([':', ','])
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
    };
    let master: u64 = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("master_repl_offset:"))?
        .parse()
        .ok()?;
    let line = info.lines().find(|l| l.starts_with("slave0:"))?;
    let offset = field(line, "offset").filter(|&o| o > 0)?;
    line.contains("state=online")
        .then(|| master.saturating_sub(offset))
}

/// Waits until `replica` has applied everything `primary` wrote so far.
pub fn wait_caught_up(primary: &RedisServer, replica: &RedisServer) {
    let offset = |server: &RedisServer, name: &str| -> u64 {
        info_field(&mut server.conn(), "replication", name)
            .and_then(|o| o.parse().ok())
            .unwrap_or(0)
    };
    let written = offset(primary, "master_repl_offset");
    wait_until(REPLICA_TIMEOUT, "the replica to catch up", || {
        offset(replica, "slave_repl_offset") >= written
    });
}

impl RedisServer {
    /// Stops the server's process (`SIGSTOP`) and waits until the kernel
    /// shows it stopped: from then on it reads, applies and acknowledges
    /// nothing. Its connections stay open.
    pub fn freeze(&self) {
        self.signal_and_wait("STOP", "the server to stop", |state| state == 'T');
    }

    /// Lets a frozen server go on (`SIGCONT`).
    pub fn thaw(&self) {
        self.signal_and_wait("CONT", "the server to go on", |state| state != 'T');
    }

    fn signal_and_wait(&self, signal: &str, what: &str, done: impl Fn(char) -> bool) {
        let pid = self.child.id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -{signal} {pid} failed");
        wait_until(Duration::from_secs(5), what, || {
            process_state(pid).is_some_and(&done)
        });
    }
}

/// The state letter of process `pid` in `/proc/PID/stat` (`R`, `S`, `T`
/// for stopped...).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name, in parentheses, may hold spaces: the state follows the
    // last closing one.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}
