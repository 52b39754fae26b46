//! The push of a run's metrics to a Prometheus Pushgateway: one HTTP PUT of
//! the text format to the run's group, `URL/metrics/job/redis-janitor/
//! instance/<name>` (a dry run's: `.../dry_run/true`), so that each run
//! replaces every series of the previous run of its group, and a dry run
//! never replaces a real run's.
//!
//! The push comes after the report, at the end of every run, and is the
//! run's last word: a failed push (no answer, a timeout, an HTTP error) is
//! logged as one warning and never changes the exit code. Credentials go in
//! the `Authorization` header only: the URL the job logs has none, and the
//! password is never logged.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use tracing::{debug, info, warn};
use url::Url;

use crate::credentials::without_credentials;
use crate::error::{Error, one_line};
use crate::exit::Stop;
use crate::metrics::{self, TEXT_FORMAT};
use crate::topology::Source;

/// The default `--pushgateway-timeout`: for the whole push, from connecting
/// to the end of the answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `job` of the grouping key.
const JOB: &str = "redis-janitor";

/// The most of a Pushgateway's answer a warning repeats.
const MAX_ANSWER: usize = 500;

/// Where and how to push, checked before any connection. (No `Debug`: it
/// holds the password.)
#[derive(Clone)]
pub struct Gateway {
    /// The Pushgateway's base URL, without credentials.
    url: Url,
    /// The grouping key's `instance`.
    instance: String,
    /// Basic auth, if any.
    auth: Option<BasicAuth>,
    /// For the whole push.
    timeout: Duration,
}

/// Basic auth credentials.
#[derive(Clone)]
struct BasicAuth {
    username: String,
    password: String,
}

impl BasicAuth {
    /// The `Authorization` header's value.
    fn header(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!("Basic {}", STANDARD.encode(pair))
    }
}

/// What the user gave for the push.
pub struct Options<'a> {
    /// `--pushgateway`: `http[s]://[user[:password]@]host[:port][/path]`.
    pub url: &'a str,
    /// `--pushgateway-instance`; `None`: the Redis address.
    pub instance: Option<String>,
    /// `--pushgateway-username`: replaces the URL's user.
    pub username: Option<String>,
    /// The password from `--pushgateway-password-file`: replaces the URL's.
    pub password: Option<String>,
    /// `--pushgateway-timeout`.
    pub timeout: Duration,
}

impl Gateway {
    /// Checks `options`: the URL must be an `http://` or `https://` URL with
    /// a host, and neither a query nor a fragment. The instance defaults to
    /// `source`'s address (see [`default_instance`]). A usage error never
    /// repeats the URL, which may hold a password.
    pub fn new(options: Options, source: &Source) -> Result<Gateway, Error> {
        let usage = |why: &str| Error::Usage(format!("invalid --pushgateway URL: {why}"));
        let mut url = Url::parse(options.url.trim()).map_err(|err| usage(&err.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(usage(&format!(
                "the scheme is {}:, expected http: or https:",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(usage("it names no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(usage(
                "a Pushgateway URL takes no query (?) nor fragment (#)",
            ));
        }
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8()
                .map(|text| text.into_owned())
                .map_err(|_| usage("its user or password is not UTF-8 once decoded"))
        };
        let username = match options.username {
            Some(username) => username,
            None => decode(url.username())?,
        };
        let password = match options.password {
            Some(password) => password,
            None => decode(url.password().unwrap_or_default())?,
        };
        // Cannot fail on an http(s) URL with a host.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Ok(Gateway {
            url,
            instance: options.instance.unwrap_or_else(|| default_instance(source)),
            auth: (!username.is_empty() || !password.is_empty())
                .then_some(BasicAuth { username, password }),
            timeout: options.timeout,
        })
    }

    /// The URL of the run's group: `.../metrics/job/redis-janitor/instance/
    /// <instance>`, and `/dry_run/true` for a dry run. Values are escaped
    /// as path segments; one that no path segment can carry takes the
    /// Pushgateway's base64 form (`instance@base64/<url-safe base64>`): one
    /// holding `/`, an empty one, and `.` and `..`, which a URL's path
    /// resolves away (the segment, or the one before it, would be gone).
    pub fn group(&self, dry_run: bool) -> Url {
        let mut url = self.url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(["metrics", "job", JOB]);
            match self.instance.as_str() {
                "" => segments.extend(["instance@base64", "="]),
                value if value.contains('/') || matches!(value, "." | "..") => {
                    segments.extend(["instance@base64", &URL_SAFE.encode(value)])
                }
                value => segments.extend(["instance", value]),
            };
            if dry_run {
                segments.extend(["dry_run", "true"]);
            }
        }
        url
    }

