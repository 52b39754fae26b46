//! janitor-bench: starts a private redis-server, and for each repetition and
//! each method (in alternating order) seeds a fresh keyspace, runs the method
//! while measuring wall time, Redis main-thread CPU, a second client's PING
//! latency and the job's peak RSS, checks the keyspace it left, and finally
//! prints the table of medians and ratios to the server-side bound. With
//! `--impact`, it instead runs each method under a fixed-rate GET/SET load
//! and reports what the pass cost that load (`impact`); with `--cluster`, it
//! runs the job on a Redis Cluster and on a single node holding the same
//! keys (`topology`). Run it through `bench/run` (see bench/README.md).
//!
//! Layout:
//! - `server`: the private redis-server and its INFO counters;
//! - `keyspace`: the key mix, seeding it, checking what a method left;
//! - `methods`: the ways of cleaning (the job, the alternatives);
//! - `measure`: PING latency, child processes under GNU time, CPU clocks, statistics;
//! - `table`: the main mode's tables;
//! - `load`: the impact mode's open-loop GET/SET load;
//! - `impact`: the impact mode: capacity, scenarios under load, its table and verdicts;
//! - `cluster`: the cluster mode's private Redis Cluster, seeded by slot;
//! - `topology`: the cluster mode: a cluster pass against a single-node pass, its tables;
//! - `pin`: keeps the measured processes' code in memory.

mod cluster;
mod impact;
mod keyspace;
mod load;
mod measure;
mod methods;
mod pin;
mod server;
mod table;
mod topology;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use clap::Parser;

use keyspace::{Class, Expect, Mix};
use measure::{CpuClock, Latency, Prober};
use methods::{Acted, JobSetup, Method, Outcome};
use server::Server;

/// Benchmarks redis-janitor against the alternatives on a redis-server it
/// starts itself (never the one on 6379).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Keys to seed for each run [default: 1000000; 20000 with --quick]
    #[arg(long)]
    keys: Option<u64>,
    /// Repetitions of every method [default: 5; 1 with --quick, --rss-scaling or --impact]
    #[arg(long)]
    reps: Option<usize>,
    /// Methods to run, comma-separated, in this order (reversed every other
    /// repetition): janitor, janitor+freed, janitor+declared, janitor@SHARE,
    /// declared@SHARE, pipeline, declared-floor, bound, scan, naive
    /// [default: janitor,janitor+freed,janitor+declared,pipeline,declared-floor,bound,scan,naive; with --impact: janitor,pipeline,naive]
    #[arg(long, value_delimiter = ',')]
    methods: Option<Vec<Method>>,
    /// Also run the job capped at each of these shares of Redis's time
    /// (methods janitor@SHARE, job arguments from --share-args; and
    /// declared@SHARE too when the methods include the declared-keys mode)
    /// [default: none; with --impact: 0.1,0.25,0.5 when the job has the flag]
    #[arg(long, alias = "janitor-shares", value_delimiter = ',')]
    shares: Option<Vec<String>>,
    /// The job arguments of janitor@SHARE, `{}` standing for the share
    #[arg(
        long,
        allow_hyphen_values = true,
        default_value = "--max-server-share {}"
    )]
    share_args: String,
    /// Run the slow naive method only in the first N repetitions [default: all]
    #[arg(long)]
    naive_reps: Option<usize>,
    /// Smoke mode for CI: 20000 keys, 1 repetition; exits non-zero if any check fails
    #[arg(long)]
    quick: bool,
    /// Extra arguments for `redis-janitor run`, split on whitespace (e.g. "--batch-size 500")
    #[arg(long, allow_hyphen_values = true, default_value = "")]
    job_args: String,
    /// Instead of the table: run the job alone at each of --rss-keys and compare its peak RSS
    #[arg(long)]
    rss_scaling: bool,
    /// Keyspace sizes for --rss-scaling
    #[arg(long, value_delimiter = ',', default_value = "1000000,5000000")]
    rss_keys: Vec<u64>,
    /// The redis-janitor binary [default: target/release/redis-janitor of this repository]
    #[arg(long)]
    job_bin: Option<PathBuf>,
    /// The redis-server binary [default: $REDIS_SERVER_BIN, else redis-server]
    #[arg(long)]
    redis_server: Option<String>,
    /// Kill the job if one run takes longer than this many seconds
    #[arg(long, default_value_t = 600)]
    job_timeout: u64,
    /// Keep the temp dir (redis log, job logs) instead of deleting it
    #[arg(long)]
    keep_tmp: bool,
    /// Instead of the table: run each method under a fixed-rate GET/SET load
    /// and report the load's latency (see bench/README.md)
    #[arg(long)]
    impact: bool,
    #[command(flatten)]
    impact_args: impact::ImpactArgs,
    /// Instead of the table: the job on a Redis Cluster and on a single node
    /// holding the same keys, at its default pace and at full speed (see
    /// bench/README.md)
    #[arg(long, conflicts_with_all = ["impact", "rss_scaling", "methods", "shares", "naive_reps"])]
    cluster: bool,
    /// With --cluster: the cluster's primaries
    #[arg(long, default_value_t = 3)]
    cluster_primaries: usize,
}

