//! Distinguished names: the canonical `subject.dn`/`issuer.dn` string and the
//! values of the relative fields (`subject.cn`, `issuer.o`, ...).
//!
//! Zilla renders a name with Java's `X500Principal.getName(CANONICAL)`, and
//! the relative fields are what `LdapName` reads back from the RFC 2253 form.
//! Both are reproduced here so that a field written for Zilla compares equal.

use std::cmp::Ordering;

use unicode_normalization::UnicodeNormalization;
use x509_parser::asn1_rs::{Any, Class, Oid, Tag, ToDer};
use x509_parser::x509::X509Name;

/// An attribute of a name that has a field of its own: the keywords of
/// RFC 2253 section 2.3, the only ones Java's RFC 2253 form spells as names
/// (any other attribute is written as a dotted OID with a hex value, which
/// `LdapName` reads back as bytes and Zilla then drops).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum NameAttribute {
    Cn,
    C,
    L,
    St,
    O,
    Ou,
    Street,
    Dc,
    Uid,
}

/// Each keyword attribute: its field suffix and the DER content of its OID.
const KEYWORDS: [(NameAttribute, &str, &[u8]); 9] = [
    (NameAttribute::Cn, "cn", &[0x55, 0x04, 0x03]), // 2.5.4.3
    (NameAttribute::C, "c", &[0x55, 0x04, 0x06]),   // 2.5.4.6
    (NameAttribute::L, "l", &[0x55, 0x04, 0x07]),   // 2.5.4.7
    (NameAttribute::St, "st", &[0x55, 0x04, 0x08]), // 2.5.4.8
    (NameAttribute::O, "o", &[0x55, 0x04, 0x0a]),   // 2.5.4.10
    (NameAttribute::Ou, "ou", &[0x55, 0x04, 0x0b]), // 2.5.4.11
    (NameAttribute::Street, "street", &[0x55, 0x04, 0x09]), // 2.5.4.9
    // 0.9.2342.19200300.100.1.25
    (
        NameAttribute::Dc,
        "dc",
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19],
    ),
    // 0.9.2342.19200300.100.1.1
    (
        NameAttribute::Uid,
        "uid",
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01],
    ),
];

impl NameAttribute {
    /// Every attribute, in the order the field list is shown.
    pub(crate) const ALL: [NameAttribute; 9] = [
        NameAttribute::Cn,
        NameAttribute::C,
        NameAttribute::L,
        NameAttribute::St,
        NameAttribute::O,
        NameAttribute::Ou,
        NameAttribute::Street,
        NameAttribute::Dc,
        NameAttribute::Uid,
    ];

    /// The field suffix: `cn` in `subject.cn`.
    pub(crate) fn suffix(self) -> &'static str {
        KEYWORDS[self as usize].1
    }

    /// The attribute with field suffix `suffix`.
    pub(crate) fn from_suffix(suffix: &str) -> Option<Self> {
        KEYWORDS
            .iter()
            .find(|(_, name, _)| *name == suffix)
            .map(|(attribute, _, _)| *attribute)
    }

    pub(crate) fn of(oid: &Oid<'_>) -> Option<Self> {
        KEYWORDS
            .iter()
            .find(|(_, _, der)| oid.as_bytes() == *der)
            .map(|(attribute, _, _)| *attribute)
    }

    #[cfg(test)]
    pub(crate) fn oid_der(self) -> &'static [u8] {
        KEYWORDS[self as usize].2
    }
}

/// The values of the keyword attributes of `name`, in the order Zilla lists
/// them: relative names first to last as encoded (`C`, then `O`, ... for a
/// name written `CN=..,O=..,C=..`); inside one multi-valued relative name,
/// the values of one attribute sorted ignoring case, exact repeats once.
/// Values that are not strings are left out, as Zilla leaves them out.
pub(crate) fn relative_values(name: &X509Name<'_>, mut emit: impl FnMut(NameAttribute, String)) {
    for rdn in name.iter() {
        let mut values: Vec<(NameAttribute, String)> = rdn
            .iter()
            .filter_map(|ava| Some((NameAttribute::of(ava.attr_type())?, text(ava.attr_value())?)))
            .collect();
        if values.len() > 1 {
            // `Rdn` sorts its entries by type and then by upper-cased value,
            // and `BasicAttribute` keeps one of equal values.
            values.sort_by(|(a, x), (b, y)| {
                a.cmp(b)
                    .then_with(|| x.to_uppercase().cmp(&y.to_uppercase()))
            });
            let mut seen: Vec<(NameAttribute, String)> = Vec::with_capacity(values.len());
            for value in values {
                if !seen.contains(&value) {
                    seen.push(value);
                }
            }
            values = seen;
        }
        for (attribute, value) in values {
            emit(attribute, value);
        }
    }
}

