//! The tcp binding's options and route conditions, as written in `zilla.yaml`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

/// `options` of a tcp binding.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpOptions {
    /// Server: the address to listen on (default `0.0.0.0`). Client: the host to
    /// connect to (every address it resolves to is tried in turn); when it
    /// and `hosts` are absent, the caller's requested authority is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Server: the ports to listen on. Client: the port to connect to (with
    /// `hosts`: for the entries that name none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSpec>,
    /// Server: the listen backlog (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u32>,
    /// Disable Nagle's algorithm on every connection (default `true`, as a
    /// proxy must not add latency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodelay: Option<bool>,
    /// Enable TCP keep-alive probes on every connection (default `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<bool>,
    /// Client: several upstream addresses, tried in turn (instead of `host`);
    /// an entry without a port uses `port`. Beyond Zilla.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<HostPort>>,
    /// Server: connections start with a PROXY protocol (v1 or v2) header
    /// from a load balancer. Beyond Zilla.
    #[serde(
        default,
        rename = "proxy-protocol",
        skip_serializing_if = "Option::is_none"
    )]
    pub proxy_protocol: Option<ProxyProtocolOptions>,
}

/// One entry of a client's `hosts`: `broker:1883`, `[::1]:1883`, `10.0.0.5:1883`,
/// or a host alone (then the client's `port` applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Host name or address (an IPv6 address without its brackets).
    pub host: String,
    /// The port, when the entry names one.
    pub port: Option<u16>,
}

impl HostPort {
    fn parse(text: &str) -> Result<Self, String> {
        let bad_port = || format!("`{text}`: the port is not a number from 0 to 65535");
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("`{text}`: `[` without a closing `]`"))?;
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .and_then(|p| p.parse().ok())
                        .ok_or_else(bad_port)?,
                ),
            };
            (host, port)
        } else if text.matches(':').count() > 1 {
            // Several colons without brackets can only be a bare IPv6 address.
            if text.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!(
                    "`{text}` is not `host:port`; write an IPv6 address in brackets, as `[::1]:1883`"
                ));
            }
            (text, None)
        } else {
            match text.split_once(':') {
                Some((host, port)) => (host, Some(port.parse().map_err(|_| bad_port())?)),
                None => (text, None),
            }
        };
        if host.trim().is_empty() {
            return Err(format!("`{text}` names no host"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bracketed = self.host.contains(':');
        match (bracketed, self.port) {
            (true, Some(port)) => write!(f, "[{}]:{port}", self.host),
            (true, None) => write!(f, "[{}]", self.host),
            (false, Some(port)) => write!(f, "{}:{port}", self.host),
            (false, None) => f.write_str(&self.host),
        }
    }
}

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(de::Error::custom)
    }
}

impl Serialize for HostPort {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// `options.proxy-protocol` of a tcp server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyProtocolOptions {
    /// `required` (the default): every connection must start with a header.
    /// `optional`: a header is used when a trusted peer sends one.
    #[serde(default)]
    pub mode: ProxyProtocolMode,
    /// The peers trusted to send a header: the load balancers' networks. A
    /// header from anyone else would let a client choose its own address, so
    /// there is no default; `0.0.0.0/0` and `::/0` trust every peer.
    #[serde(deserialize_with = "deserialize_networks")]
    pub from: Vec<IpNet>,
}

impl ProxyProtocolOptions {
    /// Whether `peer` may send a PROXY protocol header.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = canonical(peer);
        self.from.iter().any(|network| network.contains(&peer))
    }
}

/// Whether a tcp server insists on a PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocolMode {
    /// Connections without a header, or from untrusted peers, are closed.
    #[default]
    Required,
    /// Connections without a header keep their socket address.
    Optional,
}

/// Ports: `7183`, `"7000-7010"`, or a list of either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    ranges: Vec<(u16, u16)>,
}

impl PortSpec {
    /// A single port.
    pub fn single(port: u16) -> Self {
        Self {
            ranges: vec![(port, port)],
        }
    }

