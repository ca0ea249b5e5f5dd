//! mqtt server: accepts byte streams and runs an MQTT session on each.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use zilla_engine::{
    async_trait, Binding, BindingContext, BuildError, ByteStream, Events, Guard, Model, Ports,
    Routes, Shutdown, StreamHandler, StreamInfo,
};

use crate::codec::Version;
use crate::options::{
    CredentialsPattern, MqttCondition, MqttServerOptions, OnInvalid, RouteConditions, RouteTemplate,
};
use crate::port::MqttSessions;
use crate::session;

const DEFAULT_MAXIMUM_PACKET_SIZE: u32 = 1024 * 1024;
const DEFAULT_CONNECT_TIMEOUT: u16 = 10;

pub(crate) fn build(cx: &mut BindingContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
    let options = cx.options::<MqttServerOptions>();
    let routes = cx.required_routes::<MqttCondition, dyn MqttSessions>();
    let options = options?;
    let routes = routes?;
    let authorization = match options.authorization.len() {
        0 => None,
        1 => {
            let (name, authorization) = options.authorization.iter().next().expect("one entry");
            let path = format!("options.authorization.{name}");
            let guard = cx.guard(name, &path)?;
            let pattern = CredentialsPattern::new(&authorization.credentials.connect)
                .map_err(|message| cx.error(&format!("{path}.credentials.connect"), message))?;
            Some(ServerAuthorization {
                guard_name: name.as_str().into(),
                guard,
                pattern,
            })
        }
        _ => return Err(cx.error("options.authorization", "name exactly one guard")),
    };
    let mut topics = Vec::new();
    let mut invalid = None;
    for (index, topic) in options.topics.iter().enumerate() {
        let path = format!("options.topics[{index}]");
        if !crate::topic::is_valid_filter(&topic.name) {
            invalid = Some(cx.error(
                &format!("{path}.name"),
                format!("`{}` is not a topic filter", topic.name),
            ));
            continue;
        }
        let content = match &topic.content {
            Some(reference) => match cx.model(reference, &format!("{path}.content")) {
                Ok(model) => Some((model_name(reference), model)),
                Err(error) => {
                    invalid = Some(error);
                    continue;
                }
            },
            None => None,
        };
        let mut user_properties = Vec::new();
        for (name, reference) in &topic.user_properties {
            match cx.model(reference, &format!("{path}.user-properties.{name}")) {
                Ok(model) => user_properties.push((name.clone(), model_name(reference), model)),
                Err(error) => invalid = Some(error),
            }
        }
        topics.push(TopicValidation {
            filter: topic.name.clone(),
            content,
            user_properties,
            on_invalid: topic.on_invalid.unwrap_or(OnInvalid::Disconnect),
        });
    }
    if let Some(error) = invalid {
        return Err(error);
    }
    let mut templates = Vec::new();
    for (index, route) in routes.iter().enumerate() {
        match RouteTemplate::new(&route.when) {
            Ok(template) => templates.push(template),
            Err(message) => return Err(cx.error(&format!("routes[{index}].when"), message)),
        }
    }
    let versions = match &options.versions {
        Some(versions) if versions.is_empty() => {
            return Err(cx.error("options.versions", "at least one version must be enabled"))
        }
        Some(versions) => versions.iter().map(|v| v.version()).collect(),
        None => vec![Version::V4, Version::V5],
    };
    let unbound = templates.iter().map(RouteTemplate::unbound).collect();
    Ok(Arc::new(MqttServer {
        config: Arc::new(ServerConfig {
            versions,
            maximum_packet_size: options
                .maximum_packet_size
                .unwrap_or(DEFAULT_MAXIMUM_PACKET_SIZE),
            connect_timeout: Duration::from_secs(u64::from(
                options.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            )),
            routes,
            templates,
            unbound,
            authorization,
            topics,
            events: cx.events(),
            shutdown: cx.shutdown(),
            sessions: Arc::default(),
        }),
    }))
}

