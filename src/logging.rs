//! Logging for the binary: the filter, the format, colours, and a sink on stderr that never
//! takes the server down (issue 23). A log line that cannot be written (the reader of a pipe gone,
//! a full disk behind a redirect) is dropped and counted in `sixpn_log_write_errors_total`; it
//! never panics and never blocks a task that logs.
//!
//! A leaf: `main.rs` calls [`init_logging`] before anything else runs.

/// Tracing directives that silence hickory's per-query INFO logging (two lines per DNS query).
pub const LOG_FILTER: &str = "hickory_server=warn,hickory_net=warn,hickory_proto=warn";

/// How log lines are written: `text` for people, `json` (one object per line) for log
/// shippers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines; coloured only on a terminal without `NO_COLOR`.
    #[default]
    Text,
    /// One JSON object per line, never coloured.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" | "" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: use text or json")),
        }
    }
}

/// The tracing filter: `RUST_LOG` (default `info`). hickory-server logs two INFO lines per DNS
/// query, so unless `RUST_LOG` names hickory itself, hickory's crates are held to `warn` while
/// the filter is at `info` or quieter: their per-query lines then show only at `debug` (issue 13).
pub fn log_filter(rust_log: Option<&str>) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::LevelFilter;
    let text = rust_log.map(str::trim).filter(|t| !t.is_empty());
    let mut filter = text
        .and_then(|t| EnvFilter::try_new(t).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let names_hickory = text.is_some_and(|t| t.contains("hickory"));
    let verbose = filter
        .max_level_hint()
        .is_some_and(|level| level >= LevelFilter::DEBUG);
    if !names_hickory && !verbose {
        for directive in LOG_FILTER.split(',') {
            if let Ok(directive) = directive.parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    filter
}

/// Whether log lines on stderr get ANSI colours: only on a terminal, and never when `NO_COLOR`
/// is set to anything non-empty (<https://no-color.org>).
pub fn log_colours(no_color: Option<&std::ffi::OsStr>, stderr_is_terminal: bool) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Sets up logging on stderr for the binary: [`log_filter`] over `RUST_LOG`, the format from
/// `format` or else `SIXPN_LOG_FORMAT` (`text` by default), colours per [`log_colours`].
///
/// # Errors
/// An unknown format name in `SIXPN_LOG_FORMAT`.
pub fn init_logging(format: Option<LogFormat>) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let format = match format {
        Some(format) => format,
        None => match std::env::var("SIXPN_LOG_FORMAT") {
            Ok(text) => text
                .parse()
                .map_err(|e| anyhow::anyhow!("SIXPN_LOG_FORMAT: {e}"))?,
            Err(_) => LogFormat::Text,
        },
    };
    use tracing_subscriber::prelude::*;
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(|| LogSink)
        // Its own reports of a failed write go to stderr through `eprintln!`, which panics when
        // stderr is gone: the sink counts failures instead.
        .log_internal_errors(false);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(layer.json().with_ansi(false))
            .try_init()
            .map_err(|e| anyhow::anyhow!("setting up logging: {e}"))?,
        LogFormat::Text => registry
            .with(layer.with_ansi(log_colours(
                std::env::var_os("NO_COLOR").as_deref(),
                std::io::stderr().is_terminal(),
            )))
            .try_init()
            .map_err(|e| anyhow::anyhow!("setting up logging: {e}"))?,
    }
    let _ = FILTER.set(handle);
    Ok(())
}

/// The running filter, which [`set_filter`] replaces.
static FILTER: std::sync::OnceLock<
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
> = std::sync::OnceLock::new();

/// Replaces the log filter of a running process (the server's `[log] filter` at start and on
/// `SIGHUP`): `RUST_LOG`, when set, wins over `configured`; neither gives `info`. Does nothing
/// before [`init_logging`] (tests, library use). Returns the filter now in force.
pub fn set_filter(configured: Option<&str>) -> Option<String> {
    let handle = FILTER.get()?;
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = log_filter(rust_log.as_deref().or(configured));
    let text = filter.to_string();
    handle.reload(filter).ok()?;
    Some(text)
}

/// stderr for log lines: a line that cannot be written is dropped and counted, never retried and
/// never reported (there is nowhere left to report it). `SIGPIPE` is ignored in Rust programs,
/// so a reader that went away gives `EPIPE` here rather than killing the process.
struct LogSink;

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::io::stderr().lock().write_all(buf).is_err() {
            crate::metrics::count_log_write_error();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hickory_is_quiet_at_info() {
        // issue 13: `RUST_LOG=info` (what the README suggests) logged two lines per DNS query.
        for rust_log in [
            None,
            Some("info"),
            Some(""),
            Some("warn"),
            Some("sixpn=info"),
        ] {
            let filter = log_filter(rust_log).to_string();
            assert!(
                filter.contains("hickory_server=warn"),
                "{rust_log:?}: {filter}"
            );
        }
        // Asking for debug, or naming hickory, is obeyed.
        assert!(
            !log_filter(Some("debug"))
                .to_string()
                .contains("hickory_server=warn")
        );
        assert!(
            log_filter(Some("info,hickory_server=info"))
                .to_string()
                .contains("hickory_server=info")
        );
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(log_colours(None, true));
        assert!(!log_colours(None, false));
        assert!(!log_colours(Some(OsStr::new("1")), true));
        assert!(log_colours(Some(OsStr::new("")), true));
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
