//! Packet taps: `zilla dump` attaches one, bindings offer it the bytes they
//! read and write, and the host turns them into a packet capture.
//!
//! Offering never waits: each tap has a bounded queue, and a segment that
//! does not fit is dropped whole and counted, so a slow reader of the dump
//! loses packets instead of slowing any session. While no tap is attached
//! a binding pays one relaxed atomic load per read or write ([`active`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// What a dump captures; every field set narrows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpRequest {
    /// Only the sessions of this binding.
    pub binding: Option<String>,
    /// Only sessions whose client id matches this glob.
    pub client_id: Option<String>,
    /// Only clients from this network, `address/prefix` or one address.
    pub source: Option<String>,
    /// Only messages (PUBLISH) whose topic matches this MQTT topic filter.
    pub topic: Option<String>,
    /// Passwords and authentication data left as they were.
    pub unredacted: bool,
}

impl DumpRequest {
    /// Whether a session of `binding` with `client_id` from `peer` is captured.
    pub fn selects(&self, binding: &str, client_id: &str, peer: Option<IpAddr>) -> bool {
        self.binding.as_deref().is_none_or(|b| b == binding)
            && self
                .client_id
                .as_deref()
                .is_none_or(|glob| super::glob_matches(glob, client_id))
            && self.source.as_deref().is_none_or(|cidr| {
                peer.is_some_and(|peer| parse_cidr(cidr).is_ok_and(|net| net.contains(peer)))
            })
    }
}

/// A network, `address/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    address: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside (an IPv4 client seen as `::ffff:a.b.c.d` too).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Reads `10.0.0.0/8`, `2001:db8::/32` or a single address.
pub fn parse_cidr(text: &str) -> Result<Cidr, String> {
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (text, None),
    };
    let address: IpAddr = address
        .parse()
        .map_err(|_| format!("`{text}` is not an address or a network (address/prefix)"))?;
    let bits = if address.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => bits,
        Some(prefix) => match prefix.parse::<u8>() {
            Ok(p) if p <= bits => p,
            _ => return Err(format!("`{text}`: the prefix must be 0 to {bits}")),
        },
    };
    Ok(Cidr { address, prefix })
}

/// Bytes one side of a connection sent, whole protocol frames.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Which connection: unique in the process for its life.
    pub stream: u64,
    /// The connecting side's address (the device, or the proxy toward a broker).
    pub client: SocketAddr,
    /// The accepting side's address (the proxy, or the broker).
    pub server: SocketAddr,
    /// Sent by the connecting side.
    pub from_client: bool,
    /// When it was read or written.
    pub at: SystemTime,
    /// The frames.
    pub bytes: Bytes,
}

/// An attached dump: its request and its queue.
#[derive(Debug)]
pub struct Tap {
    request: DumpRequest,
    queue: mpsc::Sender<Segment>,
    dropped: AtomicU64,
    /// Bytes queued and not yet taken by the reader, and the most allowed:
    /// what a dump holds stays bounded whatever the segments' sizes.
    queued: AtomicUsize,
    budget: usize,
}

impl Tap {
    /// What it captures.
    pub fn request(&self) -> &DumpRequest {
        &self.request
    }

