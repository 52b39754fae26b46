//! Where the nodes to clean are. The user names a standalone server, the
//! seed nodes of a Redis Cluster (`--url` repeated, or one URL with several
//! comma-separated hosts), or Sentinels and the service they watch
//! (`redis+sentinel://`); this module turns that into the nodes a run
//! cleans, each with the target to connect to, and finds a cluster shard's
//! primary again after a failover.
//!
//! A cluster's shards come from `CLUSTER SHARDS` on Redis 7+ and Valkey, and
//! from `CLUSTER SLOTS` on 6.2, asked of the first seed that answers. Every
//! node is reached with the seed's settings (user, password, TLS) at the
//! address the cluster announces for it.
//!
//! The Sentinels are asked by the job itself, each in turn, with their own
//! credentials (`SENTINEL GET-MASTER-ADDR-BY-NAME`, or `SENTINEL REPLICAS`
//! for a dry run from a replica); the node they name is then reached as
//! every data node is ([`Target::at`]: the URL's credentials, TLS and
//! server name), and asked with `INFO replication`, which the job's ACL
//! user may run, whether it is what they said.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, Value};
use serde::Serialize;
use tracing::{info, warn};

use crate::acl::Command;
use crate::connection::{Target, invalid_url, refused_url};
use crate::error::Error;
use crate::script::{Dialect, Layout};

/// The Sentinel port, when a `redis+sentinel://` host names none.
pub const SENTINEL_PORT: u16 = 26379;

/// How often a failed-over shard is asked for its new primary.
const FAILOVER_POLL: Duration = Duration::from_millis(100);

/// How many times in all the Sentinels are asked for the primary when the
/// node they name says it is a replica: a failover under way, which
/// Sentinel ends within about a second of the promoted replica's new role
/// (it reads a failing-over node's INFO every second).
const ROLE_CHECKS: u32 = 5;

/// The pause between two of those times.
const ROLE_CHECK_PAUSE: Duration = Duration::from_millis(500);

/// What the user named: where the nodes are found.
#[derive(Clone)]
pub enum Source {
    /// One or more URLs: a standalone server, or seed nodes of a cluster.
    Direct(Vec<Target>),
    /// Sentinels, which name the primary of a service.
    Sentinel(Box<Sentinels>),
}

/// Sentinels and what to ask them.
#[derive(Clone)]
pub struct Sentinels {
    /// The Sentinels' addresses.
    pub sentinels: Vec<ConnectionAddr>,
    /// The Sentinels' own credentials.
    pub auth: SentinelAuth,
    /// The service (master) name the Sentinels watch.
    pub service: String,
    /// The data nodes' settings (user, password, database, TLS), at no
    /// address yet: the Sentinels give it.
    pub data: Target,
}

/// Whether a node is a primary or a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// It holds the writable copy of its keys.
    Primary,
    /// It copies a primary (a dry run may read from it).
    Replica,
}

/// One node a run cleans.
#[derive(Clone)]
pub struct Node {
    /// Where to connect.
    pub target: Target,
    /// What the topology said the node is.
    pub role: Role,
    /// How it holds its keys.
    pub layout: Layout,
    /// On a cluster: the shard, to find its primary again after a failover.
    pub shard: Option<Shard>,
}

/// A cluster shard as it was found: its nodes' ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The id of the node that was its primary.
    pub primary: String,
    /// The ids of all its nodes.
    pub ids: Vec<String>,
}

/// A cluster node as `CLUSTER SHARDS` or `CLUSTER SLOTS` announce it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    id: String,
    host: String,
    port: u16,
    primary: bool,
    online: bool,
}

/// A shard with its members, primary first.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ShardMap {
    slots: Vec<(u16, u16)>,
    members: Vec<Member>,
}

impl ShardMap {
    /// Its primary: the online one, if the shard lists a failed one too.
    fn primary(&self) -> Option<&Member> {
        let mut primaries = self.members.iter().filter(|m| m.primary);
        let first = primaries.clone().next();
        primaries.find(|m| m.online).or(first)
    }

    fn shard(&self) -> Option<Shard> {
        Some(Shard {
            primary: self.primary()?.id.clone(),
            ids: self.members.iter().map(|m| m.id.clone()).collect(),
        })
    }
}

/// The nodes to clean: for a standalone server or Sentinel its primary (or,
/// with `from_replicas`, a replica), for a cluster every shard's primary (or
/// one of its replicas).
pub async fn discover(
    source: &Source,
    timeout: Duration,
    from_replicas: bool,
) -> Result<Vec<Node>, Error> {
    match source {
        Source::Direct(seeds) => discover_direct(seeds, timeout, from_replicas).await,
        // Each Sentinel, and each node they name, is given `timeout` to
        // connect and to answer: one that does not answer gives the next
        // its turn.
        Source::Sentinel(sentinels) => Ok(vec![sentinels.node(timeout, from_replicas).await?]),
    }
}

/// Connects to the first seed that answers and reads the topology from it.
async fn discover_direct(
    seeds: &[Target],
    timeout: Duration,
    from_replicas: bool,
) -> Result<Vec<Node>, Error> {
    let (seed, mut conn) = connect_any(seeds, timeout).await?;
    let address = seed.address();
    let server = info(&mut conn, &address, "server").await?;
    if mode(&server) == Some("sentinel") {
        return Err(Error::Unsupported(format!(
            "{address} is a Redis Sentinel, not a data node: to clean the primary of a service \
             it watches, give --url redis+sentinel://HOST[:PORT]/SERVICE (its user and password \
             are the data nodes'; the Sentinels' own password goes to --sentinel-password-file)"
        )));
    }
    if !is_cluster(&server) {
        if seeds.len() > 1 {
            return Err(Error::Unsupported(format!(
                "several Redis URLs name the seed nodes of one cluster, but {address} is not a \
                 cluster node; give one URL for a standalone server"
            )));
        }
        let role = role(&info(&mut conn, &address, "replication").await?);
        return Ok(vec![Node {
            target: seed.clone(),
            role,
            layout: Layout::Standalone,
            shard: None,
        }]);
    }
    let shards = shards(&mut conn, seed, &server).await?;
    same_cluster(seed, &shards, seeds, timeout).await?;
    info!(seed = %address, shards = shards.len(), "found a Redis Cluster");
    Ok(shards
        .iter()
        .filter_map(|shard| cluster_node(seed, shard, from_replicas))
        .collect())
}

