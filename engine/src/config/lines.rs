//! Where each value of a YAML document starts, so config errors can name a line.
//!
//! `serde_yaml::Value` keeps no positions, so the source text is walked once more
//! with a marked event parser and every node's path (`bindings.tcp0.options.port`,
//! `bindings.tcp0.routes[1].exit`) is mapped to its 1-based line.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Lines of the nodes of one YAML document, keyed by their dotted path.
#[derive(Debug, Clone, Default)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    /// Indexes `source`; a document the parser cannot read yields an empty index
    /// (the syntax error itself is reported by the deserializer, with its line).
    pub fn new(source: &str) -> Self {
        let mut walker = Walker::default();
        let mut parser = Parser::new_from_str(source);
        if parser.load(&mut walker, false).is_err() {
            return Self::default();
        }
        Self {
            lines: walker.lines,
        }
    }

    /// The line of `path`, or of its nearest ancestor that has one.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return Some(*line);
            }
            path = parent(path)?;
        }
    }
}

/// `a.b[2].c` -> `a.b[2]` -> `a.b` -> `a` -> None.
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    match path.rfind(['.', '[']) {
        Some(at) => Some(&path[..at]),
        None => Some(""),
    }
}

/// A container being walked: a mapping waiting for a key or for the key's value,
/// or a sequence counting its items.
#[derive(Debug)]
enum Frame {
    Mapping { path: String, key: Option<String> },
    Sequence { path: String, next: usize },
}

#[derive(Debug, Default)]
struct Walker {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
}

impl Walker {
    /// The path of the node that starts now, or `None` when the event is a key.
    fn next_node_path(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Sequence { path, next }) => {
                let item = format!("{path}[{next}]");
                *next += 1;
                Some(item)
            }
            Some(Frame::Mapping { path, key }) => key.take().map(|key| join(path, &key)),
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(value, ..) => {
                let expecting_key =
                    matches!(self.stack.last(), Some(Frame::Mapping { key: None, .. }));
                if expecting_key {
                    if let Some(Frame::Mapping { path, key }) = self.stack.last_mut() {
                        self.lines.insert(join(path, &value), mark.line());
                        *key = Some(value);
                    }
                } else if let Some(path) = self.next_node_path() {
                    self.lines.entry(path).or_insert(mark.line());
                }
            }
            Event::Alias(_) => {
                self.next_node_path();
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // A complex key (rare in configs) has no path of its own.
                let path = self.next_node_path().unwrap_or_default();
                self.lines.entry(path.clone()).or_insert(mark.line());
                self.stack
                    .push(if matches!(event, Event::MappingStart(..)) {
                        Frame::Mapping { path, key: None }
                    } else {
                        Frame::Sequence { path, next: 0 }
                    });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_paths_to_lines() {
        let index = LineIndex::new(
            "name: x\nbindings:\n  tcp0:\n    type: tcp\n    options:\n      port:\n        - 1\n        - 2\n    routes:\n      - exit: a\n      - when:\n          - port: 2\n        exit: b\n",
        );
        assert_eq!(index.line_of("name"), Some(1));
        assert_eq!(index.line_of("bindings.tcp0.type"), Some(4));
        assert_eq!(index.line_of("bindings.tcp0.options.port[1]"), Some(8));
        assert_eq!(index.line_of("bindings.tcp0.routes[0].exit"), Some(10));
        assert_eq!(
            index.line_of("bindings.tcp0.routes[1].when[0].port"),
            Some(12)
        );
        assert_eq!(index.line_of("bindings.tcp0.routes[1].exit"), Some(13));
        // Unknown leaves fall back to their nearest known ancestor.
        assert_eq!(index.line_of("bindings.tcp0.options.nope"), Some(5));
    }
}
