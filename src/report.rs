//! The final report of a run, rendered from its outcome as text for people or
//! as one JSON object for machines (its fields are documented in the
//! README): the totals, how the run ended, and one entry per server.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::checkpoint::Start;
use crate::exit::Stop;
use crate::node::{Failover, NodeOutcome, ServerInfo, Snapshot, Task};
use crate::pass::{End, Locked, SAMPLES_PER_RULE};
use crate::run::RunOutcome;
use crate::script::protocol::Counts;
use crate::script::{KeyMode, Script};
use crate::topology::Role;

/// Text for people, JSON for machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Human-readable text.
    Text,
    /// JSON: one object (the report) or one object per line (logs).
    Json,
}

/// The final report of one run.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    /// How the run ended: `complete`, `stopped_by` and `error`.
    #[serde(flatten)]
    status: Status<'a>,
    /// Nothing was written: counts are what a real run would do.
    dry_run: bool,
    /// The counts of every node added together.
    #[serde(flatten)]
    totals: Tally<'a>,
    /// Wall time of the run, in seconds.
    duration_seconds: f64,
    /// How long the nodes' calls were paused for lagging replicas, in
    /// seconds, added up.
    replica_pause_seconds: f64,
    /// The script the first node that got so far ran, once it was chosen
    /// for the server.
    script: Option<ScriptInfo<'a>>,
    /// The first server that answered `INFO`.
    server: Option<&'a ServerInfo>,
    /// The nodes' `used_memory` added together, before and after.
    used_memory_bytes: Span,
    /// The nodes' keys (`DBSIZE`) added together, before and after.
    db_keys: Span,
    /// One entry per node the run cleaned or tried to.
    servers: Vec<ServerReport<'a>>,
}

/// One node's entry in the report.
#[derive(Debug, Serialize)]
struct ServerReport<'a> {
    /// `host:port` (after a failover, the new primary's).
    address: &'a str,
    /// "primary" or "replica".
    role: Role,
    /// "Redis" or "Valkey", once the server answered `INFO`.
    software: Option<&'a str>,
    /// The server's own version, once it answered `INFO`.
    version: Option<&'a str>,
    /// How the node's work ended.
    #[serde(flatten)]
    status: Status<'a>,
    /// What the node's pass did.
    #[serde(flatten)]
    tally: Tally<'a>,
    /// How long the node's work took, in seconds.
    duration_seconds: f64,
    /// How long its calls were paused for lagging replicas, in seconds.
    replica_pause_seconds: f64,
    /// The share of the server's time its calls took while its passes ran,
    /// as `--max-server-share` counts it; `null` before a pass ran.
    server_share: Option<f64>,
    /// The script it ran.
    script: Option<ScriptInfo<'a>>,
    /// How its calls got their keys: "server" or "declared".
    key_mode: KeyMode,
    /// The server's refusal of the server-side variant, when the node
    /// switched to the declared-keys mode by itself; else `null`.
    key_mode_switched: Option<&'a str>,
    /// The failovers its pass followed, each restarting it from cursor 0
    /// on the shard's new primary.
    failovers: &'a [Failover],
    /// The transient faults its work was retried after.
    retries: usize,
    /// Where its pass started: resumed from a checkpoint or new, and why.
    pass: Option<&'a Start>,
    /// When another run's lease made the run skip the node: its holder
    /// and since when.
    locked: Option<&'a Locked>,
    /// `used_memory` before the node's pass and after its work.
    used_memory_bytes: Span,
    /// The node's keys (`DBSIZE`) before its pass and after its work.
    db_keys: Span,
    /// When a run last cleaned the node successfully (this one, or an
    /// earlier one), in seconds since the Unix epoch.
    last_success_at: Option<f64>,
}

/// A figure before and after: `{"start": N, "end": N}`, each `null` when
/// the node did not answer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
struct Span {
    start: Option<u64>,
    end: Option<u64>,
}

impl Span {
    /// `figure` of the snapshots at the start and the end.
    fn of(start: Option<Snapshot>, end: Option<Snapshot>, figure: fn(Snapshot) -> u64) -> Span {
        Span {
            start: start.map(figure),
            end: end.map(figure),
        }
    }

