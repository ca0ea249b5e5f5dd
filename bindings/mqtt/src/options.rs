//! The mqtt binding's options and route conditions, as written in `zilla.yaml`.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::codec::Version;
use crate::flow::FlowOptions;
pub use crate::limits::options::{LimitKey, LimitOptions, RateOptions, TopicLimitOptions};
use crate::topic;

/// `options` of an mqtt server.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
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
    /// The guards that authorize sessions, each with where its credentials
    /// are. Zilla takes one; several (beyond Zilla) each name their own
    /// Authentication Method, and a CONNECT's user name or password goes to
    /// the first, in this order, whose `connect` pattern it matches.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub authorization: IndexMap<String, AuthorizationOptions>,
    /// The store (a `stores` entry) that holds session ownership: servers
    /// naming the same store take over each other's sessions by client id.
    /// Zilla requires it; without it this server keeps its own (our choice).
    /// A store shared by the fleet (type `redis`) also counts `limits`
    /// across every replica; session ownership stays in each process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// Payload and user-property validation by topic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<TopicOptions>,
    /// Flow control (beyond Zilla): the Receive Maximum advertised to
    /// clients and the bytes a session may hold while a window is full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowOptions>,
    /// Seconds of keep-alive the proxy imposes on MQTT 5 clients, told in
    /// the CONNACK and enforced by the proxy (beyond Zilla; default: the
    /// client's own, or the broker's server keep-alive).
    #[serde(
        default,
        rename = "server-keep-alive",
        skip_serializing_if = "Option::is_none"
    )]
    pub server_keep_alive: Option<u16>,
    /// Topic aliases the proxy assigns on deliveries to MQTT 5 clients that
    /// allow them, saving the topic's bytes on every later message (beyond
    /// Zilla; default 0: none).
    #[serde(
        default,
        rename = "client-topic-aliases",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_topic_aliases: Option<u16>,
    /// Where MQTT 5 clients should reconnect when this proxy drains (beyond
    /// Zilla): sent as the Server Reference of the DISCONNECT 0x8B, e.g. the
    /// load balancer's name in front of the other replicas.
    #[serde(
        default,
        rename = "server-reference",
        skip_serializing_if = "Option::is_none"
    )]
    pub server_reference: Option<String>,
    /// Limits and quotas (beyond Zilla): per client id, guard identity,
    /// claim, source address or session, how many sessions, CONNECTs,
    /// publishes and bytes per second, subscriptions and topic sizes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<LimitOptions>,
    /// Seconds a session over its publish rate may keep reading from the
    /// client paused before its publishes over the rate are refused
    /// (beyond Zilla; default 5; 0: refused at once, never paused).
    #[serde(
        default,
        rename = "limit-wait",
        skip_serializing_if = "Option::is_none"
    )]
    pub limit_wait: Option<u32>,
    /// What the server does while the store counting its limits (a
    /// `redis` store, shared by the fleet) does not answer (beyond Zilla):
    /// `local` (default) counts in this process, each limit divided by the
    /// replicas last seen alive; `refuse` answers new CONNECTs 0x88.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<crate::limits::OnUnavailable>,
    /// The client id a session must have (beyond Zilla; AWS IoT binds the
    /// client id to the thing name): a guarded value such as
    /// `${guarded['x509_0'].identity}`. A CONNECT with another id is
    /// refused (0x85), an empty id is given the value, and a CONNECT
    /// without the value (no certificate, no token) is refused (0x87).
    #[serde(default, rename = "client-id", skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
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
    /// The guard that authorizes sessions (server), or where the client's
    /// credentials are forwarded upstream (client).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub authorization: IndexMap<String, AuthorizationOptions>,
}

