//! A tcp client's upstream addresses: in what order to try them, how long each
//! may take, and which to leave alone for a while after they failed.
//!
//! A client with several addresses (`options.hosts`, or a `host` that
//! resolves to several) starts each connect at the next address in turn, so
//! that connections spread over the brokers. An address that failed backs off
//! (1 s, doubling to 30 s): while it does, connects skip it, so a dead broker
//! costs one timeout per back-off period rather than one per connection. When
//! every other address has failed too, backing-off ones are tried as a last
//! resort, soonest-recovering first: skipping them then would only fail.
//!
//! Time is a parameter of the bookkeeping ([`Fleet::order`], [`Fleet::failed`])
//! and the connect loop uses `tokio::time`, so tests pause the clock.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use zilla_engine::telemetry::duration;
use zilla_engine::Authority;

/// Engine property: seconds one connection attempt, to one address, may take.
pub(crate) const PROPERTY_CONNECT_TIMEOUT: &str = "zilla.binding.tcp.connect.timeout";
/// Per address: a broker on a reachable network answers in milliseconds, and
/// two dead addresses still fail within the 10 s a whole connect used to take.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first back-off of an address that failed.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest back-off: a broker that comes back is used again within this.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// One address to try: the name it was configured as and what that resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub(crate) name: Authority,
    pub(crate) addr: SocketAddr,
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A name says more to an operator than the address it resolved to,
        // and the address says which of the name's addresses failed.
        if self.name.host.parse::<IpAddr>().is_ok() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{} ({})", self.name, self.addr)
        }
    }
}

/// A failed attempt, as [`Fleet::connect`] reports it.
#[derive(Debug)]
pub(crate) struct Failure<'a> {
    pub(crate) candidate: &'a Candidate,
    pub(crate) error: &'a io::Error,
    /// How long the address is now left alone.
    pub(crate) backoff: Duration,
    /// The address tried next, if any.
    pub(crate) next: Option<&'a Candidate>,
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    until: Instant,
    delay: Duration,
}

/// Rotation and back-off state of one tcp client, shared by its connects.
#[derive(Debug, Default)]
pub(crate) struct Fleet {
    next: AtomicUsize,
    backoff: Mutex<HashMap<SocketAddr, Backoff>>,
}

impl Fleet {
    /// Indexes into `candidates` in the order to try them at `now`: from a
    /// rotating start, those not backing off, then those backing off,
    /// soonest-recovering first.
    pub(crate) fn order(&self, candidates: &[Candidate], now: Instant) -> Vec<usize> {
        let n = candidates.len();
        let start = if n > 1 {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        } else {
            0
        };
        let backoff = self.backoff.lock().unwrap_or_else(PoisonError::into_inner);
        let mut ready = Vec::with_capacity(n);
        let mut waiting = Vec::new();
        for i in (0..n).map(|k| (start + k) % n) {
            match backoff.get(&candidates[i].addr) {
                Some(b) if b.until > now => waiting.push((b.until, i)),
                _ => ready.push(i),
            }
        }
        // Stable: addresses recovering at the same time keep the rotation.
        waiting.sort_by_key(|&(until, _)| until);
        ready.extend(waiting.into_iter().map(|(_, i)| i));
        ready
    }

    /// Records that `addr` failed at `now`; returns its new back-off.
    pub(crate) fn failed(&self, addr: SocketAddr, now: Instant) -> Duration {
        let mut backoff = self.backoff.lock().unwrap_or_else(PoisonError::into_inner);
        // An address whose back-off ended long ago starts over; forgetting it
        // also bounds the map when callers name ever new authorities.
        backoff.retain(|_, b| now < b.until + BACKOFF_MAX);
        let delay = backoff
            .get(&addr)
            .map_or(BACKOFF_MIN, |b| (b.delay * 2).min(BACKOFF_MAX));
        backoff.insert(
            addr,
            Backoff {
                until: now + delay,
                delay,
            },
        );
        delay
    }

