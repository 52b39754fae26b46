//! A script-checking proxy in front of a real test server, standing in for
//! the proxies and servers that refuse Lua scripts touching keys not
//! declared in KEYS (Alibaba Cloud's proxy, Dragonfly): a fault injector in
//! spirit, never a mock of Redis.
//!
//! Each client connection gets one connection to the upstream server and a
//! thread that relays commands one at a time: it reads one complete command
//! (a RESP array of bulk strings, or an inline command), decides, and either
//! forwards its exact bytes and copies back exactly one complete reply
//! (RESP2 or RESP3, parsed just enough to know where it ends), or answers the
//! client itself with an error reply. One command at a time keeps replies in
//! order when the client pipelines. What it can refuse or change is set by a
//! [`Behaviour`]; everything else passes through untouched. Keys, values and
//! script bodies are bytes throughout. Pub/sub is not relayed: messages that
//! answer no command would stay unread.

use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::*;

/// The error a cluster answers to a command whose keys span slots.
const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// What a [`ScriptProxy`] refuses or changes; all off by default, when it
/// only relays.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// The error message (without the leading `-`) answered to an
    /// EVAL/EVALSHA/EVAL_RO/EVALSHA_RO of a script whose body calls SCAN
    /// (contains `'SCAN'`, in any case). An EVALSHA's body is known from an
    /// earlier SCRIPT LOAD through the proxy; one of an unknown SHA is
    /// forwarded (the server answers NOSCRIPT).
    pub refuse_scan_scripts: Option<String>,
    /// Answer CROSSSLOT to a script call whose declared keys do not all hash
    /// to one slot.
    pub check_slots: bool,
    /// Remove the `run_id:` line from INFO replies, as a proxy that does not
    /// say which server process answers.
    pub hide_run_id: bool,
    /// Lose the reply of every Nth `clean` call of the job's script: the
    /// call is forwarded and runs, then the client's connection is closed
    /// instead of the reply relayed, as a network that fails at that moment.
    pub lose_clean_replies: Option<u64>,
    /// Drop the Nth `clean` call of the job's script (counting from 1, over
    /// all connections): the client's connection is closed instead of the
    /// call forwarded, so it never runs, as a network that fails as the
    /// call is sent.
    pub drop_clean_call: Option<u64>,
}

/// A proxy on a free loopback port in front of one [`RedisServer`]; stops
/// accepting and closes every connection when dropped.
pub struct ScriptProxy {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<thread::JoinHandle<()>>,
}

/// What the accepting thread and every connection's thread share.
struct Shared {
    /// The upstream server's port.
    upstream: u16,
    behaviour: Behaviour,
    /// Set by drop: the accept loop stops at its next connection.
    stop: AtomicBool,
    /// Script calls answered with the refusal.
    refused: AtomicU64,
    /// Script calls answered CROSSSLOT.
    cross_slot: AtomicU64,
    /// Script calls forwarded.
    scripts: AtomicU64,
    /// The job's `clean` calls forwarded.
    cleans: AtomicU64,
    /// The job's `clean` calls received, dropped or not.
    cleans_received: AtomicU64,
    /// Script bodies loaded through the proxy, by lowercase SHA.
    bodies: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    /// Each open connection's client and upstream sockets (clones), by
    /// connection number: shut down by drop to unblock its thread.
    open: Mutex<HashMap<u64, [TcpStream; 2]>>,
    /// Every connection thread started.
    threads: Mutex<Vec<thread::JoinHandle<()>>>,
}

impl ScriptProxy {
    /// A proxy in front of `upstream`, behaving as `behaviour` says.
    pub fn start(upstream: &RedisServer, behaviour: Behaviour) -> ScriptProxy {
        let listener = bind_free_port();
        let port = listener.local_addr().expect("local_addr").port();
        let shared = Arc::new(Shared {
            upstream: upstream.port(),
            behaviour,
            stop: AtomicBool::new(false),
            refused: AtomicU64::new(0),
            cross_slot: AtomicU64::new(0),
            scripts: AtomicU64::new(0),
            cleans: AtomicU64::new(0),
            cleans_received: AtomicU64::new(0),
            bodies: Mutex::new(HashMap::new()),
            open: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || accept_loop(&listener, &shared))
        };
        ScriptProxy {
            port,
            shared,
            accept: Some(accept),
        }
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A synchronous connection through the proxy.
    pub fn conn(&self) -> redis::Connection {
        connect(&self.url())
    }

    /// Script calls answered with the refusal of
    /// [`Behaviour::refuse_scan_scripts`].
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Script calls answered CROSSSLOT.
    pub fn cross_slot(&self) -> u64 {
        self.shared.cross_slot.load(Ordering::SeqCst)
    }

    /// Script calls forwarded to the server.
    pub fn scripts(&self) -> u64 {
        self.shared.scripts.load(Ordering::SeqCst)
    }
}

impl Drop for ScriptProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the stop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        // No connection opens any more: shutting the open ones down ends
        // every thread's blocking read.
        for sockets in lock(&self.shared.open).drain().map(|(_, s)| s) {
            shut_down(&sockets);
        }
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// A listener on a port from the harness's [`free_port`], tried again if
/// another test took it meanwhile.
fn bind_free_port() -> TcpListener {
    for _attempt in 0..10 {
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", free_port())) {
            return listener;
        }
    }
    panic!("could not bind the proxy to a free port after 10 attempts");
}