/// The text of a string-typed attribute value, decoded by its ASN.1 type;
/// `None` for a value that is not one of the string types.
///
/// UTF8String is UTF-8; BMPString UTF-16BE; UniversalString UTF-32BE;
/// TeletexString is read as ISO 8859-1, as OpenSSL and Java read it;
/// PrintableString, IA5String, NumericString, VisibleString and
/// GeneralString are 7-bit and read as UTF-8 (which they are a subset of).
/// Invalid sequences become U+FFFD.
pub(crate) fn text(value: &Any<'_>) -> Option<String> {
    if !universal_primitive(value) {
        return None;
    }
    let data = value.data;
    Some(match value.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString
        | Tag::GeneralString => String::from_utf8_lossy(data).into_owned(),
        Tag::T61String => data.iter().map(|&byte| char::from(byte)).collect(),
        Tag::BmpString => {
            let units = data.chunks(2).map(|pair| match pair {
                [high, low] => u16::from_be_bytes([*high, *low]),
                // A lone last byte is not a code unit.
                _ => 0xdc00,
            });
            char::decode_utf16(units)
                .map(|unit| unit.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect()
        }
        Tag::UniversalString => data
            .chunks(4)
            .map(|quad| match quad {
                [a, b, c, d] => char::from_u32(u32::from_be_bytes([*a, *b, *c, *d]))
                    .unwrap_or(char::REPLACEMENT_CHARACTER),
                _ => char::REPLACEMENT_CHARACTER,
            })
            .collect(),
        _ => return None,
    })
}

