//! The ws binding's options, route conditions and size limits, as written in
//! `zilla.yaml`.
//!
//! Zilla's ws server takes no options and its client takes `defaults`; the
//! size limits are ours: a proxy must bound what one peer can make it buffer,
//! and tungstenite buffers a whole frame (and a whole fragmented message)
//! before handing it on.

use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use zilla_engine::{BindingContext, BuildError};

/// Engine property: the default largest frame payload, in bytes, a ws binding
/// accepts (`options.max-frame-size` overrides it per binding).
pub const PROPERTY_MAX_FRAME_BYTES: &str = "zilla.binding.ws.max.frame.bytes";
/// Engine property: the default largest message, in bytes, a ws binding
/// reassembles from fragments (`options.max-message-size` overrides it).
pub const PROPERTY_MAX_MESSAGE_BYTES: &str = "zilla.binding.ws.max.message.bytes";

/// Default for both limits: the mqtt server's default maximum packet size, so
/// a client that sends one MQTT packet per message fits.
pub(crate) const DEFAULT_MAX_BYTES: usize = 1024 * 1024;
/// The smallest limit accepted: a control frame may carry 125 bytes, and a
/// Close frame that cannot be read would turn a clean close into an error.
pub(crate) const MIN_MAX_BYTES: usize = 125;
/// How much tungstenite reads from the transport at once. Its default (128
/// KiB, allocated eagerly per connection) is sized for throughput; an IoT
/// proxy holds many mostly idle connections.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// `options` of a ws binding.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WsOptions {
    /// Client only: what the opening handshake asks for (Zilla's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<WsDefaults>,
    /// The largest frame payload accepted, in bytes (default
    /// `zilla.binding.ws.max.frame.bytes`, else 1 MiB). Also the largest
    /// frame sent: longer writes go out in several frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_frame_size: Option<usize>,
    /// The largest message accepted, in bytes, counting all its fragments
    /// (default `zilla.binding.ws.max.message.bytes`, else 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_size: Option<usize>,
}

/// `options.defaults` of a ws client: the request it opens WebSockets with.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsDefaults {
    /// The subprotocol asked for in `Sec-WebSocket-Protocol` (e.g. `mqtt`);
    /// the server must answer it. None asked for when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// `http`/`ws` (default) or `https`/`wss`. Informational: TLS, when
    /// wanted, is a tls client binding below this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// The `Host` header, e.g. `broker.example.com:8080` (default: the
    /// authority the caller asks to connect to, else `localhost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// The request path (default `/`; mosquitto accepts any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// A route condition of a ws server; every field given must hold. `*` in
/// `authority` and `path` matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsCondition {
    /// A subprotocol the client offers in `Sec-WebSocket-Protocol`; it
    /// becomes the negotiated one. Absent: any offer, or none, matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// `http` or `https` (`ws` and `wss` are read as the same): whether the
    /// upgrade request arrived over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// The request's authority (`Host`), e.g. `localhost:7114` or `*.example.com:*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// The request path without its query, e.g. `/mqtt` or `/devices/*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// What an upgrade request looks like to a route condition.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestFacts<'a> {
    /// Whether the request arrived over TLS.
    pub(crate) secure: bool,
    /// The `Host` header (or the URI's authority), if any.
    pub(crate) authority: Option<&'a str>,
    /// The path, without query.
    pub(crate) path: &'a str,
}

impl WsCondition {
    /// Whether a request offering `protocol` (`None`: offering none) meets
    /// the condition.
    pub(crate) fn matches(&self, protocol: Option<&str>, request: &RequestFacts<'_>) -> bool {
        self.protocol
            .as_deref()
            .is_none_or(|wanted| protocol == Some(wanted))
            && self
                .scheme
                .as_deref()
                .is_none_or(|scheme| scheme_is_secure(scheme) == Some(request.secure))
            && self.authority.as_deref().is_none_or(|pattern| {
                request.authority.is_some_and(|authority| {
                    glob_matches(
                        &pattern.to_ascii_lowercase(),
                        &authority.to_ascii_lowercase(),
                    )
                })
            })
            && self
                .path
                .as_deref()
                .is_none_or(|pattern| glob_matches(pattern, request.path))
    }
}

/// Whether a scheme name means TLS; `None` for a name that is no scheme of
/// ours (checked when the binding is built).
pub(crate) fn scheme_is_secure(scheme: &str) -> Option<bool> {
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => Some(false),
        "https" | "wss" => Some(true),
        _ => None,
    }
}

/// `*` matches any run of characters (including none); everything else
/// matches itself. Iterative with one backtrack point, so a hostile pattern
/// cannot make matching exponential.
pub(crate) fn glob_matches(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.as_bytes(), text.as_bytes());
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            // Let the last `*` swallow one more character and retry.
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The size limits one binding enforces, resolved from its options, the
/// engine properties and the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest frame payload accepted (and sent), in bytes.
    pub max_frame_size: usize,
    /// The largest reassembled message accepted, in bytes.
    pub max_message_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_size: DEFAULT_MAX_BYTES,
            max_message_size: DEFAULT_MAX_BYTES,
        }
    }
}

impl Limits {
    /// The tungstenite configuration enforcing these limits.
    pub fn config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            // Frames are written to the transport as they are sent, so bytes
            // never wait in tungstenite for a flush the exit might not call.
            .write_buffer_size(0)
            .max_frame_size(Some(self.max_frame_size))
            .max_message_size(Some(self.max_message_size))
    }
}

