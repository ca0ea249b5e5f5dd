//! An mqtt server's sessions as the host's admin socket sees them: a seat
//! per admitted session with what `zilla sessions` lists, the signal
//! `zilla disconnect` gives, and the frames `zilla dump` starts a stream
//! with when it attaches to a session already running.
//!
//! Written once when the session is admitted and read only when an operator
//! asks; the in-flight counts are the one thing a session updates, a
//! relaxed store per turn of its loop.
//!
//! A seat also holds its session's one wake-up signal (the takeover signal
//! of its registration): `zilla disconnect` and the server's drain wake the
//! session through it, so an idle session waits on a single signal, and the
//! session tells why it woke by its seat and the shutdown state.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use zilla_engine::admin::sessions::{SessionInfo, SessionSource};

use crate::codec::Version;
use crate::dump_frames::{frame_len, secrets_with};

/// The seats of one mqtt server's sessions.
#[derive(Debug)]
pub(crate) struct Seats {
    /// The server binding's name.
    pub(crate) binding: Arc<str>,
    seats: Mutex<HashMap<u64, Arc<Seat>>>,
}

/// Stream numbers for dumps, unique in the process.
static NEXT_SEAT: AtomicU64 = AtomicU64::new(1);

/// One admitted session.
#[derive(Debug)]
pub(crate) struct Seat {
    /// Unique in the process: a dump's streams are numbered from it.
    pub(crate) id: u64,
    pub(crate) client_id: Arc<str>,
    pub(crate) identity: Option<Box<str>>,
    pub(crate) peer: Option<SocketAddr>,
    /// Where the client connected to (the proxy's address).
    pub(crate) local: Option<SocketAddr>,
    pub(crate) version: Version,
    pub(crate) upstreams: Box<[SeatUpstream]>,
    /// Seconds since the Unix epoch at admission.
    pub(crate) since: u64,
    /// Set by `zilla disconnect` before the session's signal is given.
    kicked: AtomicBool,
    /// The session's takeover signal: a disconnect or the server's drain
    /// wakes the session through it (no second signal for every idle
    /// session to wait on); the session reads `kicked` and whether its
    /// server drains to tell why.
    signal: Arc<Notify>,
    inflight_in: AtomicU32,
    inflight_out: AtomicU32,
    /// The client's CONNECT with its secrets cut out, and the CONNACK it
    /// got: what a dump attaching later starts the client's stream with.
    pub(crate) hello: Hello,
}

/// One upstream of a seat.
#[derive(Debug)]
pub(crate) struct SeatUpstream {
    pub(crate) exit: Arc<str>,
    pub(crate) version: Version,
    /// (local, broker), when the socket told them.
    pub(crate) addresses: Option<(SocketAddr, SocketAddr)>,
}

/// The frames that opened a session, kept without its secrets.
#[derive(Debug, Default)]
pub(crate) struct Hello {
    /// The CONNECT, with every secret's bytes cut out, then the CONNACK:
    /// one boxed slice, not `Bytes` or two boxes, since every session
    /// keeps it (a CONNACK of 3.1.1 is 4 bytes, and a heap block of its
    /// own would take 32).
    frames: Box<[u8]>,
    /// Where the CONNACK starts in `frames`.
    connack_at: u32,
    /// Where the secrets were: (offset in the original frame, length).
    cut: Box<[(u32, u32)]>,
}

impl Hello {
    /// Keeps `connect` (a CONNECT frame) without its secrets (the user
    /// name too when `username_was_token`: a bearer token is a secret, and
    /// the largest part of a CONNECT every idle session would keep), and
    /// the CONNACK at the start of `client_out`.
    pub(crate) fn new(connect: &[u8], client_out: &[u8], username_was_token: bool) -> Self {
        let secrets = secrets_with(connect, username_was_token);
        // Exactly what is kept: every idle session holds it, and a
        // shrinking reallocation would leave the token's room behind.
        let cut_len: usize = secrets.iter().map(|range| range.len()).sum();
        let connack = frame_len(client_out).map_or(&[][..], |n| &client_out[..n]);
        let mut kept = Vec::with_capacity(connect.len() - cut_len + connack.len());
        let mut cut = Vec::with_capacity(secrets.len());
        let mut at = 0;
        for range in secrets {
            kept.extend_from_slice(&connect[at..range.start]);
            cut.push((range.start as u32, range.len() as u32));
            at = range.end;
        }
        kept.extend_from_slice(&connect[at..]);
        let connack_at = kept.len() as u32;
        kept.extend_from_slice(connack);
        Self {
            frames: kept.into(),
            connack_at,
            cut: cut.into(),
        }
    }