    /// Every port named, in order.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ranges.iter().flat_map(|&(low, high)| low..=high)
    }

    /// Whether `port` is one of them.
    pub fn contains(&self, port: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(low, high)| (low..=high).contains(&port))
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .ranges
            .iter()
            .map(|&(low, high)| {
                if low == high {
                    low.to_string()
                } else {
                    format!("{low}-{high}")
                }
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PortItem {
    Number(u16),
    Text(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PortValue {
    One(PortItem),
    Many(Vec<PortItem>),
}

fn parse_item(item: PortItem) -> Result<(u16, u16), String> {
    match item {
        PortItem::Number(port) => Ok((port, port)),
        PortItem::Text(text) => {
            let parse = |s: &str| {
                s.trim()
                    .parse::<u16>()
                    .map_err(|_| format!("`{text}` is not a port or a `low-high` port range"))
            };
            match text.split_once('-') {
                Some((low, high)) => {
                    let (low, high) = (parse(low)?, parse(high)?);
                    if low > high {
                        return Err(format!("port range `{text}` runs backwards"));
                    }
                    Ok((low, high))
                }
                None => parse(&text).map(|port| (port, port)),
            }
        }
    }
}

impl<'de> Deserialize<'de> for PortSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = PortValue::deserialize(deserializer).map_err(|_| {
            de::Error::custom(
                "expected a port number (0-65535), a range such as \"7000-7010\", or a list of them",
            )
        })?;
        let items = match value {
            PortValue::One(item) => vec![item],
            PortValue::Many(items) => items,
        };
        if items.is_empty() {
            return Err(de::Error::custom("expected at least one port"));
        }
        let ranges = items
            .into_iter()
            .map(parse_item)
            .collect::<Result<_, _>>()
            .map_err(de::Error::custom)?;
        Ok(Self { ranges })
    }
}

impl Serialize for PortSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.ranges.as_slice() {
            [(low, high)] if low == high => serializer.serialize_u16(*low),
            _ => serializer.collect_seq(self.ranges.iter().map(|&(low, high)| {
                if low == high {
                    low.to_string()
                } else {
                    format!("{low}-{high}")
                }
            })),
        }
    }
}

/// A route condition of a tcp server; every field given must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpCondition {
    /// The peer's address must be in this network (`10.0.0.0/8`; a bare address is a /32 or /128).
    #[serde(
        default,
        deserialize_with = "deserialize_cidr",
        skip_serializing_if = "Option::is_none"
    )]
    pub cidr: Option<IpNet>,
    /// The local address the connection arrived on, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// The configured listening port the connection arrived on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSpec>,
}

impl TcpCondition {
    /// Whether a connection from `peer`, accepted on `local` through the
    /// configured `listen_port`, meets this condition.
    pub fn matches(&self, peer: SocketAddr, local: SocketAddr, listen_port: u16) -> bool {
        self.cidr
            .is_none_or(|cidr| cidr.contains(&canonical(peer.ip())))
            && self
                .authority
                .as_deref()
                .is_none_or(|authority| authority == canonical(local.ip()).to_string())
            && self
                .port
                .as_ref()
                .is_none_or(|ports| ports.contains(listen_port))
    }
}

/// IPv4 peers on a dual-stack socket appear as `::ffff:a.b.c.d`; match them as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn parse_network(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{text}` is not a network such as 10.0.0.0/8"))
}

fn deserialize_cidr<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<IpNet>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_network(&text).map(Some).map_err(de::Error::custom)
}