/// One measured run of one method.
#[derive(Debug)]
pub struct Run {
    pub method: Method,
    pub rep: usize,
    pub keys: u64,
    /// Wall time of the method, in seconds.
    pub wall: f64,
    /// Redis main-thread CPU seconds during the method.
    pub cpu: f64,
    /// Seconds Redis spent on the job's commands during the method (its
    /// command statistics): its script calls and, in the declared-keys mode,
    /// its own SCANs (see [`Method::own_secs`]); over the wall time, a capped
    /// job's own share of Redis's time.
    pub scripts: f64,
    pub latency: Latency,
    /// The longest any command held Redis during the run, in ms, from the
    /// slow log (0 when none took 2 ms).
    pub longest_ms: f64,
    pub rss_kib: Option<u64>,
    /// Bytes the clients sent to / received from Redis (the PINGs excluded).
    pub net_in: u64,
    pub net_out: u64,
    /// CPU seconds of the client doing the work: the job process, or the
    /// benchmark's thread that runs an in-process method.
    pub client_cpu: f64,
    /// CPU seconds that neither Redis, the benchmark nor the job used during
    /// the run: other work on the machine, i.e. noise.
    pub other_cpu: f64,
    pub outcome: Outcome,
    /// Everything found wrong: the run then counts as failed.
    pub problems: Vec<String>,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Whether other work on the machine used more than a tenth of a CPU on
    /// average during the run: its figures are then suspect. (CPU times are
    /// counted in 10 ms ticks: below 50 ms, nothing can be told.)
    pub fn noisy(&self) -> bool {
        self.other_cpu > (0.1 * self.wall).max(0.05)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match bench(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("FAILED: some runs did not leave the keyspace exactly right (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The repository root, where the job is built.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Everything a run needs.
pub struct Bench {
    server: Server,
    ctl: redis::Connection,
    tmp: PathBuf,
    /// The private copy of the job that the runs use.
    job_bin: PathBuf,
    /// Where it was copied from.
    job_src: PathBuf,
    job_args: Vec<String>,
    /// What makes the `janitor` method run at full speed: `--max-server-share
    /// 1.0` when the binary has that flag (its default is gentle), else
    /// nothing (an older binary always runs at full speed).
    full_speed: Vec<String>,
    /// The job arguments of `janitor@S`, `{}` standing for S.
    share_args: String,
    job_timeout: Duration,
}

/// A temp dir removed on drop (unless kept).
struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The job's flag for its cap on Redis's time.
const SHARE_FLAG: &str = "--max-server-share";

/// The job's flag that estimates the memory its deletes give back.
const FREED_FLAG: &str = "--estimate-freed";

/// The job's flag that chooses how its calls get their keys, and its value
/// for the declared-keys mode.
const KEY_MODE_FLAG: &str = "--key-mode";
const DECLARED: &str = "declared";

/// The help text of `redis-janitor run`, read once to learn its flags.
fn job_help(job_bin: &Path) -> Result<String, String> {
    let out = Command::new(job_bin)
        .args(["run", "--help"])
        .output()
        .map_err(|e| format!("cannot run {} run --help: {e}", job_bin.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `help` lists `flag` as an option (not as part of another one).
fn has_flag(help: &str, flag: &str) -> bool {
    help.split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[' || c == ']')
        .any(|word| word == flag)
}

fn bench(args: Args) -> Result<bool, String> {
    let keys = args
        .keys
        .unwrap_or(if args.quick { 20_000 } else { 1_000_000 });
    let reps = args
        .reps
        .unwrap_or(if args.quick || args.rss_scaling || args.impact {
            1
        } else {
            5
        });
    let naive_reps = args.naive_reps.unwrap_or(reps).min(reps);
    let job_bin = args
        .job_bin
        .clone()
        .unwrap_or_else(|| repo_root().join("target/release/redis-janitor"));
    if !job_bin.exists() {
        return Err(format!(
            "no job binary at {} (build it: cargo build --release, or use bench/run)",
            job_bin.display()
        ));
    }
    let redis_bin = args
        .redis_server
        .clone()
        .or_else(|| std::env::var("REDIS_SERVER_BIN").ok())
        .unwrap_or_else(|| "redis-server".into());
    let help = job_help(&job_bin)?;
    let full_speed: Vec<String> = if has_flag(&help, SHARE_FLAG) {
        vec![SHARE_FLAG.into(), "1.0".into()]
    } else {
        Vec::new()
    };
    if args.cluster && full_speed.is_empty() {
        return Err(format!(
            "--cluster runs the job at its default pace and at full speed, but `redis-janitor run --help` \
             has no {SHARE_FLAG}"
        ));
    }
    let mut notes = Vec::new();
    let methods = resolve_methods(&args, &help, &mut notes)?;
    // The cluster mode's declared-keys runs need the job's --key-mode.
    let declared = has_flag(&help, KEY_MODE_FLAG);
    if args.cluster && !declared {
        notes.push(format!(
            "the job has no {KEY_MODE_FLAG}: no declared-keys runs"
        ));
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = TempDir {
        path: std::env::temp_dir().join(format!("janitor-bench-{}-{nanos}", std::process::id())),
        keep: args.keep_tmp,
    };
    std::fs::create_dir_all(&tmp.path)
        .map_err(|e| format!("create {}: {e}", tmp.path.display()))?;
    // Run a private copy: a rebuild of the job during the benchmark (another
    // engineer at work) must not change the binary between runs.
    let job_copy = tmp.path.join("redis-janitor");
    std::fs::copy(&job_bin, &job_copy)
        .map_err(|e| format!("copy {} to {}: {e}", job_bin.display(), job_copy.display()))?;
    let server = Server::start(&redis_bin, &tmp.path)?;
    let ctl = server.connect().map_err(|e| format!("connect: {e}"))?;
    // Held to the end: the code of Redis, the job and the benchmark stays in
    // memory (see pin.rs).
    let (_pins, pinned_bytes) = pin::pin_code(
        &[server.pid().to_string(), "self".to_string()],
        &[job_copy.clone(), PathBuf::from(measure::TIME_BIN)],
    );
    let mut bench = Bench {
        server,
        ctl,
        tmp: tmp.path.clone(),
        job_bin: job_copy,
        job_src: job_bin,
        job_args: args.job_args.split_whitespace().map(String::from).collect(),
        full_speed,
        share_args: args.share_args.clone(),
        job_timeout: Duration::from_secs(args.job_timeout),
    };
    let header = header(&mut bench, &args, keys, reps, naive_reps, &methods);
    println!("{header}");
    println!(
        "pinned:  {:.1} MiB of code in memory (redis-server, the job, the benchmark, their libraries)",
        pinned_bytes as f64 / (1024.0 * 1024.0)
    );
    for note in &notes {
        println!("note:    {note}");
    }
    let started = Instant::now();
    if args.cluster {
        let primaries = args.cluster_primaries;
        let ok = topology::run(&mut bench, &redis_bin, primaries, keys, reps, declared)?;
        println!(
            "total benchmark time: {:.0} s (the cluster's start, seeding and checks included); load average \
             at the end: {}",
            started.elapsed().as_secs_f64(),
            loadavg()
        );
        return Ok(ok);
    }
    if args.impact {
        let ok = impact::run(
            &mut bench,
            &args.impact_args,
            &methods,
            keys,
            reps,
            naive_reps,
            args.quick,
        )?;
        println!(
            "total benchmark time: {:.0} s; load average at the end: {}",
            started.elapsed().as_secs_f64(),
            loadavg()
        );
        return Ok(ok);
    }
    let runs = if args.rss_scaling {
        let mut runs = Vec::new();
        for &n in &args.rss_keys {
            for rep in 0..reps {
                runs.push(bench.run_one(&Method::Janitor, rep, n)?);
            }
        }
        println!("{}", table::rss_scaling(&runs, &args.rss_keys));
        runs
    } else {
        let mut runs = Vec::new();
        for rep in 0..reps {
            let mut order: Vec<&Method> = methods
                .iter()
                .filter(|&m| *m != Method::Naive || rep < naive_reps)
                .collect();
            if rep % 2 == 1 {
                order.reverse();
            }
            for method in order {
                runs.push(bench.run_one(method, rep, keys)?);
            }
        }
        println!("{}", table::main_table(&runs, &methods, keys));
        println!("{}", table::runs_list(&runs));
        runs
    };
    let ok = runs.iter().all(Run::ok);
    let noisy = runs.iter().filter(|r| r.noisy()).count();
    let total = runs.len();
    println!(
        "total benchmark time: {:.0} s (seeding and checks included); load average at the end: {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    if noisy > 0 {
        println!(
            "WARNING: in {noisy} of {total} runs, other work on the machine used more than 10% of a CPU \
             (column `other CPU`): those figures are disturbed; rerun on a quiet machine"
        );
    }
    if ok {
        println!("all final keyspace checks passed");
    }
    Ok(ok)
}

/// The methods to run, in order, without duplicates: --methods (or the
/// mode's default), then janitor@S for each of --shares. Capped runs need
/// the flag of --share-args: given --shares fail without it; the impact
/// mode's default shares are then left out, with a note.
fn resolve_methods(
    args: &Args,
    help: &str,
    notes: &mut Vec<String>,
) -> Result<Vec<Method>, String> {
    let default: &[Method] = if args.impact {
        &[Method::Janitor, Method::Pipeline, Method::Naive]
    } else {
        &[
            Method::Janitor,
            Method::JanitorFreed,
            Method::JanitorDeclared,
            Method::Pipeline,
            Method::DeclaredFloor,
            Method::Bound,
            Method::Scan,
            Method::Naive,
        ]
    };
    let mut wanted: Vec<Method> = match &args.methods {
        Some(methods) => methods.clone(),
        None => {
            // An older binary without the estimate or the declared-keys
            // mode: their rows are left out.
            let mut methods = default.to_vec();
            for (flag, method) in [
                (FREED_FLAG, Method::JanitorFreed),
                (KEY_MODE_FLAG, Method::JanitorDeclared),
            ] {
                if methods.contains(&method) && !has_flag(help, flag) {
                    notes.push(format!("the job has no {flag}: no {} runs", method.name()));
                    methods.retain(|m| *m != method);
                }
            }
            methods
        }
    };
    if wanted.iter().any(Method::declares) && !has_flag(help, KEY_MODE_FLAG) {
        return Err(format!(
            "the declared-keys methods run the job with `{KEY_MODE_FLAG} {DECLARED}`, but `redis-janitor run \
             --help` has no {KEY_MODE_FLAG}"
        ));
    }
    // --shares adds the capped job in each mode that runs: the declared-keys
    // one too when one of its methods does.
    let declared_too = wanted.iter().any(Method::declares);
    let share_flag = args.share_args.split_whitespace().next().unwrap_or("");
    let can_cap = !share_flag.is_empty() && has_flag(help, share_flag);
    let shares: Vec<String> = match &args.shares {
        Some(shares) => shares.iter().filter(|s| !s.is_empty()).cloned().collect(),
        None if args.impact && can_cap => {
            let mut shares: Vec<String> = if args.quick {
                vec!["0.25".into()]
            } else {
                ["0.1", "0.25", "0.5"].map(String::from).to_vec()
            };
            if let Some(d) = &args.impact_args.default_share
                && !shares.contains(d)
            {
                shares.push(d.clone());
            }
            shares
        }
        None if args.impact => {
            notes.push(format!(
                "the job has no {share_flag}: no janitor@SHARE runs (give --share-args to cap it otherwise)"
            ));
            Vec::new()
        }
        None => Vec::new(),
    };
    for share in shares {
        wanted.push(format!("janitor@{share}").parse()?);
        if declared_too {
            wanted.push(format!("declared@{share}").parse()?);
        }
    }
    let mut methods: Vec<Method> = Vec::new();
    for m in wanted {
        if !methods.contains(&m) {
            methods.push(m);
        }
    }
    if methods.iter().any(|m| m.cap_arg().is_some()) && !can_cap {
        return Err(format!(
            "janitor@SHARE (and declared@SHARE) runs the job with `{}`, but `redis-janitor run --help` has no {share_flag:?} \
             (an older binary? give --share-args, e.g. \"--rate-limit {{}}\")",
            args.share_args
        ));
    }
    Ok(methods)
}

impl Bench {
    /// The arguments of `redis-janitor run` for a job method, after `--url
    /// URL --output json`: its cap (or full speed), then --job-args.
    pub fn job_args(&self, method: &Method) -> Vec<String> {
        let mut args = match method.cap_arg() {
            Some(share) => self
                .share_args
                .replace("{}", share)
                .split_whitespace()
                .map(String::from)
                .collect(),
            None => self.full_speed.clone(),
        };
        if *method == Method::JanitorFreed {
            args.push(FREED_FLAG.into());
        }
        if method.declares() {
            args.extend([KEY_MODE_FLAG.into(), DECLARED.into()]);
        }
        args.extend(self.job_args.iter().cloned());
        args
    }

    /// Flushes the server and seeds a fresh keyspace of `keys` keys. Returns
    /// its mix, when seeding started, and how long it took in seconds.
    pub fn fresh_keyspace(&mut self, keys: u64) -> Result<(Mix, Instant, f64), String> {
        let mix = Mix::new(keys);
        server::flush(&mut self.ctl)?;
        let seeded = Instant::now();
        keyspace::seed(self.server.port(), &mix)?;
        let seed_secs = seeded.elapsed().as_secs_f64();
        let dbsize = server::dbsize(&mut self.ctl)?;
        if dbsize != keys {
            return Err(format!("seeded {keys} keys but DBSIZE says {dbsize}"));
        }
        server::settle(&mut self.ctl);
        Ok((mix, seeded, seed_secs))
    }

    /// The server's INFO counters now.
    pub fn counters(&mut self) -> Result<server::Counters, String> {
        server::counters(&mut self.ctl).map_err(|e| format!("INFO: {e}"))
    }

    /// The longest command since the last call, in ms (see
    /// [`server::longest_command`]).
    pub fn longest_command(&mut self) -> Result<f64, String> {
        server::longest_command(&mut self.ctl).map_err(|e| format!("SLOWLOG: {e}"))
    }

    /// Where the job's stderr of a run goes.
    pub fn job_log(&self, method: &Method, keys: u64, rep: usize, tag: &str) -> PathBuf {
        self.tmp.join(format!(
            "job-{}{tag}-{keys}-rep{}.log",
            method.name(),
            rep + 1
        ))
    }

    /// Checks what a method run did: its own result and counts, then the
    /// whole keyspace (see [`check_run`]).
    pub fn check(
        &mut self,
        method: Option<&Method>,
        result: Result<Outcome, String>,
        mix: &Mix,
        seeded: Instant,
        started: Instant,
        log: &Path,
    ) -> Result<(Outcome, Vec<String>), String> {
        let conns = std::slice::from_mut(&mut self.ctl);
        check_run(conns, method, result, mix, seeded, started, log)
    }

    /// Flushes, seeds, runs `method` under measurement, and checks the result.
    fn run_one(&mut self, method: &Method, rep: usize, keys: u64) -> Result<Run, String> {
        let (mix, seeded, seed_secs) = self.fresh_keyspace(keys)?;
        let mut conn = self.server.connect().map_err(|e| format!("connect: {e}"))?;
        let log = self.job_log(method, keys, rep, "");
        let job_args = self.job_args(method);
        let job_bin = self.job_bin.clone();
        let job = JobSetup {
            bin: &job_bin,
            url: self.server.url(),
            args: &job_args,
            log: &log,
            timeout: self.job_timeout,
        };
        let before = self.counters()?;
        self.longest_command()?;
        let prober = Prober::start(&self.server)?;
        let clock = CpuClock::now(self.server.pid());
        let started = Instant::now();
        let result = methods::run(method, &mut conn, &job);
        let wall = started.elapsed().as_secs_f64();
        let clock_after = CpuClock::now(self.server.pid());
        let latency = prober.finish();
        self.server.alive()?;
        let after = self.counters()?;
        let longest_ms = self.longest_command()?;
        drop(conn);

        let (outcome, mut problems) =
            self.check(Some(method), result, &mix, seeded, started, &log)?;
        let latency = latency.unwrap_or_else(|e| {
            problems.push(e);
            Latency::default()
        });
        // The prober's own traffic: "*1\r\n$4\r\nPING\r\n" in, "+PONG\r\n" out.
        let pings = latency.count + 1;
        let job_cpu = outcome.job_cpu.unwrap_or(0.0);
        let client_cpu = outcome.job_cpu.unwrap_or(clock_after.thread - clock.thread);
        let other_cpu = (clock_after.machine - clock.machine)
            - (clock_after.redis - clock.redis)
            - (clock_after.bench - clock.bench)
            - job_cpu;
        let run = Run {
            method: method.clone(),
            rep,
            keys,
            wall,
            cpu: after.cpu_main - before.cpu_main,
            scripts: method.own_secs(after.scripts - before.scripts, after.scans - before.scans),
            latency,
            longest_ms,
            rss_kib: outcome.rss_kib,
            net_in: after.net_in.saturating_sub(before.net_in + 14 * pings),
            net_out: after.net_out.saturating_sub(before.net_out + 7 * pings),
            client_cpu,
            other_cpu: other_cpu.max(0.0),
            outcome,
            problems,
        };
        eprintln!("{}  load {}", table::run_line(&run, seed_secs), loadavg());
        if !run.outcome.detail.is_empty() {
            eprintln!("    {}", run.outcome.detail);
        }
        for problem in &run.problems {
            eprintln!("    CHECK FAILED: {problem}");
        }
        Ok(run)
    }
}

/// The 1-minute load average: above ~2 on two cores, something else competed
/// with the benchmark for the CPUs.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "?".into())
}

/// Checks what a method run did: its own result and counts, then the whole
/// keyspace of the servers `conns` reach (one, or a cluster's primaries).
/// Returns the outcome and every problem found.
fn check_run(
    conns: &mut [redis::Connection],
    method: Option<&Method>,
    result: Result<Outcome, String>,
    mix: &Mix,
    seeded: Instant,
    started: Instant,
    log: &Path,
) -> Result<(Outcome, Vec<String>), String> {
    let mut problems = Vec::new();
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => {
            problems.push(e);
            Outcome::default()
        }
    };
    problems.extend(outcome.problems.iter().cloned());
    let cleans = method.is_some_and(Method::cleans);
    if cleans {
        check_counts(&outcome.acted, mix, seeded, &mut problems);
    }
    let expect = if cleans {
        Expect::Cleaned
    } else {
        Expect::Unchanged
    };
    problems.extend(keyspace::verify(conns, mix, expect, seeded, started)?);
    if method.is_some_and(Method::is_job) && !problems.is_empty() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        problems.push(format!(
            "the job's log ({}), last lines:\n{}",
            log.display(),
            lines[lines.len().saturating_sub(15)..].join("\n")
        ));
    }
    Ok((outcome, problems))
}

/// Compares what a method says it did with what the rules must do to `mix`.
fn check_counts(acted: &Acted, mix: &Mix, seeded: Instant, problems: &mut Vec<String>) {
    let want = Acted {
        expired: mix.count(Class::NoTtl),
        deleted_cache: mix.count(Class::Short),
        deleted_temp: mix.count(Class::Temp),
    };
    // A slow run may find some 30 s keys already expired by themselves.
    let short_ok = if keyspace::short_keys_may_expire(seeded) {
        acted.deleted_cache <= want.deleted_cache
    } else {
        acted.deleted_cache == want.deleted_cache
    };
    if acted.expired != want.expired || acted.deleted_temp != want.deleted_temp || !short_ok {
        problems.push(format!(
            "counts: gave a TTL to {}, deleted {} cache and {} temp keys; expected {}, {}, {}",
            acted.expired,
            acted.deleted_cache,
            acted.deleted_temp,
            want.expired,
            want.deleted_cache,
            want.deleted_temp
        ));
    }
}

/// The machine, the versions and the exact command, printed above the table.
fn header(
    bench: &mut Bench,
    args: &Args,
    keys: u64,
    reps: usize,
    naive_reps: usize,
    methods: &[Method],
) -> String {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let redis_version = server::info(&mut bench.ctl, "server")
        .ok()
        .and_then(|m| m.get("redis_version").cloned())
        .unwrap_or_else(|| "unknown".into());
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(repo_root())
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let rev = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&[
        "status",
        "--porcelain",
        "--",
        "src",
        "lua",
        "Cargo.toml",
        "Cargo.lock",
    ])
    .is_some_and(|s| !s.is_empty());
    let command = std::env::var("JANITOR_BENCH_COMMAND")
        .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "));
    let mut h = String::new();
    h.push_str(&format!(
        "machine: {nproc} CPUs ({cpu_model}), {mem_gib:.0} GiB, Linux {}, load average {} at start\n",
        kernel.trim(),
        loadavg()
    ));
    h.push_str(&format!(
        "redis:   {redis_version} on 127.0.0.1:{} (--save \"\" --appendonly no --lua-time-limit 0)\n",
        bench.server.port()
    ));
    h.push_str(&format!(
        "job:     {} (copied at start) at commit {rev}{}\n",
        bench.job_src.display(),
        if dirty { " + uncommitted changes" } else { "" }
    ));
    h.push_str(&format!("command: {command}\n"));
    let names = methods
        .iter()
        .map(Method::name)
        .collect::<Vec<_>>()
        .join(",");
    if args.rss_scaling {
        h.push_str(&format!(
            "mode:    RSS scaling: the job alone at {:?} keys, {reps} run(s) each",
            args.rss_keys
        ));
    } else if args.cluster {
        h.push_str(&format!(
            "mode:    cluster: {keys} keys, {reps} repetition(s) of the job on a cluster of {} primary node(s) \
             and on the single node, at its default pace, at full speed and at full speed in its declared-keys \
             mode, order reversed every other repetition",
            args.cluster_primaries
        ));
    } else if args.impact {
        h.push_str(&format!(
            "mode:    impact: {keys} keys, {reps} repetition(s) (naive in {naive_reps}) of baseline,{names} under a fixed-rate GET/SET load, order reversed every other repetition"
        ));
    } else {
        h.push_str(&format!(
            "mode:    {keys} keys, {reps} repetition(s) (naive in {naive_reps}), methods {names}, order reversed every other repetition"
        ));
    }
    if args.cluster {
        h.push_str(&format!(
            "\njob runs: default pace with [{}]; full speed with [{}]; declared with [{}]",
            bench.job_args.join(" "),
            bench.job_args(&Method::Janitor).join(" "),
            bench.job_args(&Method::JanitorDeclared).join(" ")
        ));
        return h;
    }
    h.push_str(&format!(
        "\njob runs: janitor with [{}]",
        bench.job_args(&Method::Janitor).join(" ")
    ));
    if bench.full_speed.is_empty() {
        h.push_str(&format!(
            " (the job has no {SHARE_FLAG}: it runs at full speed)"
        ));
    }
    for method in methods
        .iter()
        .filter(|m| **m != Method::Janitor && m.is_job())
    {
        h.push_str(&format!(
            "; {} with [{}]",
            method.name(),
            bench.job_args(method).join(" ")
        ));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_is_found_in_help_only_as_a_whole_word() {
        let help = "      --max-call-time <DURATION>\n      --max-server-share <FRACTION>\n";
        assert!(has_flag(help, "--max-server-share"));
        assert!(has_flag(help, "--max-call-time"));
        assert!(!has_flag(help, "--max-server"));
        assert!(!has_flag("--max-server-share-x <N>", "--max-server-share"));
    }

    #[test]
    fn methods_parse_with_shares() {
        assert_eq!("janitor".parse(), Ok(Method::Janitor));
        assert_eq!("janitor@0.25".parse(), Ok(Method::JanitorAt("0.25".into())));
        assert!("janitor@".parse::<Method>().is_err());
        assert!("janitor@-1".parse::<Method>().is_err());
        assert!("nope".parse::<Method>().is_err());
        assert_eq!(Method::JanitorAt("0.1".into()).share(), Some(0.1));
        assert_eq!(Method::JanitorAt("50000".into()).share(), None);
        assert_eq!("janitor+declared".parse(), Ok(Method::JanitorDeclared));
        assert_eq!(
            "declared@0.25".parse(),
            Ok(Method::DeclaredAt("0.25".into()))
        );
        assert!("declared@".parse::<Method>().is_err());
        assert_eq!(Method::DeclaredAt("0.5".into()).share(), Some(0.5));
        assert!(Method::DeclaredAt("0.5".into()).declares());
        assert!(!Method::JanitorAt("0.5".into()).declares());
    }

    #[test]
    fn only_the_declared_mode_counts_its_scans_as_its_own() {
        assert_eq!(Method::Janitor.own_secs(1.0, 0.5), 1.0);
        assert_eq!(Method::JanitorDeclared.own_secs(1.0, 0.5), 1.5);
        assert_eq!(Method::DeclaredAt("0.25".into()).own_secs(1.0, 0.5), 1.5);
    }
}
