//! Logging to stderr, as text or JSON lines, with the level from RUST_LOG.
//! On a terminal, text logs give way to a progress bar per node: the
//! periodic progress lines are left out, and the other lines print above
//! the bars.

use std::io::IsTerminal;

use tracing::{Level, Metadata};
use tracing_indicatif::IndicatifLayer;
use tracing_indicatif::filter::IndicatifFilter;
use tracing_subscriber::filter::{FilterFn, filter_fn};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Layer};

use crate::progress;
use crate::report::Format;

/// The most progress bars shown at once; a line counts the others.
const MAX_BARS: u64 = 16;

/// Installs the global subscriber. Stdout stays free for the report.
pub fn init(format: Format) {
    let (filter, ignored) = filter(std::env::var("RUST_LOG").ok().as_deref());
    let terminal = std::io::stderr().is_terminal();
    if shows_bars(format, terminal) {
        init_with_bars(filter);
    } else {
        init_with_lines(format, terminal, filter);
    }
    // Said once logging is up, so that it goes where the logs go.
    if let Some(why) = ignored {
        tracing::warn!("RUST_LOG ignored, logging at info: {why}");
    }
}

/// Text or JSON lines on stderr, one per event.
fn init_with_lines(format: Format, terminal: bool, filter: EnvFilter) {
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(terminal)
        .with_target(false);
    let lines = match format {
        Format::Text => lines.boxed(),
        Format::Json => lines.json().flatten_event(true).boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(lines.with_filter(http_client_cap()))
        .init();
}

/// Whether progress shows as bars rather than log lines: only for people
/// reading text logs on a terminal. A log collector (`kubectl logs`, a
/// pipe, a file) or JSON logs get the lines.
pub fn shows_bars(format: Format, terminal: bool) -> bool {
    terminal && format == Format::Text
}

/// Text logs on a terminal, printed above a progress bar per node (the
/// nodes' spans that ask for one), without the progress lines.
fn init_with_bars(filter: EnvFilter) {
    let bars = IndicatifLayer::new()
        .with_progress_style(progress::bar_style())
        .with_max_progress_bars(MAX_BARS, Some(progress::more_bars_style()));
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(bars.get_stderr_writer())
        .with_ansi(true)
        .with_target(false)
        .with_filter(filter_fn(|meta| meta.target() != progress::LINE_TARGET))
        .with_filter(http_client_cap());
    tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .with(bars.with_filter(IndicatifFilter::new(false)))
        .init();
}

/// The level filter from `rust_log` (RUST_LOG's value), else `info`; and
/// why `rust_log` was ignored, if it was. Empty, it counts as unset (as a
/// filter it would keep only errors); a filter that cannot be parsed is a
/// mistake to say, not a reason to log otherwise than by default.
fn filter(rust_log: Option<&str>) -> (EnvFilter, Option<String>) {
    let info = || EnvFilter::new("info");
    match rust_log.map(str::trim) {
        None | Some("") => (info(), None),
        Some(text) => match EnvFilter::try_new(text) {
            Ok(filter) => (filter, None),
            Err(err) => (info(), Some(format!("{text:?} is not a filter: {err}"))),
        },
    }
}

/// Keeps the HTTP client that pushes metrics at `debug` at most, whatever
/// RUST_LOG says: at `trace` it dumps each request, the Pushgateway's
/// `Authorization` header included. It is a filter of its own, which an
/// event must pass besides RUST_LOG's, because no directive added to
/// RUST_LOG's can do it: a more specific one (`ureq_proto::util=trace`)
/// outranks it.
fn http_client_cap() -> FilterFn<impl Fn(&Metadata<'_>) -> bool> {
    filter_fn(|meta| *meta.level() <= Level::DEBUG || !is_http_client(meta.target()))
}

/// Whether `target` is the HTTP client's (`ureq`), its protocol crate's
/// (`ureq_proto`), or one of their modules'.
fn is_http_client(target: &str) -> bool {
    HTTP_CLIENT_TARGETS.iter().any(|crate_name| {
        target
            .strip_prefix(crate_name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// The log targets of the HTTP client (`ureq`) and its protocol crate.
const HTTP_CLIENT_TARGETS: [&str; 2] = ["ureq", "ureq_proto"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http_client_is_capped_at_debug_in_every_module_and_nothing_else() {
        for target in [
            "ureq",
            "ureq_proto",
            "ureq_proto::util",
            "ureq::unversioned::transport",
        ] {
            assert!(is_http_client(target), "{target}");
        }
        for target in [
            "redis_janitor::push",
            "ureqx",
            "ureq_protocol",
            "my_ureq",
            "log",
        ] {
            assert!(!is_http_client(target), "{target}");
        }
    }

    #[test]
    fn a_rust_log_that_is_no_filter_is_ignored_and_said_so() {
        for (rust_log, ignored) in [
            (None, false),
            (Some(""), false),
            (Some("debug"), false),
            (Some("info,redis_janitor=trace"), false),
            (Some("warn["), true),
            (Some("redis_janitor=loud"), true),
        ] {
            let (_, why) = filter(rust_log);
            assert_eq!(why.is_some(), ignored, "{rust_log:?}: {why:?}");
        }
        // Empty, it is the default, not a filter that keeps only errors.
        let (empty, _) = filter(Some(""));
        assert_eq!(
            empty.max_level_hint(),
            Some(tracing_subscriber::filter::LevelFilter::INFO)
        );
    }

    #[test]
    fn bars_only_for_text_logs_on_a_terminal() {
        assert!(shows_bars(Format::Text, true));
        // kubectl logs, a pipe, a file: lines.
        assert!(!shows_bars(Format::Text, false));
        // JSON logs stay one object per line, for machines.
        assert!(!shows_bars(Format::Json, true));
        assert!(!shows_bars(Format::Json, false));
    }
}
