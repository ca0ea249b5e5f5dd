//! Route conditions of an http server: `when: [{headers: {<name>: <pattern>}}]`.
//!
//! Names are header names (case-insensitive) or the pseudo headers
//! `:scheme`, `:authority`, `:path` and `:method`, which HTTP/1.1 has no
//! fields for and are therefore derived from the request. Patterns follow
//! Zilla: `*` matches any sequence of characters and the rest must match
//! exactly, so `/mqtt*` or `localhost:*`. Values compare case-sensitively,
//! except `upgrade`, whose tokens are case-insensitive (RFC 9110 §7.8) and
//! which clients spell both `websocket` and `WebSocket`.

use std::collections::BTreeMap;

use http::request::Parts;
use http::HeaderName;
use serde::{Deserialize, Serialize};

/// The pseudo headers a condition may name.
const PSEUDO_HEADERS: [&str; 4] = [":scheme", ":authority", ":path", ":method"];

/// A route condition of an http server; every header named must match.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "RawCondition", into = "RawCondition")]
pub struct HttpCondition {
    /// Lowercase names and their patterns.
    headers: Vec<(String, String)>,
}

/// The condition as written, before its names are checked and lowercased.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<String, String>,
}

impl TryFrom<RawCondition> for HttpCondition {
    type Error = String;

    fn try_from(raw: RawCondition) -> Result<Self, String> {
        let mut headers = Vec::with_capacity(raw.headers.len());
        for (name, pattern) in raw.headers {
            let lower = name.to_ascii_lowercase();
            if lower.starts_with(':') {
                if !PSEUDO_HEADERS.contains(&lower.as_str()) {
                    return Err(format!(
                        "`{name}` is not a pseudo header; use one of {}",
                        PSEUDO_HEADERS.join(", ")
                    ));
                }
            } else if HeaderName::from_bytes(lower.as_bytes()).is_err() {
                return Err(format!("`{name}` is not a valid header name"));
            }
            if headers.iter().any(|(known, _)| *known == lower) {
                return Err(format!("header `{name}` is named twice"));
            }
            headers.push((lower, pattern));
        }
        Ok(Self { headers })
    }
}

impl From<HttpCondition> for RawCondition {
    fn from(condition: HttpCondition) -> Self {
        Self {
            headers: condition.headers.into_iter().collect(),
        }
    }
}

impl HttpCondition {
    /// A condition on `headers` (names as written); for tests and embedders.
    pub fn new<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, String> {
        Self::try_from(RawCondition {
            headers: headers
                .into_iter()
                .map(|(name, pattern)| (name.to_owned(), pattern.to_owned()))
                .collect(),
        })
    }

    /// Whether `request` meets every header of the condition.
    pub fn matches(&self, request: &RequestFacts<'_>) -> bool {
        self.headers.iter().all(|(name, pattern)| {
            let insensitive = name == "upgrade";
            request
                .values(name)
                .any(|value| wildcard_matches(pattern, value, insensitive))
        })
    }
}

/// What routes see of one request: its headers, and its pseudo headers as
/// HTTP/2 would carry them.
#[derive(Debug)]
pub struct RequestFacts<'a> {
    parts: &'a Parts,
    scheme: &'static str,
}

impl<'a> RequestFacts<'a> {
    /// The facts of `parts`, received over TLS when `secure`.
    pub fn new(parts: &'a Parts, secure: bool) -> Self {
        Self {
            parts,
            scheme: if secure { "https" } else { "http" },
        }
    }

    /// `:authority`: the URI's authority (HTTP/2, or an absolute-form
    /// HTTP/1.1 target, which takes precedence over `Host` per RFC 9112
    /// §3.2.2), else the `Host` header.
    pub fn authority(&self) -> Option<&'a str> {
        self.parts.uri.authority().map(|a| a.as_str()).or_else(|| {
            self.parts
                .headers
                .get(http::header::HOST)
                .and_then(|host| host.to_str().ok())
        })
    }

    /// `:path`: the path and query as sent.
    pub fn path(&self) -> &'a str {
        self.parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    }

    /// The values of `name` (lowercase): one for a pseudo header, every
    /// occurrence (valid text only) for a header.
    fn values(&self, name: &str) -> Box<dyn Iterator<Item = &'a str> + 'a> {
        match name {
            ":scheme" => Box::new(std::iter::once(self.scheme)),
            ":authority" => Box::new(self.authority().into_iter()),
            ":path" => Box::new(std::iter::once(self.path())),
            ":method" => Box::new(std::iter::once(self.parts.method.as_str())),
            _ => Box::new(
                self.parts
                    .headers
                    .get_all(name)
                    .iter()
                    .filter_map(|value| value.to_str().ok()),
            ),
        }
    }
}

