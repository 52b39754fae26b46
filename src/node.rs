//! One Redis node's share of a run, over its own connection: connect, read
//! what the server is (`INFO`), refuse what it cannot run before touching
//! anything, choose the script's variant, check that the user may run every
//! command the pass will send, load the script, and run the pass. When a
//! cluster shard fails over during the pass, the pass starts again from
//! cursor 0 on the shard's new primary: a cursor means nothing to another
//! process, whose hash tables are ordered by its own seed. Whatever happens,
//! the node's outcome comes back: what it did, and how it ended.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use serde::Serialize;
use tokio::sync::watch;
use tracing::{Instrument, info, info_span, warn};

use crate::acl::{self, Command};
use crate::connection::Target;
use crate::error::Error;
use crate::exit::Stop;
use crate::pass::{self, End};
use crate::rules::Rules;
use crate::script::protocol::Counts;
use crate::script::{Dialect, Layout, Mode, Script};
use crate::topology::{self, Node, Role, field};

/// The most failovers one node's pass follows before it gives up.
const MAX_FAILOVERS: usize = 5;

/// What to do on each node.
#[derive(Debug, Clone)]
pub struct Task {
    /// The rules to apply.
    pub rules: Rules,
    /// Write nothing, count what would be done.
    pub dry_run: bool,
    /// How the pass runs.
    pub pass: pass::Options,
    /// Connect and reply timeout; also how long a failed-over shard is
    /// waited for.
    pub timeout: Duration,
}

/// What every node of a run shares.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// What to do.
    pub task: &'a Task,
    /// The nodes through which a cluster is asked for a shard's new primary
    /// after a failover: the seeds, then every node found.
    pub nodes: &'a [Target],
    /// When the run started: `--max-runtime` counts from there.
    pub started: Instant,
}

/// A failover a node's pass followed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failover {
    /// The primary the pass was on.
    pub from: String,
    /// The shard's new primary, where the pass started again from cursor 0.
    pub to: String,
}

/// What a server said it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerInfo {
    /// `host:port`.
    pub address: String,
    /// "Redis" or "Valkey".
    pub software: String,
    /// Its own version: `redis_version`, or `valkey_version` on Valkey.
    pub version: String,
}

impl std::fmt::Display for ServerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} {})", self.address, self.software, self.version)
    }
}

/// What one node's work came to.
#[derive(Debug)]
pub struct NodeOutcome {
    /// The node's `host:port` (after a failover, the new primary's).
    pub address: String,
    /// Whether it is a primary or a replica.
    pub role: Role,
    /// What the server is, once `INFO` answered.
    pub server: Option<ServerInfo>,
    /// The script the pass ran, once it was chosen for the server.
    pub script: Option<Script>,
    /// What the pass did, up to where it ended.
    pub counts: Counts,
    /// How long the node's work took.
    pub duration: Duration,
    /// How it ended.
    pub end: End,
    /// The failovers its pass followed, each a new pass from cursor 0.
    pub failovers: Vec<Failover>,
}

impl NodeOutcome {
    /// The outcome of a node nothing was done on yet.
    pub fn new(address: String, role: Role, rules: &Rules) -> NodeOutcome {
        NodeOutcome {
            address,
            role,
            server: None,
            script: None,
            counts: Counts::new(rules),
            duration: Duration::ZERO,
            end: End::Complete,
            failovers: Vec::new(),
        }
    }
}

/// Cleans `node` as `context` says, following its shard's failovers.
pub async fn clean(
    mut node: Node,
    context: Context<'_>,
    stop: watch::Receiver<Option<Stop>>,
) -> NodeOutcome {
    let started = Instant::now();
    let task = context.task;
    let mut outcome = NodeOutcome::new(node.target.address(), node.role, &task.rules);
    if let Some(stop) = pass::stop_due(&stop, task.pass.max_runtime, context.started) {
        // A node whose turn comes after the stop (--concurrency) is not
        // even connected to.
        outcome.end = End::Stopped(stop);
        return outcome;
    }
    loop {
        // Every event of the node's pass names the node.
        let span = info_span!("node", address = %node.target.address());
        let end = clean_once(&node, context, &mut outcome, stop.clone())
            .instrument(span)
            .await;
        let End::Failed(err) = end else {
            outcome.end = end;
            break;
        };
        let followed = outcome.failovers.len() < MAX_FAILOVERS && may_be_failover(&node, &err);
        let new = match followed {
            true => topology::new_primary(context.nodes, &node, task.timeout).await,
            false => Ok(None),
        };
        let Ok(Some(new)) = new else {
            outcome.end = End::Failed(err);
            break;
        };
        let failover = Failover {
            from: outcome.address.clone(),
            to: new.target.address(),
        };
        warn!(
            from = %failover.from,
            to = %failover.to,
            cause = %err,
            "the shard failed over; its pass starts again from cursor 0 on the new primary"
        );
        outcome.address = failover.to.clone();
        outcome.role = new.role;
        outcome.failovers.push(failover);
        node = new;
    }
    outcome.duration = started.elapsed();
    outcome
}

/// Whether `err` on `node` may mean its shard failed over: the node
/// became a replica, or it went away. Only a cluster says where its shard
/// went.
fn may_be_failover(node: &Node, err: &Error) -> bool {
    node.shard.is_some() && matches!(err, Error::Replica(_) | Error::Connection(_))
}

