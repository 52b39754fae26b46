//! The cluster mode's own Redis Cluster: private `redis-server` primaries,
//! each in its own temp dir with `--cluster-enabled yes`, joined with
//! commands (`CLUSTER SET-CONFIG-EPOCH`, `ADDSLOTS`, `MEET`: what `redis-cli
//! --cluster create` does, which not every server build ships) and ready
//! once every node says `cluster_state:ok` and knows every other. It seeds
//! the benchmark's mix with each key on its slot's primary (CRC16 of the key
//! or its hash tag, as the server computes it), reads each node's INFO
//! counters, and hands the checks a connection to every primary, whose
//! keyspaces together are the cluster's. Killed on drop, like [`Server`].

use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::keyspace::{self, Mix};
use crate::server::{self, Counters, Server};

/// Slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;
/// How long the nodes may take to agree on the cluster's shape.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Where the client ports are picked: below the kernel's ephemeral range
/// (32768 and up), and so are their cluster bus ports, 10000 higher, which
/// Redis 6.2 cannot move.
const PORTS: std::ops::Range<u16> = 20_000..22_700;
/// What a cluster node's cluster bus port adds to its client port.
const BUS_OFFSET: u16 = 10_000;

/// Private cluster primaries, each serving one range of slots, killed when
/// dropped.
pub struct Cluster {
    /// The primaries, node `i` serving the `i`-th range of slots.
    nodes: Vec<Server>,
    /// A control connection to each node, in the same order.
    ctls: Vec<redis::Connection>,
    /// Slots per node: node `i` serves `i * per` up to the next node's first.
    per: u16,
}

impl Cluster {
    /// Starts `primaries` nodes of `bin`, each in a directory of its own
    /// under `dir`, shares the slots evenly and waits until the cluster is
    /// ready.
    pub fn start(bin: &str, dir: &Path, primaries: usize) -> Result<Cluster, String> {
        if !(1..=64).contains(&primaries) {
            return Err(format!(
                "--cluster-primaries {primaries}: from 1 to 64 primaries"
            ));
        }
        let mut nodes = Vec::with_capacity(primaries);
        for i in 0..primaries {
            let node_dir = dir.join(format!("cluster-node-{i}"));
            std::fs::create_dir_all(&node_dir)
                .map_err(|e| format!("create {}: {e}", node_dir.display()))?;
            // The announced address: a node learns its own only from a
            // MEET, so the one node of a one-primary cluster would call
            // itself "" (CLUSTER SHARDS, SLOTS), an endpoint the job does not
            // resolve to the seed's host yet.
            let args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-announce-ip",
                "127.0.0.1",
            ];
            nodes.push(Server::start_with(bin, &node_dir, &args, cluster_port)?);
        }
        let ctls = nodes
            .iter()
            .map(Server::connect)
            .collect::<redis::RedisResult<Vec<_>>>()
            .map_err(|e| format!("connect to a cluster node: {e}"))?;
        let per = SLOTS.div_ceil(primaries as u16);
        let mut cluster = Cluster { nodes, ctls, per };
        cluster.form()?;
        Ok(cluster)
    }

    /// Gives each node its epoch and its slots, introduces them to the
    /// first, and waits until all agree.
    fn form(&mut self) -> Result<(), String> {
        let per = self.per;
        for (i, ctl) in self.ctls.iter_mut().enumerate() {
            let first = i as u16 * per;
            let last = (first + per).min(SLOTS) - 1;
            redis::cmd("CLUSTER")
                .arg("SET-CONFIG-EPOCH")
                .arg(i + 1)
                .query::<()>(ctl)
                .map_err(|e| format!("CLUSTER SET-CONFIG-EPOCH: {e}"))?;
            redis::cmd("CLUSTER")
                .arg("ADDSLOTS")
                .arg((first..=last).collect::<Vec<u16>>())
                .query::<()>(ctl)
                .map_err(|e| format!("CLUSTER ADDSLOTS: {e}"))?;
        }
        let ports = self.ports();
        for port in &ports[1..] {
            redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(port)
                .query::<()>(&mut self.ctls[0])
                .map_err(|e| format!("CLUSTER MEET: {e}"))?;
        }
        self.wait_ready()
    }

    /// Waits until every node says `cluster_state:ok` and knows every other.
    fn wait_ready(&mut self) -> Result<(), String> {
        let known = format!("cluster_known_nodes:{}", self.nodes.len());
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let infos: Vec<String> = self
                .ctls
                .iter_mut()
                .map(|ctl| cluster_text(ctl, "INFO"))
                .collect::<Result<_, _>>()?;
            if infos
                .iter()
                .all(|i| i.contains("cluster_state:ok") && i.contains(&known))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.not_ready());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Why the cluster did not come up: each node's view and log.
    fn not_ready(&mut self) -> String {
        let mut text = format!("the cluster was not ready after {READY_TIMEOUT:?}");
        for (node, ctl) in self.nodes.iter().zip(&mut self.ctls) {
            let nodes = cluster_text(ctl, "NODES").unwrap_or_else(|e| e);
            text.push_str(&format!(
                "\n--- node {}: CLUSTER NODES ---\n{nodes}\n--- its log ---\n{}",
                node.port(),
                node.log_tail()
            ));
        }
        text
    }

    /// The first node's URL: the seed from which the job finds the others.
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// The nodes' client ports.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(Server::port).collect()
    }

    /// The nodes' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(Server::pid).collect()
    }

    /// A control connection to each primary, for the keyspace check.
    pub fn ctls(&mut self) -> &mut [redis::Connection] {
        &mut self.ctls
    }

    /// Empties every node and seeds a fresh keyspace of `keys` keys, each on
    /// its slot's primary. Returns its mix, when seeding started, and how
    /// long it took in seconds.
    pub fn fresh_keyspace(&mut self, keys: u64) -> Result<(Mix, Instant, f64), String> {
        let mix = Mix::new(keys);
        self.empty()?;
        let per = self.per;
        let seeded = Instant::now();
        keyspace::seed_nodes(&self.ports(), |key| usize::from(slot(key) / per), &mix)?;
        let seed_secs = seeded.elapsed().as_secs_f64();
        let mut total = 0;
        for ctl in &mut self.ctls {
            total += server::dbsize(ctl)?;
        }
        if total != keys {
            return Err(format!(
                "seeded {keys} keys but the primaries' DBSIZEs add up to {total}"
            ));
        }
        self.ctls.iter_mut().for_each(server::settle);
        Ok((mix, seeded, seed_secs))
    }

    /// Empties every node.
    pub fn empty(&mut self) -> Result<(), String> {
        self.ctls.iter_mut().try_for_each(server::flush)
    }

    /// Each node's INFO counters now.
    pub fn counters(&mut self) -> Result<Vec<Counters>, String> {
        self.ctls
            .iter_mut()
            .map(|ctl| server::counters(ctl).map_err(|e| format!("INFO: {e}")))
            .collect()
    }

    /// Fails when a node's process has exited.
    pub fn alive(&mut self) -> Result<(), String> {
        self.nodes.iter_mut().try_for_each(Server::alive)
    }
}

