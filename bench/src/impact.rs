//! The impact mode (`--impact`): what a cleaning pass costs the production
//! traffic of the same Redis. It measures the server's capacity for a GET/SET
//! load (closed loop), then runs that load open-loop at a fixed rate, a
//! fraction of the capacity, during each scenario: no pass at all (the
//! baseline, for a fixed window), the job capped at each share, the job at
//! full speed, the client-side pipeline, the usual KEYS script. Each scenario
//! starts from a freshly seeded keyspace and ends with the same exact check
//! as the main mode. It prints the load's latency percentiles per scenario,
//! their difference to the baseline, and a verdict on the two targets.

use std::thread;
use std::time::{Duration, Instant};

use crate::keyspace::{Class, Mix};
use crate::load::{self, LoadReport, LoadSpec, OpenLoop};
use crate::measure::{CpuClock, median};
use crate::methods::{self, JobSetup, Method, Outcome};
use crate::table::longest;
use crate::{Bench, loadavg};

/// How long the load runs before a scenario's window opens: connections
/// made, the schedule steady, caches warm.
const WARMUP: Duration = Duration::from_millis(500);
/// The capacity is the median of this many closed-loop rounds.
const CAPACITY_ROUNDS: usize = 3;
/// The share for the first target.
const LOW_SHARE: f64 = 0.1;
/// First target: at [`LOW_SHARE`], the load's p99 at most this much above
/// the baseline's, in ms.
const LOW_SHARE_P99_MS: f64 = 1.0;
/// Second target: at the default share, the load's p99.9 under this, in ms.
const DEFAULT_SHARE_P999_MS: f64 = 3.0;
/// The load counts as kept up when it achieved this fraction of its rate.
const RATE_KEPT: f64 = 0.98;

/// The options of the impact mode.
#[derive(Debug, clap::Args)]
pub struct ImpactArgs {
    /// With --impact: the load's rate, as a fraction of the measured capacity
    #[arg(long, default_value_t = 0.5)]
    load_fraction: f64,
    /// With --impact: a fixed load rate in requests/s instead of --load-fraction
    #[arg(long)]
    load_rate: Option<f64>,
    /// With --impact: the job's default share, for the p99.9 target (its
    /// janitor@SHARE run is added when missing)
    #[arg(long)]
    pub default_share: Option<String>,
    /// With --impact: the load's window without a pass, in seconds [default: 10; 2 with --quick]
    #[arg(long)]
    baseline_secs: Option<f64>,
    /// With --impact: how long the capacity is measured, in seconds [default: 3; 1 with --quick]
    #[arg(long)]
    capacity_secs: Option<f64>,
    /// With --impact: connections the load uses
    #[arg(long, default_value_t = 8)]
    load_connections: usize,
    /// With --impact: requests in flight per connection while the capacity is measured
    #[arg(long, default_value_t = 1)]
    capacity_depth: usize,
    /// With --impact: worker threads of the load's tokio runtime
    #[arg(long, default_value_t = 1)]
    load_workers: usize,
}

/// One scenario run under the load.
struct ImpactRun {
    /// The method, or None for the baseline (no pass).
    scenario: Option<Method>,
    rep: usize,
    /// The pass's wall time (the baseline's window), in seconds.
    wall: f64,
    /// Redis main-thread CPU seconds during it: the load's and the pass's.
    cpu: f64,
    /// Seconds Redis spent in script calls during it (command statistics),
    /// and, for the job in its declared-keys mode, in its own SCANs.
    scripts: f64,
    /// What the load saw.
    load: LoadReport,
    /// CPU seconds of the load's threads.
    load_cpu: f64,
    /// CPU seconds of the pass's client: the job process, or the benchmark
    /// thread running an in-process method. None for the baseline.
    client_cpu: Option<f64>,
    /// CPU seconds used by anything but Redis, the benchmark and the job.
    other_cpu: f64,
    /// The longest command, in ms, from the slow log (0: none took 2 ms).
    longest_ms: f64,
    /// CPU seconds the hypervisor took away from this VM during the pass.
    steal: f64,
    /// Major page faults of Redis and the benchmark during the pass.
    major_faults: u64,
    problems: Vec<String>,
}

impl ImpactRun {
    fn name(&self) -> String {
        scenario_name(self.scenario.as_ref())
    }

    fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn busy(&self) -> f64 {
        self.cpu / self.wall.max(1e-9)
    }

    /// Like [`crate::Run::noisy`], other work used over a tenth of a CPU; or
    /// the hypervisor took the CPUs away for a while (steal: 50 ms is half
    /// of a host scheduler period, a stall the load's tail shows); or some
    /// thread waited for a disk read.
    fn noisy(&self) -> bool {
        self.other_cpu > (0.1 * self.wall).max(0.05) || self.steal > 0.05 || self.major_faults > 0
    }
}

fn scenario_name(scenario: Option<&Method>) -> String {
    scenario.map_or_else(|| "baseline".to_string(), Method::name)
}

/// Measures the capacity, runs every scenario `reps` times, prints the
/// table and the verdicts. Returns whether every run passed its checks.
pub fn run(
    bench: &mut Bench,
    args: &ImpactArgs,
    methods: &[Method],
    keys: u64,
    reps: usize,
    naive_reps: usize,
    quick: bool,
) -> Result<bool, String> {
    if !(args.load_fraction > 0.0 && args.load_fraction.is_finite()) {
        return Err(format!("bad --load-fraction {}", args.load_fraction));
    }
    let secs = |given: Option<f64>, normal: f64, smoke: f64| {
        Duration::from_secs_f64(given.unwrap_or(if quick { smoke } else { normal }).max(0.1))
    };
    let baseline = secs(args.baseline_secs, 10.0, 2.0);
    let capacity_secs = secs(args.capacity_secs, 3.0, 1.0);
    let spec = LoadSpec {
        port: bench.server.port(),
        keep_keys: Mix::new(keys).count(Class::Keep),
        connections: args.load_connections.max(1),
        workers: args.load_workers.max(1),
    };

    // The capacity: the same traffic, closed loop, on a fresh keyspace.
    bench.fresh_keyspace(keys)?;
    // Three rounds, and the median: one stall of the VM (see the noise
    // columns) lowers one round, not the capacity.
    let mut rounds = Vec::new();
    for _ in 0..CAPACITY_ROUNDS {
        let before = bench.counters()?;
        let clock = CpuClock::now(bench.server.pid());
        let capacity = load::capacity(
            &spec,
            args.capacity_depth,
            capacity_secs / CAPACITY_ROUNDS as u32,
        )?;
        let clock_after = CpuClock::now(bench.server.pid());
        let after = bench.counters()?;
        let busy = (after.cpu_main - before.cpu_main) / capacity.secs;
        let load_cpu = ((clock_after.bench - clock.bench) - (clock_after.thread - clock.thread))
            / capacity.secs;
        rounds.push((capacity.rate, busy, load_cpu));
    }
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (capacity, busy, load_cpu) = rounds[rounds.len() / 2];
    println!(
        "capacity: {:.1}k requests/s (50% GET, 50% SET of keep:* keys; closed loop, {} connection(s) with \
         {} request(s) in flight each, {} tokio worker(s); the median of {} rounds of {:.1} s: {}): Redis main \
         thread {:.0}% busy, the load client {:.0}% of a CPU",
        capacity / 1000.0,
        spec.connections,
        args.capacity_depth.max(1),
        spec.workers,
        CAPACITY_ROUNDS,
        capacity_secs.as_secs_f64() / CAPACITY_ROUNDS as f64,
        rounds
            .iter()
            .map(|r| format!("{:.1}k", r.0 / 1000.0))
            .collect::<Vec<_>>()
            .join(", "),
        100.0 * busy,
        100.0 * load_cpu
    );
    if busy < 0.9 {
        println!(
            "WARNING: Redis was only {:.0}% busy at capacity: the client (or the machine) limited it, \
             so the load's rate is relative to the client's capacity, not the server's",
            100.0 * busy
        );
    }
    let rate = args.load_rate.unwrap_or(args.load_fraction * capacity);
    println!(
        "load:     open loop, {:.1}k requests/s ({}), due times 1/rate apart, latency from the due time; \
         {WARMUP:?} of warm-up before each window; baseline window {:.1} s",
        rate / 1000.0,
        match args.load_rate {
            Some(_) => "--load-rate".to_string(),
            None => format!("{:.0}% of capacity", 100.0 * args.load_fraction),
        },
        baseline.as_secs_f64()
    );

    let mut scenarios: Vec<Option<Method>> = vec![None];
    scenarios.extend(methods.iter().cloned().map(Some));
    let mut runs = Vec::new();
    for rep in 0..reps {
        let mut order: Vec<&Option<Method>> = scenarios
            .iter()
            .filter(|s| s.as_ref() != Some(&Method::Naive) || rep < naive_reps)
            .collect();
        if rep % 2 == 1 {
            order.reverse();
        }
        for scenario in order {
            runs.push(run_scenario(
                bench,
                scenario.as_ref(),
                rep,
                keys,
                &spec,
                rate,
                baseline,
            )?);
        }
    }
    println!("{}", table(&runs, &scenarios, rate));
    println!(
        "{}",
        verdicts(&runs, &scenarios, args.default_share.as_deref())
    );
    if reps > 1 {
        println!("{}", runs_list(&runs));
    }
    let noisy = runs.iter().filter(|r| r.noisy()).count();
    if noisy > 0 {
        println!(
            "WARNING: {noisy} of {} runs were noisy (other work on the machine, the hypervisor's steal, or a \
             major page fault: see the last columns): their tails are disturbed; rerun on a quiet machine",
            runs.len()
        );
    }
    let ok = runs.iter().all(ImpactRun::ok);
    if ok {
        println!("all final keyspace checks passed");
    }
    Ok(ok)
}

