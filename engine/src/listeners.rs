//! Listening sockets that outlive the configuration that opened them.
//!
//! When a reloaded configuration replaces a running one, a listener that
//! stays (same address) must never be closed and opened again: between the
//! two, connection attempts would be refused, and connections waiting in the
//! closed socket's backlog would be reset. So listeners are kept in a pool
//! that the new configuration inherits ([`Handover`](crate::Handover)): a
//! binding asking for an address the previous configuration listens on gets
//! that very socket, shared, and the kernel's backlog carries over. The pool
//! holds sockets weakly: a socket closes when the last accept loop using it
//! ends, which is how listeners that a reload removed close.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};

use tokio::net::TcpListener;

/// Which listener a binding asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListenKey {
    address: SocketAddr,
    /// For port 0 only: "a free port" is kept per binding, so two bindings
    /// asking for port 0 get a port each, and keep it across reloads.
    binding: Option<Arc<str>>,
}

impl ListenKey {
    /// The listener on `address`; for port 0, the one `binding` was given.
    pub fn new(address: SocketAddr, binding: &str) -> Self {
        Self {
            address,
            binding: (address.port() == 0).then(|| binding.into()),
        }
    }
}

/// The listening sockets of one configuration and the configurations that
/// replace it by reloads; cheap to clone (a shared handle).
#[derive(Clone, Default)]
pub struct Listeners {
    open: Arc<Mutex<HashMap<ListenKey, Weak<TcpListener>>>>,
}

impl fmt::Debug for Listeners {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        f.debug_list()
            .entries(
                open.iter()
                    .filter(|(_, l)| l.strong_count() > 0)
                    .map(|(k, _)| k),
            )
            .finish()
    }
}

impl Listeners {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// The socket listening for `key` if one is still open (the second value
    /// is then `true`), else a new one from `bind`, kept for the
    /// configurations that follow. Hold the returned `Arc` for as long as the
    /// listener serves: it closes when the last holder drops it.
    pub fn listen(
        &self,
        key: ListenKey,
        bind: impl FnOnce() -> io::Result<TcpListener>,
    ) -> io::Result<(Arc<TcpListener>, bool)> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|_, listener| listener.strong_count() > 0);
        if let Some(listener) = open.get(&key).and_then(Weak::upgrade) {
            return Ok((listener, true));
        }
        let listener = Arc::new(bind()?);
        open.insert(key, Arc::downgrade(&listener));
        Ok((listener, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind() -> io::Result<TcpListener> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        TcpListener::from_std(listener)
    }

    #[tokio::test]
    async fn an_open_listener_is_shared_and_a_dropped_one_rebound() {
        let pool = Listeners::new();
        let key = ListenKey::new("127.0.0.1:0".parse().unwrap(), "north");
        let (first, reused) = pool.listen(key.clone(), bind).unwrap();
        assert!(!reused);
        let (again, reused) = pool
            .listen(key.clone(), || {
                panic!("an open listener is not bound again")
            })
            .unwrap();
        assert!(reused && Arc::ptr_eq(&first, &again));

        let other = ListenKey::new("127.0.0.1:0".parse().unwrap(), "south");
        let (second, reused) = pool.listen(other, bind).unwrap();
        assert!(!reused);
        assert_ne!(
            first.local_addr().unwrap(),
            second.local_addr().unwrap(),
            "port 0 is a port per binding"
        );

        let address = first.local_addr().unwrap();
        drop((first, again));
        assert!(
            std::net::TcpStream::connect(address).is_err(),
            "the last holder closed it"
        );
        let (_, reused) = pool.listen(key, bind).unwrap();
        assert!(!reused);
    }

    #[test]
    fn fixed_ports_are_shared_whatever_the_binding() {
        let address: SocketAddr = "127.0.0.1:7183".parse().unwrap();
        assert_eq!(ListenKey::new(address, "a"), ListenKey::new(address, "b"));
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert_ne!(ListenKey::new(any, "a"), ListenKey::new(any, "b"));
    }
}
