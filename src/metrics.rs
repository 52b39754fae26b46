//! A finished run as Prometheus metrics: one registry built from the run's
//! outcome, the task it ran and its exit code, encoded by the `prometheus`
//! crate's encoder in the text format 0.0.4 (what the Pushgateway takes;
//! never formatted by hand). docs/metrics.md is the table of the names,
//! labels and meanings; a test keeps the table and what a real push carries
//! the same.
//!
//! The counters are the run's own counts: each run starts from 0, like a
//! process that lives one run, and the Pushgateway keeps the last run's
//! values. The per-node metrics carry a `node` label (the node's
//! `host:port`), on a standalone server too; the run's own have none.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{CounterVec, Gauge, GaugeVec, IntCounterVec, Opts, Registry, TextEncoder};

use crate::exit::Exit;
use crate::node::{NodeOutcome, Snapshot, Task};
use crate::pass::End;
use crate::run::RunOutcome;

/// The media type of the encoding: the text format 0.0.4.
pub const TEXT_FORMAT: &str = prometheus::TEXT_FORMAT;

/// A finished run, as its metrics describe it.
pub struct Run<'a> {
    /// What its nodes did.
    pub outcome: &'a RunOutcome,
    /// What it was asked to do.
    pub task: &'a Task,
    /// The exit code it ends with.
    pub exit: Exit,
    /// When it ended.
    pub ended: SystemTime,
}

/// The run's metrics in the text format 0.0.4.
pub fn text(run: &Run) -> Result<String, prometheus::Error> {
    let mut text = String::new();
    TextEncoder::new().encode_utf8(&registry(run)?.gather(), &mut text)?;
    Ok(text)
}

/// The registry of the run's metrics: every metric of docs/metrics.md that
/// applies to the run (those that apply to none of its nodes carry no series).
pub fn registry(run: &Run) -> Result<Registry, prometheus::Error> {
    let metrics = Metrics(Registry::new());
    run_gauges(&metrics, run)?;
    let nodes = &run.outcome.nodes;
    metrics.gauges(
        "redis_janitor_info",
        "The job's, its script's and the server's versions (always 1).",
        &INFO_LABELS,
        nodes.iter().map(|node| (info_labels(node), 1.0)),
    )?;
    for (name, help, value) in NODE_COUNTERS {
        metrics.counters(
            name,
            help,
            &["node"],
            nodes
                .iter()
                .map(|node| (vec![node.address.clone()], value(node))),
        )?;
    }
    rule_counters(&metrics, run)?;
    if run.task.pass.estimate_freed {
        metrics.counters(
            "redis_janitor_estimated_freed_bytes_total",
            "The MEMORY USAGE of every key deleted, summed (with --estimate-freed).",
            &["node"],
            nodes
                .iter()
                .map(|node| (vec![node.address.clone()], node.progress.counts.freed_bytes)),
        )?;
    }
    replica_pause(&metrics, nodes)?;
    for (name, help, value) in NODE_GAUGES {
        metrics.gauges(
            name,
            help,
            &["node"],
            nodes
                .iter()
                .filter_map(|node| Some((vec![node.address.clone()], value(node)?))),
        )?;
    }
    snapshot_gauges(&metrics, nodes)?;
    Ok(metrics.0)
}

/// The run's own gauges, without a `node` label.
fn run_gauges(metrics: &Metrics, run: &Run) -> Result<(), prometheus::Error> {
    metrics.gauge(
        "redis_janitor_run_duration_seconds",
        "Wall time of the run.",
        run.outcome.duration.as_secs_f64(),
    )?;
    if let Some(max_runtime) = run.task.pass.max_runtime {
        metrics.gauge(
            "redis_janitor_run_max_runtime_seconds",
            "--max-runtime, when set.",
            max_runtime.as_secs_f64(),
        )?;
    }
    metrics.gauge(
        "redis_janitor_run_exit_code",
        "The run's exit code (0 success, 1 failure, 130 SIGINT, 143 SIGTERM).",
        f64::from(run.exit as u8),
    )?;
    metrics.gauge(
        "redis_janitor_dry_run",
        "1 for a dry run, else 0.",
        flag(run.task.dry_run),
    )?;
    metrics.gauge(
        "redis_janitor_last_run_timestamp_seconds",
        "When the run ended, in seconds since the Unix epoch.",
        unix_seconds(run.ended),
    )
}

