//! The Kubernetes manifests (`deploy/kubernetes`) as kubectl renders them,
//! for the tests that check them offline and run their pods on Docker.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Every kustomization to check: the base and each overlay, by name.
pub fn kustomizations() -> Vec<(String, PathBuf)> {
    let deploy = root().join("deploy/kubernetes");
    let mut all = vec![("base".to_owned(), deploy.join("base"))];
    let mut overlays: Vec<(String, PathBuf)> = std::fs::read_dir(deploy.join("overlays"))
        .expect("deploy/kubernetes/overlays")
        .map(|entry| entry.expect("overlay").path())
        .filter(|path| path.join("kustomization.yaml").is_file())
        .map(|path| {
            let name = path
                .file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            (name, path)
        })
        .collect();
    overlays.sort();
    assert!(
        overlays.iter().any(|(name, _)| name == "laptop"),
        "the laptop overlay is missing"
    );
    all.extend(overlays);
    all
}

/// The kubectl binaries to render with: `AUTHMESH_TEST_KUBECTLS` (paths, `:`
/// between them), else `kubectl` on PATH; `None` when the test is skipped.
pub fn kubectls() -> Option<Vec<PathBuf>> {
    if let Some(paths) = std::env::var_os("AUTHMESH_TEST_KUBECTLS") {
        let kubectls: Vec<PathBuf> = std::env::split_paths(&paths).collect();
        for kubectl in &kubectls {
            assert!(
                kubectl.is_file(),
                "AUTHMESH_TEST_KUBECTLS names {}, which does not exist",
                kubectl.display()
            );
        }
        return Some(kubectls);
    }
    crate::tool("kubectl", "apt-get install kubernetes-client").map(|k| vec![k])
}

/// Runs a command that must succeed and returns its standard output.
pub fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Every document of a YAML stream.
pub fn parse_yaml(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text).expect("valid YAML")
}

/// One kustomization as kubectl renders it: its YAML and its objects.
pub struct Rendered {
    /// `base`, or the overlay's directory name.
    pub name: String,
    /// As kubectl printed it.
    pub yaml: String,
    /// Every object, sorted by kind and name.
    pub objects: Vec<Value>,
}

impl Rendered {
    /// The object of `kind` named `name`.
    pub fn object(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{}: no {kind} {name}", self.name))
    }

    /// Every object of `kind`.
    pub fn all(&self, kind: &str) -> impl Iterator<Item = &Value> {
        self.objects.iter().filter(move |o| o["kind"] == kind)
    }
}

/// Renders every kustomization with every kubectl, asserting that they all
/// agree; `None` when the test is skipped.
pub fn render_all() -> Option<Vec<Rendered>> {
    let kubectls = kubectls()?;
    let mut rendered = Vec::new();
    for (name, dir) in kustomizations() {
        let mut first: Option<(String, Vec<Value>)> = None;
        for kubectl in &kubectls {
            let yaml = run(Command::new(kubectl).arg("kustomize").arg(&dir));
            let mut objects = parse_yaml(&yaml);
            objects.sort_by_key(|o| {
                (
                    o["kind"].as_str().unwrap_or_default().to_owned(),
                    o["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            });
            match &first {
                None => first = Some((yaml, objects)),
                Some((_, expected)) => assert_eq!(
                    &objects,
                    expected,
                    "{name}: {} renders other objects than {}",
                    kubectl.display(),
                    kubectls[0].display()
                ),
            }
        }
        let (yaml, objects) = first.expect("at least one kubectl");
        assert!(!objects.is_empty(), "{name} renders nothing");
        rendered.push(Rendered {
            name,
            yaml,
            objects,
        });
    }
    Some(rendered)
}