/// One pass over `node`, from cursor 0, adding to `outcome`.
async fn clean_once(
    node: &Node,
    context: Context<'_>,
    outcome: &mut NodeOutcome,
    stop: watch::Receiver<Option<Stop>>,
) -> End {
    let task = context.task;
    let mut conn = match node.target.connect(task.timeout).await {
        Ok(conn) => conn,
        Err(err) => return End::Failed(err),
    };
    if let Err(err) = prepare(&mut conn, node, task, outcome).await {
        return End::Failed(err);
    }
    let script = outcome.script.as_ref().expect("prepared");
    pass::run(
        conn,
        &task.rules,
        script,
        &task.pass,
        context.started,
        stop,
        &mut outcome.counts,
    )
    .await
}

/// Everything before the first call, recorded in `outcome` as it is learnt.
async fn prepare(
    conn: &mut MultiplexedConnection,
    node: &Node,
    task: &Task,
    outcome: &mut NodeOutcome,
) -> Result<(), Error> {
    let address = outcome.address.clone();
    let server = topology::info(conn, &address, "server").await?;
    if topology::is_cluster(&server) != (node.layout == Layout::Cluster) {
        return Err(Error::Unsupported(format!(
            "{address} changed between cluster and standalone mode during the run"
        )));
    }
    let dialect = Dialect::for_version(field(&server, "redis_version").unwrap_or_default());
    let info = server_info(&server, &address);
    outcome.server = Some(info.clone());
    if task.rules.uses_idle_time() {
        refuse_lfu(conn, &address, &task.rules).await?;
    }
    let mode = if task.dry_run {
        Mode::ReadOnly
    } else {
        Mode::Write
    };
    if mode == Mode::ReadOnly && node.layout == Layout::Cluster {
        // A cluster replica serves reads only to a connection that asks.
        redis::cmd("READONLY")
            .exec_async(conn)
            .await
            .map_err(|err| Command::Readonly.refused(&address, &err))?;
    }
    let script = outcome
        .script
        .insert(Script::clean(&task.rules, mode, dialect, node.layout)?);
    acl::probe(conn, &address, &acl::needed(&task.rules, mode, dialect)).await?;
    script
        .load(conn)
        .await
        .map_err(|err| Command::ScriptLoad.advise(err))?;
    info!(
        server = %info,
        script = %script.name,
        script_version = %script.version,
        script_sha = %script.sha,
        variant = %script.variant(),
        role = ?node.role,
        rules = %task.rules.source,
        dry_run = task.dry_run,
        "pass started"
    );
    Ok(())
}

/// Refuses rules that need idle times on a server under an LFU policy,
/// where Redis does not track them.
async fn refuse_lfu(
    conn: &mut MultiplexedConnection,
    address: &str,
    rules: &Rules,
) -> Result<(), Error> {
    let memory = topology::info(conn, address, "memory").await?;
    let policy = field(&memory, "maxmemory_policy").unwrap_or_default();
    match rules
        .rules
        .iter()
        .find(|r| r.conditions.idle_above.is_some())
    {
        Some(rule) if policy.contains("lfu") => Err(Error::Unsupported(format!(
            "rule {:?} uses idle_above, but {address} has maxmemory-policy {policy}: \
             Redis does not track idle time under an LFU policy; nothing was touched",
            rule.name
        ))),
        _ => Ok(()),
    }
}

/// What `INFO server` says the server is. Valkey reports a Redis version
/// for compatibility (`redis_version:7.2.4`) beside its own.
fn server_info(server: &str, address: &str) -> ServerInfo {
    let (software, version) = match field(server, "valkey_version") {
        Some(version) => ("Valkey", version),
        None => ("Redis", field(server, "redis_version").unwrap_or("unknown")),
    };
    ServerInfo {
        address: address.to_string(),
        software: software.to_string(),
        version: version.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::TlsOptions;
    use crate::topology::Shard;

    fn node(shard: Option<Shard>) -> Node {
        Node {
            target: Target::resolve(Some("redis://h:1"), None, None, &TlsOptions::default())
                .unwrap(),
            role: Role::Primary,
            layout: Layout::Cluster,
            shard,
        }
    }

    #[test]
    fn only_a_lost_node_or_a_demoted_one_of_a_cluster_shard_may_have_failed_over() {
        let shard = Shard {
            primary: "p".into(),
            ids: vec!["p".into(), "r".into()],
        };
        let clustered = node(Some(shard));
        let alone = node(None);
        let gone = Error::Connection("gone".into());
        let demoted = Error::Replica("READONLY".into());
        assert!(may_be_failover(&clustered, &gone));
        assert!(may_be_failover(&clustered, &demoted));
        assert!(!may_be_failover(&alone, &gone));
        assert!(!may_be_failover(&alone, &demoted));
        // A script error, a refused permission: no new primary would help,
        // so the run fails at once instead of asking the cluster.
        for err in [
            Error::Script("x".into()),
            Error::Permission("x".into()),
            Error::Auth("x".into()),
        ] {
            assert!(!may_be_failover(&clustered, &err), "{err}");
        }
    }

    #[test]
    fn valkey_is_named_with_its_own_version() {
        let valkey =
            "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.1.8\r\n";
        assert_eq!(server_info(valkey, "h:1").to_string(), "h:1 (Valkey 8.1.8)");
        let redis = "# Server\r\nredis_version:8.2.3\r\n";
        assert_eq!(server_info(redis, "h:1").to_string(), "h:1 (Redis 8.2.3)");
    }
}