/// The mutex's value, even if a panicking thread held it.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Shuts both directions of every socket down: its peer sees the end, a
/// read or write blocked on it returns.
fn shut_down(sockets: &[TcpStream]) {
    for socket in sockets {
        let _ = socket.shutdown(Shutdown::Both);
    }
}

/// Accepts clients until the stop, each relayed by a thread of its own.
fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for (number, client) in (0u64..).zip(listener.incoming()) {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(client) = client else { continue };
        match TcpStream::connect(("127.0.0.1", shared.upstream)) {
            Ok(upstream) => open(shared, number, client, upstream),
            // The client sees its connection closed, as with a server gone.
            Err(_) => shut_down(&[client]),
        }
    }
}

/// Registers a connection's sockets and starts its relay thread.
fn open(shared: &Arc<Shared>, number: u64, client: TcpStream, upstream: TcpStream) {
    let (Ok(client_clone), Ok(upstream_clone)) = (client.try_clone(), upstream.try_clone()) else {
        return shut_down(&[client, upstream]);
    };
    lock(&shared.open).insert(number, [client_clone, upstream_clone]);
    let thread = {
        let shared = Arc::clone(shared);
        thread::spawn(move || {
            let _ = relay(&shared, &client, &upstream);
            // Closed for the client even though drop still holds clones.
            shut_down(&[client, upstream]);
            lock(&shared.open).remove(&number);
        })
    };
    lock(&shared.threads).push(thread);
}

/// Relays one client's commands until either side closes.
fn relay(shared: &Shared, client: &TcpStream, upstream: &TcpStream) -> io::Result<()> {
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let mut from_client = BufReader::new(client);
    let mut from_upstream = BufReader::new(upstream);
    let (mut to_client, mut to_upstream) = (client, upstream);
    while let Some(command) = read_command(&mut from_client)? {
        let reply = match shared.refusal(&command.args) {
            Some(error) => format!("-{error}\r\n").into_bytes(),
            None => {
                if shared.drops_call(&command.args) {
                    return Err(io::Error::new(ErrorKind::ConnectionAborted, "call dropped"));
                }
                to_upstream.write_all(&command.raw)?;
                let reply = read_reply(&mut from_upstream)?;
                if shared.loses_reply(&command.args) {
                    return Err(io::Error::new(ErrorKind::ConnectionAborted, "reply lost"));
                }
                shared.after(&command.args, reply)
            }
        };
        to_client.write_all(&reply)?;
    }
    Ok(())
}

impl Shared {
    /// The error `args` is answered with instead of being forwarded, if
    /// any, counted; a script call forwarded is counted too.
    fn refusal(&self, args: &[Vec<u8>]) -> Option<String> {
        let call = ScriptCall::parse(args)?;
        if self.behaviour.check_slots && !one_slot(call.keys) {
            self.cross_slot.fetch_add(1, Ordering::SeqCst);
            return Some(CROSSSLOT.to_string());
        }
        if let Some(error) = &self.behaviour.refuse_scan_scripts
            && self.calls_scan(&call.script)
        {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Some(error.clone());
        }
        self.scripts.fetch_add(1, Ordering::SeqCst);
        None
    }

    /// Whether the reply to `args`, forwarded, is to be lost (see
    /// [`Behaviour::lose_clean_replies`]).
    fn loses_reply(&self, args: &[Vec<u8>]) -> bool {
        let Some(every) = self.behaviour.lose_clean_replies else {
            return false;
        };
        let clean = ScriptCall::parse(args).is_some_and(|call| call.op == Some(&b"clean"[..]));
        clean && (self.cleans.fetch_add(1, Ordering::SeqCst) + 1).is_multiple_of(every)
    }

