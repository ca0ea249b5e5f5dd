//! What one request goes through, independent of how it was read: the
//! origin check and preflight (`access-control`), credentials
//! (`authorization`), routing by headers, and the exit's answer.
//!
//! Preflights are answered before credentials are looked at, since browsers
//! send them without any. Every refusal is an HTTP status the client can act
//! on (403 origin, 401 credentials, 503 guard unavailable, 404 no route) and
//! an event naming the peer, never the credentials.

use bytes::Bytes;
use http::header::{HeaderValue, WWW_AUTHENTICATE};
use http::request::Parts;
use http::{Response, StatusCode};
use zilla_engine::telemetry::text;
use zilla_engine::{Authorizations, Events, Granted, GuardRejection, Routes, StreamInfo};

use crate::authorization::Authorization;
use crate::cors::{Cors, CorsCheck};
use crate::port::{HttpAnswer, HttpHandler, Upgrade};
use crate::routes::{HttpCondition, RequestFacts};

/// Everything an http server decides about requests.
pub(crate) struct Exchange {
    pub(crate) routes: Routes<HttpCondition, dyn HttpHandler>,
    pub(crate) cors: Cors,
    pub(crate) authorization: Option<Authorization>,
    pub(crate) events: Events,
}

/// The response to send, and for a `101` what takes over the connection.
pub(crate) struct Answered {
    pub(crate) response: Response<Bytes>,
    pub(crate) upgrade: Option<(Upgrade, StreamInfo)>,
}

impl Answered {
    fn status(status: StatusCode, reason: &str) -> Self {
        Self {
            response: HttpAnswer::status(status, reason).response,
            upgrade: None,
        }
    }
}

/// Why no route took a request.
enum Unrouted {
    /// Nothing matched at all.
    NotFound,
    /// A guarded route matched but no credentials for its guard were given.
    Unauthenticated,
    /// A guarded route matched but the credentials lack its roles.
    Forbidden,
}

impl Exchange {
    /// Answers the request `parts` that arrived on the stream `info`;
    /// `can_upgrade` says whether the connection can switch protocols for it
    /// (an HTTP/1.1 request asking to upgrade).
    pub(crate) async fn answer(
        &self,
        parts: Parts,
        info: &StreamInfo,
        can_upgrade: bool,
    ) -> Answered {
        let allow_origin = match self.cors.check(&parts) {
            CorsCheck::Refused { origin } => {
                self.events.warn(
                    "HTTP_ORIGIN_REFUSED",
                    format!(
                        "client {}: origin {} is not allowed for {} {}; answered 403",
                        peer(info),
                        text(&origin),
                        parts.method,
                        parts.uri.path()
                    ),
                );
                return Answered::status(StatusCode::FORBIDDEN, "origin not allowed");
            }
            CorsCheck::Preflight(response) => {
                return Answered {
                    response,
                    upgrade: None,
                }
            }
            CorsCheck::Pass { allow_origin } => allow_origin,
        };
        let mut answered = self.authorized(parts, info, can_upgrade).await;
        self.cors.decorate(&mut answered.response, allow_origin);
        answered
    }

    async fn authorized(&self, parts: Parts, info: &StreamInfo, can_upgrade: bool) -> Answered {
        let mut authorizations = Authorizations::new();
        let mut info = info.clone();
        if let Some(authorization) = &self.authorization {
            if let Some(credentials) = authorization.credentials(&parts) {
                match authorization.authorize(credentials).await {
                    Ok(authorized) => {
                        authorizations.insert(authorized.guard.clone(), authorized.session.clone());
                        info.granted.push(Granted {
                            guard: authorized.guard,
                            session: authorized.session,
                            credentials: authorized.credentials,
                        });
                    }
                    Err(GuardRejection::InvalidCredentials(reason)) => {
                        self.events.warn(
                            "HTTP_AUTHORIZATION_FAILED",
                            format!(
                                "client {}: guard {} refused the credentials for {} {}: {reason}; answered 401",
                                peer(&info),
                                authorization.guard_name(),
                                parts.method,
                                parts.uri.path()
                            ),
                        );
                        let mut answered =
                            Answered::status(StatusCode::UNAUTHORIZED, "invalid credentials");
                        answered.response.headers_mut().insert(
                            WWW_AUTHENTICATE,
                            HeaderValue::from_static("Bearer error=\"invalid_token\""),
                        );
                        return answered;
                    }
                    Err(GuardRejection::Unavailable(reason)) => {
                        self.events.warn(
                            "HTTP_AUTHORIZATION_UNAVAILABLE",
                            format!(
                                "client {}: guard {} could not check the credentials: {reason}; answered 503",
                                peer(&info),
                                authorization.guard_name()
                            ),
                        );
                        return Answered::status(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "authorization unavailable",
                        );
                    }
                }
            }
        }
        self.routed(parts, info, &authorizations, can_upgrade).await
    }

