//! Comparing configured destinations without DNS: whether two [`Authority`]s,
//! as written in two bindings' options, name the same `host:port`.
//!
//! Startup checks use this (an mqtt server warning that two of its exits lead
//! to one broker), so nothing here resolves a name: a lookup at startup would
//! block the build, fail offline, and answer for that moment only. Names
//! compare case-insensitively; IP literals compare as addresses, read the
//! way the system resolver reads a numeric host (`127.000.0.1`, `127.1` and
//! `::ffff:127.0.0.1` are `127.0.0.1`; `::1` is `0:0:0:0:0:0:0:1`). A name
//! and an address are never equal: `localhost` is not `127.0.0.1` here.

use std::net::{IpAddr, Ipv4Addr};

use crate::port::Authority;

/// A host as destinations compare: an address, or a name in lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostKey {
    /// An IP literal, IPv4-mapped IPv6 addresses as their IPv4 address.
    Ip(IpAddr),
    /// A name, in ASCII lower case and without a trailing root dot.
    Name(String),
}

impl HostKey {
    /// The key of `host` as configured (an IPv6 address without brackets).
    pub fn of(host: &str) -> Self {
        if let Some(ip) = parse_ip(host) {
            return HostKey::Ip(ip.to_canonical());
        }
        let name = host.strip_suffix('.').unwrap_or(host);
        HostKey::Name(name.to_ascii_lowercase())
    }
}

impl Authority {
    /// Whether `self` and `other` name the same destination as configured:
    /// the same port, and hosts equal by [`HostKey`] (no DNS lookup).
    pub fn same_destination(&self, other: &Authority) -> bool {
        self.port == other.port && HostKey::of(&self.host) == HostKey::of(&other.host)
    }
}

/// `host` as an IP literal: standard notation first, then the IPv4 forms
/// the system resolver also accepts (`inet_aton`: octal and hex parts, fewer
/// than four parts), since a tcp client's host goes through `getaddrinfo`
/// and `127.000.0.1` reaches `127.0.0.1` there.
fn parse_ip(host: &str) -> Option<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip);
    }
    inet_aton(host).map(IpAddr::V4)
}

/// IPv4 as `inet_aton` reads it: one to four parts separated by dots, each
/// decimal, octal (leading `0`) or hex (`0x`); the last part fills the bytes
/// the others left (`127.1` is `127.0.0.1`).
fn inet_aton(text: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        values.push(number(part)?);
    }
    let (last, leading) = values.split_last()?;
    if leading.iter().any(|value| *value > 0xff) {
        return None;
    }
    let last_bits = 8 * (4 - leading.len() as u32);
    if u64::from(*last) >= 1u64 << last_bits {
        return None;
    }
    let mut address = 0u32;
    for (index, value) in leading.iter().enumerate() {
        address |= value << (24 - 8 * index as u32);
    }
    Some(Ipv4Addr::from(address | last))
}

/// One part of an `inet_aton` address, at most 32 bits.
fn number(part: &str) -> Option<u32> {
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    // `from_str_radix` alone would take a sign.
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(digits, radix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(host: &str, port: u16) -> Authority {
        Authority {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn names_compare_without_case_or_root_dot() {
        assert!(at("Broker.Example", 1883).same_destination(&at("broker.example.", 1883)));
        assert!(!at("broker.example", 1883).same_destination(&at("broker.example", 1884)));
        assert!(!at("broker-a", 1883).same_destination(&at("broker-b", 1883)));
    }

    #[test]
    fn ip_literals_compare_as_addresses() {
        for same in [
            "127.0.0.1",
            "127.000.0.1",
            "127.1",
            "0x7f.0.0.1",
            "2130706433",
        ] {
            assert!(
                at(same, 1883).same_destination(&at("127.0.0.1", 1883)),
                "{same}"
            );
        }
        assert!(at("::1", 1883).same_destination(&at("0:0:0:0:0:0:0:1", 1883)));
        assert!(at("::FFFF:127.0.0.1", 1883).same_destination(&at("127.0.0.1", 1883)));
        // Octal, as the resolver reads it: 010 is 8.
        assert!(at("127.0.0.010", 1883).same_destination(&at("127.0.0.8", 1883)));
        assert!(!at("127.0.0.2", 1883).same_destination(&at("127.0.0.1", 1883)));
    }

    #[test]
    fn names_are_not_resolved() {
        assert!(!at("localhost", 1883).same_destination(&at("127.0.0.1", 1883)));
        assert_eq!(
            HostKey::of("127.0.0.256"),
            HostKey::Name("127.0.0.256".into())
        );
        assert_eq!(HostKey::of("1.2.3.4.5"), HostKey::Name("1.2.3.4.5".into()));
        assert_eq!(HostKey::of("09.1.1.1"), HostKey::Name("09.1.1.1".into()));
        assert_eq!(HostKey::of("+1.2.3.4"), HostKey::Name("+1.2.3.4".into()));
        assert_eq!(HostKey::of(""), HostKey::Name(String::new()));
    }
}
