//! One run of the job: find the nodes to clean (the standalone server, every
//! primary of a cluster, or the primary Sentinel names), clean them at once,
//! each with its own connection, and merge what they did.
//!
//! The run's ending follows one rule: it failed if any node failed; else it
//! stopped if any node stopped (a signal before `--max-runtime`); else it is
//! complete. Its exit code is that ending's (see `exit`).
//!
//! Data flows one way: [`Settings`] -> topology -> `node::clean` per node
//! -> [`RunOutcome`], which the report renders.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::watch;
use tracing::info;

use crate::cap::Caps;
use crate::exit::{Exit, Stop};
use crate::lease;
use crate::node::{self, Context, NodeOutcome, Task};
use crate::pass::{self, End};
use crate::script::KeyMode;
use crate::script::protocol::Counts;
use crate::topology::{self, Role, Source};

/// Everything a run needs, validated before any connection is made. (No
/// `Debug`: the source holds the password.)
#[derive(Clone)]
pub struct Settings {
    /// Where the nodes are.
    pub source: Source,
    /// What to do on each node.
    pub task: Task,
    /// How many nodes are cleaned at once; `None`: all of them.
    pub concurrency: Option<usize>,
    /// A dry run reads from replicas (of each cluster primary, or of the
    /// Sentinel service's primary).
    pub from_replicas: bool,
}

/// What a run came to: each node's outcome.
#[derive(Debug)]
pub struct RunOutcome {
    /// Every node the run cleaned or tried to, in order.
    pub nodes: Vec<NodeOutcome>,
    /// Wall time of the run.
    pub duration: Duration,
}

impl RunOutcome {
    /// The nodes' counts added together.
    pub fn counts(&self) -> Counts {
        let mut total = Counts {
            per_rule: vec![0; self.rules()],
            capped: vec![0; self.rules()],
            ..Counts::default()
        };
        for node in &self.nodes {
            total.add(&node.progress.counts);
        }
        total
    }

    /// The number of rules the counts are of.
    fn rules(&self) -> usize {
        self.nodes
            .first()
            .map_or(0, |n| n.progress.counts.per_rule.len())
    }

    /// How the run ended: the weightiest of its nodes' endings (a failure,
    /// then a signal, then `--max-runtime`, then completion).
    pub fn end(&self) -> &End {
        self.nodes
            .iter()
            .map(|node| &node.end)
            .max_by_key(|end| end.weight())
            .unwrap_or(&End::Complete)
    }

    /// The exit code of the run.
    pub fn exit(&self) -> Exit {
        self.end().exit()
    }

    /// How the run ended, taken out of the outcome (see [`RunOutcome::end`]).
    pub fn into_end(mut self) -> End {
        let weightiest = (0..self.nodes.len()).max_by_key(|&i| self.nodes[i].end.weight());
        weightiest.map_or(End::Complete, |i| self.nodes.swap_remove(i).end)
    }
}

/// Runs the job. Always returns every node's outcome, partial when a node
/// failed or stopped.
pub async fn run(settings: &Settings, stop: watch::Receiver<Option<Stop>>) -> RunOutcome {
    let started = Instant::now();
    let task = &settings.task;
    // A signal does not wait for a server that stalls while the job looks
    // for the nodes. --max-runtime does (within the timeout): a server that
    // never answers is unreachable, a failure, however short the run.
    let discovered = tokio::select! {
        discovered = topology::discover(&settings.source, task.timeout, settings.from_replicas) => {
            discovered.map_err(End::Failed)
        }
        signal = pass::stop_comes(stop.clone(), None, started) => Err(End::Stopped(signal)),
    };
    let nodes = match discovered {
        Ok(nodes) => clean_all(settings, nodes, started, stop).await,
        Err(end) => {
            let mut node =
                NodeOutcome::new(source_address(&settings.source), Role::Primary, &task.rules);
            node.duration = started.elapsed();
            node.key_mode = task.key_mode.unwrap_or(KeyMode::Server);
            node.end = end;
            vec![node]
        }
    };
    let outcome = RunOutcome {
        nodes,
        duration: started.elapsed(),
    };
    log_finished(&outcome);
    outcome
}

