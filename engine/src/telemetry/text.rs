//! How values are written into event messages, so that operators read them
//! as a person writes them and clients cannot forge log lines.
//!
//! [`text`] is for every value a client (or a certificate, token or broker)
//! chose: client ids, topics, user names, server names; [`identity`] for
//! the identity a guard granted. [`duration`] is for timeouts, back-offs and
//! expiries.

use std::fmt::{self, Write as _};
use std::time::Duration;

/// `value` as an event shows it: as it is when it is a plain word
/// (`device1`, `sensors/+/temp`, `café`), else in double quotes with control
/// characters, quotes and backslashes escaped (`""`, `"a b"`,
/// `"x\nWARN forged"`), so that it is always one line and always one value.
pub fn text(value: &str) -> Text<'_> {
    Text(value)
}

/// What [`text`] returns.
#[derive(Debug, Clone, Copy)]
pub struct Text<'a>(&'a str);

/// Characters that would break a line, or change how the rest of it reads
/// (bidirectional overrides, zero-width characters), written escaped.
fn escaped(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.0;
        let plain = !value.is_empty()
            && !value
                .chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '\\' || escaped(c));
        if plain {
            return f.write_str(value);
        }
        f.write_char('"')?;
        for c in value.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if escaped(c) => write!(f, "\\u{{{:X}}}", u32::from(c))?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

/// A guard's identity as events write it: `identity device1`, or
/// `no identity` when the guard granted none.
pub fn identity(identity: Option<&str>) -> Identity<'_> {
    Identity(identity)
}

/// What [`identity`] returns.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a>(Option<&'a str>);

impl fmt::Display for Identity<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(identity) => write!(f, "identity {}", text(identity)),
            None => f.write_str("no identity"),
        }
    }
}

/// `value` as a person writes it: `250 ms`, `1.5 s`, `30 s`, `2 min 30 s`,
/// `1 h 5 min`.
pub fn duration(value: Duration) -> Span {
    Span(value)
}

/// What [`duration`] returns.
#[derive(Debug, Clone, Copy)]
pub struct Span(Duration);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.0;
        if value.is_zero() {
            return f.write_str("0 s");
        }
        if value < Duration::from_millis(1) {
            return write!(f, "{} µs", value.as_micros().max(1));
        }
        if value < Duration::from_secs(1) {
            return write!(f, "{} ms", decimal(value.as_micros(), 1_000));
        }
        if value < Duration::from_secs(60) {
            return write!(f, "{} s", decimal(value.as_millis(), 1_000));
        }
        // Beyond a minute a fraction of a second tells an operator nothing.
        let whole = value.as_secs();
        let parts = [
            (whole / 3600, "h"),
            (whole / 60 % 60, "min"),
            (whole % 60, "s"),
        ];
        let mut first = true;
        for (amount, unit) in parts.iter().filter(|(amount, _)| *amount > 0) {
            if !first {
                f.write_char(' ')?;
            }
            write!(f, "{amount} {unit}")?;
            first = false;
        }
        Ok(())
    }
}

/// `value / per` with at most three decimals, without trailing zeros.
fn decimal(value: u128, per: u128) -> String {
    let whole = value / per;
    let fraction = value % per;
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:03}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_word_is_written_as_it_is() {
        assert_eq!(text("device1").to_string(), "device1");
        assert_eq!(text("sensors/+/temp").to_string(), "sensors/+/temp");
    }

    #[test]
    fn unicode_is_written_as_it_is() {
        assert_eq!(text("café/温度").to_string(), "café/温度");
    }

    #[test]
    fn an_empty_string_is_quoted() {
        assert_eq!(text("").to_string(), "\"\"");
    }

    #[test]
    fn whitespace_and_quotes_are_quoted() {
        assert_eq!(text("a b").to_string(), "\"a b\"");
        assert_eq!(text("say \"hi\"").to_string(), "\"say \\\"hi\\\"\"");
        assert_eq!(text("C:\\dir").to_string(), "\"C:\\\\dir\"");
    }

    #[test]
    fn a_newline_cannot_start_a_forged_line() {
        let forged = "x\n2026-01-01T00:00:00.000Z INFO ns.mqtt MQTT_SESSION_OPENED ok";
        let written = text(forged).to_string();
        assert!(!written.contains('\n'), "{written}");
        assert!(written.starts_with("\"x\\n2026"), "{written}");
        assert_eq!(
            text("a\r\tb\u{1b}[31m").to_string(),
            "\"a\\r\\tb\\u{1B}[31m\""
        );
    }

    #[test]
    fn invisible_characters_that_change_a_line_are_escaped() {
        assert_eq!(text("a\u{202E}b").to_string(), "\"a\\u{202E}b\"");
        assert_eq!(text("a\u{2028}b").to_string(), "\"a\\u{2028}b\"");
    }

    #[test]
    fn an_absent_identity_is_written_in_words() {
        assert_eq!(
            identity(Some("device 1")).to_string(),
            "identity \"device 1\""
        );
        assert_eq!(identity(None).to_string(), "no identity");
    }

    #[test]
    fn durations_read_as_a_person_writes_them() {
        let cases = [
            (Duration::ZERO, "0 s"),
            (Duration::from_micros(40), "40 µs"),
            (Duration::from_millis(250), "250 ms"),
            (Duration::from_micros(1_500), "1.5 ms"),
            (Duration::from_millis(1_500), "1.5 s"),
            (Duration::from_secs(30), "30 s"),
            (Duration::from_millis(59_999), "59.999 s"),
            (Duration::from_secs(60), "1 min"),
            (Duration::from_millis(150_400), "2 min 30 s"),
            (Duration::from_secs(3_900), "1 h 5 min"),
            (Duration::from_secs(7_205), "2 h 5 s"),
        ];
        for (value, written) in cases {
            assert_eq!(duration(value).to_string(), written, "{value:?}");
        }
    }
}
