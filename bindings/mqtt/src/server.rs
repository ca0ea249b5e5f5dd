//! mqtt server: accepts byte streams and runs an MQTT session on each.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use zilla_engine::store::STORE_METRICS;
use zilla_engine::telemetry::metrics::Recorder;
use zilla_engine::{
    async_trait, Binding, BindingContext, BuildError, ByteStream, Ports, SharedCounts,
    StartContext, StartError, StoreStatsBlock, StreamHandler, StreamInfo,
};

use crate::admin::Seats;
use crate::codec::Version;
use crate::config::{ServerAuthorization, ServerConfig, TopicValidation};
use crate::flow::Flow;
use crate::limits::registry::LimitRegistry;
use crate::limits::{Fleet, Limits};
use crate::metrics::{self, MqttFamily, SessionMetrics};
use crate::options::{
    CredentialsPattern, MqttCondition, MqttServerOptions, OnInvalid, ParamSource, RouteTemplate,
};
use crate::port::MqttSessions;
use crate::session;
use crate::session::takeover::SessionRegistry;
use crate::shared_broker::{self, EXITS_SHARE_BROKER};

const DEFAULT_MAXIMUM_PACKET_SIZE: u32 = 1024 * 1024;
const DEFAULT_CONNECT_TIMEOUT: u16 = 10;