/// Checks that each of `seeds` that answers, besides `seed`, is a node of
/// the cluster whose `shards` `seed` gave: its own map shares a node with
/// them. Node ids, not addresses, since a cluster may announce addresses
/// other than the ones the URLs give (pod IPs for a Service's name). A
/// seed that does not answer is left out, as when it is the first.
async fn same_cluster(
    seed: &Target,
    shards: &[ShardMap],
    seeds: &[Target],
    timeout: Duration,
) -> Result<(), Error> {
    let ids: HashSet<&str> = shards
        .iter()
        .flat_map(|shard| shard.members.iter().map(|m| m.id.as_str()))
        .collect();
    let others = seeds
        .iter()
        .filter(|other| other.address() != seed.address());
    let maps = futures_util::future::join_all(others.map(|other| async move {
        let Ok(mut conn) = other.connect(timeout).await else {
            return Ok(None);
        };
        let address = other.address();
        let server = info(&mut conn, &address, "server").await?;
        if !is_cluster(&server) {
            return Ok(Some((address, Vec::new())));
        }
        Ok::<_, Error>(Some((
            address,
            self::shards(&mut conn, other, &server).await?,
        )))
    }))
    .await;
    for map in maps {
        let Some((address, theirs)) = map? else {
            continue;
        };
        let shared = theirs
            .iter()
            .flat_map(|shard| &shard.members)
            .any(|member| ids.contains(member.id.as_str()));
        if !shared {
            return Err(Error::Unsupported(format!(
                "several Redis URLs name the seed nodes of one cluster, but {address} is not a \
                 node of {}'s cluster; give the nodes of one cluster (one run per cluster)",
                seed.address()
            )));
        }
    }
    Ok(())
}

/// The node to clean of `shard`: its primary, or with `from_replicas` its
/// first online replica (its primary when it has none).
fn cluster_node(seed: &Target, shard: &ShardMap, from_replicas: bool) -> Option<Node> {
    let primary = shard.primary()?;
    let replica = shard.members.iter().find(|m| !m.primary && m.online);
    let (member, role) = match replica {
        Some(replica) if from_replicas => (replica, Role::Replica),
        _ => (primary, Role::Primary),
    };
    if from_replicas && role == Role::Primary {
        warn!(primary = %format!("{}:{}", primary.host, primary.port),
              "the shard has no replica online; the dry run reads from its primary");
    }
    Some(Node {
        target: seed.at(&member.host, member.port),
        role,
        layout: Layout::Cluster,
        shard: shard.shard(),
    })
}

/// The first of `targets` that accepts a connection; else the failure,
/// of the kind of the last one, naming each of several and why.
async fn connect_any(
    targets: &[Target],
    timeout: Duration,
) -> Result<(&Target, MultiplexedConnection), Error> {
    let mut failures = Vec::new();
    for target in targets {
        match target.connect(timeout).await {
            Ok(conn) => return Ok((target, conn)),
            Err(err) => failures.push(err),
        }
    }
    let each: Vec<String> = failures.iter().map(ToString::to_string).collect();
    match failures.pop() {
        None => Err(Error::Usage("no Redis URL given".to_string())),
        Some(only) if failures.is_empty() => Err(only),
        Some(last) => Err(last.reworded(format!(
            "none of the {} nodes answered: {}",
            each.len(),
            each.join("; ")
        ))),
    }
}

/// Finds the primary of `old`'s shard after `old` failed: asks the cluster,
/// through the first of `nodes` that answers, until the shard has another
/// primary, for at most `timeout`. `None` at once when `old` answers as a
/// primary (whatever ended its pass, it was no failover) or when the shard
/// has no replica, and when the same node is still the primary after
/// `timeout`.
pub async fn new_primary(
    nodes: &[Target],
    old: &Node,
    timeout: Duration,
) -> Result<Option<Node>, Error> {
    let Some(shard) = &old.shard else {
        return Ok(None);
    };
    if still_primary(&old.target, timeout).await {
        return Ok(None);
    }
    let deadline = Instant::now() + timeout;
    loop {
        let asked = shards_from_any(nodes, timeout).await.map(|(seed, shards)| {
            let map = shards
                .into_iter()
                .find(|s| s.members.iter().any(|m| shard.ids.contains(&m.id)))?;
            // A shard of its old primary alone has no replica to elect:
            // waiting for one would only hold each retry for the timeout.
            if map.members.iter().all(|m| m.id == shard.primary) {
                return Some(None);
            }
            let primary = map.primary()?;
            (primary.id != shard.primary && primary.online).then(|| {
                Some(Node {
                    target: seed.at(&primary.host, primary.port),
                    role: Role::Primary,
                    layout: Layout::Cluster,
                    shard: map.shard(),
                })
            })
        });
        match asked {
            // A new primary, or none that can come.
            Ok(Some(node)) => return Ok(node),
            Ok(None) if Instant::now() >= deadline => return Ok(None),
            Err(err) if Instant::now() >= deadline => return Err(err),
            // Not yet: the cluster is still electing, or the node asked
            // is busy with it.
            _ => tokio::time::sleep(FAILOVER_POLL).await,
        }
    }
}

/// The slot ranges `node`'s shard serves now, inclusive and sorted, as the
/// node itself tells it (a resharding moves slots during a run), over
/// `conn`; `server` is its `INFO server`. The node's own keys (lease,
/// checkpoint) go to the first slot; how far a pass has gone counts the
/// slots.
pub async fn served_slots(
    conn: &mut MultiplexedConnection,
    node: &Node,
    server: &str,
) -> Result<Vec<(u16, u16)>, Error> {
    let ids = node
        .shard
        .as_ref()
        .map(|shard| &shard.ids[..])
        .unwrap_or_default();
    shards(conn, &node.target, server)
        .await?
        .into_iter()
        .find(|map| map.members.iter().any(|m| ids.contains(&m.id)))
        .map(|map| {
            let mut slots = map.slots;
            slots.sort_unstable();
            slots
        })
        .filter(|slots| !slots.is_empty())
        .ok_or_else(|| {
            Error::Unavailable(format!(
                "{}'s shard serves no slot now (a resharding?)",
                node.target.address()
            ))
        })
}

