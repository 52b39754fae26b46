//! The cluster mode (`--cluster`): a pass over a Redis Cluster against one
//! over a single server holding the same keys. Beside the benchmark's
//! standalone server it starts a cluster of `--cluster-primaries` (3)
//! primaries and, every repetition, runs the job on each topology at its
//! default pace and at full speed (and, when the job has `--key-mode`, at
//! full speed in its declared-keys mode), each run on a freshly seeded keyspace
//! (the same mix; on the cluster, each key on its slot's primary), in an
//! order reversed every other repetition. It measures the wall time, the
//! Redis main-thread CPU summed over the nodes, how busy the busiest node
//! was, and the job's own CPU and peak RSS; checks the final keyspace
//! exactly (on the cluster, the union of the primaries' keyspaces); and
//! prints medians and the cluster / single-node ratios at each pace.

use std::time::Instant;

use crate::cluster::Cluster;
use crate::keyspace::Mix;
use crate::measure::{CpuClock, median};
use crate::methods::{self, JobSetup, Method};
use crate::server::{self, Counters};
use crate::table::{markdown, with_interval};
use crate::{Bench, DECLARED, KEY_MODE_FLAG, check_run, loadavg};

/// Where the keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topology {
    /// The benchmark's standalone server.
    Single,
    /// The cluster's primaries.
    Cluster,
}

/// How fast the job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// The job's own default (no flag): `--max-server-share 0.25` per node.
    Default,
    /// `--max-server-share 1.0`: each node's pass as fast as it goes.
    Full,
    /// `--max-server-share 1.0 --key-mode declared`: full speed in the
    /// declared-keys mode (the job's SCAN, one call per hash slot on a
    /// cluster node, one per batch on the single node).
    Declared,
}

impl Pace {
    fn name(self) -> &'static str {
        match self {
            Pace::Default => "default",
            Pace::Full => "full speed",
            Pace::Declared => "declared",
        }
    }
}

/// One repetition's runs, in the order of even repetitions (odd ones run
/// them backwards): each topology goes first at one pace and second at the
/// other, and first at both every other repetition.
const ORDER: [(Topology, Pace); 6] = [
    (Topology::Cluster, Pace::Default),
    (Topology::Single, Pace::Default),
    (Topology::Single, Pace::Full),
    (Topology::Cluster, Pace::Full),
    (Topology::Cluster, Pace::Declared),
    (Topology::Single, Pace::Declared),
];

/// The rows of the table, in order.
const ROWS: [(Topology, Pace); 6] = [
    (Topology::Single, Pace::Default),
    (Topology::Cluster, Pace::Default),
    (Topology::Single, Pace::Full),
    (Topology::Cluster, Pace::Full),
    (Topology::Single, Pace::Declared),
    (Topology::Cluster, Pace::Declared),
];

/// One measured pass of the job.
struct TopologyRun {
    topology: Topology,
    pace: Pace,
    rep: usize,
    /// Wall time of the job process, its start-up and discovery included.
    wall: f64,
    /// Redis main-thread CPU seconds of each node during the run.
    node_cpu: Vec<f64>,
    /// Seconds each node spent in the job's commands (its command
    /// statistics): script calls, and in the declared-keys mode the job's
    /// own SCANs.
    node_scripts: Vec<f64>,
    /// Each node's pass, from the job's report, in seconds.
    node_secs: Vec<f64>,
    /// CPU seconds of the job process (GNU time).
    job_cpu: f64,
    /// Peak RSS of the job process, in KiB.
    rss_kib: Option<u64>,
    /// CPU seconds that neither the servers, the benchmark nor the job used.
    other_cpu: f64,
    /// Everything found wrong: the run then counts as failed.
    problems: Vec<String>,
}

impl TopologyRun {
    fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Redis main-thread CPU seconds of all the nodes together.
    fn cpu(&self) -> f64 {
        self.node_cpu.iter().sum()
    }

    /// The busiest node's main-thread CPU / wall.
    fn busiest(&self) -> f64 {
        self.node_cpu.iter().copied().fold(0.0, f64::max) / self.wall.max(1e-9)
    }

    /// The largest share of a node's time spent in the job's script calls:
    /// what the job's cap (per node) holds.
    fn top_share(&self) -> f64 {
        self.node_scripts.iter().copied().fold(0.0, f64::max) / self.wall.max(1e-9)
    }

