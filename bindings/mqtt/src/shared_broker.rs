//! Exits that lead one session to the same broker twice, found when an mqtt
//! server is built and reported when it starts (`MQTT_EXITS_SHARE_BROKER`).
//!
//! A session gets an upstream session on every exit a route accepts it on,
//! and on the default exit (`session/admit.rs`), each opened with the
//! client's own id. When two of those exits reach one broker, that broker
//! sees one client id connect twice: each connection takes the other over,
//! and the one closed publishes the client's will, a false "device lost".
//! Nothing here fails the build: the configuration may be what its author
//! meant (brokers that tolerate it, or exits no real session uses together),
//! so it is a warning.

use std::collections::VecDeque;
use std::sync::Arc;

use zilla_engine::{Authority, Routes};

use crate::options::{MqttCondition, RouteTemplate};
use crate::port::MqttSessions;

/// The event's name.
pub(crate) const EXITS_SHARE_BROKER: &str = "MQTT_EXITS_SHARE_BROKER";

/// One exit of the server: the routes that open it, and where its
/// sessions end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExitReach {
    pub(crate) name: Arc<str>,
    /// The routes leading here; the default exit counts as a route without
    /// conditions.
    pub(crate) routes: Vec<RouteReach>,
    /// The broker addresses at the end of the exit's chain, as configured.
    pub(crate) brokers: Vec<Authority>,
}

/// Which sessions one route opens its exit for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct RouteReach {
    /// `None` when the route accepts every client id, else the patterns
    /// (`*` any run) of which one must match.
    pub(crate) sessions: Option<Vec<String>>,
    /// The roles its `guarded` requires, for the message only: one token
    /// may grant the roles of several routes, so they never rule a pair
    /// out, but a reader can tell whether the sessions that hold them all
    /// exist.
    pub(crate) roles: Vec<String>,
}

/// Two exits one session may use, and the broker addresses they share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SharedBroker {
    pub(crate) first: Arc<str>,
    pub(crate) second: Arc<str>,
    /// Each shared address as the first exit's chain writes it, and as the
    /// second's does (they may differ in spelling: `127.000.0.1`).
    pub(crate) addresses: Vec<(Authority, Authority)>,
    /// The roles a session needs to use both, when every way to use both
    /// is guarded (the fewest of them); empty when any session does.
    pub(crate) roles: Vec<String>,
}

impl SharedBroker {
    /// The event's message, for the mqtt server named `server`.
    pub(crate) fn message(&self, server: &str) -> String {
        let addresses: Vec<String> = self
            .addresses
            .iter()
            .map(|(first, second)| {
                let (first, second) = (first.to_string(), second.to_string());
                if first == second {
                    first
                } else {
                    format!("{first} (written {second} for {})", self.second)
                }
            })
            .collect();
        let which = if self.roles.is_empty() {
            String::new()
        } else {
            format!(" (one granted {})", self.roles.join(" and "))
        };
        format!(
            "mqtt server {server}: exits {} and {} lead to the same broker ({}); a session \
             using both{which} opens two sessions there with one client id, which the broker \
             takes over from each other (closing one and publishing the client's will)",
            self.first,
            self.second,
            addresses.join(", ")
        )
    }
}

/// The server's exits, in route order then the default exit, as
/// [`shared_brokers`] takes them. Mirrors `session/admit.rs`: a session
/// opens the exit of every route whose guards it passes and whose `session`
/// conditions accept its client id, and the default exit.
pub(crate) fn reaches(
    routes: &Routes<MqttCondition, dyn MqttSessions>,
    templates: &[RouteTemplate],
) -> Vec<ExitReach> {
    let mut exits: Vec<ExitReach> = Vec::new();
    let mut reach = |exit: &zilla_engine::Exit<dyn MqttSessions>, route: RouteReach| match exits
        .iter_mut()
        .find(|e| e.name == exit.name)
    {
        Some(known) => known.routes.push(route),
        None => exits.push(ExitReach {
            name: exit.name.clone(),
            routes: vec![route],
            brokers: exit.port.brokers(),
        }),
    };
    for (route, template) in routes.iter().zip(templates) {
        let roles = route
            .guarded
            .iter()
            .flat_map(|guard| guard.roles.iter().cloned())
            .collect();
        let sessions = template.sessions().map(<[String]>::to_vec);
        reach(&route.exit, RouteReach { sessions, roles });
    }
    if let Some(default) = routes.default_exit() {
        reach(default, RouteReach::default());
    }
    exits
}

