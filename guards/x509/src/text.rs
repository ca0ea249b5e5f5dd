//! Distinguished names written as text (`CN=device-1, O=Example, C=US`),
//! read as Java's `new X500Principal(String)` reads them and written in the
//! canonical form of [`crate::names::canonical`].
//!
//! Zilla canonicalizes a literal `subject.dn` of a tls client's
//! `routes[].with.certificate` this way, so that a name written by hand
//! compares equal to the `subject.dn` of a certificate (which a guard grants
//! as an identity). The text is RFC 2253 or RFC 1779 as Java's default
//! parser takes it: `,` or `;` between relative names, `+` inside one,
//! spaces around them ignored, values as text (with `\` escapes of special
//! characters and `\XX` hex bytes of UTF-8), quoted (`"Doe, John"`) or as
//! `#` and the hex of their DER; attribute types by keyword (those below,
//! any case) or dotted OID (`2.5.4.3`, `OID.2.5.4.3`).

use x509_parser::asn1_rs::{Any, FromDer, Oid};

use crate::names::{canonical_rdn, printable};

/// The keywords Java reads in a name written as text, and their OIDs.
const KEYWORDS: [(&str, &str); 21] = [
    ("CN", "2.5.4.3"),
    ("C", "2.5.4.6"),
    ("L", "2.5.4.7"),
    ("S", "2.5.4.8"),
    ("ST", "2.5.4.8"),
    ("O", "2.5.4.10"),
    ("OU", "2.5.4.11"),
    ("T", "2.5.4.12"),
    ("IP", "1.3.6.1.4.1.42.2.11.2.1"),
    ("STREET", "2.5.4.9"),
    ("DC", DOMAIN_COMPONENT),
    ("DNQUALIFIER", "2.5.4.46"),
    ("DNQ", "2.5.4.46"),
    ("SURNAME", "2.5.4.4"),
    ("GIVENNAME", "2.5.4.42"),
    ("INITIALS", "2.5.4.43"),
    ("GENERATION", "2.5.4.44"),
    ("EMAIL", EMAIL_ADDRESS),
    ("EMAILADDRESS", EMAIL_ADDRESS),
    ("UID", "0.9.2342.19200300.100.1.1"),
    ("SERIALNUMBER", "2.5.4.5"),
];

const DOMAIN_COMPONENT: &str = "0.9.2342.19200300.100.1.25";
const EMAIL_ADDRESS: &str = "1.2.840.113549.1.9.1";

/// DER tags of the string types a value written as text is encoded as.
const PRINTABLE_STRING: u8 = 0x13;
const UTF8_STRING: u8 = 0x0c;
const IA5_STRING: u8 = 0x16;

/// Characters a `\` may escape in an unquoted value (Java's
/// `specialCharsDefault`) and in a quoted one (`specialChars1779`).
const ESCAPABLE: &str = ",=\n+<>#;\\\" ";
const ESCAPABLE_QUOTED: &str = ",=\n+<>#;\\\"";

/// One attribute of a name written as text: its type and its value's DER.
struct TextAva {
    oid: Oid<'static>,
    der: Vec<u8>,
}

/// The canonical form of the distinguished name `text`, as Java's
/// `new X500Principal(text).getName(CANONICAL)` writes it, or why `text`
/// is not a distinguished name. The empty text is the empty name.
pub(crate) fn canonical_text_name(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Ok(String::new());
    }
    let mut rdns = Vec::new();
    for rdn in split(text, &[',', ';'])? {
        let mut avas = Vec::new();
        for ava in split(rdn, &['+'])? {
            avas.push(parse_ava(ava)?);
        }
        rdns.push(avas);
    }
    // The text is already in RFC 2253 order (the last relative name of the
    // encoding first), which is the canonical form's.
    let mut out = Vec::with_capacity(rdns.len());
    for avas in &rdns {
        let mut values = Vec::with_capacity(avas.len());
        for ava in avas {
            let (_, value) =
                Any::from_der(&ava.der).map_err(|e| format!("a value does not encode ({e})"))?;
            values.push(value);
        }
        let pairs: Vec<(&Oid<'_>, &Any<'_>)> =
            avas.iter().map(|ava| &ava.oid).zip(values.iter()).collect();
        out.push(canonical_rdn(&pairs));
    }
    Ok(out.join(","))
}