    /// The spans added together; a side is `null` when any node's is.
    fn sum<'a>(spans: impl Iterator<Item = &'a Span> + Clone) -> Span {
        let total = |side: fn(&Span) -> Option<u64>| spans.clone().map(side).sum();
        Span {
            start: total(|s| s.start),
            end: total(|s| s.end),
        }
    }

    /// "N at start, M at end", for the text report.
    fn describe(&self, unit: &str) -> Option<String> {
        let side = |n: Option<u64>| n.map_or("?".to_string(), |n| n.to_string());
        (self.start.is_some() || self.end.is_some()).then(|| {
            format!(
                "{}{unit} at start, {}{unit} at end",
                side(self.start),
                side(self.end)
            )
        })
    }
}

/// How something ended, as the three fields `complete`, `stopped_by` and
/// `error`, all from one [`End`].
#[derive(Debug)]
struct Status<'a>(&'a End);

impl Serialize for Status<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (stopped_by, error) = match self.0 {
            End::Complete => (None, None),
            End::Stopped(stop) => (Some(stop.name()), None),
            End::Locked(_) => (Some("locked"), None),
            End::Failed(err) => (None, Some(err.to_string())),
        };
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("complete", &matches!(self.0, End::Complete))?;
        map.serialize_entry("stopped_by", &stopped_by)?;
        map.serialize_entry("error", &error)?;
        map.end()
    }
}

/// Counts as the report shows them, with each rule's name and action.
#[derive(Debug, Serialize)]
struct Tally<'a> {
    /// Keys SCAN returned.
    keys_scanned: u64,
    /// Keys the SCAN steps looked at (their COUNTs): about the keys
    /// examined, those a `MATCH` left out included.
    keys_examined: u64,
    /// Keys whose name matched a rule's pattern and went to the script.
    keys_matched: u64,
    /// Script calls that completed.
    batches: u64,
    /// Matched keys gone before their rule acted.
    vanished: u64,
    /// Matched keys a cluster node refused because their slot was moving;
    /// the next run gets them.
    moved: u64,
    /// Keys that matched a pattern but that no rule's conditions took.
    unchanged: u64,
    /// Per rule, in rule order: how many keys it deleted or gave a TTL.
    rules: Vec<RuleCount<'a>>,
    /// Times a NOSCRIPT reply made the pass send its script again.
    script_reloads: u64,
    /// With `--estimate-freed`: what the deleted keys held, by `MEMORY
    /// USAGE` (in a dry run, what they would give back).
    estimated_freed_bytes: Option<u64>,
}

impl<'a> Tally<'a> {
    fn new(counts: &Counts, task: &'a Task) -> Tally<'a> {
        let rules = &task.rules;
        Tally {
            keys_scanned: counts.keys_scanned,
            keys_examined: counts.keys_examined,
            keys_matched: counts.keys_matched,
            batches: counts.batches,
            vanished: counts.vanished,
            moved: counts.moved,
            unchanged: counts.unchanged,
            rules: rules
                .rules
                .iter()
                .zip(&counts.per_rule)
                .zip(&counts.capped)
                .map(|((rule, &keys), &capped)| RuleCount {
                    name: &rule.name,
                    action: rule.action.name(),
                    keys,
                    capped,
                    samples: None,
                })
                .collect(),
            script_reloads: counts.script_reloads,
            estimated_freed_bytes: task.pass.estimate_freed.then_some(counts.freed_bytes),
        }
    }
}

/// One rule's line in the report.
#[derive(Debug, Serialize)]
struct RuleCount<'a> {
    /// The rule's name.
    name: &'a str,
    /// "delete" or "expire".
    action: &'static str,
    /// Keys it acted on (or would have, in a dry run).
    keys: u64,
    /// Keys it would have acted on beyond its cap or the run's, left as
    /// they were.
    capped: u64,
    /// In a dry run: a few keys it would act on, escaped.
    #[serde(skip_serializing_if = "Option::is_none")]
    samples: Option<Vec<String>>,
}

/// The script named in the report.
#[derive(Debug, Serialize)]
struct ScriptInfo<'a> {
    /// Script name, e.g. "clean".
    name: &'a str,
    /// Script version, e.g. "v11".
    version: &'a str,
    /// SHA-1 of the exact text loaded.
    sha: &'a str,
    /// The rules' fingerprint its checkpoints name: the default variant's
    /// SHA-1, in both key modes.
    fingerprint: &'a str,
}