/// Every pair of distinct exits that one session may use together and
/// whose brokers share an address, in the order the exits are given.
pub(crate) fn shared_brokers(exits: &[ExitReach]) -> Vec<SharedBroker> {
    let mut found = Vec::new();
    for (index, first) in exits.iter().enumerate() {
        for second in &exits[index + 1..] {
            if first.name == second.name {
                continue;
            }
            let Some(roles) = one_session_uses_both(first, second) else {
                continue;
            };
            let mut addresses: Vec<(Authority, Authority)> = Vec::new();
            for a in &first.brokers {
                for b in &second.brokers {
                    // `hosts` may repeat an address: report it once.
                    if a.same_destination(b)
                        && !addresses.iter().any(|(x, _)| x.same_destination(a))
                    {
                        addresses.push((a.clone(), b.clone()));
                    }
                }
            }
            if !addresses.is_empty() {
                found.push(SharedBroker {
                    first: first.name.clone(),
                    second: second.name.clone(),
                    addresses,
                    roles,
                });
            }
        }
    }
    found
}

/// Whether some client id is accepted by a route to `first` and by a route
/// to `second`, as admission opens every exit whose route accepts the id;
/// if so, the fewest roles such a pair of routes asks for.
fn one_session_uses_both(first: &ExitReach, second: &ExitReach) -> Option<Vec<String>> {
    let mut fewest: Option<Vec<String>> = None;
    for a in &first.routes {
        for b in &second.routes {
            let meet = match (&a.sessions, &b.sessions) {
                (None, None) => true,
                (None, Some(patterns)) | (Some(patterns), None) => !patterns.is_empty(),
                (Some(x), Some(y)) => x.iter().any(|p| y.iter().any(|q| patterns_meet(p, q))),
            };
            if !meet {
                continue;
            }
            let mut roles = a.roles.clone();
            for role in &b.roles {
                if !roles.contains(role) {
                    roles.push(role.clone());
                }
            }
            if fewest
                .as_ref()
                .is_none_or(|known| roles.len() < known.len())
            {
                fewest = Some(roles);
            }
        }
    }
    fewest
}

