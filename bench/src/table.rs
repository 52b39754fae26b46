//! Turns the measured runs into what the benchmark prints: one progress line
//! per run, the main table (medians, and ratios to the server-side bound taken
//! pair by pair within a repetition), the list of every run, and the RSS
//! scaling table. Tables are Markdown, ready for the README.

use crate::Run;
use crate::measure::{median, median_interval};
use crate::methods::Method;

const MIB: f64 = 1024.0 * 1024.0;

/// A Markdown table with aligned columns: the first `left` columns are text
/// (left-aligned), the others numbers (right-aligned).
pub fn markdown(head: &[&str], left: usize, rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let mut s = String::from("|");
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i < left {
                s.push_str(&format!(" {cell}{} |", " ".repeat(pad)));
            } else {
                s.push_str(&format!(" {}{cell} |", " ".repeat(pad)));
            }
        }
        s
    };
    let mut out = line(&head.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    out.push('\n');
    out.push('|');
    for (i, w) in widths.iter().enumerate() {
        let dashes = "-".repeat(*w);
        out.push_str(&if i < left {
            format!("{dashes}--|")
        } else {
            format!("-{dashes}:|")
        });
    }
    for row in rows {
        out.push('\n');
        out.push_str(&line(row));
    }
    out
}

fn opt(value: Option<f64>, fmt: impl Fn(f64) -> String) -> String {
    value.map_or_else(|| "-".to_string(), fmt)
}

fn secs(v: f64) -> String {
    format!("{v:.2} s")
}

fn ms(v: f64) -> String {
    format!("{v:.2}")
}

/// The longest command of a run: "< 2" when none reached the slow log's 2 ms.
pub fn longest(v: f64) -> String {
    if v > 0.0 { ms(v) } else { "< 2".to_string() }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The progress line printed after each run.
pub fn run_line(run: &Run, seed_secs: f64) -> String {
    format!(
        "rep {} {:<8} {} keys  seed {:.2} s  wall {:.3} s  server CPU {:.3} s ({:.0}% busy)  client CPU {:.3} s  other CPU {:.2} s  PING p50 {:.2} p99 {:.2} max {:.2} ms  longest command {} ms{}  {}",
        run.rep + 1,
        run.method.name(),
        run.keys,
        seed_secs,
        run.wall,
        run.cpu,
        100.0 * run.cpu / run.wall.max(1e-9),
        run.client_cpu,
        run.other_cpu,
        run.latency.p50,
        run.latency.p99,
        run.latency.max,
        longest(run.longest_ms),
        run.rss_kib
            .map_or(String::new(), |kib| format!("  peak RSS {}", mib(kib))),
        if run.ok() { "check ok" } else { "CHECK FAILED" }
    )
}

/// The successful run of `method` in repetition `rep`, if any.
fn find<'a>(runs: &'a [Run], method: &Method, rep: usize) -> Option<&'a Run> {
    runs.iter()
        .find(|r| r.method == *method && r.rep == rep && r.ok())
}

