//! A service's authorization policy as a server runs it: where it comes
//! from (its file, or the built-in rules), the start-up check that it
//! covers every method, and hot reload of the file.

use std::path::{Path, PathBuf};

use auth_interceptor::{MethodPolicy, SharedPolicy};

use crate::{
    config::AuthConfig,
    error::{ConfigProblem, RuntimeError},
    file_watch::{WatchedFiles, poll},
    task::BackgroundTask,
};

/// How often a policy file is checked for changes (changes apply within 2 s).
const POLICY_RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// A service's policy and where it came from.
#[derive(Debug)]
pub struct PolicySource {
    /// The policy to start with.
    pub policy: MethodPolicy,
    /// The file it was read from, watched for changes while serving.
    pub file: Option<PolicyFile>,
    /// Whether uncovered methods stop the server (and reject a reloaded file).
    pub strict: bool,
}

impl PolicySource {
    /// The policy `auth` asks for: its `policy_file` (relative to `dir`)
    /// when one is configured, else `built_in` with reflection public as
    /// configured.
    ///
    /// # Errors
    /// [`RuntimeError::Config`] for an unreadable or invalid policy file.
    pub fn from_config(
        auth: &AuthConfig,
        dir: &Path,
        built_in: MethodPolicy,
    ) -> Result<Self, RuntimeError> {
        match &auth.policy_file {
            Some(file) => Self::from_file(dir.join(file), auth.strict_policy),
            None => Ok(Self {
                policy: built_in.public_reflection(auth.public_reflection),
                file: None,
                strict: auth.strict_policy,
            }),
        }
    }

    /// The policy in `path`, to be watched for changes.
    ///
    /// # Errors
    /// [`RuntimeError::Config`] for an unreadable or invalid policy file.
    pub fn from_file(path: PathBuf, strict: bool) -> Result<Self, RuntimeError> {
        // Stamped before reading: an edit made meanwhile is seen by the watch.
        let loaded = WatchedFiles::new(vec![path.clone()]);
        Ok(Self {
            policy: load_policy(&path)?,
            file: Some(PolicyFile { path, loaded }),
            strict,
        })
    }
}

/// A policy file and how it looked when it was read.
#[derive(Debug)]
pub struct PolicyFile {
    path: PathBuf,
    loaded: WatchedFiles,
}

impl PolicyFile {
    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads and parses a policy file.
///
/// # Errors
/// [`RuntimeError::Config`] naming the file and the problem.
pub fn load_policy(path: &Path) -> Result<MethodPolicy, RuntimeError> {
    let text = crate::files::read_to_string(path)?;
    MethodPolicy::from_toml(&text).map_err(|e| RuntimeError::Config {
        origin: path.display().to_string(),
        problem: e.into(),
    })
}

/// Watches `file` and puts each valid new version in force; an invalid one
/// (does not parse, or `validate` refuses it) is logged and the policy in
/// force stays, and it is tried again until it loads. Stops when the
/// returned task is dropped.
pub fn watch_policy_file(
    file: PolicyFile,
    shared: SharedPolicy,
    validate: impl Fn(&MethodPolicy) -> Result<(), RuntimeError> + Send + 'static,
) -> BackgroundTask {
    poll("policy file", POLICY_RELOAD_INTERVAL, move || {
        let reloaded = file.loaded.reload_if_changed(|| {
            let policy = load_policy(&file.path)?;
            validate(&policy)?;
            shared.replace(policy);
            Ok::<_, RuntimeError>(())
        })?;
        if reloaded.is_some() {
            tracing::info!(file = %file.path.display(), "policy reloaded");
        }
        Ok::<_, RuntimeError>(())
    })
}

/// Every method of the gRPC service `service` (`package.Service`), as exact
/// paths, from the descriptor set the crate embeds for reflection.
pub fn service_methods(service: &str) -> Vec<String> {
    use prost::Message;
    let Ok(set) = prost_types::FileDescriptorSet::decode(authmesh_proto::FILE_DESCRIPTOR_SET)
    else {
        return Vec::new();
    };
    set.file
        .iter()
        .flat_map(|file| {
            let package = file.package().to_owned();
            file.service.iter().filter_map(move |svc| {
                let full = if package.is_empty() {
                    svc.name().to_owned()
                } else {
                    format!("{package}.{}", svc.name())
                };
                (full == service).then(|| {
                    svc.method
                        .iter()
                        .map(move |m| format!("/{full}/{}", m.name()))
                })
            })
        })
        .flatten()
        .collect()
}

/// Checks that `policy` covers every method of `service`: uncovered methods
/// are logged (they stay denied); in strict mode the server refuses to start.
///
/// # Errors
/// [`RuntimeError::Config`] in strict mode when a method is uncovered.
pub fn check_coverage(
    policy: &MethodPolicy,
    service: &str,
    strict: bool,
) -> Result<(), RuntimeError> {
    let methods = service_methods(service);
    let uncovered = policy.uncovered(methods.iter().map(String::as_str));
    for method in &uncovered {
        tracing::error!(%method, "no policy rule covers this method: it is denied to every caller");
    }
    if strict && !uncovered.is_empty() {
        return Err(RuntimeError::Config {
            origin: "policy".into(),
            problem: ConfigProblem::Uncovered {
                methods: uncovered.into_iter().map(str::to_owned).collect(),
            },
        });
    }
    Ok(())
}
