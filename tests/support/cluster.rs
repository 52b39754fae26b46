//! A real Redis Cluster for the tests: private `redis-server` nodes started
//! with `--cluster-enabled yes`, joined with `CLUSTER MEET`, given their
//! slots with `CLUSTER ADDSLOTS` and their primaries with `CLUSTER
//! REPLICATE` (what `redis-cli --cluster create` does, which not every
//! server build ships), and ready once every node agrees. Keys are written
//! through redis-rs's cluster client, which routes each to its slot's
//! primary; the keyspace is read from every primary.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

/// Slots in a Redis Cluster.
const SLOTS: u16 = 16384;
/// How long a cluster may take to agree on its shape.
const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A port below the ephemeral range whose cluster bus port (10000 higher,
/// which Redis 6.2 cannot move) is free too.
fn cluster_port() -> u16 {
    loop {
        let port = fastrand::u16(20_000..22_700);
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}

/// Private cluster nodes, killed when dropped.
pub struct RedisCluster {
    /// Every node, the primaries first (as started; roles change with
    /// failovers).
    pub nodes: Vec<RedisServer>,
    primaries: usize,
}

impl RedisCluster {
    /// `primaries` primaries sharing the slots evenly, each with `replicas`
    /// replicas.
    pub fn start(primaries: usize, replicas: usize) -> Self {
        let count = primaries * (1 + replicas);
        let nodes: Vec<RedisServer> = (0..count)
            .map(|_| {
                RedisServer::start_bin(
                    &server_bin(),
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "1000",
                    ],
                    cluster_port,
                )
            })
            .collect();
        let cluster = RedisCluster { nodes, primaries };
        cluster.form(replicas);
        cluster
    }

    fn form(&self, replicas: usize) {
        for (i, node) in self.nodes.iter().enumerate() {
            let mut con = node.conn();
            redis::cmd("CLUSTER")
                .arg("SET-CONFIG-EPOCH")
                .arg(i + 1)
                .exec(&mut con)
                .expect("CLUSTER SET-CONFIG-EPOCH");
        }
        let per = SLOTS.div_ceil(self.primaries as u16);
        for (i, node) in self.nodes[..self.primaries].iter().enumerate() {
            let first = i as u16 * per;
            let last = (first + per).min(SLOTS) - 1;
            let mut addslots = redis::cmd("CLUSTER");
            addslots
                .arg("ADDSLOTS")
                .arg((first..=last).collect::<Vec<u16>>());
            addslots.exec(&mut node.conn()).expect("CLUSTER ADDSLOTS");
        }
        let mut first = self.nodes[0].conn();
        for node in &self.nodes[1..] {
            redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(node.port())
                .exec(&mut first)
                .expect("CLUSTER MEET");
        }
        self.wait_until_all("every node knows every other", |con| {
            cluster_nodes(con).lines().count() == self.nodes.len()
        });
        for r in 0..replicas {
            for p in 0..self.primaries {
                let replica = &self.nodes[self.primaries * (1 + r) + p];
                let id = self.id(p);
                redis::cmd("CLUSTER")
                    .arg("REPLICATE")
                    .arg(&id)
                    .exec(&mut replica.conn())
                    .expect("CLUSTER REPLICATE");
            }
        }
        self.wait_ready();
    }

    /// Waits until every node says `cluster_state:ok`, sees every
    /// replica, and every replica's link to its primary is up.
    pub fn wait_ready(&self) {
        let replicas = self.nodes.len() - self.primaries;
        self.wait_until_all("the cluster to be ready", |con| {
            let nodes = cluster_nodes(con);
            cluster_info(con).contains("cluster_state:ok")
                && nodes.lines().filter(|l| l.contains("slave")).count() == replicas
                && !nodes.contains("fail")
                && info_field(con, "replication", "master_link_status").is_none_or(|s| s == "up")
                && shards_online(con)
        });
    }

    fn wait_until_all(&self, what: &str, mut ready: impl FnMut(&mut redis::Connection) -> bool) {
        let mut cons: Vec<redis::Connection> = self.nodes.iter().map(|n| n.conn()).collect();
        let deadline = Instant::now() + CLUSTER_READY_TIMEOUT;
        while !cons.iter_mut().all(&mut ready) {
            if Instant::now() > deadline {
                let states: Vec<String> = cons.iter_mut().map(cluster_nodes).collect();
                panic!(
                    "timed out waiting for {what}; CLUSTER NODES of each node:\n{}\nlogs:\n{}",
                    states.join("\n"),
                    self.logs()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Node `i`'s cluster id.
    pub fn id(&self, i: usize) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.nodes[i].conn())
            .expect("CLUSTER MYID")
    }

    /// The URL of the first node, a seed from which the job finds the rest.
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// The live nodes that are primaries now.
    pub fn primaries(&self) -> Vec<&RedisServer> {
        self.nodes
            .iter()
            .filter(|n| ping_raw(n.port()))
            .filter(|n| {
                info_field(&mut n.conn(), "replication", "role").as_deref() == Some("master")
            })
            .collect()
    }

    /// The node that serves `slot` now.
    pub fn owner(&self, slot: u16) -> &RedisServer {
        let ranges: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut self.nodes[0].conn())
            .expect("CLUSTER SLOTS");
        let int = |v: &redis::Value| match v {
            redis::Value::Int(n) => *n,
            other => panic!("CLUSTER SLOTS: {other:?}"),
        };
        let ranges: Vec<(u16, u16, u16)> = ranges
            .iter()
            .map(|range| {
                let redis::Value::Array(primary) = &range[2] else {
                    panic!("CLUSTER SLOTS: {range:?}")
                };
                (
                    int(&range[0]) as u16,
                    int(&range[1]) as u16,
                    int(&primary[1]) as u16,
                )
            })
            .collect();
        let port = ranges
            .iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, port)| *port)
            .expect("the slot has an owner");
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .expect("a node of ours")
    }

    /// A connection of redis-rs's cluster client, which sends each key's
    /// commands to its slot's primary.
    pub fn client(&self) -> redis::cluster::ClusterConnection {
        let urls: Vec<String> = self.nodes.iter().map(|n| n.url()).collect();
        redis::cluster::ClusterClient::new(urls)
            .expect("a cluster client")
            .get_connection()
            .expect("a cluster connection")
    }

    /// `count` string keys `prefix:0`.. without TTL, written in pipelines
    /// through the cluster client (`DEBUG POPULATE` on a node would write
    /// keys of slots it does not serve).
    pub fn populate(&self, prefix: &str, count: u64) {
        let mut con = self.client();
        for first in (0..count).step_by(1000) {
            let mut pipe = redis::cluster::cluster_pipe();
            for i in first..(first + 1000).min(count) {
                pipe.cmd("SET")
                    .arg(format!("{prefix}:{i}"))
                    .arg("v")
                    .ignore();
            }
            pipe.exec(&mut con).expect("cluster pipeline of SETs");
        }
    }

    /// Every key of every primary (those of slots being imported too), with
    /// its type and TTL.
    pub fn keyspace(&self) -> BTreeMap<Vec<u8>, KeyState> {
        let mut all = BTreeMap::new();
        for node in self.primaries() {
            all.extend(keyspace_of(&mut node.conn(), true));
        }
        all
    }

    /// The number of keys on all primaries.
    pub fn dbsize(&self) -> u64 {
        self.primaries().iter().map(|n| dbsize(&mut n.conn())).sum()
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- node {} ---\n{}", n.port(), n.log()))
            .collect()
    }
}

/// `CLUSTER INFO` as one string.
fn cluster_info(con: &mut redis::Connection) -> String {
    redis::cmd("CLUSTER")
        .arg("INFO")
        .query(con)
        .expect("CLUSTER INFO")
}

/// Whether `CLUSTER SHARDS` (Redis 7+) calls every node online: a replica
/// is `loading` there until its primary's gossip tells its offset. True
/// where the command does not exist.
fn shards_online(con: &mut redis::Connection) -> bool {
    match redis::cmd("CLUSTER")
        .arg("SHARDS")
        .query::<redis::Value>(con)
    {
        Ok(shards) => {
            let text = format!("{shards:?}");
            !text.contains("loading") && !text.contains("fail")
        }
        Err(_) => true,
    }
}

/// `CLUSTER NODES` as one string.
fn cluster_nodes(con: &mut redis::Connection) -> String {
    redis::cmd("CLUSTER")
        .arg("NODES")
        .query(con)
        .expect("CLUSTER NODES")
}

/// The slot of `key` as the node computes it (`CLUSTER KEYSLOT`).
pub fn key_slot(con: &mut redis::Connection, key: &[u8]) -> u16 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(con)
        .expect("CLUSTER KEYSLOT")
}