/// `topics[]`: what publishes to matching topics must look like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicOptions {
    /// A topic filter (`+`, `#`).
    pub name: String,
    /// The payload's model reference (`{model: json, catalog: ...}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<serde_yaml::Value>,
    /// Models for user properties, by property name.
    #[serde(
        default,
        rename = "user-properties",
        skip_serializing_if = "IndexMap::is_empty"
    )]
    pub user_properties: IndexMap<String, serde_yaml::Value>,
    /// What happens to an invalid publish: `disconnect` (default, as Zilla:
    /// DISCONNECT 0x99) or `reject` (PUBACK/PUBREC 0x99, connection kept).
    #[serde(
        default,
        rename = "on-invalid",
        skip_serializing_if = "Option::is_none"
    )]
    pub on_invalid: Option<OnInvalid>,
}

/// `on-invalid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnInvalid {
    /// DISCONNECT 0x99 (3.1.1: the connection closes).
    Disconnect,
    /// PUBACK/PUBREC 0x99 for QoS 1/2, dropped at QoS 0; the connection stays.
    Reject,
}

/// `authorization.<guard>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationOptions {
    /// Where the credentials are.
    pub credentials: CredentialsOptions,
}

/// `credentials`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsOptions {
    /// In the CONNECT packet's user name or password. Zilla requires it;
    /// an mqtt server's guard may go without it when it names an
    /// `authentication` method (beyond Zilla), an mqtt client's may not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<ConnectCredentials>,
    /// MQTT 5 enhanced authentication (server only): a CONNECT whose
    /// Authentication Method is `method` carries the token in its
    /// Authentication Data, and AUTH 0x19 refreshes it in the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthenticationCredentials>,
}

/// `authentication`: the MQTT 5 Authentication Method that names this guard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthenticationCredentials {
    /// The Authentication Method, e.g. `jwt` or `CUSTOM-JWT`.
    pub method: String,
}

/// `connect`: exactly one of `username` and `password`, a pattern such as
/// `Bearer {credentials}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectCredentials {
    /// The credentials are in the user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The credentials are in the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// Where credentials sit in a CONNECT, and how they are wrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialsPattern {
    /// True for the password, false for the user name.
    pub in_password: bool,
    prefix: String,
    suffix: String,
}

impl CredentialsPattern {
    /// Reads `connect` (exactly one field, containing `{credentials}` once).
    pub fn new(connect: &ConnectCredentials) -> Result<Self, String> {
        let (in_password, pattern) = match (&connect.username, &connect.password) {
            (Some(pattern), None) => (false, pattern),
            (None, Some(pattern)) => (true, pattern),
            _ => return Err("exactly one of `username` and `password` must be given".into()),
        };
        let Some((prefix, suffix)) = pattern.split_once("{credentials}") else {
            return Err(format!("`{pattern}` does not contain `{{credentials}}`"));
        };
        Ok(Self {
            in_password,
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
        })
    }

    /// The credentials inside `text`, when it has the pattern's shape.
    pub fn extract<'a>(&self, text: &'a str) -> Option<&'a str> {
        text.strip_prefix(&self.prefix)?
            .strip_suffix(&self.suffix)
            .filter(|credentials| !credentials.is_empty())
    }

    /// `credentials` wrapped in the pattern.
    pub fn wrap(&self, credentials: &str) -> String {
        format!("{}{credentials}{}", self.prefix, self.suffix)
    }
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
    /// A topic filter (`+`, `#`), whose `{param}` levels are bound by `params`.
    pub topic: String,
    /// Values of `{param}` levels: `${guarded['<guard>'].identity}` or
    /// `${guarded['<guard>'].attributes.<name>}`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub params: IndexMap<String, String>,
}

/// Where a `{param}` takes its value from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamSource {
    /// The guard session's identity.
    Identity(String),
    /// A named attribute of the guard session.
    Attribute(String, String),
}