/// Cleans `nodes`, at most `settings.concurrency` at once; their outcomes
/// in the nodes' order.
async fn clean_all(
    settings: &Settings,
    nodes: Vec<topology::Node>,
    started: Instant,
    stop: watch::Receiver<Option<Stop>>,
) -> Vec<NodeOutcome> {
    // After a failover, the cluster is asked through the seeds, then through
    // every node found: the seed may be the node that failed.
    let mut known = match &settings.source {
        Source::Direct(seeds) => seeds.clone(),
        Source::Sentinel(_) => Vec::new(),
    };
    known.extend(nodes.iter().map(|node| node.target.clone()));
    let caps = Caps::new(&settings.task.rules, settings.task.max_keys);
    let (token, holder) = (lease::new_token(), lease::holder());
    let context = Context {
        task: &settings.task,
        source: &settings.source,
        nodes: &known,
        started,
        token: &token,
        holder: &holder,
        caps: &caps,
    };
    let concurrency = settings.concurrency.unwrap_or(nodes.len()).max(1);
    futures_util::stream::iter(nodes)
        .map(|node| node::clean(node, context, stop.clone()))
        .buffered(concurrency)
        .collect()
        .await
}

/// Where a run that found no node looked: the first seed, or the Sentinels'
/// service.
fn source_address(source: &Source) -> String {
    match source {
        Source::Direct(seeds) => seeds.first().map(|s| s.address()).unwrap_or_default(),
        Source::Sentinel(sentinels) => format!("sentinel service {}", sentinels.service),
    }
}

/// One log event with the outcome of a run that did not fail, so log
/// pipelines see how it ended (the report itself goes to stdout; a failure
/// is logged by the command as its one-line cause).
fn log_finished(outcome: &RunOutcome) {
    let stopped_by = match outcome.end() {
        End::Failed(_) => return,
        End::Stopped(stop) => Some(stop.describe()),
        End::Locked(_) => Some("another run's lease"),
        End::Complete => None,
    };
    let counts = outcome.counts();
    info!(
        complete = stopped_by.is_none(),
        stopped_by,
        keys_scanned = counts.keys_scanned,
        keys_matched = counts.keys_matched,
        keys_acted = counts.acted(),
        vanished = counts.vanished,
        seconds = outcome.duration.as_secs_f64(),
        "pass finished"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::rules::Rules;

    fn node(end: End, scanned: u64) -> NodeOutcome {
        let mut counts = Counts::new(&Rules::builtin());
        counts.keys_scanned = scanned;
        counts.per_rule[1] = scanned / 2;
        let mut outcome =
            NodeOutcome::new(format!("h:{scanned}"), Role::Primary, &Rules::builtin());
        outcome.progress.counts = counts;
        outcome.end = end;
        outcome
    }

    #[test]
    fn the_run_sums_its_nodes_and_ends_as_the_weightiest() {
        let run = RunOutcome {
            nodes: vec![
                node(End::Complete, 10),
                node(End::Stopped(Stop::MaxRuntime), 20),
                node(End::Complete, 40),
            ],
            duration: Duration::ZERO,
        };
        assert_eq!(run.counts().keys_scanned, 70);
        assert_eq!(run.counts().per_rule, [0, 35, 0]);
        assert!(matches!(run.end(), End::Stopped(Stop::MaxRuntime)));
        assert_eq!(run.exit(), Exit::Success);

        let failed = RunOutcome {
            nodes: vec![
                node(End::Stopped(Stop::Sigterm), 1),
                node(End::Failed(Error::Connection("gone".into())), 2),
                node(End::Complete, 3),
            ],
            duration: Duration::ZERO,
        };
        assert!(matches!(failed.end(), End::Failed(err) if err.to_string() == "gone"));
        assert_eq!(failed.exit(), Exit::Failure);
    }
}