    /// Whether `args` is to be dropped instead of forwarded (see
    /// [`Behaviour::drop_clean_call`]).
    fn drops_call(&self, args: &[Vec<u8>]) -> bool {
        let clean = ScriptCall::parse(args).is_some_and(|call| call.op == Some(&b"clean"[..]));
        clean
            && self.behaviour.drop_clean_call
                == Some(self.cleans_received.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Whether the script's body, if known, calls SCAN.
    fn calls_scan(&self, script: &Script) -> bool {
        match script {
            Script::Body(body) => calls_scan(body),
            Script::Sha(sha) => lock(&self.bodies)
                .get(&sha.to_ascii_lowercase())
                .is_some_and(|body| calls_scan(body)),
        }
    }

    /// The server's `reply` to `args`, as the client gets it: a loaded
    /// script's SHA remembered, INFO's run id removed if asked.
    fn after(&self, args: &[Vec<u8>], reply: Vec<u8>) -> Vec<u8> {
        if let [name, sub, body] = args
            && name.eq_ignore_ascii_case(b"SCRIPT")
            && sub.eq_ignore_ascii_case(b"LOAD")
            && let Some((b'$', sha)) = bulk_payload(&reply)
        {
            lock(&self.bodies).insert(sha.to_ascii_lowercase(), body.clone());
        }
        let is_info = args
            .first()
            .is_some_and(|n| n.eq_ignore_ascii_case(b"INFO"));
        if self.behaviour.hide_run_id && is_info {
            return without_run_id(reply);
        }
        reply
    }
}

/// The script of an EVAL-family call: its body, or the SHA of one.
enum Script<'a> {
    Body(&'a [u8]),
    Sha(&'a [u8]),
}

/// An EVAL/EVALSHA call (or their `_RO` variants): the script, its
/// declared keys, and its first argument (the job's script's operation).
struct ScriptCall<'a> {
    script: Script<'a>,
    keys: &'a [Vec<u8>],
    op: Option<&'a [u8]>,
}

impl<'a> ScriptCall<'a> {
    /// `args` as a script call; `None` if it is not one, or malformed (the
    /// server answers those).
    fn parse(args: &'a [Vec<u8>]) -> Option<Self> {
        let [name, script, numkeys, rest @ ..] = args else {
            return None;
        };
        let name = name.to_ascii_uppercase();
        let script = match name.as_slice() {
            b"EVAL" | b"EVAL_RO" => Script::Body(script),
            b"EVALSHA" | b"EVALSHA_RO" => Script::Sha(script),
            _ => return None,
        };
        let numkeys: usize = std::str::from_utf8(numkeys).ok()?.parse().ok()?;
        Some(ScriptCall {
            script,
            keys: rest.get(..numkeys)?,
            op: rest.get(numkeys).map(Vec::as_slice),
        })
    }
}

/// Whether every key hashes to one slot (no keys do).
fn one_slot(keys: &[Vec<u8>]) -> bool {
    keys.windows(2)
        .all(|pair| lease::key_slot(&pair[0]) == lease::key_slot(&pair[1]))
}

/// Whether a script body calls SCAN: names it quoted, in any case.
fn calls_scan(body: &[u8]) -> bool {
    body.windows(6).any(|w| w.eq_ignore_ascii_case(b"'SCAN'"))
}

/// An INFO reply (a bulk or RESP3 verbatim string) without its `run_id:`
/// line; any other reply as it is.
fn without_run_id(reply: Vec<u8>) -> Vec<u8> {
    let Some((kind, text)) = bulk_payload(&reply) else {
        return reply;
    };
    let kept: Vec<u8> = text
        .split_inclusive(|&b| b == b'\n')
        .filter(|line| !line.starts_with(b"run_id:"))
        .flatten()
        .copied()
        .collect();
    let mut out = format!("{}{}\r\n", kind as char, kept.len()).into_bytes();
    out.extend_from_slice(&kept);
    out.extend_from_slice(b"\r\n");
    out
}

/// The type byte and the payload of a reply that is one bulk (`$`) or
/// verbatim (`=`) string.
fn bulk_payload(reply: &[u8]) -> Option<(u8, &[u8])> {
    let kind = *reply.first().filter(|&&k| k == b'$' || k == b'=')?;
    let header_end = reply.windows(2).position(|w| w == b"\r\n")?;
    let len: usize = std::str::from_utf8(&reply[1..header_end])
        .ok()?
        .parse()
        .ok()?;
    let payload = reply.get(header_end + 2..header_end + 2 + len)?;
    Some((kind, payload))
}

// ---------------------------------------------------------------------------
// RESP framing
// ---------------------------------------------------------------------------

/// One command from a client: its exact bytes and its arguments.
struct ClientCommand {
    raw: Vec<u8>,
    args: Vec<Vec<u8>>,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, what.to_string())
}

/// Appends one CRLF-terminated line to `raw` and returns it without its
/// CRLF; `None` at a clean end of stream.
fn read_line(r: &mut impl BufRead, raw: &mut Vec<u8>) -> io::Result<Option<Vec<u8>>> {
    let start = raw.len();
    if r.read_until(b'\n', raw)? == 0 {
        return Ok(None);
    }
    let line = &raw[start..];
    match line.strip_suffix(b"\r\n") {
        Some(line) => Ok(Some(line.to_vec())),
        None => Err(io::Error::from(ErrorKind::UnexpectedEof)),
    }
}

/// A line that must be there: the stream may not end before it.
fn expect_line(r: &mut impl BufRead, raw: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    read_line(r, raw)?.ok_or_else(|| io::Error::from(ErrorKind::UnexpectedEof))
}

/// The integer after a line's type byte (`*3`, `$-1`).
fn length(line: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(line.get(1..).unwrap_or_default())
        .ok()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| invalid("bad length in RESP"))
}