/// Whether `target` answers and says it is a primary.
async fn still_primary(target: &Target, timeout: Duration) -> bool {
    let Ok(mut conn) = target.connect(timeout).await else {
        return false;
    };
    info(&mut conn, &target.address(), "replication")
        .await
        .is_ok_and(|replication| role(&replication) == Role::Primary)
}

/// The shards, as the first of `nodes` that answers tells them.
async fn shards_from_any(
    nodes: &[Target],
    timeout: Duration,
) -> Result<(Target, Vec<ShardMap>), Error> {
    let (seed, mut conn) = connect_any(nodes, timeout).await?;
    let server = info(&mut conn, &seed.address(), "server").await?;
    Ok((seed.clone(), shards(&mut conn, seed, &server).await?))
}

impl Sentinels {
    /// Asks the Sentinels for the service's primary, or with `from_replicas`
    /// for a healthy replica (the primary when none answers as one), and
    /// checks with `INFO replication` that the node is what they said.
    async fn node(&self, timeout: Duration, from_replicas: bool) -> Result<Node, Error> {
        if from_replicas && let Some(node) = self.replica(timeout).await? {
            return Ok(node);
        }
        self.primary(timeout).await
    }

    /// The primary the Sentinels name, once it says it is one. A node that
    /// says it is a replica is in a failover the Sentinels have not seen
    /// the end of: they are asked again, [`ROLE_CHECKS`] times in all.
    async fn primary(&self, timeout: Duration) -> Result<Node, Error> {
        let mut checks = 1;
        loop {
            let (host, port) = primary_of(&self.ask(timeout, Question::Primary).await?)?;
            let target = self.data.at(&host, port);
            match self.role_of(&target, "primary", timeout).await? {
                Role::Primary => return Ok(self.found(target, Role::Primary)),
                Role::Replica if checks < ROLE_CHECKS => {
                    checks += 1;
                    tokio::time::sleep(ROLE_CHECK_PAUSE).await;
                }
                Role::Replica => {
                    return Err(Error::Unavailable(format!(
                        "the Sentinels of {} name {} as its primary, but it says it is a \
                         replica ({ROLE_CHECKS} times in {:?}): a failover is under way, or \
                         the Sentinels lost track of the service",
                        self.service,
                        target.address(),
                        ROLE_CHECK_PAUSE * (ROLE_CHECKS - 1),
                    )));
                }
            }
        }
    }

    /// The first healthy replica the Sentinels list that answers as a
    /// replica, or `None`, with a warning, when there is none: the dry run
    /// reads from the primary then. A replica that cannot be reached is
    /// passed over; one that refuses the credentials or a command fails the
    /// run, since the primary would refuse them too.
    async fn replica(&self, timeout: Duration) -> Result<Option<Node>, Error> {
        let replicas = replicas_of(&self.ask(timeout, Question::Replicas).await?)?;
        for (host, port) in replicas {
            let target = self.data.at(&host, port);
            match self.role_of(&target, "replica", timeout).await {
                Ok(Role::Replica) => return Ok(Some(self.found(target, Role::Replica))),
                Ok(Role::Primary) => {
                    warn!(service = %self.service, node = %target.address(),
                          "the replica the Sentinels listed says it is a primary; passed over");
                }
                Err(err) if err.is_transient() => {
                    warn!(service = %self.service, node = %target.address(), error = %err,
                          "a replica the Sentinels listed did not answer; passed over");
                }
                Err(err) => return Err(err),
            }
        }
        warn!(service = %self.service,
              "no replica of the service is healthy and answers as one; the dry run reads from \
               its primary");
        Ok(None)
    }

    /// The node at `target`, as found.
    fn found(&self, target: Target, role: Role) -> Node {
        info!(service = %self.service, node = %target.address(), role = ?role,
              "the Sentinels named the node");
        Node {
            target,
            role,
            layout: Layout::Standalone,
            shard: None,
        }
    }

    /// What the data node at `target` (the service's `named`, as the
    /// Sentinels said) says it is. It is reached as every data node is: the
    /// URL's credentials, TLS and server name.
    async fn role_of(
        &self,
        target: &Target,
        named: &str,
        timeout: Duration,
    ) -> Result<Role, Error> {
        let address = target.address();
        let checked = async {
            let mut conn = target.connect(timeout).await?;
            info(&mut conn, &address, "replication").await
        };
        match checked.await {
            Ok(replication) => Ok(role(&replication)),
            Err(Error::Auth(message)) => Err(Error::Auth(format!(
                "the data node {address}, the {named} of {} as its Sentinels name it, refused \
                 the credentials: {message}; they are the data nodes' (the redis+sentinel:// \
                 URL's user and password, or --password-file), not the Sentinels'",
                self.service
            ))),
            Err(other) => Err(other),
        }
    }

    /// The answer to `question` of the first Sentinel that gives one; the
    /// others are asked in turn when one cannot be reached, refuses, or does
    /// not know the service. The error names every Sentinel asked and why
    /// it gave no answer.
    async fn ask(&self, timeout: Duration, question: Question) -> Result<Value, Error> {
        let mut failures = Vec::new();
        let mut last = None;
        for addr in &self.sentinels {
            match self.ask_one(addr, timeout, question).await {
                Ok(answer) => return Ok(answer),
                Err(err) => {
                    failures.push(format!("{addr}: {err}"));
                    last = Some(err);
                }
            }
        }
        let message = format!(
            "the Sentinels of {} did not give {} ({}); they were asked {}",
            self.service,
            question.what(),
            failures.join("; "),
            self.auth.describe(),
        );
        Err(match last {
            Some(Error::Auth(_)) => Error::Auth(message),
            Some(Error::Permission(_)) => Error::Permission(message),
            Some(Error::Unsupported(_)) => Error::Unsupported(message),
            _ => Error::Connection(message),
        })
    }

