//! What the benchmark measures besides wall time: the latency a second client
//! sees (a thread on its own connection sending PING every millisecond), the
//! peak RSS, CPU time and exit status of a child process (run under GNU
//! `time`), and the small statistics (median, percentiles) the table is made of.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
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
    /// p99 corrected for coordinated omission: as seen by requests arriving
    /// every millisecond, including those the stalled prober did not send (a
    /// PING that took 5 ms stands for ones that would have waited 4, 3, 2 ms).
    pub p99_arrivals: f64,
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
        let mut conn = server
            .connect()
            .map_err(|e| format!("prober: connect: {e}"))?;
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
        let samples = self
            .handle
            .join()
            .map_err(|_| "prober: the thread panicked".to_string())??;
        Ok(summarize(samples))
    }
}

/// Summarizes round trips in microseconds of PINGs sent every [`PING_EVERY`].
fn summarize(mut samples: Vec<u32>) -> Latency {
    let interval = PING_EVERY.as_micros() as u32;
    let mut arrivals: Vec<u32> = Vec::with_capacity(samples.len());
    for &sample in &samples {
        let mut v = sample;
        arrivals.push(v);
        while v > interval {
            v -= interval;
            arrivals.push(v);
        }
    }
    samples.sort_unstable();
    arrivals.sort_unstable();
    let ms = |us: u32| f64::from(us) / 1000.0;
    Latency {
        count: samples.len() as u64,
        p50: percentile(&samples, 0.50).map_or(0.0, ms),
        p99: percentile(&samples, 0.99).map_or(0.0, ms),
        max: samples.last().copied().map_or(0.0, ms),
        p99_arrivals: percentile(&arrivals, 0.99).map_or(0.0, ms),
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

/// A confidence interval for the median of `values` that assumes nothing
/// about their distribution: the k-th smallest and the k-th largest value,
/// with k as large as keeps the chance that the median lies between them at
/// 95% or more (each value falls below the median with probability 1/2, so
/// that chance is a binomial sum). With fewer than 6 values no such k exists
/// and the interval is the whole range (93.75% for 5). Returns the interval
/// and its confidence.
pub fn median_interval(values: &[f64]) -> Option<(f64, f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    // below[j]: the chance that at most j of the n values fall below the median.
    let mut below = Vec::with_capacity(n);
    let (mut term, mut sum) = (0.5f64.powi(n as i32), 0.0);
    for j in 0..n {
        sum += term;
        below.push(sum);
        term *= (n - j) as f64 / (j + 1) as f64;
    }
    // The median lies outside [v[k-1], v[n-k]] with chance 2 * below[k-1].
    let k = (1..=n.div_ceil(2))
        .take_while(|&k| k == 1 || 2.0 * below[k - 1] <= 0.05)
        .last()
        .unwrap_or(1);
    Some((v[k - 1], v[n - k], 1.0 - 2.0 * below[k - 1]))
}

/// How a child process ended, with what it used.
#[derive(Debug)]
pub struct ChildRun {
    /// Exit code, or None when it died of a signal.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Peak resident set size, in KiB (ru_maxrss, as GNU time reports it).
    pub max_rss_kib: u64,
    /// CPU seconds it used, user + system.
    pub cpu: f64,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Whether the watchdog killed it.
    pub timed_out: bool,
}

/// GNU time (Debian package `time`; bench/run installs it when missing).
pub const TIME_BIN: &str = "/usr/bin/time";

/// What GNU time writes to its `-o` file: its child's peak RSS (KiB), user and
/// system CPU seconds, after a tag no line of its own starts with.
const TIME_FORMAT: &str = "bench-rusage %M %U %S";

/// A command to be run by [`run_child`]: `program` under GNU time, which
/// writes the program's rusage to `report`. Add arguments, environment and
/// stderr to `cmd` as to the program's own command.
///
/// Why not `wait4` on the program directly: on Linux, the `ru_maxrss` of an
/// exec'd child includes the high-water RSS of the memory it had before the
/// exec, which for a child of the benchmark is a copy of the benchmark's own
/// (after `naive`, which holds every key in this process, about 20 MiB). GNU
/// time forks the program from its own small process (1-2 MiB), so the
/// `ru_maxrss` it reports is the program's own peak.
pub struct Timed {
    pub cmd: Command,
    report: PathBuf,
}

impl Timed {
    pub fn new(program: impl AsRef<OsStr>, report: &Path) -> Timed {
        let mut cmd = Command::new(TIME_BIN);
        cmd.arg("-f")
            .arg(TIME_FORMAT)
            .arg("-o")
            .arg(report)
            .arg("--")
            .arg(program);
        Timed {
            cmd,
            report: report.to_path_buf(),
        }
    }
}

/// Runs the command (stdout captured, stdin closed) under GNU time and reads
/// its exit status, peak RSS and CPU time (its own, not time's) from time's
/// report. A watchdog kills time and the command after `timeout`.
pub fn run_child(timed: Timed, timeout: Duration) -> Result<ChildRun, String> {
    let Timed { mut cmd, report } = timed;
    if !Path::new(TIME_BIN).exists() {
        return Err(format!(
            "{TIME_BIN} is missing: install GNU time (Debian package `time`)"
        ));
    }
    let _ = std::fs::remove_file(&report);
    let mut run = run_and_reap(&mut cmd, timeout)?;
    let text = std::fs::read_to_string(&report);
    match text.as_deref().ok().and_then(parse_time_report) {
        Some((rss, cpu, signal)) => {
            run.max_rss_kib = rss;
            run.cpu = cpu;
            if signal.is_some() {
                // time exits 128 + the signal that killed the command.
                run.code = None;
                run.signal = signal;
            }
        }
        // time itself was killed (the watchdog) before it reported: keep its
        // own status, and no figures rather than time's.
        None if run.timed_out || run.signal.is_some() => {
            run.max_rss_kib = 0;
            run.cpu = 0.0;
        }
        None => {
            return Err(format!(
                "no report from {TIME_BIN} in {}: {text:?}",
                report.display()
            ));
        }
    }
    Ok(run)
}

/// Peak RSS (KiB), CPU seconds and, when the command died of one, the signal,
/// from GNU time's report.
fn parse_time_report(report: &str) -> Option<(u64, f64, Option<i32>)> {
    let mut signal = None;
    let mut figures = None;
    for line in report.lines() {
        if let Some(sig) = line.strip_prefix("Command terminated by signal ") {
            signal = Some(sig.trim().parse().ok()?);
        } else if let Some(rest) = line.strip_prefix("bench-rusage ") {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let [rss, user, sys] = f[..] else {
                return None;
            };
            let cpu = user.parse::<f64>().ok()? + sys.parse::<f64>().ok()?;
            figures = Some((rss.parse().ok()?, cpu));
        }
    }
    figures.map(|(rss, cpu)| (rss, cpu, signal))
}

/// Runs `cmd` (stdout captured, stdin closed) in its own process group and
/// reaps it with `wait4`. A watchdog kills the whole group (time and the
/// command it runs) after `timeout`.
fn run_and_reap(cmd: &mut Command, timeout: Duration) -> Result<ChildRun, String> {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0);
    die_with_parent(cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
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
                // SAFETY: plain syscall on the group of a pid that is still
                // ours (not reaped), so the group id cannot be reused.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
        })
    };
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    // Wait for the exit without reaping it (WNOWAIT): the watchdog is told the
    // child is done while its pid still cannot be reused.
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
        code,
        signal,
        max_rss_kib: usage.ru_maxrss as u64,
        cpu: timeval_secs(usage.ru_utime) + timeval_secs(usage.ru_stime),
        stdout,
        timed_out: timed_out.load(Ordering::Relaxed),
    })
}