/// The labels of `redis_janitor_info`, in [`info_labels`]'s order.
const INFO_LABELS: [&str; 7] = [
    "node",
    "key_mode",
    "version",
    "script_version",
    "script_sha",
    "server",
    "server_version",
];

/// `node`'s info labels: how its calls got their keys, the job's version,
/// the script's and the server's; empty for what the node never told (it
/// did not answer).
fn info_labels(node: &NodeOutcome) -> Vec<String> {
    let script = node.script.as_ref();
    let server = node.server.as_ref();
    vec![
        node.address.clone(),
        node.key_mode.name().to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
        script.map(|s| s.version.clone()).unwrap_or_default(),
        script.map(|s| s.sha.clone()).unwrap_or_default(),
        server.map(|s| s.software.clone()).unwrap_or_default(),
        server.map(|s| s.version.clone()).unwrap_or_default(),
    ]
}

/// A per-node counter: its name, help and value.
type NodeCounter = (&'static str, &'static str, fn(&NodeOutcome) -> u64);

/// The per-node counters of keys, calls and faults.
const NODE_COUNTERS: [NodeCounter; 10] = [
    (
        "redis_janitor_keys_scanned_total",
        "Keys SCAN returned.",
        |node| node.progress.counts.keys_scanned,
    ),
    (
        "redis_janitor_keys_examined_total",
        "Keys the SCAN steps looked at (the sum of their COUNTs).",
        |node| node.progress.counts.keys_examined,
    ),
    (
        "redis_janitor_keys_matched_total",
        "Keys whose name matched a rule's pattern.",
        |node| node.progress.counts.keys_matched,
    ),
    (
        "redis_janitor_keys_unchanged_total",
        "Matched keys whose state no rule's conditions took.",
        |node| node.progress.counts.unchanged,
    ),
    (
        "redis_janitor_keys_vanished_total",
        "Matched keys gone before their rule acted.",
        |node| node.progress.counts.vanished,
    ),
    (
        "redis_janitor_keys_moved_total",
        "Matched keys a cluster node refused because their slot was moving.",
        |node| node.progress.counts.moved,
    ),
    (
        "redis_janitor_script_calls_total",
        "Script calls that completed.",
        |node| node.progress.counts.batches,
    ),
    (
        "redis_janitor_script_reloads_total",
        "Times a NOSCRIPT reply made the job load the script again.",
        |node| node.progress.counts.script_reloads,
    ),
    (
        "redis_janitor_retries_total",
        "Transient faults the node's work was retried after.",
        |node| node.retries as u64,
    ),
    (
        "redis_janitor_failovers_total",
        "Failovers of the node's shard the pass followed.",
        |node| node.failovers.len() as u64,
    ),
];

/// Per node and rule: the keys each rule acted on, and those a cap left
/// alone; one series per rule, at 0 too.
fn rule_counters(metrics: &Metrics, run: &Run) -> Result<(), prometheus::Error> {
    let per_rule = |counts: fn(&NodeOutcome) -> &[u64]| {
        run.outcome.nodes.iter().flat_map(move |node| {
            run.task
                .rules
                .rules
                .iter()
                .zip(counts(node))
                .map(|(rule, &keys)| {
                    let labels = [&node.address, &rule.name, rule.action.name()];
                    (labels.map(str::to_string).to_vec(), keys)
                })
        })
    };
    metrics.counters(
        "redis_janitor_keys_acted_total",
        "Keys each rule deleted or gave a TTL (in a dry run, would have).",
        &["node", "rule", "action"],
        per_rule(|node| &node.progress.counts.per_rule),
    )?;
    metrics.counters(
        "redis_janitor_keys_capped_total",
        "Keys each rule would have acted on beyond its cap or the run's, left as they were.",
        &["node", "rule", "action"],
        per_rule(|node| &node.progress.counts.capped),
    )
}

/// The time each node's calls were paused for lagging replicas.
fn replica_pause(metrics: &Metrics, nodes: &[NodeOutcome]) -> Result<(), prometheus::Error> {
    let vec = CounterVec::new(
        Opts::new(
            "redis_janitor_replica_pause_seconds_total",
            "Time the calls were paused for lagging replicas.",
        ),
        &["node"],
    )?;
    for node in nodes {
        let paused = node.progress.replica_pause.as_secs_f64();
        vec.with_label_values(&[&node.address]).inc_by(paused);
    }
    metrics.0.register(Box::new(vec))
}

