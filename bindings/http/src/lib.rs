//! `type: http` on hyper.
//!
//! Kind `server` serves HTTP/1.1 (and HTTP/2, prior knowledge or TLS with
//! ALPN `h2`, when `versions` lists `h2`) on the byte streams it is handed,
//! routes each request by its headers (`:scheme`, `:authority`, `:path`,
//! `:method`, any header; Zilla's wildcard semantics), applies
//! `access-control` (CORS, refusing unlisted origins) and `authorization` (a
//! guard's credentials from a header, a query parameter or a cookie), and
//! hands the request to the route's exit through the [`HttpHandler`] port. A
//! WebSocket upgrade answered `101` by the exit hands the upgraded byte
//! stream on, with what the guard granted.
//!
//! ```yaml
//! bindings:
//!   north_http_server:
//!     type: http
//!     kind: server
//!     options:
//!       versions: [http/1.1]
//!       access-control:
//!         policy: cross-origin
//!         allow: { origins: [https://app.example.com] }
//!       authorization:
//!         jwt0:
//!           credentials:
//!             query: { access_token: "{credentials}" }
//!     routes:
//!       - when: [{ headers: { upgrade: websocket, ":path": /mqtt* } }]
//!         exit: north_ws_server
//! ```

#![forbid(unsafe_code)]

mod authorization;
mod cors;
mod exchange;
mod options;
mod port;
mod preface;
mod routes;
mod schema;
mod server;
#[cfg(test)]
mod tests;

pub use options::{
    AccessControl, Allow, CredentialSources, Expose, HttpAuthorization, HttpOptions, HttpVersion,
    Policy,
};
pub use port::{HttpAnswer, HttpHandler, HttpRequest, Upgrade};
pub use routes::{wildcard_matches, HttpCondition, RequestFacts};
pub use server::{PROPERTY_HEADER_MAX_BYTES, PROPERTY_HEADER_TIMEOUT};

use zilla_engine::{register_binding, BindingFactory, Kind};

register_binding!(BindingFactory {
    type_name: "http",
    kinds: &[Kind::Server],
    build: server::build,
});