    /// Asks the Sentinel at `addr`, with the Sentinels' own credentials and
    /// no TLS. The connection is not named (`CLIENT SETNAME`): that would be
    /// one more permission for the Sentinels' user to grant.
    async fn ask_one(
        &self,
        addr: &ConnectionAddr,
        timeout: Duration,
        question: Question,
    ) -> Result<Value, Error> {
        let mut settings = redis::RedisConnectionInfo::default().set_skip_set_lib_name();
        if let Some(user) = &self.auth.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &self.auth.password {
            settings = settings.set_password(password);
        }
        let info = addr
            .clone()
            .into_connection_info()
            .map_err(|err| Error::from_redis("", &err))?
            .set_redis_settings(settings);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let fail = |err: redis::RedisError| Error::from_redis("cannot connect", &err);
        let client = redis::Client::open(info).map_err(fail)?;
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(fail)?;
        let refused = |err: redis::RedisError| match Error::from_redis(
            &format!("refused {}", question.name()),
            &err,
        ) {
            Error::Permission(message) => Error::Permission(format!(
                "{message}; add {} to the Sentinels' user",
                question.permission()
            )),
            other => other,
        };
        let answer: Value = question
            .command(&self.service)
            .query_async(&mut conn)
            .await
            .map_err(refused)?;
        match answer {
            Value::Nil => Err(Error::Unsupported(format!(
                "does not know the service {}",
                self.service
            ))),
            answer => Ok(answer),
        }
    }
}

/// What the job asks the Sentinels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Question {
    /// `SENTINEL GET-MASTER-ADDR-BY-NAME`: the primary's host and port.
    Primary,
    /// `SENTINEL REPLICAS` (Redis 6.2+; `SLAVES` before): each replica's
    /// fields, its address and health among them.
    Replicas,
}

impl Question {
    /// The command as Redis names it, and as the Sentinels' ACL grants it.
    fn name(self) -> &'static str {
        match self {
            Question::Primary => "SENTINEL GET-MASTER-ADDR-BY-NAME",
            Question::Replicas => "SENTINEL REPLICAS",
        }
    }

    /// The ACL permission that allows it, e.g. `+sentinel|replicas`.
    fn permission(self) -> String {
        format!("+{}", self.name().to_lowercase().replace(' ', "|"))
    }

    /// What the answer is, for messages.
    fn what(self) -> &'static str {
        match self {
            Question::Primary => "the service's primary",
            Question::Replicas => "the service's replicas",
        }
    }

    /// The command for `service`.
    fn command(self, service: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("SENTINEL");
        let subcommand = self.name().split_once(' ').map_or("", |(_, sub)| sub);
        cmd.arg(subcommand).arg(service);
        cmd
    }
}

/// `SENTINEL GET-MASTER-ADDR-BY-NAME`'s `[host, port]`.
fn primary_of(answer: &Value) -> Result<(String, u16), Error> {
    items(answer)
        .and_then(|pair| {
            let host = string(pair.first()?)?;
            let port = u16::try_from(int(pair.get(1)?)?).ok()?;
            Some((host, port))
        })
        .ok_or_else(|| unknown_answer(Question::Primary))
}

/// `SENTINEL REPLICAS`'s healthy replicas, as listed.
fn replicas_of(answer: &Value) -> Result<Vec<(String, u16)>, Error> {
    let replicas = items(answer).ok_or_else(|| unknown_answer(Question::Replicas))?;
    replicas
        .iter()
        .map(|replica| {
            let fields = map(replica)?;
            let text = |name: &str| fields.get(name).and_then(|v| string(v));
            let port = u16::try_from(int(fields.get("port")?)?).ok()?;
            Some((text("ip")?, port, text("flags").unwrap_or_default()))
        })
        .collect::<Option<Vec<_>>>()
        .map(|replicas| {
            replicas
                .into_iter()
                .filter(|(_, _, flags)| healthy(flags))
                .map(|(host, port, _)| (host, port))
                .collect()
        })
        .ok_or_else(|| unknown_answer(Question::Replicas))
}

/// Whether a replica's Sentinel `flags` say it may be read from: not down
/// in this Sentinel's view (`s_down`) nor in their agreed one (`o_down`),
/// and connected.
fn healthy(flags: &str) -> bool {
    !flags
        .split(',')
        .any(|flag| matches!(flag, "s_down" | "o_down" | "disconnected"))
}

/// The error for an answer in a form the job does not know.
fn unknown_answer(question: Question) -> Error {
    Error::Redis(format!(
        "a Sentinel answered {} in a form the job does not know",
        question.name()
    ))
}

/// The Sentinels' own credentials, separate from the data nodes'.
#[derive(Clone, Default)]
pub struct SentinelAuth {
    /// Their ACL user, if not `default`.
    pub username: Option<String>,
    /// Their password (`requirepass` in sentinel.conf).
    pub password: Option<String>,
}

impl SentinelAuth {
    /// Which credentials the Sentinels are asked with, for messages; never
    /// the password itself.
    fn describe(&self) -> String {
        let user = match &self.username {
            Some(user) => format!("as the user {user} (--sentinel-username)"),
            None => "as the user default".to_string(),
        };
        let password = match self.password {
            Some(_) => "with the password of --sentinel-password-file",
            None => "with no password (--sentinel-password-file gives one)",
        };
        format!("{user} {password}")
    }
}