/// Whether some text matches both client id patterns (`*` matches any run
/// of characters, everything else itself): a walk over the pairs of
/// positions in the two patterns, i.e. the product of their automata.
fn patterns_meet(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let width = b.len() + 1;
    let mut seen = vec![false; (a.len() + 1) * width];
    let mut queue = VecDeque::from([(0usize, 0usize)]);
    seen[0] = true;
    while let Some((i, j)) = queue.pop_front() {
        if i == a.len() && j == b.len() {
            return true;
        }
        let (x, y) = (a.get(i).copied(), b.get(j).copied());
        let mut next = Vec::with_capacity(3);
        // A star may match nothing.
        if x == Some('*') {
            next.push((i + 1, j));
        }
        if y == Some('*') {
            next.push((i, j + 1));
        }
        // One character both can read: a star reads any and stays.
        match (x, y) {
            (Some('*'), Some(c)) if c != '*' => next.push((i, j + 1)),
            (Some(c), Some('*')) if c != '*' => next.push((i + 1, j)),
            (Some(c), Some(d)) if c == d && c != '*' => next.push((i + 1, j + 1)),
            _ => {}
        }
        for (i, j) in next {
            if !seen[i * width + j] {
                seen[i * width + j] = true;
                queue.push_back((i, j));
            }
        }
    }
    false
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

    fn exit(name: &str, sessions: &[Option<&[&str]>], brokers: &[Authority]) -> ExitReach {
        ExitReach {
            name: name.into(),
            routes: sessions
                .iter()
                .map(|s| RouteReach {
                    sessions: s.map(|p| p.iter().map(|p| p.to_string()).collect()),
                    roles: Vec::new(),
                })
                .collect(),
            brokers: brokers.to_vec(),
        }
    }

    fn guarded(name: &str, roles: &[&str], brokers: &[Authority]) -> ExitReach {
        ExitReach {
            name: name.into(),
            routes: vec![RouteReach {
                sessions: None,
                roles: roles.iter().map(|r| r.to_string()).collect(),
            }],
            brokers: brokers.to_vec(),
        }
    }

    const EVERY: Option<&[&str]> = None;

    #[test]
    fn two_exits_every_session_uses_to_one_broker_are_reported() {
        let exits = [
            exit("mqtt_a", &[EVERY], &[at("127.0.0.1", 1883)]),
            exit("mqtt_b", &[EVERY], &[at("127.000.0.1", 1883)]),
        ];
        let shared = shared_brokers(&exits);
        assert_eq!(
            shared,
            vec![SharedBroker {
                first: "mqtt_a".into(),
                second: "mqtt_b".into(),
                addresses: vec![(at("127.0.0.1", 1883), at("127.000.0.1", 1883))],
                roles: vec![],
            }]
        );
        let message = shared[0].message("north_mqtt_server");
        for part in [
            "north_mqtt_server",
            "mqtt_a",
            "mqtt_b",
            "127.0.0.1:1883 (written 127.000.0.1:1883 for mqtt_b)",
            "one client id",
            "will",
        ] {
            assert!(message.contains(part), "{part} in {message}");
        }
    }

    #[test]
    fn different_ports_or_hosts_are_not_reported() {
        let exits = [
            exit("a", &[EVERY], &[at("broker", 1883)]),
            exit("b", &[EVERY], &[at("broker", 1884)]),
            exit("c", &[EVERY], &[at("other", 1883)]),
            // A name is not resolved: `localhost` may or may not be 127.0.0.1.
            exit("d", &[EVERY], &[at("localhost", 1883)]),
            exit("e", &[EVERY], &[at("127.0.0.1", 1883)]),
            // Unknown (e.g. the caller names the authority): nothing to compare.
            exit("f", &[EVERY], &[]),
        ];
        assert_eq!(shared_brokers(&exits), vec![]);
    }

    #[test]
    fn failover_lists_that_intersect_share_a_broker() {
        let exits = [
            exit(
                "a",
                &[EVERY],
                &[
                    at("broker-1", 1883),
                    at("Broker-2", 1883),
                    at("broker-2.", 1883),
                ],
            ),
            exit("b", &[EVERY], &[at("broker-3", 1883), at("broker-2", 1883)]),
        ];
        let shared = shared_brokers(&exits);
        assert_eq!(shared.len(), 1);
        assert_eq!(
            shared[0].addresses,
            vec![(at("Broker-2", 1883), at("broker-2", 1883))]
        );
    }

    #[test]
    fn exits_no_one_session_uses_together_are_not_reported() {
        let broker = [at("broker", 1883)];
        // Routes for disjoint client ids: a session takes one or the other.
        let exits = [
            exit("sensors", &[Some(&["sensor-*"])], &broker),
            exit("cameras", &[Some(&["camera-*", "cam-?"])], &broker),
        ];
        assert_eq!(shared_brokers(&exits), vec![]);
        // Patterns that meet (`sensor-cam-1`), a route for every session, or
        // the default exit (every session) next to either: both are used.
        for other in [
            Some(&["*-cam-*"][..]),
            Some(&["sensor-1"][..]),
            Some(&["*"][..]),
            EVERY,
        ] {
            let exits = [
                exit("sensors", &[Some(&["sensor-*"])], &broker),
                exit("other", &[other], &broker),
            ];
            assert_eq!(shared_brokers(&exits).len(), 1, "{other:?}");
        }
        // An exit reached by two routes counts every one of them.
        let exits = [
            exit("sensors", &[Some(&["sensor-*"])], &broker),
            exit("other", &[Some(&["camera-*"]), Some(&["*-7"])], &broker),
        ];
        assert_eq!(shared_brokers(&exits).len(), 1);
    }

    #[test]
    fn guarded_routes_are_reported_with_the_roles_that_use_both() {
        let broker = [at("broker", 1883)];
        // Tenants on one broker: a token granting both roles opens both.
        let exits = [
            guarded("acme", &["tenant:acme"], &broker),
            guarded("globex", &["tenant:globex"], &broker),
        ];
        let shared = shared_brokers(&exits);
        assert_eq!(shared.len(), 1);
        assert_eq!(shared[0].roles, ["tenant:acme", "tenant:globex"]);
        let message = shared[0].message("server");
        assert!(
            message.contains("a session using both (one granted tenant:acme and tenant:globex)"),
            "{message}"
        );
        // An unguarded way to use both wins: any session does.
        let mut either = guarded("globex", &["tenant:globex"], &broker);
        either.routes.push(RouteReach::default());
        let shared = shared_brokers(&[guarded("acme", &["tenant:acme"], &broker), either]);
        assert_eq!(shared[0].roles, ["tenant:acme"]);
        let shared = shared_brokers(&[
            exit("open", &[EVERY], &broker),
            exit("b", &[EVERY], &broker),
        ]);
        assert!(shared[0]
            .message("server")
            .contains("a session using both opens"));
    }

    #[test]
    fn every_overlapping_pair_is_one_report() {
        let broker = [at("broker", 1883)];
        let exits = [
            exit("a", &[EVERY], &broker),
            exit("b", &[EVERY], &broker),
            exit("c", &[EVERY], &broker),
        ];
        let pairs: Vec<(String, String)> = shared_brokers(&exits)
            .into_iter()
            .map(|s| (s.first.to_string(), s.second.to_string()))
            .collect();
        let expected = [("a", "b"), ("a", "c"), ("b", "c")];
        assert_eq!(
            pairs,
            expected.map(|(x, y)| (x.to_owned(), y.to_owned())).to_vec()
        );
    }

    #[test]
    fn patterns_meet_when_some_text_matches_both() {
        for (a, b) in [
            ("*", ""),
            ("a*", "*b"),
            ("sensor-*", "sensor-1"),
            ("*x*", "*y*"),
            ("a*c", "ab*"),
            ("**", "abc"),
            ("", ""),
        ] {
            assert!(patterns_meet(a, b), "{a} {b}");
            assert!(patterns_meet(b, a), "{b} {a}");
        }
        for (a, b) in [
            ("sensor-*", "camera-*"),
            ("a", "b"),
            ("a*", "b*"),
            ("*a", "*b"),
            ("abc", "ab"),
            ("", "a*"),
        ] {
            assert!(!patterns_meet(a, b), "{a} {b}");
            assert!(!patterns_meet(b, a), "{b} {a}");
        }
    }
}