impl ParamSource {
    /// Parses `${guarded['guard'].identity}` or `${guarded['guard'].attributes.name}`.
    pub fn parse(expression: &str) -> Result<Self, String> {
        let invalid = || {
            format!(
                "`{expression}` is not `${{guarded['<guard>'].identity}}` or `${{guarded['<guard>'].attributes.<name>}}`"
            )
        };
        let inner = expression
            .trim()
            .strip_prefix("${")
            .and_then(|e| e.strip_suffix('}'))
            .ok_or_else(invalid)?
            .trim();
        let rest = inner.strip_prefix("guarded[").ok_or_else(invalid)?;
        let (guard, rest) = rest.split_once(']').ok_or_else(invalid)?;
        let guard = guard.trim().trim_matches(['\'', '"']).to_owned();
        match rest.strip_prefix('.').ok_or_else(invalid)? {
            "identity" => Ok(ParamSource::Identity(guard)),
            other => match other.strip_prefix("attributes.") {
                Some(name) if !name.is_empty() => {
                    Ok(ParamSource::Attribute(guard, name.to_owned()))
                }
                _ => Err(invalid()),
            },
        }
    }

    /// The guard whose session the value comes from.
    pub fn guard(&self) -> &str {
        match self {
            ParamSource::Identity(guard) | ParamSource::Attribute(guard, _) => guard,
        }
    }

    /// The value for this session, if its guard granted one.
    pub fn value<'a>(&self, authorizations: &'a zilla_engine::Authorizations) -> Option<&'a str> {
        match self {
            ParamSource::Identity(guard) => authorizations.get(guard)?.identity.as_deref(),
            ParamSource::Attribute(guard, name) => authorizations
                .get(guard)?
                .attributes
                .get(name)
                .map(String::as_str),
        }
    }
}

/// As written, for events: `guarded['x509_0'].identity`.
impl std::fmt::Display for ParamSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamSource::Identity(guard) => write!(f, "guarded['{guard}'].identity"),
            ParamSource::Attribute(guard, name) => {
                write!(f, "guarded['{guard}'].attributes.{name}")
            }
        }
    }
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
/// conditions accepts any session and any subscription. `None` means "no
/// condition of this kind"; an empty list means "none can match" (e.g. a
/// `{param}` the session's token does not bind).
#[derive(Debug, Clone, Default)]
pub struct RouteConditions {
    sessions: Option<Vec<String>>,
    publishes: Option<Vec<String>>,
    subscribes: Option<Vec<String>>,
}

/// A topic condition with its `{param}` sources parsed.
#[derive(Debug, Clone)]
pub struct TopicTemplate {
    topic: String,
    params: Vec<(String, ParamSource)>,
}

impl TopicTemplate {
    /// Parses a condition's params; errors name the bad param.
    pub fn new(condition: &TopicCondition) -> Result<Self, String> {
        let mut params = Vec::new();
        for (name, expression) in &condition.params {
            if !condition
                .topic
                .split('/')
                .any(|level| level == format!("{{{name}}}"))
            {
                return Err(format!(
                    "param `{name}` does not appear as `{{{name}}}` in `{}`",
                    condition.topic
                ));
            }
            params.push((name.clone(), ParamSource::parse(expression)?));
        }
        Ok(Self {
            topic: condition.topic.clone(),
            params,
        })
    }

    /// The filter with params bound for a session (`None` when a value is
    /// missing or would change the filter's shape), or with every param as
    /// `+` when `authorizations` is `None`.
    fn bind(&self, authorizations: Option<&zilla_engine::Authorizations>) -> Option<String> {
        let mut levels = Vec::new();
        for level in self.topic.split('/') {
            let param = level
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .and_then(|name| self.params.iter().find(|(n, _)| n == name));
            match (param, authorizations) {
                (Some(_), None) => levels.push("+".to_owned()),
                (Some((_, source)), Some(authorizations)) => {
                    let value = source.value(authorizations)?;
                    if value.is_empty() || value.contains(['/', '+', '#', '\0']) {
                        return None;
                    }
                    levels.push(value.to_owned());
                }
                (None, _) => levels.push(level.to_owned()),
            }
        }
        Some(levels.join("/"))
    }
}

