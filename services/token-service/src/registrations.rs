//! Workloads registered at run time (`authmesh workload add`): their shape
//! checks, their wire form, and the file that keeps them with the files
//! store. (With the etcd store they live in etcd; see `store`.)

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use authmesh_proto::authmesh::v1::{ScopeList, Workload};
use serde::{Deserialize, Serialize};

use crate::{config::ClientConfig, credentials::ClientOrigin, error::IssueError};

/// Longest workload id.
const MAX_ID_BYTES: usize = 64;

/// Longest SPIFFE ID (the SPIFFE spec's limit).
const MAX_SPIFFE_ID_BYTES: usize = 2048;

/// Checks the shape of a workload sent to `AddWorkload` and turns it into
/// a client entry. What depends on the issuer's state (audiences, policies,
/// ids taken) is [`crate::Issuer::check_registration`].
///
/// # Errors
/// [`IssueError::InvalidWorkload`] saying what is malformed.
pub fn from_wire(workload: Workload) -> Result<ClientConfig, IssueError> {
    let invalid = |detail: &str| Err(IssueError::InvalidWorkload(detail.to_owned()));
    let id_ok = !workload.id.is_empty()
        && workload.id.len() <= MAX_ID_BYTES
        && workload
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !id_ok {
        return invalid("id must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'");
    }
    let spiffe_id = Some(workload.spiffe_id).filter(|s| !s.is_empty());
    if let Some(spiffe_id) = &spiffe_id {
        let ok = spiffe_id.len() <= MAX_SPIFFE_ID_BYTES
            && spiffe_id
                .strip_prefix("spiffe://")
                .is_some_and(|rest| rest.contains('/') && !rest.starts_with('/'))
            && spiffe_id.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return invalid("spiffe_id must look like spiffe://<trust-domain>/<path>");
        }
    }
    let secret_hash = Some(workload.secret_hash).filter(|s| !s.is_empty());
    if let Some(hash) = &secret_hash
        && crate::credentials::check_secret_hash(hash).is_err()
    {
        return invalid("secret_hash must be an argon2id PHC string (authmesh hash-secret)");
    }
    if spiffe_id.is_none() && secret_hash.is_none() {
        return invalid("give a spiffe_id (certificate), a secret_hash, or both");
    }
    if workload.audiences.is_empty() {
        return invalid("name at least one audience and its scopes");
    }
    let mut audiences = BTreeMap::new();
    for (audience, scopes) in workload.audiences {
        let malformed =
            |s: &str| s.is_empty() || s.len() > 256 || !s.bytes().all(|b| b.is_ascii_graphic());
        if malformed(&audience)
            || scopes.scopes.is_empty()
            || scopes.scopes.iter().any(|s| malformed(s))
        {
            return invalid(
                "each audience needs at least one scope; audiences and scopes are printable, without spaces",
            );
        }
        let mut scopes = scopes.scopes;
        scopes.sort();
        scopes.dedup();
        audiences.insert(audience, scopes);
    }
    Ok(ClientConfig {
        id: workload.id,
        secret_hash,
        spiffe_id,
        max_ttl_seconds: Some(workload.max_ttl_seconds).filter(|t| *t > 0),
        audiences,
        may_revoke: false,
    })
}

