//! `options.authorization`: where a guard finds credentials in a request.
//!
//! Credentials are looked for in the configured headers, then query
//! parameters (percent-decoded), then cookies, each through a pattern such as
//! `Bearer {credentials}`. Query parameters and cookies exist because a
//! browser cannot set headers on a WebSocket handshake. Found credentials are
//! checked by the guard once per request; what it grants decides `guarded`
//! routes and travels on to the exit (and the upgraded stream) as
//! `StreamInfo::granted`, so the protocol behind does not ask again.
//! Credentials never appear in events.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use http::header::{self, HeaderName};
use http::request::Parts;
use percent_encoding::percent_decode_str;
use zilla_engine::{BindingContext, BuildError, Guard, GuardRejection, GuardSession};

use crate::options::HttpAuthorization;

/// The placeholder a credentials pattern must contain once.
const PLACEHOLDER: &str = "{credentials}";

/// The guard of an http server and where its credentials are.
pub(crate) struct Authorization {
    guard_name: Arc<str>,
    guard: Arc<dyn Guard>,
    headers: Vec<(HeaderName, Pattern)>,
    query: Vec<(String, Pattern)>,
    cookies: Vec<(String, Pattern)>,
}

/// What a request's credentials were granted.
#[derive(Debug)]
pub(crate) struct Authorized {
    pub(crate) guard: Arc<str>,
    pub(crate) session: GuardSession,
    pub(crate) credentials: String,
}

impl Authorization {
    /// Reads `options.authorization`, recording every problem.
    pub(crate) fn build(
        cx: &mut BindingContext<'_>,
        options: Option<&BTreeMap<String, HttpAuthorization>>,
    ) -> Result<Option<Self>, BuildError> {
        let Some(options) = options else {
            return Ok(None);
        };
        let mut entries = options.iter();
        let (name, authorization) = match (entries.next(), entries.next()) {
            (Some(entry), None) => entry,
            _ => {
                return Err(cx.error(
                    "options.authorization",
                    "name exactly one guard: `{<guard>: {credentials: ...}}`",
                ))
            }
        };
        let base = format!("options.authorization.{name}");
        let guard = cx.guard(name, &base);
        let sources = &authorization.credentials;
        // The engine's error marker, kept from the first problem recorded.
        let mut failed: Option<BuildError> = None;
        let mut patterns = |kind: &str, entries: Option<&BTreeMap<String, String>>| {
            let mut parsed = Vec::new();
            for (key, text) in entries.into_iter().flatten() {
                match Pattern::parse(text) {
                    Ok(pattern) => parsed.push((key.clone(), pattern)),
                    Err(message) => {
                        let path = format!("{base}.credentials.{kind}.{key}");
                        failed = Some(cx.error(&path, message));
                    }
                }
            }
            parsed
        };
        let header_patterns = patterns("headers", sources.headers.as_ref());
        let query = patterns("query", sources.query.as_ref());
        let cookies = patterns("cookies", sources.cookies.as_ref());
        let mut headers = Vec::new();
        for (key, pattern) in header_patterns {
            match HeaderName::from_bytes(key.as_bytes()) {
                Ok(name) => headers.push((name, pattern)),
                Err(_) => {
                    failed = Some(cx.error(
                        &format!("{base}.credentials.headers.{key}"),
                        format!("`{key}` is not a valid header name"),
                    ));
                }
            }
        }
        if headers.is_empty() && query.is_empty() && cookies.is_empty() && failed.is_none() {
            failed = Some(cx.error(
                &format!("{base}.credentials"),
                "say where credentials are: `headers`, `query` or `cookies`",
            ));
        }
        let guard = guard?;
        if let Some(failed) = failed {
            return Err(failed);
        }
        Ok(Some(Self {
            guard_name: name.as_str().into(),
            guard,
            headers,
            query,
            cookies,
        }))
    }

    /// The guard's name.
    pub(crate) fn guard_name(&self) -> &Arc<str> {
        &self.guard_name
    }