/// Seeds, starts the load, runs the scenario inside the load's window,
/// stops the load, and checks the keyspace.
fn run_scenario(
    bench: &mut Bench,
    scenario: Option<&Method>,
    rep: usize,
    keys: u64,
    spec: &LoadSpec,
    rate: f64,
    baseline: Duration,
) -> Result<ImpactRun, String> {
    let (mix, seeded, seed_secs) = bench.fresh_keyspace(keys)?;
    let mut conn = bench
        .server
        .connect()
        .map_err(|e| format!("connect: {e}"))?;
    let method = scenario.unwrap_or(&Method::Janitor);
    let log = bench.job_log(method, keys, rep, "-impact");
    let job_args = bench.job_args(method);
    let job_bin = bench.job_bin.clone();
    let job = JobSetup {
        bin: &job_bin,
        url: bench.server.url(),
        args: &job_args,
        log: &log,
        timeout: bench.job_timeout,
    };
    let load = OpenLoop::start(spec, rate)?;
    thread::sleep(WARMUP);
    bench.longest_command()?;
    let before = bench.counters()?;
    let clock = CpuClock::now(bench.server.pid());
    load.open_window();
    let started = Instant::now();
    let result = match scenario {
        None => {
            thread::sleep(baseline);
            Ok(Outcome::default())
        }
        Some(m) => methods::run(m, &mut conn, &job),
    };
    let wall = started.elapsed().as_secs_f64();
    load.close_window();
    let clock_after = CpuClock::now(bench.server.pid());
    let after = bench.counters()?;
    let report = load.finish();
    bench.server.alive()?;
    let longest_ms = bench.longest_command()?;
    drop(conn);
    let report = report?;

    let (outcome, mut problems) = bench.check(scenario, result, &mix, seeded, started, &log)?;
    if report.errors > 0 {
        problems.push(format!("the load got {} error replies", report.errors));
    }
    let bench_cpu = clock_after.bench - clock.bench;
    let thread_cpu = clock_after.thread - clock.thread;
    let client_cpu = scenario.map(|_| outcome.job_cpu.unwrap_or(thread_cpu));
    let other_cpu = (clock_after.machine - clock.machine)
        - (clock_after.redis - clock.redis)
        - bench_cpu
        - outcome.job_cpu.unwrap_or(0.0);
    let run = ImpactRun {
        scenario: scenario.cloned(),
        rep,
        wall,
        cpu: after.cpu_main - before.cpu_main,
        scripts: method.own_secs(after.scripts - before.scripts, after.scans - before.scans),
        load: report,
        load_cpu: bench_cpu - thread_cpu,
        client_cpu,
        other_cpu: other_cpu.max(0.0),
        longest_ms,
        steal: clock_after.steal - clock.steal,
        major_faults: clock_after.major_faults.saturating_sub(clock.major_faults),
        problems,
    };
    eprintln!(
        "rep {} {:<14} {keys} keys  seed {seed_secs:.2} s  wall {:.3} s  Redis busy {:.0}%  load p50 {:.2} p99 {:.2} \
         p99.9 {:.2} max {:.2} ms  {:.1}k/s  sent late p99 {:.2} ms  load CPU {:.2} s  client CPU {}  other CPU {:.2} s  \
         longest command {} ms  steal {:.2} s  major faults {}  {}  load {}",
        rep + 1,
        run.name(),
        run.wall,
        100.0 * run.busy(),
        run.load.latency_ms(0.5),
        run.load.latency_ms(0.99),
        run.load.latency_ms(0.999),
        run.load.max_ms(),
        run.load.achieved_rate() / 1000.0,
        run.load.late.value_at_quantile(0.99) as f64 / 1000.0,
        run.load_cpu,
        run.client_cpu
            .map_or_else(|| "-".to_string(), |c| format!("{c:.2} s")),
        run.other_cpu,
        longest(run.longest_ms),
        run.steal,
        run.major_faults,
        if run.ok() { "check ok" } else { "CHECK FAILED" },
        loadavg()
    );
    if !outcome.detail.is_empty() {
        eprintln!("    {}", outcome.detail);
    }
    for problem in &run.problems {
        eprintln!("    CHECK FAILED: {problem}");
    }
    Ok(run)
}

