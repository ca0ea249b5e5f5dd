//! The `Containerfile`, parsed into stages and instructions, enough to check
//! what the image runs against what the Deployment expects.

const INSTRUCTIONS: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
    "MAINTAINER",
];

#[derive(Debug, Default)]
pub(crate) struct Stage {
    pub(crate) name: Option<String>,
    instructions: Vec<(String, String)>,
}

/// The stages of a Containerfile, each with its instructions (continuation
/// lines joined, comments dropped); panics on anything a builder would refuse
/// that is cheap to see here.
pub(crate) fn parse_containerfile(text: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    assert!(
        current.is_empty(),
        "the Containerfile ends inside a continued line"
    );
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let instruction = word.to_ascii_uppercase();
        assert!(
            INSTRUCTIONS.contains(&instruction.as_str()),
            "unknown instruction `{word}` in `{line}`"
        );
        let rest = rest.trim().to_owned();
        if instruction == "FROM" {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let name = match words.as_slice() {
                [_image] => None,
                [_image, as_, name] if as_.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
                _ => panic!("FROM takes an image and an optional `AS name`: `{line}`"),
            };
            stages.push(Stage {
                name,
                instructions: Vec::new(),
            });
        }
        let stage = stages
            .last_mut()
            .expect("the Containerfile starts with FROM");
        stage.instructions.push((instruction, rest));
    }
    stages
}

impl Stage {
    pub(crate) fn all(&self, instruction: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|(i, _)| i == instruction)
            .map(|(_, rest)| rest.as_str())
            .collect()
    }

    /// The last `instruction` in exec (JSON) form.
    pub(crate) fn exec(&self, instruction: &str) -> Vec<String> {
        let all = self.all(instruction);
        let last = all
            .last()
            .unwrap_or_else(|| panic!("the image has no {instruction}"));
        serde_json::from_str(last).unwrap_or_else(|_| {
            panic!(
                "{instruction} `{last}` is not in exec form: in shell form /bin/sh is PID 1 and \
                 SIGTERM never reaches zilla, so it would not drain (and the runtime image has no shell)"
            )
        })
    }
}
