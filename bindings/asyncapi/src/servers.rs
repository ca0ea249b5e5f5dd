//! Which of the document's servers a binding serves or connects to.
//!
//! `options.specs.<label>.servers` holds URLs in Zilla's current shape
//! (`mqtt://localhost:7183`): on the server kind they pick the document
//! servers with that protocol and host:port and say which port to listen on;
//! on the client kind the URL is the broker, whatever the document says. An
//! entry without `://` is a server name (the older shape), as is every entry
//! of `names`. With neither, the document's first mqtt/mqtts server is used,
//! as before.

use crate::spec::{Server, Spec};

/// One entry of `servers` or `names`, with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Selector {
    /// `servers[0]` or `names[0]`, relative to `options.specs.<label>`.
    pub(crate) at: String,
    /// What it asks for.
    pub(crate) wanted: Wanted,
}

/// A server by URL or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Wanted {
    /// `mqtt://host:port` or `mqtts://host:port`.
    Url(ServerUrl),
    /// A key of the document's `servers`.
    Name(String),
}

/// A parsed `mqtt://` or `mqtts://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerUrl {
    /// As written (after `${{env.*}}` was resolved), for messages.
    pub(crate) text: String,
    /// `mqtts`: TLS.
    pub(crate) secure: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
}

/// A port the server kind listens on, and whether it speaks TLS there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Listener {
    pub(crate) port: u16,
    pub(crate) secure: bool,
}

/// What the server kind serves: the document servers chosen (for their
/// security) and the ports to listen on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Served {
    /// The chosen servers, merged: their names joined, their security
    /// requirements as alternatives.
    pub(crate) server: Server,
    pub(crate) listeners: Vec<Listener>,
}

/// Where the client kind connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) secure: bool,
}

/// An error at a path relative to `options.specs.<label>`.
pub(crate) type Located = (String, String);

/// Reads `servers` (URLs or names) and `names` (names).
pub(crate) fn selectors(servers: &[String], names: &[String]) -> Result<Vec<Selector>, Located> {
    let mut selectors = Vec::new();
    for (index, entry) in servers.iter().enumerate() {
        let at = format!("servers[{index}]");
        let wanted = if entry.contains("://") {
            Wanted::Url(parse_url(entry).map_err(|message| (at.clone(), message))?)
        } else {
            Wanted::Name(entry.clone())
        };
        selectors.push(Selector { at, wanted });
    }
    selectors.extend(names.iter().enumerate().map(|(index, name)| Selector {
        at: format!("names[{index}]"),
        wanted: Wanted::Name(name.clone()),
    }));
    Ok(selectors)
}

