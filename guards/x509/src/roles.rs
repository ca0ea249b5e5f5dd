//! Roles granted by matching certificate fields against globs, as Zilla's
//! x509 guard grants them: the matches listed under a role are
//! alternatives (any one grants it), the fields inside one match must all
//! match, a field with several values matches when any value does, and a
//! field the certificate lacks never matches.

use crate::fields::{Field, Fields};

/// A glob over one field value: `*` is any run of characters and `?` one
/// character (neither crosses a line terminator, as in the Java regex Zilla
/// compiles them to), everything else is literal and compared ignoring ASCII
/// case; the glob must match the whole value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Literal(char),
    One,
    Run,
}

impl Glob {
    pub(crate) fn new(glob: &str) -> Self {
        let mut tokens: Vec<Token> = Vec::with_capacity(glob.len());
        for c in glob.chars() {
            let token = match c {
                '*' => Token::Run,
                '?' => Token::One,
                c => Token::Literal(c),
            };
            // `**` matches what `*` does.
            if !(token == Token::Run && tokens.last() == Some(&Token::Run)) {
                tokens.push(token);
            }
        }
        Self { tokens }
    }

    pub(crate) fn matches(&self, value: &str) -> bool {
        let value: Vec<char> = value.chars().collect();
        // reachable[j]: the tokens so far can match exactly value[..j].
        let mut reachable = vec![false; value.len() + 1];
        reachable[0] = true;
        for token in &self.tokens {
            let mut next = vec![false; value.len() + 1];
            for j in 0..=value.len() {
                next[j] = match token {
                    Token::Run => {
                        reachable[j] || (j > 0 && next[j - 1] && !line_terminator(value[j - 1]))
                    }
                    Token::One => j > 0 && reachable[j - 1] && !line_terminator(value[j - 1]),
                    Token::Literal(c) => {
                        j > 0 && reachable[j - 1] && value[j - 1].eq_ignore_ascii_case(c)
                    }
                };
            }
            reachable = next;
        }
        reachable[value.len()]
    }
}

/// What Java's `.` does not match without `DOTALL`.
fn line_terminator(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// One field and the glob its value must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Condition {
    pub(crate) field: Field,
    pub(crate) glob: Glob,
}

impl Condition {
    fn matches(&self, fields: &Fields) -> bool {
        fields
            .values(self.field)
            .iter()
            .any(|value| self.glob.matches(value))
    }
}

/// A role and the matches that grant it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Role {
    pub(crate) name: String,
    /// Alternatives; each one's conditions must all hold (and it has some).
    pub(crate) matches: Vec<Vec<Condition>>,
}

impl Role {
    fn granted(&self, fields: &Fields) -> bool {
        self.matches.iter().any(|conditions| {
            !conditions.is_empty() && conditions.iter().all(|c| c.matches(fields))
        })
    }
}

/// The roles of `roles` that `fields` are granted, in configuration order.
pub(crate) fn granted(roles: &[Role], fields: &Fields) -> Vec<String> {
    roles
        .iter()
        .filter(|role| role.granted(fields))
        .map(|role| role.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(glob: &str, value: &str) -> bool {
        Glob::new(glob).matches(value)
    }

    #[test]
    fn an_exact_glob_matches_the_whole_value_only() {
        assert!(matches("Internal CA", "Internal CA"));
        assert!(!matches("Internal", "Internal CA"), "anchored at the end");
        assert!(!matches("CA", "Internal CA"), "anchored at the start");
        assert!(!matches("Internal CA", "Internal CA2"));
        assert!(matches("", ""));
        assert!(!matches("", "x"));
    }

    #[test]
    fn stars_match_any_run_at_the_start_end_or_middle() {
        assert!(matches(
            "*.internal.example.com",
            "events.internal.example.com"
        ));
        assert!(matches(
            "*.internal.example.com",
            "a.b.internal.example.com"
        ));
        assert!(!matches("*.internal.example.com", "internal.example.com"));
        assert!(matches(
            "spiffe://example.com/*",
            "spiffe://example.com/ns/prod"
        ));
        assert!(matches("spiffe://example.com/*", "spiffe://example.com/"));
        assert!(!matches(
            "spiffe://example.com/*",
            "spiffe://example.org/ns"
        ));
        assert!(matches("device-*-eu", "device-42-eu"));
        assert!(matches("device-*-eu", "device--eu"));
        assert!(!matches("device-*-eu", "device-42-us"));
        assert!(matches("*", ""));
        assert!(matches("*", "anything at all"));
        assert!(matches("a**b", "axxb"));
        assert!(matches("*a*b*", "xxaxxbxx"));
        assert!(!matches("*a*b*", "xxbxxaxx"));
    }

    #[test]
    fn a_question_mark_matches_one_character() {
        assert!(matches("dev?", "dev1"));
        assert!(matches("dev?", "devé"), "one character, not one byte");
        assert!(!matches("dev?", "dev"));
        assert!(!matches("dev?", "dev12"));
    }

    #[test]
    fn letters_match_ignoring_ascii_case_only() {
        assert!(matches("internal ca", "Internal CA"));
        assert!(matches("*.EXAMPLE.com", "a.example.COM"));
        assert!(!matches("é", "É"), "Java's CASE_INSENSITIVE is ASCII only");
    }

    #[test]
    fn wildcards_do_not_cross_line_terminators() {
        assert!(!matches("a*b", "a\nb"));
        assert!(!matches("a?b", "a\rb"));
        assert!(matches("a\nb", "a\nb"));
    }
}