/// `text` split at the unescaped `separators` outside double quotes.
fn split<'a>(text: &'a str, separators: &[char]) -> Result<Vec<&'a str>, String> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (index, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if !quoted && separators.contains(&c) {
            parts.push(&text[start..index]);
            start = index + c.len_utf8();
        }
    }
    if quoted {
        return Err(format!("`{text}` has a quote that does not end"));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

/// One `type=value`.
fn parse_ava(text: &str) -> Result<TextAva, String> {
    let (keyword, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{}` is not `type=value`", text.trim()))?;
    let oid = attribute_type(keyword.trim())?;
    let value = value.trim_start_matches([' ', '\n']);
    let der = if let Some(hex) = value.strip_prefix('#') {
        hex_value(hex)?
    } else if let Some(quoted) = value.strip_prefix('"') {
        let (text, printable) = quoted_value(quoted)?;
        string_der(&oid, &text, printable)?
    } else {
        let (text, printable) = plain_value(value)?;
        string_der(&oid, &text, printable)?
    };
    Ok(TextAva { oid, der })
}

/// The OID of a keyword (any case) or of a dotted OID, `OID.` allowed.
fn attribute_type(keyword: &str) -> Result<Oid<'static>, String> {
    let upper = keyword.to_ascii_uppercase();
    let dotted = match KEYWORDS.iter().find(|(name, _)| *name == upper) {
        Some((_, oid)) => (*oid).to_owned(),
        None => upper.strip_prefix("OID.").unwrap_or(&upper).to_owned(),
    };
    let unknown = || {
        format!(
            "unknown attribute type `{keyword}` (a keyword such as CN, O, OU, C, L, ST, \
             STREET, DC, UID, or a dotted OID)"
        )
    };
    let arcs: Vec<u64> = dotted
        .split('.')
        .map(|arc| arc.parse::<u64>().map_err(|_| unknown()))
        .collect::<Result<_, _>>()?;
    // X.660: the first arc is 0, 1 or 2; under 0 and 1 the second is below 40.
    match arcs.as_slice() {
        [first, second, ..] if *first <= 2 && (*first == 2 || *second < 40) => {}
        _ => return Err(unknown()),
    }
    Oid::from(&arcs).map_err(|_| unknown())
}

/// A value written as `#` and the hex of its DER.
fn hex_value(hex: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u32> = hex
        .chars()
        .map(|c| c.to_digit(16))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("`#{hex}` is not hex"))?;
    if digits.is_empty() || digits.len() % 2 == 1 {
        return Err(format!("`#{hex}` is not whole bytes of hex"));
    }
    let der: Vec<u8> = digits
        .chunks(2)
        .map(|pair| (pair[0] * 16 + pair[1]) as u8)
        .collect();
    match Any::from_der(&der) {
        Ok(([], _)) => Ok(der),
        _ => Err(format!("`#{hex}` is not one DER value")),
    }
}

/// An unquoted value: escapes resolved, unescaped trailing spaces dropped;
/// and whether it can be a PrintableString (no `\XX` bytes, only its
/// characters).
fn plain_value(value: &str) -> Result<(String, bool), String> {
    let mut out = String::new();
    let mut bytes = Vec::new();
    let mut printable_only = true;
    // Unescaped spaces not yet known to be inside the value.
    let mut spaces = 0;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        let mut escaped = false;
        let mut c = c;
        if c == '\\' {
            let next = chars.next().ok_or("a value ends with a lone `\\`")?;
            if let Some(byte) = hex_pair(next, &mut chars)? {
                printable_only = false;
                flush_spaces(&mut out, &mut spaces);
                bytes.push(byte);
                continue;
            }
            if !ESCAPABLE.contains(next) {
                return Err(format!("`\\{next}` is not an escape"));
            }
            escaped = true;
            c = next;
        }
        flush_bytes(&mut out, &mut bytes);
        printable_only &= printable(c);
        if c == ' ' && !escaped {
            spaces += 1;
        } else {
            flush_spaces(&mut out, &mut spaces);
            out.push(c);
        }
    }
    flush_bytes(&mut out, &mut bytes);
    Ok((out, printable_only))
}

/// A value in double quotes (the opening one already read); only spaces
/// may follow the closing quote.
fn quoted_value(value: &str) -> Result<(String, bool), String> {
    let mut out = String::new();
    let mut bytes = Vec::new();
    let mut printable_only = true;
    let mut chars = value.chars().peekable();
    loop {
        let c = chars
            .next()
            .ok_or("a quoted value does not end in a quote")?;
        let c = match c {
            '"' => break,
            '\\' => {
                let next = chars.next().ok_or("a quoted value ends with a lone `\\`")?;
                if let Some(byte) = hex_pair(next, &mut chars)? {
                    printable_only = false;
                    bytes.push(byte);
                    continue;
                }
                if !ESCAPABLE_QUOTED.contains(next) {
                    return Err(format!("`\\{next}` is not an escape"));
                }
                next
            }
            c => c,
        };
        flush_bytes(&mut out, &mut bytes);
        printable_only &= printable(c);
        out.push(c);
    }
    flush_bytes(&mut out, &mut bytes);
    if chars.any(|c| c != ' ' && c != '\n') {
        return Err("only spaces may follow a quoted value".into());
    }
    Ok((out, printable_only))
}

/// The byte of an escaped hex pair starting with `first`, if it is one.
fn hex_pair(
    first: char,
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
) -> Result<Option<u8>, String> {
    let Some(high) = first.to_digit(16) else {
        return Ok(None);
    };
    let low = chars
        .next()
        .and_then(|c| c.to_digit(16))
        .ok_or("an escaped hex value needs two hex digits")?;
    Ok(Some((high * 16 + low) as u8))
}

fn flush_spaces(out: &mut String, spaces: &mut usize) {
    out.extend(std::iter::repeat_n(' ', *spaces));
    *spaces = 0;
}

/// Escaped hex bytes are UTF-8, as Java reads them (invalid sequences as
/// U+FFFD).
fn flush_bytes(out: &mut String, bytes: &mut Vec<u8>) {
    if !bytes.is_empty() {
        out.push_str(&String::from_utf8_lossy(bytes));
        bytes.clear();
    }
}

/// The DER Java encodes a value written as text with: an e-mail address
/// and a domain component as IA5String, anything else as PrintableString
/// when it can be one, else as UTF8String.
fn string_der(oid: &Oid<'_>, text: &str, printable_only: bool) -> Result<Vec<u8>, String> {
    let dotted = oid.to_id_string();
    let tag = if dotted == EMAIL_ADDRESS || dotted == DOMAIN_COMPONENT {
        if !text.is_ascii() {
            return Err(format!("`{text}` must be ASCII (an IA5String)"));
        }
        IA5_STRING
    } else if printable_only {
        PRINTABLE_STRING
    } else {
        UTF8_STRING
    };
    let content = text.as_bytes();
    let mut der = vec![tag];
    let length = content.len();
    if length < 0x80 {
        der.push(length as u8);
    } else {
        let bytes: Vec<u8> = length
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        der.push(0x80 | bytes.len() as u8);
        der.extend(bytes);
    }
    der.extend_from_slice(content);
    Ok(der)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(text: &str) -> String {
        canonical_text_name(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn names_are_written_as_java_writes_them_canonically() {
        assert_eq!(canonical("CN=client1"), "cn=client1");
        assert_eq!(
            canonical("CN=client1, O=Aklivity,  C=US"),
            "cn=client1,o=aklivity,c=us"
        );
        assert_eq!(canonical("cn=a;o=b"), "cn=a,o=b");
        assert_eq!(canonical("S=California"), "st=california");
        assert_eq!(canonical("2.5.4.3=Device"), "cn=device");
        assert_eq!(canonical("OID.2.5.4.11=Ops"), "ou=ops");
        assert_eq!(canonical("CN=  Spaced   Out  "), "cn=spaced out");
        assert_eq!(canonical(""), "");
    }

    #[test]
    fn escapes_quotes_and_hex_are_read() {
        assert_eq!(canonical(r"CN=Doe\, John"), r"cn=doe\, john");
        assert_eq!(canonical(r#"CN="Doe, John""#), r"cn=doe\, john");
        assert_eq!(canonical(r"CN=caf\C3\A9"), "cn=cafe\u{301}");
        assert_eq!(canonical(r"CN=\#1"), r"cn=\#1");
        assert_eq!(canonical(r"CN=a\ "), "cn=a");
        // A value given as DER: a UTF8String is text, anything else hex.
        assert_eq!(canonical("CN=#0c0141"), "cn=a");
        assert_eq!(canonical("CN=#160141"), "cn=#160141");
    }

    #[test]
    fn multi_valued_names_sort_keywords_then_oids() {
        assert_eq!(canonical("OU=b+CN=a"), "cn=a+ou=b");
        assert_eq!(canonical("SERIALNUMBER=7+CN=a"), "cn=a+2.5.4.5=#130137");
    }

    #[test]
    fn ia5_and_other_attributes_are_hex() {
        assert_eq!(canonical("DC=com"), "dc=#1603636f6d");
        assert_eq!(
            canonical("EMAILADDRESS=a@b"),
            "1.2.840.113549.1.9.1=#1603614062"
        );
        assert_eq!(canonical("T=Dr"), "2.5.4.12=#13024472");
        assert_eq!(canonical("T=Dr!"), "2.5.4.12=#0c03447221");
    }

    #[test]
    fn what_is_not_a_name_says_why() {
        for (text, why) in [
            ("client1", "is not `type=value`"),
            ("CN=a,,O=b", "is not `type=value`"),
            ("FOO=a", "unknown attribute type `FOO`"),
            ("9.1=a", "unknown attribute type"),
            ("CN=#0c01", "is not one DER value"),
            ("CN=#0c0", "whole bytes"),
            (r"CN=a\q", r"`\q` is not an escape"),
            (r#"CN="a"b"#, "only spaces may follow"),
            (r#"CN="a"#, "does not end"),
            ("DC=caf\u{e9}", "must be ASCII"),
        ] {
            let error = canonical_text_name(text).expect_err(text);
            assert!(error.contains(why), "{text}: {error}");
        }
    }
}
