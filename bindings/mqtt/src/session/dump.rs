//! `zilla dump` inside a session: which attached taps select it, the
//! frames it offers them, and how each of its streams starts in a dump.
//!
//! The driver calls [`capture`] with the bytes it reads and writes, only
//! while some dump is attached (`tap::active`, one relaxed load). Bytes are
//! cut into whole frames before they are offered, so a segment a slow dump
//! drops is whole frames and what it keeps still decodes. A stream starts
//! in each dump with a CONNECT and a CONNACK, which Wireshark needs to know
//! the protocol version: the client's own (its secrets redacted) and, for
//! upstreams, whose frames the mqtt client binding exchanged before the
//! session ran, a CONNECT and a CONNACK made for the dump.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use mqtt_bytes_v5::{ConnAck, Connect, ConnectReturnCode, Packet};
use zilla_engine::admin::tap::{self, Segment, Tap};

use crate::admin::{Seat, Seated};
use crate::codec;
use crate::dump_frames::{frame_len, packet_type, publish_topic, secrets};

/// The port every dumped stream's server side gets, so that Wireshark
/// decodes it as MQTT with no settings.
const MQTT_PORT: u16 = 1883;
const CONNECT: u8 = 1;
const AUTH: u8 = 15;

/// A session's capture while dumps are attached.
pub(super) struct Capture {
    /// The taps' generation this was made for.
    generation: u64,
    /// The taps selecting this session.
    taps: Vec<Selected>,
    /// Bytes of a frame not complete yet, by stream and direction
    /// (`[from the connecting side, from the accepting side]`).
    pending: Vec<[BytesMut; 2]>,
}

struct Selected {
    tap: Arc<Tap>,
    /// Whether each stream has started (its CONNECT and CONNACK) in this dump.
    started: Vec<bool>,
}

/// What the driver knows when it captures.
pub(super) struct Moment<'a> {
    pub(super) seated: &'a Seated,
    /// Whether the CONNACK went out already (else it is in this write).
    pub(super) greeted: bool,
}

/// Offers `bytes`, read or written on `stream` (0: the client's, 1 + i:
/// upstream i), to the dumps that select the session.
pub(super) fn capture(
    slot: &mut Option<Box<Capture>>,
    moment: Moment<'_>,
    stream: usize,
    from_client: bool,
    bytes: &[u8],
) {
    let generation = tap::generation();
    let streams = 1 + moment.seated.seat.upstreams.len();
    if slot.as_ref().is_none_or(|c| c.generation != generation) {
        *slot = Some(Box::new(select(slot.take(), &moment, generation, streams)));
    }
    let Some(capture) = slot.as_mut() else {
        return;
    };
    if capture.taps.is_empty() || stream >= streams {
        return;
    }
    let seat = &moment.seated.seat;
    let pending = &mut capture.pending[stream][usize::from(!from_client)];
    pending.extend_from_slice(bytes);
    let mut batches: Vec<BytesMut> = vec![BytesMut::new(); capture.taps.len()];
    while let Some(length) = frame_len(pending) {
        let frame = pending.split_to(length).freeze();
        for (selected, batch) in capture.taps.iter_mut().zip(&mut batches) {
            let request = selected.tap.request();
            if let Some(filter) = &request.topic {
                let kept = publish_topic(&frame)
                    .and_then(|topic| std::str::from_utf8(topic).ok())
                    .is_some_and(|topic| crate::topic::matches(filter, topic));
                if !kept {
                    continue;
                }
            }
            if !selected.started[stream] {
                selected.started[stream] = true;
                start(&selected.tap, seat, stream, moment.greeted);
            }
            let kind = packet_type(&frame);
            if (kind == CONNECT || kind == AUTH) && !request.unredacted {
                let mut shown = frame.to_vec();
                for range in secrets(&shown) {
                    shown[range].fill(b'*');
                }
                batch.extend_from_slice(&shown);
            } else {
                batch.extend_from_slice(&frame);
            }
        }
    }
    for (selected, batch) in capture.taps.iter().zip(batches) {
        if !batch.is_empty() {
            selected
                .tap
                .offer(segment(seat, stream, from_client, batch.freeze()));
        }
    }
}

/// The taps that select the session at `generation`, keeping what the
/// previous capture knew of those still attached.
fn select(
    previous: Option<Box<Capture>>,
    moment: &Moment<'_>,
    generation: u64,
    streams: usize,
) -> Capture {
    let seat = &moment.seated.seat;
    let peer = seat.peer.map(|p| p.ip());
    let mut previous = previous.map(|p| *p);
    let taps = tap::taps()
        .into_iter()
        .filter(|tap| {
            tap.request()
                .selects(moment.seated.binding(), &seat.client_id, peer)
        })
        .map(|tap| {
            let started = previous
                .as_mut()
                .and_then(|p| p.taps.iter_mut().find(|s| Arc::ptr_eq(&s.tap, &tap)))
                .map(|s| std::mem::take(&mut s.started))
                .unwrap_or_else(|| vec![false; streams]);
            Selected { tap, started }
        })
        .collect::<Vec<_>>();
    let pending = match previous {
        Some(previous) if !taps.is_empty() => previous.pending,
        _ => (0..streams).map(|_| Default::default()).collect(),
    };
    Capture {
        generation,
        taps,
        pending,
    }
}

/// Starts `stream` in `tap`'s dump with a CONNECT and a CONNACK.
fn start(tap: &Tap, seat: &Seat, stream: usize, greeted: bool) {
    if stream == 0 {
        let connect = Bytes::from(seat.hello.connect_redacted());
        tap.offer(segment(seat, 0, true, connect));
        // Not yet greeted: the CONNACK is in the write being captured.
        if greeted && !seat.hello.connack().is_empty() {
            let connack = Bytes::copy_from_slice(seat.hello.connack());
            tap.offer(segment(seat, 0, false, connack));
        }
        return;
    }
    let version = seat.upstreams[stream - 1].version;
    let mut out = BytesMut::new();
    let connect = Connect {
        keep_alive: 0,
        client_id: seat.client_id.to_string(),
        clean_start: true,
        properties: None,
    };
    if codec::write(&Packet::Connect(connect, None, None), version, &mut out).is_ok() {
        tap.offer(segment(seat, stream, true, out.split().freeze()));
    }
    let connack = ConnAck {
        session_present: false,
        code: ConnectReturnCode::Success,
        properties: None,
    };
    if codec::write(&Packet::ConnAck(connack), version, &mut out).is_ok() {
        tap.offer(segment(seat, stream, false, out.freeze()));
    }
}

/// A segment of `stream` with its addresses: the client's connection from
/// the client to the proxy, an upstream's from the proxy to the broker,
/// the accepting side on port 1883.
fn segment(seat: &Seat, stream: usize, from_client: bool, bytes: Bytes) -> Segment {
    let unknown = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
    let (client, server) = match stream {
        0 => (seat.peer.unwrap_or(unknown), seat.local.unwrap_or(unknown)),
        _ => seat.upstreams[stream - 1]
            .addresses
            .unwrap_or((unknown, unknown)),
    };
    Segment {
        stream: seat.id << 8 | stream as u64,
        client,
        server: SocketAddr::new(server.ip(), MQTT_PORT),
        from_client,
        at: now(),
        bytes,
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "a packet capture's timestamps are wall-clock times"
)]
fn now() -> SystemTime {
    SystemTime::now()
}
