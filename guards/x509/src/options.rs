//! `options` of an x509 guard, and their checks.

use std::fmt;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::fields::{Field, Needs};
use crate::roles::{Condition, Glob, Role};

/// `options` of an x509 guard, in Zilla's shape:
///
/// ```yaml
/// identity: subject.cn
/// attributes:
///   organization: subject.o
/// roles:
///   internal:
///     - issuer.cn: Internal CA
///       subject.ou: Platform
///     - san.dns: "*.internal.example.com"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct X509Options {
    /// The field the session's identity is read from (default `subject.dn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Named attributes and the fields they are read from.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub attributes: IndexMap<String, String>,
    /// Each role and the matches that grant it: a list of alternatives, each
    /// a mapping of field to glob that must all match.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub roles: IndexMap<String, Vec<IndexMap<String, String>>>,
}

/// A fault in [`X509Options`], at a path under `options`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionError {
    /// Where, relative to the guard's `options`
    /// (`roles.internal[0].subject.xx`).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for OptionError {}

/// Options checked and compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Compiled {
    pub(crate) identity: Field,
    pub(crate) attributes: Vec<(String, Field)>,
    pub(crate) roles: Vec<Role>,
    pub(crate) needs: Needs,
}

impl X509Options {
    /// Checks every option, reporting every fault found.
    pub(crate) fn compile(&self) -> Result<Compiled, Vec<OptionError>> {
        let mut errors = Vec::new();
        let mut field = |path: String, name: &str| match Field::parse(name) {
            Ok(field) => Some(field),
            Err(message) => {
                errors.push(OptionError { path, message });
                None
            }
        };
        let identity = match &self.identity {
            Some(name) => field("identity".into(), name),
            None => Some(Field::DEFAULT_IDENTITY),
        };
        let attributes: Vec<Option<(String, Field)>> = self
            .attributes
            .iter()
            .map(|(name, value)| {
                let found = field(format!("attributes.{name}"), value)?;
                Some((name.clone(), found))
            })
            .collect();
        let mut roles = Vec::with_capacity(self.roles.len());
        for (role, alternatives) in &self.roles {
            let mut matches = Vec::with_capacity(alternatives.len());
            for (index, alternative) in alternatives.iter().enumerate() {
                let mut conditions = Vec::with_capacity(alternative.len());
                for (name, glob) in alternative {
                    if let Some(found) = field(format!("roles.{role}[{index}].{name}"), name) {
                        conditions.push(Condition {
                            field: found,
                            glob: Glob::new(glob),
                        });
                    }
                }
                matches.push(conditions);
            }
            roles.push(Role {
                name: role.clone(),
                matches,
            });
        }

        for name in self.attributes.keys() {
            check_name(
                &mut errors,
                format!("attributes.{name}"),
                "an attribute",
                name,
            );
        }
        for (role, alternatives) in &self.roles {
            check_name(&mut errors, format!("roles.{role}"), "a role", role);
            if alternatives.is_empty() {
                errors.push(OptionError {
                    path: format!("roles.{role}"),
                    message: "a role needs at least one match (a mapping of certificate \
                              fields to globs); an empty list would grant it to nobody"
                        .into(),
                });
            }
            for (index, alternative) in alternatives.iter().enumerate() {
                if alternative.is_empty() {
                    errors.push(OptionError {
                        path: format!("roles.{role}[{index}]"),
                        message: "a match needs at least one certificate field".into(),
                    });
                }
            }
        }

        match identity {
            Some(identity) if errors.is_empty() => {
                let attributes: Vec<(String, Field)> = attributes.into_iter().flatten().collect();
                let mut needs = Needs::default();
                needs.add(identity);
                for (_, field) in &attributes {
                    needs.add(*field);
                }
                for condition in roles.iter().flat_map(|role| role.matches.iter().flatten()) {
                    needs.add(condition.field);
                }
                Ok(Compiled {
                    identity,
                    attributes,
                    roles,
                    needs,
                })
            }
            _ => Err(errors),
        }
    }
}

/// Zilla's schema allows attribute and role names matching
/// `^[a-zA-Z]+[a-zA-Z0-9._-]*$` only.
fn check_name(errors: &mut Vec<OptionError>, path: String, what: &str, name: &str) {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid {
        errors.push(OptionError {
            path,
            message: format!(
                "`{name}` is not {what} name Zilla accepts: a letter, then letters, digits, \
                 `.`, `_` or `-`"
            ),
        });
    }
}
