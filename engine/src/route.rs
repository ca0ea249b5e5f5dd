//! Route semantics shared by every binding.
//!
//! Routes are tried in order and the first match wins. A route matches when its
//! guards all pass and any one of its `when` conditions holds (a route without
//! conditions matches everything). A route whose guard fails is skipped, so the
//! next route gets its chance. The binding's plain `exit` is the last resort.

use std::fmt;
use std::sync::Arc;

use serde_yaml::Value;

use crate::guard::{Authorizations, Guard};

/// A resolved exit: the name of the binding and the port it offers.
pub struct Exit<E: ?Sized> {
    /// The exit binding's name.
    pub name: Arc<str>,
    /// The port the routing binding asked for.
    pub port: Arc<E>,
}

impl<E: ?Sized> Clone for Exit<E> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            port: self.port.clone(),
        }
    }
}

impl<E: ?Sized> fmt::Debug for Exit<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Exit({})", self.name)
    }
}

/// One role check of a `guarded` route.
#[derive(Clone)]
pub struct GuardRequirement {
    /// The guard's name in `guards`.
    pub guard_name: Arc<str>,
    /// The guard itself, which decides whether the roles are held.
    pub guard: Arc<dyn Guard>,
    /// Roles that must all be held.
    pub roles: Vec<String>,
}

impl GuardRequirement {
    /// Whether the stream's authorizations satisfy this requirement.
    pub fn is_met(&self, authorizations: &Authorizations) -> bool {
        authorizations
            .get(&self.guard_name)
            .is_some_and(|session| self.guard.verify(session, &self.roles))
    }
}

impl fmt::Debug for GuardRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:?}", self.guard_name, self.roles)
    }
}

/// One route of a binding, with its conditions parsed as the binding's `W`.
pub struct Route<W, E: ?Sized> {
    /// Conditions, any one of which selects this route.
    pub when: Vec<W>,
    /// Guard requirements, all of which must be met.
    pub guarded: Vec<GuardRequirement>,
    /// Where the route leads.
    pub exit: Exit<E>,
    /// Binding-specific overrides.
    pub with: Option<Value>,
}

impl<W, E: ?Sized> Route<W, E> {
    /// Whether this route applies, given the stream's authorizations and a
    /// test of one condition.
    pub fn matches(
        &self,
        authorizations: &Authorizations,
        mut condition: impl FnMut(&W) -> bool,
    ) -> bool {
        self.guarded.iter().all(|g| g.is_met(authorizations))
            && (self.when.is_empty() || self.when.iter().any(&mut condition))
    }
}

impl<W: fmt::Debug, E: ?Sized> fmt::Debug for Route<W, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("when", &self.when)
            .field("guarded", &self.guarded)
            .field("exit", &self.exit)
            .finish()
    }
}

/// Where a stream goes: the exit, and the route that chose it (`None` when the
/// binding's default `exit` was taken).
pub struct Resolved<'a, W, E: ?Sized> {
    /// The chosen exit.
    pub exit: &'a Exit<E>,
    /// The route that matched, if any.
    pub route: Option<&'a Route<W, E>>,
}

/// A binding's routes and default exit.
pub struct Routes<W, E: ?Sized> {
    routes: Vec<Route<W, E>>,
    default: Option<Exit<E>>,
}

impl<W, E: ?Sized> Routes<W, E> {
    /// Routes tried in order, then `default`.
    pub fn new(routes: Vec<Route<W, E>>, default: Option<Exit<E>>) -> Self {
        Self { routes, default }
    }

    /// The first route that matches, else the default exit, else `None`
    /// (the stream must be rejected).
    pub fn resolve(
        &self,
        authorizations: &Authorizations,
        mut condition: impl FnMut(&W) -> bool,
    ) -> Option<Resolved<'_, W, E>> {
        self.routes
            .iter()
            .find(|route| route.matches(authorizations, &mut condition))
            .map(|route| Resolved {
                exit: &route.exit,
                route: Some(route),
            })
            .or_else(|| {
                self.default
                    .as_ref()
                    .map(|exit| Resolved { exit, route: None })
            })
    }

    /// Like [`resolve`](Self::resolve), for bindings whose conditions only make
    /// sense for a route as a whole: `accepts` gets each route (and its index)
    /// whose guards pass, and decides.
    pub fn resolve_by(
        &self,
        authorizations: &Authorizations,
        mut accepts: impl FnMut(usize, &Route<W, E>) -> bool,
    ) -> Option<Resolved<'_, W, E>> {
        self.routes
            .iter()
            .enumerate()
            .find(|(index, route)| {
                route.guarded.iter().all(|g| g.is_met(authorizations)) && accepts(*index, route)
            })
            .map(|(_, route)| Resolved {
                exit: &route.exit,
                route: Some(route),
            })
            .or_else(|| {
                self.default
                    .as_ref()
                    .map(|exit| Resolved { exit, route: None })
            })
    }

    /// The routes, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Route<W, E>> {
        self.routes.iter()
    }

    /// The default exit.
    pub fn default_exit(&self) -> Option<&Exit<E>> {
        self.default.as_ref()
    }

    /// Whether there is nowhere at all to go.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.default.is_none()
    }
}

impl<W: fmt::Debug, E: ?Sized> fmt::Debug for Routes<W, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Routes")
            .field("routes", &self.routes)
            .field("default", &self.default)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::{GuardRejection, GuardSession};
    use async_trait::async_trait;

    struct RoleGuard;

    #[async_trait]
    impl Guard for RoleGuard {
        async fn authorize(&self, _: &str) -> Result<GuardSession, GuardRejection> {
            Err(GuardRejection::InvalidCredentials("unused".into()))
        }
    }

    fn exit(name: &str) -> Exit<str> {
        Exit {
            name: name.into(),
            port: Arc::from(name),
        }
    }

    fn route(when: Vec<u16>, roles: &[&str], to: &str) -> Route<u16, str> {
        let guarded = if roles.is_empty() {
            vec![]
        } else {
            vec![GuardRequirement {
                guard_name: "g".into(),
                guard: Arc::new(RoleGuard),
                roles: roles.iter().map(|r| r.to_string()).collect(),
            }]
        };
        Route {
            when,
            guarded,
            exit: exit(to),
            with: None,
        }
    }

    fn resolve<'a>(
        routes: &'a Routes<u16, str>,
        port: u16,
        authz: &Authorizations,
    ) -> Option<&'a str> {
        routes.resolve(authz, |p| *p == port).map(|r| &*r.exit.name)
    }

    #[test]
    fn first_match_wins_and_any_condition_matches() {
        let routes = Routes::new(
            vec![route(vec![1, 2], &[], "a"), route(vec![2], &[], "b")],
            None,
        );
        let none = Authorizations::new();
        assert_eq!(resolve(&routes, 2, &none), Some("a"));
        assert_eq!(resolve(&routes, 1, &none), Some("a"));
        assert_eq!(resolve(&routes, 3, &none), None);
    }

    #[test]
    fn failed_guard_falls_through_then_default_exit() {
        let routes = Routes::new(
            vec![
                route(vec![], &["admin"], "admin"),
                route(vec![7], &["user"], "user"),
            ],
            Some(exit("default")),
        );
        let mut authz = Authorizations::new();
        authz.insert(
            "g",
            GuardSession {
                roles: vec!["user".into()],
                ..GuardSession::default()
            },
        );
        assert_eq!(resolve(&routes, 7, &authz), Some("user"));
        assert_eq!(resolve(&routes, 8, &authz), Some("default"));
        assert_eq!(resolve(&routes, 7, &Authorizations::new()), Some("default"));
    }
}