    /// The credentials `parts` present, if any: headers first, then query
    /// parameters, then cookies.
    pub(crate) fn credentials(&self, parts: &Parts) -> Option<String> {
        for (name, pattern) in &self.headers {
            for value in parts.headers.get_all(name) {
                // Authentication schemes are case-insensitive (RFC 9110 §11.1).
                let found = value.to_str().ok().and_then(|v| pattern.extract(v, true));
                if let Some(found) = found {
                    return Some(found.to_owned());
                }
            }
        }
        if let Some(query) = parts.uri.query() {
            for (name, pattern) in &self.query {
                for pair in query.split('&') {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if decode(key) != name.as_str() {
                        continue;
                    }
                    if let Some(found) = pattern.extract(&decode(value), false) {
                        return Some(found.to_owned());
                    }
                }
            }
        }
        for (name, pattern) in &self.cookies {
            for cookies in parts.headers.get_all(header::COOKIE) {
                let Ok(cookies) = cookies.to_str() else {
                    continue;
                };
                for cookie in cookies.split(';') {
                    let Some((key, value)) = cookie.trim().split_once('=') else {
                        continue;
                    };
                    if key != name {
                        continue;
                    }
                    // A cookie value may be wrapped in quotes (RFC 6265 §4.1.1).
                    let value = value
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or(value);
                    if let Some(found) = pattern.extract(value, false) {
                        return Some(found.to_owned());
                    }
                }
            }
        }
        None
    }

    /// Asks the guard about `credentials`.
    pub(crate) async fn authorize(
        &self,
        credentials: String,
    ) -> Result<Authorized, GuardRejection> {
        let session = self.guard.authorize(&credentials).await?;
        Ok(Authorized {
            guard: self.guard_name.clone(),
            session,
            credentials,
        })
    }
}

fn decode(text: &str) -> Cow<'_, str> {
    percent_decode_str(text).decode_utf8_lossy()
}

/// A credentials pattern: what comes before and after `{credentials}`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    prefix: String,
    suffix: String,
}

impl Pattern {
    fn parse(text: &str) -> Result<Self, String> {
        match text.split_once(PLACEHOLDER) {
            Some((prefix, suffix)) if !suffix.contains(PLACEHOLDER) => Ok(Self {
                prefix: prefix.to_owned(),
                suffix: suffix.to_owned(),
            }),
            Some(_) => Err(format!("`{PLACEHOLDER}` may appear only once")),
            None => Err(format!(
                "the pattern must contain `{PLACEHOLDER}`, e.g. `Bearer {PLACEHOLDER}`"
            )),
        }
    }

    /// The credentials in `value`, when it has the pattern's shape and they
    /// are not empty.
    fn extract<'a>(&self, value: &'a str, insensitive: bool) -> Option<&'a str> {
        let (prefix, suffix) = (self.prefix.as_bytes(), self.suffix.as_bytes());
        let bytes = value.as_bytes();
        if bytes.len() <= prefix.len() + suffix.len() {
            return None;
        }
        let (head, tail) = (&bytes[..prefix.len()], &bytes[bytes.len() - suffix.len()..]);
        let same = |a: &[u8], b: &[u8]| {
            if insensitive {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        if !same(head, prefix) || !same(tail, suffix) {
            return None;
        }
        // Both ends are ASCII-compatible matches of UTF-8 text, so these are
        // character boundaries; `get` keeps that from ever panicking.
        value.get(prefix.len()..value.len() - suffix.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_need_one_placeholder() {
        assert!(Pattern::parse("Bearer {credentials}").is_ok());
        assert!(Pattern::parse("Bearer")
            .unwrap_err()
            .contains("must contain `{credentials}`"));
        assert!(Pattern::parse("{credentials}{credentials}")
            .unwrap_err()
            .contains("only once"));
    }

    #[test]
    fn patterns_extract_the_credentials() {
        let bearer = Pattern::parse("Bearer {credentials}").unwrap();
        assert_eq!(bearer.extract("Bearer abc", true), Some("abc"));
        assert_eq!(bearer.extract("bearer abc", true), Some("abc"));
        assert_eq!(bearer.extract("bearer abc", false), None);
        assert_eq!(bearer.extract("Bearer ", true), None);
        assert_eq!(bearer.extract("Basic abc", true), None);
        let wrapped = Pattern::parse("<{credentials}>").unwrap();
        assert_eq!(wrapped.extract("<é>", false), Some("é"));
        assert_eq!(wrapped.extract("<é", false), None);
    }
}