/// A per-node gauge: its name, help and value, `None` where it does not
/// apply to the node.
type NodeGauge = (&'static str, &'static str, fn(&NodeOutcome) -> Option<f64>);

/// The per-node gauges of the node's work and its pass.
const NODE_GAUGES: [NodeGauge; 8] = [
    (
        "redis_janitor_node_duration_seconds",
        "How long the node's work took.",
        |node| Some(node.duration.as_secs_f64()),
    ),
    (
        "redis_janitor_pass_complete",
        "1 when the pass reached the end of the keyspace in this run.",
        |node| Some(flag(matches!(node.end, End::Complete))),
    ),
    (
        "redis_janitor_pass_resumed",
        "1 when this run resumed a checkpoint.",
        |node| Some(flag(node.start.as_ref().is_some_and(|s| s.resumed))),
    ),
    (
        "redis_janitor_pass_locked",
        "1 when another run's lease made this run skip the node.",
        |node| Some(flag(matches!(node.end, End::Locked(_)))),
    ),
    (
        "redis_janitor_pass_started_timestamp_seconds",
        "When the pass now in progress, or just completed, began.",
        |node| node.start.as_ref().map(|start| start.started_at),
    ),
    (
        "redis_janitor_pass_progress_ratio",
        "Share of the keyspace the pass has covered, 0 to 1 (from the SCAN cursor).",
        |node| node.start.is_some().then_some(node.progress.done),
    ),
    (
        "redis_janitor_server_share_ratio",
        "Share of Redis's time the job's calls took over the node's work.",
        |node| node.progress.server_share(),
    ),
    (
        "redis_janitor_last_success_timestamp_seconds",
        "When a run last cleaned the node successfully, as kept in Redis.",
        |node| node.last_success_ms.map(|ms| ms as f64 / 1000.0),
    ),
];

/// `used_memory` and `DBSIZE` of each node at its work's start and end.
fn snapshot_gauges(metrics: &Metrics, nodes: &[NodeOutcome]) -> Result<(), prometheus::Error> {
    let sides = |figure: fn(Snapshot) -> u64| {
        nodes.iter().flat_map(move |node| {
            [("start", node.at_start), ("end", node.at_end)]
                .into_iter()
                .filter_map(move |(at, snapshot)| {
                    let labels = vec![node.address.clone(), at.to_string()];
                    Some((labels, figure(snapshot?) as f64))
                })
        })
    };
    metrics.gauges(
        "redis_janitor_used_memory_bytes",
        "used_memory of INFO memory at the start and the end of the node's work.",
        &["node", "at"],
        sides(|snapshot| snapshot.used_memory),
    )?;
    metrics.gauges(
        "redis_janitor_db_keys",
        "DBSIZE at the start and the end of the node's work (the job's own keys included).",
        &["node", "at"],
        sides(|snapshot| snapshot.keys),
    )
}

/// A registry and the ways metrics go into it.
struct Metrics(Registry);

impl Metrics {
    /// A gauge without labels.
    fn gauge(&self, name: &str, help: &str, value: f64) -> Result<(), prometheus::Error> {
        let gauge = Gauge::with_opts(Opts::new(name, help))?;
        gauge.set(value);
        self.0.register(Box::new(gauge))
    }

    /// A gauge with `labels`, one series per item of `series`.
    fn gauges(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        series: impl IntoIterator<Item = (Vec<String>, f64)>,
    ) -> Result<(), prometheus::Error> {
        let vec = GaugeVec::new(Opts::new(name, help), labels)?;
        for (values, value) in series {
            vec.get_metric_with_label_values(&values)?.set(value);
        }
        self.0.register(Box::new(vec))
    }

    /// A counter with `labels`, one series per item of `series`, at 0 too.
    fn counters(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        series: impl IntoIterator<Item = (Vec<String>, u64)>,
    ) -> Result<(), prometheus::Error> {
        let vec = IntCounterVec::new(Opts::new(name, help), labels)?;
        for (values, value) in series {
            vec.get_metric_with_label_values(&values)?.inc_by(value);
        }
        self.0.register(Box::new(vec))
    }
}