impl<'a> ScriptInfo<'a> {
    fn of(script: &'a Script) -> ScriptInfo<'a> {
        ScriptInfo {
            name: &script.name,
            version: &script.version,
            sha: &script.sha,
            fingerprint: &script.fingerprint,
        }
    }
}

impl<'a> Report<'a> {
    /// The report of `outcome`, a run of `task`.
    pub fn new(outcome: &'a RunOutcome, task: &'a Task) -> Report<'a> {
        let dry_run = task.dry_run;
        let mut totals = Tally::new(&outcome.counts(), task);
        if dry_run {
            for (r, rule) in totals.rules.iter_mut().enumerate() {
                let keys = outcome.nodes.iter().flat_map(|n| &n.progress.samples[r]);
                rule.samples = Some(keys.take(SAMPLES_PER_RULE).map(|k| escaped(k)).collect());
            }
        }
        Report {
            status: Status(outcome.end()),
            dry_run,
            totals,
            duration_seconds: outcome.duration.as_secs_f64(),
            replica_pause_seconds: outcome
                .nodes
                .iter()
                .map(|node| node.progress.replica_pause.as_secs_f64())
                .sum(),
            script: outcome
                .nodes
                .iter()
                .find_map(|n| n.script.as_ref())
                .map(ScriptInfo::of),
            server: outcome.nodes.iter().find_map(|n| n.server.as_ref()),
            servers: outcome
                .nodes
                .iter()
                .map(|node| ServerReport::new(node, task))
                .collect(),
            used_memory_bytes: Span::default(),
            db_keys: Span::default(),
        }
        .with_sums()
    }

    /// The report with its nodes' memory and keys added together.
    fn with_sums(mut self) -> Report<'a> {
        self.used_memory_bytes = Span::sum(self.servers.iter().map(|s| &s.used_memory_bytes));
        self.db_keys = Span::sum(self.servers.iter().map(|s| &s.db_keys));
        self
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("the report serializes")
    }

    /// The report as aligned text for a person.
    pub fn to_text(&self) -> String {
        let failure = match self.status.0 {
            End::Failed(err) => format!(": {err}"),
            _ => String::new(),
        };
        let mut text = format!(
            "redis-janitor {}: pass {}{failure}\n",
            if self.dry_run { "dry run" } else { "run" },
            describe(self.status.0),
        );
        for server in &self.servers {
            text += &format!("  server          {}", server.address);
            if let (Some(software), Some(version)) = (server.software, server.version) {
                text += &format!(" ({software} {version})");
            }
            if server.role == Role::Replica {
                text += " replica";
            }
            if self.servers.len() > 1 {
                text += &format!(
                    ": {}, {} keys scanned, {} acted on in {:.3}s",
                    describe(server.status.0),
                    server.tally.keys_scanned,
                    server.tally.rules.iter().map(|r| r.keys).sum::<u64>(),
                    server.duration_seconds
                );
            }
            text.push('\n');
            if let Some(start) = server.pass {
                let new = if start.resumed { "" } else { "new, " };
                text += &format!("    pass          {new}{}\n", start.reason);
            }
            if let Some(locked) = server.locked {
                text += &format!("    locked        by {locked}\n");
            }
            if server.key_mode == KeyMode::Declared {
                text += "    key mode      declared";
                if let Some(refusal) = server.key_mode_switched {
                    text +=
                        &format!(" (switched: the server refused the server-side scan: {refusal})");
                }
                text.push('\n');
            }
            if let Some(share) = server.server_share {
                text += &format!("    server share  {:.1}%\n", share * 100.0);
            }
            for failover in server.failovers {
                text += &format!(
                    "    failover      from {} to {}: the pass started again from cursor 0\n",
                    failover.from, failover.to
                );
            }
        }
        if let Some(script) = &self.script {
            text += &format!(
                "  script          {} {} {}\n",
                script.name, script.version, script.sha
            );
        }
        let totals = &self.totals;
        if let Some(keys) = self.db_keys.describe(" keys") {
            text += &format!("  keyspace        {keys}\n");
        }
        if let Some(memory) = self.used_memory_bytes.describe(" bytes") {
            text += &format!("  used memory     {memory}\n");
        }
        text += &format!("  keys examined   {}\n", totals.keys_examined);
        text += &format!("  keys scanned    {}\n", totals.keys_scanned);
        text += &format!("  keys matched    {}\n", totals.keys_matched);
        text += &format!("  batches         {}\n", totals.batches);
        text += &format!("  duration        {:.3}s\n", self.duration_seconds);
        if self.replica_pause_seconds > 0.0 {
            text += &format!(
                "  replica pause   {:.3}s (calls paused for lagging replicas)\n",
                self.replica_pause_seconds
            );
        }
        let verb = if self.dry_run {
            "would act on"
        } else {
            "acted on"
        };
        for rule in &totals.rules {
            text += &format!(
                "  rule {:<24} {verb} {} keys ({})",
                rule.name, rule.keys, rule.action
            );
            if rule.capped > 0 {
                text += &format!(", {} more left for a cap", rule.capped);
            }
            text.push('\n');
            for sample in rule.samples.iter().flatten() {
                text += &format!("    sample        {sample}\n");
            }
        }
        text += &format!("  unchanged       {}\n", totals.unchanged);
        text += &format!("  vanished        {}\n", totals.vanished);
        if totals.moved > 0 {
            text += &format!("  moved           {}\n", totals.moved);
        }
        if let Some(bytes) = totals.estimated_freed_bytes {
            let verb = if self.dry_run { "would free" } else { "freed" };
            text += &format!("  deletes {verb:<10} {bytes} bytes (estimated by MEMORY USAGE)\n");
        }
        if totals.script_reloads > 0 {
            text += &format!("  script reloads  {}\n", totals.script_reloads);
        }
        text
    }
}