impl Source {
    /// Resolves what the user named. `urls` are the `--url` values (each may
    /// list several hosts, comma-separated); `target` resolves one URL with
    /// the connection settings (`None`: the default, or `REDIS_HOST`). A
    /// `redis+sentinel://` URL (also `redis-sentinel://`; `rediss+sentinel`
    /// reaches the data nodes over TLS) must be the only one.
    pub fn resolve(
        urls: &[String],
        target: impl Fn(Option<&str>) -> Result<Target, Error>,
        sentinel_auth: &SentinelAuth,
    ) -> Result<Source, Error> {
        let urls: Vec<&str> = urls.iter().map(|u| u.trim()).collect();
        match urls[..] {
            // REDIS_URL= in a manifest: REDIS_HOST stands in, never the
            // default server (see `Target::resolve`).
            [""] => return Ok(Source::Direct(vec![target(Some(""))?])),
            _ if urls.contains(&"") => {
                return Err(Error::Usage(
                    "one of the --url values is empty: give each a Redis URL".to_string(),
                ));
            }
            _ => {}
        }
        if let Some(sentinel) = urls.iter().find(|u| sentinel_scheme(u).is_some()) {
            if urls.len() > 1 {
                return Err(Error::Usage(
                    "a redis+sentinel:// URL lists every Sentinel itself; give it alone"
                        .to_string(),
                ));
            }
            return Ok(Source::Sentinel(Box::new(sentinels(
                sentinel,
                target,
                sentinel_auth,
            )?)));
        }
        if urls.is_empty() {
            return Ok(Source::Direct(vec![target(None)?]));
        }
        let mut seeds = Vec::new();
        for url in urls {
            for item in seed_urls(url)? {
                seeds.push(target(Some(&item))?);
            }
        }
        Ok(Source::Direct(seeds))
    }
}

/// The data nodes' scheme for a Sentinel URL's scheme, or `None` for any
/// other URL.
fn sentinel_scheme(url: &str) -> Option<&'static str> {
    match url.split_once("://")?.0.to_ascii_lowercase().as_str() {
        "redis+sentinel" | "redis-sentinel" => Some("redis"),
        "rediss+sentinel" | "rediss-sentinel" => Some("rediss"),
        _ => None,
    }
}

/// Why `url`, which has no `://`, is not a URL: a known scheme written
/// without its `//` (`unix:/run/redis.sock`) is named; anything else before
/// a `:` may be a host or a user name, so it is not.
fn without_scheme(url: &str) -> String {
    const SCHEMES: [&str; 8] = [
        "redis",
        "rediss",
        "unix",
        "redis+unix",
        "redis+sentinel",
        "rediss+sentinel",
        "redis-sentinel",
        "rediss-sentinel",
    ];
    match url.split_once(':') {
        Some((scheme, _)) if SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) => {
            format!("its scheme {scheme}: must be followed by //")
        }
        _ => "it has no scheme".into(),
    }
}

/// `scheme://[userinfo@]host[:port][,host[:port]...][/db]` as one URL per
/// host: the later hosts take the first's scheme and credentials. An item
/// that is a URL of its own starts a list of its own. The credentials end
/// at the authority's last `@`: a password may hold a comma (an
/// ElastiCache AUTH token may), which must not split the URL, or part of
/// the password would be taken for a host and shown as one.
fn seed_urls(url: &str) -> Result<Vec<String>, Error> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid_url(url, Some(&without_scheme(url))))?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let hosts_start = rest[..authority_end].rfind('@').map_or(0, |at| at + 1);
    let (userinfo, hosts) = rest.split_at(hosts_start);
    // A later item with a scheme starts the next URL, credentials and all.
    let (hosts, next) = match hosts.find("://").and_then(|at| hosts[..at].rfind(',')) {
        Some(comma) => (&hosts[..comma], Some(&hosts[comma + 1..])),
        None => (hosts, None),
    };
    let mut items = hosts.split(',');
    let prefix = format!("{scheme}://{userinfo}");
    let mut out = vec![format!("{prefix}{}", items.next().unwrap_or_default())];
    for item in items.map(str::trim).filter(|i| !i.is_empty()) {
        out.push(format!("{prefix}{item}"));
    }
    if let Some(next) = next {
        out.extend(seed_urls(next.trim())?);
    }
    Ok(out)
}

/// A URL's authority as its `user:password@` (empty without one) and its
/// hosts.
fn split_userinfo(authority: &str) -> (String, &str) {
    match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
        None => (String::new(), authority),
    }
}

/// The Sentinels, service and data-node settings of a `redis+sentinel://`
/// URL: `scheme://[userinfo@]host[:port][,host[:port]...]/service[/db]`.
/// The URL's credentials and database are the data nodes'.
fn sentinels(
    url: &str,
    target: impl Fn(Option<&str>) -> Result<Target, Error>,
    auth: &SentinelAuth,
) -> Result<Sentinels, Error> {
    let data_scheme = sentinel_scheme(url).unwrap_or("redis");
    let rest = url.split_once("://").map_or("", |(_, rest)| rest);
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = split_userinfo(authority);
    let (service, db) = path.split_once('/').unwrap_or((path, ""));
    let why = if hosts.is_empty() {
        Some("no Sentinel")
    } else if service.is_empty() {
        Some("no service name")
    } else if !db.is_empty() && db.parse::<u32>().is_err() {
        // Not quoted: it is in the URL shown, where a password with a '/'
        // would have its end taken for the service and the database.
        Some("the database after the service name is no number from 0 up")
    } else {
        None
    };
    if let Some(why) = why {
        return Err(refused_url(
            "Sentinel URL",
            url,
            why,
            "redis+sentinel://host[:port][,host[:port]...]/SERVICE[/db], with \
             user:password@ before the hosts if needed",
        ));
    }
    // The data nodes' address is not known yet: the Sentinels give it.
    let data = target(Some(&format!(
        "{data_scheme}://{userinfo}sentinel-primary/{db}"
    )))?;
    Ok(Sentinels {
        sentinels: sentinel_addresses(hosts)?,
        auth: auth.clone(),
        service: service.to_string(),
        data,
    })
}

/// Each Sentinel of the comma-separated `hosts` (port 26379 by default).
fn sentinel_addresses(hosts: &str) -> Result<Vec<ConnectionAddr>, Error> {
    hosts
        .split(',')
        .map(|host| {
            let host = host.trim();
            let has_port = !host.ends_with(']')
                && host
                    .rsplit_once(':')
                    .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
            let url = match has_port {
                true => format!("redis://{host}"),
                false => format!("redis://{host}:{SENTINEL_PORT}"),
            };
            let invalid = || {
                Error::Usage(format!(
                    "invalid Sentinel address {host:?} in the Redis URL"
                ))
            };
            match url
                .as_str()
                .into_connection_info()
                .map_err(|_| invalid())?
                .addr()
            {
                ConnectionAddr::Tcp(_, 0) => Err(invalid()),
                addr => Ok(addr.clone()),
            }
        })
        .collect()
}

