//! Which client certificate a tls client presents, by the identity of the
//! stream it connects for: `routes[].with.certificate` (Zilla 2.2).
//!
//! A route names one property of the key to present, `subject.cn` or
//! `subject.dn`, as a literal or as `${guarded['<guard>'].identity}` /
//! `${guarded['<guard>'].attributes.<name>}`, resolved per connection from
//! what guards granted the stream at earlier layers (a tls server's x509
//! guard, an mqtt server's jwt guard: `StreamInfo::granted`). The keys are
//! those of `options.keys`, each read once at build time (CNs, canonical
//! DN, notBefore, thumbprint) with the x509 guard's own code, so that a DN
//! the guard granted compares equal to a key's.
//!
//! As in Zilla: several keys matching, the one with the latest notBefore
//! wins (the renewed certificate during a rotation), then the greater
//! `x5t.s256`, so the choice never depends on the order of `keys` (beyond
//! Zilla, a key valid now comes before one that is not); a value that
//! resolves to nothing, or that no key matches, presents no certificate
//! (never another key), and the far end decides.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;
use zilla_engine::telemetry::text;
use zilla_engine::{BindingContext, BuildError, Granted};
use zilla_guard_x509::{canonical_name, KeySubject};

/// `routes[].with` of a tls client, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WithConfig {
    /// The client certificate to present.
    pub(crate) certificate: CertificateConfig,
}

/// `routes[].with.certificate`: exactly one property.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CertificateConfig {
    #[serde(rename = "subject.cn", default)]
    subject_cn: Option<String>,
    #[serde(rename = "subject.dn", default)]
    subject_dn: Option<String>,
}

/// The property of a key a route selects it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Property {
    /// Any common name of the key's subject, as written.
    SubjectCn,
    /// The key's subject name, canonical.
    SubjectDn,
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Property::SubjectCn => "subject.cn",
            Property::SubjectDn => "subject.dn",
        })
    }
}

/// A route's `with.certificate`, compiled.
#[derive(Debug, Clone)]
pub(crate) struct Selector {
    pub(crate) property: Property,
    template: Template,
    /// The value of a template without expressions, resolved once (a
    /// `subject.dn` canonical).
    literal: Option<String>,
}

impl Selector {
    /// Compiles `certificate`; an error is `(relative path, message)`
    /// within `with.certificate`.
    pub(crate) fn new(certificate: &CertificateConfig) -> Result<Self, (String, String)> {
        let (property, text) = match (&certificate.subject_cn, &certificate.subject_dn) {
            (Some(cn), None) => (Property::SubjectCn, cn),
            (None, Some(dn)) => (Property::SubjectDn, dn),
            (None, None) => {
                return Err((
                    String::new(),
                    "name the key to present by one property: `subject.cn` or `subject.dn`".into(),
                ))
            }
            (Some(_), Some(_)) => {
                return Err((
                    String::new(),
                    "name one property, `subject.cn` or `subject.dn`, not both: they describe \
                     the same subject"
                        .into(),
                ))
            }
        };
        let at = |message: String| (property.to_string(), message);
        let template = Template::parse(text).map_err(at)?;
        let literal = match template.literal() {
            None => None,
            Some("") => return Err(at("an empty value matches no key".into())),
            // Canonical as a key's DN is, or it could never compare equal.
            Some(dn) if property == Property::SubjectDn => Some(
                canonical_name(dn)
                    .map_err(|why| at(format!("`{dn}` is not a distinguished name: {why}")))?,
            ),
            Some(cn) => Some(cn.to_owned()),
        };
        Ok(Self {
            property,
            template,
            literal,
        })
    }

    /// The guards the value's expressions read.
    pub(crate) fn guards(&self) -> impl Iterator<Item = &str> {
        self.template.guards()
    }