/// The successful runs of one scenario.
fn runs_of<'a>(runs: &'a [ImpactRun], scenario: Option<&Method>) -> Vec<&'a ImpactRun> {
    runs.iter()
        .filter(|r| r.scenario.as_ref() == scenario && r.ok())
        .collect()
}

/// The successful baseline run of repetition `rep`.
fn baseline_of(runs: &[ImpactRun], rep: usize) -> Option<&ImpactRun> {
    runs.iter()
        .find(|r| r.scenario.is_none() && r.rep == rep && r.ok())
}

/// Per repetition, `f` of the scenario's run minus `f` of the baseline's.
fn paired(runs: &[&ImpactRun], all: &[ImpactRun], f: impl Fn(&ImpactRun) -> f64) -> Vec<f64> {
    runs.iter()
        .filter_map(|r| Some(f(r) - f(baseline_of(all, r.rep)?)))
        .collect()
}

fn med(values: &[f64], fmt: impl Fn(f64) -> String) -> String {
    median(values).map_or_else(|| "-".to_string(), fmt)
}

/// The table: one row per scenario, medians over the repetitions.
fn table(runs: &[ImpactRun], scenarios: &[Option<Method>], rate: f64) -> String {
    let ms = |v: f64| format!("{v:.2}");
    let signed = |v: f64| format!("{v:+.2}");
    let pct = |v: f64| format!("{:.0}%", 100.0 * v);
    let pct_signed = |v: f64| format!("{:+.0}%", 100.0 * v);
    let cpu = |v: f64| format!("{v:.2} s");
    let mut ordered: Vec<Option<&Method>> = scenarios.iter().map(Option::as_ref).collect();
    ordered.sort_by(|a, b| {
        let key = |s: &Option<&Method>| s.map_or((0, 0.0), |m| (m.rank().0 + 1, m.rank().1));
        key(a)
            .partial_cmp(&key(b))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut rows = Vec::new();
    for scenario in ordered {
        let all = runs
            .iter()
            .filter(|r| r.scenario.as_ref() == scenario)
            .count();
        let ok = runs_of(runs, scenario);
        if all == 0 {
            continue;
        }
        let col = |f: &dyn Fn(&ImpactRun) -> f64| ok.iter().map(|r| f(r)).collect::<Vec<f64>>();
        let mut count = if ok.len() == all {
            all.to_string()
        } else {
            format!("{} ok of {all}", ok.len())
        };
        let noisy = ok.iter().filter(|r| r.noisy()).count();
        if noisy > 0 {
            count.push_str(&format!(" ({noisy} noisy)"));
        }
        let is_baseline = scenario.is_none();
        let vs_baseline = |f: &dyn Fn(&ImpactRun) -> f64, fmt: &dyn Fn(f64) -> String| {
            if is_baseline {
                String::new()
            } else {
                med(&paired(&ok, runs, f), fmt)
            }
        };
        rows.push(vec![
            scenario_name(scenario),
            count,
            med(&col(&|r| r.wall), |v| format!("{v:.2} s")),
            med(&col(&|r| r.busy()), pct),
            vs_baseline(&|r| r.busy(), &pct_signed),
            if is_baseline {
                "-".to_string()
            } else {
                med(&col(&|r| r.scripts / r.wall.max(1e-9)), pct)
            },
            med(&col(&|r| r.load.latency_ms(0.5)), ms),
            med(&col(&|r| r.load.latency_ms(0.99)), ms),
            vs_baseline(&|r| r.load.latency_ms(0.99), &signed),
            med(&col(&|r| r.load.latency_ms(0.999)), ms),
            med(&col(&|r| r.load.max_ms()), ms),
            med(&col(&|r| r.load.achieved_rate() / 1000.0), |v| {
                format!("{v:.1}k")
            }),
            med(
                &col(&|r| r.load.late.value_at_quantile(0.99) as f64 / 1000.0),
                ms,
            ),
            ok.iter()
                .map(|r| r.longest_ms)
                .reduce(f64::max)
                .map_or_else(|| "-".to_string(), longest),
            med(&col(&|r| r.load_cpu / r.wall.max(1e-9)), pct),
            if is_baseline {
                "-".to_string()
            } else {
                med(&col(&|r| r.client_cpu.unwrap_or(0.0)), cpu)
            },
            med(&col(&|r| r.other_cpu), cpu),
            ok.iter()
                .map(|r| r.steal)
                .reduce(f64::max)
                .map_or_else(|| "-".to_string(), cpu),
            ok.iter()
                .map(|r| r.major_faults)
                .max()
                .map_or_else(|| "-".to_string(), |n| n.to_string()),
        ]);
    }
    let table = crate::table::markdown(
        &[
            "scenario",
            "runs",
            "pass wall",
            "Redis busy",
            "busy vs baseline",
            "script share",
            "load p50 ms",
            "p99 ms",
            "p99 vs baseline ms",
            "p99.9 ms",
            "max ms",
            "load rate /s",
            "sent late p99 ms",
            "longest cmd ms",
            "load client CPU",
            "pass client CPU",
            "other CPU",
            "max steal",
            "max major faults",
        ],
        1,
        &rows,
    );
    format!(
        "\n{table}\n\nMedians over the successful runs. The load: {:.1}k requests/s asked for; latency from each \
         request's due time to its reply, for the requests due during the pass (the baseline: during its window). \
         Redis busy: Redis main-thread CPU / wall during the pass, the load's and the pass's work together; \
         vs baseline: minus the baseline's in the same repetition. script share: the time Redis spent in \
         script calls (INFO commandstats: each call whole, set-up and reply included; for the job in its \
         declared-keys mode, its own SCANs too) / wall, the pass's own share of Redis's time. sent late: how \
         long after its due time the client wrote a request (the client's own part of the latency). load client \
         CPU: the load's threads, in % of one CPU; pass client CPU: the job process or the thread running the \
         method; other CPU: anything else on the machine; max steal: the most CPU time the hypervisor took \
         away during one run; max major faults: the most page faults of Redis and the benchmark that waited for \
         a disk read during one run. A run is noisy when other CPU exceeds 10% of a CPU, steal 50 ms, or it had a major fault.",
        rate / 1000.0
    )
}

/// The verdicts on the two targets.
fn verdicts(
    runs: &[ImpactRun],
    scenarios: &[Option<Method>],
    default_share: Option<&str>,
) -> String {
    let find = |share: f64| {
        scenarios
            .iter()
            .flatten()
            .filter(|m| matches!(m, Method::JanitorAt(_)))
            .find(|m| m.share().is_some_and(|s| (s - share).abs() < 1e-9))
    };
    let mut out = String::new();
    match find(LOW_SHARE) {
        Some(m) => {
            let ok = runs_of(runs, Some(m));
            let diffs = paired(&ok, runs, |r| r.load.latency_ms(0.99));
            out.push_str(&format!(
                "target: at share {LOW_SHARE}, the load's p99 within {LOW_SHARE_P99_MS} ms of its baseline: {}\n",
                judge(&diffs, LOW_SHARE_P99_MS, "p99 - baseline p99", true)
            ));
        }
        None => out.push_str(&format!(
            "target: at share {LOW_SHARE}, the load's p99 within {LOW_SHARE_P99_MS} ms of its baseline: \
             not measured (no janitor@{LOW_SHARE} run)\n"
        )),
    }
    match default_share {
        None => out.push_str(&format!(
            "target: at the default share, the load's p99.9 under {DEFAULT_SHARE_P999_MS} ms: not judged \
             (no --default-share given)\n"
        )),
        Some(d) => {
            let method = Method::JanitorAt(d.to_string());
            let ok = runs_of(runs, Some(&method));
            let values: Vec<f64> = ok.iter().map(|r| r.load.latency_ms(0.999)).collect();
            out.push_str(&format!(
                "target: at the default share ({d}), the load's p99.9 under {DEFAULT_SHARE_P999_MS} ms: {}\n",
                judge(&values, DEFAULT_SHARE_P999_MS, "p99.9", false)
            ));
        }
    }
    let base: Vec<f64> = runs_of(runs, None).iter().map(|r| r.busy()).collect();
    let kept: Vec<String> = runs
        .iter()
        .filter(|r| r.ok() && r.load.achieved_rate() < RATE_KEPT * r.load.target_rate)
        .map(|r| format!("{} (rep {})", r.name(), r.rep + 1))
        .collect();
    out.push_str(&format!(
        "baseline: Redis {} busy with the load alone",
        med(&base, |v| format!("{:.0}%", 100.0 * v))
    ));
    if !kept.is_empty() {
        out.push_str(&format!(
            "\nWARNING: the load fell behind its rate (below {:.0}%) in {}: its client was starved",
            100.0 * RATE_KEPT,
            kept.join(", ")
        ));
    }
    out
}

/// Judges per-repetition `values` against a limit: met when every
/// repetition meets it, missed when none does.
fn judge(values: &[f64], limit: f64, what: &str, inclusive: bool) -> String {
    if values.is_empty() {
        return "not measured (no successful run)".to_string();
    }
    let meets = |v: &f64| if inclusive { *v <= limit } else { *v < limit };
    let met = values.iter().filter(|v| meets(v)).count();
    let shown: Vec<String> = values.iter().map(|v| format!("{v:.2}")).collect();
    let verdict = if met == values.len() {
        "met"
    } else if met == 0 {
        "MISSED"
    } else {
        "met in some repetitions only: rerun with more --reps"
    };
    format!(
        "{what} {} ms (median; {} repetition(s): {}): {verdict}",
        median(values).map_or_else(|| "-".into(), |m| format!("{m:.2}")),
        values.len(),
        shown.join(", ")
    )
}

/// Every run, in the order they ran.
fn runs_list(runs: &[ImpactRun]) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                (r.rep + 1).to_string(),
                r.name(),
                format!("{:.2}", r.wall),
                format!("{:.0}%", 100.0 * r.busy()),
                format!("{:.2}", r.load.latency_ms(0.5)),
                format!("{:.2}", r.load.latency_ms(0.99)),
                format!("{:.2}", r.load.latency_ms(0.999)),
                format!("{:.2}", r.load.max_ms()),
                longest(r.longest_ms),
                format!(
                    "{:.2} / {:.2} / {}{}",
                    r.other_cpu,
                    r.steal,
                    r.major_faults,
                    if r.noisy() { " noisy" } else { "" }
                ),
                if r.ok() { "ok".into() } else { "FAILED".into() },
            ]
        })
        .collect();
    format!(
        "Every run:\n\n{}\n",
        crate::table::markdown(
            &[
                "rep",
                "scenario",
                "wall s",
                "Redis busy",
                "p50 ms",
                "p99 ms",
                "p99.9 ms",
                "max ms",
                "longest cmd ms",
                "other CPU s / steal s / major faults",
                "check",
            ],
            2,
            &rows,
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_met_only_when_every_repetition_meets_it() {
        assert!(judge(&[0.5, 0.9], 1.0, "x", true).ends_with(": met"));
        assert!(judge(&[1.0], 1.0, "x", true).ends_with(": met"));
        assert!(judge(&[3.0], 3.0, "x", false).ends_with(": MISSED"));
        assert!(judge(&[0.5, 1.5], 1.0, "x", true).contains("some repetitions"));
        assert!(judge(&[], 1.0, "x", true).starts_with("not measured"));
    }
}
