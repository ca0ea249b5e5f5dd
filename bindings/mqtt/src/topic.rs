//! Topic names and filters: validation and matching (`+`, `#`, `$` topics,
//! `$share/<group>/<filter>`).

/// Whether `name` is a valid PUBLISH topic name (no wildcards).
pub fn is_valid_name(name: &str) -> bool {
    !has_wildcard_or_nul(name.as_bytes())
}

/// Whether `bytes` hold a `+`, a `#` or a U+0000 (the three are ASCII, so
/// a byte match is a character match in UTF-8). Every PUBLISH topic goes
/// through this on each side of the proxy, so it looks at eight bytes at a
/// time: a `char`-pattern `contains` decoded the topic character by
/// character and cost about ten times as much.
#[inline]
pub fn has_wildcard_or_nul(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Nonzero exactly when some byte of `word` is 0.
    let zero_byte = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    let mut found = 0;
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes(chunk.try_into().expect("eight bytes"));
        found |= zero_byte(word)
            | zero_byte(word ^ (ONES * u64::from(b'+')))
            | zero_byte(word ^ (ONES * u64::from(b'#')));
    }
    found != 0
        || chunks
            .remainder()
            .iter()
            .any(|&b| b == b'+' || b == b'#' || b == 0)
}

/// Whether `bytes` is a topic name the PUBLISH fast path takes as it is:
/// not empty, ASCII, without a `+`, a `#` or a U+0000. One pass of eight
/// bytes at a time, the four checks folded into one word; the last word
/// overlaps the one before it (a name under eight bytes is padded with a
/// letter), so no byte is looked at alone. Separate `is_ascii` and
/// wildcard passes with a byte-by-byte tail cost about 60 instructions per
/// 33-byte topic, twice per message.
#[inline]
pub fn is_plain_ascii_name(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const PLUS: u64 = ONES * b'+' as u64;
    const HASH: u64 = ONES * b'#' as u64;
    // A high bit set in a byte of the result exactly when some byte of
    // `word` is 0, `+`, `#` or not ASCII (a borrow can only mark a byte
    // above one that is really 0, so "any" is exact).
    let flagged = |word: u64| {
        let zero_byte = |w: u64| w.wrapping_sub(ONES) & !w;
        (zero_byte(word) | zero_byte(word ^ PLUS) | zero_byte(word ^ HASH) | word) & HIGHS
    };
    let len = bytes.len();
    if len < 8 {
        if len == 0 {
            return false;
        }
        let mut padded = [b'a'; 8];
        padded[..len].copy_from_slice(bytes);
        return flagged(u64::from_ne_bytes(padded)) == 0;
    }
    let mut words = bytes.chunks_exact(8);
    let mut found = 0;
    for word in &mut words {
        found |= flagged(u64::from_ne_bytes(word.try_into().expect("eight bytes")));
    }
    if !words.remainder().is_empty() {
        let (_, last) = bytes.split_last_chunk::<8>().expect("eight bytes or more");
        found |= flagged(u64::from_ne_bytes(*last));
    }
    found == 0
}

/// Whether `filter` is a valid topic filter: `#` only last and alone in its
/// level, `+` alone in its level, and a complete `$share/<group>/<filter>`.
pub fn is_valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let filter = match shared(filter) {
        Some((group, inner)) => {
            if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
                return false;
            }
            inner
        }
        None if filter.starts_with("$share/") || filter == "$share" => return false,
        None => filter,
    };
    let levels: Vec<&str> = filter.split('/').collect();
    levels
        .iter()
        .enumerate()
        .all(|(index, level)| match *level {
            "#" => index == levels.len() - 1,
            "+" => true,
            level => !level.contains(['+', '#']),
        })
}

/// Splits `$share/<group>/<filter>` into group and filter.
pub fn shared(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix("$share/")?;
    rest.split_once('/')
}

/// The filter a subscription matches topics with, without any `$share/<group>/`.
pub fn effective_filter(filter: &str) -> &str {
    shared(filter).map_or(filter, |(_, inner)| inner)
}

