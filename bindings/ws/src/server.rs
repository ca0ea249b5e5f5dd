//! ws server: answers WebSocket upgrade requests an http server routes to it,
//! negotiates the subprotocol by route, and hands the upgraded connection to
//! the route's exit as a byte stream.

use std::sync::Arc;

use http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use zilla_binding_http::{HttpAnswer, HttpHandler, HttpRequest, Upgrade};
use zilla_engine::telemetry::text;
use zilla_engine::{
    async_trait, Authorizations, Binding, BindingContext, BuildError, Events, Ports, Route, Routes,
    StreamHandler, StreamInfo,
};

use crate::handshake::{self, Offer};
use crate::options::{
    resolve_limits, scheme_is_secure, Limits, RequestFacts, WsCondition, WsOptions,
};
use crate::stream::WsStream;

pub(crate) fn build(cx: &mut BindingContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
    let options = cx.options::<WsOptions>();
    let routes = cx.required_routes::<WsCondition, dyn StreamHandler>();
    let (options, routes) = (options?, routes?);
    if options.defaults.is_some() {
        return Err(cx.error(
            "options.defaults",
            "`defaults` applies to ws clients; a ws server answers what each client asks",
        ));
    }
    let mut failed = false;
    for (index, route) in routes.iter().enumerate() {
        for (at, condition) in route.when.iter().enumerate() {
            if let Some(scheme) = &condition.scheme {
                if scheme_is_secure(scheme).is_none() {
                    cx.error(
                        &format!("routes[{index}].when[{at}].scheme"),
                        format!("expected http, https, ws or wss, found `{scheme}`"),
                    );
                    failed = true;
                }
            }
        }
    }
    let limits = resolve_limits(cx, &options)?;
    if failed {
        return Err(cx.error("routes", "the ws server's routes are invalid"));
    }
    Ok(Arc::new(WsServer::new(routes, limits, cx.events())))
}

/// A ws server binding.
pub(crate) struct WsServer {
    routes: Routes<WsCondition, dyn StreamHandler>,
    limits: Limits,
    events: Events,
}

impl WsServer {
    pub(crate) fn new(
        routes: Routes<WsCondition, dyn StreamHandler>,
        limits: Limits,
        events: Events,
    ) -> Self {
        Self {
            routes,
            limits,
            events,
        }
    }

    /// Where an upgrade goes, and the subprotocol answered.
    ///
    /// Zilla's rule: of the routes matching any offered subprotocol, the
    /// first in route order wins, and the subprotocol answered is the first
    /// offered (in the client's order) that this route matches. A condition
    /// without `protocol` matches any offer, so the client still hears a
    /// subprotocol it asked for (browsers and tungstenite fail a handshake
    /// that answers none to an offer). The default `exit` takes the first offer.
    fn select(
        &self,
        offer: &Offer,
        request: &RequestFacts<'_>,
        authorizations: &Authorizations,
    ) -> Option<(Arc<dyn StreamHandler>, Option<String>)> {
        let offered: Vec<Option<&str>> = if offer.protocols.is_empty() {
            vec![None]
        } else {
            offer.protocols.iter().map(|p| Some(p.as_str())).collect()
        };
        let accepted = |route: &Route<WsCondition, dyn StreamHandler>| {
            offered.iter().copied().find(|protocol| {
                route.when.is_empty()
                    || route
                        .when
                        .iter()
                        .any(|condition| condition.matches(*protocol, request))
            })
        };
        let resolved = self
            .routes
            .resolve_by(authorizations, |_, route| accepted(route).is_some())?;
        let protocol = match resolved.route {
            Some(route) => accepted(route).flatten(),
            None => offered.first().copied().flatten(),
        };
        Some((resolved.exit.port.clone(), protocol.map(str::to_owned)))
    }
}

impl Binding for WsServer {
    fn ports(self: Arc<Self>) -> Ports {
        Ports::new().with::<dyn HttpHandler>(self)
    }
}

/// The peer as events name it.
fn peer(info: &StreamInfo) -> String {
    info.peer
        .map(|peer| peer.to_string())
        .unwrap_or_else(|| "?".into())
}

/// The subprotocols a client offered, as events write them.
fn offered(protocols: &[String]) -> String {
    if protocols.is_empty() {
        return "no subprotocol".into();
    }
    let protocols: Vec<String> = protocols.iter().map(|p| text(p).to_string()).collect();
    format!("subprotocols [{}]", protocols.join(", "))
}

/// What guards granted at the http layer, for `guarded` ws routes.
fn authorizations(info: &StreamInfo) -> Authorizations {
    let mut authorizations = Authorizations::new();
    for granted in &info.granted {
        authorizations.insert(granted.guard.clone(), granted.session.clone());
    }
    authorizations
}

#[async_trait]
impl HttpHandler for WsServer {
    async fn handle(&self, request: HttpRequest, info: StreamInfo) -> HttpAnswer {
        let offer = match handshake::validate(&request) {
            Ok(offer) => offer,
            Err(refusal) => {
                self.events.warn(
                    "WS_HANDSHAKE_REFUSED",
                    format!(
                        "client {}: {}; answered {}",
                        peer(&info),
                        refusal.reason,
                        refusal.status
                    ),
                );
                return refusal.answer();
            }
        };
        let facts = RequestFacts {
            secure: info.secure,
            authority: handshake::authority(&request),
            path: request.uri.path(),
        };
        let Some((handler, protocol)) = self.select(&offer, &facts, &authorizations(&info)) else {
            let scheme = if info.secure { "https" } else { "http" };
            self.events.warn(
                "WS_ROUTE_REJECTED",
                format!(
                    "client {}: no route for {} at {scheme}://{}{}; answered 400",
                    peer(&info),
                    offered(&offer.protocols),
                    facts.authority.unwrap_or(""),
                    facts.path
                ),
            );
            return HttpAnswer::status(
                StatusCode::BAD_REQUEST,
                "no WebSocket route for this request and its subprotocols",
            );
        };
        let response = handshake::accept(&offer.key, protocol.as_deref());
        let config = self.limits.config();
        let max_frame_size = self.limits.max_frame_size;
        let events = self.events.clone();
        let upgrade: Upgrade = Box::new(move |stream, info| {
            Box::pin(async move {
                let ws = WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await;
                let label = format!("client {}", peer(&info));
                let stream = WsStream::new(ws, protocol.as_deref(), max_frame_size)
                    .with_events(events, label);
                handler.handle(Box::new(stream), info).await;
            })
        });
        HttpAnswer {
            response,
            upgrade: Some(upgrade),
        }
    }
}

#[cfg(test)]
mod tests;
