//! Routes the operations of one admitted session (publishes, subscriptions)
//! to the index of its upstream, with the route conditions bound to the
//! session's client id and authorizations once, at admission.

use std::sync::Arc;

use zilla_engine::Authorizations;

use crate::config::ServerConfig;
use crate::options::{Operation, RouteConditions};

/// Routes the operations of one session to the index of its upstream.
pub(crate) struct Router {
    pub(super) config: Arc<ServerConfig>,
    /// Whether each route accepts this session's client id, decided once.
    pub(super) session_accepted: RouteSet,
    /// The same for the unbound conditions.
    pub(super) unbound_session_accepted: RouteSet,
    pub(super) authorizations: Authorizations,
    /// The routes' conditions with this session's params bound.
    pub(super) conditions: Vec<RouteConditions>,
    /// Exit names, by upstream index.
    pub(super) exits: Vec<Arc<str>>,
    /// Where every publish goes when no route's conditions name publish
    /// topics (most configurations): decided once, so a PUBLISH is routed
    /// without its topic as a `str`. `None` when the topic decides.
    pub(super) any_publish: Option<Option<usize>>,
}

/// A flag per route, a bit each: a configuration has a handful of routes,
/// and as a `Vec<bool>` the flags would take a heap block of their own (32
/// bytes for one byte) in every session. Routes past the 64th spill to a
/// boxed slice, which is empty (no allocation) otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RouteSet {
    first: u64,
    rest: Box<[bool]>,
}

impl RouteSet {
    /// Whether route `index` is in the set.
    #[inline]
    pub(crate) fn contains(&self, index: usize) -> bool {
        match index.checked_sub(64) {
            None => self.first & (1 << index) != 0,
            Some(past) => self.rest.get(past).copied().unwrap_or(false),
        }
    }
}

impl FromIterator<bool> for RouteSet {
    fn from_iter<I: IntoIterator<Item = bool>>(flags: I) -> Self {
        let mut flags = flags.into_iter();
        let mut first = 0;
        for (index, flag) in flags.by_ref().take(64).enumerate() {
            first |= u64::from(flag) << index;
        }
        Self {
            first,
            rest: flags.collect(),
        }
    }
}

/// Decides where every publish goes when the topic does not matter.
pub(super) fn any_publish(router: &Router) -> Option<Option<usize>> {
    let topic_free = !router
        .conditions
        .iter()
        .any(RouteConditions::names_publish_topics);
    topic_free.then(|| router.route(Operation::Publish("any")))
}

impl Router {
    /// The upstream `operation` goes to; `None` when no route takes it.
    pub(crate) fn route(&self, operation: Operation<'_>) -> Option<usize> {
        let conditions = &self.conditions;
        let resolved = self
            .config
            .routes
            .resolve_by(&self.authorizations, |index, _| {
                self.session_accepted.contains(index) && conditions[index].accepts(operation)
            })?;
        self.exits
            .iter()
            .position(|name| *name == resolved.exit.name)
    }

    /// The upstream a PUBLISH to `topic` goes to, the topic's bytes checked
    /// as ASCII already (`codec::view_publish`); `None` when no route takes it.
    #[inline]
    pub(crate) fn route_publish(&self, topic: &[u8]) -> Option<usize> {
        match self.any_publish {
            Some(exit) => exit,
            None => self.route(Operation::Publish(std::str::from_utf8(topic).ok()?)),
        }
    }

    /// Authorizes the session's later operations with what guard `guard`
    /// granted a refreshed token: its conditions bound again, and which
    /// routes accept the session's client id decided again.
    pub(crate) fn reauthorize(
        &mut self,
        guard: Arc<str>,
        granted: zilla_engine::GuardSession,
        client_id: &str,
    ) {
        self.authorizations.insert(guard, granted);
        self.conditions = (self.config.templates.iter())
            .map(|template| template.bind(&self.authorizations))
            .collect();
        let session = Operation::Session(client_id);
        self.session_accepted = self.conditions.iter().map(|c| c.accepts(session)).collect();
        self.any_publish = any_publish(self);
    }

    /// Whether some token could have been allowed `operation`: the difference
    /// between "not authorized" (0x87) and "not routable" (0x83).
    pub(crate) fn could_route(&self, operation: Operation<'_>) -> bool {
        self.config.routes.default_exit().is_some()
            || self
                .config
                .unbound
                .iter()
                .enumerate()
                .any(|(index, conditions)| {
                    self.unbound_session_accepted.contains(index) && conditions.accepts(operation)
                })
    }
}

#[cfg(test)]
mod tests {
    use super::RouteSet;

    #[test]
    fn a_route_set_holds_each_flag_inline_and_past_64_on_the_heap() {
        for count in [0, 1, 5, 63, 64, 65, 130] {
            let flags: Vec<bool> = (0..count).map(|i| i % 3 != 1).collect();
            let set: RouteSet = flags.iter().copied().collect();
            for (index, flag) in flags.iter().enumerate() {
                assert_eq!(set.contains(index), *flag, "route {index} of {count}");
            }
            assert!(!set.contains(count), "no route {count} of {count}");
            assert_eq!(set.rest.len(), count.saturating_sub(64));
        }
    }
}
