//! Logging setup: human text or one JSON object per line on stderr, filtered by LOG_LEVEL. Owns the
//! subscriber only; what is logged is each module's business (and never a secret).

use crate::config::{LogFormat, LogSettings};
use tracing_subscriber::EnvFilter;

pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::builder()
        .parse(&settings.level)
        .unwrap_or_else(|_| EnvFilter::new("info"))
        // It warns about every netlink attribute newer than itself: noise, not news.
        .add_directive(
            "netlink_packet_route=error"
                .parse()
                .expect("a valid directive"),
        );
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
