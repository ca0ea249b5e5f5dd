//! Zilla's `stream.*` metrics, for bindings that own byte streams (tcp),
//! and [`MeteredStream`], the wrapper that counts them.
//!
//! Zilla counts frames on the two halves of every stream: a binding *sends*
//! the stream it opens toward the next hop and *receives* the reply. For a
//! tcp binding that means, per connection, one stream opened each way;
//! bytes read from the socket are data the binding *sends* on, and bytes
//! written to the socket are data it *received*. The names and this reading
//! are Zilla's, so that dashboards built for Zilla show the same numbers.
//!
//! Each connection ends exactly once, counted by who ended it first: the
//! peer's FIN (`closes.sent`: the binding passes the end on), the pipeline
//! closing it (`closes.received`), or a socket error (`errors.sent`).
//! `errors.received` (an abort coming from the pipeline) exists for
//! compatibility; the pipeline here can only close a stream, so it stays 0.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::cells::Counter;
use super::collect::Report;
use super::family::{Block, Family, Recorder};
use super::{Metric, MetricGroup, MetricKind, Unit};
use crate::port::ByteStream;
use crate::register_metrics;

const fn metric(
    name: &'static str,
    kind: MetricKind,
    unit: Unit,
    description: &'static str,
) -> Metric {
    Metric {
        name,
        kind,
        unit,
        description,
        labels: &[],
        buckets: &[],
    }
}

/// The `stream.*` metrics, in Zilla's order.
pub static STREAM_METRICS: [Metric; 10] = [
    metric(
        "stream.active.received",
        MetricKind::Gauge,
        Unit::Count,
        "Number of currently active received streams",
    ),
    metric(
        "stream.active.sent",
        MetricKind::Gauge,
        Unit::Count,
        "Number of currently active sent streams",
    ),
    metric(
        "stream.opens.received",
        MetricKind::Counter,
        Unit::Count,
        "Number of opened received streams",
    ),
    metric(
        "stream.opens.sent",
        MetricKind::Counter,
        Unit::Count,
        "Number of opened sent streams",
    ),
    metric(
        "stream.data.received",
        MetricKind::Counter,
        Unit::Bytes,
        "Bytes of data on received streams",
    ),
    metric(
        "stream.data.sent",
        MetricKind::Counter,
        Unit::Bytes,
        "Bytes of data on sent streams",
    ),
    metric(
        "stream.errors.received",
        MetricKind::Counter,
        Unit::Count,
        "Number of errors on received streams",
    ),
    metric(
        "stream.errors.sent",
        MetricKind::Counter,
        Unit::Count,
        "Number of errors on sent streams",
    ),
    metric(
        "stream.closes.received",
        MetricKind::Counter,
        Unit::Count,
        "Number of closed received streams",
    ),
    metric(
        "stream.closes.sent",
        MetricKind::Counter,
        Unit::Count,
        "Number of closed sent streams",
    ),
];

register_metrics!(MetricGroup {
    name: "stream",
    metrics: &STREAM_METRICS,
});

// Positions in `STREAM_METRICS`.
const ACTIVE_RECEIVED: usize = 0;
const ACTIVE_SENT: usize = 1;
const OPENS_RECEIVED: usize = 2;
const OPENS_SENT: usize = 3;
const DATA_RECEIVED: usize = 4;
const DATA_SENT: usize = 5;
const ERRORS_RECEIVED: usize = 6;
const ERRORS_SENT: usize = 7;
const CLOSES_RECEIVED: usize = 8;
const CLOSES_SENT: usize = 9;

const OPEN: u8 = 0;
const CLOSED_BY_PEER: u8 = 1;
const CLOSED_BY_PIPELINE: u8 = 2;
const FAILED: u8 = 3;

/// One connection's stream counters.
#[derive(Debug, Default)]
pub struct StreamBlock {
    /// Bytes read from the socket (sent on into the pipeline).
    read: Counter,
    /// Bytes written to the socket (received from the pipeline).
    written: Counter,
    /// How the connection ended: one of the constants above.
    end: AtomicU8,
}

impl StreamBlock {
    fn end(&self, how: u8) {
        // The first end wins; only the owning task writes.
        if self.end.load(Relaxed) == OPEN {
            self.end.store(how, Relaxed);
        }
    }
}