/// The limits of the binding `cx` builds: its options, else the engine
/// properties, else 1 MiB each.
pub(crate) fn resolve_limits(
    cx: &mut BindingContext<'_>,
    options: &WsOptions,
) -> Result<Limits, BuildError> {
    let max_frame_size = limit(
        cx,
        options.max_frame_size,
        "options.max-frame-size",
        PROPERTY_MAX_FRAME_BYTES,
    )?;
    let max_message_size = limit(
        cx,
        options.max_message_size,
        "options.max-message-size",
        PROPERTY_MAX_MESSAGE_BYTES,
    )?;
    Ok(Limits {
        max_frame_size,
        max_message_size,
    })
}

fn limit(
    cx: &mut BindingContext<'_>,
    option: Option<usize>,
    at: &str,
    property: &str,
) -> Result<usize, BuildError> {
    if let Some(bytes) = option {
        return match bytes {
            MIN_MAX_BYTES.. => Ok(bytes),
            _ => Err(cx.error(
                at,
                format!(
                    "at least {MIN_MAX_BYTES} bytes (the largest control frame), found {bytes}"
                ),
            )),
        };
    }
    match cx.property(property).map(str::to_owned) {
        None => Ok(DEFAULT_MAX_BYTES),
        Some(value) => match value.trim().parse::<usize>() {
            Ok(bytes) if bytes >= MIN_MAX_BYTES => Ok(bytes),
            _ => Err(cx.error(
                "",
                format!(
                    "-P {property}: expected a number of bytes, at least {MIN_MAX_BYTES}, found `{value}`"
                ),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(secure: bool, authority: Option<&'a str>, path: &'a str) -> RequestFacts<'a> {
        RequestFacts {
            secure,
            authority,
            path,
        }
    }

    #[test]
    fn server_options_round_trip() {
        let yaml = "max-frame-size: 65536\nmax-message-size: 262144\n";
        let options: WsOptions = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(options.max_frame_size, Some(65536));
        assert_eq!(options.max_message_size, Some(262144));
        assert_eq!(serde_yaml::to_string(&options).unwrap(), yaml);
        let error = serde_yaml::from_str::<WsOptions>("max-frame: 1\n").unwrap_err();
        assert!(
            error.to_string().contains("unknown field `max-frame`"),
            "{error}"
        );
    }

    #[test]
    fn client_defaults_round_trip() {
        let yaml = "defaults:\n  protocol: mqtt\n  scheme: http\n  authority: localhost:8080\n  path: /mqtt\n";
        let options: WsOptions = serde_yaml::from_str(yaml).unwrap();
        let defaults = options.defaults.as_ref().unwrap();
        assert_eq!(defaults.protocol.as_deref(), Some("mqtt"));
        assert_eq!(defaults.path.as_deref(), Some("/mqtt"));
        assert_eq!(serde_yaml::to_string(&options).unwrap(), yaml);
        let error =
            serde_yaml::from_str::<WsOptions>("defaults:\n  protocols: mqtt\n").unwrap_err();
        assert!(
            error.to_string().contains("unknown field `protocols`"),
            "{error}"
        );
    }

    #[test]
    fn condition_round_trip() {
        let yaml = "protocol: mqtt\nscheme: https\nauthority: '*.example.com:*'\npath: /mqtt\n";
        let condition: WsCondition = serde_yaml::from_str(yaml).unwrap();
        let again: WsCondition =
            serde_yaml::from_str(&serde_yaml::to_string(&condition).unwrap()).unwrap();
        assert_eq!(condition, again);
        let error = serde_yaml::from_str::<WsCondition>("headers: {}\n").unwrap_err();
        assert!(
            error.to_string().contains("unknown field `headers`"),
            "{error}"
        );
    }

    #[test]
    fn conditions_match_protocol_scheme_authority_and_path() {
        let condition: WsCondition = serde_yaml::from_str(
            "protocol: mqtt\nscheme: wss\nauthority: '*.example.com:*'\npath: /mqtt\n",
        )
        .unwrap();
        let good = facts(true, Some("Broker.Example.com:443"), "/mqtt");
        assert!(condition.matches(Some("mqtt"), &good));
        assert!(!condition.matches(Some("mqttv3.1"), &good));
        assert!(!condition.matches(None, &good));
        assert!(!condition.matches(Some("mqtt"), &facts(false, good.authority, "/mqtt")));
        assert!(!condition.matches(Some("mqtt"), &facts(true, Some("example.org:443"), "/mqtt")));
        assert!(!condition.matches(Some("mqtt"), &facts(true, None, "/mqtt")));
        assert!(!condition.matches(Some("mqtt"), &facts(true, good.authority, "/mqtt/x")));

        let any = WsCondition::default();
        assert!(any.matches(None, &facts(false, None, "/")));
        assert!(any.matches(Some("echo"), &facts(true, None, "/x")));
    }

    #[test]
    fn globs_match_any_run_of_characters() {
        assert!(glob_matches("*", ""));
        assert!(glob_matches("/devices/*", "/devices/a/b"));
        assert!(glob_matches("a*b*c", "aXbYbZc"));
        assert!(!glob_matches("a*b*c", "aXbYbZ"));
        assert!(!glob_matches("/mqtt", "/mqtt2"));
        assert!(glob_matches("localhost:*", "localhost:7114"));
        // One backtrack point: linear enough for a pattern full of stars.
        assert!(!glob_matches(&"*a".repeat(50), &"a".repeat(49)));
    }

    #[test]
    fn limits_become_the_tungstenite_config() {
        let limits = Limits {
            max_frame_size: 1000,
            max_message_size: 4000,
        };
        let config = limits.config();
        assert_eq!(config.max_frame_size, Some(1000));
        assert_eq!(config.max_message_size, Some(4000));
        assert_eq!(config.write_buffer_size, 0);
        assert!(!config.accept_unmasked_frames);
    }
}