    /// PUTs `text`, the metrics in the text format, to the run's group:
    /// its series replace all of the group's. Redirects are not followed:
    /// a 3xx is a failed push that says its status and where it pointed.
    pub fn put(&self, text: &str, dry_run: bool) -> Result<(), Failure> {
        let group = self.group(dry_run);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(self.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(proxy(&group, env_var)?)
            .user_agent(concat!("redis-janitor/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let mut request = agent
            .put(group.as_str())
            .header("Content-Type", TEXT_FORMAT);
        if let Some(auth) = &self.auth {
            request = request.header("Authorization", auth.header());
        }
        let mut response = request.send(text).map_err(|err| match err {
            ureq::Error::Timeout(_) => Failure::Timeout(self.timeout),
            err => Failure::Transport(err),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // Logged, so without any credentials it may carry.
        let location = (response.headers().get("Location")).map(|location| {
            printable(&without_credentials(&String::from_utf8_lossy(
                location.as_bytes(),
            )))
        });
        let answer = response
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .unwrap_or_default();
        Err(Failure::Status {
            status: status.as_u16(),
            location,
            answer: printable(&answer),
        })
    }
}

/// `text` as a log line may show it: on one line, shortened to
/// [`MAX_ANSWER`] characters, with every control character escaped (as
/// `\u{1b}`), so that what a server answers cannot move the cursor, recolour
/// or rewrite the terminal that shows the log.
fn printable(text: &str) -> String {
    let mut line = String::new();
    for c in one_line(text).chars().take(MAX_ANSWER) {
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    line
}

/// The proxy for a push to `url`, as curl chooses it from the environment
/// (`var` reads it): `http_proxy` (or `HTTP_PROXY`) for an `http://` URL,
/// `https_proxy` (or `HTTPS_PROXY`) for an `https://` one, and `all_proxy`
/// (or `ALL_PROXY`) for either when the scheme's own is not set; none when
/// the URL's host is in `no_proxy` (or `NO_PROXY`). The lower case wins,
/// and an empty variable counts as not set.
fn proxy(url: &Url, var: impl Fn(&str) -> Option<String>) -> Result<Option<ureq::Proxy>, Failure> {
    // The variable that is set, by the name it was set under, and its value.
    let set = |name: &str| {
        [name.to_string(), name.to_ascii_uppercase()]
            .into_iter()
            .find_map(|name| {
                var(&name)
                    .filter(|value| !value.trim().is_empty())
                    .map(|value| (name, value))
            })
    };
    let scheme = url.scheme().to_ascii_lowercase();
    let Some((name, value)) = set(&format!("{scheme}_proxy")).or_else(|| set("all_proxy")) else {
        return Ok(None);
    };
    let host = url.host_str().unwrap_or_default();
    if set("no_proxy").is_some_and(|(_, list)| is_no_proxy(host, &list)) {
        return Ok(None);
    }
    ureq::Proxy::new(value.trim())
        .map(Some)
        .map_err(|_| Failure::Proxy(name))
}

/// Whether curl's `no_proxy` `list` exempts `host`: `*` exempts every host;
/// another entry (`example.com`, `.example.com` or `*.example.com`, or an
/// IP address) exempts the host it names and its subdomains. Names compare
/// without case, IPv6 addresses without their brackets.
fn is_no_proxy(host: &str, list: &str) -> bool {
    let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
    let entries = list.split([',', ' ']).filter(|entry| !entry.is_empty());
    entries.map(str::to_ascii_lowercase).any(|entry| {
        let domain =
            (entry.trim_start_matches("*.").trim_start_matches('.')).trim_matches(['[', ']']);
        entry == "*"
            || host == domain
            || (!domain.is_empty()
                && (host.strip_suffix(domain)).is_some_and(|rest| rest.ends_with('.')))
    })
}

/// An environment variable, if it is set and Unicode.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The default grouping `instance`: the Redis address without credentials:
/// the first seed's `host:port`, or the Sentinels' service name.
pub fn default_instance(source: &Source) -> String {
    match source {
        Source::Direct(seeds) => seeds.first().map(|s| s.address()).unwrap_or_default(),
        Source::Sentinel(sentinels) => sentinels.service.clone(),
    }
}

/// Why a push failed.
#[derive(Debug)]
pub enum Failure {
    /// The metrics could not be encoded.
    Encode(prometheus::Error),
    /// No answer: refused, unreachable, TLS.
    Transport(ureq::Error),
    /// No (whole) answer within `--pushgateway-timeout`.
    Timeout(Duration),
    /// The proxy variable this names (its value is not repeated: it may
    /// hold a password) is not a proxy URL.
    Proxy(String),
    /// The Pushgateway answered with an error status, or a redirect.
    Status {
        /// The HTTP status.
        status: u16,
        /// Where a redirect pointed, printable.
        location: Option<String>,
        /// What it said, printable on one line, shortened.
        answer: String,
    },
}

impl Failure {
    /// The HTTP status, if the Pushgateway answered.
    fn status(&self) -> Option<u16> {
        match self {
            Failure::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Encode(err) => write!(f, "the metrics could not be encoded: {err}"),
            Failure::Transport(err) => write!(f, "no answer: {}", one_line(&err.to_string())),
            Failure::Timeout(timeout) => write!(
                f,
                "no answer within {} (--pushgateway-timeout)",
                humantime::format_duration(*timeout)
            ),
            Failure::Proxy(name) => write!(f, "{name} is not a proxy URL"),
            Failure::Status {
                status,
                location,
                answer,
            } => {
                write!(f, "HTTP {status}")?;
                if let Some(location) = location {
                    write!(f, " to {location}")?;
                }
                if !answer.is_empty() {
                    write!(f, ": {answer}")?;
                }
                Ok(())
            }
        }
    }
}

/// Pushes `run`'s metrics to `gateway`, and logs how it went: one info
/// line, or one warning. Never fails: the run's exit code is its own. The
/// push blocks, so it runs on a thread of its own while this waits for it
/// and for `signal`: a signal during the push abandons it (the run is over,
/// its report printed).
pub async fn push(gateway: &Gateway, run: &metrics::Run<'_>, signal: impl Future<Output = Stop>) {
    let dry_run = run.task.dry_run;
    let group = gateway.group(dry_run);
    let text = match metrics::text(run) {
        Ok(text) => text,
        Err(err) => return log_failure(&group, &Failure::Encode(err)),
    };
    debug!(pushgateway = %group, "pushing the metrics");
    let gateway = gateway.clone();
    let put = tokio::task::spawn_blocking(move || gateway.put(&text, dry_run));
    tokio::select! {
        pushed = put => {
            // A panic of the push is the process's, as before it had a thread.
            match pushed.unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic())) {
                Ok(()) => info!(pushgateway = %group, "metrics pushed"),
                Err(failure) => log_failure(&group, &failure),
            }
        }
        signal = signal => warn!(
            pushgateway = %group,
            signal = ?signal,
            "the push is abandoned: a signal came after the run"
        ),
    }
}

/// Logs why the push to `group` failed, as one warning.
fn log_failure(group: &Url, failure: &Failure) {
    warn!(
        pushgateway = %group,
        status = failure.status(),
        error = %failure,
        "the metrics could not be pushed; the exit code is the run's"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gateway of `redis-janitor run ARGS`.
    fn gateway(args: &[&str]) -> Result<Gateway, Error> {
        use clap::Parser;
        let cli = crate::cli::Cli::parse_from(["redis-janitor", "run"].iter().chain(args));
        let crate::cli::Command::Run(args) = cli.command else {
            unreachable!("a run")
        };
        let settings = args.settings(None)?;
        Ok(args.pushgateway(&settings.source)?.expect("--pushgateway"))
    }

    fn usage(args: &[&str]) -> String {
        match gateway(args) {
            Err(Error::Usage(message)) => message,
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("{args:?} accepted"),
        }
    }

    #[test]
    fn the_group_is_the_job_and_the_redis_address_and_a_dry_run_has_its_own() {
        let g = gateway(&[
            "--url",
            "redis://u:pw@h:6380/2",
            "--pushgateway",
            "http://p:9091",
        ]);
        let g = g.unwrap();
        assert_eq!(
            g.group(false).as_str(),
            "http://p:9091/metrics/job/redis-janitor/instance/h:6380"
        );
        assert_eq!(
            g.group(true).as_str(),
            "http://p:9091/metrics/job/redis-janitor/instance/h:6380/dry_run/true"
        );
        assert!(g.auth.is_none());
        assert_eq!(g.timeout, DEFAULT_TIMEOUT);
        // A cluster's first seed; a path prefix (a Pushgateway behind a
        // proxy) is kept.
        let g = gateway(&[
            "--url",
            "redis://a:1,b:2",
            "--pushgateway",
            "https://p/gw/",
            "--pushgateway-timeout",
            "3s",
        ])
        .unwrap();
        assert_eq!(
            g.group(false).as_str(),
            "https://p/gw/metrics/job/redis-janitor/instance/a:1"
        );
        assert_eq!(g.timeout, Duration::from_secs(3));
        // Sentinel: the service.
        let g = gateway(&[
            "--url",
            "redis+sentinel://s1:26379,s2/mymaster/1",
            "--pushgateway",
            "http://p:9091",
        ])
        .unwrap();
        assert_eq!(g.instance, "mymaster");
    }

    #[test]
    fn an_instance_with_a_slash_empty_or_dots_takes_the_base64_form_others_are_escaped() {
        let group = |instance: &str| {
            let g = gateway(&[
                "--pushgateway",
                "http://p:9091",
                "--pushgateway-instance",
                instance,
            ]);
            let url = g.unwrap().group(false);
            let path = url.path().to_string();
            path.strip_prefix("/metrics/job/redis-janitor/")
                .unwrap()
                .to_string()
        };
        assert_eq!(group("prod/cache"), "instance@base64/cHJvZC9jYWNoZQ==");
        assert_eq!(group(""), "instance@base64/=");
        assert_eq!(group("."), "instance@base64/Lg==");
        assert_eq!(group(".."), "instance@base64/Li4=");
        assert_eq!(group("..."), "instance/...");
        assert_eq!(group(".a"), "instance/.a");
        assert_eq!(group("a b%?#"), "instance/a%20b%25%3F%23");
        assert_eq!(group("é"), "instance/%C3%A9");
    }

    #[test]
    fn basic_auth_comes_from_the_url_and_the_flags_win() {
        let g = gateway(&["--pushgateway", "http://us%3Aer:p%40ss@p:9091/"]).unwrap();
        let auth = g.auth.as_ref().unwrap();
        assert_eq!(
            (auth.username.as_str(), auth.password.as_str()),
            ("us:er", "p@ss")
        );
        assert_eq!(
            auth.header(),
            format!("Basic {}", STANDARD.encode("us:er:p@ss"))
        );
        // The URL pushed to, and logged, has no credentials.
        assert_eq!(
            g.group(false).as_str(),
            "http://p:9091/metrics/job/redis-janitor/instance/127.0.0.1:6379"
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let file = file.to_str().unwrap();
        let g = gateway(&[
            "--pushgateway",
            "http://u:from-url@p:9091",
            "--pushgateway-password-file",
            file,
        ])
        .unwrap();
        let auth = g.auth.unwrap();
        assert_eq!(
            (auth.username.as_str(), auth.password.as_str()),
            ("u", "from-file")
        );
        let g = gateway(&[
            "--pushgateway",
            "http://u:from-url@p:9091",
            "--pushgateway-username",
            "v",
        ])
        .unwrap();
        let auth = g.auth.unwrap();
        assert_eq!(
            (auth.username.as_str(), auth.password.as_str()),
            ("v", "from-url")
        );
    }

    #[test]
    fn a_bad_url_is_a_usage_error_that_never_repeats_the_password() {
        for (url, why) in [
            ("not a url", "relative URL without a base"),
            ("ftp://u:secret@p/", "the scheme is ftp:"),
            ("redis://u:secret@p:9091", "the scheme is redis:"),
            ("http://u:secret@p:9091/?a=b", "no query"),
            ("http://u:secret@p:9091/#x", "no query"),
            ("http://u:secret@[::1:9091/", "invalid IPv6"),
            ("http://u:secret@:9091/", "empty host"),
        ] {
            let message = usage(&["--pushgateway", url]);
            assert!(
                message.starts_with("invalid --pushgateway URL: "),
                "{message}"
            );
            assert!(message.contains(why), "{url}: {message}");
            assert!(!message.contains("secret"), "{message}");
        }
        let message = usage(&[
            "--pushgateway",
            "http://p:9091",
            "--pushgateway-password-file",
            "/nonexistent/pw",
        ]);
        assert!(message.contains("/nonexistent/pw"), "{message}");
    }

    #[test]
    fn a_failure_says_the_status_and_the_answer_on_one_line() {
        let failure = Failure::Status {
            status: 500,
            location: None,
            answer: printable("it\nbroke "),
        };
        assert_eq!(failure.to_string(), "HTTP 500: it broke");
        assert_eq!(failure.status(), Some(500));
        let failure = Failure::Status {
            status: 308,
            location: Some("https://p/".into()),
            answer: String::new(),
        };
        assert_eq!(failure.to_string(), "HTTP 308 to https://p/");
        assert_eq!(failure.status(), Some(308));
    }

    #[test]
    fn an_answer_is_printable_on_one_line_and_shortened() {
        assert_eq!(
            printable("\x1b[2J\x1b]0;owned\x07 \u{9b}31m\tok\r\n"),
            "\\u{1b}[2J\\u{1b}]0;owned\\u{7} \\u{9b}31m ok"
        );
        assert_eq!(printable("é \"quoted\" \\"), "é \"quoted\" \\");
        assert_eq!(printable(&"x".repeat(2 * MAX_ANSWER)).len(), MAX_ANSWER);
    }

    /// The proxy [`proxy`] picks for `url` in an environment of `vars`, by
    /// its host and port.
    fn proxy_for(url: &str, vars: &[(&str, &str)]) -> Option<String> {
        let var = |name: &str| {
            let found = vars.iter().find(|(var, _)| *var == name);
            found.map(|(_, value)| value.to_string())
        };
        let proxy = proxy(&Url::parse(url).unwrap(), var).unwrap();
        proxy.map(|proxy| format!("{}:{}", proxy.host(), proxy.port()))
    }

    #[test]
    fn the_proxy_is_the_urls_schemes_then_all_proxy_as_curl_chooses() {
        let all = [
            ("HTTP_PROXY", "http://h:1"),
            ("HTTPS_PROXY", "http://s:2"),
            ("ALL_PROXY", "http://a:3"),
        ];
        assert_eq!(proxy_for("http://p:9091", &all).as_deref(), Some("h:1"));
        assert_eq!(proxy_for("https://p", &all).as_deref(), Some("s:2"));
        // HTTPS_PROXY is never an http:// URL's; ALL_PROXY stands in for the
        // scheme's own.
        assert_eq!(
            proxy_for("http://p:9091", &all[1..]).as_deref(),
            Some("a:3")
        );
        assert_eq!(proxy_for("http://p:9091", &all[1..2]), None);
        assert_eq!(proxy_for("https://p", &all[..1]), None);
        // Lower case first; an empty variable is not set.
        let cases = [
            ("http_proxy", "http://lower:4"),
            ("HTTP_PROXY", "http://upper:5"),
        ];
        assert_eq!(proxy_for("http://p", &cases).as_deref(), Some("lower:4"));
        let empty = [("http_proxy", " "), ("HTTP_PROXY", "http://upper:5")];
        assert_eq!(proxy_for("http://p", &empty).as_deref(), Some("upper:5"));
        assert_eq!(proxy_for("http://p", &[]), None);
        // A bad one is named, its value never repeated.
        let bad = proxy(&Url::parse("http://p").unwrap(), |name: &str| {
            (name == "all_proxy").then(|| "nope://u:secret@x".to_string())
        });
        let message = bad.expect_err("a bad proxy").to_string();
        assert_eq!(message, "all_proxy is not a proxy URL");
        // By the name it was set under.
        let bad = proxy(&Url::parse("http://p").unwrap(), |name: &str| {
            (name == "HTTP_PROXY").then(|| "not a url".to_string())
        });
        let message = bad.expect_err("a bad proxy").to_string();
        assert_eq!(message, "HTTP_PROXY is not a proxy URL");
    }

    #[test]
    fn no_proxy_exempts_its_hosts_and_their_subdomains() {
        let exempts = |no_proxy: &str, url: &str| {
            let vars = [("HTTP_PROXY", "http://h:1"), ("no_proxy", no_proxy)];
            proxy_for(url, &vars).is_none()
        };
        assert!(exempts("*", "http://p:9091"));
        assert!(exempts("localhost, 127.0.0.1", "http://127.0.0.1:9091"));
        assert!(exempts("example.com", "http://gw.Example.com"));
        assert!(exempts(".example.com", "http://gw.example.com"));
        assert!(exempts("*.example.com", "http://example.com"));
        assert!(exempts("::1", "http://[::1]:9091"));
        assert!(exempts("[::1]", "http://[::1]:9091"));
        assert!(!exempts("example.com", "http://badexample.com"));
        assert!(!exempts("gw.example.com", "http://example.com"));
        assert!(!exempts("", "http://p"));
        assert!(!exempts(".", "http://p"));
        assert!(!exempts("127.0.0.1", "http://127.0.0.10"));
    }
}