impl<'a> ServerReport<'a> {
    fn new(node: &'a NodeOutcome, task: &'a Task) -> ServerReport<'a> {
        ServerReport {
            address: &node.address,
            role: node.role,
            software: node.server.as_ref().map(|s| s.software.as_str()),
            version: node.server.as_ref().map(|s| s.version.as_str()),
            status: Status(&node.end),
            tally: Tally::new(&node.progress.counts, task),
            duration_seconds: node.duration.as_secs_f64(),
            replica_pause_seconds: node.progress.replica_pause.as_secs_f64(),
            server_share: node.progress.server_share(),
            script: node.script.as_ref().map(ScriptInfo::of),
            key_mode: node.key_mode,
            key_mode_switched: node.switched.as_deref(),
            failovers: &node.failovers,
            retries: node.retries,
            pass: node.start.as_ref(),
            locked: match &node.end {
                End::Locked(locked) => Some(locked),
                _ => None,
            },
            used_memory_bytes: Span::of(node.at_start, node.at_end, |s| s.used_memory),
            db_keys: Span::of(node.at_start, node.at_end, |s| s.keys),
            last_success_at: node.last_success_ms.map(|ms| ms as f64 / 1000.0),
        }
    }
}

/// How the text report words an ending.
fn describe(end: &End) -> String {
    match end {
        End::Complete => "complete".to_string(),
        End::Stopped(stop) => format!("stopped early ({})", Stop::describe(*stop)),
        End::Locked(locked) => format!("skipped (another run holds the lease: {locked})"),
        End::Failed(_) => "failed".to_string(),
    }
}