/// What every session of one mqtt server shares.
pub(crate) struct ServerConfig {
    pub(crate) versions: Vec<Version>,
    pub(crate) maximum_packet_size: u32,
    pub(crate) connect_timeout: Duration,
    pub(crate) routes: Routes<MqttCondition, dyn MqttSessions>,
    /// The conditions of `routes`, by route index, before a session binds params.
    pub(crate) templates: Vec<RouteTemplate>,
    /// The conditions with params unbound: what some token could be allowed.
    pub(crate) unbound: Vec<RouteConditions>,
    /// The guard that authorizes sessions, if any.
    pub(crate) authorization: Option<ServerAuthorization>,
    /// Validation of publishes, by topic filter; the first match applies.
    pub(crate) topics: Vec<TopicValidation>,
    pub(crate) events: Events,
    pub(crate) shutdown: Shutdown,
    /// Connected sessions by client id, so a new connection takes over an old one.
    pub(crate) sessions: Arc<SessionRegistry>,
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

/// The `model` a model reference names, for events.
fn model_name(reference: &serde_yaml::Value) -> String {
    match reference {
        serde_yaml::Value::String(name) => name.clone(),
        other => other
            .get("model")
            .and_then(serde_yaml::Value::as_str)
            .unwrap_or("?")
            .to_owned(),
    }
}

/// The guard of `options.authorization` and where the credentials are.
pub(crate) struct ServerAuthorization {
    pub(crate) guard_name: Arc<str>,
    pub(crate) guard: Arc<dyn Guard>,
    pub(crate) pattern: CredentialsPattern,
}

/// The client ids connected through one mqtt server, each with the signal
/// that tells its connection it was taken over.
#[derive(Debug, Default)]
pub(crate) struct SessionRegistry {
    sessions: Mutex<HashMap<String, (u64, Arc<Notify>)>>,
    /// Packet-id state left by persistent sessions, until they resume or expire.
    carried: Mutex<HashMap<String, Carried>>,
    next: AtomicU64,
}

/// What a persistent session's connection leaves for the next one: the
/// packet ids of QoS 1/2 flows still open, by upstream exit name, so that a
/// resumed session can finish them (MQTT 4.4).
#[derive(Debug, Clone, Default)]
pub(crate) struct Carried {
    /// Client publishes in flight: (client id, exit, upstream id).
    pub(crate) inbound: Vec<(u16, Arc<str>, u16)>,
    /// Messages to the client in flight: (client id, exit, upstream id).
    pub(crate) outbound: Vec<(u16, Arc<str>, u16)>,
    /// The next upstream packet id, by exit.
    pub(crate) next_pkids: Vec<(Arc<str>, u16)>,
    pub(crate) next_client_pkid: u16,
    /// When the session expires at the brokers (`None`: never).
    pub(crate) expires: Option<tokio::time::Instant>,
}

impl SessionRegistry {
    /// Registers `client_id`, taking over (signalling) any connection that has it.
    pub(crate) fn register(self: &Arc<Self>, client_id: &str) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let taken_over = Arc::new(Notify::new());
        let previous = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(client_id.to_owned(), (id, taken_over.clone()));
        if let Some((_, previous)) = previous {
            previous.notify_one();
        }
        Registration {
            registry: self.clone(),
            client_id: client_id.to_owned(),
            id,
            taken_over,
        }
    }
}

impl SessionRegistry {
    /// Keeps `carried` for `client_id`'s next connection.
    pub(crate) fn carry(&self, client_id: &str, carried: Carried) {
        let mut all = self.carried.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        // Expired sessions are gone at the brokers too; forget their state.
        all.retain(|_, c| c.expires.is_none_or(|at| at > now));
        all.insert(client_id.to_owned(), carried);
    }

    /// Takes what `client_id`'s previous connection left, if still valid.
    pub(crate) fn resume(&self, client_id: &str) -> Option<Carried> {
        let carried = self
            .carried
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(client_id)?;
        carried
            .expires
            .is_none_or(|at| at > tokio::time::Instant::now())
            .then_some(carried)
    }
}

/// A connection's place in the registry; leaving it on drop.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Arc<SessionRegistry>,
    client_id: String,
    id: u64,
    pub(crate) taken_over: Arc<Notify>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut sessions = self
            .registry
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if sessions
            .get(&self.client_id)
            .is_some_and(|(id, _)| *id == self.id)
        {
            sessions.remove(&self.client_id);
        }
    }
}

struct MqttServer {
    config: Arc<ServerConfig>,
}

impl Binding for MqttServer {
    fn ports(self: Arc<Self>) -> Ports {
        Ports::new().with::<dyn StreamHandler>(self)
    }
}

#[async_trait]
impl StreamHandler for MqttServer {
    async fn handle(&self, stream: ByteStream, info: StreamInfo) {
        session::serve(self.config.clone(), stream, info).await;
    }
}