    /// The longest node's pass, from the job's report.
    fn slowest_node(&self) -> f64 {
        self.node_secs.iter().copied().fold(0.0, f64::max)
    }

    /// As [`crate::Run::noisy`]: other work used over a tenth of a CPU.
    fn noisy(&self) -> bool {
        self.other_cpu > (0.1 * self.wall).max(0.05)
    }
}

/// Both topologies, and what a run needs of each.
struct Servers<'a> {
    bench: &'a mut Bench,
    cluster: Cluster,
}

impl Servers<'_> {
    fn nodes(&self, topology: Topology) -> usize {
        match topology {
            Topology::Single => 1,
            Topology::Cluster => self.cluster.pids().len(),
        }
    }

    fn url(&self, topology: Topology) -> String {
        match topology {
            Topology::Single => self.bench.server.url(),
            Topology::Cluster => self.cluster.url(),
        }
    }

    fn fresh_keyspace(
        &mut self,
        topology: Topology,
        keys: u64,
    ) -> Result<(Mix, Instant, f64), String> {
        match topology {
            Topology::Single => self.bench.fresh_keyspace(keys),
            Topology::Cluster => self.cluster.fresh_keyspace(keys),
        }
    }

    /// Empties the topology, so that it sits idle and empty while the other
    /// one runs.
    fn empty(&mut self, topology: Topology) -> Result<(), String> {
        match topology {
            Topology::Single => server::flush(&mut self.bench.ctl),
            Topology::Cluster => self.cluster.empty(),
        }
    }

    fn counters(&mut self, topology: Topology) -> Result<Vec<Counters>, String> {
        match topology {
            Topology::Single => Ok(vec![self.bench.counters()?]),
            Topology::Cluster => self.cluster.counters(),
        }
    }

    /// A connection to each node that holds keys, for the check.
    fn conns(&mut self, topology: Topology) -> &mut [redis::Connection] {
        match topology {
            Topology::Single => std::slice::from_mut(&mut self.bench.ctl),
            Topology::Cluster => self.cluster.ctls(),
        }
    }

    /// Every server process: all of them are ours, none is noise.
    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.bench.server.pid()];
        pids.extend(self.cluster.pids());
        pids
    }

    fn alive(&mut self) -> Result<(), String> {
        self.bench.server.alive()?;
        self.cluster.alive()
    }
}

/// Starts the cluster, runs every repetition, prints the tables. Returns
/// whether every run passed its checks. `declared`: whether the job has the
/// declared-keys mode, whose runs are left out otherwise.
pub fn run(
    bench: &mut Bench,
    redis_bin: &str,
    primaries: usize,
    keys: u64,
    reps: usize,
    declared: bool,
) -> Result<bool, String> {
    let started = Instant::now();
    let cluster = Cluster::start(redis_bin, &bench.tmp, primaries)?;
    println!(
        "cluster: {} on 127.0.0.1:{} (--cluster-enabled yes, slots shared evenly; ready in {:.1} s), the \
         job given {} as its seed",
        primaries_text(primaries),
        cluster
            .ports()
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(","),
        started.elapsed().as_secs_f64(),
        cluster.url()
    );
    let mut servers = Servers { bench, cluster };
    let mut runs = Vec::new();
    for rep in 0..reps {
        let mut order = ORDER.to_vec();
        order.retain(|&(_, pace)| declared || pace != Pace::Declared);
        if rep % 2 == 1 {
            order.reverse();
        }
        for (topology, pace) in order {
            runs.push(run_one(&mut servers, topology, pace, rep, keys)?);
        }
    }
    println!("{}", table(&runs, keys, primaries));
    println!("{}", runs_list(&runs));
    let noisy = runs.iter().filter(|r| r.noisy()).count();
    if noisy > 0 {
        println!(
            "WARNING: in {noisy} of {} runs, other work on the machine used more than 10% of a CPU \
             (column `other CPU`): those figures are disturbed; rerun on a quiet machine",
            runs.len()
        );
    }
    let ok = runs.iter().all(TopologyRun::ok);
    if ok {
        println!("all final keyspace checks passed");
    }
    Ok(ok)
}

