//! What a host's admin socket reaches inside the running engines: the live
//! sessions of the bindings that keep sessions ([`mod@sessions`]), and taps that
//! copy the bytes those bindings see to a packet capture ([`tap`]).
//!
//! Both are process-wide, like the exporters' event routing: a host runs one
//! engine per configuration generation, and sessions of an older generation
//! live on after a reload until they end, so the operator's view is every
//! generation's at once. Nothing here costs a session anything until an
//! operator asks: a listing reads what sessions registered once, and a tap
//! is one relaxed atomic load per read or write while none is attached.

pub mod sessions;
pub mod tap;

pub use sessions::{disconnect, register_sessions, sessions, SessionInfo, SessionSource};
pub use tap::{Attached, DumpRequest, Segment, Tap};

/// Whether `text` matches `pattern`, where `*` stands for any run of
/// characters and `?` for one (a client id, for `zilla sessions` and dumps).
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // The classic two-pointer walk with backtracking to the last `*`.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob_matches;

    #[test]
    fn globs_match_like_a_shell() {
        assert!(glob_matches("device-1", "device-1"));
        assert!(!glob_matches("device-1", "device-10"));
        assert!(glob_matches("device-*", "device-10"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("d?v*-1*", "dev-x-1-2"));
        assert!(!glob_matches("d?v", "dv"));
        assert!(glob_matches("*a*b", "xaxxb"));
        assert!(!glob_matches("*a*b", "xaxxbc"));
    }
}
