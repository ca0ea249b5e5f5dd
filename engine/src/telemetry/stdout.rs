//! The `stdout` exporter, the engine's built-in [`Exporter`].
//!
//! Only the exporter itself is here; its factory is registered by the
//! [registry](crate::registry), so that telemetry never imports the registry.

use std::io::Write as _;

use super::{Event, Exporter};

/// The `stdout` exporter: one line per event,
/// `<time> <LEVEL> <namespace>.<component> <EVENT> <message>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdoutExporter;

impl Exporter for StdoutExporter {
    fn export(&self, event: &Event<'_>) {
        let line = format_event(event);
        let mut stdout = std::io::stdout().lock();
        // A closed stdout must not take the proxy down; the event is simply lost.
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }
}

/// The stdout exporter's line for `event`, with line breaks escaped so that an
/// event is always exactly one line.
pub fn format_event(event: &Event<'_>) -> String {
    let message = event.message.replace('\n', "\\n");
    format!(
        "{} {} {}.{} {} {}",
        humantime::format_rfc3339_millis(event.timestamp),
        event.level,
        event.namespace,
        event.component,
        event.name,
        message
    )
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use tracing::Level;

    use super::*;

    #[test]
    fn stdout_line_is_one_line() {
        let event = Event {
            timestamp: SystemTime::UNIX_EPOCH,
            level: Level::WARN,
            namespace: "ns",
            component: "north_tcp_server",
            name: "TCP_ACCEPT_FAILED",
            message: "accept failed:\nEMFILE",
        };
        assert_eq!(
            format_event(&event),
            "1970-01-01T00:00:00.000Z WARN ns.north_tcp_server TCP_ACCEPT_FAILED accept failed:\\nEMFILE"
        );
    }
}
