//! Operation routing: `when: [{api-id, operation-id}]` routes of an asyncapi
//! server or proxy become the generated mqtt server's publish and subscribe
//! routes, one per operation, each toward the exit that serves it.

use indexmap::IndexMap;
use serde::Deserialize;
use zilla_engine::config::RouteConfig;
use zilla_engine::{BuildError, PluginContext};

use crate::spec::{Action, Operation, Spec};

/// `{api-id, operation-id}`: a document (by its label in `options.specs`)
/// and optionally one of its operations.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct OperationSelector {
    api_id: String,
    #[serde(default)]
    operation_id: Option<String>,
}

/// A generated mqtt server route: its conditions (mqtt `publish` /
/// `subscribe` topics) and its exit.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OperationRoute {
    pub(crate) when: Vec<serde_json::Value>,
    pub(crate) exit: String,
    /// The route's own `guarded` (guard -> roles), when it has one.
    pub(crate) guarded: IndexMap<String, Vec<String>>,
}

/// The mqtt route condition that lets clients do `operation`.
pub(crate) fn mqtt_condition(spec: &Spec, operation: &Operation) -> serde_json::Value {
    let topic = spec
        .channel(&operation.channel)
        .map(|c| c.topic.as_str())
        .unwrap_or_default();
    match operation.action {
        Action::Publish => serde_json::json!({ "publish": [{ "topic": topic }] }),
        Action::Subscribe => serde_json::json!({ "subscribe": [{ "topic": topic }] }),
    }
}

/// Every operation of every document, toward `exit`.
pub(crate) fn all_operations(specs: &IndexMap<String, Spec>, exit: &str) -> Option<OperationRoute> {
    let when: Vec<_> = specs
        .values()
        .flat_map(|spec| {
            spec.operations
                .iter()
                .map(move |op| mqtt_condition(spec, op))
        })
        .collect();
    (!when.is_empty()).then(|| OperationRoute {
        when,
        exit: exit.to_owned(),
        guarded: IndexMap::new(),
    })
}

fn selector(
    cx: &mut PluginContext<'_>,
    value: &serde_yaml::Value,
    path: &str,
) -> Result<OperationSelector, BuildError> {
    serde_yaml::from_value(value.clone())
        .map_err(|e| cx.error(path, format!("expected {{api-id, operation-id}}: {e}")))
}

fn labelled<'s>(
    cx: &mut PluginContext<'_>,
    specs: &'s IndexMap<String, Spec>,
    label: &str,
    path: &str,
) -> Result<&'s Spec, BuildError> {
    specs.get(label).ok_or_else(|| {
        let labels: Vec<_> = specs.keys().map(|l| format!("`{l}`")).collect();
        cx.error(
            path,
            format!(
                "no document labelled `{label}` in options.specs (labels: {})",
                labels.join(", ")
            ),
        )
    })
}

fn operation<'s>(
    cx: &mut PluginContext<'_>,
    spec: &'s Spec,
    label: &str,
    id: &str,
    path: &str,
) -> Result<&'s Operation, BuildError> {
    spec.operation(id).ok_or_else(|| {
        let ids: Vec<_> = spec
            .operations
            .iter()
            .filter_map(|o| o.id.as_deref())
            .map(|id| format!("`{id}`"))
            .collect();
        cx.error(
            path,
            format!(
                "document `{label}` has no operation `{id}` (its operations: {})",
                ids.join(", ")
            ),
        )
    })
}

/// Resolves `routes` (relative paths `routes[i]...` in `cx`) against the
/// documents `specs`, then sends whatever no route matched to
/// `default_exit`. A route's `with` names the operation of another document
/// that the exit serves; it must act the same way on the same topic, since
/// the generated mqtt routes forward topics unchanged.
pub(crate) fn operation_routes(
    cx: &mut PluginContext<'_>,
    routes: &[RouteConfig],
    default_exit: Option<&str>,
    specs: &IndexMap<String, Spec>,
) -> Result<Vec<OperationRoute>, BuildError> {
    let mut generated = Vec::new();
    for (index, route) in routes.iter().enumerate() {
        let path = format!("routes[{index}]");
        let mut selected: Vec<(&str, &Spec, &Operation)> = Vec::new();
        if route.when.is_empty() {
            for (label, spec) in specs {
                selected.extend(spec.operations.iter().map(|op| (label.as_str(), spec, op)));
            }
        }
        for (position, condition) in route.when.iter().enumerate() {
            let condition_path = format!("{path}.when[{position}]");
            let wanted = selector(cx, condition, &condition_path)?;
            let spec = labelled(
                cx,
                specs,
                &wanted.api_id,
                &format!("{condition_path}.api-id"),
            )?;
            let label = specs.get_key_value(&wanted.api_id).map(|(l, _)| l.as_str());
            let label = label.unwrap_or_default();
            match &wanted.operation_id {
                Some(id) => {
                    let op = operation(
                        cx,
                        spec,
                        label,
                        id,
                        &format!("{condition_path}.operation-id"),
                    )?;
                    selected.push((label, spec, op));
                }
                None => selected.extend(spec.operations.iter().map(|op| (label, spec, op))),
            }
        }
        if let Some(with) = &route.with {
            let with_path = format!("{path}.with");
            let target = selector(cx, with, &with_path)?;
            let target_spec = labelled(cx, specs, &target.api_id, &format!("{with_path}.api-id"))?;
            for (label, spec, op) in &selected {
                let source_topic = spec.channel(&op.channel).map(|c| c.topic.as_str());
                let wanted_id = target.operation_id.as_deref().or(op.id.as_deref());
                let Some(wanted_id) = wanted_id else {
                    return Err(cx.error(
                        &format!("{with_path}.operation-id"),
                        format!(
                            "an operation on channel `{}` of `{label}` has no id: name the target operation",
                            op.channel
                        ),
                    ));
                };
                let target_op = operation(
                    cx,
                    target_spec,
                    &target.api_id,
                    wanted_id,
                    &format!("{with_path}.operation-id"),
                )?;
                let target_topic = target_spec
                    .channel(&target_op.channel)
                    .map(|c| c.topic.as_str());
                if target_op.action != op.action {
                    return Err(cx.error(
                        &with_path,
                        format!(
                            "`{}` of `{label}` lets clients {} but `{wanted_id}` of `{}` {}",
                            op.id.as_deref().unwrap_or(&op.channel),
                            op.action,
                            target.api_id,
                            target_op.action
                        ),
                    ));
                }
                if target_topic != source_topic {
                    return Err(cx.error(
                        &with_path,
                        format!(
                            "`{}` of `{label}` is on `{}` but `{wanted_id}` of `{}` on `{}`: topics are forwarded unchanged, so the channels must have the same address",
                            op.id.as_deref().unwrap_or(&op.channel),
                            source_topic.unwrap_or_default(),
                            target.api_id,
                            target_topic.unwrap_or_default()
                        ),
                    ));
                }
            }
        }
        let when: Vec<_> = selected
            .iter()
            .map(|(_, spec, op)| mqtt_condition(spec, op))
            .collect();
        generated.push(OperationRoute {
            when,
            exit: route.exit.clone(),
            guarded: route.guarded.clone(),
        });
    }
    if let Some(exit) = default_exit {
        generated.extend(all_operations(specs, exit));
    }
    Ok(generated)
}