/// The main table: one row per method.
pub fn main_table(runs: &[Run], methods: &[Method], keys: u64) -> String {
    let mut rows = Vec::new();
    let mut traffic = Vec::new();
    let mut verdicts = Vec::new();
    let mut caps = Vec::new();
    let mut ordered: Vec<&Method> = methods.iter().collect();
    ordered.sort_by(|a, b| {
        a.rank()
            .partial_cmp(&b.rank())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    for method in ordered {
        let all: Vec<&Run> = runs.iter().filter(|r| r.method == *method).collect();
        if all.is_empty() {
            continue;
        }
        let ok: Vec<&Run> = all.iter().copied().filter(|r| r.ok()).collect();
        let med = |f: &dyn Fn(&Run) -> f64| median(&ok.iter().map(|r| f(r)).collect::<Vec<_>>());
        // Ratios to the bound, pair by pair within the same repetition.
        let pairs: Vec<(&Run, &Run)> = ok
            .iter()
            .filter_map(|r| Some((*r, find(runs, &Method::Bound, r.rep)?)))
            .collect();
        let wall_x: Vec<f64> = pairs.iter().map(|(r, b)| r.wall / b.wall).collect();
        let cpu_x: Vec<f64> = pairs.iter().map(|(r, b)| r.cpu / b.cpu).collect();
        if *method == Method::Janitor {
            verdicts.push(verdict("janitor wall x bound", &wall_x, 1.1));
            verdicts.push(verdict("janitor server CPU x bound", &cpu_x, 1.0));
        }
        if *method == Method::JanitorDeclared {
            // The targets for the declared-keys mode: no slower and
            // no costlier than the client-side pipeline, pair by pair.
            let pairs: Vec<(&Run, &Run)> = ok
                .iter()
                .filter_map(|r| Some((*r, find(runs, &Method::Pipeline, r.rep)?)))
                .collect();
            let wall: Vec<f64> = pairs.iter().map(|(r, p)| r.wall / p.wall).collect();
            let cpu: Vec<f64> = pairs.iter().map(|(r, p)| r.cpu / p.cpu).collect();
            verdicts.push(verdict("janitor+declared wall x pipeline", &wall, 1.0));
            verdicts.push(verdict("janitor+declared server CPU x pipeline", &cpu, 1.0));
            // The CPU target proposed in its place (docs/performance.md):
            // what declaring the keys adds to the default mode's cost.
            verdicts.push(verdict(
                "janitor+declared server CPU x janitor (proposed)",
                &cpu_ratios(runs, &ok, &Method::Janitor),
                1.1,
            ));
            // What the job's own work (lease, checkpoint, caps, report,
            // checks before writes) adds to the least a script can do.
            verdicts.push(measure(
                "janitor+declared server CPU x declared-floor",
                &cpu_ratios(runs, &ok, &Method::DeclaredFloor),
            ));
        }
        if *method == Method::DeclaredFloor {
            // Where the CPU target for the declared-keys mode
            // stands against the least a script that declares its keys can
            // spend.
            verdicts.push(measure(
                "declared-floor server CPU x pipeline",
                &cpu_ratios(runs, &ok, &Method::Pipeline),
            ));
        }
        if matches!(method, Method::Janitor | Method::JanitorDeclared) {
            let p99: Vec<f64> = ok.iter().map(|r| r.latency.p99).collect();
            let max: Vec<f64> = ok.iter().map(|r| r.latency.max).collect();
            let name = method.name();
            verdicts.push(ping_verdict(&format!("{name} PING p99"), &p99, PING_P99_MS));
            verdicts.push(ping_verdict(&format!("{name} PING max"), &max, PING_MAX_MS));
        }
        if let Some(cap) = method.share() {
            let shares: Vec<f64> = ok.iter().map(|r| r.scripts / r.wall.max(1e-9)).collect();
            caps.push(cap_line(&method.name(), cap, &shares));
        }
        let max_of_max = ok.iter().map(|r| r.latency.max).reduce(f64::max);
        let rss: Vec<u64> = ok.iter().filter_map(|r| r.rss_kib).collect();
        let rss_text = if rss.is_empty() {
            "-".to_string()
        } else {
            let med_rss = median(&rss.iter().map(|&k| k as f64).collect::<Vec<_>>()).unwrap_or(0.0);
            format!(
                "{} (max {})",
                mib(med_rss as u64),
                mib(rss.iter().copied().max().unwrap_or(0))
            )
        };
        rows.push(vec![
            method.name().to_string(),
            {
                let mut runs = if ok.len() == all.len() {
                    ok.len().to_string()
                } else {
                    format!("{} ok of {}", ok.len(), all.len())
                };
                let noisy = ok.iter().filter(|r| r.noisy()).count();
                if noisy > 0 {
                    runs.push_str(&format!(" ({noisy} noisy)"));
                }
                runs
            },
            opt(med(&|r| r.wall), secs),
            with_interval(&wall_x),
            opt(med(&|r| r.cpu), secs),
            opt(med(&|r| r.cpu / keys as f64 * 1e6), |v| format!("{v:.2}")),
            with_interval(&cpu_x),
            opt(med(&|r| r.cpu / r.wall), |v| format!("{:.0}%", 100.0 * v)),
            opt(med(&|r| r.latency.p50), ms),
            opt(med(&|r| r.latency.p99), ms),
            opt(med(&|r| r.latency.max), ms),
            opt(max_of_max, ms),
            rss_text,
        ]);
        traffic.push(vec![
            method.name().to_string(),
            opt(med(&|r| r.outcome.scanned as f64), |v| format!("{v:.0}")),
            opt(med(&|r| r.net_in as f64 / MIB), |v| format!("{v:.1}")),
            opt(med(&|r| r.net_out as f64 / MIB), |v| format!("{v:.1}")),
            opt(med(&|r| r.latency.count as f64), |v| format!("{v:.0}")),
            opt(med(&|r| r.latency.p99_arrivals), ms),
            opt(ok.iter().map(|r| r.longest_ms).reduce(f64::max), longest),
            opt(med(&|r| r.client_cpu), secs),
            opt(med(&|r| r.other_cpu), secs),
        ]);
    }
    let main = markdown(
        &[
            "method",
            "runs",
            "median wall",
            "x bound",
            "server CPU",
            "CPU us/key",
            "CPU x bound",
            "Redis busy",
            "PING p50 ms",
            "PING p99 ms",
            "PING max ms",
            "max of max ms",
            "job peak RSS",
        ],
        1,
        &rows,
    );
    let traffic = markdown(
        &[
            "method",
            "keys enumerated",
            "MiB to Redis",
            "MiB from Redis",
            "PINGs sent",
            "p99 of 1/ms arrivals, ms",
            "longest command ms",
            "client CPU",
            "other CPU",
        ],
        1,
        &traffic,
    );
    let caps = if caps.is_empty() {
        String::new()
    } else {
        format!(
            "\nThe cap: a capped job's share of Redis's time is the time Redis spent in its script calls \
             (INFO commandstats, each call whole: set-up, script and reply) and, in the declared-keys mode \
             (declared@S), its own SCANs / wall, the job's start-up included. Redis busy counts more: the PING \
             client, and Redis waking between calls:\n{}\n",
            caps.concat()
        )
    };
    format!(
        "\n{main}\n\n\
         Medians over the successful runs. x bound and CPU x bound: median of the ratios to the bound's run \
         in the same repetition, and in brackets the interval that holds the true median with at least 95% \
         confidence (order statistics; from 5 repetitions on, where it is the whole range at 93.75%). server CPU: Redis main thread (user+sys). Redis busy: server CPU / wall. \
         PING: a second client, one PING per ms; p50/p99/max are medians across runs, max of max is the worst run.\n\n\
         Details (medians): what the method enumerated, its traffic (the PING client's own bytes excluded), \
         and the PING p99 corrected for coordinated omission (as seen by requests arriving every 1 ms, \
         including those a stalled PING client did not send); the longest any one command held Redis in \
         all runs (slow log; a script's own calls included); client CPU: the job process, or the thread running \
         an in-process method; other CPU: CPU time used during the run by anything but Redis, the benchmark and \
         the job (noise from other work on the machine; it should be near 0):\n\n{traffic}\n{}\n{caps}",
        verdicts.concat()
    )
}

/// How far the measured share of a capped job is from its cap.
fn cap_line(name: &str, cap: f64, shares: &[f64]) -> String {
    let (Some(m), Some(lo), Some(hi)) = (
        median(shares),
        shares.iter().copied().reduce(f64::min),
        shares.iter().copied().reduce(f64::max),
    ) else {
        return String::new();
    };
    format!(
        "\n{name}: measured share {:.1}% (median of {} run(s), {:.1}% to {:.1}%), cap {:.1}%: {:.2}x the cap",
        100.0 * m,
        shares.len(),
        100.0 * lo,
        100.0 * hi,
        100.0 * cap,
        m / cap
    )
}

/// The least confidence worth an interval: 5 repetitions (93.75%).
const MIN_CONFIDENCE: f64 = 0.9;

/// A ratio's median and, in brackets, its interval when there are enough
/// repetitions for one.
pub fn with_interval(ratios: &[f64]) -> String {
    match (median(ratios), median_interval(ratios)) {
        (Some(m), Some((lo, hi, conf))) if conf >= MIN_CONFIDENCE => {
            format!("{m:.2} ({lo:.2}-{hi:.2})")
        }
        (Some(m), _) => format!("{m:.2}"),
        _ => "-".to_string(),
    }
}

/// The job's latency targets for the PING client, in ms: each run's p99
/// and max (the README's).
const PING_P99_MS: f64 = 2.0;
const PING_MAX_MS: f64 = 5.0;

/// One of the job's latency targets, judged on the median over its runs
/// (the table's column), with how many runs met it.
fn ping_verdict(what: &str, values: &[f64], target: f64) -> String {
    let Some(m) = median(values) else {
        return String::new();
    };
    let within = values.iter().filter(|v| **v <= target).count();
    format!(
        "\n{what}: median {m:.2} ms over {} run(s), {within} of them within; target at most {target:.0} ms: {}",
        values.len(),
        if m <= target { "met" } else { "MISSED" }
    )
}

/// Per run of `ok`, its server CPU over that of `other`'s run in the same
/// repetition.
fn cpu_ratios(runs: &[Run], ok: &[&Run], other: &Method) -> Vec<f64> {
    ok.iter()
        .filter_map(|r| Some(r.cpu / find(runs, other, r.rep)?.cpu))
        .collect()
}

/// A ratio that has no target, with its interval.
fn measure(what: &str, ratios: &[f64]) -> String {
    let (Some(m), Some((lo, hi, conf))) = (median(ratios), median_interval(ratios)) else {
        return String::new();
    };
    if conf < MIN_CONFIDENCE {
        return format!(
            "\n{what}: median {m:.2} (a measure, no target; too few repetitions, {}, for an interval)",
            ratios.len()
        );
    }
    format!(
        "\n{what}: median {m:.2}, {:.1}% interval {lo:.2} to {hi:.2} (a measure, no target)",
        100.0 * conf
    )
}

/// One of the job's ratio targets, judged against its interval: met when
/// the whole interval is at or below the target, missed when all of it is
/// above, and not decided by this run's noise otherwise.
fn verdict(what: &str, ratios: &[f64], target: f64) -> String {
    let (Some(m), Some((lo, hi, conf))) = (median(ratios), median_interval(ratios)) else {
        return String::new();
    };
    if conf < MIN_CONFIDENCE {
        return format!(
            "\n{what}: median {m:.2}; target at most {target:.1}: too few repetitions ({}) to judge",
            ratios.len()
        );
    }
    let judged = if hi <= target {
        "met"
    } else if lo > target {
        "MISSED"
    } else if m <= target {
        "median within, interval across it: rerun with more --reps to decide"
    } else {
        "median above, interval across it: rerun with more --reps to decide"
    };
    format!(
        "\n{what}: median {m:.2}, {:.1}% interval {lo:.2} to {hi:.2}; target at most {target:.1}: {judged}",
        100.0 * conf
    )
}

/// Every run, in the order they ran.
pub fn runs_list(runs: &[Run]) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                (r.rep + 1).to_string(),
                r.method.name().to_string(),
                format!("{:.3}", r.wall),
                format!("{:.3}", r.cpu),
                format!("{:.0}%", 100.0 * r.cpu / r.wall.max(1e-9)),
                ms(r.latency.p50),
                ms(r.latency.p99),
                ms(r.latency.max),
                longest(r.longest_ms),
                r.rss_kib.map_or("-".into(), mib),
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
                "method",
                "wall s",
                "server CPU s",
                "busy",
                "p50 ms",
                "p99 ms",
                "max ms",
                "longest cmd ms",
                "peak RSS",
                "other CPU s",
                "check",
            ],
            2,
            &rows,
        )
    )
}