/// The conditions of one route as configured, before a session binds params.
#[derive(Debug, Clone, Default)]
pub struct RouteTemplate {
    sessions: Option<Vec<String>>,
    publishes: Option<Vec<TopicTemplate>>,
    subscribes: Option<Vec<TopicTemplate>>,
}

impl RouteTemplate {
    /// Gathers the conditions of every `when` entry of a route.
    pub fn new<'a>(when: impl IntoIterator<Item = &'a MqttCondition>) -> Result<Self, String> {
        let mut template = Self::default();
        for condition in when {
            if !condition.session.is_empty() {
                template
                    .sessions
                    .get_or_insert_with(Vec::new)
                    .extend(condition.session.iter().map(|s| s.client_id.clone()));
            }
            for (target, topics) in [
                (&mut template.publishes, &condition.publish),
                (&mut template.subscribes, &condition.subscribe),
            ] {
                if !topics.is_empty() {
                    let list = target.get_or_insert_with(Vec::new);
                    for topic in topics {
                        list.push(TopicTemplate::new(topic)?);
                    }
                }
            }
        }
        // A route that names topics allows only the operations it names: a
        // route for publishing to `a/#` must not let a client subscribe to
        // everything (as in Zilla, a condition matches only its own kind).
        // A route naming no topics at all (say, by client id) allows any.
        if template.publishes.is_some() || template.subscribes.is_some() {
            template.publishes.get_or_insert_with(Vec::new);
            template.subscribes.get_or_insert_with(Vec::new);
        }
        Ok(template)
    }

    /// The client id patterns a session must match to be accepted, or
    /// `None` when the route accepts every session.
    pub fn sessions(&self) -> Option<&[String]> {
        self.sessions.as_deref()
    }

    /// The conditions as they apply to a session authorized as `authorizations`.
    pub fn bind(&self, authorizations: &zilla_engine::Authorizations) -> RouteConditions {
        self.bind_with(Some(authorizations))
    }

    /// The conditions with every param as `+`: what the route could accept
    /// for some token, to tell "not allowed" from "not routable".
    pub fn unbound(&self) -> RouteConditions {
        self.bind_with(None)
    }

    fn bind_with(&self, authorizations: Option<&zilla_engine::Authorizations>) -> RouteConditions {
        let bind = |templates: &Option<Vec<TopicTemplate>>| {
            templates
                .as_ref()
                .map(|list| list.iter().filter_map(|t| t.bind(authorizations)).collect())
        };
        RouteConditions {
            sessions: self.sessions.clone(),
            publishes: bind(&self.publishes),
            subscribes: bind(&self.subscribes),
        }
    }
}

