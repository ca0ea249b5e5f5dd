//! MQTT 5 re-authentication (4.12.1): a client whose CONNECT named the
//! server's Authentication Method refreshes its token with AUTH 0x19,
//! inside its session.
//!
//! The state machine stays free of the guard's asynchrony: an acceptable
//! AUTH leaves its token in [`Reauth::requested`]; the driver takes it
//! ([`Session::take_reauth`]), asks the guard, and feeds the verdict back
//! ([`Session::on_reauth`]). Meanwhile the relay goes on, under the old
//! token's roles and expiry. One re-authentication at a time: an AUTH while
//! one is being verified is a Protocol Error (0x82), because its answer
//! could not tell the client which of its tokens it is about.
//!
//! A success answers AUTH 0x00 with the method, moves the session's expiry
//! to the new token's, and authorizes later publishes and subscribes with
//! its roles and attributes; subscriptions it no longer allows are ended
//! upstream (the broker's UNSUBACK is the proxy's, not the client's). The
//! upstream sessions are otherwise unaffected: a broker never sees AUTH.
//! Failures end the session: another identity or a token the guard refuses,
//! 0x87; another method, 0x8C; AUTH without a method, 0x18 (no
//! challenge-response method is offered), 0x00 from a client, or AUTH in a
//! session whose CONNECT had no method, 0x82. The token is never in an
//! event.

use std::sync::Arc;
use std::time::Instant;

use mqtt_bytes_v5::{DisconnectReasonCode, Packet, Unsubscribe};
use zilla_engine::telemetry::{duration, identity, text};
use zilla_engine::{GuardRejection, GuardSession};

use super::Session;
use crate::codec::auth::{self, Auth};
use crate::options::Operation;
use crate::session::end::End;
use crate::upstream::Origin;

/// What a session whose CONNECT named an Authentication Method keeps for
/// its re-authentications (boxed in the session: most sessions have none).
pub(crate) struct Reauth {
    /// The method the CONNECT named (echoed in every AUTH the proxy sends).
    pub(crate) method: Arc<str>,
    /// The guard that verifies the tokens.
    pub(crate) guard: Arc<str>,
    /// The identity the CONNECT's token had: every later token's must match.
    pub(crate) identity: Option<String>,
    /// A token from AUTH 0x19, waiting for the driver to take it.
    requested: Option<String>,
    /// Whether the driver is verifying a token.
    verifying: bool,
    /// Subscriptions sent upstream: topic filter and upstream index, so a
    /// token with fewer roles can end those it no longer allows.
    subscriptions: Vec<(String, usize)>,
    /// When other guards' grants expire (a client certificate's notAfter):
    /// a refreshed token never moves the session's end past it.
    others_expire: Option<Instant>,
}

impl Reauth {
    pub(crate) fn new(
        method: Arc<str>,
        guard: Arc<str>,
        identity: Option<String>,
        others_expire: Option<Instant>,
    ) -> Self {
        Self {
            method,
            guard,
            identity,
            requested: None,
            verifying: false,
            subscriptions: Vec::new(),
            others_expire,
        }
    }
}

fn protocol_error(why: &str) -> End {
    End::Refuse(DisconnectReasonCode::ProtocolError, why.to_owned())
}

impl Session {
    /// A client's AUTH.
    pub(super) fn client_auth(&mut self, packet: Auth) -> Result<(), End> {
        let Some(reauth) = self.reauth.as_deref_mut() else {
            return Err(protocol_error(
                "AUTH in a session whose CONNECT had no Authentication Method ([MQTT-4.12.0-7])",
            ));
        };
        match packet.reason {
            auth::RE_AUTHENTICATE => {}
            auth::CONTINUE_AUTHENTICATION => {
                return Err(protocol_error(
                    "AUTH 0x18 (continue authentication): no challenge-response method is offered",
                ))
            }
            _ => return Err(protocol_error("AUTH 0x00 from a client")),
        }
        let Some(method) = packet.method else {
            return Err(protocol_error(
                "AUTH without an Authentication Method ([MQTT-4.12.0-7])",
            ));
        };
        if *method != *reauth.method {
            let why = format!(
                "re-authentication with the method {}, not the CONNECT's {}",
                text(&method),
                text(&reauth.method)
            );
            self.reauth_failed(&why);
            return Err(End::BadAuthenticationMethod(why));
        }
        if reauth.verifying || reauth.requested.is_some() {
            return Err(protocol_error(
                "AUTH while the previous re-authentication is being verified",
            ));
        }
        let token = (packet.data.as_deref())
            .and_then(|data| std::str::from_utf8(data).ok())
            .filter(|token| !token.is_empty());
        match token {
            Some(token) => {
                reauth.requested = Some(token.to_owned());
                Ok(())
            }
            None => {
                let why = "re-authentication without a token (text) in the Authentication Data";
                self.reauth_failed(why);
                Err(End::Refuse(DisconnectReasonCode::NotAuthorized, why.into()))
            }
        }
    }

    /// The guard that verifies the session's re-authentications (its
    /// CONNECT's), if it may re-authenticate.
    pub(crate) fn reauth_guard(&self) -> Option<&str> {
        self.reauth.as_deref().map(|reauth| &*reauth.guard)
    }

