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
use tracing::{info, warn};
use url::Url;

use crate::error::{Error, one_line};
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
    /// as path segments; one holding `/`, or empty, takes the Pushgateway's
    /// base64 form (`instance@base64/<url-safe base64>`).
    pub fn group(&self, dry_run: bool) -> Url {
        let mut url = self.url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(["metrics", "job", JOB]);
            match self.instance.as_str() {
                "" => segments.extend(["instance@base64", "="]),
                value if value.contains('/') => {
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
    /// its series replace all of the group's.
    pub fn put(&self, text: &str, dry_run: bool) -> Result<(), Failure> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(self.timeout))
            .http_status_as_error(false)
            .user_agent(concat!("redis-janitor/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let mut request = agent
            .put(self.group(dry_run).as_str())
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
        let answer = response
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .unwrap_or_default();
        Err(Failure::Status {
            status: status.as_u16(),
            answer: one_line(&answer).chars().take(MAX_ANSWER).collect(),
        })
    }
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
    /// The Pushgateway answered with an error status.
    Status {
        /// The HTTP status.
        status: u16,
        /// What it said, on one line, shortened.
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
            Failure::Status { status, answer } => write!(f, "HTTP {status}: {answer}"),
        }
    }
}

/// Pushes `run`'s metrics to `gateway`, and logs how it went: one info
/// line, or one warning. Never fails: the run's exit code is its own.
pub fn push(gateway: &Gateway, run: &metrics::Run) {
    let dry_run = run.task.dry_run;
    let group = gateway.group(dry_run);
    let pushed = metrics::text(run)
        .map_err(Failure::Encode)
        .and_then(|text| gateway.put(&text, dry_run));
    match pushed {
        Ok(()) => info!(pushgateway = %group, "metrics pushed"),
        Err(failure) => warn!(
            pushgateway = %group,
            status = failure.status(),
            error = %failure,
            "the metrics could not be pushed; the exit code is the run's"
        ),
    }
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
    fn an_instance_with_a_slash_or_empty_takes_the_base64_form_others_are_escaped() {
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
            answer: one_line("it\nbroke "),
        };
        assert_eq!(failure.to_string(), "HTTP 500: it broke");
        assert_eq!(failure.status(), Some(500));
    }
}