    /// Queues `segment`; drops and counts it when the queue is full.
    pub fn offer(&self, segment: Segment) {
        let size = segment.bytes.len();
        let queued = self.queued.fetch_add(size, Ordering::Relaxed);
        if queued + size > self.budget || self.queue.try_send(segment).is_err() {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn taken(&self, segment: Option<Segment>) -> Option<Segment> {
        if let Some(segment) = &segment {
            self.queued
                .fetch_sub(segment.bytes.len(), Ordering::Relaxed);
        }
        segment
    }

    /// Segments dropped so far because the reader fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

static TAPS: RwLock<Vec<Arc<Tap>>> = RwLock::new(Vec::new());
static COUNT: AtomicUsize = AtomicUsize::new(0);
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Whether any dump is attached: what a binding checks on every read and
/// write, one relaxed load.
#[inline]
pub fn active() -> bool {
    COUNT.load(Ordering::Relaxed) != 0
}

/// Changes whenever a dump attaches or detaches: a session caches which
/// taps select it, and looks again when this moved.
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// The attached taps.
pub fn taps() -> Vec<Arc<Tap>> {
    TAPS.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// A dump while attached: the segments arrive on [`Attached::next`];
/// dropping it detaches.
#[derive(Debug)]
pub struct Attached {
    tap: Arc<Tap>,
    segments: mpsc::Receiver<Segment>,
}

impl Attached {
    /// The next captured segment.
    pub async fn next(&mut self) -> Option<Segment> {
        let segment = self.segments.recv().await;
        self.tap.taken(segment)
    }

    /// The next captured segment if one is queued, without waiting.
    pub fn try_next(&mut self) -> Option<Segment> {
        let segment = self.segments.try_recv().ok();
        self.tap.taken(segment)
    }

    /// Segments dropped so far because the reader fell behind.
    pub fn dropped(&self) -> u64 {
        self.tap.dropped()
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let mut taps = TAPS.write().unwrap_or_else(|p| p.into_inner());
        taps.retain(|tap| !Arc::ptr_eq(tap, &self.tap));
        COUNT.store(taps.len(), Ordering::Relaxed);
        GENERATION.fetch_add(1, Ordering::Release);
    }
}

/// Attaches a dump of what `request` selects, queueing up to `capacity`
/// segments and `budget` bytes for its reader.
pub fn attach(request: DumpRequest, capacity: usize, budget: usize) -> Attached {
    let (queue, segments) = mpsc::channel(capacity.max(1));
    let tap = Arc::new(Tap {
        request,
        queue,
        dropped: AtomicU64::new(0),
        queued: AtomicUsize::new(0),
        budget,
    });
    let mut taps = TAPS.write().unwrap_or_else(|p| p.into_inner());
    taps.push(tap.clone());
    COUNT.store(taps.len(), Ordering::Relaxed);
    GENERATION.fetch_add(1, Ordering::Release);
    Attached { tap, segments }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_addresses() {
        let net = parse_cidr("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(parse_cidr("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        let one = parse_cidr("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(parse_cidr("2001:db8::/32")
            .unwrap()
            .contains("2001:db8:1::1".parse().unwrap()));
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("ten").is_err());
    }

    #[test]
    fn requests_select_by_binding_client_id_and_source() {
        let request = DumpRequest {
            binding: Some("north".into()),
            client_id: Some("dev-*".into()),
            source: Some("127.0.0.0/8".into()),
            ..Default::default()
        };
        let local = Some("127.0.0.1".parse().unwrap());
        assert!(request.selects("north", "dev-1", local));
        assert!(!request.selects("south", "dev-1", local));
        assert!(!request.selects("north", "other", local));
        assert!(!request.selects("north", "dev-1", Some("10.0.0.1".parse().unwrap())));
        assert!(!request.selects("north", "dev-1", None));
        assert!(DumpRequest::default().selects("any", "any", None));
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let mut attached = attach(DumpRequest::default(), 2, 1024);
        assert!(active());
        let tap = taps().pop().unwrap();
        let segment = Segment {
            stream: 1,
            client: "127.0.0.1:5000".parse().unwrap(),
            server: "127.0.0.1:1883".parse().unwrap(),
            from_client: true,
            at: SystemTime::UNIX_EPOCH,
            bytes: Bytes::from_static(b"\xc0\x00"),
        };
        for _ in 0..5 {
            tap.offer(segment.clone());
        }
        assert_eq!(attached.dropped(), 3);
        assert!(attached.next().await.is_some());
        // A byte budget bounds it too: 1,024 bytes hold no 2,000-byte segment.
        let big = Segment {
            bytes: Bytes::from(vec![0u8; 2000]),
            ..segment.clone()
        };
        tap.offer(big);
        assert_eq!(attached.dropped(), 4);
        let before = generation();
        drop(tap);
        drop(attached);
        assert_ne!(generation(), before);
    }
}