fn timeval_secs(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

/// CPU seconds used so far, read around each run to see who used the CPUs.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuClock {
    /// The whole machine: all CPUs, the busy states of /proc/stat.
    pub machine: f64,
    /// The redis-server process, all its threads (all the servers' together
    /// in the cluster mode).
    pub redis: f64,
    /// This benchmark process, all its threads (the PING client included).
    pub bench: f64,
    /// The calling thread alone (it runs the in-process methods).
    pub thread: f64,
    /// CPU seconds the hypervisor gave to others while this VM wanted them
    /// (the steal column of /proc/stat).
    pub steal: f64,
    /// Page faults of Redis and of this benchmark (the PING client, the load)
    /// that had to read from disk: each one stalls its thread for the read.
    pub major_faults: u64,
}

impl CpuClock {
    pub fn now(redis_pid: u32) -> CpuClock {
        CpuClock::of(&[redis_pid])
    }

    /// The clocks now, `redis` summed over several servers (a cluster's nodes).
    pub fn of(redis_pids: &[u32]) -> CpuClock {
        let stat = |pid: &u32| format!("/proc/{pid}/stat");
        CpuClock {
            machine: machine_cpu().unwrap_or(0.0),
            redis: redis_pids
                .iter()
                .map(|pid| process_cpu(&stat(pid)).unwrap_or(0.0))
                .sum(),
            bench: process_cpu("/proc/self/stat").unwrap_or(0.0),
            thread: thread_cpu(),
            steal: stat_cpu_field(7).unwrap_or(0.0),
            major_faults: redis_pids
                .iter()
                .map(|pid| major_faults(&stat(pid)).unwrap_or(0))
                .sum::<u64>()
                + major_faults("/proc/self/stat").unwrap_or(0),
        }
    }
}

/// CPU seconds since boot of one column of the `cpu` line of /proc/stat.
fn stat_cpu_field(index: usize) -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let ticks: f64 = line.split_whitespace().nth(index)?.parse().ok()?;
    Some(ticks / clock_ticks())
}

/// The major page faults of the process whose stat file is `path`.
fn major_faults(path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    // majflt is field 12 of the line, 10 after the command name.
    let rest = &text[text.rfind(')')? + 2..];
    rest.split_whitespace().nth(9)?.parse().ok()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Busy CPU seconds of the whole machine since boot: user, nice, system, irq,
/// softirq and steal of the `cpu` line of /proc/stat.
fn machine_cpu() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<f64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| f.get(i))
        .sum::<f64>();
    Some(busy / clock_ticks())
}

