//! Logging to stderr, as text or JSON lines, with the level from RUST_LOG.
//! On a terminal, text logs give way to a progress bar per node: the
//! periodic progress lines are left out, and the other lines print above
//! the bars.

use std::io::IsTerminal;

use tracing_indicatif::IndicatifLayer;
use tracing_indicatif::filter::IndicatifFilter;
use tracing_subscriber::filter::{LevelFilter, filter_fn};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Layer};

use crate::progress;
use crate::report::Format;

/// The most progress bars shown at once; a line counts the others.
const MAX_BARS: u64 = 16;

/// Installs the global subscriber. Stdout stays free for the report.
pub fn init(format: Format) {
    let terminal = std::io::stderr().is_terminal();
    if shows_bars(format, terminal) {
        init_with_bars();
        return;
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(terminal)
        .with_target(false);
    match format {
        Format::Text => builder.init(),
        Format::Json => builder.json().flatten_event(true).init(),
    }
}

/// Whether progress shows as bars rather than log lines: only for people
/// reading text logs on a terminal. A log collector (`kubectl logs`, a
/// pipe, a file) or JSON logs get the lines.
pub fn shows_bars(format: Format, terminal: bool) -> bool {
    terminal && format == Format::Text
}

/// Text logs on a terminal, printed above a progress bar per node (the
/// nodes' spans that ask for one), without the progress lines.
fn init_with_bars() {
    let bars = IndicatifLayer::new()
        .with_progress_style(progress::bar_style())
        .with_max_progress_bars(MAX_BARS, Some(progress::more_bars_style()));
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(bars.get_stderr_writer())
        .with_ansi(true)
        .with_target(false)
        .with_filter(filter_fn(|meta| meta.target() != progress::LINE_TARGET));
    tracing_subscriber::registry()
        .with(filter())
        .with(lines)
        .with(bars.with_filter(IndicatifFilter::new(false)))
        .init();
}

/// The level filter: RUST_LOG, else `info`; the HTTP client that pushes
/// metrics logs at `debug` at most, whatever RUST_LOG says: at `trace` it
/// dumps each request, the Pushgateway's `Authorization` header included.
fn filter() -> EnvFilter {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if matches!(filter.max_level_hint(), Some(level) if level <= LevelFilter::DEBUG) {
        return filter;
    }
    HTTP_CLIENT_TARGETS.iter().fold(filter, |filter, target| {
        filter.add_directive(
            format!("{target}=debug")
                .parse()
                .expect("a valid directive"),
        )
    })
}

/// The log targets of the HTTP client (`ureq`) and its protocol crate.
const HTTP_CLIENT_TARGETS: [&str; 2] = ["ureq", "ureq_proto"];

#[cfg(test)]
mod tests {
    use super::*;

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
