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
    /// connect to; when absent, the caller's requested authority is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Server: the ports to listen on. Client: the port to connect to.
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

fn deserialize_cidr<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<IpNet>, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map(Some)
        .map_err(|_| de::Error::custom(format!("`{text}` is not a network such as 10.0.0.0/8")))
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
}
