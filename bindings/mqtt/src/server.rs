//! mqtt server: accepts byte streams and runs an MQTT session on each.

use std::sync::Arc;
use std::time::Duration;

use zilla_engine::{
    async_trait, Binding, BindingContext, BuildError, ByteStream, Events, Ports, Routes, Shutdown,
    StreamHandler, StreamInfo,
};

use crate::codec::Version;
use crate::options::{MqttCondition, MqttServerOptions, RouteConditions};
use crate::port::MqttSessions;
use crate::session;

const DEFAULT_MAXIMUM_PACKET_SIZE: u32 = 1024 * 1024;
const DEFAULT_CONNECT_TIMEOUT: u16 = 10;

pub(crate) fn build(cx: &mut BindingContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
    let options = cx.options::<MqttServerOptions>();
    let routes = cx.required_routes::<MqttCondition, dyn MqttSessions>();
    let options = options?;
    let routes = routes?;
    let versions = match &options.versions {
        Some(versions) if versions.is_empty() => {
            return Err(cx.error("options.versions", "at least one version must be enabled"))
        }
        Some(versions) => versions.iter().map(|v| v.version()).collect(),
        None => vec![Version::V4, Version::V5],
    };
    let conditions = routes
        .iter()
        .map(|route| RouteConditions::new(&route.when))
        .collect();
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
            conditions,
            events: cx.events(),
            shutdown: cx.shutdown(),
        }),
    }))
}

/// What every session of one mqtt server shares.
pub(crate) struct ServerConfig {
    pub(crate) versions: Vec<Version>,
    pub(crate) maximum_packet_size: u32,
    pub(crate) connect_timeout: Duration,
    pub(crate) routes: Routes<MqttCondition, dyn MqttSessions>,
    /// The conditions of `routes`, by route index, grouped by kind.
    pub(crate) conditions: Vec<RouteConditions>,
    pub(crate) events: Events,
    pub(crate) shutdown: Shutdown,
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