/// The job alone at several keyspace sizes: its peak RSS should not grow.
pub fn rss_scaling(runs: &[Run], sizes: &[u64]) -> String {
    let mut rows = Vec::new();
    let mut medians = Vec::new();
    for &n in sizes {
        let ok: Vec<&Run> = runs.iter().filter(|r| r.keys == n && r.ok()).collect();
        let med = |f: &dyn Fn(&Run) -> f64| median(&ok.iter().map(|r| f(r)).collect::<Vec<_>>());
        let rss = med(&|r| r.rss_kib.unwrap_or(0) as f64);
        medians.push(rss);
        rows.push(vec![
            n.to_string(),
            format!(
                "{} of {}",
                ok.len(),
                runs.iter().filter(|r| r.keys == n).count()
            ),
            opt(med(&|r| r.wall), secs),
            opt(med(&|r| r.cpu), secs),
            opt(med(&|r| r.latency.p99), ms),
            opt(med(&|r| r.latency.max), ms),
            opt(rss, |v| mib(v as u64)),
        ]);
    }
    let mut out = format!(
        "\n{}\n",
        markdown(
            &[
                "keys",
                "runs ok",
                "median wall",
                "server CPU",
                "PING p99 ms",
                "PING max ms",
                "job peak RSS"
            ],
            0,
            &rows
        )
    );
    if let (Some(Some(first)), Some(Some(last))) = (medians.first(), medians.last())
        && sizes.len() > 1
        && *first > 0.0
    {
        let r = last / first;
        out.push_str(&format!(
            "\npeak RSS at {} keys / at {} keys = {r:.3} ({} the issue's 10%)\n",
            sizes[sizes.len() - 1],
            sizes[0],
            if (r - 1.0).abs() <= 0.10 {
                "within"
            } else {
                "OUTSIDE"
            }
        ));
    }
    out
}