pub(crate) fn build(cx: &mut BindingContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
    let options = cx.options::<MqttServerOptions>();
    let routes = cx.required_routes::<MqttCondition, dyn MqttSessions>();
    let options = options?;
    let routes = routes?;
    // Looked up now, so that a missing store is reported together with the
    // problems found below rather than hiding them.
    let registries = registries(cx, options.store.as_deref());
    let mut guards: Vec<ServerAuthorization> = Vec::new();
    for (name, authorization) in &options.authorization {
        let path = format!("options.authorization.{name}");
        let guard = cx.guard(name, &path)?;
        let credentials = &authorization.credentials;
        let pattern = match &credentials.connect {
            Some(connect) => Some(
                CredentialsPattern::new(connect)
                    .map_err(|message| cx.error(&format!("{path}.credentials.connect"), message))?,
            ),
            None => None,
        };
        let method = credentials
            .authentication
            .as_ref()
            .map(|m| m.method.as_str());
        if pattern.is_none() && method.is_none() {
            return Err(cx.error(
                &format!("{path}.credentials"),
                "name `connect` credentials, an `authentication` method, or both",
            ));
        }
        if method.is_some_and(str::is_empty) {
            return Err(cx.error(
                &format!("{path}.credentials.authentication.method"),
                "the Authentication Method must not be empty",
            ));
        }
        if let Some(other) =
            method.and_then(|m| guards.iter().find(|g| g.method.as_deref() == Some(m)))
        {
            return Err(cx.error(
                &format!("{path}.credentials.authentication.method"),
                format!(
                    "the Authentication Method {:?} is already guard {}'s: each guard names its own",
                    method.unwrap_or_default(),
                    other.guard_name
                ),
            ));
        }
        guards.push(ServerAuthorization {
            guard_name: name.as_str().into(),
            guard,
            pattern,
            method: method.map(Into::into),
        });
    }
    let client_id = match &options.client_id {
        Some(expression) => {
            let source = ParamSource::parse(expression)
                .map_err(|message| cx.error("options.client-id", message))?;
            // A guard that does not exist would refuse every CONNECT: said
            // at startup instead.
            cx.guard(source.guard(), "options.client-id")?;
            Some(source)
        }
        None => None,
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
    let flow = Flow::new(options.flow.as_ref())
        .map_err(|(key, message)| cx.error(&format!("options.flow.{key}"), message))?;
    let unbound = templates.iter().map(RouteTemplate::unbound).collect();
    // Found now, while the exits are at hand; told at start, once the
    // engine's exporters listen (events emitted while building are lost).
    let shared_brokers =
        shared_broker::shared_brokers(&shared_broker::reaches(&routes, &templates))
            .iter()
            .map(|shared| shared.message(cx.name()))
            .collect();
    let (sessions, limit_registry, shared) = registries?;
    let mut limits = Limits::new(&options.limits, options.limit_wait, limit_registry)
        .map_err(|(path, message)| cx.error(&format!("options.{path}"), message))?;
    let store_metrics = match shared {
        Some(counts) => {
            let metrics = cx.metrics().family::<StoreStatsBlock>(&STORE_METRICS, counts.stats());
            limits.share(Fleet {
                counts,
                policy: options.unavailable.unwrap_or_default(),
            });
            metrics.map(|family| std::sync::Mutex::new(family.open()))
        }
        None if options.unavailable.is_some() => {
            return Err(cx.error(
                "options.unavailable",
                "applies to limits counted in a store the fleet shares (`options.store` naming a store of type redis)",
            ))
        }
        None => None,
    };
    let metrics = metrics::family(&cx.metrics(), &routes, &topics, &limits);
    Ok(Arc::new(MqttServer {
        shared_brokers,
        metrics,
        _store_metrics: store_metrics,
        config: Arc::new(ServerConfig {
            versions,
            maximum_packet_size: options
                .maximum_packet_size
                .unwrap_or(DEFAULT_MAXIMUM_PACKET_SIZE),
            flow,
            server_keep_alive: options.server_keep_alive,
            client_topic_aliases: options.client_topic_aliases.unwrap_or(0),
            server_reference: options.server_reference.clone(),
            connect_timeout: Duration::from_secs(u64::from(
                options.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            )),
            routes,
            templates,
            unbound,
            guards,
            client_id,
            topics,
            events: cx.events(),
            shutdown: cx.shutdown(),
            seats: Seats::new(cx.name()),
            sessions,
            limits,
        }),
    }))
}

/// Where session ownership and the limits' counts live: the named store's
/// registries, shared with every server naming that store (and with the
/// servers a reload builds, as an unchanged store is handed over); without
/// a store, this server's own. A store the fleet shares also gives the
/// counts every replica sees.
/// Session ownership, the limits' counts, and the counts the fleet shares.
type Registries = (
    Arc<SessionRegistry>,
    Arc<LimitRegistry>,
    Option<Arc<dyn SharedCounts>>,
);

fn registries(cx: &mut BindingContext<'_>, store: Option<&str>) -> Result<Registries, BuildError> {
    let Some(name) = store else {
        return Ok(Default::default());
    };
    let store = cx.store(name, "options.store")?;
    let cannot = |cx: &mut BindingContext<'_>| {
        cx.error(
            "options.store",
            format!("store `{name}` cannot hold mqtt sessions (it returned state of another type)"),
        )
    };
    let Some(sessions) = store.shared::<SessionRegistry>() else {
        return Err(cannot(cx));
    };
    let Some(limits) = store.shared::<LimitRegistry>() else {
        return Err(cannot(cx));
    };
    Ok((sessions, limits, store.shared_counts()))
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

struct MqttServer {
    config: Arc<ServerConfig>,
    /// Where each connection counts `mqtt.*` metrics, if anywhere.
    metrics: MqttFamily,
    /// The `store.*` metrics of the store the fleet shares, reported by
    /// this server while it lives.
    /// (A recorder is one task's; the mutex only makes the server `Sync`.)
    _store_metrics: Option<std::sync::Mutex<Recorder<StoreStatsBlock>>>,
    /// `MQTT_EXITS_SHARE_BROKER` messages: exits one session may use that
    /// lead to one broker.
    shared_brokers: Vec<String>,
}

#[async_trait]
impl Binding for MqttServer {
    fn ports(self: Arc<Self>) -> Ports {
        Ports::new().with::<dyn StreamHandler>(self)
    }

    /// Listens on nothing; warns about exits that share a broker, at each
    /// start (a reload's new configuration starts too).
    async fn start(self: Arc<Self>, cx: StartContext) -> Result<Vec<SocketAddr>, StartError> {
        for message in &self.shared_brokers {
            cx.events.warn(EXITS_SHARE_BROKER, message);
        }
        if let Some(fleet) = self.config.limits.fleet() {
            fleet.counts.start();
        }
        // Sessions wait on one signal each, their seat's: the drain is told
        // through it (see `Seats::drain`), not by a wait of its own in every
        // session's future and turn.
        let (seats, shutdown) = (self.config.seats.clone(), cx.shutdown.clone());
        cx.shutdown.spawn(async move {
            shutdown.draining().await;
            seats.drain();
        });
        Ok(Vec::new())
    }
}

#[async_trait]
impl StreamHandler for MqttServer {
    /// Not an `async fn`: its future would keep the room of `stream` and
    /// `info` (192 bytes) for the session's whole life, moved out or not.
    /// The returned box is the session's own future and nothing more.
    fn handle<'life0, 'async_trait>(
        &'life0 self,
        stream: ByteStream,
        info: StreamInfo,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let metrics = SessionMetrics::open(&self.metrics);
        Box::pin(session::serve(self.config.clone(), metrics, stream, info))
    }
}