/// Whether `value` matches `pattern`, where `*` stands for any (possibly
/// empty) sequence of characters; ASCII case is ignored when `insensitive`.
///
/// Greedy with one backtrack point, so linear in practice and never
/// exponential, whatever a client sends.
pub fn wildcard_matches(pattern: &str, value: &str, insensitive: bool) -> bool {
    let (pattern, value) = (pattern.as_bytes(), value.as_bytes());
    let same = |p: u8, v: u8| {
        if insensitive {
            p.eq_ignore_ascii_case(&v)
        } else {
            p == v
        }
    };
    let (mut p, mut v) = (0, 0);
    // Where the last `*` was, and where in `value` its match ended.
    let mut star: Option<(usize, usize)> = None;
    while v < value.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, v));
            p += 1;
        } else if p < pattern.len() && same(pattern[p], value[v]) {
            p += 1;
            v += 1;
        } else if let Some((star_p, star_v)) = star {
            // Let the last `*` swallow one more character and retry.
            p = star_p + 1;
            v = star_v + 1;
            star = Some((star_p, star_v + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(request: http::Request<()>) -> Parts {
        request.into_parts().0
    }

    #[test]
    fn wildcards_match_any_sequence() {
        assert!(wildcard_matches("/mqtt*", "/mqtt", false));
        assert!(wildcard_matches("/mqtt*", "/mqtt/ws?x=1", false));
        assert!(!wildcard_matches("/mqtt*", "/mqt", false));
        assert!(wildcard_matches("localhost:*", "localhost:8080", false));
        assert!(!wildcard_matches("localhost:*", "example.com:8080", false));
        assert!(wildcard_matches("*.example.com", "a.b.example.com", false));
        assert!(wildcard_matches("a*b*c", "aXbYbZc", false));
        assert!(!wildcard_matches("a*b*c", "aXbYbZ", false));
        assert!(wildcard_matches("*", "", false));
        assert!(!wildcard_matches("/mqtt", "/mqtt/", false));
        assert!(!wildcard_matches("websocket", "WebSocket", false));
        assert!(wildcard_matches("websocket", "WebSocket", true));
        // Pathological input stays fast.
        let long = "a".repeat(10_000);
        assert!(!wildcard_matches("*a*a*a*a*b", &long, false));
    }

    #[test]
    fn conditions_see_pseudo_headers_and_headers() {
        let request = parts(
            http::Request::get("/mqtt?x=1")
                .header("Host", "localhost:7114")
                .header("Upgrade", "WebSocket")
                .body(())
                .unwrap(),
        );
        let facts = RequestFacts::new(&request, true);
        let condition = HttpCondition::new([
            (":scheme", "https"),
            (":authority", "localhost:*"),
            (":path", "/mqtt*"),
            (":method", "GET"),
            ("Upgrade", "websocket"),
        ])
        .unwrap();
        assert!(condition.matches(&facts));
        assert!(!condition.matches(&RequestFacts::new(&request, false)));
        let other = HttpCondition::new([("x-missing", "*")]).unwrap();
        assert!(!other.matches(&facts), "an absent header matches nothing");
        assert!(HttpCondition::default().matches(&facts));
    }

    #[test]
    fn absolute_form_authority_wins_over_host() {
        let request = parts(
            http::Request::get("http://example.com:80/x")
                .header("Host", "other")
                .body(())
                .unwrap(),
        );
        let facts = RequestFacts::new(&request, false);
        assert_eq!(facts.authority(), Some("example.com:80"));
        assert_eq!(facts.path(), "/x");
    }

    #[test]
    fn conditions_are_checked_when_read() {
        let condition: HttpCondition =
            serde_yaml::from_str("headers:\n  Upgrade: websocket\n  :path: /mqtt\n").unwrap();
        let again: HttpCondition =
            serde_yaml::from_str(&serde_yaml::to_string(&condition).unwrap()).unwrap();
        assert_eq!(condition, again);
        let error = serde_yaml::from_str::<HttpCondition>("header: {a: b}\n").unwrap_err();
        assert!(
            error.to_string().contains("unknown field `header`"),
            "{error}"
        );
        let error = serde_yaml::from_str::<HttpCondition>("headers: {':host': a}\n").unwrap_err();
        assert!(error.to_string().contains("not a pseudo header"), "{error}");
        let error = serde_yaml::from_str::<HttpCondition>("headers: {'a b': a}\n").unwrap_err();
        assert!(
            error.to_string().contains("not a valid header name"),
            "{error}"
        );
        let error = serde_yaml::from_str::<HttpCondition>("headers: {Upgrade: a, upgrade: b}\n")
            .unwrap_err();
        assert!(error.to_string().contains("named twice"), "{error}");
    }
}