    async fn routed(
        &self,
        parts: Parts,
        info: StreamInfo,
        authorizations: &Authorizations,
        can_upgrade: bool,
    ) -> Answered {
        let facts = RequestFacts::new(&parts, info.secure);
        let resolved = self
            .routes
            .resolve(authorizations, |condition| condition.matches(&facts));
        let Some(resolved) = resolved else {
            return self.unrouted(&parts, &info, authorizations);
        };
        let exit = resolved.exit.clone();
        let (method, path) = (parts.method.clone(), parts.uri.path().to_owned());
        let answer = exit.port.handle(parts, info.clone()).await;
        if answer.response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Answered {
                response: answer.response,
                upgrade: None,
            };
        }
        match answer.upgrade {
            Some(upgrade) if can_upgrade => Answered {
                response: answer.response,
                upgrade: Some((upgrade, info)),
            },
            upgrade => {
                let why = if upgrade.is_none() {
                    "without saying what takes over the connection"
                } else {
                    "to a request that cannot upgrade (not an HTTP/1.1 upgrade request)"
                };
                self.events.warn(
                    "HTTP_UPGRADE_FAILED",
                    format!(
                        "client {}: {} answered 101 {why} for {method} {path}; answered 500",
                        peer(&info),
                        exit.name
                    ),
                );
                Answered::status(StatusCode::INTERNAL_SERVER_ERROR, "upgrade failed")
            }
        }
    }

    fn unrouted(
        &self,
        parts: &Parts,
        info: &StreamInfo,
        authorizations: &Authorizations,
    ) -> Answered {
        let facts = RequestFacts::new(parts, info.secure);
        let mut why = Unrouted::NotFound;
        // Only guards kept these routes from matching: say so, rather than
        // pretend the resource does not exist.
        let guarded = self.routes.iter().filter(|route| {
            !route.guarded.is_empty()
                && (route.when.is_empty() || route.when.iter().any(|c| c.matches(&facts)))
        });
        for route in guarded {
            let lacks_credentials = route
                .guarded
                .iter()
                .any(|requirement| authorizations.get(&requirement.guard_name).is_none());
            why = if lacks_credentials {
                match why {
                    Unrouted::Forbidden => Unrouted::Forbidden,
                    _ => Unrouted::Unauthenticated,
                }
            } else {
                Unrouted::Forbidden
            };
        }
        let target = format!("{} {}", parts.method, parts.uri.path());
        let peer = peer(info);
        match why {
            Unrouted::NotFound => {
                self.events.warn(
                    "HTTP_ROUTE_REJECTED",
                    format!("client {peer}: no route for {target}; answered 404"),
                );
                Answered::status(StatusCode::NOT_FOUND, "not found")
            }
            Unrouted::Unauthenticated => {
                self.events.warn(
                    "HTTP_AUTHORIZATION_REQUIRED",
                    format!("client {peer}: {target} needs credentials; answered 401"),
                );
                let mut answered =
                    Answered::status(StatusCode::UNAUTHORIZED, "credentials required");
                answered
                    .response
                    .headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                answered
            }
            Unrouted::Forbidden => {
                self.events.warn(
                    "HTTP_AUTHORIZATION_DENIED",
                    format!("client {peer}: the credentials lack the roles {target} needs; answered 403"),
                );
                let mut answered = Answered::status(StatusCode::FORBIDDEN, "forbidden");
                answered.response.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"insufficient_scope\""),
                );
                answered
            }
        }
    }
}

/// The peer's address for events.
pub(crate) fn peer(info: &StreamInfo) -> String {
    info.peer
        .map(|peer| peer.to_string())
        .unwrap_or_else(|| "?".into())
}