/// The name as Java's `X500Principal.getName(CANONICAL)` writes it, which is
/// what Zilla's `subject.dn` and `issuer.dn` hold: RFC 2253 order (the last
/// relative name first), `,` between relative names and `+` inside one with
/// no spaces, keywords `cn c l st o ou street dc uid` and dotted OIDs for
/// other attributes; PrintableString and UTF8String values as text (leading
/// and trailing spaces removed, inner runs of spaces made one, `,+<>;"\`
/// and a leading `#` escaped with `\`), any other value as `#` and the hex
/// of its DER encoding; then upper-cased and lower-cased and NFKD-normalized.
/// The values of a multi-valued relative name are sorted: keyword ones by
/// their canonical text, then OID ones by OID.
pub(crate) fn canonical(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            let avas: Vec<(&Oid<'_>, &Any<'_>)> = rdn
                .iter()
                .map(|ava| (ava.attr_type(), ava.attr_value()))
                .collect();
            canonical_rdn(&avas)
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// One relative name, its attribute types and values, in canonical form:
/// each `type=value` as [`canonical`] writes it, sorted when there are
/// several, joined with `+`. Shared by names read from certificates and
/// names written as text (`crate::text`), so both compare equal.
pub(crate) fn canonical_rdn(avas: &[(&Oid<'_>, &Any<'_>)]) -> String {
    let mut rendered: Vec<(&Oid<'_>, String)> = avas
        .iter()
        .map(|(oid, value)| (*oid, canonical_ava(oid, value)))
        .collect();
    if rendered.len() > 1 {
        rendered.sort_by(|(a, a_text), (b, b_text)| compare_avas(a, a_text, b, b_text));
    }
    rendered
        .into_iter()
        .map(|(_, text)| text)
        .collect::<Vec<_>>()
        .join("+")
}

fn compare_avas(a: &Oid<'_>, a_text: &str, b: &Oid<'_>, b_text: &str) -> Ordering {
    let a_keyword = NameAttribute::of(a).is_some();
    let b_keyword = NameAttribute::of(b).is_some();
    match (a_keyword, b_keyword) {
        // Java compares Strings by UTF-16 code units.
        (true, true) => a_text.encode_utf16().cmp(b_text.encode_utf16()),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => match (a.iter(), b.iter()) {
            (Some(a_arcs), Some(b_arcs)) => a_arcs.cmp(b_arcs),
            _ => a.as_bytes().cmp(b.as_bytes()),
        },
    }
}

fn canonical_ava(oid: &Oid<'_>, value: &Any<'_>) -> String {
    let keyword = NameAttribute::of(oid);
    let mut out = match keyword {
        Some(attribute) => attribute.suffix().to_owned(),
        None => oid.to_id_string(),
    };
    out.push('=');
    let textual = keyword.is_some()
        && universal_primitive(value)
        && matches!(value.tag(), Tag::PrintableString | Tag::Utf8String);
    if textual {
        out.push_str(&canonical_text(&String::from_utf8_lossy(value.data)));
    } else {
        out.push('#');
        // Java re-encodes the value (tag, definite length, content).
        let der = value.to_der_vec().unwrap_or_default();
        for byte in der {
            out.push_str(&format!("{byte:02x}"));
        }
    }
    out.to_uppercase().to_lowercase().nfkd().collect()
}

fn universal_primitive(value: &Any<'_>) -> bool {
    value.class() == Class::Universal && value.header.is_primitive()
}

/// Java's `DerValue.isPrintableStringChar`.
pub(crate) fn printable(c: char) -> bool {
    c.is_ascii_alphanumeric() || " '()+,-./:=?".contains(c)
}

/// The escaping and space folding of Java's `AVA.toRFC2253CanonicalString`.
fn canonical_text(value: &str) -> String {
    const ESCAPED: &str = ",+<>;\"\\";
    let mut out = String::with_capacity(value.len());
    let mut previous_space = false;
    for (index, c) in value.chars().enumerate() {
        let leading_hash = index == 0 && c == '#';
        if printable(c) || ESCAPED.contains(c) || leading_hash {
            if leading_hash || ESCAPED.contains(c) {
                out.push('\\');
            }
            if c == ' ' {
                if previous_space {
                    continue;
                }
                previous_space = true;
            } else {
                previous_space = false;
            }
            out.push(c);
        } else {
            previous_space = false;
            out.push(c);
        }
    }
    // `String.trim()`: every character up to U+0020 at either end.
    out.trim_matches(|c: char| c <= ' ').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_oids_are_the_ones_named() {
        let arcs: [(NameAttribute, &[u64]); 9] = [
            (NameAttribute::Cn, &[2, 5, 4, 3]),
            (NameAttribute::C, &[2, 5, 4, 6]),
            (NameAttribute::L, &[2, 5, 4, 7]),
            (NameAttribute::St, &[2, 5, 4, 8]),
            (NameAttribute::O, &[2, 5, 4, 10]),
            (NameAttribute::Ou, &[2, 5, 4, 11]),
            (NameAttribute::Street, &[2, 5, 4, 9]),
            (NameAttribute::Dc, &[0, 9, 2342, 19200300, 100, 1, 25]),
            (NameAttribute::Uid, &[0, 9, 2342, 19200300, 100, 1, 1]),
        ];
        for (attribute, arcs) in arcs {
            let oid = Oid::from(arcs).unwrap();
            assert_eq!(oid.as_bytes(), attribute.oid_der(), "{attribute:?}");
            assert_eq!(NameAttribute::of(&oid), Some(attribute));
            assert_eq!(
                NameAttribute::from_suffix(attribute.suffix()),
                Some(attribute)
            );
        }
        assert_eq!(NameAttribute::ALL.len(), KEYWORDS.len());
        for (index, (attribute, _, _)) in KEYWORDS.iter().enumerate() {
            assert_eq!(
                *attribute as usize, index,
                "KEYWORDS is indexed by attribute"
            );
        }
    }

    #[test]
    fn canonical_text_escapes_folds_and_trims_as_java_does() {
        assert_eq!(canonical_text("Doe, John"), "Doe\\, John");
        assert_eq!(
            canonical_text("#1 a+b<c>d;e\"f\\g"),
            "\\#1 a\\+b\\<c\\>d\\;e\\\"f\\\\g"
        );
        assert_eq!(canonical_text("  Example   Inc  "), "Example Inc");
        assert_eq!(canonical_text("a=b"), "a=b");
        assert_eq!(canonical_text("a#b"), "a#b");
        assert_eq!(canonical_text("tab\there"), "tab\there");
    }
}