fn deserialize_networks<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<IpNet>, D::Error> {
    let texts = Vec::<String>::deserialize(deserializer)?;
    if texts.is_empty() {
        return Err(de::Error::custom(
            "expected at least one network of trusted proxies, such as 10.0.0.0/8",
        ));
    }
    texts
        .iter()
        .map(|text| parse_network(text))
        .collect::<Result<_, _>>()
        .map_err(de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(yaml: &str) -> Result<TcpOptions, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn port_forms_round_trip() {
        for yaml in ["port: 7183\n", "port:\n- '7000-7002'\n- '7183'\n"] {
            let parsed = options(yaml).unwrap();
            let again = options(&serde_yaml::to_string(&parsed).unwrap()).unwrap();
            assert_eq!(parsed, again);
        }
        let list = options("host: 0.0.0.0\nport: [7183, 7883]\n").unwrap();
        let ports: Vec<_> = list.port.unwrap().ports().collect();
        assert_eq!(ports, vec![7183, 7883]);
        let range = options("port: \"7000-7002\"\n").unwrap().port.unwrap();
        assert_eq!(range.ports().collect::<Vec<_>>(), vec![7000, 7001, 7002]);
    }

    #[test]
    fn bad_ports_are_explained() {
        assert!(options("port: 70000\n")
            .unwrap_err()
            .contains("expected a port number"));
        assert!(options("port: \"9-1\"\n")
            .unwrap_err()
            .contains("runs backwards"));
        assert!(options("prot: 1\n")
            .unwrap_err()
            .contains("unknown field `prot`, expected one of `host`, `port`"));
    }

    #[test]
    fn conditions_match_cidr_and_port() {
        let condition: TcpCondition =
            serde_yaml::from_str("cidr: 127.0.0.0/8\nport: 7183\n").unwrap();
        let local: SocketAddr = "127.0.0.1:7183".parse().unwrap();
        assert!(condition.matches("127.0.0.9:5000".parse().unwrap(), local, 7183));
        assert!(condition.matches("[::ffff:127.0.0.9]:5000".parse().unwrap(), local, 7183));
        assert!(!condition.matches("10.0.0.1:5000".parse().unwrap(), local, 7183));
        assert!(!condition.matches("127.0.0.9:5000".parse().unwrap(), local, 7883));
        let bare: TcpCondition = serde_yaml::from_str("cidr: 192.168.1.1\n").unwrap();
        assert_eq!(bare.cidr.unwrap().prefix_len(), 32);
    }

    #[test]
    fn proxy_protocol_round_trips_as_written() {
        let yaml = "
host: 0.0.0.0
port: 7183
proxy-protocol:
  mode: optional
  from: [10.0.0.0/8, 127.0.0.1]
";
        let parsed = options(yaml).unwrap();
        let proxy = parsed.proxy_protocol.clone().unwrap();
        assert_eq!(proxy.mode, ProxyProtocolMode::Optional);
        assert!(proxy.trusts("10.9.8.7".parse().unwrap()));
        assert!(proxy.trusts("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!proxy.trusts("127.0.0.2".parse().unwrap()));
        let again = options(&serde_yaml::to_string(&parsed).unwrap()).unwrap();
        assert_eq!(parsed, again);
        let defaulted = options("proxy-protocol: { from: [0.0.0.0/0] }\n").unwrap();
        assert_eq!(
            defaulted.proxy_protocol.unwrap().mode,
            ProxyProtocolMode::Required
        );
    }

    #[test]
    fn bad_proxy_protocol_options_are_explained() {
        assert!(options("proxy-protocol: { mode: required }\n")
            .unwrap_err()
            .contains("missing field `from`"));
        assert!(options("proxy-protocol: { from: [] }\n")
            .unwrap_err()
            .contains("at least one network"));
        assert!(options("proxy-protocol: { from: [lb.example] }\n")
            .unwrap_err()
            .contains("`lb.example` is not a network"));
        assert!(
            options("proxy-protocol: { mode: always, from: [10.0.0.0/8] }\n")
                .unwrap_err()
                .contains("unknown variant `always`")
        );
    }

    #[test]
    fn hosts_round_trip_as_written() {
        let yaml = "
hosts: [broker-a:1883, \"[::1]:1884\", 10.0.0.5, \"::2\"]
port: 1883
";
        let parsed = options(yaml).unwrap();
        let hosts = parsed.hosts.clone().unwrap();
        let shown: Vec<String> = hosts.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["broker-a:1883", "[::1]:1884", "10.0.0.5", "[::2]"]);
        assert_eq!(hosts[1].host, "::1");
        assert_eq!(hosts[2].port, None);
        let again = options(&serde_yaml::to_string(&parsed).unwrap()).unwrap();
        assert_eq!(parsed, again);
    }

    #[test]
    fn bad_hosts_are_explained() {
        assert!(options("hosts: [\"broker:x\"]\n")
            .unwrap_err()
            .contains("the port is not a number"));
        assert!(options("hosts: [\":1883\"]\n")
            .unwrap_err()
            .contains("names no host"));
        assert!(options("hosts: [\"fe80::1::2:1883\"]\n")
            .unwrap_err()
            .contains("in brackets"));
    }
}
