//! The PROXY protocol (v1 text, v2 binary) on accepted connections.
//!
//! A load balancer that terminates TCP in front of the proxy opens its own
//! connection, so the socket's peer is the balancer. HAProxy's PROXY protocol
//! has it write the original client's address first; a server with
//! `options.proxy-protocol` reads that header, from trusted peers only, and
//! the client's address becomes the stream's peer for `cidr` routes, events
//! and metrics.
//!
//! [`sniff`] decides what the first bytes are without any I/O, parsing with
//! the `ppp` crate (decision 0020); [`read_until_verdict`] feeds it from the
//! socket, never asking for more bytes than the header can still need (a v2
//! header is read exactly; a v1 read may run past its CRLF); and
//! [`ProxyProtocol::admit`] applies the policy and the deadline. Bytes read
//! that are not the header go on to the exit through [`Prefixed`].

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use ppp::{v1, v2, PartialResult};
use tokio::io::{AsyncRead, AsyncReadExt};
use zilla_engine::telemetry::duration;

use crate::options::{ProxyProtocolMode, ProxyProtocolOptions};
use crate::prefixed::Prefixed;

/// Engine property: seconds a connection has to deliver its header.
pub(crate) const PROPERTY_TIMEOUT: &str = "zilla.binding.tcp.proxy.protocol.timeout";
/// Long enough for any balancer, which writes the header at once; short
/// enough that silent connections do not pile up.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// `PROXY ` starts every v1 header.
const V1_SIGNATURE: &[u8] = b"PROXY ";
/// The longest v1 header, CRLF included, as the specification bounds it.
const V1_MAX: usize = 107;
/// A v2 header's fixed part: 12-byte signature, version and command, address
/// family and protocol, and the 2-byte length of what follows.
const V2_FIXED: usize = 16;

/// What the first bytes of a connection are, as far as they go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sniff {
    /// Undecided; at most this many more bytes can belong to a header.
    NeedMore(usize),
    /// Decided.
    Done(Verdict),
}

/// What the first bytes of a connection turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not a PROXY protocol header: the bytes belong to the exit.
    Absent,
    /// A complete, valid header.
    Header(Header),
    /// A header's signature followed by something that is not a valid header.
    Malformed(String),
}

/// A parsed PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// Its length in bytes; what follows it belongs to the exit.
    pub(crate) len: usize,
    /// The client it names, or `None` when it names none (v2 `LOCAL`, as
    /// balancers send for their own health checks; v1 `UNKNOWN`; v2 unix or
    /// unspecified addresses): the socket's address stands then.
    pub(crate) source: Option<SocketAddr>,
}

/// Decides what `buf`, the first bytes of a connection, is.
pub(crate) fn sniff(buf: &[u8]) -> Sniff {
    let v2_signature = v2::PROTOCOL_PREFIX;
    if buf.is_empty() {
        // Either version fits in 16 bytes so far; no more may be asked for
        // before the version is known, as a v2 header's length comes last.
        return Sniff::NeedMore(V2_FIXED);
    }
    if buf.starts_with(v2_signature) {
        return sniff_v2(buf).map_or_else(Sniff::NeedMore, Sniff::Done);
    }
    if buf.len() < v2_signature.len() && v2_signature.starts_with(buf) {
        return Sniff::NeedMore(V2_FIXED - buf.len());
    }
    if buf.starts_with(V1_SIGNATURE) {
        return sniff_v1(buf).map_or_else(Sniff::NeedMore, Sniff::Done);
    }
    if buf.len() < V1_SIGNATURE.len() && V1_SIGNATURE.starts_with(buf) {
        return Sniff::NeedMore(V1_MAX - buf.len());
    }
    // MQTT, TLS and HTTP clients differ from both signatures in their first
    // or second byte, so they are never held up waiting.
    Sniff::Done(Verdict::Absent)
}

/// A v2 verdict, or how many more bytes it needs.
fn sniff_v2(buf: &[u8]) -> Result<Verdict, usize> {
    match v2::Header::try_from(buf) {
        Ok(header) => Ok(Verdict::Header(Header {
            len: header.len(),
            source: match (header.command, header.addresses) {
                (v2::Command::Local, _) => None,
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (v2::Command::Proxy, _) => None,
            },
        })),
        Err(v2::ParseError::Incomplete(have)) => Err(V2_FIXED - have),
        // The length is known: read exactly the rest, and not a byte more.
        Err(v2::ParseError::Partial(have, need)) => Err(need - have),
        Err(error) => Ok(Verdict::Malformed(error.to_string())),
    }
}

