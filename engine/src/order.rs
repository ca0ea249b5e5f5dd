//! The order bindings are built in: each after its exits, so that a binding
//! can ask for its exits as the ports it needs. Exits that name no binding,
//! and exit cycles, are reported here, with the path of each offending exit.

use std::collections::HashMap;

use indexmap::IndexMap;

use crate::config::{quoted_list, BindingConfig};
use crate::context::BuildState;

/// Orders bindings so each comes after its exits; reports exits that name no
/// binding and exit cycles.
pub(crate) fn binding_order(
    bindings: &IndexMap<String, BindingConfig>,
    state: &mut BuildState,
) -> Vec<String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
        Broken,
    }

    fn exits(entry: &BindingConfig) -> Vec<(String, &str)> {
        let mut exits: Vec<(String, &str)> = entry
            .routes
            .iter()
            .enumerate()
            .map(|(index, route)| (format!("routes[{index}].exit"), route.exit.as_str()))
            .collect();
        if let Some(exit) = &entry.exit {
            exits.push(("exit".to_owned(), exit.as_str()));
        }
        exits
    }

    fn visit(
        name: &str,
        bindings: &IndexMap<String, BindingConfig>,
        marks: &mut HashMap<String, Mark>,
        stack: &mut Vec<String>,
        order: &mut Vec<String>,
        state: &mut BuildState,
    ) -> Mark {
        match marks.get(name) {
            Some(Mark::Visiting) => return Mark::Visiting,
            Some(done) => return *done,
            None => {}
        }
        marks.insert(name.to_owned(), Mark::Visiting);
        stack.push(name.to_owned());
        let mut result = Mark::Done;
        for (relative, exit) in exits(&bindings[name]) {
            let path = format!("bindings.{name}.{relative}");
            if !bindings.contains_key(exit) {
                let known: Vec<_> = bindings.keys().collect();
                state.record(
                    path,
                    format!(
                        "exit `{exit}` is not a binding; the bindings are {}",
                        quoted_list(&known)
                    ),
                );
                result = Mark::Broken;
                continue;
            }
            match visit(exit, bindings, marks, stack, order, state) {
                Mark::Visiting => {
                    let start = stack.iter().position(|n| n == exit).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(exit.to_owned());
                    state.record(path, format!("exit cycle: {}", cycle.join(" -> ")));
                    result = Mark::Broken;
                }
                Mark::Broken => result = Mark::Broken,
                Mark::Done => {}
            }
        }
        stack.pop();
        marks.insert(name.to_owned(), result);
        // Broken bindings are still built, so their other problems are reported
        // too; their missing exits fail quietly, having been reported here.
        order.push(name.to_owned());
        result
    }

    let mut marks = HashMap::new();
    let mut order = Vec::new();
    for name in bindings.keys() {
        let mut stack = Vec::new();
        visit(name, bindings, &mut marks, &mut stack, &mut order, state);
    }
    order
}