    /// The value for a stream granted `granted`, `None` when an expression
    /// has no value (or the value is empty). A DN an expression gives is
    /// made canonical when it is a DN (beyond Zilla, which compares it as
    /// given): a guard's DN already is, a token's claim may not be.
    pub(crate) fn resolve(&self, granted: &[Granted]) -> Option<String> {
        if let Some(literal) = &self.literal {
            return Some(literal.clone());
        }
        let value = self.template.resolve(granted)?;
        Some(match self.property {
            Property::SubjectDn => canonical_name(&value).unwrap_or(value),
            Property::SubjectCn => value,
        })
    }
}

impl fmt::Display for Selector {
    /// As written: `subject.cn: ${guarded['x509_0'].identity}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.property, self.template.text)
    }
}

/// A value with `${guarded[...]}` expressions in it.
#[derive(Debug, Clone)]
struct Template {
    text: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    /// `${guarded['<guard>'].identity}`.
    Identity(String),
    /// `${guarded['<guard>'].attributes.<name>}`.
    Attribute(String, String),
}

impl Template {
    fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let end = rest[start..]
                .find('}')
                .ok_or_else(|| format!("`{}` does not end with `}}`", &rest[start..]))?;
            parts.push(Self::expression(&rest[start..start + end + 1])?);
            rest = &rest[start + end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self {
            text: text.to_owned(),
            parts,
        })
    }

    /// One `${...}`; Zilla's syntax, double quotes also allowed.
    fn expression(expression: &str) -> Result<Part, String> {
        let invalid = || {
            format!(
                "`{expression}` is not `${{guarded['<guard>'].identity}}` or \
                 `${{guarded['<guard>'].attributes.<name>}}`"
            )
        };
        let inner = &expression[2..expression.len() - 1];
        let rest = inner.trim().strip_prefix("guarded[").ok_or_else(invalid)?;
        let (guard, rest) = rest.split_once(']').ok_or_else(invalid)?;
        let guard = guard
            .strip_prefix('\'')
            .and_then(|g| g.strip_suffix('\''))
            .or_else(|| guard.strip_prefix('"').and_then(|g| g.strip_suffix('"')))
            .filter(|g| is_name(g))
            .ok_or_else(invalid)?;
        match rest.strip_prefix('.').ok_or_else(invalid)? {
            "identity" => Ok(Part::Identity(guard.to_owned())),
            other => match other.strip_prefix("attributes.") {
                Some(name) if is_name(name) => {
                    Ok(Part::Attribute(guard.to_owned(), name.to_owned()))
                }
                _ => Err(invalid()),
            },
        }
    }

    /// The whole value when it has no expression.
    fn literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Text(text)] => Some(text),
            _ => None,
        }
    }

    fn guards(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            Part::Identity(guard) | Part::Attribute(guard, _) => Some(guard.as_str()),
            Part::Text(_) => None,
        })
    }

    /// Every expression must have a value: a value with one missing would
    /// select by a fragment (`device-` for `device-${...}`), which Zilla
    /// does and which can only select a wrong key.
    fn resolve(&self, granted: &[Granted]) -> Option<String> {
        let session = |guard: &str| {
            granted
                .iter()
                .find(|granted| &*granted.guard == guard)
                .map(|granted| &granted.session)
        };
        let mut value = String::new();
        for part in &self.parts {
            let piece = match part {
                Part::Text(text) => Some(text.as_str()),
                Part::Identity(guard) => session(guard).and_then(|s| s.identity.as_deref()),
                Part::Attribute(guard, name) => {
                    session(guard).and_then(|s| s.attributes.get(name).map(String::as_str))
                }
            };
            value.push_str(piece.filter(|piece| !piece.is_empty())?);
        }
        Some(value)
    }
}

/// Zilla's names of guards and attributes: `[a-zA-Z]+[a-zA-Z0-9._:-]*`.
fn is_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
}

/// The keys of `options.keys` by the values of their properties: for each
/// value, the keys that have it, best first.
#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    by_cn: HashMap<String, Vec<usize>>,
    by_dn: HashMap<String, Vec<usize>>,
    /// Each key's notBefore and notAfter (seconds since the epoch).
    validity: Vec<(i64, i64)>,
}

