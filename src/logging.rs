//! Logging setup: human text or one JSON object per line on stderr, filtered by LOG_LEVEL. Owns the
//! subscriber only; what is logged is each module's business (and never a secret).

use crate::config::{LogFormat, LogSettings};
use tracing_subscriber::EnvFilter;

/// Directives that hold whatever LOG_LEVEL says. bollard logs every request body at debug and
/// trace, and a runner container's create body holds its JIT config; the HTTP crates under it
/// and reqwest log connections and headers. netlink warns about every attribute newer than
/// itself: noise, not news.
pub const FIXED_DIRECTIVES: &[&str] = &[
    "bollard=info",
    "hyper=info",
    "hyper_util=info",
    "reqwest=info",
    "netlink_packet_route=error",
];

/// The filter LOG_LEVEL asks for, with [`FIXED_DIRECTIVES`] on top.
pub fn filter(level: &str) -> EnvFilter {
    let mut filter = EnvFilter::builder()
        .parse(level)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    for d in FIXED_DIRECTIVES {
        filter = filter.add_directive(d.parse().expect("a valid directive"));
    }
    filter
}

pub fn init(settings: &LogSettings) {
    let filter = filter(&settings.level);
    // Colours only for a person at a terminal: `docker logs`, files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A second init (tests calling into the library twice) keeps the first subscriber.
    let _ = match settings.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_or_trace_never_reaches_the_crates_that_log_request_bodies() {
        for level in ["debug", "trace", "bollard=trace,debug"] {
            let f = filter(level).to_string();
            assert!(f.contains("bollard=info"), "{level}: {f}");
            assert!(!f.contains("bollard=trace"), "{level}: {f}");
        }
    }
}
