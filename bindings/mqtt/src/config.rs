//! What every session of one mqtt server shares: its limits, routes,
//! guard, validation and the registry of its sessions. Built once by
//! `server.rs`, read by every session.

use std::sync::Arc;
use std::time::Duration;

use mqtt_bytes_v5::Publish;
use zilla_engine::telemetry::text;
use zilla_engine::{Events, Guard, Model, Routes, Shutdown};

use crate::admin::Seats;
use crate::codec::Version;
use crate::flow::Flow;
use crate::limits::Limits;
use crate::options::{
    CredentialsPattern, MqttCondition, OnInvalid, ParamSource, RouteConditions, RouteTemplate,
};
use crate::port::MqttSessions;
use crate::session::takeover::SessionRegistry;

/// What every session of one mqtt server shares.
pub(crate) struct ServerConfig {
    pub(crate) versions: Vec<Version>,
    pub(crate) maximum_packet_size: u32,
    pub(crate) connect_timeout: Duration,
    /// Receive Maximum advertised to clients, and the sessions' buffers.
    pub(crate) flow: Flow,
    /// The keep-alive imposed on MQTT 5 clients (CONNACK Server Keep Alive).
    pub(crate) server_keep_alive: Option<u16>,
    /// Topic aliases the proxy assigns on deliveries to MQTT 5 clients.
    pub(crate) client_topic_aliases: u16,
    /// The Server Reference of the DISCONNECT 0x8B sent when draining.
    pub(crate) server_reference: Option<String>,
    pub(crate) routes: Routes<MqttCondition, dyn MqttSessions>,
    /// The conditions of `routes`, by route index, before a session binds params.
    pub(crate) templates: Vec<RouteTemplate>,
    /// The conditions with params unbound: what some token could be allowed.
    pub(crate) unbound: Vec<RouteConditions>,
    /// The guards that authorize sessions, in configuration order (none:
    /// sessions need no credentials). A CONNECT's credentials go to one of
    /// them, the session's own guard (see `admit::credentials`).
    pub(crate) guards: Vec<ServerAuthorization>,
    /// `options.client-id`: the guarded value a session's client id must
    /// be (and an empty one is given).
    pub(crate) client_id: Option<ParamSource>,
    /// Validation of publishes, by topic filter; the first match applies.
    pub(crate) topics: Vec<TopicValidation>,
    pub(crate) events: Events,
    pub(crate) shutdown: Shutdown,
    /// Connected sessions by client id, so a new connection takes over an old
    /// one: the registry of `options.store`, shared by every server naming
    /// that store, or this server's own when it names none.
    pub(crate) sessions: Arc<SessionRegistry>,
    /// The sessions as the admin socket lists them; this server's own.
    pub(crate) seats: Arc<Seats>,
    /// `options.limits`, with the counts of their keys: the store's when
    /// the server names one (shared with every server naming it, and kept
    /// across reloads), else this server's own.
    pub(crate) limits: Limits,
}

/// The models publishes to one topic filter must satisfy.
pub(crate) struct TopicValidation {
    pub(crate) filter: String,
    /// The payload's model, with its name for events.
    pub(crate) content: Option<(String, Arc<dyn Model>)>,
    /// User property name, model name, model.
    pub(crate) user_properties: Vec<(String, String, Arc<dyn Model>)>,
    pub(crate) on_invalid: OnInvalid,
}

/// A guard of `options.authorization` and where its credentials are.
pub(crate) struct ServerAuthorization {
    pub(crate) guard_name: Arc<str>,
    pub(crate) guard: Arc<dyn Guard>,
    /// Where a user-name or password token for this guard is
    /// (`credentials.connect`), if it takes one.
    pub(crate) pattern: Option<CredentialsPattern>,
    /// The Authentication Method whose Authentication Data is a token for
    /// this guard (`credentials.authentication.method`), if any.
    pub(crate) method: Option<Arc<str>>,
}

impl ServerConfig {
    /// The guard whose Authentication Method is `method`.
    pub(crate) fn guard_of_method(&self, method: &str) -> Option<&ServerAuthorization> {
        (self.guards.iter()).find(|g| g.method.as_deref() == Some(method))
    }

    /// The guard named `name`.
    pub(crate) fn guard_named(&self, name: &str) -> Option<&ServerAuthorization> {
        self.guards.iter().find(|g| &*g.guard_name == name)
    }
}

/// Why a publish fails a topic's models: the model that failed (for
/// metrics) and the message (for events).
#[derive(Debug)]
pub(crate) struct ValidationFailure<'a> {
    /// The name of the model that failed, e.g. `json`.
    pub(crate) model: &'a str,
    message: String,
}

impl std::fmt::Display for ValidationFailure<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl TopicValidation {
    /// Why `publish` fails this entry's models: its payload first, then its
    /// user properties; `None` when it passes.
    pub(crate) fn failure(&self, publish: &Publish) -> Option<ValidationFailure<'_>> {
        self.content
            .as_ref()
            .and_then(|(name, model)| {
                model
                    .validate(&publish.payload)
                    .err()
                    .map(|error| ValidationFailure {
                        model: name,
                        message: format!("payload fails model {name}: {error}"),
                    })
            })
            .or_else(|| {
                let properties = publish.properties.as_ref()?;
                self.user_properties
                    .iter()
                    .find_map(|(property, name, model)| {
                        properties
                            .user_properties
                            .iter()
                            .filter(|(key, _)| key == property)
                            .find_map(|(_, value)| model.validate(value.as_bytes()).err())
                            .map(|error| ValidationFailure {
                                model: name,
                                message: format!(
                                    "user property {} fails model {name}: {error}",
                                    text(property)
                                ),
                            })
                    })
            })
    }
}
