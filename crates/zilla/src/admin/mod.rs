//! The admin socket: a Unix socket through which `zilla sessions`, `zilla
//! disconnect` and `zilla dump` reach a running host.
//!
//! - `server`: the host's side: the socket's life (a stale file replaced, a
//!   live host's left alone), who may connect (`SO_PEERCRED`: the host's own
//!   uid only), and the three commands.
//! - `client`: the commands' side, as the command line runs them.
//! - `pcap`: a dump's segments as a classic pcap of synthetic TCP streams.
//!
//! The protocol is one JSON request line; the answer is one JSON line, or
//! for a dump a JSON line and then length-prefixed pcap chunks, ended by an
//! empty chunk and a JSON line with what was captured and dropped.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use zilla_engine::admin::DumpRequest;
use zilla_engine::properties::PROPERTY_ADMIN_SOCKET;

pub(crate) mod client;
mod pcap;
pub(crate) mod server;

/// Where the socket is when no property moves it: in the working
/// directory's `.zilla/`, where Zilla keeps its engine directory.
pub(crate) const DEFAULT_SOCKET: &str = ".zilla/admin.sock";

/// The socket `-P zilla.engine.admin.socket` names (the last one wins), or
/// the default; `None` when it is turned off (an empty value).
pub(crate) fn socket_path(properties: &[(String, String)]) -> Option<PathBuf> {
    let named = properties
        .iter()
        .rev()
        .find(|(name, _)| name == PROPERTY_ADMIN_SOCKET)
        .map(|(_, value)| value.as_str());
    match named {
        Some("") => None,
        Some(path) => Some(PathBuf::from(path)),
        None => Some(PathBuf::from(DEFAULT_SOCKET)),
    }
}

/// A command sent to the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub(crate) enum Request {
    /// The live sessions whose client id matches the glob.
    Sessions { client_id: Option<String> },
    /// End the sessions with this client id.
    Disconnect { client_id: String },
    /// Capture what `filter` selects, for a while or a number of packets.
    Dump {
        filter: DumpRequest,
        duration: Option<f64>,
        count: Option<u64>,
    },
}

/// The end of a dump.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DumpSummary {
    /// Packets written to the capture.
    pub(crate) captured: u64,
    /// Segments dropped because the reader fell behind.
    pub(crate) dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn property(value: &str) -> Vec<(String, String)> {
        vec![(PROPERTY_ADMIN_SOCKET.to_owned(), value.to_owned())]
    }

    #[test]
    fn the_socket_is_found_by_property_or_default() {
        assert_eq!(socket_path(&[]), Some(PathBuf::from(DEFAULT_SOCKET)));
        assert_eq!(
            socket_path(&property("/run/z.sock")),
            Some("/run/z.sock".into())
        );
        assert_eq!(socket_path(&property("")), None);
    }
}
