//! A dump's segments as a classic pcap file (LINKTYPE_RAW): each captured
//! connection a synthetic TCP stream between its real addresses, the
//! accepting side on port 1883, opened with a three-way handshake and with
//! sequence numbers that run on across the segments the dump kept, so
//! Wireshark decodes MQTT and follows the stream with no settings.
//!
//! Checksums are left zero: Wireshark does not check them by default, and
//! the bytes are not what crossed any wire anyway (TLS and WebSocket are
//! already taken off).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use zilla_engine::admin::Segment;

/// LINKTYPE_RAW: packets begin with an IPv4 or IPv6 header.
const LINKTYPE_RAW: u32 = 101;
const SNAPLEN: u32 = 262_144;
/// The most payload per packet: an IPv4 packet's length field is 16 bits.
const MAX_PAYLOAD: usize = 65_000;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH_ACK: u8 = 0x18;

/// The file header.
pub(crate) fn header() -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&SNAPLEN.to_le_bytes());
    out.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
    out
}

/// The sequence numbers of the streams written so far.
#[derive(Debug, Default)]
pub(crate) struct Streams {
    /// (next sequence number from the client, from the server), by stream.
    next: HashMap<u64, (u32, u32)>,
}

impl Streams {
    /// Appends `segment`'s packets to `out`; how many.
    pub(crate) fn write(&mut self, segment: &Segment, out: &mut Vec<u8>) -> u64 {
        let (client, server) = (segment.client, segment.server);
        let mut packets = 0;
        let at = segment.at;
        let seqs = self.next.entry(segment.stream).or_insert_with(|| {
            // The handshake, so that Wireshark sees the stream begin.
            packet(out, at, client, server, 0, 0, SYN, &[]);
            packet(out, at, server, client, 0, 1, SYN | ACK, &[]);
            packet(out, at, client, server, 1, 1, ACK, &[]);
            packets += 3;
            (1, 1)
        });
        for chunk in segment.bytes.chunks(MAX_PAYLOAD) {
            let length = chunk.len() as u32;
            if segment.from_client {
                packet(out, at, client, server, seqs.0, seqs.1, PSH_ACK, chunk);
                seqs.0 = seqs.0.wrapping_add(length);
            } else {
                packet(out, at, server, client, seqs.1, seqs.0, PSH_ACK, chunk);
                seqs.1 = seqs.1.wrapping_add(length);
            }
            packets += 1;
        }
        packets
    }
}

/// One packet record: IP header, TCP header, payload.
#[expect(clippy::too_many_arguments, reason = "a TCP header's fields, one each")]
fn packet(
    out: &mut Vec<u8>,
    at: SystemTime,
    from: SocketAddr,
    to: SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) {
    let mut tcp = Vec::with_capacity(20 + payload.len());
    tcp.extend_from_slice(&from.port().to_be_bytes());
    tcp.extend_from_slice(&to.port().to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.push(5 << 4); // data offset: 20 bytes
    tcp.push(flags);
    tcp.extend_from_slice(&65_535u16.to_be_bytes()); // window
    tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    tcp.extend_from_slice(payload);
    let ip = match (from.ip(), to.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let mut ip = Vec::with_capacity(20);
            ip.push(0x45);
            ip.push(0);
            ip.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&[0, 0, 0x40, 0]); // id, don't fragment
            ip.push(64); // ttl
            ip.push(6); // TCP
            ip.extend_from_slice(&[0, 0]);
            ip.extend_from_slice(&src.octets());
            ip.extend_from_slice(&dst.octets());
            let checksum = ipv4_checksum(&ip);
            ip[10..12].copy_from_slice(&checksum.to_be_bytes());
            ip
        }
        (src, dst) => {
            let mut ip = Vec::with_capacity(40);
            ip.extend_from_slice(&[0x60, 0, 0, 0]);
            ip.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
            ip.push(6);
            ip.push(64);
            ip.extend_from_slice(&v6(src).octets());
            ip.extend_from_slice(&v6(dst).octets());
            ip
        }
    };
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let length = (ip.len() + tcp.len()) as u32;
    out.extend_from_slice(&(since.as_secs() as u32).to_le_bytes());
    out.extend_from_slice(&since.subsec_micros().to_le_bytes());
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&ip);
    out.extend_from_slice(&tcp);
}

fn v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
        .sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn segment(from_client: bool, bytes: &'static [u8]) -> Segment {
        Segment {
            stream: 7,
            client: "127.0.0.1:50000".parse().unwrap(),
            server: "127.0.0.1:1883".parse().unwrap(),
            from_client,
            at: UNIX_EPOCH,
            bytes: Bytes::from_static(bytes),
        }
    }

    #[test]
    fn streams_open_with_a_handshake_and_number_their_bytes() {
        let mut streams = Streams::default();
        let mut out = Vec::new();
        assert_eq!(streams.write(&segment(true, b"\xc0\x00"), &mut out), 4);
        assert_eq!(streams.write(&segment(false, b"\xd0\x00"), &mut out), 1);
        assert_eq!(streams.write(&segment(true, b"\xe0\x00"), &mut out), 1);
        assert_eq!(streams.next[&7], (5, 3));
        // Four 40-byte handshake/ack records... every record is 16 + 40 + payload.
        assert_eq!(out.len(), 3 * (16 + 40) + 3 * (16 + 40 + 2));
    }

    #[test]
    fn the_ipv4_checksum_verifies() {
        let mut out = Vec::new();
        packet(
            &mut out,
            UNIX_EPOCH,
            "10.0.0.1:1".parse().unwrap(),
            "10.0.0.2:1883".parse().unwrap(),
            1,
            1,
            PSH_ACK,
            b"x",
        );
        let ip = &out[16..36];
        assert_eq!(ipv4_checksum(ip), 0);
        assert_eq!(header().len(), 24);
    }
}
