//! The byte stream an exit sees through a WebSocket: [`WsStream`] reads the
//! payloads of data frames as one continuous run of bytes and writes each
//! write as one data frame.
//!
//! MQTT over WebSocket (MQTT 5 §6.0) puts MQTT packets in binary frames with
//! no alignment: a packet may span frames and a frame may hold several
//! packets, so the exit reads bytes, never messages, and a message it reads
//! in part keeps its rest for the next read. Control frames stay inside:
//! tungstenite answers a Ping on the next poll of the WebSocket, which the
//! read loop makes right away; a Close frame is answered and ends the stream
//! (EOF). A fault in what the peer sends fails the connection with the close
//! code that names it (see [`close`](crate::close)) before the exit's read
//! reports an error.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};

use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use zilla_engine::Events;

use crate::close::{self, Ending, Failure};

/// The MQTT subprotocols: `mqtt` (MQTT 3.1.1 and 5) and `mqttv3.1`, which
/// MQTT 3.1 clients (and some 3.1.1 ones, e.g. older paho) still offer.
pub const MQTT_PROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Whether text frames are data on a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextFrames {
    /// A text frame fails the connection with 1003: MQTT 5 §6.0 allows
    /// binary frames only.
    Reject,
    /// Text frames are data too, and writes go out in the type of the last
    /// data frame received (tools such as websocat send text).
    Accept,
}

impl TextFrames {
    /// The rule for a negotiated subprotocol: MQTT ones reject text.
    pub(crate) fn for_protocol(protocol: Option<&str>) -> Self {
        match protocol {
            Some(protocol) if MQTT_PROTOCOLS.contains(&protocol) => Self::Reject,
            _ => Self::Accept,
        }
    }
}

/// A WebSocket as a tokio byte stream (`AsyncRead + AsyncWrite`).
///
/// Writes are frames written to the transport as they are made (no write
/// buffer to forget to flush); one that the transport could not take at once
/// goes out on the next write or flush. `shutdown` sends Close 1000, then
/// shuts the transport's write side; reads carry on until the peer's Close.
/// Memory is bounded by the WebSocket's configured frame and message limits.
pub struct WsStream<S> {
    ws: WebSocketStream<S>,
    /// The negotiated subprotocol, if any.
    protocol: Option<String>,
    text: TextFrames,
    /// The largest frame payload written; longer writes are split.
    max_frame_size: usize,
    /// What the exit has not read yet of the last data message.
    unread: Bytes,
    /// The frame type writes go out in: that of the last data frame received.
    reply: Reply,
    /// In text replies: the start of a UTF-8 character split across writes
    /// (at most 3 bytes), held for the next write.
    held: Vec<u8>,
    reading: Reading,
    writing: Writing,
    /// What the peer's Close frame said, when it was not a normal close.
    peer_close: Option<io::Error>,
    /// The task blocked in a write, woken when the read side closes the
    /// WebSocket so that it learns the stream is over: the read side's
    /// Close frame reuses the write waker slot it waits in.
    writer: Option<Waker>,
    /// Where `WS_CLOSED_WITH_ERROR` goes, and who the peer is.
    events: Option<(Events, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Binary,
    Text,
}

enum Reading {
    Open,
    /// Failing the connection: its Close frame goes out, then the error.
    Failing(Failure, Step),
    /// Nothing more to read: EOF, or the error every read reports.
    Ended(Option<(io::ErrorKind, String)>),
}

enum Writing {
    Open,
    /// `shutdown` in progress.
    Closing(Step),
    /// Shut down, or failed by the read side.
    Closed,
}

/// Where sending a Close frame and shutting the transport has got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Send,
    Flush,
    Shutdown,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// Wraps a WebSocket whose handshake negotiated `protocol`; writes are
    /// split into frames of at most `max_frame_size` bytes.
    pub fn new(ws: WebSocketStream<S>, protocol: Option<&str>, max_frame_size: usize) -> Self {
        Self {
            ws,
            protocol: protocol.map(str::to_owned),
            text: TextFrames::for_protocol(protocol),
            max_frame_size: max_frame_size.max(1),
            unread: Bytes::new(),
            reply: Reply::Binary,
            held: Vec::new(),
            reading: Reading::Open,
            writing: Writing::Open,
            peer_close: None,
            writer: None,
            events: None,
        }
    }

