//! A real Prometheus Pushgateway for the tests: Debian's
//! `prometheus-pushgateway`, started on a free loopback port with an empty
//! `--persistence.file=` (it loads and saves nothing, so no test sees
//! another's series), in a temp dir, ready once `GET /-/ready` answers 200,
//! killed on drop, its log printed when a test fails; optionally behind
//! basic auth (`--web.config.file`). What it serves on `/metrics` is read
//! back as samples ([`Exposition`]).
//!
//! Also a stand-in HTTP server ([`HttpStub`]) that records the requests it
//! gets and answers each with a set status, a redirect, or never, for what
//! a real Pushgateway does not do on demand (a 500, a 307, a hang), and
//! stands in for a proxy; and `promtool check metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;

/// How long a Pushgateway may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The basic auth user of [`Pushgateway::start_with_basic_auth`].
pub const PUSH_USER: &str = "janitor";
/// Its password.
pub const PUSH_PASSWORD: &str = "s3cret-pw";
/// Its bcrypt hash, cost 4 (the cheapest: each request is checked), made with
/// `perl -e 'print crypt("s3cret-pw", "\$2b\$04\$abcdefghijklmnopqrstuu")'`
/// (libxcrypt's bcrypt).
const PUSH_PASSWORD_BCRYPT: &str = "$2b$04$abcdefghijklmnopqrstuufbu7IbsAKnz0sK.RhkuQd5ApLvLcZVy";

/// A private `prometheus-pushgateway`, killed when dropped.
pub struct Pushgateway {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    /// The credentials it requires, if any.
    auth: Option<(&'static str, &'static str)>,
}

impl Pushgateway {
    /// A Pushgateway that takes any push.
    pub fn start() -> Self {
        Self::spawn(None)
    }

    /// A Pushgateway that requires [`PUSH_USER`] and [`PUSH_PASSWORD`] for
    /// every request.
    pub fn start_with_basic_auth() -> Self {
        Self::spawn(Some((PUSH_USER, PUSH_PASSWORD)))
    }

    fn spawn(auth: Option<(&'static str, &'static str)>) -> Self {
        for _attempt in 0..10 {
            let dir = tempfile::Builder::new()
                .prefix("janitor-pushgateway")
                .tempdir()
                .expect("create a tempdir for the Pushgateway");
            let log = std::fs::File::create(dir.path().join("pushgateway.log"))
                .expect("create the Pushgateway's log");
            let port = free_port();
            let mut cmd = Command::new("prometheus-pushgateway");
            cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--persistence.file=")
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone the log's handle"))
                .stderr(log);
            if auth.is_some() {
                let config = write_file(
                    dir.path(),
                    "web.yml",
                    &format!("basic_auth_users:\n  {PUSH_USER}: \"{PUSH_PASSWORD_BCRYPT}\"\n"),
                );
                cmd.arg(format!("--web.config.file={}", config.display()));
            }
            let child = match cmd.spawn() {
                Ok(child) => child,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
                    "cannot run `prometheus-pushgateway`: not found. Install it: \
                     sudo apt-get install prometheus-pushgateway"
                ),
                Err(err) => panic!("cannot run `prometheus-pushgateway`: {err}"),
            };
            let mut gateway = Pushgateway {
                child,
                port,
                dir,
                auth,
            };
            if gateway.wait_ready() {
                return gateway;
            }
            // The port was taken by another test in the meantime: drop
            // (kill) and try another.
        }
        panic!("could not start prometheus-pushgateway on a free port after 10 attempts");
    }

    /// Waits for `GET /-/ready` to answer 200; false if the port was taken.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait pushgateway") {
                let log = self.log();
                if log.contains("address already in use") {
                    return false;
                }
                panic!("prometheus-pushgateway exited early ({status}); its log:\n{log}");
            }
            if matches!(self.get("/-/ready"), Ok((200, _))) {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus-pushgateway on port {} not ready after {READY_TIMEOUT:?}; its log:\n{}",
                self.port,
                self.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// `GET path` with the credentials it requires: status and body.
    fn get(&self, path: &str) -> Result<(u16, String), ureq::Error> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .proxy(None)
            .build()
            .into();
        let mut request = agent.get(format!("http://127.0.0.1:{}{path}", self.port));
        if let Some((user, password)) = self.auth {
            use base64::Engine;
            let pair =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            request = request.header("Authorization", format!("Basic {pair}"));
        }
        let mut response = request.call()?;
        let body = response.body_mut().read_to_string()?;
        Ok((response.status().as_u16(), body))
    }

    /// Its URL, without credentials.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What it serves on `/metrics` now.
    #[track_caller]
    pub fn metrics(&self) -> Exposition {
        match self.get("/metrics") {
            Ok((200, text)) => Exposition::parse(&text),
            other => panic!(
                "GET /metrics of the Pushgateway: {other:?}; its log:\n{}",
                self.log()
            ),
        }
    }

    /// Its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pushgateway.log")).unwrap_or_default()
    }
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "---- pushgateway log (port {}) ----\n{}---- end of pushgateway log ----",
                self.port,
                self.log()
            );
        }
    }
}