/// CPU seconds (utime + stime) of the process whose stat file is `path`.
fn process_cpu(path: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// CPU seconds used by the calling thread.
fn thread_cpu() -> f64 {
    // SAFETY: a zeroed timespec is a valid out-parameter.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc == 0 {
        ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
    } else {
        0.0
    }
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
    fn one_long_stall_dominates_the_arrivals_view() {
        // 1000 quick PINGs and one that waited 500 ms: the plain p99 does not
        // see the stall, the arrivals view counts the 499 PINGs it swallowed.
        let mut samples = vec![100u32; 1000];
        samples.push(500_000);
        let l = summarize(samples);
        assert_eq!(l.count, 1001);
        assert_eq!(l.p99, 0.1);
        assert_eq!(l.max, 500.0);
        assert!(l.p99_arrivals > 400.0, "{l:?}");
    }

    #[test]
    fn cpu_clocks_advance_with_work() {
        let before = CpuClock::now(std::process::id());
        let mut x = 0u64;
        let until = Instant::now() + Duration::from_millis(100);
        while Instant::now() < until {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let after = CpuClock::now(std::process::id());
        assert!(after.thread - before.thread > 0.05, "{before:?} {after:?}");
        assert!(after.machine >= before.machine);
        assert!(after.redis >= before.redis);
    }

    #[test]
    fn median_intervals_are_order_statistics_of_at_least_95_percent() {
        // 5 values: only the whole range, 1 - 2/32 = 93.75%.
        let (lo, hi, conf) = median_interval(&[5.0, 1.0, 4.0, 2.0, 3.0]).unwrap();
        assert_eq!((lo, hi), (1.0, 5.0));
        assert!((conf - 0.9375).abs() < 1e-12);
        // 6 values: the whole range again, 1 - 2/64.
        let (lo, hi, conf) = median_interval(&[6.0, 1.0, 5.0, 2.0, 4.0, 3.0]).unwrap();
        assert_eq!((lo, hi), (1.0, 6.0));
        assert!((conf - 0.96875).abs() < 1e-12);
        // 20 values: the 6th smallest to the 6th largest (95.9%; the 7th
        // would give 88.5%).
        let twenty: Vec<f64> = (1..=20).rev().map(f64::from).collect();
        let (lo, hi, conf) = median_interval(&twenty).unwrap();
        assert_eq!((lo, hi), (6.0, 15.0));
        assert!((conf - 0.9586).abs() < 1e-4, "{conf}");
        assert_eq!(median_interval(&[]), None);
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn a_child_is_reaped_with_its_status_and_rss() {
        let dir = std::env::temp_dir().join(format!("janitor-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut timed = Timed::new("sh", &dir.join("status.rusage"));
        timed.cmd.args(["-c", "echo hi; exit 3"]);
        let run = run_child(timed, Duration::from_secs(10)).unwrap();
        assert_eq!(run.code, Some(3));
        assert_eq!(run.stdout, "hi\n");
        assert!(run.max_rss_kib > 0);
        assert!(!run.timed_out);

        let mut timed = Timed::new("sh", &dir.join("signal.rusage"));
        timed.cmd.args(["-c", "kill -TERM $$"]);
        let run = run_child(timed, Duration::from_secs(10)).unwrap();
        assert_eq!((run.code, run.signal), (None, Some(libc::SIGTERM)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_rss_is_the_childs_own_not_this_process_high_water_mark() {
        // Make this process's RSS high (64 MiB touched), then free it.
        let big = vec![1u8; 64 << 20];
        std::hint::black_box(&big);
        let dir = std::env::temp_dir().join(format!("janitor-bench-rss-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let timed = Timed::new("true", &dir.join("true.rusage"));
        let run = run_child(timed, Duration::from_secs(10)).unwrap();
        drop(big);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(run.code, Some(0));
        assert!(run.max_rss_kib < 16 << 10, "{} KiB", run.max_rss_kib);
    }

    #[test]
    fn time_reports_are_parsed() {
        assert_eq!(
            parse_time_report("bench-rusage 5120 0.25 0.05\n"),
            Some((5120, 0.3, None))
        );
        assert_eq!(
            parse_time_report("Command terminated by signal 9\nbench-rusage 1628 0.00 0.01\n"),
            Some((1628, 0.01, Some(9)))
        );
        assert_eq!(
            parse_time_report(
                "Command exited with non-zero status 3\nbench-rusage 1468 0.00 0.00\n"
            ),
            Some((1468, 0.0, None))
        );
        assert_eq!(parse_time_report(""), None);
    }

    #[test]
    fn the_watchdog_kills_a_child_that_runs_too_long() {
        let dir = std::env::temp_dir().join(format!("janitor-bench-dog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut timed = Timed::new("sleep", &dir.join("sleep.rusage"));
        timed.cmd.arg("30");
        let started = Instant::now();
        let run = run_child(timed, Duration::from_millis(100)).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(run.timed_out);
        assert_eq!(run.signal, Some(libc::SIGKILL));
        // The sleep was killed with time: stdout (held by both) closed at once.
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