/// The job's arguments at `pace`, after `--url URL --output json`.
fn pace_args(bench: &Bench, pace: Pace) -> Vec<String> {
    let mut args = match pace {
        Pace::Default => Vec::new(),
        Pace::Full => bench.full_speed.clone(),
        Pace::Declared => {
            let mut args = bench.full_speed.clone();
            args.extend([KEY_MODE_FLAG.into(), DECLARED.into()]);
            args
        }
    };
    args.extend(bench.job_args.iter().cloned());
    args
}

/// Seeds the topology, runs the job on it under measurement, checks the
/// keyspace it left, and empties the topology again.
fn run_one(
    servers: &mut Servers,
    topology: Topology,
    pace: Pace,
    rep: usize,
    keys: u64,
) -> Result<TopologyRun, String> {
    let (mix, seeded, seed_secs) = servers.fresh_keyspace(topology, keys)?;
    let tag = format!("-{}-{}", name(topology), pace.name().replace(' ', "-"));
    let log = servers.bench.job_log(&Method::Janitor, keys, rep, &tag);
    let args = pace_args(servers.bench, pace);
    let bin = servers.bench.job_bin.clone();
    let job = JobSetup {
        bin: &bin,
        url: servers.url(topology),
        args: &args,
        log: &log,
        timeout: servers.bench.job_timeout,
    };
    let pids = servers.pids();
    let before = servers.counters(topology)?;
    let clock = CpuClock::of(&pids);
    let started = Instant::now();
    let result = methods::janitor(&job);
    let wall = started.elapsed().as_secs_f64();
    let clock_after = CpuClock::of(&pids);
    servers.alive()?;
    let after = servers.counters(topology)?;

    let conns = servers.conns(topology);
    let (outcome, mut problems) = check_run(
        conns,
        Some(&Method::Janitor),
        result,
        &mix,
        seeded,
        started,
        &log,
    )?;
    servers.empty(topology)?;
    let nodes = servers.nodes(topology);
    if outcome.node_secs.len() != nodes {
        problems.push(format!(
            "the job's report lists {} servers, not the {nodes} node(s)",
            outcome.node_secs.len()
        ));
    }
    let job_cpu = outcome.job_cpu.unwrap_or(0.0);
    let run = TopologyRun {
        topology,
        pace,
        rep,
        wall,
        node_cpu: deltas(&before, &after, |c| c.cpu_main),
        node_scripts: deltas(&before, &after, |c| {
            if pace == Pace::Declared {
                c.scripts + c.scans
            } else {
                c.scripts
            }
        }),
        node_secs: outcome.node_secs.clone(),
        job_cpu,
        rss_kib: outcome.rss_kib,
        other_cpu: other_cpu(&clock, &clock_after, job_cpu),
        problems,
    };
    eprintln!("{}  load {}", run_line(&run, keys, seed_secs), loadavg());
    if !outcome.detail.is_empty() {
        eprintln!("    {}", outcome.detail);
    }
    for problem in &run.problems {
        eprintln!("    CHECK FAILED: {problem}");
    }
    Ok(run)
}

/// CPU seconds that the machine used between the clocks besides the
/// servers, the benchmark and the job: other work, i.e. noise.
fn other_cpu(before: &CpuClock, after: &CpuClock, job_cpu: f64) -> f64 {
    let other = (after.machine - before.machine)
        - (after.redis - before.redis)
        - (after.bench - before.bench)
        - job_cpu;
    other.max(0.0)
}

/// Each node's counter `f` after minus before.
fn deltas(before: &[Counters], after: &[Counters], f: impl Fn(&Counters) -> f64) -> Vec<f64> {
    before.iter().zip(after).map(|(b, a)| f(a) - f(b)).collect()
}

/// The topology's short name, for logs and the list of runs.
fn name(topology: Topology) -> &'static str {
    match topology {
        Topology::Single => "single",
        Topology::Cluster => "cluster",
    }
}

/// The topology as the table names it.
fn label(topology: Topology, primaries: usize) -> String {
    match topology {
        Topology::Single => "single node".to_string(),
        Topology::Cluster => format!("cluster, {}", primaries_text(primaries)),
    }
}

/// "3 primaries", "1 primary".
fn primaries_text(n: usize) -> String {
    if n == 1 {
        "1 primary".to_string()
    } else {
        format!("{n} primaries")
    }
}

fn secs(v: f64) -> String {
    format!("{v:.2} s")
}

fn percent(v: f64) -> String {
    format!("{:.0}%", 100.0 * v)
}

