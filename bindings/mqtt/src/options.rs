//! The mqtt binding's options and route conditions, as written in `zilla.yaml`.

use serde::{Deserialize, Serialize};

use crate::codec::Version;
use crate::topic;

/// `options` of an mqtt server.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttServerOptions {
    /// Protocol versions accepted: `v3.1.1`, `v5` (default both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<VersionName>>,
    /// Largest packet accepted from clients, in bytes (default 1 MiB; the
    /// brokers' own limits lower it further).
    #[serde(
        default,
        rename = "maximum-packet-size",
        skip_serializing_if = "Option::is_none"
    )]
    pub maximum_packet_size: Option<u32>,
    /// Seconds a new connection has to send its CONNECT (default 10).
    #[serde(
        default,
        rename = "connect-timeout",
        skip_serializing_if = "Option::is_none"
    )]
    pub connect_timeout: Option<u16>,
}

/// `options` of an mqtt client.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttClientOptions {
    /// The protocol spoken to the broker: `v5` (default) or `v3.1.1` for
    /// brokers that need it (MQTT 5 properties and subscription options are
    /// then not carried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<VersionName>,
    /// Seconds to wait for the broker's CONNACK (default 10).
    #[serde(
        default,
        rename = "connect-timeout",
        skip_serializing_if = "Option::is_none"
    )]
    pub connect_timeout: Option<u16>,
}

/// A protocol version name in `options.versions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VersionName {
    /// MQTT 3.1.1.
    #[serde(rename = "v3.1.1")]
    V311,
    /// MQTT 5.0.
    #[serde(rename = "v5")]
    V5,
}

impl VersionName {
    /// The codec version.
    pub fn version(self) -> Version {
        match self {
            VersionName::V311 => Version::V4,
            VersionName::V5 => Version::V5,
        }
    }
}

/// One `when` entry of an mqtt server route: a set of session, publish or
/// subscribe conditions.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttCondition {
    /// Sessions whose client id matches one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub session: Vec<SessionCondition>,
    /// Publishes whose topic matches one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<TopicCondition>,
    /// Subscriptions whose filter is covered by one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscribe: Vec<TopicCondition>,
}

/// `session: [{client-id: "sensor-*"}]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionCondition {
    /// A client id pattern; `*` matches any run of characters.
    #[serde(rename = "client-id")]
    pub client_id: String,
}

/// `publish: [{topic: "a/+/c"}]` or `subscribe: [{topic: "a/#"}]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicCondition {
    /// A topic filter (`+`, `#`).
    pub topic: String,
}

/// What a route is asked about.
#[derive(Debug, Clone, Copy)]
pub enum Operation<'a> {
    /// A session with this client id.
    Session(&'a str),
    /// A publish to this topic.
    Publish(&'a str),
    /// A subscription with this filter.
    Subscribe(&'a str),
}

/// The conditions of one route, grouped by kind. Conditions of one kind only
/// restrict operations of that kind (as in Zilla): a route with only `publish`
/// conditions accepts any session and any subscription.
#[derive(Debug, Clone, Default)]
pub struct RouteConditions {
    sessions: Vec<String>,
    publishes: Vec<String>,
    subscribes: Vec<String>,
}

impl RouteConditions {
    /// Gathers the conditions of every `when` entry of a route.
    pub fn new<'a>(when: impl IntoIterator<Item = &'a MqttCondition>) -> Self {
        let mut conditions = Self::default();
        for condition in when {
            conditions
                .sessions
                .extend(condition.session.iter().map(|s| s.client_id.clone()));
            conditions
                .publishes
                .extend(condition.publish.iter().map(|t| t.topic.clone()));
            conditions
                .subscribes
                .extend(condition.subscribe.iter().map(|t| t.topic.clone()));
        }
        conditions
    }

    /// Whether this route accepts `operation`.
    pub fn accepts(&self, operation: Operation<'_>) -> bool {
        match operation {
            Operation::Session(client_id) => {
                self.sessions.is_empty() || self.sessions.iter().any(|p| glob(p, client_id))
            }
            Operation::Publish(name) => {
                self.publishes.is_empty() || self.publishes.iter().any(|f| topic::matches(f, name))
            }
            Operation::Subscribe(filter) => {
                let filter = topic::effective_filter(filter);
                self.subscribes.is_empty()
                    || self.subscribes.iter().any(|f| topic::covers(f, filter))
            }
        }
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((prefix, rest)) => {
            let Some(mut remaining) = text.strip_prefix(prefix) else {
                return false;
            };
            if rest.is_empty() {
                return true;
            }
            loop {
                if glob(rest, remaining) {
                    return true;
                }
                let mut chars = remaining.chars();
                if chars.next().is_none() {
                    return false;
                }
                remaining = chars.as_str();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip() {
        let yaml = "versions:\n- v3.1.1\n- v5\nmaximum-packet-size: 65536\n";
        let options: MqttServerOptions = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(
            options.versions,
            Some(vec![VersionName::V311, VersionName::V5])
        );
        let again: MqttServerOptions =
            serde_yaml::from_str(&serde_yaml::to_string(&options).unwrap()).unwrap();
        assert_eq!(options, again);
        let error = serde_yaml::from_str::<MqttServerOptions>("versions: [v4]\n").unwrap_err();
        assert!(
            error.to_string().contains("unknown variant `v4`"),
            "{error}"
        );
    }

    #[test]
    fn conditions_restrict_only_their_own_kind() {
        let when: Vec<MqttCondition> = serde_yaml::from_str(
            "- session:\n  - client-id: sensor-*\n- publish:\n  - topic: sensors/#\n",
        )
        .unwrap();
        let route = RouteConditions::new(&when);
        assert!(route.accepts(Operation::Session("sensor-7")));
        assert!(!route.accepts(Operation::Session("app-1")));
        assert!(route.accepts(Operation::Publish("sensors/7/temp")));
        assert!(!route.accepts(Operation::Publish("apps/x")));
        assert!(route.accepts(Operation::Subscribe("anything/#")));
    }

    #[test]
    fn subscribe_conditions_cover_shared_filters() {
        let when: Vec<MqttCondition> =
            serde_yaml::from_str("- subscribe:\n  - topic: sensors/#\n").unwrap();
        let route = RouteConditions::new(&when);
        assert!(route.accepts(Operation::Subscribe("$share/g/sensors/+/temp")));
        assert!(!route.accepts(Operation::Subscribe("#")));
    }

    #[test]
    fn client_id_globs() {
        assert!(glob("*", ""));
        assert!(glob("a*c", "abbbc"));
        assert!(glob("*-7", "sensor-7"));
        assert!(!glob("a*c", "abd"));
        assert!(glob("exact", "exact"));
    }
}
