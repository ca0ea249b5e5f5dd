//! A cursor over the bytes of one complete packet, reading MQTT's data types
//! (1.5) and refusing what the specification forbids in them, without
//! allocating: the conformance walk runs on every packet a client sends.
//!
//! Strings are checked here once for all their uses: well-formed UTF-8
//! ([MQTT-1.5.4-1], 3.1.1 [MQTT-1.5.3-1]), no U+0000 ([MQTT-1.5.4-2],
//! [MQTT-1.5.3-2]) and no Unicode non-characters, which the specification
//! lets a receiver treat as malformed (1.5.4, 1.5.3) and which no client has
//! a reason to send. Control characters (U+0001..U+001F, U+007F..U+009F) are
//! "SHOULD NOT" too, but user properties legitimately carry newlines and
//! tabs, so they are accepted.
//!
//! A refusal allocates its message; a packet that passes allocates nothing.

use super::CodecError;

/// Where a string was found, for the message that refuses it.
pub(crate) type Field = &'static str;

/// A cursor over one packet's variable header and payload.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    fn take(&mut self, count: usize, what: Field) -> Result<&'a [u8], CodecError> {
        if self.remaining() < count {
            return Err(CodecError::malformed(format!(
                "{what} runs past the end of the packet"
            )));
        }
        let taken = &self.bytes[self.at..self.at + count];
        self.at += count;
        Ok(taken)
    }

    pub(crate) fn u8(&mut self, what: Field) -> Result<u8, CodecError> {
        Ok(self.take(1, what)?[0])
    }

    pub(crate) fn u16(&mut self, what: Field) -> Result<u16, CodecError> {
        let bytes = self.take(2, what)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    pub(crate) fn u32(&mut self, what: Field) -> Result<u32, CodecError> {
        let bytes = self.take(4, what)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// A Variable Byte Integer in at most four bytes, in the fewest bytes
    /// that hold its value ([MQTT-1.5.5-1]).
    pub(crate) fn varint(&mut self, what: Field) -> Result<usize, CodecError> {
        let mut value = 0usize;
        for index in 0..4 {
            let byte = self.u8(what)?;
            value |= usize::from(byte & 0x7F) << (7 * index);
            if byte & 0x80 == 0 {
                if index > 0 && byte == 0 {
                    return Err(CodecError::malformed(format!(
                        "{what} is not encoded in the fewest bytes"
                    )));
                }
                return Ok(value);
            }
        }
        Err(CodecError::malformed(format!(
            "{what} is longer than four bytes"
        )))
    }

    /// Binary Data: a two-byte length and that many bytes.
    pub(crate) fn binary(&mut self, what: Field) -> Result<&'a [u8], CodecError> {
        let len = self.u16(what)?;
        self.take(usize::from(len), what)
    }

    /// A UTF-8 Encoded String, checked as the module says.
    pub(crate) fn utf8(&mut self, what: Field) -> Result<&'a [u8], CodecError> {
        let bytes = self.binary(what)?;
        check_string(bytes, what)?;
        Ok(bytes)
    }

    /// A reader over the next `len` bytes (a property block), which this
    /// one skips.
    pub(crate) fn split(&mut self, len: usize, what: Field) -> Result<Reader<'a>, CodecError> {
        Ok(Reader::new(self.take(len, what)?))
    }
}

/// Refuses a string that is not UTF-8, holds U+0000 or a non-character.
///
/// The common case, ASCII without U+0000, is one pass over the bytes (no
/// early exit, so it vectorises) with no decoding; other strings are decoded once
/// and their characters checked.
pub(crate) fn check_string(bytes: &[u8], what: Field) -> Result<(), CodecError> {
    // One vectorisable pass: no byte >= 0x80 and no 0.
    if !bytes
        .iter()
        .fold(false, |odd, &b| odd | (b == 0) | (b >= 0x80))
    {
        return Ok(());
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| CodecError::malformed(format!("{what} is not valid UTF-8")))?;
    if text.contains('\0') {
        return Err(CodecError::malformed(format!("{what} contains U+0000")));
    }
    if let Some(c) = text.chars().find(|&c| is_noncharacter(c)) {
        return Err(CodecError::malformed(format!(
            "{what} contains the non-character U+{:04X}",
            u32::from(c)
        )));
    }
    Ok(())
}

/// Unicode non-characters: U+FDD0..U+FDEF and the last two code points of
/// every plane.
fn is_noncharacter(c: char) -> bool {
    let code = u32::from(c);
    (0xFDD0..=0xFDEF).contains(&code) || code & 0xFFFE == 0xFFFE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_refuse_null_non_characters_and_bad_utf8() {
        assert!(check_string(b"a/b/c", "topic").is_ok());
        assert!(check_string("caf\u{e9} \u{1F600}\n\t".as_bytes(), "topic").is_ok());
        // U+FEFF must not be stripped or refused ([MQTT-1.5.4-3]).
        assert!(check_string("\u{FEFF}a".as_bytes(), "topic").is_ok());
        let null = check_string(b"a\0b", "topic").unwrap_err();
        assert!(null.message.contains("U+0000"), "{}", null.message);
        for nonchar in [
            "\u{FFFF}",
            "\u{FFFE}",
            "\u{FDD0}",
            "\u{1FFFE}",
            "\u{10FFFF}",
        ] {
            let error = check_string(nonchar.as_bytes(), "topic").unwrap_err();
            assert!(error.message.contains("non-character"), "{nonchar:?}");
        }
        assert!(
            check_string(&[0xED, 0xA0, 0x80], "topic").is_err(),
            "a surrogate"
        );
        assert!(
            check_string(&[0xC0, 0x80], "topic").is_err(),
            "overlong U+0000"
        );
    }

    #[test]
    fn varints_must_be_minimal_and_short() {
        assert_eq!(Reader::new(&[0x7F]).varint("n"), Ok(127));
        assert_eq!(Reader::new(&[0x80, 0x01]).varint("n"), Ok(128));
        assert!(Reader::new(&[0x80, 0x00]).varint("n").is_err());
        assert!(Reader::new(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01])
            .varint("n")
            .is_err());
        assert!(Reader::new(&[0x80]).varint("n").is_err());
    }
}