/// A key as the report shows it: quoted, every byte outside printable
/// ASCII escaped, so a key can neither forge nor split a line.
fn escaped(key: &[u8]) -> String {
    format!("\"{}\"", key.escape_ascii())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::error::Error;
    use crate::pass::Progress;
    use crate::rules::Rules;

    fn outcome(ends: Vec<End>) -> RunOutcome {
        let rules = Rules::builtin();
        RunOutcome {
            nodes: ends
                .into_iter()
                .enumerate()
                .map(|(i, end)| {
                    let mut progress = Progress::new(&rules);
                    progress.counts.keys_scanned = 10 * (i as u64 + 1);
                    progress.counts.per_rule[2] = i as u64 + 1;
                    NodeOutcome {
                        server: Some(ServerInfo {
                            address: format!("h:{i}"),
                            software: "Valkey".into(),
                            version: "8.1.8".into(),
                        }),
                        progress,
                        duration: Duration::from_secs(1),
                        end,
                        failovers: vec![Failover {
                            from: "old:1".into(),
                            to: format!("h:{i}"),
                        }],
                        ..NodeOutcome::new(format!("h:{i}"), Role::Primary, &rules)
                    }
                })
                .collect(),
            duration: Duration::from_secs(2),
        }
    }

    /// The task of `redis-janitor run ARGS`, with the built-in rules.
    fn task(args: &[&str]) -> Task {
        use clap::Parser;
        let cli = crate::cli::Cli::parse_from(["redis-janitor", "run"].iter().chain(args));
        let crate::cli::Command::Run(args) = cli.command else {
            unreachable!("a run")
        };
        args.settings(None).expect("valid settings").task
    }

    fn json(outcome: &RunOutcome) -> serde_json::Value {
        serde_json::from_str(&Report::new(outcome, &task(&[])).to_json()).unwrap()
    }

    #[test]
    fn the_three_states_are_three_fields_that_agree() {
        let complete = json(&outcome(vec![End::Complete]));
        assert_eq!(complete["complete"], true);
        assert!(complete["stopped_by"].is_null() && complete["error"].is_null());
        let stopped = json(&outcome(vec![End::Stopped(Stop::Sigterm)]));
        assert_eq!(stopped["complete"], false);
        assert_eq!(stopped["stopped_by"], "sigterm");
        assert!(stopped["error"].is_null());
        let failed = json(&outcome(vec![End::Failed(Error::Script("boom".into()))]));
        assert_eq!(failed["complete"], false);
        assert!(failed["stopped_by"].is_null());
        assert_eq!(failed["error"], "boom");
    }

    #[test]
    fn the_runs_server_is_the_first_that_answered() {
        let mut run = outcome(vec![
            End::Failed(Error::Connection("gone".into())),
            End::Complete,
        ]);
        run.nodes[0].server = None;
        let report = json(&run);
        assert_eq!(report["server"]["address"], "h:1", "{report:#}");
        run.nodes[1].server = None;
        assert!(json(&run)["server"].is_null());
    }

    #[test]
    fn servers_hold_each_node_and_the_totals_their_sum() {
        let report = json(&outcome(vec![
            End::Complete,
            End::Stopped(Stop::MaxRuntime),
        ]));
        assert_eq!(report["keys_scanned"], 30);
        assert_eq!(report["rules"][2]["keys"], 3);
        assert_eq!(report["stopped_by"], "max_runtime");
        let servers = report["servers"].as_array().unwrap();
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[1]["address"], "h:1");
        assert_eq!(servers[1]["software"], "Valkey");
        assert_eq!(servers[1]["version"], "8.1.8");
        assert_eq!(servers[1]["keys_scanned"], 20);
        assert_eq!(servers[1]["rules"][2]["keys"], 2);
        assert_eq!(servers[0]["complete"], true);
        assert_eq!(servers[1]["stopped_by"], "max_runtime");
        assert_eq!(servers[1]["role"], "primary");
        assert_eq!(servers[1]["failovers"][0]["from"], "old:1");
        assert_eq!(servers[1]["failovers"][0]["to"], "h:1");
        assert_eq!(report["server"]["address"], "h:0");
    }

    #[test]
    fn replica_pauses_add_up_and_each_server_has_its_share_of_redis() {
        let mut run = outcome(vec![End::Complete, End::Complete]);
        run.nodes[0].progress.replica_pause = Duration::from_millis(1500);
        run.nodes[1].progress.replica_pause = Duration::from_millis(500);
        run.nodes[0].progress.held = Duration::from_millis(250);
        run.nodes[0].progress.elapsed = Duration::from_secs(1);
        let report = json(&run);
        assert_eq!(report["replica_pause_seconds"], 2.0);
        assert_eq!(report["servers"][0]["replica_pause_seconds"], 1.5);
        assert_eq!(report["servers"][1]["replica_pause_seconds"], 0.5);
        assert_eq!(report["servers"][0]["server_share"], 0.25);
        // No pass ran on it: no share to tell.
        assert!(report["servers"][1]["server_share"].is_null());
        let text = Report::new(&run, &task(&[])).to_text();
        assert!(
            text.contains("  replica pause   2.000s (calls paused for lagging replicas)\n"),
            "{text}"
        );
        assert!(text.contains("    server share  25.0%\n"), "{text}");
        let calm = Report::new(&outcome(vec![End::Complete]), &task(&[])).to_text();
        assert!(!calm.contains("replica pause"), "{calm}");
    }

    #[test]
    fn a_node_skipped_for_another_runs_lease_is_locked_with_its_holder() {
        let locked = Locked {
            holder: "pod-1 (pid 7)".into(),
            since: Some(1000.0),
        };
        let mut run = outcome(vec![End::Complete, End::Locked(locked.clone())]);
        run.nodes[0].start = Some(Start {
            cursor: 42,
            started_ms: 5000,
            started_at: 5.0,
            resumed: true,
            reason: "resumed the pass".into(),
        });
        let report = json(&run);
        assert_eq!(report["stopped_by"], "locked");
        assert_eq!(report["complete"], false);
        assert_eq!(report["servers"][0]["pass"]["cursor"], 42);
        assert_eq!(report["servers"][0]["pass"]["resumed"], true);
        assert_eq!(report["servers"][0]["pass"]["started_at"], 5.0);
        assert_eq!(report["servers"][0]["locked"], serde_json::Value::Null);
        assert_eq!(report["servers"][1]["stopped_by"], "locked");
        assert_eq!(report["servers"][1]["locked"]["holder"], "pod-1 (pid 7)");
        assert_eq!(report["servers"][1]["locked"]["since"], 1000.0);
        let text = Report::new(&run, &task(&[])).to_text();
        assert!(
            text.starts_with(
                "redis-janitor run: pass skipped (another run holds the lease: pod-1 (pid 7), \
                 since 1970-01-01T00:16:40Z)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("    pass          resumed the pass\n"),
            "{text}"
        );
        assert!(
            text.contains("    locked        by pod-1 (pid 7), since 1970-01-01T00:16:40Z\n"),
            "{text}"
        );
        assert_eq!(run.exit(), crate::exit::Exit::Success);
    }

    #[test]
    fn text_names_the_server_with_its_own_version_and_each_state() {
        let one = outcome(vec![End::Complete]);
        let text = Report::new(&one, &task(&["--dry-run"])).to_text();
        assert!(
            text.starts_with("redis-janitor dry run: pass complete\n"),
            "{text}"
        );
        assert!(
            text.contains("  server          h:0 (Valkey 8.1.8)\n"),
            "{text}"
        );
        assert!(text.contains("would act on 1 keys (delete)"), "{text}");
        assert!(!text.contains("script reloads"), "{text}");
        let mut reloaded = outcome(vec![End::Complete]);
        reloaded.nodes[0].progress.counts.script_reloads = 2;
        let text = Report::new(&reloaded, &task(&[])).to_text();
        assert!(text.contains("  script reloads  2\n"), "{text}");
        let two = outcome(vec![
            End::Complete,
            End::Failed(Error::Auth("denied".into())),
        ]);
        let text = Report::new(&two, &task(&[])).to_text();
        assert!(
            text.starts_with("redis-janitor run: pass failed: denied\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "h:1 (Valkey 8.1.8): failed, 20 keys scanned, 2 acted on in 1.000s\n    \
                 failover      from old:1 to h:1: the pass started again from cursor 0\n"
            ),
            "{text}"
        );
        assert!(!text.contains("moved"), "{text}");
        let mut moved = outcome(vec![End::Complete]);
        moved.nodes[0].progress.counts.moved = 4;
        moved.nodes[0].role = Role::Replica;
        let text = Report::new(&moved, &task(&["--dry-run"])).to_text();
        assert!(text.contains("  moved           4\n"), "{text}");
        assert!(text.contains("h:0 (Valkey 8.1.8) replica\n"), "{text}");
        for (stop, words) in [
            (Stop::MaxRuntime, "max runtime reached"),
            (Stop::Sigterm, "SIGTERM"),
            (Stop::Sigint, "SIGINT"),
        ] {
            let text = Report::new(&outcome(vec![End::Stopped(stop)]), &task(&[])).to_text();
            let first = format!("redis-janitor run: pass stopped early ({words})\n");
            assert!(text.starts_with(&first), "{text}");
        }
    }
}