/// Parses `mqtt://host[:port]` or `mqtts://host[:port]` (default ports 1883
/// and 8883; `[::1]` for IPv6; a trailing `/` is allowed).
pub(crate) fn parse_url(text: &str) -> Result<ServerUrl, String> {
    let (scheme, rest) = text
        .split_once("://")
        .ok_or_else(|| format!("`{text}` is not a URL"))?;
    let secure = match scheme.to_ascii_lowercase().as_str() {
        "mqtt" => false,
        "mqtts" => true,
        _ => {
            return Err(format!(
                "`{text}`: expected an `mqtt://` or `mqtts://` URL, found scheme `{scheme}`"
            ))
        }
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "`{text}`: expected `{scheme}://host:port`; paths, queries and user info mean nothing to MQTT"
        ));
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{text}`: unclosed `[` in the host"))?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err(format!("`{text}` has no host"));
    }
    let port = match port {
        Some(port) => port
            .parse::<u16>()
            .map_err(|_| format!("`{text}`: `{port}` is not a port"))?,
        None if secure => 8883,
        None => 1883,
    };
    Ok(ServerUrl {
        text: text.to_owned(),
        secure,
        host: host.to_owned(),
        port,
    })
}

/// `plain` (mqtt://localhost:7183), for messages.
fn describe(server: &Server) -> String {
    format!(
        "`{}` ({}://{}:{})",
        server.name, server.protocol, server.host, server.port
    )
}

fn described(spec: &Spec) -> String {
    spec.servers
        .iter()
        .map(describe)
        .collect::<Vec<_>>()
        .join(", ")
}

fn by_name<'a>(spec: &'a Spec, name: &str, at: &str) -> Result<&'a Server, Located> {
    spec.servers.iter().find(|s| s.name == name).ok_or_else(|| {
        (
            at.to_owned(),
            format!(
                "the document has no mqtt server named `{name}`; its mqtt servers: {}",
                described(spec)
            ),
        )
    })
}

fn matches(server: &Server, url: &ServerUrl) -> bool {
    server.protocol == if url.secure { "mqtts" } else { "mqtt" }
        && server.host.eq_ignore_ascii_case(&url.host)
        && server.port == url.port
}

/// The servers and listeners chosen so far by [`served`].
#[derive(Default)]
struct Choice<'a> {
    servers: Vec<&'a Server>,
    listeners: Vec<Listener>,
}

impl<'a> Choice<'a> {
    /// Adds `servers` (each once) served on `listener`; one port cannot be
    /// both plain and TLS.
    fn add(&mut self, servers: &[&'a Server], listener: Listener, at: &str) -> Result<(), Located> {
        for server in servers {
            if !self.servers.iter().any(|c| c.name == server.name) {
                self.servers.push(server);
            }
        }
        match self.listeners.iter().find(|l| l.port == listener.port) {
            Some(known) if known.secure != listener.secure => Err((
                at.to_owned(),
                format!(
                    "port {} would serve both mqtt and mqtts; give each its own port",
                    listener.port
                ),
            )),
            Some(_) => Ok(()),
            None => {
                self.listeners.push(listener);
                Ok(())
            }
        }
    }
}

/// The server kind: the document servers to serve and the ports to listen on.
pub(crate) fn served(spec: &Spec, selectors: &[Selector]) -> Result<Served, Located> {
    let mut choice = Choice::default();
    if selectors.is_empty() {
        let first = spec.servers.first().ok_or_else(|| {
            (
                "servers".to_owned(),
                "the document has no mqtt server".to_owned(),
            )
        })?;
        choice.add(&[first], listener_of(first), "servers")?;
    }
    for selector in selectors {
        match &selector.wanted {
            Wanted::Name(name) => {
                let server = by_name(spec, name, &selector.at)?;
                choice.add(&[server], listener_of(server), &selector.at)?;
            }
            Wanted::Url(url) => {
                let found: Vec<&Server> = spec.servers.iter().filter(|s| matches(s, url)).collect();
                if found.is_empty() {
                    return Err((
                        selector.at.clone(),
                        format!(
                            "`{}` matches no server of the document (by protocol and host:port); its mqtt servers: {}",
                            url.text,
                            described(spec)
                        ),
                    ));
                }
                let listener = Listener {
                    port: url.port,
                    secure: url.secure,
                };
                choice.add(&found, listener, &selector.at)?;
            }
        }
    }
    Ok(Served {
        server: merged(&choice.servers),
        listeners: choice.listeners,
    })
}

fn listener_of(server: &Server) -> Listener {
    Listener {
        port: server.port,
        secure: server.protocol == "mqtts",
    }
}

/// One server standing for several served on the same listeners: a client
/// may satisfy any of their security requirements, and a server listing none
/// requires every declared scheme (see `Spec::required_security`), so one
/// such server makes the merged one list none.
fn merged(servers: &[&Server]) -> Server {
    let mut server = servers[0].clone();
    server.name = servers
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if servers.iter().any(|s| s.security.is_empty()) {
        server.security.clear();
    } else {
        for other in &servers[1..] {
            for scheme in &other.security {
                if !server.security.contains(scheme) {
                    server.security.push(scheme.clone());
                }
            }
        }
    }
    server
}

/// The client kind: the broker to connect to. A URL names it outright; a
/// name picks the document's server (the first name wins, as before).
pub(crate) fn target(spec: &Spec, selectors: &[Selector]) -> Result<Target, Located> {
    let mut urls = selectors.iter().filter_map(|s| match &s.wanted {
        Wanted::Url(url) => Some((s, url)),
        Wanted::Name(_) => None,
    });
    if let Some((_, url)) = urls.next() {
        if let Some((second, _)) = urls.next() {
            return Err((
                second.at.clone(),
                "a client connects to one broker: give one URL".to_owned(),
            ));
        }
        if selectors.len() > 1 {
            return Err((
                "servers".to_owned(),
                "a client connects to one broker: give one URL, or server names".to_owned(),
            ));
        }
        return Ok(Target {
            host: url.host.clone(),
            port: url.port,
            secure: url.secure,
        });
    }
    let server = match selectors.first() {
        Some(Selector {
            at,
            wanted: Wanted::Name(name),
        }) => by_name(spec, name, at)?,
        _ => spec.servers.first().ok_or_else(|| {
            (
                "servers".to_owned(),
                "the document has no mqtt server".to_owned(),
            )
        })?,
    };
    Ok(Target {
        host: server.host.clone(),
        port: server.port,
        secure: server.protocol == "mqtts",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCUMENT: &str = "
asyncapi: 3.0.0
servers:
  plain:
    host: localhost:7183
    protocol: mqtt
  secure:
    host: localhost:7883
    protocol: mqtts
    security:
      - $ref: '#/components/securitySchemes/token'
  other:
    host: broker.example.com:1883
    protocol: mqtt
components:
  securitySchemes:
    token:
      type: http
      scheme: bearer
";

    fn spec() -> Spec {
        crate::spec::parse(DOCUMENT).unwrap()
    }

    fn urls(urls: &[&str]) -> Vec<Selector> {
        let urls: Vec<String> = urls.iter().map(|u| (*u).to_owned()).collect();
        selectors(&urls, &[]).unwrap()
    }

    #[test]
    fn urls_parse_with_default_ports_and_ipv6() {
        let url = parse_url("mqtts://Broker.example.com").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.secure),
            ("Broker.example.com", 8883, true)
        );
        let url = parse_url("mqtt://[::1]:1884/").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.secure),
            ("::1", 1884, false)
        );
        for (bad, expected) in [
            ("http://localhost:80", "found scheme `http`"),
            ("mqtt://localhost:port", "`port` is not a port"),
            (
                "mqtt://localhost:1883/topic",
                "paths, queries and user info",
            ),
            ("mqtt://:1883", "has no host"),
        ] {
            let error = parse_url(bad).unwrap_err();
            assert!(error.contains(expected), "{bad}: {error}");
        }
    }

    #[test]
    fn a_server_url_serves_the_document_servers_it_matches_on_its_port() {
        let plain = served(&spec(), &urls(&["mqtt://LOCALHOST:7183"])).unwrap();
        assert_eq!(plain.server.name, "plain");
        assert_eq!(
            plain.listeners,
            [Listener {
                port: 7183,
                secure: false
            }]
        );
        let both = served(
            &spec(),
            &urls(&["mqtt://localhost:7183", "mqtts://localhost:7883"]),
        )
        .unwrap();
        assert_eq!(both.server.name, "plain, secure");
        assert!(
            both.server.security.is_empty(),
            "`plain` lists no security, so every declared scheme is required"
        );
        assert_eq!(both.listeners.len(), 2);
        assert!(both.listeners[1].secure);
    }

    #[test]
    fn a_url_matching_nothing_names_itself_and_the_candidates() {
        let (at, message) = served(&spec(), &urls(&["mqtt://localhost:7883"])).unwrap_err();
        assert_eq!(at, "servers[0]");
        assert_eq!(
            message,
            "`mqtt://localhost:7883` matches no server of the document (by protocol and host:port); its mqtt servers: `plain` (mqtt://localhost:7183), `secure` (mqtts://localhost:7883), `other` (mqtt://broker.example.com:1883)"
        );
    }

    #[test]
    fn names_keep_working_in_both_places() {
        let by_servers = served(&spec(), &urls(&["other"])).unwrap();
        assert_eq!(by_servers.server.name, "other");
        assert_eq!(by_servers.listeners[0].port, 1883);
        let by_names = selectors(&[], &["secure".to_owned()]).unwrap();
        let served_names = served(&spec(), &by_names).unwrap();
        assert_eq!(served_names.server.security, ["token"]);
        let (at, message) =
            served(&spec(), &selectors(&[], &["nope".to_owned()]).unwrap()).unwrap_err();
        assert_eq!(at, "names[0]");
        assert!(
            message.starts_with("the document has no mqtt server named `nope`"),
            "{message}"
        );
        let first = served(&spec(), &[]).unwrap();
        assert_eq!(first.server.name, "plain", "the first server by default");
    }

    #[test]
    fn one_port_cannot_be_both_plain_and_tls() {
        let clash = "
asyncapi: 3.0.0
servers:
  a: { host: 'localhost:9000', protocol: mqtt }
  b: { host: 'localhost:9000', protocol: mqtts }
";
        let spec = crate::spec::parse(clash).unwrap();
        let (at, message) = served(
            &spec,
            &urls(&["mqtt://localhost:9000", "mqtts://localhost:9000"]),
        )
        .unwrap_err();
        assert_eq!(at, "servers[1]");
        assert!(message.contains("port 9000 would serve both"), "{message}");
    }

    #[test]
    fn a_client_url_overrides_the_document() {
        let target = target(&spec(), &urls(&["mqtts://broker.internal:8884"])).unwrap();
        assert_eq!(
            target,
            Target {
                host: "broker.internal".into(),
                port: 8884,
                secure: true
            }
        );
        let named = super::target(&spec(), &urls(&["secure"])).unwrap();
        assert_eq!((named.port, named.secure), (7883, true));
        let default = super::target(&spec(), &[]).unwrap();
        assert_eq!(default.port, 7183);
        let (at, _) = super::target(&spec(), &urls(&["mqtt://a:1", "mqtt://b:2"])).unwrap_err();
        assert_eq!(at, "servers[1]");
    }
}
