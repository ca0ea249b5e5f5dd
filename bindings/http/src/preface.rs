//! Telling HTTP/2 from HTTP/1.1 by the first bytes a client sends, and a
//! stream that gives those bytes back before reading on.
//!
//! hyper-util's `auto` builder does the same detection, but with no time
//! limit: a client that connects and sends nothing (or only `P`, the first
//! byte of the HTTP/2 preface) would hold the connection forever, before
//! hyper's header timeout starts. Doing it here lets the caller bound it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// What every HTTP/2 connection starts with (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads from `stream` until it is clear whether it starts with the HTTP/2
/// preface; returns whether it does and the bytes read. End of stream
/// before that is decided reads as HTTP/1.1 (hyper then sees a short or
/// empty request and answers it or closes quietly).
pub(crate) async fn sniff<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<(bool, Bytes)> {
    let mut read = BytesMut::with_capacity(H2_PREFACE.len());
    while read.len() < H2_PREFACE.len() {
        let n = stream.read_buf(&mut read).await?;
        let seen = read.len().min(H2_PREFACE.len());
        if n == 0 || read[..seen] != H2_PREFACE[..seen] {
            return Ok((false, read.freeze()));
        }
    }
    Ok((true, read.freeze()))
}

/// `inner`, with `prefix` read first.
#[derive(Debug)]
pub(crate) struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub(crate) fn new(prefix: Bytes, inner: S) -> Self {
        Self { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn http1_is_told_at_the_first_byte() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let (h2, read) = sniff(&mut server).await.unwrap();
        assert!(!h2);
        let mut prefixed = Prefixed::new(read, server);
        drop(client);
        let mut all = String::new();
        prefixed.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn the_h2_preface_is_read_whole() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(&H2_PREFACE[..3]).await.unwrap();
        let sniffing = tokio::spawn(async move { sniff(&mut server).await.unwrap() });
        client.write_all(&H2_PREFACE[3..]).await.unwrap();
        let (h2, read) = sniffing.await.unwrap();
        assert!(h2);
        assert_eq!(&read[..], H2_PREFACE);
    }

    #[tokio::test]
    async fn an_early_end_reads_as_http1() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"PR").await.unwrap();
        drop(client);
        let (h2, read) = sniff(&mut server).await.unwrap();
        assert!(!h2);
        assert_eq!(&read[..], b"PR");
    }
}