impl KeyIndex {
    /// Indexes `keys` (in `options.keys` order; `None`: a key whose
    /// certificate could not be read, which nothing selects).
    pub(crate) fn new(keys: &[Option<KeySubject>]) -> Self {
        let mut index = Self {
            validity: (keys.iter())
                .map(|key| key.as_ref().map_or((0, 0), |k| (k.not_before, k.not_after)))
                .collect(),
            ..Self::default()
        };
        for (at, key) in keys.iter().enumerate() {
            let Some(key) = key else { continue };
            for cn in &key.common_names {
                index.add(Property::SubjectCn, cn, at);
            }
            index.add(Property::SubjectDn, &key.dn, at);
        }
        // Zilla's order: the later notBefore first, which prefers the new
        // certificate while the old one is still valid during a rotation;
        // the same notBefore, the greater thumbprint, so that the choice
        // never depends on the order of `keys`.
        let order = |a: &usize, b: &usize| {
            let (a, b) = (keys[*a].as_ref(), keys[*b].as_ref());
            let rank = |k: Option<&KeySubject>| k.map(|k| (k.not_before, k.thumbprint.clone()));
            rank(b).cmp(&rank(a))
        };
        for candidates in index.by_cn.values_mut().chain(index.by_dn.values_mut()) {
            candidates.sort_by(order);
        }
        index
    }

    fn add(&mut self, property: Property, value: &str, at: usize) {
        let map = match property {
            Property::SubjectCn => &mut self.by_cn,
            Property::SubjectDn => &mut self.by_dn,
        };
        let candidates = map.entry(value.to_owned()).or_default();
        // A certificate naming one CN twice is one candidate.
        if !candidates.contains(&at) {
            candidates.push(at);
        }
    }

    /// The key (its place in `options.keys`) whose `property` is `value`,
    /// compared exactly, as Zilla compares (a DN canonical on both sides).
    /// Of several, the first in Zilla's order that is valid at `now`
    /// (seconds since the epoch), so that a renewed certificate put in the
    /// vault before its notBefore is not presented early (beyond Zilla,
    /// whose order alone decides); when none is valid, the first all the
    /// same, and the far end decides.
    pub(crate) fn select(&self, property: Property, value: &str, now: i64) -> Option<usize> {
        let candidates = match property {
            Property::SubjectCn => self.by_cn.get(value)?,
            Property::SubjectDn => self.by_dn.get(value)?,
        };
        let valid = |at: &&usize| {
            let (not_before, not_after) = self.validity[**at];
            not_before <= now && now <= not_after
        };
        (candidates.iter().find(valid))
            .or(candidates.first())
            .copied()
    }
}

/// Refuses `routes[].with` on a tls `kind` (server or proxy), as Zilla's
/// schema does: a server's routes are taken after its handshake, too late to
/// choose what it presented, and a proxy presents nothing.
pub(crate) fn refuse_with(cx: &mut BindingContext<'_>, kind: &str) -> Result<(), BuildError> {
    let mut refused = Ok(());
    let with: Vec<usize> = (cx.config().routes.iter().enumerate())
        .filter(|(_, route)| route.with.is_some())
        .map(|(index, _)| index)
        .collect();
    for index in with {
        refused = Err(cx.error(
            &format!("routes[{index}].with"),
            format!(
                "a tls {kind} takes no `with`: `with.certificate` selects the client \
                 certificate a tls client presents"
            ),
        ));
    }
    refused
}

