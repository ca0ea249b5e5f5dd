//! Topic names and filters: validation and matching (`+`, `#`, `$` topics,
//! `$share/<group>/<filter>`).

/// Whether `name` is a valid PUBLISH topic name (no wildcards).
pub fn is_valid_name(name: &str) -> bool {
    !name.contains(['+', '#', '\0'])
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
pub fn matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut name_levels = name.split('/');
    loop {
        match (filter_levels.next(), name_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(n)) if f == n => {}
            (None, None) => return true,
            _ => return false,
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
    fn wildcards_match_levels() {
        assert!(matches("a/+/c", "a/b/c"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("#", "a/b"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(!matches("a/b", "a/c"));
        assert!(matches("+/+", "/a"));
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