/// Sums of stream blocks.
#[derive(Debug, Default, Clone)]
pub struct StreamTotals {
    opens: u64,
    active: i64,
    read: u64,
    written: u64,
    closed_by_peer: u64,
    closed_by_pipeline: u64,
    failed: u64,
}

impl Block for StreamBlock {
    type Shape = ();
    type Totals = StreamTotals;

    fn new(_: &()) -> Self {
        Self::default()
    }

    fn totals(_: &()) -> StreamTotals {
        StreamTotals::default()
    }

    fn fold(&self, _: &(), totals: &mut StreamTotals, live: bool) {
        totals.opens += 1;
        totals.read += self.read.get();
        totals.written += self.written.get();
        match self.end.load(Relaxed) {
            OPEN if live => totals.active += 1,
            // Dropped while open: the pipeline closed it.
            OPEN | CLOSED_BY_PIPELINE => totals.closed_by_pipeline += 1,
            CLOSED_BY_PEER => totals.closed_by_peer += 1,
            _ => totals.failed += 1,
        }
    }

    fn merge(_: &(), into: &mut StreamTotals, from: &StreamTotals) {
        into.opens += from.opens;
        into.active += from.active;
        into.read += from.read;
        into.written += from.written;
        into.closed_by_peer += from.closed_by_peer;
        into.closed_by_pipeline += from.closed_by_pipeline;
        into.failed += from.failed;
    }

    fn report(_: &(), totals: &StreamTotals, out: &mut Report<'_>) {
        let m = &STREAM_METRICS;
        out.gauge(&m[ACTIVE_RECEIVED], &[], totals.active);
        out.gauge(&m[ACTIVE_SENT], &[], totals.active);
        out.counter(&m[OPENS_RECEIVED], &[], totals.opens);
        out.counter(&m[OPENS_SENT], &[], totals.opens);
        out.counter(&m[DATA_RECEIVED], &[], totals.written);
        out.counter(&m[DATA_SENT], &[], totals.read);
        out.counter(&m[ERRORS_RECEIVED], &[], 0);
        out.counter(&m[ERRORS_SENT], &[], totals.failed);
        out.counter(&m[CLOSES_RECEIVED], &[], totals.closed_by_pipeline);
        out.counter(&m[CLOSES_SENT], &[], totals.closed_by_peer);
    }
}

/// The stream family of a binding, if it records any `stream.*` metric.
pub type StreamFamily = Option<Arc<Family<StreamBlock>>>;

/// The family for `metrics`'s binding; `None` when it records no `stream.*` metric.
pub fn stream_family(metrics: &super::BindingMetrics) -> StreamFamily {
    metrics.family::<StreamBlock>(&STREAM_METRICS, ())
}

/// `io` as a [`ByteStream`], counted in `family` when there is one (and
/// untouched otherwise, so that disabled metrics cost nothing).
pub fn metered<S>(family: &StreamFamily, io: S) -> ByteStream
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match family {
        Some(family) => Box::new(MeteredStream {
            io,
            block: family.open(),
        }),
        None => Box::new(io),
    }
}

/// A byte stream whose reads, writes and end are counted in its own block.
#[derive(Debug)]
pub struct MeteredStream<S> {
    io: S,
    block: Recorder<StreamBlock>,
}

impl<S: AsyncRead + Unpin> AsyncRead for MeteredStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let room = buf.remaining() > 0;
        let this = &mut *self;
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        match &result {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                if read > 0 {
                    this.block.read.add(read as u64);
                } else if room {
                    this.block.end(CLOSED_BY_PEER);
                }
            }
            Poll::Ready(Err(_)) => this.block.end(FAILED),
            Poll::Pending => {}
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for MeteredStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.io).poll_write(cx, data);
        this.count_write(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.count_write(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.io).poll_flush(cx);
        if let Poll::Ready(Err(_)) = result {
            this.block.end(FAILED);
        }
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.io).poll_shutdown(cx);
        match result {
            Poll::Ready(Ok(())) => this.block.end(CLOSED_BY_PIPELINE),
            Poll::Ready(Err(_)) => this.block.end(FAILED),
            Poll::Pending => {}
        }
        result
    }
}

impl<S> MeteredStream<S> {
    fn count_write(&self, result: &Poll<io::Result<usize>>) {
        match result {
            Poll::Ready(Ok(written)) => self.block.written.add(*written as u64),
            Poll::Ready(Err(_)) => self.block.end(FAILED),
            Poll::Pending => {}
        }
    }
}