/// Appends `len` bytes and their CRLF to `raw`; returns the bytes.
fn read_bulk(r: &mut impl BufRead, raw: &mut Vec<u8>, len: i64) -> io::Result<Vec<u8>> {
    let len = usize::try_from(len).map_err(|_| invalid("negative bulk length"))?;
    let start = raw.len();
    raw.resize(start + len + 2, 0);
    r.read_exact(&mut raw[start..])?;
    if !raw.ends_with(b"\r\n") {
        return Err(invalid("bulk string without its CRLF"));
    }
    Ok(raw[start..start + len].to_vec())
}

/// The next command from a client, or `None` when it has closed: a RESP
/// array of bulk strings, or an inline command (words on one line).
fn read_command(r: &mut impl BufRead) -> io::Result<Option<ClientCommand>> {
    let mut raw = Vec::new();
    let Some(header) = read_line(r, &mut raw)? else {
        return Ok(None);
    };
    if !header.starts_with(b"*") {
        let args = header
            .split(|b| b.is_ascii_whitespace())
            .filter(|word| !word.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        return Ok(Some(ClientCommand { raw, args }));
    }
    let mut args = Vec::new();
    for _ in 0..length(&header)?.max(0) {
        let bulk = expect_line(r, &mut raw)?;
        if !bulk.starts_with(b"$") {
            return Err(invalid("a command argument that is not a bulk string"));
        }
        args.push(read_bulk(r, &mut raw, length(&bulk)?)?);
    }
    Ok(Some(ClientCommand { raw, args }))
}

/// The exact bytes of the server's next complete reply.
fn read_reply(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    copy_value(r, &mut raw)?;
    Ok(raw)
}

/// Appends one complete RESP2 or RESP3 value to `raw`, nested aggregates
/// included; an attribute (`|`) is kept with the value it annotates.
fn copy_value(r: &mut impl BufRead, raw: &mut Vec<u8>) -> io::Result<()> {
    let line = expect_line(r, raw)?;
    let Some(&kind) = line.first() else {
        return Err(invalid("empty RESP line"));
    };
    match kind {
        // Simple string, error, integer, double, big number, null, boolean.
        b'+' | b'-' | b':' | b',' | b'(' | b'_' | b'#' => Ok(()),
        // Bulk string, bulk error, verbatim string; `$-1` is RESP2's null.
        b'$' | b'!' | b'=' => match length(&line)? {
            -1 => Ok(()),
            len => read_bulk(r, raw, len).map(drop),
        },
        // Array, set, push; `*-1` is RESP2's null array.
        b'*' | b'~' | b'>' => copy_values(r, raw, length(&line)?),
        b'%' => copy_values(r, raw, 2 * length(&line)?),
        b'|' => {
            copy_values(r, raw, 2 * length(&line)?)?;
            copy_value(r, raw)
        }
        _ => Err(invalid("unknown RESP type")),
    }
}

/// Appends `count` values (none if negative, a null).
fn copy_values(r: &mut impl BufRead, raw: &mut Vec<u8>, count: i64) -> io::Result<()> {
    for _ in 0..count.max(0) {
        copy_value(r, raw)?;
    }
    Ok(())
}