/// The progress line printed after each run.
fn run_line(run: &TopologyRun, keys: u64, seed_secs: f64) -> String {
    let nodes: Vec<String> = run.node_cpu.iter().map(|c| format!("{c:.2}")).collect();
    format!(
        "rep {} {:<7} {:<10} {keys} keys  seed {seed_secs:.2} s  wall {:.3} s  server CPU {:.3} s (nodes {})  \
         busiest node {:.0}%  script share {:.0}%  job CPU {:.2} s{}  other CPU {:.2} s  {}",
        run.rep + 1,
        name(run.topology),
        run.pace.name(),
        run.wall,
        run.cpu(),
        nodes.join(" "),
        100.0 * run.busiest(),
        100.0 * run.top_share(),
        run.job_cpu,
        run.rss_kib.map_or(String::new(), |kib| format!(
            "  peak RSS {:.1} MiB",
            kib as f64 / 1024.0
        )),
        run.other_cpu,
        if run.ok() { "check ok" } else { "CHECK FAILED" }
    )
}

/// The successful run of `topology` at `pace` in repetition `rep`, if any.
fn find(runs: &[TopologyRun], topology: Topology, pace: Pace, rep: usize) -> Option<&TopologyRun> {
    runs.iter()
        .find(|r| r.topology == topology && r.pace == pace && r.rep == rep && r.ok())
}

/// The main table (a row per topology and pace), the ratios table (a row per
/// pace), and how to read them.
fn table(runs: &[TopologyRun], keys: u64, primaries: usize) -> String {
    let rows: Vec<Vec<String>> = ROWS
        .iter()
        .filter_map(|&(topology, pace)| row(runs, topology, pace, keys, primaries))
        .collect();
    let main = markdown(
        &[
            "topology",
            "pace",
            "runs",
            "median wall",
            "server CPU",
            "CPU us/key",
            "busiest node",
            "script share",
            "slowest node pass",
            "job CPU",
            "job peak RSS",
            "other CPU",
        ],
        2,
        &rows,
    );
    let ratios = markdown(
        &[
            "pace",
            "wall: cluster / single",
            "server CPU: cluster / single",
            &format!("CPU ratio / {primaries}"),
            "pairs",
        ],
        1,
        &[Pace::Default, Pace::Full, Pace::Declared]
            .into_iter()
            .filter(|&pace| runs.iter().any(|r| r.pace == pace))
            .map(|pace| ratio_row(runs, pace, primaries))
            .collect::<Vec<_>>(),
    );
    format!(
        "\n{main}\n\n\
         Medians over the successful runs of {keys} keys. server CPU: Redis main-thread CPU (user+sys) summed over \
         the topology's nodes; busiest node: the most any one node's main thread was busy (its CPU / wall); script \
         share: the most time any one node spent in the job's script calls (in the declared-keys mode, and its \
         own SCANs) / wall, which the job's cap (per node) holds; declared: full speed in the declared-keys mode \
         (--key-mode declared: the job's SCAN, one call per hash slot on a cluster node); slowest node pass: the longest node's pass in the job's report (without the job's start-up and \
         discovery); job CPU: the job process (user+sys, GNU time); other CPU: anything but the servers, the \
         benchmark and the job (noise; it should be near 0).\n\n\
         Cluster / single node, per repetition at the same pace, the median (in brackets, from 5 repetitions on, \
         the interval that holds the true median with at least 95% confidence). The server CPU ratio is what the \
         cluster layout's per-key commands cost over the single node's multi-key ones. The job cleans the \
         {primaries} nodes at once, each held to the same share of its own server's time, so each node's pass \
         lasts about its CPU / its share: the wall ratio should be about the CPU ratio / {primaries} (1/{primaries} \
         of the keys per node), at the default pace always, at full speed only with a free CPU for every \
         node:\n\n{ratios}\n"
    )
}

