//! Hand-encoded DER for names rcgen cannot write (a repeated attribute, two
//! attributes in one relative name, TeletexString beyond ASCII, attributes
//! outside rcgen's list) and for one fixed certificate whose bytes, and so
//! thumbprint, never change.

use x509_parser::asn1_rs::Oid;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

pub(super) const UTF8: u8 = 0x0c;
pub(super) const PRINTABLE: u8 = 0x13;
pub(super) const T61: u8 = 0x14;
pub(super) const IA5: u8 = 0x16;

pub(super) const CN: &[u64] = &[2, 5, 4, 3];
pub(super) const SERIAL_NUMBER: &[u64] = &[2, 5, 4, 5];
pub(super) const C: &[u64] = &[2, 5, 4, 6];
pub(super) const L: &[u64] = &[2, 5, 4, 7];
pub(super) const ST: &[u64] = &[2, 5, 4, 8];
pub(super) const STREET: &[u64] = &[2, 5, 4, 9];
pub(super) const O: &[u64] = &[2, 5, 4, 10];
pub(super) const OU: &[u64] = &[2, 5, 4, 11];
pub(super) const DC: &[u64] = &[0, 9, 2342, 19200300, 100, 1, 25];
pub(super) const UID: &[u64] = &[0, 9, 2342, 19200300, 100, 1, 1];
pub(super) const EMAIL_ADDRESS: &[u64] = &[1, 2, 840, 113549, 1, 9, 1];

/// One attribute of a relative name: its OID, string tag and content bytes.
pub(super) type Ava<'a> = (&'a [u64], u8, &'a [u8]);

pub(super) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn oid(arcs: &[u64]) -> Vec<u8> {
    tlv(0x06, Oid::from(arcs).unwrap().as_bytes())
}

/// A Name: relative names in encoding order, each a SET of attributes.
pub(super) fn name(rdns: &[&[Ava<'_>]]) -> Vec<u8> {
    let rdns: Vec<u8> = rdns
        .iter()
        .flat_map(|avas| {
            let set: Vec<u8> = avas
                .iter()
                .flat_map(|(arcs, tag, value)| tlv(0x30, &[oid(arcs), tlv(*tag, value)].concat()))
                .collect();
            tlv(0x31, &set)
        })
        .collect();
    tlv(0x30, &rdns)
}

/// The content of a DER TLV, and where it starts.
fn content(der: &[u8]) -> (usize, &[u8]) {
    let first = der[1] as usize;
    let (start, len) = if first < 0x80 {
        (2, first)
    } else {
        let n = first & 0x7f;
        let len = der[2..2 + n]
            .iter()
            .fold(0usize, |acc, b| acc << 8 | *b as usize);
        (2 + n, len)
    };
    (start, &der[start..start + len])
}

/// `certificate` with its subject (or issuer) Name replaced by `new_name`;
/// the signature no longer verifies, which the guard does not check.
pub(super) fn replace_name(certificate: &[u8], issuer: bool, new_name: &[u8]) -> Vec<u8> {
    let (_, parsed) = X509Certificate::from_der(certificate).unwrap();
    let tbs: &[u8] = parsed.tbs_certificate.as_ref();
    let old = if issuer {
        parsed.tbs_certificate.issuer.as_raw()
    } else {
        parsed.tbs_certificate.subject.as_raw()
    };
    let (tbs_start, tbs_content) = content(tbs);
    let at = old.as_ptr() as usize - tbs_content.as_ptr() as usize;
    let new_tbs = tlv(
        0x30,
        &[&tbs_content[..at], new_name, &tbs_content[at + old.len()..]].concat(),
    );
    let (_, outer) = content(certificate);
    let after_tbs = &outer[tbs_start + tbs_content.len()..];
    tlv(0x30, &[new_tbs.as_slice(), after_tbs].concat())
}

/// A certificate written byte by byte: subject and issuer `CN=fixed`, valid
/// 2025-01-01 to 2030-01-02, a P-256 key of 0x04 then 64 bytes of 0x01, and
/// a signature that is not one.
pub(super) fn fixed_certificate() -> Vec<u8> {
    let ecdsa_sha256 = tlv(0x30, &oid(&[1, 2, 840, 10045, 4, 3, 2]));
    let fixed = name(&[&[(CN, UTF8, b"fixed")]]);
    let validity = tlv(
        0x30,
        &[tlv(0x17, b"250101000000Z"), tlv(0x17, b"300102000000Z")].concat(),
    );
    let mut point = vec![0x00, 0x04];
    point.extend([0x01; 64]);
    let spki = tlv(
        0x30,
        &[
            tlv(
                0x30,
                &[
                    oid(&[1, 2, 840, 10045, 2, 1]),
                    oid(&[1, 2, 840, 10045, 3, 1, 7]),
                ]
                .concat(),
            ),
            tlv(0x03, &point),
        ]
        .concat(),
    );
    let tbs = tlv(
        0x30,
        &[
            tlv(0xa0, &tlv(0x02, &[2])),
            tlv(0x02, &[0x01, 0x23, 0x45]),
            ecdsa_sha256.clone(),
            fixed.clone(),
            validity,
            fixed,
            spki,
        ]
        .concat(),
    );
    tlv(
        0x30,
        &[tbs, ecdsa_sha256, tlv(0x03, &[0x00, 0x30, 0x00])].concat(),
    )
}

/// `der` as a PEM certificate.
pub(super) fn pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}