/// A value for an event: escaped by [`text`] (it may come from a client's
/// certificate, and must not forge an event line), at most 128 characters.
pub(crate) fn quoted(value: &str) -> String {
    const MAX: usize = 128;
    match value.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", text(&value[..end])),
        None => text(value).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use zilla_engine::GuardSession;

    use super::*;

    fn selector(yaml: &str) -> Result<Selector, (String, String)> {
        let certificate: CertificateConfig = serde_yaml::from_str(yaml).unwrap();
        Selector::new(&certificate)
    }

    fn granted(guard: &str, identity: &str, attributes: &[(&str, &str)]) -> Granted {
        Granted {
            guard: Arc::from(guard),
            session: GuardSession {
                identity: Some(identity.to_owned()),
                attributes: attributes
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..GuardSession::default()
            },
            credentials: String::new(),
        }
    }

    fn key(cns: &[&str], dn: &str, not_before: i64, thumbprint: &str) -> Option<KeySubject> {
        Some(KeySubject {
            dn: dn.to_owned(),
            common_names: cns.iter().map(|cn| (*cn).to_owned()).collect(),
            thumbprint: thumbprint.to_owned(),
            not_before,
            not_after: i64::MAX,
        })
    }

    /// A moment every test key is valid at.
    const NOW: i64 = 2_000_000_000;

    #[test]
    fn literals_and_expressions_resolve_from_the_grants() {
        let grants = [
            granted("jwt0", "app-1", &[]),
            granted("x509_0", "device-1", &[("site", "north")]),
        ];
        let literal = selector("subject.cn: client1").unwrap();
        assert_eq!(literal.resolve(&[]).as_deref(), Some("client1"));
        let identity = selector("subject.cn: ${guarded['x509_0'].identity}").unwrap();
        assert_eq!(identity.resolve(&grants).as_deref(), Some("device-1"));
        assert_eq!(identity.guards().collect::<Vec<_>>(), ["x509_0"]);
        let attribute =
            selector("subject.cn: \"${guarded['x509_0'].attributes.site}-gw\"").unwrap();
        assert_eq!(attribute.resolve(&grants).as_deref(), Some("north-gw"));
        let quoted = selector("subject.cn: ${guarded[\"jwt0\"].identity}").unwrap();
        assert_eq!(quoted.resolve(&grants).as_deref(), Some("app-1"));
        assert_eq!(
            identity.to_string(),
            "subject.cn: ${guarded['x509_0'].identity}"
        );
    }

    #[test]
    fn a_missing_grant_or_value_resolves_to_nothing() {
        let missing_attribute =
            selector("subject.cn: device-${guarded['x509_0'].attributes.site}").unwrap();
        assert_eq!(
            missing_attribute.resolve(&[granted("x509_0", "d", &[])]),
            None,
            "never a fragment of the value"
        );
        let other_guard = selector("subject.cn: ${guarded['x509_1'].identity}").unwrap();
        assert_eq!(other_guard.resolve(&[granted("x509_0", "d", &[])]), None);
        let empty = selector("subject.cn: ${guarded['x509_0'].identity}").unwrap();
        assert_eq!(empty.resolve(&[granted("x509_0", "", &[])]), None);
    }

    #[test]
    fn distinguished_names_compare_canonically() {
        let literal = selector("subject.dn: CN=Client1, O=Aklivity,C=US").unwrap();
        assert_eq!(
            literal.resolve(&[]).as_deref(),
            Some("cn=client1,o=aklivity,c=us")
        );
        let expression = selector("subject.dn: ${guarded['jwt0'].identity}").unwrap();
        let grants = [granted("jwt0", "CN=Device 1,  O=Acme", &[])];
        assert_eq!(
            expression.resolve(&grants).as_deref(),
            Some("cn=device 1,o=acme")
        );
        // Not a DN: compared as given, and matches no canonical DN.
        let grants = [granted("jwt0", "device-1", &[])];
        assert_eq!(expression.resolve(&grants).as_deref(), Some("device-1"));
    }

    #[test]
    fn invalid_selectors_say_where_and_why() {
        let (at, why) = selector("{}").unwrap_err();
        assert_eq!(at, "");
        assert!(why.contains("one property"), "{why}");
        let (at, why) = selector("subject.cn: a\nsubject.dn: CN=a").unwrap_err();
        assert_eq!(at, "");
        assert!(why.contains("not both"), "{why}");
        let (at, why) = selector("subject.dn: client1").unwrap_err();
        assert_eq!(at, "subject.dn");
        assert!(why.contains("not a distinguished name"), "{why}");
        for bad in [
            "${guarded['x509_0'].identity",
            "${guarded[x509_0].identity}",
            "${guarded['x509_0'].roles}",
            "${guarded['0x'].identity}",
            "${env.HOME}",
        ] {
            let (at, why) = selector(&format!("subject.cn: \"{bad}\"")).unwrap_err();
            assert_eq!(at, "subject.cn", "{bad}");
            assert!(why.contains(bad.trim_end_matches('}')), "{bad}: {why}");
        }
        let (_, why) = selector("subject.cn: \"\"").unwrap_err();
        assert!(why.contains("empty"), "{why}");
        let unknown = serde_yaml::from_str::<CertificateConfig>("san.dns: a").unwrap_err();
        assert!(
            unknown.to_string().contains("unknown field `san.dns`"),
            "{unknown}"
        );
    }

    #[test]
    fn the_key_with_the_value_is_selected_by_cn_or_dn() {
        let keys = [
            key(&["client1"], "cn=client1", 100, "a"),
            key(&["client2", "alias2"], "cn=client2,o=x", 100, "b"),
            None,
        ];
        let index = KeyIndex::new(&keys);
        let select = |property, value| index.select(property, value, NOW);
        assert_eq!(select(Property::SubjectCn, "client1"), Some(0));
        assert_eq!(select(Property::SubjectCn, "client2"), Some(1));
        assert_eq!(select(Property::SubjectCn, "alias2"), Some(1));
        assert_eq!(select(Property::SubjectDn, "cn=client2,o=x"), Some(1));
        // Exact, as Zilla compares: a CN is case-sensitive.
        assert_eq!(select(Property::SubjectCn, "Client1"), None);
        assert_eq!(select(Property::SubjectCn, "client3"), None);
        assert_eq!(select(Property::SubjectDn, "client1"), None);
    }

    #[test]
    fn the_newest_matching_key_wins_then_the_greater_thumbprint() {
        // Zilla's select.newest: two keys with CN client1.
        let keys = [
            key(&["client1"], "cn=client1", 1_639_442_160, "zzz"),
            key(&["client1"], "cn=client1", 1_786_309_148, "aaa"),
            key(&["client2"], "cn=client2", 1_778_655_458, "m"),
        ];
        let index = KeyIndex::new(&keys);
        assert_eq!(index.select(Property::SubjectCn, "client1", NOW), Some(1));
        assert_eq!(
            index.select(Property::SubjectDn, "cn=client1", NOW),
            Some(1)
        );
        // Whatever the order of `keys`.
        let reversed = [keys[1].clone(), keys[0].clone()];
        let index = KeyIndex::new(&reversed);
        assert_eq!(index.select(Property::SubjectCn, "client1", NOW), Some(0));
        // The same notBefore: the greater thumbprint.
        let tied = [key(&["c"], "cn=c", 5, "b"), key(&["c"], "cn=c", 5, "c")];
        let index = KeyIndex::new(&tied);
        assert_eq!(index.select(Property::SubjectCn, "c", NOW), Some(1));
    }

    #[test]
    fn a_key_valid_now_is_preferred_to_a_newer_one_not_yet_valid() {
        let mut staged = key(&["d"], "cn=d", 300, "s");
        let mut current = key(&["d"], "cn=d", 100, "c");
        let mut expired = key(&["d"], "cn=d", 50, "e");
        staged.as_mut().unwrap().not_after = 1_000;
        current.as_mut().unwrap().not_after = 400;
        expired.as_mut().unwrap().not_after = 90;
        let index = KeyIndex::new(&[expired, current, staged]);
        let select = |now| index.select(Property::SubjectCn, "d", now);
        assert_eq!(select(200), Some(1), "the renewed one is not valid yet");
        assert_eq!(select(300), Some(2), "from its notBefore, the renewed one");
        assert_eq!(select(60), Some(0), "before the current one, the old one");
        assert_eq!(
            select(2_000),
            Some(2),
            "none valid: the newest all the same"
        );
    }

    #[test]
    fn event_values_are_quoted_and_bounded() {
        assert_eq!(quoted("a\"b\n"), r#""a\"b\n""#);
        let long = "x".repeat(300);
        assert_eq!(quoted(&long).chars().count(), 128 + 1);
    }
}
