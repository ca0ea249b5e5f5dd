//! The `Binding` trait: what a built binding offers and how it starts.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;

use crate::port::Ports;
use crate::shutdown::Shutdown;
use crate::telemetry::Events;

// Kept reachable here, where plugins have always imported it from.
pub use crate::start_error::StartError;

/// A binding built from one `bindings.<name>` entry.
///
/// Most bindings implement one of the two methods: a binding that is routed to
/// offers ports; a binding that listens (a tcp server) starts.
#[async_trait]
pub trait Binding: Send + Sync + 'static {
    /// The ports this binding offers to the bindings that route to it.
    fn ports(self: Arc<Self>) -> Ports {
        Ports::new()
    }

    /// Starts the binding's own activity, e.g. listening; returns the local
    /// addresses it listens on. Called once, exits before the bindings that use them.
    async fn start(self: Arc<Self>, cx: StartContext) -> Result<Vec<SocketAddr>, StartError> {
        let _ = cx;
        Ok(Vec::new())
    }
}

/// What a binding starts with.
#[derive(Debug, Clone)]
pub struct StartContext {
    /// The engine's shutdown signal; spawn long-lived tasks through it.
    pub shutdown: Shutdown,
    /// Where the binding's telemetry events go.
    pub events: Events,
}