/// Whether `INFO server` says cluster mode.
pub fn is_cluster(server: &str) -> bool {
    mode(server) == Some("cluster")
}

/// The mode `INFO server` gives (`redis_mode`, or Valkey's `server_mode`):
/// `standalone`, `cluster` or `sentinel`.
fn mode(server: &str) -> Option<&str> {
    field(server, "redis_mode").or_else(|| field(server, "server_mode"))
}

/// The role `INFO replication` gives.
fn role(replication: &str) -> Role {
    match field(replication, "role") {
        Some("slave") => Role::Replica,
        _ => Role::Primary,
    }
}

/// The shards with slots, sorted by their first slot, of the cluster of
/// `seed`, whose `INFO server` is `server`.
async fn shards(
    conn: &mut MultiplexedConnection,
    seed: &Target,
    server: &str,
) -> Result<Vec<ShardMap>, Error> {
    let address = seed.address();
    let dialect = Dialect::for_version(field(server, "redis_version").unwrap_or_default());
    let (command, reply) = match dialect {
        Dialect::Redis7 => (Command::ClusterShards, "SHARDS"),
        Dialect::Legacy => (Command::ClusterSlots, "SLOTS"),
    };
    let value: Value = redis::cmd("CLUSTER")
        .arg(reply)
        .query_async(conn)
        .await
        .map_err(|err| command.refused(&address, &err))?;
    let host = seed.host();
    let shards = match dialect {
        Dialect::Redis7 => parse_shards(&value, &host, seed.is_tls()),
        Dialect::Legacy => parse_slots(&value, &host),
    }
    .ok_or_else(|| {
        Error::Redis(format!(
            "{address} answered CLUSTER {reply} in a form the job does not know"
        ))
    })?;
    let shards = serving(shards);
    if shards.is_empty() {
        return Err(Error::Redis(format!(
            "{address} is a cluster node, but no shard serves any slot"
        )));
    }
    Ok(shards)
}

/// The shards that serve slots and have a primary, sorted by their first
/// slot.
fn serving(mut shards: Vec<ShardMap>) -> Vec<ShardMap> {
    shards.retain(|s| !s.slots.is_empty() && s.primary().is_some());
    shards.sort_by_key(|s| s.slots.iter().map(|r| r.0).min());
    shards
}

/// `CLUSTER SHARDS` (Redis 7+): per shard a map of `slots` (a flat list of
/// range bounds) and `nodes` (maps of id, endpoint or ip, port or tls-port,
/// role and health). An empty or `?` endpoint is the host asked.
fn parse_shards(value: &Value, asked: &str, tls: bool) -> Option<Vec<ShardMap>> {
    let Value::Array(shards) = value else {
        return None;
    };
    shards
        .iter()
        .map(|shard| {
            let shard = map(shard)?;
            let bounds: Vec<u16> = items(shard.get("slots")?)?
                .iter()
                .map(|v| int(v).and_then(|n| u16::try_from(n).ok()))
                .collect::<Option<_>>()?;
            let slots = bounds.chunks(2).map(|r| (r[0], r[r.len() - 1])).collect();
            let members = items(shard.get("nodes")?)?
                .iter()
                .map(|node| {
                    let node = map(node)?;
                    let text = |name: &str| node.get(name).and_then(|v| string(v));
                    let port = |name: &str| {
                        node.get(name)
                            .and_then(|v| int(v))
                            .and_then(|p| u16::try_from(p).ok())
                            .filter(|&p| p != 0)
                    };
                    let known = |host: &String| !host.is_empty() && host != "?";
                    let host = text("endpoint")
                        .filter(known)
                        .or_else(|| text("ip").filter(known))
                        .unwrap_or_else(|| asked.to_string());
                    let port = if tls {
                        port("tls-port").or_else(|| port("port"))
                    } else {
                        port("port").or_else(|| port("tls-port"))
                    }?;
                    Some(Member {
                        id: text("id")?,
                        host,
                        port,
                        primary: text("role")? == "master",
                        online: text("health").is_none_or(|h| h == "online"),
                    })
                })
                .collect::<Option<Vec<_>>>()?;
            Some(ShardMap { slots, members })
        })
        .collect()
}

/// `CLUSTER SLOTS` (Redis 6.2): per slot range its start, end, primary and
/// replicas, each `[host, port, id, ...]`; a range per entry, so the ranges
/// of one primary are gathered into one shard. An empty host is the host
/// asked.
fn parse_slots(value: &Value, asked: &str) -> Option<Vec<ShardMap>> {
    let Value::Array(ranges) = value else {
        return None;
    };
    let mut shards: Vec<ShardMap> = Vec::new();
    for range in ranges {
        let range = items(range)?;
        let start = u16::try_from(int(range.first()?)?).ok()?;
        let end = u16::try_from(int(range.get(1)?)?).ok()?;
        let members = range[2..]
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let node = items(node)?;
                let host = string(node.first()?)
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| asked.to_string());
                Some(Member {
                    id: string(node.get(2)?)?,
                    host,
                    port: u16::try_from(int(node.get(1)?)?).ok()?,
                    primary: i == 0,
                    online: true,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let primary = members.first()?.id.clone();
        match shards.iter_mut().find(|s| s.members[0].id == primary) {
            Some(shard) => shard.slots.push((start, end)),
            None => shards.push(ShardMap {
                slots: vec![(start, end)],
                members,
            }),
        }
    }
    Some(shards)
}

/// A flat `[key, value, ...]` array (RESP2, which the job speaks) as a map.
fn map(value: &Value) -> Option<HashMap<String, &Value>> {
    items(value)?
        .chunks(2)
        .map(|kv| Some((string(&kv[0])?, kv.get(1)?)))
        .collect()
}

fn items(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) => Some(items),
        _ => None,
    }
}

fn string(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        _ => None,
    }
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        other => string(other)?.parse().ok(),
    }
}