/// One sample of an exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric's name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A text exposition (format 0.0.4), parsed: its samples and its types.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    /// Every sample, in order.
    pub samples: Vec<Sample>,
    /// Each metric's `# TYPE`.
    pub types: BTreeMap<String, String>,
}

impl Exposition {
    /// Parses `text`; panics on a line it cannot read.
    pub fn parse(text: &str) -> Exposition {
        let mut exposition = Exposition::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
                exposition.types.insert(name.into(), kind.into());
            } else if !line.starts_with('#') {
                exposition.samples.push(parse_sample(line));
            }
        }
        exposition
    }

    /// The samples of the metrics whose name starts with `prefix`.
    pub fn with_prefix(&self, prefix: &str) -> Exposition {
        Exposition {
            samples: (self.samples.iter())
                .filter(|s| s.name.starts_with(prefix))
                .cloned()
                .collect(),
            types: (self.types.iter())
                .filter(|(name, _)| name.starts_with(prefix))
                .map(|(name, kind)| (name.clone(), kind.clone()))
                .collect(),
        }
    }

    /// The names of its metrics.
    pub fn names(&self) -> BTreeSet<String> {
        self.samples.iter().map(|s| s.name.clone()).collect()
    }

    /// The samples named `name` that carry every label of `labels`.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The value of the one sample named `name` with `labels`.
    #[track_caller]
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.find(name, labels)[..] {
            [sample] => sample.value,
            ref found => panic!(
                "{} samples of {name} with {labels:?}, expected 1: {found:#?}\nall: {:#?}",
                found.len(),
                self.samples
            ),
        }
    }
}

/// `name{label="value",...} value [timestamp]`, label values escaped
/// (`\\`, `\"`, `\n`).
fn parse_sample(line: &str) -> Sample {
    let fail = || -> ! { panic!("cannot parse the sample line {line:?}") };
    let name_end = line.find(['{', ' ']).unwrap_or_else(|| fail());
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            inner = inner.trim_start_matches([',', ' ']);
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = inner.split_once("=\"").unwrap_or_else(|| fail());
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => fail(),
                    },
                    Some((_, c)) => value.push(c),
                    None => fail(),
                }
            };
            labels.insert(key.to_string(), value);
            inner = &after[end + 1..];
        }
    }
    let value = rest.split_whitespace().next().unwrap_or_else(|| fail());
    Sample {
        name,
        labels,
        value: value.parse().unwrap_or_else(|_| fail()),
    }
}

/// One request an [`HttpStub`] got.
#[derive(Debug, Clone)]
pub struct Request {
    /// `PUT`, `POST`...
    pub method: String,
    /// The request target: path (still escaped) and query.
    pub path: String,
    /// Headers, names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The body.
    pub body: String,
}

/// How an [`HttpStub`] answers.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// This status, with this body.
    Status(u16, &'static str),
    /// This redirect status, to this `Location`.
    Redirect(u16, &'static str),
    /// Never: it reads the request and holds the connection open.
    Never,
}

/// A loopback HTTP server that records every request and answers each the
/// same way; stopped on drop.
pub struct HttpStub {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl HttpStub {
    pub fn start(answer: Answer) -> HttpStub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop) = (Arc::clone(&requests), Arc::clone(&stop));
            thread::spawn(move || serve(&listener, answer, &requests, &stop))
        };
        HttpStub {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for HttpStub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the stop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts connections until `stop`, one request each, answered with
/// `answer` (or held open until the stop).
fn serve(listener: &TcpListener, answer: Answer, log: &Mutex<Vec<Request>>, stop: &AtomicBool) {
    let mut held = Vec::new();
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let Some(request) = read_request(&mut stream) else {
            continue;
        };
        log.lock().unwrap().push(request);
        match answer {
            Answer::Status(status, body) => {
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} Stub\r\nContent-Type: text/plain\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
            Answer::Redirect(status, location) => {
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} Stub\r\nLocation: {location}\r\n\
                     Content-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
            Answer::Never => held.push(stream),
        }
    }
}

/// One HTTP/1.1 request with a `Content-Length` body (or none).
fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut words = line.split_whitespace();
    let (method, path) = (words.next()?.to_string(), words.next()?.to_string());
    let mut headers = BTreeMap::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// `promtool check metrics` on `text`: its findings, or a panic naming
/// them. promtool comes from `PROMTOOL`, else the PATH.
#[track_caller]
pub fn assert_promtool_accepts(text: &str) {
    let bin = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".to_string());
    let mut child = match Command::new(&bin)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
            "cannot run `{bin}`: not found. Install Prometheus's promtool \
             (sudo apt-get install prometheus) or point PROMTOOL at it"
        ),
        Err(err) => panic!("cannot run `{bin}`: {err}"),
    };
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("wait for promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}\n---- the text ----\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