    /// Reports connections failed with an error close code to `events`,
    /// naming the peer as `peer` (e.g. `client 10.0.0.7:51234`).
    pub fn with_events(mut self, events: Events, peer: impl Into<String>) -> Self {
        self.events = Some((events, peer.into()));
        self
    }

    /// The negotiated subprotocol.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Starts failing the connection with `failure`.
    fn fail(&mut self, failure: Failure) {
        if let Some((events, peer)) = &self.events {
            events.warn(
                "WS_CLOSED_WITH_ERROR",
                format!(
                    "{peer}: {}; closed with {} ({})",
                    failure.detail, failure.code, failure.reason
                ),
            );
        }
        self.reading = Reading::Failing(failure, Step::Send);
    }

    /// Ends the read side with EOF or `error` (else what the peer's Close said).
    fn end(&mut self, error: Option<io::Error>) {
        let error = error.or_else(|| self.peer_close.take());
        self.reading = Reading::Ended(error.map(|e| (e.kind(), e.to_string())));
        self.wake_writer();
    }

    fn wake_writer(&mut self) {
        if let Some(writer) = self.writer.take() {
            writer.wake();
        }
    }

    fn remember_writer(&mut self, cx: &Context<'_>) {
        match &self.writer {
            Some(writer) if writer.will_wake(cx.waker()) => {}
            _ => self.writer = Some(cx.waker().clone()),
        }
    }

    /// The message carrying `chunk` in the reply frame type, if any is due
    /// yet (a text reply holds back a character split across writes).
    fn message_for(&mut self, chunk: &[u8]) -> Option<Message> {
        if self.reply == Reply::Binary {
            return Some(Message::Binary(Bytes::copy_from_slice(chunk)));
        }
        let mut data = std::mem::take(&mut self.held);
        data.extend_from_slice(chunk);
        match String::from_utf8(data) {
            Ok(text) => Some(Message::Text(text.into())),
            Err(error) => {
                let utf8 = error.utf8_error();
                let mut data = error.into_bytes();
                if utf8.error_len().is_some() {
                    // Not text at all: send it as it is rather than mangle it.
                    return Some(Message::Binary(data.into()));
                }
                self.held = data.split_off(utf8.valid_up_to());
                String::from_utf8(data)
                    .ok()
                    .filter(|text| !text.is_empty())
                    .map(|text| Message::Text(text.into()))
            }
        }
    }

    /// Reads the next message off the WebSocket into `unread`, or changes
    /// the read state.
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let message = match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                match close::classify(error) {
                    Ending::Fail(failure) => self.fail(failure),
                    Ending::Eof => self.end(None),
                    Ending::Transport(error) => self.end(Some(error)),
                }
                return Poll::Ready(());
            }
            None => {
                self.end(None);
                return Poll::Ready(());
            }
        };
        match message {
            Message::Binary(data) => {
                self.reply = Reply::Binary;
                self.unread = data;
            }
            Message::Text(text) => match self.text {
                TextFrames::Reject => {
                    let protocol = self.protocol.clone().unwrap_or_default();
                    self.fail(Failure::text_frame(&protocol));
                }
                TextFrames::Accept => {
                    self.reply = Reply::Text;
                    self.unread = text.into();
                }
            },
            // tungstenite has queued the reply; the next poll sends it, and
            // ends the stream once the closing handshake is complete.
            Message::Close(frame) => self.peer_close = close::peer_close_error(frame.as_ref()),
            // tungstenite has queued the Pong; the next poll sends it.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
        Poll::Ready(())
    }
}