    /// The CONNACK the client got (empty if none was queued).
    pub(crate) fn connack(&self) -> &[u8] {
        &self.frames[self.connack_at as usize..]
    }

    /// The CONNECT without its secrets' bytes.
    fn connect(&self) -> &[u8] {
        &self.frames[..self.connack_at as usize]
    }

    /// The CONNECT as it was, its secrets replaced by as many `*`.
    pub(crate) fn connect_redacted(&self) -> Vec<u8> {
        let total = self.connect().len() + self.cut.iter().map(|c| c.1 as usize).sum::<usize>();
        let mut frame = Vec::with_capacity(total);
        let mut kept = self.connect().iter().copied();
        for &(offset, length) in self.cut.iter() {
            while frame.len() < offset as usize {
                match kept.next() {
                    Some(byte) => frame.push(byte),
                    None => break,
                }
            }
            frame.resize(frame.len() + length as usize, b'*');
        }
        frame.extend(kept);
        frame
    }
}

/// What a seat is made of, before it has its number.
pub(crate) struct NewSeat {
    pub(crate) client_id: Arc<str>,
    pub(crate) identity: Option<String>,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) local: Option<SocketAddr>,
    pub(crate) version: Version,
    pub(crate) upstreams: Vec<SeatUpstream>,
    pub(crate) since: u64,
    pub(crate) hello: Hello,
    /// The session's takeover signal (its registration's).
    pub(crate) signal: Arc<Notify>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Seats {
    /// The seats of binding `binding`, visible to the admin socket while they live.
    pub(crate) fn new(binding: &str) -> Arc<Self> {
        let seats = Arc::new(Self {
            binding: binding.into(),
            seats: Mutex::new(HashMap::new()),
        });
        let weak: std::sync::Weak<dyn SessionSource> = Arc::downgrade(&seats) as _;
        zilla_engine::admin::register_sessions(weak);
        seats
    }

    /// Seats a session until the returned guard drops.
    pub(crate) fn seat(self: &Arc<Self>, new: NewSeat) -> Seated {
        let seat = Arc::new(Seat {
            id: NEXT_SEAT.fetch_add(1, Ordering::Relaxed),
            client_id: new.client_id,
            identity: new.identity.map(Into::into),
            peer: new.peer,
            local: new.local,
            version: new.version,
            upstreams: new.upstreams.into(),
            since: new.since,
            kicked: AtomicBool::new(false),
            signal: new.signal,
            inflight_in: AtomicU32::new(0),
            inflight_out: AtomicU32::new(0),
            hello: new.hello,
        });
        lock(&self.seats).insert(seat.id, seat.clone());
        Seated {
            seats: self.clone(),
            seat,
        }
    }

    /// Wakes every seated session: the server drains. A session seated
    /// after this reads the drain when its relay starts.
    pub(crate) fn drain(&self) {
        for seat in lock(&self.seats).values() {
            seat.signal.notify_one();
        }
    }
}

impl SessionSource for Seats {
    fn sessions(&self) -> Vec<SessionInfo> {
        let seats: Vec<Arc<Seat>> = lock(&self.seats).values().cloned().collect();
        seats
            .iter()
            .map(|seat| SessionInfo {
                binding: self.binding.to_string(),
                client_id: seat.client_id.to_string(),
                identity: seat.identity.as_deref().map(str::to_owned),
                peer: seat.peer.map(|p| p.to_string()),
                protocol: match seat.version {
                    Version::V5 => "MQTT 5.0".into(),
                    _ => "MQTT 3.1.1".into(),
                },
                upstreams: seat.upstreams.iter().map(|u| u.exit.to_string()).collect(),
                inflight_in: seat.inflight_in.load(Ordering::Relaxed),
                inflight_out: seat.inflight_out.load(Ordering::Relaxed),
                since: seat.since,
            })
            .collect()
    }

    fn disconnect(&self, client_id: &str) -> usize {
        let seats = lock(&self.seats);
        let kicked = seats.values().filter(|s| &*s.client_id == client_id);
        kicked
            .map(|seat| {
                seat.kicked.store(true, Ordering::Release);
                // A permit if the session is not waiting right now: not lost.
                seat.signal.notify_one();
            })
            .count()
    }
}

/// A session's seat, left when dropped.
#[derive(Debug)]
pub(crate) struct Seated {
    seats: Arc<Seats>,
    pub(crate) seat: Arc<Seat>,
}

impl Seat {
    /// Whether `zilla disconnect` ended it (else its signal is a takeover).
    pub(crate) fn kicked(&self) -> bool {
        self.kicked.load(Ordering::Acquire)
    }
}

