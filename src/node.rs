//! One Redis node's share of a run, over one connection: read what the
//! server is (`INFO`), refuse what it cannot run before touching anything,
//! choose the script's dialect, check that the user may run every command
//! the pass will send, load the script, and run the pass. Whatever happens,
//! the node's outcome comes back: what it did, and how it ended.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use serde::Serialize;
use tokio::sync::watch;
use tracing::info;

use crate::acl::{self, Command};
use crate::error::Error;
use crate::exit::Stop;
use crate::pass::{self, End};
use crate::rules::Rules;
use crate::script::protocol::Counts;
use crate::script::{Dialect, Mode, Script};

/// What to do on each node.
#[derive(Debug, Clone)]
pub struct Task {
    /// The rules to apply.
    pub rules: Rules,
    /// Write nothing, count what would be done.
    pub dry_run: bool,
    /// How the pass runs.
    pub pass: pass::Options,
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
    /// The node's `host:port`.
    pub address: String,
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
}

/// Cleans the node behind `conn`, at `address`, as `task` says.
pub async fn clean(
    mut conn: MultiplexedConnection,
    address: String,
    task: &Task,
    stop: watch::Receiver<Option<Stop>>,
) -> NodeOutcome {
    let started = Instant::now();
    let mut node = NodeOutcome {
        address,
        server: None,
        script: None,
        counts: Counts::new(&task.rules),
        duration: Duration::ZERO,
        end: End::Complete,
    };
    node.end = match prepare(&mut conn, task, &mut node).await {
        Ok(()) => {
            let script = node.script.as_ref().expect("prepared");
            pass::run(
                conn,
                &task.rules,
                script,
                &task.pass,
                stop,
                &mut node.counts,
            )
            .await
        }
        Err(err) => End::Failed(err),
    };
    node.duration = started.elapsed();
    node
}

/// Everything before the first call, recorded in `node` as it is learnt.
async fn prepare(
    conn: &mut MultiplexedConnection,
    task: &Task,
    node: &mut NodeOutcome,
) -> Result<(), Error> {
    let address = node.address.clone();
    let server = info_section(conn, &address, "server").await?;
    // Valkey says `server_mode`, Redis `redis_mode`.
    let server_mode = field(&server, "redis_mode").or_else(|| field(&server, "server_mode"));
    if server_mode == Some("cluster") {
        return Err(Error::Unsupported(format!(
            "{address} is a Redis Cluster node; cluster mode is not supported yet"
        )));
    }
    let dialect = Dialect::for_version(field(&server, "redis_version").unwrap_or_default());
    let info = server_info(&server, &address);
    node.server = Some(info.clone());
    if task.rules.uses_idle_time() {
        refuse_lfu(conn, &address, &task.rules).await?;
    }
    let mode = if task.dry_run {
        Mode::ReadOnly
    } else {
        Mode::Write
    };
    let script = node
        .script
        .insert(Script::clean(&task.rules, mode, dialect)?);
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
    let memory = info_section(conn, address, "memory").await?;
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

/// One section of INFO.
async fn info_section(
    conn: &mut MultiplexedConnection,
    address: &str,
    section: &str,
) -> Result<String, Error> {
    redis::cmd("INFO")
        .arg(section)
        .query_async(conn)
        .await
        .map_err(|err| Command::Info.refused(address, &err))
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

/// The value of `name` in INFO output (`name:value` lines).
fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_are_found_by_exact_name() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n";
        assert_eq!(field(info, "redis_version"), Some("7.0.15"));
        assert_eq!(field(info, "redis_mode"), Some("standalone"));
        assert_eq!(field(info, "redis"), None);
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
