//! One client connection: its CONNECT, the upstream sessions it is routed
//! to, and the relay between them until one side ends it.
//!
//! Laid out like the data flow, in the style of quinn-proto and rumqttc's
//! `MqttState`: a deterministic state machine that a thin tokio driver feeds.
//!
//! ```text
//!  client socket ──bytes──▶ driver ──(bytes, now)──▶ state::Session ──packets──▶ upstream queues
//!                             │  ▲                        │                            │
//!   CONNECT ─▶ admit (pure) ──┘  └── poll_timeout, End ───┘         driver writes ◀────┘
//! ```
//!
//! - [`admit`]: a pure decision on the CONNECT (with the guard's verdict and
//!   the upstreams' CONNACKs): the upstreams to open and the client's
//!   CONNACK, or a refusal with its reason code.
//! - [`state`]: the session state machine; client packets, upstream packets
//!   and timers in (`now` is a parameter), packets queued per side and the
//!   next deadline out. No socket, no tokio, no clock.
//! - [`end`]: why a session ends and how its connections close.
//! - [`acks`]: SUBACK/UNSUBACK merges and the proxy's own publish refusals.
//! - [`router`]: where each publish and subscription of the session goes.
//! - `open`: the admitted session's upstreams opened, then the takeover of
//!   a connection with the same client id, in that order.
//! - [`takeover`]: the per-server registry of connected client ids and what a
//!   persistent session leaves for its next connection.
//! - [`driver`]: the code that drives sockets and tokio time; `io`, the
//!   clock and upstream sockets it shares with `open`.
//! - `dump`: the frames a session offers `zilla dump` while one is attached.
//! - `fuzz`: the same path without sockets, for the fuzz targets.

pub(crate) mod acks;
mod admit;
mod driver;
mod dump;
pub(crate) mod end;
#[doc(hidden)]
pub(crate) mod fuzz;
mod io;
mod open;
mod router;
mod state;
pub(crate) mod takeover;
#[cfg(test)]
pub(crate) mod tests;

pub(crate) use driver::serve;