/// `CLUSTER <sub>` as text (INFO, NODES).
fn cluster_text(ctl: &mut redis::Connection, sub: &str) -> Result<String, String> {
    redis::cmd("CLUSTER")
        .arg(sub)
        .query(ctl)
        .map_err(|e| format!("CLUSTER {sub}: {e}"))
}

/// A port of [`PORTS`] whose cluster bus port is free too, both a moment
/// ago. The pick is random, so that two benchmarks (or the job's tests)
/// starting at once rarely try the same one.
fn cluster_port() -> Result<u16, String> {
    let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
    for _ in 0..1000 {
        let port = PORTS.start + (random() % u64::from(PORTS.end - PORTS.start)) as u16;
        if free(port) && free(port + BUS_OFFSET) {
            return Ok(port);
        }
    }
    Err(format!(
        "no free port in {PORTS:?} whose port + {BUS_OFFSET} is free too"
    ))
}

/// A random number, from the standard library's randomly keyed hasher.
fn random() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// The slot of `key`: CRC16 of its hash tag (the part between the first `{`
/// and the next `}`, when not empty) or of the whole key, mod 16384.
pub fn slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) % SLOTS
}

/// The part of `key` that decides its slot.
fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    let rest = &key[open + 1..];
    match rest.iter().position(|&b| b == b'}') {
        Some(len) if len > 0 => &rest[..len],
        _ => key,
    }
}

/// CRC16/XMODEM (polynomial 0x1021, initial value 0), the cluster's hash.
fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &byte| {
        (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ byte)]
    })
}

/// The CRC of each byte value, computed when compiling.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_is_xmodem() {
        // The standard check value of CRC16/XMODEM.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn slots_are_the_servers() {
        // What CLUSTER KEYSLOT answers on Redis 7.0.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"keep:0"), 1955);
        assert_eq!(slot(b"cache:nottl:17"), 14552);
        // Hash tags: the first {...} that is not empty, else the whole key.
        assert_eq!(slot(b"{user1000}.following"), 3443);
        assert_eq!(slot(b"foo{}{bar}"), 8363);
        assert_eq!(slot(b"foo{{bar}}zap"), 4015);
        assert_eq!(slot(b"{bar"), 4015);
        assert_eq!(slot(b"foo{bar}{zap}"), 5061);
    }
}