impl RouteConditions {
    /// Gathers the conditions of every `when` entry of a route that has no params.
    pub fn new<'a>(when: impl IntoIterator<Item = &'a MqttCondition>) -> Self {
        RouteTemplate::new(when).unwrap_or_default().unbound()
    }

    /// Whether the route's answer for a publish depends on its topic.
    pub fn names_publish_topics(&self) -> bool {
        self.publishes.is_some()
    }

    /// Whether this route accepts `operation`.
    pub fn accepts(&self, operation: Operation<'_>) -> bool {
        match operation {
            Operation::Session(client_id) => self
                .sessions
                .as_ref()
                .is_none_or(|patterns| patterns.iter().any(|p| glob(p, client_id))),
            Operation::Publish(name) => self
                .publishes
                .as_ref()
                .is_none_or(|filters| filters.iter().any(|f| topic::matches(f, name))),
            Operation::Subscribe(filter) => {
                let filter = topic::effective_filter(filter);
                self.subscribes
                    .as_ref()
                    .is_none_or(|filters| filters.iter().any(|f| topic::covers(f, filter)))
            }
        }
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    // Linear-time wildcard matching (the classic two-pointer walk with one
    // backtrack point): client ids come from clients and may be long.
    let (pattern, text): (Vec<char>, Vec<char>) =
        (pattern.chars().collect(), text.chars().collect());
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
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
    fn topic_conditions_allow_only_the_operations_they_name() {
        let when: Vec<MqttCondition> = serde_yaml::from_str(
            "- session:\n  - client-id: sensor-*\n- publish:\n  - topic: sensors/#\n",
        )
        .unwrap();
        let route = RouteConditions::new(&when);
        assert!(route.accepts(Operation::Session("sensor-7")));
        assert!(!route.accepts(Operation::Session("app-1")));
        assert!(route.accepts(Operation::Publish("sensors/7/temp")));
        assert!(!route.accepts(Operation::Publish("apps/x")));
        assert!(
            !route.accepts(Operation::Subscribe("sensors/#")),
            "a publish route lets no one subscribe"
        );
        let by_client_id: Vec<MqttCondition> = serde_yaml::from_str(
            "- session:
  - client-id: sensor-*
",
        )
        .unwrap();
        let route = RouteConditions::new(&by_client_id);
        assert!(route.accepts(Operation::Publish("anything")));
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
    fn params_bind_to_the_session_and_never_widen_a_filter() {
        use zilla_engine::{Authorizations, GuardSession};
        let when: Vec<MqttCondition> = serde_yaml::from_str(
            "- publish:\n  - topic: tenants/{tenant}/#\n    params:\n      tenant: ${guarded['authn_jwt'].attributes.tenant}\n",
        )
        .unwrap();
        let template = RouteTemplate::new(&when).unwrap();
        let mut acme = Authorizations::new();
        acme.insert(
            "authn_jwt",
            GuardSession {
                attributes: [("tenant".to_owned(), "acme".to_owned())].into(),
                ..GuardSession::default()
            },
        );
        let bound = template.bind(&acme);
        assert!(bound.accepts(Operation::Publish("tenants/acme/x")));
        assert!(!bound.accepts(Operation::Publish("tenants/other/x")));
        let mut sneaky = Authorizations::new();
        sneaky.insert(
            "authn_jwt",
            GuardSession {
                attributes: [("tenant".to_owned(), "#".to_owned())].into(),
                ..GuardSession::default()
            },
        );
        assert!(!template
            .bind(&sneaky)
            .accepts(Operation::Publish("tenants/acme/x")));
        assert!(!template
            .bind(&Authorizations::new())
            .accepts(Operation::Publish("tenants/acme/x")));
        assert!(template
            .unbound()
            .accepts(Operation::Publish("tenants/anyone/x")));
        let bad: Vec<MqttCondition> = serde_yaml::from_str(
            "- publish:\n  - topic: a/{x}\n    params:\n      x: ${identity}\n",
        )
        .unwrap();
        assert!(RouteTemplate::new(&bad)
            .unwrap_err()
            .contains("is not `${guarded"));
    }

    #[test]
    fn credentials_patterns() {
        let pattern = CredentialsPattern::new(&ConnectCredentials {
            username: Some("Bearer {credentials}".into()),
            password: None,
        })
        .unwrap();
        assert_eq!(pattern.extract("Bearer abc.def"), Some("abc.def"));
        assert_eq!(pattern.extract("abc.def"), None);
        assert_eq!(pattern.extract("Bearer "), None);
        assert_eq!(pattern.wrap("t"), "Bearer t");
        assert!(CredentialsPattern::new(&ConnectCredentials {
            username: None,
            password: None
        })
        .is_err());
    }

    #[test]
    fn client_id_globs() {
        assert!(glob("*", ""));
        assert!(glob("a*c", "abbbc"));
        assert!(glob("*-7", "sensor-7"));
        assert!(!glob("a*c", "abd"));
        assert!(glob("exact", "exact"));
        assert!(glob("sensor-*-room-*-temp", "sensor-1-room-2-temp"));
        assert!(!glob("sensor-*-room-*-temp", "sensor-1-room-2-hum"));
        // Long hostile ids stay linear.
        let long = "sensor-".to_owned() + &"-room-".repeat(10_000) + "x";
        assert!(!glob("sensor-*-room-*-temp", &long));
    }
}
