//! The only part of the session that touches sockets and tokio time: it
//! reads the CONNECT, asks the guard, opens the upstreams, then drives the
//! [`Session`] state machine: read, feed, flush, sleep until the next
//! deadline, and close the way the state machine says.
//!
//! The client connection and all its upstream sessions are driven by this one
//! task: reads from every stream are polled together, packets are handled in
//! order, and each side's output is batched and written once per turn.

use std::fmt;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mqtt_bytes_v5::{ConnAck, ConnectReturnCode, DisconnectReasonCode, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zilla_engine::admin::tap;
use zilla_engine::telemetry::{duration, text};
use zilla_engine::{ByteStream, GuardRejection, GuardSession, StreamInfo};

use super::admit::{self, Refusal, Request};
use super::dump::{self, Capture, Moment};
use super::end::{Closing, End};
use super::io::{make_room, now, poll_read_lean, release_written, write_now, UpstreamIo};
use super::open::{self, Opened};
use super::state::Session;
use super::takeover::Registration;
use crate::admin::Seated;
use crate::codec::{self, CodecError, Reason, Version};
use crate::config::ServerConfig;
use crate::credentials::{read_connect as read_connect_packet, ConnectPacket};
use crate::dump_frames::frame_len;
use crate::limits::{suppressed_note, Action};
use crate::metrics::SessionMetrics;

/// The first read of a connection, which holds the CONNECT and its token.
const CONNECT_READ: usize = 1024;
/// How long a client or broker may leave our writes unread before the session ends.
const WRITE_STALL: Duration = Duration::from_secs(30);
/// How long a write to the client may wait before it is logged as stalled.
const STALL_NOTICE: Duration = Duration::from_secs(1);
/// How often a stalled client is logged.
const STALL_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// How long a closing client may take to read its last packets.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Serves one client connection until it ends, counting it in `metrics`.
///
/// The handshake and the close run in futures of their own, boxed: this
/// task's future, which every idle session holds, is only as large as the
/// relay needs, not as the CONNECT and admission do.
///
/// Not an `async fn`: one keeps its arguments in its future for its whole
/// life, moved out or not (the 168-byte `StreamInfo`, the streams: 200
/// bytes every idle session held). They go into the boxed handshake before
/// the returned future exists, and that future keeps only the box.
pub(crate) fn serve(
    config: Arc<ServerConfig>,
    metrics: SessionMetrics,
    client: ByteStream,
    info: StreamInfo,
) -> impl Future<Output = ()> + Send {
    let start = Box::pin(start(config, metrics, client, info));
    async move {
        let Some(mut driver) = start.await else {
            return;
        };
        let end = driver.relay().await;
        let end = match end {
            // A broker took the upstream over for a newer connection with
            // this client id, before or as the proxy's own signal came.
            End::UpstreamClosed(_) | End::UpstreamLost(..) if driver.registration.superseded() => {
                End::TakenOver
            }
            end => end,
        };
        Box::pin(driver.finish(end)).await;
    }
}

/// Reads the CONNECT, admits it and opens the upstreams: the running session,
/// or `None` once the client was refused or went away.
async fn start(
    config: Arc<ServerConfig>,
    mut metrics: SessionMetrics,
    mut client: ByteStream,
    info: StreamInfo,
) -> Option<Driver> {
    let peer = info
        .peer
        .map(|p| p.to_string())
        .unwrap_or_else(|| "?".to_owned());
    // A CONNECT carrying a JWT is usually 600 to 1000 bytes: one read.
    let mut buf = BytesMut::with_capacity(CONNECT_READ);
    let handshake = tokio::select! {
        handshake = tokio::time::timeout(config.connect_timeout, read_connect(&config, &mut client, &mut buf, &mut metrics)) => handshake,
        _ = config.shutdown.draining() => return None,
    };
    let (request, raw_connect) = match handshake {
        Ok(Ok(Some(request))) => request,
        // The client went away, or was already answered.
        Ok(Ok(None)) => return None,
        Ok(Err(error)) => {
            config.events.warn(
                "MQTT_CONNECT_REJECTED",
                format!("client {peer}: {}", error.message),
            );
            return None;
        }
        Err(_) => {
            config.events.warn(
                "MQTT_CONNECT_TIMEOUT",
                format!(
                    "client {peer} sent no CONNECT within {}; closed",
                    duration(config.connect_timeout)
                ),
            );
            return None;
        }
    };
    metrics.connect_read(now(), request.will.is_some());
    let opening = open::open_session(&config, request, raw_connect, &info, &peer, &mut metrics);
    let opened = match opening.await {
        Ok(opened) => opened,
        Err(refusal) => {
            log_refusal(&config, &peer, &refusal, &metrics);
            send_connack(&mut client, refusal.version, *refusal.connack, &mut metrics).await;
            return None;
        }
    };
    let Opened {
        mut session,
        upstreams,
        registration,
        seated,
    } = opened;
    // Session::new queued the CONNACK; it goes out with the first flush.
    metrics.connack_sent(ConnectReturnCode::Success, now());
    session.set_metrics(metrics);
    let driver = Driver {
        config,
        stall_logged: None,
        session,
        client,
        client_in: buf,
        client_last_read: 0,
        upstreams,
        turn: 0,
        registration,
        verifying: None,
        seated,
        capture: None,
        greeted: false,
    };
    Some(driver)
}

/// Logs and counts a refused CONNECT: a limit's refusal as a limit hit
/// (one event per key value and limit per interval), any other as
/// `MQTT_CONNECT_REJECTED`.
fn log_refusal(config: &ServerConfig, peer: &str, refusal: &Refusal, metrics: &SessionMetrics) {
    // Refused before an id was read, or for sending none.
    let client = match refusal.client_id.as_str() {
        "" => format!("client {peer} without a client id"),
        id => format!("client {peer} id {}", text(id)),
    };
    let Some(hit) = &refusal.limit else {
        let why = &refusal.why;
        config
            .events
            .warn("MQTT_CONNECT_REJECTED", format!("{client}: {why}"));
        return;
    };
    metrics.limit_hit(hit.slot, Action::Refused);
    if let Some(suppressed) = hit.log {
        // What the client read: a 3.1.1 client gets a return code.
        let answer = match refusal.version {
            Version::V5 => format!("CONNACK {}", Reason::connack(refusal.connack.code)),
            _ => format!(
                "CONNACK return code {}",
                codec::connack_code_v4(refusal.connack.code) as u8
            ),
        };
        config.events.warn(
            "MQTT_LIMIT_HIT",
            format!(
                "{client}: {}; {answer}{}",
                refusal.why,
                suppressed_note(suppressed)
            ),
        );
    }
}

/// Reads the CONNECT; answers unsupported versions and malformed CONNECTs.
async fn read_connect(
    config: &ServerConfig,
    client: &mut ByteStream,
    buf: &mut BytesMut,
    metrics: &mut SessionMetrics,
) -> Result<Option<(Request, Bytes)>, CodecError> {
    let version = loop {
        match codec::connect_version(buf)? {
            Some(Ok(version)) if config.versions.contains(&version) => break version,
            Some(version) => {
                let refusal = admit::version_refusal(version);
                send_connack(client, refusal.version, *refusal.connack, metrics).await;
                return Err(CodecError {
                    reason: DisconnectReasonCode::ProtocolError,
                    message: refusal.why,
                });
            }
            None => {}
        }
        if read_more(client, buf).await? == 0 {
            return Ok(None);
        }
    };
    loop {
        // The CONNECT as it came, for a dump attaching later (see `open`).
        let raw = frame_len(buf).map(|length| Bytes::copy_from_slice(&buf[..length]));
        match read_connect_packet(buf, version, config.maximum_packet_size as usize) {
            Ok(Some(ConnectPacket {
                connect,
                will,
                login,
            })) => {
                let request = Request {
                    version,
                    connect,
                    will,
                    login,
                    assigned: None,
                    guard: None,
                };
                return Ok(Some((request, raw.unwrap_or_default())));
            }
            Ok(None) => {}
            Err(error) => {
                if let Some(connack) = admit::malformed_connect(version, &error) {
                    send_connack(client, version, connack, metrics).await;
                }
                return Err(error);
            }
        }
        if read_more(client, buf).await? == 0 {
            return Ok(None);
        }
    }
}

async fn read_more(client: &mut ByteStream, buf: &mut BytesMut) -> Result<usize, CodecError> {
    make_room(buf, buf.len());
    client.read_buf(buf).await.map_err(|e| CodecError {
        reason: DisconnectReasonCode::UnspecifiedError,
        message: format!("read failed: {e}"),
    })
}

/// Where every CONNACK refusing a client is written (an admitted session's
/// goes out with its first flush).
async fn send_connack(
    client: &mut ByteStream,
    version: Version,
    connack: ConnAck,
    metrics: &mut SessionMetrics,
) {
    metrics.connack_sent(connack.code, now());
    let mut out = BytesMut::new();
    if codec::write(&Packet::ConnAck(connack), version, &mut out).is_ok() {
        let _ = client.write_all(&out).await;
        let _ = client.flush().await;
    }
}

/// The guard's verdict on a re-authentication's token, on its way.
type Verifying = Pin<Box<dyn Future<Output = Result<GuardSession, GuardRejection>> + Send>>;

/// A running session with its sockets.
struct Driver {
    config: Arc<ServerConfig>,
    /// When a stalled client was last logged.
    stall_logged: Option<Instant>,
    session: Session,
    client: ByteStream,
    client_in: BytesMut,
    /// Bytes the last read from the client brought (sizes the next one).
    client_last_read: usize,
    upstreams: Vec<UpstreamIo>,
    /// Rotates which upstream is read first.
    turn: usize,
    /// Its place among the connected client ids (and the id, for events),
    /// left in [`Driver::finish`].
    registration: Registration,
    /// The guard verifying a re-authentication's token (AUTH 0x19), while
    /// the relay goes on.
    verifying: Option<Verifying>,
    /// Its seat among the server's sessions (`zilla sessions`, `zilla
    /// disconnect`), left when the driver drops; also the client's address
    /// events name (kept once, not as a string).
    seated: Seated,
    /// The dumps selecting this session, while any dump is attached.
    capture: Option<Box<Capture>>,
    /// Whether the CONNACK was written (a dump attaching later starts the
    /// client's stream with it).
    greeted: bool,
}

impl Driver {
    /// Relays until something ends the session.
    async fn relay(&mut self) -> End {
        // Bytes that arrived with the CONNECT or the CONNACKs (a pipelining
        // client, a broker sending queued messages at once) are handled first.
        if tap::active() && !self.client_in.is_empty() {
            let moment = Moment {
                seated: &self.seated,
                greeted: self.greeted,
            };
            dump::capture(&mut self.capture, moment, 0, true, &self.client_in);
        }
        if let Err(end) = self.session.on_client_bytes(now(), &mut self.client_in) {
            return end;
        }
        for index in 0..self.upstreams.len() {
            let buf = &mut self.upstreams[index].read_buf;
            if let Err(end) = self.session.on_upstream_bytes(now(), index, buf) {
                return end;
            }
        }
        // The takeover signal and the timer live across turns: each
        // registers once, not once per turn (a lock to register and another
        // to leave in every turn of a busy session, the timer's shared by
        // the worker's sessions). The drain wakes the session through the
        // same signal (`Seats::drain`); one seated after the drain began
        // reads it here.
        if self.config.shutdown.is_draining() {
            return End::Draining;
        }
        let signal = self.registration.taken_over();
        let taken_over = signal.notified();
        let timer = tokio::time::sleep_until(tokio::time::Instant::from_std(now()));
        tokio::pin!(taken_over, timer);
        loop {
            if let Err(end) = self.resume() {
                return end;
            }
            self.start_verifying();
            let (inbound, outbound) = self.session.in_flight();
            self.seated.in_flight(inbound, outbound);
            // Written at once when the sockets take it (every turn but a
            // slow peer's); only a wait is a future, boxed, so that the
            // relay's own future does not carry its state.
            match self.flush_now() {
                Ok(true) => {}
                Ok(false) => {
                    if let Err(end) = Box::pin(self.flush(false)).await {
                        return end;
                    }
                }
                Err(end) => return end,
            }
            let deadline = self.session.poll_timeout();
            // Set again when the deadline moved (a later one only moves the
            // registered entry, without a lock) or once the timer fired.
            if let Some(at) = deadline.map(tokio::time::Instant::from_std) {
                if timer.deadline() != at || timer.is_elapsed() {
                    timer.as_mut().reset(at);
                }
            }
            // A full buffer stops the reads it would grow: TCP backpressure
            // slows the sender instead of the proxy holding more.
            let read_client = self.session.wants_client_input();
            let read_upstreams = self.session.wants_upstream_input();
            let Self {
                client,
                client_in,
                upstreams,
                config,
                session,
                turn,
                client_last_read,
                verifying,
                seated,
                capture,
                greeted,
                ..
            } = self;
            if capture.is_some() && !tap::active() {
                *capture = None;
            }
            let verdict = poll_fn(|cx| match verifying.as_mut() {
                Some(verifying) => verifying.as_mut().poll(cx),
                None => Poll::Pending,
            });
            let client_read = poll_fn(|cx| {
                if !read_client {
                    return Poll::Pending;
                }
                poll_read_lean(client, cx, client_in, *client_last_read)
            });
            // Start each poll at a different upstream, so a busy broker cannot
            // starve the others (their PINGRESPs included).
            *turn = turn.wrapping_add(1);
            let count = upstreams.len();
            let first = *turn % count;
            let upstream_read = poll_fn(|cx| {
                if !read_upstreams {
                    return Poll::Pending;
                }
                for offset in 0..count {
                    let index = (first + offset) % count;
                    let io = &mut upstreams[index];
                    if let Poll::Ready(result) =
                        poll_read_lean(&mut io.stream, cx, &mut io.read_buf, io.last_read)
                    {
                        if let Ok(n) = result {
                            io.last_read = n;
                        }
                        return Poll::Ready((index, result));
                    }
                }
                Poll::Pending
            });
            let outcome = tokio::select! {
                read = client_read => match read {
                    Ok(0) => Err(End::ClientLost("connection closed without DISCONNECT".into())),
                    Ok(n) => {
                        *client_last_read = n;
                        // Read now: a dump may have attached while the read waited.
                        if tap::active() {
                            let moment = Moment { seated, greeted: *greeted };
                            dump::capture(capture, moment, 0, true, &client_in[client_in.len() - n..]);
                        }
                        session.on_client_bytes(now(), client_in)
                    }
                    Err(e) => Err(End::ClientLost(format!("read failed: {e}"))),
                },
                (index, read) = upstream_read => match read {
                    Ok(0) => Err(End::UpstreamClosed(index)),
                    Ok(n) => {
                        let buf = &mut upstreams[index].read_buf;
                        // Read now: a dump may have attached while the read waited.
                        if tap::active() {
                            let moment = Moment { seated, greeted: *greeted };
                            dump::capture(capture, moment, 1 + index, false, &buf[buf.len() - n..]);
                        }
                        session.on_upstream_bytes(now(), index, buf)
                    }
                    Err(e) => Err(End::UpstreamLost(index, format!("read failed: {e}"))),
                },
                // No deadline, no timer: the branch is off.
                _ = &mut timer, if deadline.is_some() => session.on_timeout(now()),
                verdict = verdict => {
                    *verifying = None;
                    let now = now();
                    let expires_at = verdict.as_ref().ok()
                        .and_then(|granted| granted.expires_at)
                        .map(|at| open::instant_of(at, now));
                    session.on_reauth(now, verdict, expires_at)
                }
                // A newer connection, an operator (its seat says so) or the
                // server's drain.
                _ = &mut taken_over => Err(if config.shutdown.is_draining() {
                    End::Draining
                } else if seated.seat.kicked() {
                    End::Administrative
                } else {
                    End::TakenOver
                }),
            };
            if let Err(end) = outcome {
                return end;
            }
        }
    }

    /// Asks the guard about the token of a re-authentication the session
    /// took in, if it took one; the verdict is awaited beside the reads.
    fn start_verifying(&mut self) {
        let Some(token) = self.session.take_reauth() else {
            return;
        };
        // The CONNECT's guard: the one naming its Authentication Method.
        let Some(authorization) =
            (self.session.reauth_guard()).and_then(|g| self.config.guard_named(g))
        else {
            return;
        };
        let guard = authorization.guard.clone();
        self.verifying = Some(Box::pin(async move { guard.authorize(&token).await }));
    }

    /// Feeds input that waited in the read buffers while the session's
    /// buffers were full, once they have room again.
    fn resume(&mut self) -> Result<(), End> {
        if self.session.wants_client_input() && !self.client_in.is_empty() {
            self.session.resume_client_input(&mut self.client_in)?;
        }
        for index in 0..self.upstreams.len() {
            let buf = &mut self.upstreams[index].read_buf;
            if self.session.wants_upstream_input() && !buf.is_empty() {
                self.session.on_upstream_bytes(now(), index, buf)?;
            }
        }
        Ok(())
    }

    /// Writes what each side has pending as far as the sockets take it
    /// without waiting: true when everything went, false when something is
    /// left for [`Driver::flush`] (a dump attached has seen all of it).
    fn flush_now(&mut self) -> Result<bool, End> {
        if tap::active() {
            for index in 0..self.upstreams.len() {
                let moment = Moment {
                    seated: &self.seated,
                    greeted: self.greeted,
                };
                let out = self.session.upstream_transmit(index);
                if !out.is_empty() {
                    dump::capture(&mut self.capture, moment, 1 + index, true, out);
                }
            }
            let moment = Moment {
                seated: &self.seated,
                greeted: self.greeted,
            };
            let out = self.session.client_transmit();
            if !out.is_empty() {
                dump::capture(&mut self.capture, moment, 0, false, out);
            }
        }
        for index in 0..self.upstreams.len() {
            let out = self.session.upstream_transmit(index);
            if out.is_empty() {
                continue;
            }
            let stream = &mut self.upstreams[index].stream;
            match write_now(stream, out) {
                Ok(true) => {
                    release_written(out);
                    self.session.upstream_sent(index, now());
                }
                Ok(false) => return Ok(false),
                Err(e) => return Err(End::UpstreamLost(index, format!("write failed: {e}"))),
            }
        }
        let out = self.session.client_transmit();
        if out.is_empty() {
            return Ok(true);
        }
        match write_now(&mut self.client, out) {
            Ok(true) => {
                release_written(out);
                self.greeted = true;
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(e) => Err(End::ClientLost(format!("write failed: {e}"))),
        }
    }

    /// Writes what each side has pending, waiting for sockets that do not
    /// take it at once; what a dump attached sees unless it saw it already
    /// (`captured`). A peer that stops reading for [`WRITE_STALL`] ends the
    /// session instead of holding it forever.
    async fn flush(&mut self, captured: bool) -> Result<(), End> {
        for index in 0..self.upstreams.len() {
            let out = self.session.upstream_transmit(index);
            if out.is_empty() {
                continue;
            }
            if !captured && tap::active() {
                let moment = Moment {
                    seated: &self.seated,
                    greeted: self.greeted,
                };
                dump::capture(&mut self.capture, moment, 1 + index, true, out);
            }
            let stream = &mut self.upstreams[index].stream;
            match tokio::time::timeout(WRITE_STALL, stream.write_all(out)).await {
                Ok(Ok(())) => {
                    release_written(out);
                    self.session.upstream_sent(index, now());
                }
                Ok(Err(e)) => return Err(End::UpstreamLost(index, format!("write failed: {e}"))),
                Err(_) => {
                    return Err(End::UpstreamLost(
                        index,
                        format!("stopped reading for {}", duration(WRITE_STALL)),
                    ))
                }
            }
        }
        let buffered = self.session.buffered();
        let out = self.session.client_transmit();
        if out.is_empty() {
            return Ok(());
        }
        let pending = out.len();
        if !captured && tap::active() {
            let moment = Moment {
                seated: &self.seated,
                greeted: self.greeted,
            };
            dump::capture(&mut self.capture, moment, 0, false, out);
        }
        let write = self.client.write_all(out);
        tokio::pin!(write);
        // While the client does not read, nothing else of this session is
        // read either: what it holds stays bounded, and the brokers' own
        // queueing applies. Visible after a second, ended after WRITE_STALL.
        let written = match tokio::time::timeout(STALL_NOTICE, &mut write).await {
            Ok(written) => Ok(written),
            Err(_) => {
                let at = now();
                if self
                    .stall_logged
                    .is_none_or(|logged| at >= logged + STALL_LOG_INTERVAL)
                {
                    self.stall_logged = Some(at);
                    self.config.events.info(
                        "MQTT_FLOW_PAUSED",
                        format!(
                            "client {} id {}: not reading; {pending} bytes unwritten, {buffered} bytes queued; reading paused",
                            Peer(self.seated.seat.peer),
                            text(self.registration.client_id())
                        ),
                    );
                }
                tokio::time::timeout(WRITE_STALL - STALL_NOTICE, write).await
            }
        };
        match written {
            Ok(Ok(())) => {
                release_written(self.session.client_transmit());
                self.greeted = true;
                Ok(())
            }
            Ok(Err(e)) => Err(End::ClientLost(format!("write failed: {e}"))),
            Err(_) => Err(End::ClientLost(format!(
                "stopped reading for {}",
                duration(WRITE_STALL)
            ))),
        }
    }

    /// Leaves the session's state for its next connection, writes its last
    /// packets and closes, as the state machine decided.
    async fn finish(mut self, end: End) {
        let ended = now();
        // Left before the close, which may take a while: a connection that
        // took this one over is waiting for what it carries.
        let carried = self.session.carried(ended);
        self.registration.leave(carried, ended);
        match self.session.finish(end) {
            Closing::FlushAll => {
                let _ = self.flush(false).await;
            }
            Closing::Abort => {}
            Closing::CloseClient => self.close_client().await,
            Closing::FlushUpstreamsThenCloseClient => {
                for index in 0..self.session.upstream_count() {
                    let out = self.session.upstream_transmit(index);
                    if self.upstreams[index].stream.write_all(out).await.is_err() {
                        break;
                    }
                    out.clear();
                }
                self.close_client().await;
            }
        }
        // Dropping the upstream streams without DISCONNECT is an abrupt loss
        // for the brokers, unless a DISCONNECT was flushed above.
    }

    /// Writes what the client is owed and closes its connection.
    async fn close_client(&mut self) {
        let out = std::mem::take(self.session.client_transmit());
        if tap::active() {
            let moment = Moment {
                seated: &self.seated,
                greeted: self.greeted,
            };
            dump::capture(&mut self.capture, moment, 0, false, &out);
        }
        let closing = async {
            let _ = self.client.write_all(&out).await;
            let _ = self.client.shutdown().await;
        };
        // A client that does not read must not hold the session open.
        let _ = tokio::time::timeout(CLOSE_GRACE, closing).await;
    }
}

/// Empties a write buffer whose bytes were written. A buffer that held a
/// batch is kept for the next one; one that held a few small packets (an
/// ack, a PINGRESP, the CONNACK) is released, so a quiet session holds no
/// write buffer between its packets.
/// A client's address as events name it: "?" when the stream has none.
struct Peer(Option<SocketAddr>);

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(peer) => peer.fmt(f),
            None => f.write_str("?"),
        }
    }
}