/// A v1 verdict, or how many more bytes it may need.
fn sniff_v1(buf: &[u8]) -> Result<Verdict, usize> {
    let parsed = v1::Header::try_from(buf);
    // ppp tells a header cut short (more bytes may complete it) from one
    // that no more bytes can mend, so a bad header is refused at once.
    let incomplete = parsed.is_incomplete();
    match parsed {
        Ok(header) => Ok(Verdict::Header(Header {
            len: header.header.len(),
            source: match header.addresses {
                v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Unknown => None,
            },
        })),
        // At the 107-byte bound ppp reports the header too long.
        Err(_) if incomplete => Err(V1_MAX.saturating_sub(buf.len()).max(1)),
        Err(error) => Ok(Verdict::Malformed(error.to_string())),
    }
}

/// Whether `buf` starts with a whole v1 or v2 signature.
fn has_signature(buf: &[u8]) -> bool {
    buf.starts_with(v2::PROTOCOL_PREFIX) || buf.starts_with(V1_SIGNATURE)
}

/// Reads from `stream` into `buf` until [`sniff`] decides; `None` when the
/// peer closed first. Cancel-safe: `buf` holds every byte read so far, so a
/// caller whose deadline passed can still hand them on.
pub(crate) async fn read_until_verdict<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> io::Result<Option<Verdict>> {
    const CHUNK: usize = 2048;
    let mut chunk = [0u8; CHUNK];
    loop {
        let want = match sniff(buf) {
            Sniff::NeedMore(want) => want,
            Sniff::Done(verdict) => return Ok(Some(verdict)),
        };
        let n = stream.read(&mut chunk[..want.min(CHUNK)]).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A connection let through, with its client's address.
#[derive(Debug)]
pub(crate) struct Admitted<S> {
    /// The connection, with any bytes read past the header put back in front.
    pub(crate) stream: Prefixed<S>,
    /// The client: the header's source, else the socket's peer.
    pub(crate) peer: SocketAddr,
}

/// Why a connection was closed: the text of `TCP_PROXY_PROTOCOL_REJECTED`,
/// or `None` for a peer that closed before sending a byte (balancers' TCP
/// health checks do so by the thousand; they are not worth an event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused(pub(crate) Option<String>);

/// A tcp server's PROXY protocol policy.
#[derive(Debug, Clone)]
pub(crate) struct ProxyProtocol {
    pub(crate) options: ProxyProtocolOptions,
    /// How long a connection has to deliver its header.
    pub(crate) timeout: Duration,
}

impl ProxyProtocol {
    /// Reads the header of a connection from `socket_peer`, as the mode and
    /// trusted networks allow.
    pub(crate) async fn admit<S: AsyncRead + Unpin>(
        &self,
        mut stream: S,
        socket_peer: SocketAddr,
    ) -> Result<Admitted<S>, Refused> {
        let trusted = self.options.trusts(socket_peer.ip());
        let required = self.options.mode == ProxyProtocolMode::Required;
        let refuse = |why: String| Err(Refused(Some(format!("{socket_peer} {why}"))));
        if required && !trusted {
            return refuse("is not a trusted proxy (`proxy-protocol.from`); refused".into());
        }
        let mut buf = Vec::new();
        let read = tokio::time::timeout(self.timeout, read_until_verdict(&mut stream, &mut buf));
        let outcome = read.await;
        let admit = |peer, rest| {
            Ok(Admitted {
                stream: Prefixed::new(rest, stream),
                peer,
            })
        };
        let verdict = match outcome {
            Ok(Ok(Some(verdict))) => verdict,
            // Nothing arrived: in `optional` mode the exit takes it from here
            // (a client may wait for the server to speak first).
            _ if buf.is_empty() && !required => return admit(socket_peer, buf),
            Err(_) if buf.is_empty() => {
                return refuse(format!(
                    "sent no PROXY protocol header within {}; closed",
                    duration(self.timeout)
                ))
            }
            _ if buf.is_empty() => return Err(Refused(None)),
            Ok(Err(error)) => {
                return refuse(format!("failed inside a PROXY protocol header: {error}"))
            }
            Ok(Ok(None)) if required || has_signature(&buf) => {
                return refuse(format!(
                    "closed after {} bytes, inside a PROXY protocol header",
                    buf.len()
                ))
            }
            // A few bytes like a signature's start, then the end: not a header.
            Ok(Ok(None)) => Verdict::Absent,
            Err(_) => {
                return refuse(format!(
                    "sent no complete PROXY protocol header within {}; closed",
                    duration(self.timeout)
                ))
            }
        };
        match verdict {
            Verdict::Header(header) if trusted => {
                let rest = buf.split_off(header.len);
                admit(header.source.unwrap_or(socket_peer), rest)
            }
            Verdict::Header(_) => refuse(
                "sent a PROXY protocol header but is not a trusted proxy \
                 (`proxy-protocol.from`); closed"
                    .into(),
            ),
            Verdict::Malformed(why) => refuse(format!(
                "sent a malformed PROXY protocol header: {why}; closed"
            )),
            Verdict::Absent if required => refuse("sent no PROXY protocol header; closed".into()),
            Verdict::Absent => admit(socket_peer, buf),
        }
    }
}