/// Sends `frame` (unless a Close already went either way), then shuts the
/// transport's write side. Send and flush errors are not reported: the
/// transport is shut all the same, and that is what the caller waits for.
fn poll_close<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    step: &mut Step,
    frame: CloseFrame,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    loop {
        match step {
            Step::Send => {
                if ready!(Pin::new(&mut *ws).poll_ready(cx)).is_ok() {
                    let _ = Pin::new(&mut *ws).start_send(Message::Close(Some(frame.clone())));
                }
                *step = Step::Flush;
            }
            Step::Flush => {
                let _ = ready!(Pin::new(&mut *ws).poll_flush(cx));
                *step = Step::Shutdown;
            }
            // A shutdown implies a flush of the transport (e.g. TLS records).
            Step::Shutdown => return Pin::new(ws.get_mut()).poll_shutdown(cx),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !this.unread.is_empty() {
                let n = this.unread.len().min(buf.remaining());
                buf.put_slice(&this.unread.split_to(n));
                // Hand over every frame that already arrived, not one per
                // read: the exit then decodes them together and forwards them
                // upstream in one write instead of one write per message. A
                // failure or the end waits for the next read, after the data.
                while buf.remaining() > 0 && matches!(this.reading, Reading::Open) {
                    if this.poll_message(cx).is_pending() {
                        break;
                    }
                    let n = this.unread.len().min(buf.remaining());
                    buf.put_slice(&this.unread.split_to(n));
                }
                return Poll::Ready(Ok(()));
            }
            match &mut this.reading {
                Reading::Open => ready!(this.poll_message(cx)),
                Reading::Failing(failure, step) => {
                    let frame = failure.frame();
                    // The transport may already be gone; the failure is
                    // what the exit needs to hear about.
                    let _ = ready!(poll_close(&mut this.ws, step, frame, cx));
                    let error = failure.error();
                    this.writing = Writing::Closed;
                    this.end(Some(error));
                }
                Reading::Ended(None) => return Poll::Ready(Ok(())),
                Reading::Ended(Some((kind, message))) => {
                    return Poll::Ready(Err(io::Error::new(*kind, message.clone())))
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !matches!(this.writing, Writing::Open) {
            return Poll::Ready(Err(close::closed()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        match Pin::new(&mut this.ws).poll_ready(cx) {
            Poll::Pending => {
                this.remember_writer(cx);
                return Poll::Pending;
            }
            Poll::Ready(ready) => ready.map_err(close::write_error)?,
        }
        // Held bytes count towards the frame, so no frame exceeds the limit.
        let room = this.max_frame_size.saturating_sub(this.held.len()).max(1);
        let chunk = &buf[..buf.len().min(room)];
        if let Some(message) = this.message_for(chunk) {
            Pin::new(&mut this.ws)
                .start_send(message)
                .map_err(close::write_error)?;
        }
        Poll::Ready(Ok(chunk.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if matches!(this.writing, Writing::Closed) {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut this.ws).poll_flush(cx) {
            Poll::Pending => {
                this.remember_writer(cx);
                Poll::Pending
            }
            Poll::Ready(flushed) => Poll::Ready(flushed.map_err(close::write_error)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.writing {
                Writing::Open => {
                    if !this.held.is_empty() {
                        // The stream ends inside a character: the bytes go
                        // out as they are rather than be lost.
                        match Pin::new(&mut this.ws).poll_ready(cx) {
                            Poll::Pending => {
                                this.remember_writer(cx);
                                return Poll::Pending;
                            }
                            Poll::Ready(Ok(())) => {
                                let held = std::mem::take(&mut this.held);
                                let _ =
                                    Pin::new(&mut this.ws).start_send(Message::Binary(held.into()));
                            }
                            Poll::Ready(Err(_)) => this.held.clear(),
                        }
                    }
                    this.writing = Writing::Closing(Step::Send);
                }
                Writing::Closing(step) => {
                    let frame = CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    };
                    let Poll::Ready(shut) = poll_close(&mut this.ws, step, frame, cx) else {
                        this.remember_writer(cx);
                        return Poll::Pending;
                    };
                    this.writing = Writing::Closed;
                    return Poll::Ready(shut);
                }
                Writing::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests;
