//! What the benchmark measures besides wall time: the latency a second client
//! sees (a thread on its own connection sending PING every millisecond), the
//! peak RSS and exit status of a child process (`wait4`), and the small
//! statistics (median, percentiles) the table is made of.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::server::{Server, die_with_parent};

/// How often the second client sends PING.
const PING_EVERY: Duration = Duration::from_millis(1);

/// Latency seen by the second client during one run, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    /// PINGs sent.
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// A thread sending PING every millisecond on its own connection, recording
/// each round trip. A PING that takes longer delays the next one (no burst).
pub struct Prober {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<Vec<u32>, String>>,
}

impl Prober {
    /// Connects, checks the connection, and starts pinging.
    pub fn start(server: &Server) -> Result<Prober, String> {
        let mut conn = server.connect().map_err(|e| format!("prober: connect: {e}"))?;
        redis::cmd("PING")
            .query::<String>(&mut conn)
            .map_err(|e| format!("prober: PING: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            let mut samples: Vec<u32> = Vec::with_capacity(1 << 16);
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let sent = Instant::now();
                redis::cmd("PING")
                    .query::<String>(&mut conn)
                    .map_err(|e| format!("prober: PING: {e}"))?;
                samples.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                next += PING_EVERY;
                let now = Instant::now();
                if next > now {
                    thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
            Ok(samples)
        });
        Ok(Prober { stop, handle })
    }

    /// Stops pinging and summarizes what it saw.
    pub fn finish(self) -> Result<Latency, String> {
        self.stop.store(true, Ordering::Relaxed);
        let mut samples = self
            .handle
            .join()
            .map_err(|_| "prober: the thread panicked".to_string())??;
        samples.sort_unstable();
        let ms = |us: u32| f64::from(us) / 1000.0;
        Ok(Latency {
            count: samples.len() as u64,
            p50: percentile(&samples, 0.50).map_or(0.0, ms),
            p99: percentile(&samples, 0.99).map_or(0.0, ms),
            max: samples.last().copied().map_or(0.0, ms),
        })
    }
}

/// The nearest-rank percentile `p` (0 to 1) of sorted `values`.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The median of `values` (the mean of the two middle ones for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// How a child process ended, with what it used.
#[derive(Debug)]
pub struct ChildRun {
    /// From spawn to exit.
    pub wall: Duration,
    /// Exit code, or None when it died of a signal.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Peak resident set size, in KiB (getrusage's ru_maxrss).
    pub max_rss_kib: u64,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Whether the watchdog killed it.
    pub timed_out: bool,
}

/// Runs `cmd` (stdout captured, stdin closed) and reaps it with `wait4` to
/// read its peak RSS. A watchdog kills it after `timeout`.
pub fn run_child(mut cmd: Command, timeout: Duration) -> Result<ChildRun, String> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    die_with_parent(&mut cmd);
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let pid = child.id() as libc::pid_t;
    // The watchdog kills only a child not yet marked done; the child is marked
    // done while it is still an unreaped zombie, so its pid cannot be reused.
    let done = Arc::new((Mutex::new(false), Condvar::new()));
    let timed_out = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        let timed_out = timed_out.clone();
        thread::spawn(move || {
            let (lock, cvar) = &*done;
            let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
            let (guard, _) = cvar
                .wait_timeout_while(guard, timeout, |done| !*done)
                .unwrap_or_else(|e| e.into_inner());
            if !*guard {
                timed_out.store(true, Ordering::Relaxed);
                // SAFETY: plain syscall on a pid that is still ours (not reaped).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        })
    };
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    // Wait for the exit without reaping (WNOWAIT), so the wall time ends at the
    // exit itself.
    loop {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("waitid: {err}"));
        }
    }
    let wall = started.elapsed();
    {
        let (lock, cvar) = &*done;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cvar.notify_all();
    }
    let _ = watchdog.join();
    let mut status: libc::c_int = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("wait4: {err}"));
        }
    }
    let (code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    };
    Ok(ChildRun {
        wall,
        code,
        signal,
        max_rss_kib: usage.ru_maxrss as u64,
        stdout,
        timed_out: timed_out.load(Ordering::Relaxed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), Some(50));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&v, 1.0), Some(100));
        assert_eq!(percentile(&[7u32], 0.99), Some(7));
        assert_eq!(percentile::<u32>(&[], 0.5), None);
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn a_child_is_reaped_with_its_status_and_rss() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo hi; exit 3"]);
        let run = run_child(cmd, Duration::from_secs(10)).unwrap();
        assert_eq!(run.code, Some(3));
        assert_eq!(run.stdout, "hi\n");
        assert!(run.max_rss_kib > 0);
        assert!(!run.timed_out);
    }

    #[test]
    fn the_watchdog_kills_a_child_that_runs_too_long() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let run = run_child(cmd, Duration::from_millis(100)).unwrap();
        assert!(run.timed_out);
        assert_eq!(run.signal, Some(libc::SIGKILL));
    }
}