/// A registered client as `ListWorkloads` shows it (never its secret hash).
pub fn to_wire(client: &crate::credentials::RegisteredClient) -> Workload {
    Workload {
        id: client.id.clone(),
        spiffe_id: client.spiffe_id.clone().unwrap_or_default(),
        secret_hash: String::new(),
        audiences: client
            .audiences
            .iter()
            .map(|(aud, scopes)| {
                let scopes = scopes.iter().cloned().collect();
                (aud.clone(), ScopeList { scopes })
            })
            .collect(),
        max_ttl_seconds: client.max_ttl_seconds,
        origin: match client.origin {
            ClientOrigin::File => "file",
            ClientOrigin::Registered => "registered",
        }
        .into(),
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadsDocument {
    workloads: Vec<ClientConfig>,
}

/// `workloads.json`: the files store's run-time registrations, written
/// whole through a rename under a lock, so replicas sharing the directory
/// take turns and each follows what the others wrote.
#[derive(Debug, Clone)]
pub struct WorkloadsFile {
    path: PathBuf,
}

impl WorkloadsFile {
    /// The file at `path` (missing means none registered yet).
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every workload in the file.
    ///
    /// # Errors
    /// A description when it exists but cannot be read or parsed.
    pub fn read(&self) -> Result<Vec<ClientConfig>, String> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => serde_json::from_str::<WorkloadsDocument>(&text)
                .map(|d| d.workloads)
                .map_err(|e| format!("{}: {e}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(format!("{}: {e}", self.path.display())),
        }
    }

    /// Applies `change` to the registrations under the lock and writes them;
    /// nothing is written when `change` refuses.
    ///
    /// # Errors
    /// `change`'s error, or [`IssueError::StoreUnavailable`] when the file
    /// cannot be read or written (nothing changed then).
    pub fn update(
        &self,
        change: impl FnOnce(&mut Vec<ClientConfig>) -> Result<(), IssueError>,
    ) -> Result<Vec<ClientConfig>, IssueError> {
        let unavailable = |detail: String| {
            tracing::error!(%detail, "workloads file not written; nothing changed");
            IssueError::StoreUnavailable(format!("workloads file: {detail}"))
        };
        let _turn = service_runtime::files::lock_beside(&self.path)
            .map_err(|e| unavailable(e.to_string()))?;
        let mut workloads = self.read().map_err(unavailable)?;
        change(&mut workloads)?;
        let text = serde_json::to_vec_pretty(&WorkloadsDocument {
            workloads: workloads.clone(),
        })
        .map_err(|e| unavailable(e.to_string()))?;
        service_runtime::files::write_public(&self.path, &text)
            .map_err(|e| unavailable(e.to_string()))?;
        Ok(workloads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload() -> Workload {
        Workload {
            id: "billing".into(),
            spiffe_id: "spiffe://authmesh.local/billing".into(),
            audiences: [(
                "inventory".to_owned(),
                ScopeList {
                    scopes: vec!["inventory.read".into()],
                },
            )]
            .into(),
            ..Workload::default()
        }
    }

    #[test]
    fn malformed_workloads_are_refused_with_the_reason() {
        assert!(from_wire(workload()).is_ok());
        type Case = (fn(&mut Workload), &'static str);
        let cases: [Case; 7] = [
            (|w| w.id = "has space".into(), "id must be"),
            (|w| w.id = "x".repeat(65), "id must be"),
            (|w| w.spiffe_id = "https://billing".into(), "spiffe_id must"),
            (|w| w.spiffe_id = String::new(), "give a spiffe_id"),
            (|w| w.secret_hash = "plaintext-secret".into(), "argon2id"),
            (|w| w.audiences.clear(), "at least one audience"),
            (
                |w| {
                    w.audiences.insert("orders".into(), ScopeList::default());
                },
                "at least one scope",
            ),
        ];
        for (change, expected) in cases {
            let mut bad = workload();
            change(&mut bad);
            let err = from_wire(bad).expect_err(expected);
            assert!(matches!(err, IssueError::InvalidWorkload(_)));
            assert!(err.to_string().contains(expected), "{err}");
            assert!(!err.to_string().contains("plaintext-secret"), "{err}");
        }
    }

    #[test]
    fn the_file_changes_only_when_the_change_is_accepted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = WorkloadsFile::new(dir.path().join("workloads.json"));
        assert!(file.read().expect("missing is empty").is_empty());
        let billing = from_wire(workload()).expect("valid");
        file.update(|w| {
            w.push(billing.clone());
            Ok(())
        })
        .expect("added");
        let refused = file.update(|w| {
            w.clear();
            Err(IssueError::WorkloadConflict("no".into()))
        });
        assert!(refused.is_err());
        assert_eq!(file.read().expect("read"), vec![billing]);
    }
}
