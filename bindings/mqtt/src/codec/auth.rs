//! The MQTT 5 AUTH packet (3.15), both ways: `mqtt-bytes-v5` has no packet
//! type for it, so it is decoded and encoded here, beside the crate's
//! `Packet`. A client's AUTH has passed the conformance walk
//! (`conformance::auth`: reason code, properties valid in AUTH, each once,
//! Authentication Data only with a Method) before `decode` reads it, so
//! decoding only picks the fields out.
//!
//! What an AUTH means in a session (re-authentication, refusals) is the
//! session's business (`session/state/reauth.rs`); 3.1.1 has no AUTH and
//! packet type 15 stays reserved there.

use bytes::{Bytes, BytesMut};

use super::properties::id;
use super::reader::Reader;
use super::CodecError;

/// AUTH reason code 0x00: authentication is successful (3.15.2.1).
pub const SUCCESS: u8 = 0x00;
/// AUTH reason code 0x18: continue the authentication with another step.
pub const CONTINUE_AUTHENTICATION: u8 = 0x18;
/// AUTH reason code 0x19: initiate a re-authentication.
pub const RE_AUTHENTICATE: u8 = 0x19;

/// An AUTH packet's reason code and the properties the proxy reads or
/// writes. User properties are read past and never written: nothing in the
/// proxy acts on them.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// The reason code ([`SUCCESS`], [`CONTINUE_AUTHENTICATION`] or
    /// [`RE_AUTHENTICATE`]).
    pub reason: u8,
    /// The Authentication Method (0x15).
    pub method: Option<String>,
    /// The Authentication Data (0x16): for the proxy's methods, a token.
    pub data: Option<Bytes>,
    /// The Reason String (0x1F).
    pub reason_string: Option<String>,
}

/// Written by hand so that a token in the Authentication Data never
/// reaches a log through `{:?}`.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("reason", &format_args!("0x{:02X}", self.reason))
            .field("method", &self.method)
            .field(
                "data",
                &self.data.as_ref().map(|d| format!("<{} bytes>", d.len())),
            )
            .field("reason_string", &self.reason_string)
            .finish()
    }
}

/// Reads the body (after the fixed header) of a complete AUTH that the
/// conformance walk accepted. A remaining length of 0 is a success without
/// properties (3.15.2.1).
pub(crate) fn decode(body: &[u8]) -> Result<Auth, CodecError> {
    let mut auth = Auth::default();
    let mut reader = Reader::new(body);
    if reader.is_empty() {
        return Ok(auth);
    }
    auth.reason = reader.u8("the reason code")?;
    if reader.is_empty() {
        return Ok(auth);
    }
    let len = reader.varint("property length")?;
    let mut properties = reader.split(len, "the property block")?;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    while !properties.is_empty() {
        match properties.u8("property identifier")? {
            id::AUTHENTICATION_METHOD => {
                auth.method = Some(text(properties.utf8("the Authentication Method")?));
            }
            id::AUTHENTICATION_DATA => {
                let data = properties.binary("the Authentication Data")?;
                auth.data = Some(Bytes::copy_from_slice(data));
            }
            id::REASON_STRING => {
                auth.reason_string = Some(text(properties.utf8("the Reason String")?));
            }
            id::USER_PROPERTY => {
                properties.utf8("a user property name")?;
                properties.utf8("a user property value")?;
            }
            other => {
                return Err(CodecError::malformed(format!(
                    "property 0x{other:02X} is not valid in AUTH"
                )))
            }
        }
    }
    Ok(auth)
}

/// Encodes `auth`: the short form (remaining length 0) for a success
/// without properties, else the reason code and the property block.
pub fn write(auth: &Auth, out: &mut BytesMut) {
    let mut properties = Vec::new();
    let string = |id: u8, bytes: &[u8], properties: &mut Vec<u8>| {
        let bytes = &bytes[..bytes.len().min(usize::from(u16::MAX))];
        properties.push(id);
        properties.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        properties.extend_from_slice(bytes);
    };
    if let Some(method) = &auth.method {
        string(
            id::AUTHENTICATION_METHOD,
            method.as_bytes(),
            &mut properties,
        );
    }
    if let Some(data) = &auth.data {
        string(id::AUTHENTICATION_DATA, data, &mut properties);
    }
    if let Some(reason) = &auth.reason_string {
        string(id::REASON_STRING, reason.as_bytes(), &mut properties);
    }
    out.extend_from_slice(&[0xF0]);
    if auth.reason == SUCCESS && properties.is_empty() {
        out.extend_from_slice(&[0x00]);
        return;
    }
    let mut length = Vec::with_capacity(4);
    varint(properties.len(), &mut length);
    let mut remaining = Vec::with_capacity(4);
    varint(1 + length.len() + properties.len(), &mut remaining);
    out.extend_from_slice(&remaining);
    out.extend_from_slice(&[auth.reason]);
    out.extend_from_slice(&length);
    out.extend_from_slice(&properties);
}

/// A Variable Byte Integer (1.5.5).
fn varint(mut value: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{next_frame, take_auth, Version};

    fn round_trip(auth: &Auth) -> Auth {
        let mut out = BytesMut::new();
        write(auth, &mut out);
        let header = next_frame(&out, Version::V5, 1 << 20).unwrap().unwrap();
        let decoded = take_auth(&mut out, &header, Version::V5).unwrap().unwrap();
        assert!(out.is_empty());
        decoded
    }

    #[test]
    fn every_reason_and_property_round_trips() {
        for reason in [SUCCESS, CONTINUE_AUTHENTICATION, RE_AUTHENTICATE] {
            let auth = Auth {
                reason,
                method: Some("jwt".into()),
                data: Some(Bytes::from_static(b"header.payload.signature")),
                reason_string: Some("why".into()),
            };
            assert_eq!(round_trip(&auth), auth);
        }
        let bare = Auth::default();
        let mut out = BytesMut::new();
        write(&bare, &mut out);
        assert_eq!(&out[..], [0xF0, 0x00], "a bare success is the short form");
        assert_eq!(round_trip(&bare), bare);
    }

    #[test]
    fn a_long_token_needs_a_longer_remaining_length() {
        let auth = Auth {
            reason: RE_AUTHENTICATE,
            method: Some("jwt".into()),
            data: Some(Bytes::from(vec![b'a'; 1000])),
            reason_string: None,
        };
        assert_eq!(round_trip(&auth), auth);
    }

    #[test]
    fn user_properties_are_read_past_and_the_token_is_never_printed() {
        // AUTH 0x19, properties: method "m", user property ("k", "v"), data "secret".
        let body = [
            0x19, 16, 0x15, 0, 1, b'm', 0x26, 0, 1, b'k', 0, 1, b'v', 0x16, 0, 2, b's', b'e',
        ];
        let auth = decode(&body).unwrap();
        assert_eq!(auth.method.as_deref(), Some("m"));
        assert_eq!(auth.data.as_deref(), Some(&b"se"[..]));
        let printed = format!("{auth:?}");
        assert!(!printed.contains("se\""), "{printed}");
        assert!(printed.contains("<2 bytes>"), "{printed}");
    }
}
