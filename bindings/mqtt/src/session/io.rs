//! What the driver and the opening of a session share: the clock and the
//! upstream sockets. Apart from the state machine, so that neither of the
//! two imports the other's internals.

use std::time::Instant;

use bytes::BytesMut;
use zilla_engine::ByteStream;

/// The clock, read here only: the state machine is given `now`.
#[expect(
    clippy::disallowed_methods,
    reason = "the driver and the opening are the one place of the session that reads the clock"
)]
pub(super) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// One upstream's socket and read buffer.
pub(super) struct UpstreamIo {
    pub(super) stream: ByteStream,
    pub(super) read_buf: BytesMut,
    /// Bytes the last read from the broker brought (sizes the next one).
    pub(super) last_read: usize,
}