impl Seated {
    /// Records the session's in-flight counts (client publishes, deliveries).
    pub(crate) fn in_flight(&self, inbound: usize, outbound: usize) {
        let seat = &self.seat;
        seat.inflight_in
            .store(inbound.min(u32::MAX as usize) as u32, Ordering::Relaxed);
        seat.inflight_out
            .store(outbound.min(u32::MAX as usize) as u32, Ordering::Relaxed);
    }

    /// The binding the session belongs to.
    pub(crate) fn binding(&self) -> &str {
        &self.seats.binding
    }
}

impl Drop for Seated {
    fn drop(&mut self) {
        lock(&self.seats.seats).remove(&self.seat.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::takeover::{Registration, SessionRegistry};

    fn new_seat(registration: &Registration) -> NewSeat {
        NewSeat {
            client_id: registration.shared_client_id(),
            identity: Some("device1".into()),
            peer: Some("127.0.0.1:50000".parse().unwrap()),
            local: None,
            version: Version::V5,
            upstreams: vec![SeatUpstream {
                exit: "north_mqtt_client".into(),
                version: Version::V5,
                addresses: None,
            }],
            since: 1,
            hello: Hello::default(),
            signal: registration.taken_over(),
        }
    }

    #[test]
    fn seats_list_and_kick_their_sessions_until_they_leave() {
        let registry: Arc<SessionRegistry> = Arc::default();
        let seats = Seats::new("north_mqtt_server");
        let (first, _) = registry.register("one");
        let (second, _) = registry.register("two");
        let one = seats.seat(new_seat(&first));
        let two = seats.seat(new_seat(&second));
        two.in_flight(3, 1);
        let mut listed = seats.sessions();
        listed.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[1].client_id, "two");
        assert_eq!((listed[1].inflight_in, listed[1].inflight_out), (3, 1));
        assert_eq!(listed[0].identity.as_deref(), Some("device1"));
        assert_eq!(listed[0].protocol, "MQTT 5.0");
        assert_eq!(listed[0].upstreams, ["north_mqtt_client"]);
        assert_eq!(seats.disconnect("one"), 1);
        assert_eq!(seats.disconnect("three"), 0);
        assert!(one.seat.kicked() && !two.seat.kicked());
        // The session is woken through its takeover signal; no other is.
        assert!(first.signalled());
        assert!(!second.signalled());
        drop(one);
        assert_eq!(seats.sessions().len(), 1);
    }

    #[test]
    fn a_drain_wakes_this_servers_seated_sessions_only() {
        // Two servers sharing a store's registry (or a reload's two
        // generations): one draining must not wake the other's sessions.
        let registry: Arc<SessionRegistry> = Arc::default();
        let (draining, other) = (Seats::new("old"), Seats::new("new"));
        let (mine, _) = registry.register("one");
        let (theirs, _) = registry.register("two");
        let _seated = (
            draining.seat(new_seat(&mine)),
            other.seat(new_seat(&theirs)),
        );
        draining.drain();
        assert!(mine.signalled());
        assert!(!theirs.signalled());
        assert!(!_seated.0.seat.kicked(), "a drain is not a disconnect");
    }

    #[test]
    fn a_redacted_connect_keeps_its_length() {
        let hello = Hello {
            frames: b"abcdef\x20\x02\x00\x00"[..].into(),
            connack_at: 6,
            cut: vec![(2, 3), (7, 2)].into(),
        };
        assert_eq!(hello.connect_redacted(), b"ab***cd**ef");
        assert_eq!(hello.connack(), b"\x20\x02\x00\x00");
    }

    #[test]
    fn hello_keeps_the_connect_without_its_password_and_the_connack() {
        // CONNECT 3.1.1, client id "c", user name "u", password "pw".
        let connect = b"\x10\x14\x00\x04MQTT\x04\xc2\x00\x3c\x00\x01c\x00\x01u\x00\x02pw";
        let connack = b"\x20\x02\x00\x00";
        let mut client_out = connack.to_vec();
        client_out.extend_from_slice(b"\x30\x03\x00\x01t");
        let hello = Hello::new(connect, &client_out, false);
        assert_eq!(
            hello.connack(),
            connack,
            "the CONNACK only, not what followed"
        );
        let redacted = hello.connect_redacted();
        assert_eq!(redacted.len(), connect.len());
        assert_eq!(
            &redacted[..connect.len() - 2],
            &connect[..connect.len() - 2]
        );
        assert_eq!(&redacted[connect.len() - 2..], b"**");
    }
}