/// One section of INFO, or the refusal.
pub async fn info(
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

/// The value of `name` in INFO output (`name:value` lines).
pub fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::TlsOptions;

    fn target(url: Option<&str>) -> Result<Target, Error> {
        Target::resolve(url, None, None, &TlsOptions::default())
    }

    fn seeds(urls: &[&str]) -> Vec<String> {
        let urls: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
        match Source::resolve(&urls, target, &SentinelAuth::default()).unwrap() {
            Source::Direct(seeds) => seeds.iter().map(|s| s.to_string()).collect(),
            Source::Sentinel(_) => panic!("not a Sentinel URL"),
        }
    }

    #[test]
    fn later_hosts_of_one_url_take_the_first_ones_scheme_and_credentials() {
        assert_eq!(
            seeds(&["redis://janitor:pw@a:7000,b:7001, c"]),
            [
                "redis://janitor@a:7000/0",
                "redis://janitor@b:7001/0",
                "redis://janitor@c:6379/0"
            ]
        );
        assert_eq!(
            seeds(&["rediss://a:1,redis://b:2", "redis://c:3"]),
            ["rediss://a:1/0", "redis://b:2/0", "redis://c:3/0"]
        );
        assert_eq!(seeds(&[]), ["redis://127.0.0.1:6379/0"]);
    }

    #[test]
    fn a_comma_in_a_password_does_not_split_the_url() {
        let password = |url: &str| {
            let target = target(Some(url)).unwrap();
            target.redis_settings().password().map(str::to_string)
        };
        let urls = seeds(&["redis://janitor:123,Tail@a:7000,b:7001"]);
        assert_eq!(
            urls,
            ["redis://janitor@a:7000/0", "redis://janitor@b:7001/0"]
        );
        let urls = seed_urls("redis://janitor:123,Tail@a:7000,b:7001").unwrap();
        assert!(
            urls.iter()
                .all(|url| password(url).as_deref() == Some("123,Tail"))
        );
        // Nor that of a later URL of its own.
        let urls = seed_urls("redis://a:1,rediss://u:p,w@b:2,c:3/1").unwrap();
        assert_eq!(
            urls,
            ["redis://a:1", "rediss://u:p,w@b:2", "rediss://u:p,w@c:3/1"]
        );
    }

    #[test]
    fn a_sentinel_url_gives_the_sentinels_the_service_and_the_data_nodes_settings() {
        let auth = SentinelAuth {
            username: Some("watcher".into()),
            password: Some("sentinel-pw".into()),
        };
        let url = "redis+sentinel://janitor:data-pw@s1,s2:26380/mymaster/3".to_string();
        let Source::Sentinel(sentinels) = Source::resolve(&[url], target, &auth).unwrap() else {
            panic!("a Sentinel URL")
        };
        assert_eq!(sentinels.service, "mymaster");
        let addrs: Vec<String> = sentinels.sentinels.iter().map(|s| s.to_string()).collect();
        assert_eq!(addrs, ["s1:26379", "s2:26380"]);
        assert_eq!(sentinels.auth.username.as_deref(), Some("watcher"));
        assert_eq!(sentinels.auth.password.as_deref(), Some("sentinel-pw"));
        let data = sentinels.data.at("10.0.0.5", 6379);
        assert_eq!(data.to_string(), "redis://janitor@10.0.0.5:6379/3");
        assert_eq!(data.redis_settings().password(), Some("data-pw"));

        let tls = "rediss-sentinel://s1/svc".to_string();
        let Source::Sentinel(sentinels) =
            Source::resolve(&[tls], target, &SentinelAuth::default()).unwrap()
        else {
            panic!("a Sentinel URL")
        };
        assert!(sentinels.data.is_tls());
    }

    #[test]
    fn sentinel_urls_need_a_service_and_stand_alone() {
        for url in [
            "redis+sentinel://s1",
            "redis+sentinel://s1/",
            "redis+sentinel:///svc",
            "redis+sentinel://s1:0/svc",
            "redis+sentinel://s1,s2:0/svc",
        ] {
            let err = Source::resolve(&[url.to_string()], target, &SentinelAuth::default())
                .err()
                .expect("refused");
            assert!(matches!(err, Error::Usage(_)), "{url}: {err}");
        }
        // A '/' in a password (unencoded) puts its end in the database:
        // the error does not repeat it.
        let url = "redis+sentinel://u:Pw/Secret/Tail@s1/svc".to_string();
        let err = Source::resolve(&[url], target, &SentinelAuth::default())
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("no number"), "{err}");
        assert!(!err.contains("Secret") && !err.contains("Tail"), "{err}");
        let two = [
            "redis+sentinel://s1/svc".to_string(),
            "redis://a".to_string(),
        ];
        assert!(Source::resolve(&two, target, &SentinelAuth::default()).is_err());
    }

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn node(fields: &[(&str, Value)]) -> Value {
        Value::Array(
            fields
                .iter()
                .flat_map(|(k, v)| [bulk(k), v.clone()])
                .collect(),
        )
    }

    #[test]
    fn cluster_shards_give_each_shard_its_slots_and_members() {
        let shard = |slots: Vec<i64>, nodes: Vec<Value>| {
            node(&[
                (
                    "slots",
                    Value::Array(slots.into_iter().map(Value::Int).collect()),
                ),
                ("nodes", Value::Array(nodes)),
            ])
        };
        let reply = Value::Array(vec![
            shard(
                vec![0, 99, 200, 299],
                vec![
                    node(&[
                        ("id", bulk("p1")),
                        ("port", Value::Int(7000)),
                        ("ip", bulk("10.0.0.1")),
                        ("endpoint", bulk("10.0.0.1")),
                        ("role", bulk("master")),
                        ("health", bulk("online")),
                    ]),
                    node(&[
                        ("id", bulk("p0")),
                        ("port", Value::Int(7009)),
                        ("ip", bulk("")),
                        ("endpoint", bulk("")),
                        ("role", bulk("master")),
                        ("health", bulk("failed")),
                    ]),
                    node(&[
                        ("id", bulk("r1")),
                        ("port", Value::Int(7003)),
                        ("tls-port", Value::Int(8003)),
                        ("ip", bulk("10.0.0.4")),
                        ("endpoint", bulk("?")),
                        ("role", bulk("replica")),
                        ("health", bulk("loading")),
                    ]),
                ],
            ),
            shard(vec![], vec![]),
            // A primary that serves no slot (just added, or emptied).
            shard(
                vec![],
                vec![node(&[
                    ("id", bulk("e1")),
                    ("port", Value::Int(7010)),
                    ("ip", bulk("10.0.0.9")),
                    ("role", bulk("master")),
                ])],
            ),
        ]);
        let shards = parse_shards(&reply, "seed", true).unwrap();
        assert_eq!(shards.len(), 3);
        // Only the shard that serves slots, with a primary, is cleaned.
        let served: Vec<String> = serving(shards.clone())
            .iter()
            .map(|s| s.members[0].id.clone())
            .collect();
        assert_eq!(served, ["p1"]);
        assert_eq!(shards[0].slots, [(0, 99), (200, 299)]);
        // A node that does not know its own address yet: the host asked.
        assert_eq!(shards[0].members[1].host, "seed");
        assert!(!shards[0].members[1].online);
        assert_eq!(
            shards[0].members[2],
            Member {
                id: "r1".into(),
                host: "10.0.0.4".into(),
                port: 8003,
                primary: false,
                online: false,
            }
        );
        assert_eq!(shards[0].members[0].port, 7000);
        assert_eq!(shards[0].shard().unwrap().ids, ["p1", "p0", "r1"]);
        assert!(shards[1].primary().is_none());
        // No replica online: a dry run from replicas reads from the primary.
        let seed = target(Some("redis://u:pw@seed:1")).unwrap();
        let chosen = cluster_node(&seed, &shards[0], true).unwrap();
        assert_eq!(chosen.role, Role::Primary);
        assert_eq!(chosen.target.to_string(), "redis://u@10.0.0.1:7000/0");
    }

    #[test]
    fn cluster_slots_gather_each_primarys_ranges_into_one_shard() {
        let range = |start: i64, end: i64, nodes: Vec<(&str, i64, &str)>| {
            let mut items = vec![Value::Int(start), Value::Int(end)];
            items.extend(nodes.into_iter().map(|(host, port, id)| {
                Value::Array(vec![bulk(host), Value::Int(port), bulk(id)])
            }));
            Value::Array(items)
        };
        let reply = Value::Array(vec![
            range(0, 10, vec![("", 7000, "p1"), ("h2", 7001, "r1")]),
            range(11, 20, vec![("h3", 7002, "p2")]),
            range(21, 30, vec![("", 7000, "p1"), ("h2", 7001, "r1")]),
        ]);
        let shards = parse_slots(&reply, "seed").unwrap();
        assert_eq!(shards.len(), 2);
        assert_eq!(shards[0].slots, [(0, 10), (21, 30)]);
        assert_eq!(shards[0].members[0].host, "seed");
        assert!(shards[0].members[0].primary && !shards[0].members[1].primary);
        assert_eq!(shards[1].members[0].id, "p2");
        assert!(parse_slots(&Value::Int(1), "seed").is_none());
    }

    #[test]
    fn sentinel_answers_give_the_primary_and_the_healthy_replicas() {
        let primary = Value::Array(vec![bulk("10.0.0.5"), bulk("6379")]);
        assert_eq!(
            primary_of(&primary).unwrap(),
            ("10.0.0.5".to_string(), 6379)
        );
        assert!(matches!(primary_of(&Value::Int(1)), Err(Error::Redis(_))));
        let replica = |ip: &str, port: &str, flags: &str| {
            node(&[
                ("name", bulk(&format!("{ip}:{port}"))),
                ("ip", bulk(ip)),
                ("port", bulk(port)),
                ("flags", bulk(flags)),
                ("master-link-status", bulk("ok")),
            ])
        };
        let replicas = Value::Array(vec![
            replica("10.0.0.6", "6379", "slave,s_down"),
            replica("10.0.0.7", "6380", "slave,o_down"),
            replica("10.0.0.8", "6381", "slave,disconnected"),
            replica("10.0.0.9", "6382", "slave"),
            replica("10.0.0.10", "6383", "slave"),
        ]);
        assert_eq!(
            replicas_of(&replicas).unwrap(),
            [
                ("10.0.0.9".to_string(), 6382),
                ("10.0.0.10".to_string(), 6383)
            ]
        );
        assert_eq!(replicas_of(&Value::Array(vec![])).unwrap(), []);
        assert!(replicas_of(&Value::Array(vec![bulk("x")])).is_err());
    }

    #[test]
    fn the_sentinels_credentials_are_described_without_the_password() {
        let auth = SentinelAuth {
            username: Some("watcher".into()),
            password: Some("s3cret".into()),
        };
        let described = auth.describe();
        assert!(described.contains("watcher"), "{described}");
        assert!(
            described.contains("--sentinel-password-file"),
            "{described}"
        );
        assert!(!described.contains("s3cret"), "{described}");
        assert!(SentinelAuth::default().describe().contains("no password"));
    }

    #[test]
    fn the_sentinels_questions_name_the_permissions_that_allow_them() {
        assert_eq!(
            Question::Primary.permission(),
            "+sentinel|get-master-addr-by-name"
        );
        assert_eq!(Question::Replicas.permission(), "+sentinel|replicas");
        let args = |question: Question| {
            question
                .command("svc")
                .args_iter()
                .map(|arg| match arg {
                    redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                    _ => String::new(),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(args(Question::Replicas), ["SENTINEL", "REPLICAS", "svc"]);
    }

    #[test]
    fn info_fields_are_found_by_exact_name() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_mode:cluster\r\n";
        assert_eq!(field(info, "redis_version"), Some("7.0.15"));
        assert_eq!(field(info, "redis"), None);
        assert!(is_cluster(info));
        assert!(is_cluster("server_name:valkey\r\nserver_mode:cluster\r\n"));
        assert!(!is_cluster("redis_mode:standalone\r\n"));
        assert_eq!(mode("redis_mode:sentinel\r\n"), Some("sentinel"));
        assert!(!is_cluster("redis_mode:sentinel\r\n"));
        assert_eq!(role("role:slave\r\n"), Role::Replica);
        assert_eq!(role("role:master\r\n"), Role::Primary);
    }
}