/// The table's row of one topology at one pace, if it ran.
fn row(
    runs: &[TopologyRun],
    topology: Topology,
    pace: Pace,
    keys: u64,
    primaries: usize,
) -> Option<Vec<String>> {
    let all: Vec<&TopologyRun> = runs
        .iter()
        .filter(|r| r.topology == topology && r.pace == pace)
        .collect();
    if all.is_empty() {
        return None;
    }
    let ok: Vec<&TopologyRun> = all.iter().copied().filter(|r| r.ok()).collect();
    let med =
        |f: &dyn Fn(&TopologyRun) -> f64| median(&ok.iter().map(|r| f(r)).collect::<Vec<_>>());
    let opt = |v: Option<f64>, fmt: fn(f64) -> String| v.map_or_else(|| "-".to_string(), fmt);
    let mut count = if ok.len() == all.len() {
        ok.len().to_string()
    } else {
        format!("{} ok of {}", ok.len(), all.len())
    };
    let noisy = ok.iter().filter(|r| r.noisy()).count();
    if noisy > 0 {
        count.push_str(&format!(" ({noisy} noisy)"));
    }
    Some(vec![
        label(topology, primaries),
        pace.name().to_string(),
        count,
        opt(med(&|r| r.wall), secs),
        opt(med(&TopologyRun::cpu), secs),
        opt(med(&|r| r.cpu() / keys as f64 * 1e6), |v| format!("{v:.2}")),
        opt(med(&TopologyRun::busiest), percent),
        opt(med(&TopologyRun::top_share), percent),
        opt(med(&TopologyRun::slowest_node), secs),
        opt(med(&|r| r.job_cpu), secs),
        opt(med(&|r| r.rss_kib.unwrap_or(0) as f64 / 1024.0), |v| {
            format!("{v:.1} MiB")
        }),
        opt(med(&|r| r.other_cpu), secs),
    ])
}

/// The ratios of the cluster's runs to the single node's at `pace`, pair by
/// pair within a repetition, and the wall ratio the CPU ratio predicts.
fn ratio_row(runs: &[TopologyRun], pace: Pace, primaries: usize) -> Vec<String> {
    let pairs: Vec<(&TopologyRun, &TopologyRun)> = runs
        .iter()
        .filter(|r| r.topology == Topology::Cluster && r.pace == pace && r.ok())
        .filter_map(|c| Some((c, find(runs, Topology::Single, pace, c.rep)?)))
        .collect();
    let wall: Vec<f64> = pairs.iter().map(|(c, s)| c.wall / s.wall).collect();
    let cpu: Vec<f64> = pairs.iter().map(|(c, s)| c.cpu() / s.cpu()).collect();
    vec![
        pace.name().to_string(),
        with_interval(&wall),
        with_interval(&cpu),
        median(&cpu).map_or_else(
            || "-".to_string(),
            |m| format!("{:.2}", m / primaries as f64),
        ),
        pairs.len().to_string(),
    ]
}

/// Every run, in the order they ran.
fn runs_list(runs: &[TopologyRun]) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                (r.rep + 1).to_string(),
                name(r.topology).to_string(),
                r.pace.name().to_string(),
                format!("{:.3}", r.wall),
                format!("{:.3}", r.cpu()),
                r.node_cpu
                    .iter()
                    .map(|c| format!("{c:.2}"))
                    .collect::<Vec<_>>()
                    .join(" / "),
                percent(r.busiest()),
                r.node_secs
                    .iter()
                    .map(|s| format!("{s:.2}"))
                    .collect::<Vec<_>>()
                    .join(" / "),
                format!("{:.2}", r.job_cpu),
                format!(
                    "{:.2}{}",
                    r.other_cpu,
                    if r.noisy() { " noisy" } else { "" }
                ),
                if r.ok() { "ok".into() } else { "FAILED".into() },
            ]
        })
        .collect();
    format!(
        "Every run:\n\n{}\n",
        markdown(
            &[
                "rep",
                "topology",
                "pace",
                "wall s",
                "server CPU s",
                "per node CPU s",
                "busiest",
                "node passes s",
                "job CPU s",
                "other CPU s",
                "check",
            ],
            3,
            &rows,
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_topology_goes_first_at_each_pace_every_other_repetition() {
        let position = |order: &[(Topology, Pace)], run: (Topology, Pace)| {
            order.iter().position(|&r| r == run).unwrap()
        };
        let mut reversed = ORDER;
        reversed.reverse();
        for pace in [Pace::Default, Pace::Full, Pace::Declared] {
            let first = |order: &[(Topology, Pace)]| {
                position(order, (Topology::Cluster, pace))
                    < position(order, (Topology::Single, pace))
            };
            assert_ne!(first(&ORDER), first(&reversed), "{pace:?}");
        }
    }
}