/// 1 for true, 0 for false.
fn flag(value: bool) -> f64 {
    if value { 1.0 } else { 0.0 }
}

/// `time` in seconds since the Unix epoch.
fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use prometheus::proto::MetricType;

    use super::*;
    use crate::checkpoint::Start;
    use crate::error::Error;
    use crate::node::{Failover, ServerInfo};
    use crate::pass::Locked;
    use crate::topology::Role;

    /// The task of `redis-janitor run ARGS`, with the built-in rules.
    fn task(args: &[&str]) -> Task {
        use clap::Parser;
        let cli = crate::cli::Cli::parse_from(["redis-janitor", "run"].iter().chain(args));
        let crate::cli::Command::Run(args) = cli.command else {
            unreachable!("a run")
        };
        args.settings(None).expect("valid settings").task
    }

    /// A node that completed a pass at `address`, with counts derived from
    /// `n`.
    fn complete(address: &str, task: &Task, n: u64) -> NodeOutcome {
        let mut node = NodeOutcome::new(address.into(), Role::Primary, &task.rules);
        let counts = &mut node.progress.counts;
        counts.keys_scanned = 10 * n;
        counts.keys_examined = 11 * n;
        counts.keys_matched = 9 * n;
        counts.batches = n;
        counts.vanished = 1;
        counts.unchanged = 2;
        counts.moved = 3;
        counts.script_reloads = 4;
        counts.per_rule[1] = 5 * n;
        counts.capped[2] = 6;
        counts.freed_bytes = 1000 * n;
        node.progress.done = 1.0;
        node.progress.replica_pause = Duration::from_millis(250 * n);
        node.progress.held = Duration::from_millis(100);
        node.progress.elapsed = Duration::from_millis(400 * n);
        node.retries = 2;
        node.failovers = vec![Failover {
            from: "old:1".into(),
            to: address.into(),
        }];
        node.duration = Duration::from_millis(1500);
        node.server = Some(ServerInfo {
            address: address.into(),
            software: "Valkey".into(),
            version: "8.1.8".into(),
        });
        node.start = Some(Start {
            cursor: 0,
            started_ms: 1_700_000_000_250,
            started_at: 1_700_000_000.25,
            resumed: true,
            reason: "resumed".into(),
        });
        node.at_start = Some(Snapshot {
            used_memory: 5_000_000,
            keys: 300,
        });
        node.at_end = Some(Snapshot {
            used_memory: 4_000_000,
            keys: 200,
        });
        node.last_success_ms = Some(1_700_000_100_500);
        node
    }

    /// Samples by name and labels (sorted by name).
    type Samples = BTreeMap<(String, Vec<(String, String)>), f64>;

    /// Every sample of `registry`.
    fn samples(registry: &Registry) -> Samples {
        let mut samples = BTreeMap::new();
        for family in registry.gather() {
            for metric in family.get_metric() {
                let labels = metric
                    .get_label()
                    .iter()
                    .map(|l| (l.name().to_string(), l.value().to_string()))
                    .collect();
                let value = match family.get_field_type() {
                    MetricType::COUNTER => metric.get_counter().get_value(),
                    _ => metric.get_gauge().get_value(),
                };
                samples.insert((family.name().to_string(), labels), value);
            }
        }
        samples
    }

    /// The sample `name{label=value,...}` (labels sorted, values unquoted).
    #[track_caller]
    fn value(samples: &Samples, key: &str) -> f64 {
        let (name, labels) = key.split_once('{').unwrap_or((key, "}"));
        let labels = labels
            .trim_end_matches('}')
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect();
        *samples
            .get(&(name.to_string(), labels))
            .unwrap_or_else(|| panic!("no sample {key} in {samples:#?}"))
    }

    fn run<'a>(outcome: &'a RunOutcome, task: &'a Task, exit: Exit) -> Run<'a> {
        Run {
            outcome,
            task,
            exit,
            ended: UNIX_EPOCH + Duration::from_secs(1_700_000_200),
        }
    }

    #[test]
    fn every_metric_of_a_complete_run_carries_the_outcomes_figures() {
        let task = task(&["--estimate-freed", "--max-runtime", "4m30s"]);
        let outcome = RunOutcome {
            nodes: vec![complete("h:1", &task, 1), complete("h:2", &task, 2)],
            duration: Duration::from_millis(2500),
        };
        let registry = registry(&run(&outcome, &task, Exit::Success)).unwrap();
        let s = samples(&registry);
        assert_eq!(value(&s, "redis_janitor_run_duration_seconds"), 2.5);
        assert_eq!(value(&s, "redis_janitor_run_max_runtime_seconds"), 270.0);
        assert_eq!(value(&s, "redis_janitor_run_exit_code"), 0.0);
        assert_eq!(value(&s, "redis_janitor_dry_run"), 0.0);
        assert_eq!(
            value(&s, "redis_janitor_last_run_timestamp_seconds"),
            1_700_000_200.0
        );
        let version = env!("CARGO_PKG_VERSION");
        // No script was chosen in these outcomes: its labels are empty.
        let info = format!(
            "redis_janitor_info{{key_mode=server,node=h:2,script_sha=,script_version=,server=Valkey,\
             server_version=8.1.8,version={version}}}"
        );
        assert_eq!(value(&s, &info), 1.0);
        for (node, n) in [("h:1", 1.0), ("h:2", 2.0)] {
            let at = |name: &str| value(&s, &format!("redis_janitor_{name}{{node={node}}}"));
            assert_eq!(at("keys_scanned_total"), 10.0 * n);
            assert_eq!(at("keys_examined_total"), 11.0 * n);
            assert_eq!(at("keys_matched_total"), 9.0 * n);
            assert_eq!(at("keys_vanished_total"), 1.0);
            assert_eq!(at("keys_unchanged_total"), 2.0);
            assert_eq!(at("keys_moved_total"), 3.0);
            assert_eq!(at("script_calls_total"), n);
            assert_eq!(at("script_reloads_total"), 4.0);
            assert_eq!(at("retries_total"), 2.0);
            assert_eq!(at("failovers_total"), 1.0);
            assert_eq!(at("estimated_freed_bytes_total"), 1000.0 * n);
            assert_eq!(at("replica_pause_seconds_total"), 0.25 * n);
            assert_eq!(at("node_duration_seconds"), 1.5);
            assert_eq!(at("pass_complete"), 1.0);
            assert_eq!(at("pass_resumed"), 1.0);
            assert_eq!(at("pass_locked"), 0.0);
            assert_eq!(at("pass_started_timestamp_seconds"), 1_700_000_000.25);
            assert_eq!(at("pass_progress_ratio"), 1.0);
            assert_eq!(at("server_share_ratio"), 0.25 / n);
            assert_eq!(at("last_success_timestamp_seconds"), 1_700_000_100.5);
            let per = |name: &str, labels: &str| {
                value(&s, &format!("redis_janitor_{name}{{{labels},node={node}}}"))
            };
            assert_eq!(per("used_memory_bytes", "at=start"), 5e6);
            assert_eq!(per("used_memory_bytes", "at=end"), 4e6);
            assert_eq!(per("db_keys", "at=start"), 300.0);
            assert_eq!(per("db_keys", "at=end"), 200.0);
            // One series per rule, at 0 too.
            for (rule, action, acted, capped) in [
                ("cache-missing-ttl", "expire", 0.0, 0.0),
                ("cache-expiring-soon", "delete", 5.0 * n, 0.0),
                ("temp", "delete", 0.0, 6.0),
            ] {
                let labels = format!("action={action}");
                let rule = format!("node={node},rule={rule}");
                let name = |metric: &str| format!("redis_janitor_{metric}{{{labels},{rule}}}");
                assert_eq!(value(&s, &name("keys_acted_total")), acted);
                assert_eq!(value(&s, &name("keys_capped_total")), capped);
            }
        }
        // 5 run gauges, 1 info, 2 nodes x (10 counters + freed + pause + 8
        // gauges + 4 snapshots + 3 rules x 2).
        assert_eq!(s.len(), 5 + 2 + 2 * (10 + 2 + 8 + 4 + 6), "{s:#?}");
    }

    #[test]
    fn counters_are_counters_ending_in_total_and_the_rest_gauges() {
        let task = task(&["--estimate-freed"]);
        let outcome = RunOutcome {
            nodes: vec![complete("h:1", &task, 1)],
            duration: Duration::ZERO,
        };
        let families = registry(&run(&outcome, &task, Exit::Success))
            .unwrap()
            .gather();
        assert_eq!(families.len(), 29, "every metric but --max-runtime's");
        for family in families {
            let counter = family.get_field_type() == MetricType::COUNTER;
            assert_eq!(
                counter,
                family.name().ends_with("_total"),
                "{}",
                family.name()
            );
            assert!(counter || family.get_field_type() == MetricType::GAUGE);
            assert!(family.name().starts_with("redis_janitor_"));
        }
    }

    #[test]
    fn a_failed_or_skipped_node_keeps_its_last_success_and_reports_what_it_knows() {
        let task = task(&["--dry-run"]);
        let mut locked = NodeOutcome::new("h:1".into(), Role::Primary, &task.rules);
        locked.end = End::Locked(Locked {
            holder: "other".into(),
            since: None,
        });
        locked.last_success_ms = Some(1_000);
        let mut failed = NodeOutcome::new("h:2".into(), Role::Primary, &task.rules);
        failed.end = End::Failed(Error::Connection("refused".into()));
        let outcome = RunOutcome {
            nodes: vec![locked, failed],
            duration: Duration::from_secs(1),
        };
        let s = samples(&registry(&run(&outcome, &task, Exit::Failure)).unwrap());
        assert_eq!(value(&s, "redis_janitor_run_exit_code"), 1.0);
        assert_eq!(value(&s, "redis_janitor_dry_run"), 1.0);
        assert_eq!(value(&s, "redis_janitor_pass_locked{node=h:1}"), 1.0);
        assert_eq!(value(&s, "redis_janitor_pass_complete{node=h:1}"), 0.0);
        assert_eq!(value(&s, "redis_janitor_pass_locked{node=h:2}"), 0.0);
        assert_eq!(value(&s, "redis_janitor_pass_complete{node=h:2}"), 0.0);
        assert_eq!(
            value(&s, "redis_janitor_last_success_timestamp_seconds{node=h:1}"),
            1.0
        );
        let names: Vec<&str> = s.keys().map(|(name, _)| name.as_str()).collect();
        // What is not known is not made up: no last success of h:2, no
        // pass start or progress, no snapshots, no max runtime, no
        // estimate without --estimate-freed.
        for absent in [
            "redis_janitor_run_max_runtime_seconds",
            "redis_janitor_pass_started_timestamp_seconds",
            "redis_janitor_pass_progress_ratio",
            "redis_janitor_used_memory_bytes",
            "redis_janitor_db_keys",
            "redis_janitor_estimated_freed_bytes_total",
        ] {
            assert!(!names.contains(&absent), "{absent} in {s:#?}");
        }
        assert!(!s.keys().any(|(name, labels)| name.contains("last_success")
            && labels.contains(&("node".into(), "h:2".into()))));
        // The node that never answered still has its info, with what is
        // known: the job's version.
        let version = env!("CARGO_PKG_VERSION");
        let info = format!(
            "redis_janitor_info{{key_mode=server,node=h:2,script_sha=,script_version=,server=,\
             server_version=,version={version}}}"
        );
        assert_eq!(value(&s, &info), 1.0);
    }

    #[test]
    fn the_text_is_format_0_0_4_with_help_and_type_and_escaped_labels() {
        let task = task(&[]);
        let outcome = RunOutcome {
            nodes: vec![complete("we\"ird\\host\n:1", &task, 1)],
            duration: Duration::from_secs(1),
        };
        let text = text(&run(&outcome, &task, Exit::Terminated)).unwrap();
        assert_eq!(TEXT_FORMAT, "text/plain; version=0.0.4");
        assert!(text.contains("# TYPE redis_janitor_keys_scanned_total counter\n"));
        assert!(text.contains("# HELP redis_janitor_keys_scanned_total Keys SCAN returned.\n"));
        assert!(text.contains("# TYPE redis_janitor_run_exit_code gauge\n"));
        assert!(text.contains("redis_janitor_run_exit_code 143\n"), "{text}");
        assert!(
            text.contains(r#"redis_janitor_keys_scanned_total{node="we\"ird\\host\n:1"} 10"#),
            "{text}"
        );
    }
}