/// Whether topic `name` matches `filter`. Names starting with `$` are not
/// matched by filters starting with a wildcard (MQTT 4.7.2).
///
/// This runs for every PUBLISH against every route filter, so it walks both
/// as bytes, level by level, without splitting into iterators (`/`, `+` and
/// `#` are ASCII, so byte positions are always UTF-8 boundaries).
pub fn matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let (filter, name) = (filter.as_bytes(), name.as_bytes());
    let (mut f, mut n) = (0, 0);
    loop {
        // Both at the start of a level.
        match filter.get(f) {
            Some(b'#') => return true,
            Some(b'+') => {
                f += 1;
                while n < name.len() && name[n] != b'/' {
                    n += 1;
                }
            }
            _ => {
                while f < filter.len() && filter[f] != b'/' {
                    if name.get(n) != Some(&filter[f]) {
                        return false;
                    }
                    f += 1;
                    n += 1;
                }
                if n < name.len() && name[n] != b'/' {
                    return false;
                }
            }
        }
        // Both at the end of a level: the end of the string or a `/`.
        match (f == filter.len(), n == name.len()) {
            (true, true) => return true,
            (true, false) => return false,
            // `a/#` also matches its parent `a`.
            (false, true) => return &filter[f..] == b"/#",
            (false, false) => {
                f += 1;
                n += 1;
            }
        }
    }
}

