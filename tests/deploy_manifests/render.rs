//! Rendering `deploy/kubernetes` with `kubectl kustomize`, and finding the
//! rendered documents by kind and name.

use std::process::Command;

use serde_yaml::Value;
use zilla_testkit::clients::repo_root;

fn kubectl() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_owned())
}

/// `kubectl kustomize deploy/kubernetes`, one value per document.
pub(crate) fn render() -> Vec<Value> {
    let kubectl = kubectl();
    let output = Command::new(&kubectl)
        .arg("kustomize")
        .arg(repo_root().join("deploy/kubernetes"))
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run `{kubectl}` ({error}): these tests render deploy/kubernetes with \
                 `kubectl kustomize`; `bash .ci/run` installs kubectl (apt-get install kubernetes-client)"
            )
        });
    assert!(
        output.status.success(),
        "`{kubectl} kustomize deploy/kubernetes` failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("kustomize writes UTF-8");
    // Documents are separated by `---` lines; a `---` inside a block scalar
    // (the ConfigMap's zilla.yaml) is indented, so it is not one of them.
    let mut documents = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line == "---" {
            documents.push(std::mem::take(&mut current));
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    documents.push(current);
    documents
        .iter()
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml::from_str(d).unwrap_or_else(|e| panic!("{e}:\n{d}")))
        .collect()
}

pub(crate) fn of_kind<'a>(documents: &'a [Value], kind: &str) -> Vec<&'a Value> {
    documents
        .iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

pub(crate) fn one_of_kind<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(documents, kind);
    assert_eq!(
        found.len(),
        1,
        "expected one {kind} in the rendered manifests"
    );
    found[0]
}

pub(crate) fn named<'a>(documents: &'a [Value], kind: &str, name: &str) -> &'a Value {
    of_kind(documents, kind)
        .into_iter()
        .find(|d| d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} named {name} in the rendered manifests"))
}
