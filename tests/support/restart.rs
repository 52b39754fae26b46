//! A private server restarted on its own port, as an operator or a crash
//! restarts one: the old process ends (a clean `SHUTDOWN SAVE`, or SIGKILL),
//! and a new one starts with the same port, directory and log. The new
//! process has a new `run_id`, and loads the directory's `dump.rdb` if there
//! is one, so a test chooses which data come back: those at the shutdown,
//! those of an earlier `SAVE`, or none.

use super::*;

/// How the running process ends before the new one starts.
#[derive(Clone, Copy, Debug)]
pub enum Halt {
    /// `SHUTDOWN SAVE`: a clean stop that writes `dump.rdb` first, so the
    /// new process comes back with the data as they were at the stop.
    Shutdown,
    /// SIGKILL: the new process comes back with the last `dump.rdb` written
    /// (by an earlier `SAVE`), or empty.
    Kill,
}

impl RedisServer {
    /// Ends the process as `halt` says and starts a new one on the same
    /// port and directory, with `extra_args` (those the server was started
    /// with: the harness does not keep them). Returns once the new process
    /// logs that it is ready (its data loaded). Standalone servers of
    /// `REDIS_SERVER_BIN` only.
    pub fn restart(&mut self, halt: Halt, extra_args: &[&str]) {
        match halt {
            Halt::Shutdown => {
                // The server closes the connection instead of replying.
                let _ = redis::cmd("SHUTDOWN").arg("SAVE").exec(&mut self.conn());
                let status = self.child.wait().expect("wait for the server to stop");
                assert!(
                    status.success(),
                    "SHUTDOWN SAVE ended the server with {status}; its log:\n{}",
                    self.log()
                );
            }
            Halt::Kill => self.kill9(),
        }
        let ready_before = self.times_ready();
        let bin = server_bin();
        // The same arguments as `RedisServer::spawn`, on the same port.
        let debug: &[&str] = if major_version(&bin) >= 7 {
            &["--enable-debug-command", "yes"]
        } else {
            &[]
        };
        let stdout = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir.path().join("stdout.log"))
            .expect("open the server's stdout file");
        self.child = Command::new(&bin)
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&self.log_file)
            .args(debug)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{bin}` again: {e}"));
        match self.wait_ready(ready_before) {
            Start::Ready => {}
            Start::PortTaken => panic!(
                "port {} was taken by another process while its server restarted",
                self.port
            ),
        }
    }

    /// The server process's `run_id` (`INFO server`): a new one after every
    /// restart.
    pub fn run_id(&self) -> String {
        info_field(&mut self.conn(), "server", "run_id").expect("run_id in INFO server")
    }
}