/// Whether every topic `inner` can match is matched by `outer` too, so a route
/// for `outer` covers a subscription to `inner`.
pub fn covers(outer: &str, inner: &str) -> bool {
    let mut outer_levels = outer.split('/');
    let mut inner_levels = inner.split('/');
    loop {
        match (outer_levels.next(), inner_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(i)) if i != "#" => {}
            (Some(o), Some(i)) if o == i => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ascii_name_agrees_with_a_byte_by_byte_search() {
        let expected = |bytes: &[u8]| {
            !bytes.is_empty() && bytes.iter().all(|&b| b.is_ascii() && !b"+#\0".contains(&b))
        };
        let fillers = [
            b'a', b'/', 0x01, 0x22, 0x24, 0x2a, 0x2c, 0x7f, 0x80, 0xa3, 0xab, 0xff,
        ];
        for len in 0..=33 {
            for &filler in &fillers {
                let plain = vec![filler; len];
                assert_eq!(is_plain_ascii_name(&plain), expected(&plain), "{plain:?}");
                for at in 0..len {
                    for special in [b'+', b'#', 0, 0x80, 0xc3, b'b'] {
                        let mut bytes = plain.clone();
                        bytes[at] = special;
                        assert_eq!(is_plain_ascii_name(&bytes), expected(&bytes), "{bytes:?}");
                    }
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn plain_ascii_name_agrees_on_any_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            let expected = !bytes.is_empty()
                && bytes.iter().all(|&b| b.is_ascii() && !b"+#\0".contains(&b));
            proptest::prop_assert_eq!(is_plain_ascii_name(&bytes), expected);
        }

        #[test]
        fn plain_ascii_name_agrees_on_near_topics(name in "[a-z/+#\\x00\\x7f\u{e9}]{0,40}") {
            let bytes = name.as_bytes();
            let expected = !bytes.is_empty()
                && bytes.iter().all(|&b| b.is_ascii() && !b"+#\0".contains(&b));
            proptest::prop_assert_eq!(is_plain_ascii_name(bytes), expected);
        }
    }

    #[test]
    fn wildcard_or_nul_agrees_with_a_byte_by_byte_search() {
        // Neighbours of the three bytes searched for, with and without the
        // high bit, so that a borrow between bytes of a word would show.
        let fillers = [
            b'a', b'/', 0x01, 0x22, 0x24, 0x2a, 0x2c, 0x80, 0xa3, 0xab, 0xff,
        ];
        for len in 0..=24 {
            for &filler in &fillers {
                let plain = vec![filler; len];
                assert!(!has_wildcard_or_nul(&plain), "{plain:?}");
                for at in 0..len {
                    for special in [b'+', b'#', 0] {
                        let mut bytes = plain.clone();
                        bytes[at] = special;
                        assert!(has_wildcard_or_nul(&bytes), "{bytes:?}");
                    }
                }
            }
        }
        for name in [
            "",
            "a/b",
            "caf\u{e9}/\u{1f600}/x",
            "a+b",
            "#",
            "a\0",
            "\u{fdd0}",
        ] {
            assert_eq!(
                is_valid_name(name),
                !name.contains(['+', '#', '\0']),
                "{name:?}"
            );
        }
    }

    #[test]
    fn wildcards_match_levels() {
        assert!(matches("a/+/c", "a/b/c"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("#", "a/b"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(!matches("a/b", "a/c"));
        assert!(matches("+/+", "/a"));
        assert!(matches("a/b/#", "a/b"));
        assert!(!matches("a/b", "a/bc"));
        assert!(!matches("a/bc", "a/b"));
        assert!(!matches("a/", "a"));
        assert!(matches("a/", "a/"));
        assert!(matches("a//c", "a//c"));
        assert!(matches("a/+/c", "a//c"));
        assert!(!matches("a/+", "a"));
        assert!(matches("+", "a"));
        assert!(!matches("+", "a/b"));
        assert!(matches(
            "sensors/+/floor-3/+/temperature",
            "sensors/b7/floor-3/r12/temperature"
        ));
    }

    #[test]
    fn matching_agrees_with_level_splitting() {
        // The byte walk against the plain definition, over every pair of a
        // small alphabet of levels.
        fn by_levels(filter: &str, name: &str) -> bool {
            let mut f = filter.split('/');
            let mut n = name.split('/');
            loop {
                match (f.next(), n.next()) {
                    (Some("#"), _) => return true,
                    (Some("+"), Some(_)) => {}
                    (Some(a), Some(b)) if a == b => {}
                    (None, None) => return true,
                    _ => return false,
                }
            }
        }
        let filters = ["a", "b", "+", "#", "", "ab"];
        let names = ["a", "b", "", "ab", "ä"];
        let mut all_filters = Vec::new();
        let mut all_names = Vec::new();
        for x in filters {
            all_filters.push(x.to_owned());
            for y in filters {
                all_filters.push(format!("{x}/{y}"));
                for z in filters {
                    all_filters.push(format!("{x}/{y}/{z}"));
                }
            }
        }
        for x in names {
            all_names.push(x.to_owned());
            for y in names {
                all_names.push(format!("{x}/{y}"));
                for z in names {
                    all_names.push(format!("{x}/{y}/{z}"));
                }
            }
        }
        for filter in all_filters.iter().filter(|f| is_valid_filter(f)) {
            for name in &all_names {
                assert_eq!(
                    matches(filter, name),
                    by_levels(filter, name),
                    "{filter} vs {name}"
                );
            }
        }
    }

    #[test]
    fn dollar_topics_need_explicit_filters() {
        assert!(!matches("#", "$SYS/broker/uptime"));
        assert!(!matches("+/broker/uptime", "$SYS/broker/uptime"));
        assert!(matches("$SYS/#", "$SYS/broker/uptime"));
    }

    #[test]
    fn filters_are_validated() {
        assert!(is_valid_filter("a/+/c/#"));
        assert!(is_valid_filter("$share/group/a/#"));
        assert!(!is_valid_filter("a/#/c"));
        assert!(!is_valid_filter("a/b+"));
        assert!(!is_valid_filter("$share/group"));
        assert!(!is_valid_filter("$share//a"));
        assert!(!is_valid_filter(""));
        assert_eq!(effective_filter("$share/g/a/b"), "a/b");
    }

    #[test]
    fn route_filters_cover_subscriptions() {
        assert!(covers("sensors/#", "sensors/+/temp"));
        assert!(covers("sensors/+/temp", "sensors/1/temp"));
        assert!(!covers("sensors/+/temp", "sensors/#"));
        assert!(!covers("sensors/1", "sensors/+"));
        assert!(covers("#", "#"));
    }
}