    /// Records that `addr` accepted a connection: no back-off any more.
    pub(crate) fn succeeded(&self, addr: SocketAddr) {
        self.backoff
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&addr);
    }

    /// Tries `candidates` in [`order`](Self::order) with `dial`, each for at
    /// most `timeout`, until one connects; `failed` hears of each failure as
    /// it happens. The error is the last attempt's.
    pub(crate) async fn connect<S, D, F>(
        &self,
        candidates: &[Candidate],
        timeout: Duration,
        mut dial: D,
        mut failed: impl FnMut(&Failure<'_>),
    ) -> io::Result<(S, usize)>
    where
        D: FnMut(SocketAddr) -> F,
        F: Future<Output = io::Result<S>>,
    {
        let order = self.order(candidates, Instant::now());
        let mut last = None;
        for (k, &i) in order.iter().enumerate() {
            let candidate = &candidates[i];
            let attempt = match tokio::time::timeout(timeout, dial(candidate.addr)).await {
                Ok(attempt) => attempt,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("timed out after {}", duration(timeout)),
                )),
            };
            match attempt {
                Ok(stream) => {
                    self.succeeded(candidate.addr);
                    return Ok((stream, i));
                }
                Err(error) => {
                    let backoff = self.failed(candidate.addr, Instant::now());
                    failed(&Failure {
                        candidate,
                        error: &error,
                        backoff,
                        next: order.get(k + 1).map(|&j| &candidates[j]),
                    });
                    last = Some(error);
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address to try")))
    }
}

#[cfg(test)]
mod tests {
    use std::future::pending;
    use std::pin::Pin;

    use tokio::io::DuplexStream;

    use super::*;

    fn candidates(ports: &[u16]) -> Vec<Candidate> {
        ports
            .iter()
            .map(|&port| Candidate {
                name: Authority {
                    host: "127.0.0.1".into(),
                    port,
                },
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
            })
            .collect()
    }

    #[test]
    fn candidates_show_their_name_and_address() {
        let named = Candidate {
            name: Authority {
                host: "broker-a".into(),
                port: 1883,
            },
            addr: "10.0.0.5:1883".parse().unwrap(),
        };
        assert_eq!(named.to_string(), "broker-a:1883 (10.0.0.5:1883)");
        assert_eq!(candidates(&[1883])[0].to_string(), "127.0.0.1:1883");
    }

    #[test]
    fn each_connect_starts_at_the_next_address() {
        let fleet = Fleet::default();
        let all = candidates(&[1, 2, 3]);
        let now = Instant::now();
        let firsts: Vec<usize> = (0..4).map(|_| fleet.order(&all, now)[0]).collect();
        assert_eq!(firsts, [0, 1, 2, 0]);
        assert_eq!(fleet.order(&all, now), [1, 2, 0]);
    }

    #[test]
    fn a_failed_address_backs_off_doubling_to_thirty_seconds() {
        let fleet = Fleet::default();
        let all = candidates(&[1, 2, 3]);
        let now = Instant::now();
        let delays: Vec<u64> = (0..7)
            .map(|_| fleet.failed(all[0].addr, now).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        // Backing off: last, whatever the rotation says.
        assert_eq!(fleet.order(&all, now), [1, 2, 0]);
        assert_eq!(fleet.order(&all, now), [1, 2, 0]);
        assert_eq!(fleet.order(&all, now), [2, 1, 0]);
        // Its back-off over, it takes its turn again.
        assert_eq!(fleet.order(&all, now + Duration::from_secs(30)), [0, 1, 2]);
        fleet.succeeded(all[0].addr);
        assert_eq!(fleet.failed(all[0].addr, now).as_secs(), 1, "starts over");
    }

    #[test]
    fn when_all_back_off_the_soonest_recovering_comes_first() {
        let fleet = Fleet::default();
        let all = candidates(&[1, 2]);
        let now = Instant::now();
        fleet.failed(all[1].addr, now);
        fleet.failed(all[0].addr, now);
        fleet.failed(all[0].addr, now);
        assert_eq!(fleet.order(&all, now), [1, 0]);
        assert_eq!(fleet.order(&all, now), [1, 0]);
    }

    #[test]
    fn long_ended_back_offs_are_forgotten() {
        let fleet = Fleet::default();
        let all = candidates(&[1, 2]);
        let now = Instant::now();
        fleet.failed(all[0].addr, now);
        fleet.failed(all[0].addr, now);
        let later = now + Duration::from_secs(60);
        assert_eq!(fleet.failed(all[1].addr, later).as_secs(), 1);
        assert_eq!(fleet.backoff.lock().unwrap().len(), 1, "the first is gone");
    }

    /// A dialer: port 1 never answers, ports 2 and 4 refuse, others connect.
    fn dial(
        log: &Mutex<Vec<u16>>,
    ) -> impl FnMut(SocketAddr) -> Pin<Box<dyn Future<Output = io::Result<DuplexStream>>>> + '_
    {
        move |addr| {
            log.lock().unwrap().push(addr.port());
            Box::pin(async move {
                match addr.port() {
                    1 => pending().await,
                    2 | 4 => Err(io::ErrorKind::ConnectionRefused.into()),
                    _ => Ok(tokio::io::duplex(16).0),
                }
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_address_costs_one_timeout_per_back_off() {
        let fleet = Fleet::default();
        let all = candidates(&[1, 3]);
        let timeout = Duration::from_secs(5);
        let log = Mutex::new(Vec::new());
        let mut failures = Vec::new();

        let started = Instant::now();
        let (_, used) = fleet
            .connect(&all, timeout, dial(&log), |f| {
                failures.push((f.candidate.addr.port(), f.backoff, f.next.cloned()));
            })
            .await
            .unwrap();
        assert_eq!(used, 1);
        assert_eq!(
            started.elapsed(),
            timeout,
            "one timeout, then the next address"
        );
        assert_eq!(
            failures,
            [(1, Duration::from_secs(1), Some(all[1].clone()))]
        );

        // Backing off: the next connects go straight to the live address.
        for _ in 0..4 {
            fleet
                .connect(&all, timeout, dial(&log), |_| panic!("nothing fails"))
                .await
                .unwrap();
        }
        assert_eq!(*log.lock().unwrap(), [1, 3, 3, 3, 3, 3]);

        // Its back-off over, the dead address takes its turn once more, and
        // now backs off for twice as long.
        tokio::time::advance(Duration::from_secs(1)).await;
        let mut backoffs = Vec::new();
        for _ in 0..2 {
            fleet
                .connect(&all, timeout, dial(&log), |f| backoffs.push(f.backoff))
                .await
                .unwrap();
        }
        assert_eq!(*log.lock().unwrap(), [1, 3, 3, 3, 3, 3, 3, 1, 3]);
        assert_eq!(backoffs, [Duration::from_secs(2)]);
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_address_fails_each_is_reported_and_the_last_error_returned() {
        let fleet = Fleet::default();
        let all = candidates(&[2, 1]);
        let log = Mutex::new(Vec::new());
        let mut reported = Vec::new();
        let error = fleet
            .connect(&all, Duration::from_secs(2), dial(&log), |f| {
                reported.push((f.candidate.addr.port(), f.next.map(|n| n.addr.port())));
            })
            .await
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(error.to_string(), "timed out after 2 s");
        assert_eq!(reported, [(2, Some(1)), (1, None)]);
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_address_backs_off_all_are_still_tried() {
        let fleet = Fleet::default();
        let all = candidates(&[2, 4]);
        let log = Mutex::new(Vec::new());
        for _ in 0..2 {
            let error = fleet
                .connect(&all, Duration::from_secs(2), dial(&log), |_| {})
                .await
                .unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
        }
        // The second connect found both backing off and tried both, rather
        // than none, from the next start in the rotation.
        assert_eq!(*log.lock().unwrap(), [2, 4, 4, 2]);
    }
}
