//! `options.limits` and `options.limit-wait` of an mqtt server, as written
//! in `zilla.yaml` (beyond Zilla).
//!
//! ```yaml
//! limits:
//!   - key: {claim: tenant}            # client-id | identity | source-address | session
//!     sessions: 100
//!     connects: {rate: 10, burst: 20}
//!     publishes: {rate: 100, burst: 200}
//!     bytes: {rate: 1048576, burst: 2097152}
//!   - key: session
//!     publishes: {rate: 20}
//!     subscriptions: 50
//!     topic: {length: 256, levels: 8}
//! limit-wait: 5
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One `limits[]` entry: what is counted together (`key`) and the limits
/// for each value of that key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LimitOptions {
    /// What the limits are counted by.
    pub key: LimitKey,
    /// Concurrent sessions (distinct client ids) per key value; a CONNECT
    /// beyond gets CONNACK 0x97 (3.1.1: 0x03). Not with `client-id` (a
    /// client id has one session) or `session`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<u32>,
    /// CONNECTs per second per key value; beyond, CONNACK 0x9F (3.1.1: 0x03).
    /// Not with `session`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connects: Option<RateOptions>,
    /// PUBLISH packets per second per key value (or per session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publishes: Option<RateOptions>,
    /// PUBLISH payload bytes per second per key value (or per session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<RateOptions>,
    /// Topic filters a session may hold subscribed; `key: session` only.
    /// Filters beyond get SUBACK 0x97 (3.1.1: 0x80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriptions: Option<u32>,
    /// The longest topic names and filters; `key: session` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<TopicLimitOptions>,
}

/// `{rate: 10, burst: 20}`: a token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateOptions {
    /// Sustained tokens per second (fractions allowed: 0.1 is one every 10 s).
    pub rate: f64,
    /// Tokens that may be used at once (default: the rate, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<f64>,
}

/// `{length: 256, levels: 8}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicLimitOptions {
    /// Longest topic name or filter, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u32>,
    /// Most `/`-separated levels in a topic name or filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub levels: Option<u32>,
}

/// What a `limits[]` entry counts by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// `client-id`: the CONNECT's client id (across its connections).
    ClientId,
    /// `identity`: the identity the server's guard gave the session, or
    /// without one a guard at an earlier layer (a client certificate's).
    Identity,
    /// `{claim: name}`: an attribute of that same guard session (for jwt,
    /// a claim named in the guard's `attributes`).
    Claim(String),
    /// `source-address`: the client's IP address (behind a PROXY protocol
    /// header, the address it carries).
    SourceAddress,
    /// `session`: each session on its own.
    Session,
}

impl LimitKey {
    /// The key as written (`claim:tenant` for a claim), for events, metric
    /// labels and the registry's scopes.
    pub fn label(&self) -> String {
        match self {
            LimitKey::ClientId => "client-id".into(),
            LimitKey::Identity => "identity".into(),
            LimitKey::Claim(name) => format!("claim:{name}"),
            LimitKey::SourceAddress => "source-address".into(),
            LimitKey::Session => "session".into(),
        }
    }
}

impl Serialize for LimitKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            LimitKey::Claim(name) => {
                BTreeMap::from([("claim", name.as_str())]).serialize(serializer)
            }
            other => other.label().serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for LimitKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(String),
            Map(BTreeMap<String, String>),
        }
        let expected = "expected client-id, identity, source-address, session or {claim: <name>}";
        let invalid = |what: String| serde::de::Error::custom(format!("{what}: {expected}"));
        match Raw::deserialize(deserializer).map_err(|_| invalid("not a key".into()))? {
            Raw::Name(name) => match name.as_str() {
                "client-id" => Ok(LimitKey::ClientId),
                "identity" => Ok(LimitKey::Identity),
                "source-address" => Ok(LimitKey::SourceAddress),
                "session" => Ok(LimitKey::Session),
                other => Err(invalid(format!("unknown key `{other}`"))),
            },
            Raw::Map(map) => match map.into_iter().collect::<Vec<_>>().as_slice() {
                [(field, name)] if field == "claim" && !name.is_empty() => {
                    Ok(LimitKey::Claim(name.clone()))
                }
                _ => Err(invalid("a map other than {claim: <name>}".into())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The snippet a user would write, as the docs show it.
    const YAML: &str = "\
- key:
    claim: tenant
  sessions: 100
  connects:
    rate: 10.0
    burst: 20.0
  publishes:
    rate: 100.0
    burst: 200.0
  bytes:
    rate: 1048576.0
    burst: 2097152.0
- key: source-address
  connects:
    rate: 5.0
- key: session
  publishes:
    rate: 20.0
  subscriptions: 50
  topic:
    length: 256
    levels: 8
";

    #[test]
    fn limits_round_trip() {
        let limits: Vec<LimitOptions> = serde_yaml::from_str(YAML).unwrap();
        assert_eq!(limits[0].key, LimitKey::Claim("tenant".into()));
        assert_eq!(limits[0].sessions, Some(100));
        assert_eq!(
            limits[1].connects,
            Some(RateOptions {
                rate: 5.0,
                burst: None
            })
        );
        assert_eq!(limits[2].key, LimitKey::Session);
        assert_eq!(
            limits[2].topic,
            Some(TopicLimitOptions {
                length: Some(256),
                levels: Some(8)
            })
        );
        assert_eq!(serde_yaml::to_string(&limits).unwrap(), YAML);
        let short: Vec<LimitOptions> = serde_yaml::from_str(
            "- {key: identity, connects: {rate: 1}}\n- {key: client-id, bytes: {rate: 10}}",
        )
        .unwrap();
        assert_eq!(short[0].key, LimitKey::Identity);
        assert_eq!(short[1].key, LimitKey::ClientId);
    }

    #[test]
    fn unknown_keys_and_fields_are_refused_with_what_is_expected() {
        for (yaml, expected) in [
            ("- key: tenant\n  sessions: 1", "unknown key `tenant`"),
            ("- key: {attribute: x}\n  sessions: 1", "{claim: <name>}"),
            ("- key: {claim: ''}\n  sessions: 1", "{claim: <name>}"),
            ("- key: session\n  messages: 1", "unknown field `messages`"),
            (
                "- key: session\n  publishes: {rate: 1, per: s}",
                "unknown field `per`",
            ),
        ] {
            let error = serde_yaml::from_str::<Vec<LimitOptions>>(yaml).unwrap_err();
            assert!(error.to_string().contains(expected), "{yaml}: {error}");
        }
    }
}