    /// The token of an AUTH 0x19 for the driver to have verified, once; the
    /// session is then verifying until [`on_reauth`](Self::on_reauth).
    pub(crate) fn take_reauth(&mut self) -> Option<String> {
        let reauth = self.reauth.as_deref_mut()?;
        let token = reauth.requested.take()?;
        reauth.verifying = true;
        Some(token)
    }

    /// The guard's `verdict` on the token [`take_reauth`](Self::take_reauth)
    /// gave, at `now`; `expires_at` is the new token's expiry on the
    /// session's clock (the driver converts the wall-clock `exp`).
    pub(crate) fn on_reauth(
        &mut self,
        now: Instant,
        verdict: Result<GuardSession, GuardRejection>,
        expires_at: Option<Instant>,
    ) -> Result<(), End> {
        self.clock = now;
        let Some(reauth) = self.reauth.as_deref_mut() else {
            return Ok(());
        };
        reauth.verifying = false;
        let granted = match verdict {
            Ok(granted) => granted,
            Err(rejection) => {
                let why = format!("re-authentication refused: {rejection}");
                self.reauth_failed(&why);
                return Err(End::Refuse(DisconnectReasonCode::NotAuthorized, why));
            }
        };
        if granted.identity != reauth.identity {
            let why = format!(
                "re-authentication as {}, not the session's {}",
                identity(granted.identity.as_deref()),
                identity(reauth.identity.as_deref())
            );
            self.reauth_failed(&why);
            return Err(End::Refuse(DisconnectReasonCode::NotAuthorized, why));
        }
        if expires_at.is_some_and(|at| at <= now) {
            let why = "re-authentication with a token that has expired";
            self.reauth_failed(why);
            return Err(End::Refuse(DisconnectReasonCode::NotAuthorized, why.into()));
        }
        let guard = reauth.guard.clone();
        let method = reauth.method.clone();
        let expires_at = match (expires_at, reauth.others_expire) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let roles = granted.roles.join(" ");
        self.router.reauthorize(guard, granted, &self.client_id);
        self.expires_at = expires_at;
        let mut out = bytes::BytesMut::new();
        auth::write(
            &Auth {
                reason: auth::SUCCESS,
                method: Some(method.to_string()),
                ..Auth::default()
            },
            &mut out,
        );
        if out.len() <= self.limits.client_maximum_packet_size {
            self.client_out.extend_from_slice(&out);
        }
        self.metrics.reauthenticated(true);
        self.config.events.info(
            "MQTT_REAUTHENTICATED",
            format!(
                "client {} id {}: re-authenticated with {}; roles [{roles}]{}",
                self.peer,
                text(&self.client_id),
                text(&method),
                match expires_at {
                    Some(at) => format!(", expires in {}", duration(at - now)),
                    None => String::new(),
                }
            ),
        );
        self.revoke_subscriptions();
        Ok(())
    }

    /// Remembers a subscription sent to upstream `index`, when the session
    /// may re-authenticate.
    pub(super) fn subscribed(&mut self, filter: &str, index: usize) {
        if let Some(reauth) = self.reauth.as_deref_mut() {
            let subscriptions = &mut reauth.subscriptions;
            subscriptions.retain(|(f, _)| f != filter);
            subscriptions.push((filter.to_owned(), index));
        }
    }

    /// Forgets a subscription the client ended.
    pub(super) fn unsubscribed(&mut self, filter: &str) {
        if let Some(reauth) = self.reauth.as_deref_mut() {
            reauth.subscriptions.retain(|(f, _)| f != filter);
        }
    }

    /// Ends upstream the subscriptions the session's roles no longer allow.
    fn revoke_subscriptions(&mut self) {
        let Some(reauth) = self.reauth.as_deref_mut() else {
            return;
        };
        let subscriptions = std::mem::take(&mut reauth.subscriptions);
        let mut kept = Vec::with_capacity(subscriptions.len());
        for (filter, index) in subscriptions {
            if self.router.route(Operation::Subscribe(&filter)) == Some(index) {
                kept.push((filter, index));
                continue;
            }
            self.config.events.warn(
                "MQTT_SUBSCRIPTION_REVOKED",
                format!(
                    "client {} id {}: subscription to {} ended: the refreshed token does not allow it",
                    self.peer,
                    text(&self.client_id),
                    text(&filter)
                ),
            );
            self.metrics.revoked(&filter);
            let link = &mut self.upstreams[index];
            // Without a free packet id the broker keeps the subscription
            // until the session ends; never seen with 65,535 ids.
            if let Some(pkid) = link.ids.allocate(Origin::Revoked) {
                link.send(&Packet::Unsubscribe(Unsubscribe {
                    pkid,
                    filters: vec![filter],
                    properties: None,
                }));
            }
        }
        if let Some(reauth) = self.reauth.as_deref_mut() {
            reauth.subscriptions = kept;
        }
    }

    fn reauth_failed(&self, why: &str) {
        self.metrics.reauthenticated(false);
        self.config.events.warn(
            "MQTT_REAUTHENTICATION_FAILED",
            format!("client {} id {}: {why}", self.peer, text(&self.client_id)),
        );
    }
}
