//! What the driver and the opening of a session share: the clock, the
//! upstream sockets, and how a session reads and writes them (buffers sized
//! to the traffic and released while idle, writes made at once when the
//! socket takes them). Apart from the state machine, so that neither of the
//! two imports the other's internals.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use zilla_engine::ByteStream;

/// The most a single read takes in (a busy connection's buffer size).
pub(super) const READ_CHUNK: usize = 8 * 1024;
/// A quiet connection's read buffer: pings and small messages fit.
pub(super) const SMALL_READ: usize = 512;

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

/// Room for the next read, sized to the traffic: a connection whose last
/// read was small (an idle device, a ping) keeps a small buffer, and one
/// whose reads fill the buffer grows to [`READ_CHUNK`]. An empty oversized
/// buffer is replaced, so tens of thousands of idle sessions do not each hold
/// a chunk that a burst once needed.
pub(super) fn make_room(buf: &mut BytesMut, last_read: usize) {
    let want = last_read.saturating_mul(2).clamp(SMALL_READ, READ_CHUNK);
    if buf.is_empty() && buf.capacity() > 4 * want {
        *buf = BytesMut::with_capacity(want);
    } else if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
}

thread_local! {
    /// This worker thread's buffer for the reads of sessions that hold none
    /// while they wait (see [`poll_read_lean`]).
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// Polls one read from `stream` into `buf`. A session waiting for input
/// holds no read buffer: an empty buffer is released when the read would
/// block, and the next read goes through this worker's scratch buffer and is
/// copied into one sized to what came. A busy session, whose reads find
/// bytes waiting, keeps reading straight into its buffer ([`make_room`]).
pub(super) fn poll_read_lean(
    stream: &mut ByteStream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    last_read: usize,
) -> Poll<io::Result<usize>> {
    if buf.capacity() == 0 {
        let scratched = SCRATCH.with(|scratch| {
            let mut scratch = scratch.try_borrow_mut().ok()?;
            let mut read = ReadBuf::new(&mut scratch[..]);
            Some(match Pin::new(&mut *stream).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let filled = read.filled();
                    buf.extend_from_slice(filled);
                    Poll::Ready(Ok(filled.len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            })
        });
        // The scratch buffer is in use further up this thread's stack (a
        // stream reading another session's): read the usual way.
        if let Some(polled) = scratched {
            return polled;
        }
    }
    make_room(buf, last_read);
    let polled = tokio_util::io::poll_read_buf(Pin::new(stream), cx, buf);
    if polled.is_pending() && buf.is_empty() {
        *buf = BytesMut::new();
    }
    polled
}

/// Writes what `stream` takes of `out` now, without waiting (a no-op
/// waker: a stream that would block is polled again, with the task's own,
/// by [`Driver::flush`]): true when all of it went; what went is consumed
/// when some is left.
pub(super) fn write_now(stream: &mut ByteStream, out: &mut BytesMut) -> io::Result<bool> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut written = 0;
    while written < out.len() {
        match Pin::new(&mut *stream).poll_write(&mut cx, &out[written..]) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => written += n,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => {
                out.advance(written);
                return Ok(false);
            }
        }
    }
    Ok(true)
}

pub(super) fn release_written(out: &mut BytesMut) {
    if out.len() <= SMALL_READ {
        *out = BytesMut::new();
    } else {
        out.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_buffers_follow_the_traffic() {
        let mut buf = BytesMut::new();
        make_room(&mut buf, 0);
        assert!(buf.capacity() >= SMALL_READ && buf.capacity() < READ_CHUNK);
        // Reads that fill the buffer grow it to a full chunk.
        make_room(&mut buf, READ_CHUNK);
        assert!(buf.capacity() >= READ_CHUNK);
        // Once the burst is over and the buffer is drained, it shrinks back.
        make_room(&mut buf, 40);
        assert!(buf.capacity() < READ_CHUNK / 2, "{}", buf.capacity());
        // Bytes still waiting are never dropped.
        buf.extend_from_slice(b"partial packet");
        make_room(&mut buf, 0);
        assert_eq!(&buf[..], b"partial packet");
        assert!(buf.capacity() - buf.len() >= SMALL_READ);
    }

    /// A write the socket takes whole goes at once; one it takes in part
    /// leaves the rest, and nothing is written twice or lost when the rest
    /// goes later (the slow path's `write_all`).
    #[tokio::test]
    async fn a_write_goes_at_once_or_leaves_its_rest() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (near, mut far) = tokio::io::duplex(16);
        let mut stream: ByteStream = Box::new(near);
        let mut out = BytesMut::from(&b"0123456789"[..]);
        assert!(write_now(&mut stream, &mut out).unwrap());
        let sent: Vec<u8> = (0..40).collect();
        let mut out = BytesMut::from(&sent[..]);
        assert!(!write_now(&mut stream, &mut out).unwrap());
        assert_eq!(&out[..], &sent[6..], "16 bytes of room: 10 + 6 went");
        let reader = tokio::spawn(async move {
            let mut got = vec![0; 50];
            far.read_exact(&mut got).await.map(|_| got)
        });
        stream.write_all(&out).await.unwrap();
        let got = reader.await.unwrap().unwrap();
        assert_eq!(&got[..10], b"0123456789");
        assert_eq!(&got[10..], &sent[..]);
    }
}
