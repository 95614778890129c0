//! The issuer's list of revocations: persisted to one JSON file (written
//! whole, through a rename, before a revocation counts), and broadcast to
//! every `WatchRevocations` stream the moment it is made.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use auth_interceptor::{Revocation, RevokedTarget, SharedClock};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::{
    config::MAX_TTL_CEILING_SECONDS,
    error::{IssueError, StartError},
};

/// Most revocations held at once (each is forgotten when its tokens have expired).
pub const MAX_REVOCATIONS: usize = 100_000;

/// Longest `reason` kept with a revocation.
pub const MAX_REASON_BYTES: usize = 256;

/// Revocations are kept (and sent) this long after their tokens expired:
/// verifiers accept a token until `exp` plus their leeway, at most this much.
const RETENTION_GRACE_SECONDS: u64 = auth_interceptor::verifier::MAX_LEEWAY_SECONDS;

/// Whether `revocation` may still matter to some verifier at `now`.
fn in_force(revocation: &Revocation, now: u64) -> bool {
    revocation
        .expires_at
        .saturating_add(RETENTION_GRACE_SECONDS)
        >= now
}

/// A revocation as stored on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    issued_before: Option<u64>,
    expires_at: u64,
    revoked_at: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    reason: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredFile {
    revocations: Vec<Stored>,
}

/// One revocation as the store keeps it: the public part and why.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    revocation: Revocation,
    reason: String,
}

impl Entry {
    fn key(&self) -> RevocationKey {
        match &self.revocation.target {
            RevokedTarget::Token(jti) => RevocationKey::Token(jti.clone()),
            RevokedTarget::Subject { sub, .. } => RevocationKey::Subject(sub.clone()),
        }
    }

    fn to_stored(&self) -> Stored {
        let r = &self.revocation;
        let (jti, sub, issued_before) = match &r.target {
            RevokedTarget::Token(jti) => (Some(jti.clone()), None, None),
            RevokedTarget::Subject { sub, issued_before } => {
                (None, Some(sub.clone()), Some(*issued_before))
            }
        };
        Stored {
            jti,
            sub,
            issued_before,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
            reason: self.reason.clone(),
        }
    }

    fn from_stored(stored: Stored) -> Option<Self> {
        let target = match (stored.jti, stored.sub, stored.issued_before) {
            (Some(jti), None, None) => RevokedTarget::Token(jti),
            (None, Some(sub), Some(issued_before)) => RevokedTarget::Subject { sub, issued_before },
            _ => return None,
        };
        Some(Self {
            revocation: Revocation {
                target,
                expires_at: stored.expires_at,
                revoked_at: stored.revoked_at,
            },
            reason: stored.reason,
        })
    }
}

/// A checked revocation, not yet made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRevocation {
    entry: Entry,
}

impl PendingRevocation {
    fn new(revocation: Revocation, reason: &str) -> Result<Self, IssueError> {
        if reason.len() > MAX_REASON_BYTES || reason.chars().any(char::is_control) {
            return Err(IssueError::InvalidRevocation(
                "reason must be at most 256 bytes of printable text",
            ));
        }
        Ok(Self {
            entry: Entry {
                revocation,
                reason: reason.to_owned(),
            },
        })
    }

    /// What it revokes, and until when.
    pub fn revocation(&self) -> &Revocation {
        &self.entry.revocation
    }

    /// Its name in a shared store: one per token, one per subject cutoff
    /// (so two cutoffs of one subject never overwrite each other).
    pub fn store_key(&self) -> String {
        match &self.entry.revocation.target {
            RevokedTarget::Token(jti) => format!("jti/{jti}"),
            RevokedTarget::Subject { sub, issued_before } => format!("sub/{sub}/{issued_before}"),
        }
    }

    /// As stored (the same JSON as one entry of the revocations file).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.entry.to_stored()).unwrap_or_default()
    }

    /// Reads what [`PendingRevocation::to_json`] wrote, checking it as a request would be.
    ///
    /// # Errors
    /// A description of what is malformed.
    pub fn from_json(json: &[u8]) -> Result<Self, String> {
        let stored: Stored = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        let entry = Entry::from_stored(stored)
            .ok_or("an entry must name a jti, or a sub and issued_before")?;
        let id = match &entry.revocation.target {
            RevokedTarget::Token(jti) => jti,
            RevokedTarget::Subject { sub, .. } => sub,
        };
        check_id(id, "id").map_err(|e| e.to_string())?;
        Self::new(entry.revocation, &entry.reason).map_err(|e| e.to_string())
    }
}

/// One token, or one subject (whose latest cutoff wins).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum RevocationKey {
    Token(String),
    Subject(String),
}

/// The revocations in force, their file and their subscribers.
#[derive(Debug)]
pub struct RevocationStore {
    file: PathBuf,
    entries: Mutex<HashMap<RevocationKey, Entry>>,
    events: broadcast::Sender<Arc<[Revocation]>>,
    clock: SharedClock,
}

impl RevocationStore {
    /// Loads `file` (missing means none yet), dropping revocations whose tokens have all expired.
    ///
    /// # Errors
    /// [`StartError::Revocations`] for an unreadable or malformed file: starting
    /// without revocations that were promised would silently undo them.
    pub fn load(file: &Path, clock: SharedClock) -> Result<Self, StartError> {
        let invalid =
            |detail: String| StartError::Revocations(format!("{}: {detail}", file.display()));
        let stored: StoredFile = match std::fs::read_to_string(file) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StoredFile::default(),
            Err(e) => return Err(invalid(e.to_string())),
        };
        let now = clock.now();
        let mut entries = HashMap::new();
        for stored in stored.revocations {
            let entry = Entry::from_stored(stored).ok_or_else(|| {
                invalid("an entry must name a jti, or a sub and issued_before".into())
            })?;
            if in_force(&entry.revocation, now) {
                entries.insert(entry.key(), entry);
            }
        }
        tracing::info!(file = %file.display(), revocations = entries.len(), "revocations loaded");
        Ok(Self {
            file: file.to_path_buf(),
            entries: Mutex::new(entries),
            events: broadcast::channel(1024).0,
            clock,
        })
    }

    /// An empty store kept in memory only: a shared store (etcd) holds the
    /// revocations and this replica learns them ([`RevocationStore::learn`]).
    pub fn in_memory(clock: SharedClock) -> Self {
        Self {
            file: PathBuf::new(),
            entries: Mutex::new(HashMap::new()),
            events: broadcast::channel(1024).0,
            clock,
        }
    }

    /// Revokes the token `jti`. `expires_at` (its `exp`, if the caller knows
    /// it) only decides when the revocation may be forgotten; it is kept
    /// within now and now plus the longest token lifetime.
    ///
    /// # Errors
    /// [`IssueError::InvalidRevocation`] for a bad `jti` or reason, and the
    /// errors of [`RevocationStore::commit`].
    pub fn revoke_token(
        &self,
        jti: &str,
        expires_at: Option<i64>,
        reason: &str,
    ) -> Result<Revocation, IssueError> {
        self.commit(self.prepare_token(jti, expires_at, reason)?)
    }

    /// Checks a revocation of the token `jti` (see [`RevocationStore::revoke_token`])
    /// without making it: a shared store writes it, then every replica learns it.
    ///
    /// # Errors
    /// [`IssueError::InvalidRevocation`] for a bad `jti` or reason.
    pub fn prepare_token(
        &self,
        jti: &str,
        expires_at: Option<i64>,
        reason: &str,
    ) -> Result<PendingRevocation, IssueError> {
        check_id(jti, "jti")?;
        let now = self.clock.now();
        let latest = now + MAX_TTL_CEILING_SECONDS;
        let expires_at = expires_at
            .map_or(latest, |exp| u64::try_from(exp).unwrap_or(0))
            .clamp(now, latest);
        PendingRevocation::new(
            Revocation {
                target: RevokedTarget::Token(jti.to_owned()),
                expires_at,
                revoked_at: now,
            },
            reason,
        )
    }

    /// Revokes every token of `sub` issued at or before `issued_before`
    /// (default: now). Kept until the longest-lived such token has expired.
    ///
    /// # Errors
    /// [`IssueError::InvalidRevocation`] for a bad `sub`, reason or a cutoff
    /// in the future, and the errors of [`RevocationStore::commit`].
    pub fn revoke_subject(
        &self,
        sub: &str,
        issued_before: Option<i64>,
        reason: &str,
    ) -> Result<Revocation, IssueError> {
        self.commit(self.prepare_subject(sub, issued_before, reason)?)
    }

    /// Checks a revocation of the subject `sub` (see [`RevocationStore::revoke_subject`])
    /// without making it.
    ///
    /// # Errors
    /// [`IssueError::InvalidRevocation`] for a bad `sub`, reason or a cutoff in the future.
    pub fn prepare_subject(
        &self,
        sub: &str,
        issued_before: Option<i64>,
        reason: &str,
    ) -> Result<PendingRevocation, IssueError> {
        check_id(sub, "sub")?;
        let now = self.clock.now();
        let issued_before =
            match issued_before {
                None => now,
                Some(t) => u64::try_from(t).ok().filter(|t| *t <= now).ok_or(
                    IssueError::InvalidRevocation(
                        "issued_before must be a past time in Unix seconds",
                    ),
                )?,
            };
        PendingRevocation::new(
            Revocation {
                target: RevokedTarget::Subject {
                    sub: sub.to_owned(),
                    issued_before,
                },
                expires_at: issued_before + MAX_TTL_CEILING_SECONDS,
                revoked_at: now,
            },
            reason,
        )
    }

    /// Persists `pending` in the file with the others, then tells every
    /// watcher. Until the file is written nothing changes, so a failed write
    /// revokes nothing.
    ///
    /// # Errors
    /// [`IssueError::TooManyRevocations`] at [`MAX_REVOCATIONS`],
    /// [`IssueError::RevocationNotPersisted`] when the file cannot be written.
    pub fn commit(&self, pending: PendingRevocation) -> Result<Revocation, IssueError> {
        let now = self.clock.now();
        let entry = pending.entry;
        // Replicas sharing the file take turns: each writes the union of
        // what is on disk (another replica's revocations) and its own.
        let _turn = service_runtime::files::lock_beside(&self.file).map_err(|err| {
            tracing::error!(error = %err, "revocation file lock unavailable; nothing was revoked");
            IssueError::RevocationNotPersisted
        })?;
        let on_disk = self.read_disk().map_err(|err| {
            tracing::error!(error = %err, "revocation file unreadable; nothing was revoked");
            IssueError::RevocationNotPersisted
        })?;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = entries.clone();
        next.retain(|_, e| in_force(&e.revocation, now));
        let mut learned: Vec<Revocation> = on_disk
            .into_iter()
            .filter(|e| in_force(&e.revocation, now))
            .filter_map(|e| merge(&mut next, e))
            .collect();
        // A subject's later cutoff covers everything an earlier one did.
        let entry = match next.get(&entry.key()) {
            Some(old) if covers(&old.revocation, &entry.revocation) => old.clone(),
            _ => entry,
        };
        next.insert(entry.key(), entry.clone());
        if next.len() > MAX_REVOCATIONS {
            return Err(IssueError::TooManyRevocations);
        }
        let mut stored: Vec<Stored> = next.values().map(Entry::to_stored).collect();
        stored.sort_by(|a, b| (a.revoked_at, &a.jti, &a.sub).cmp(&(b.revoked_at, &b.jti, &b.sub)));
        let text = serde_json::to_vec_pretty(&StoredFile {
            revocations: stored,
        })
        .map_err(|_| IssueError::RevocationNotPersisted)?;
        service_runtime::files::write_public(&self.file, &text).map_err(|err| {
            tracing::error!(error = %err, "revocation could not be persisted; nothing was revoked");
            IssueError::RevocationNotPersisted
        })?;
        *entries = next;
        drop(entries);
        learned.push(entry.revocation.clone());
        // No receiver is fine: nobody watches yet.
        let _ = self.events.send(Arc::from(learned));
        Ok(entry.revocation)
    }

    /// Takes in a revocation another replica wrote to the shared store (or
    /// this one did), and tells this replica's watchers; whether it was new.
    ///
    /// # Errors
    /// [`IssueError::TooManyRevocations`] at [`MAX_REVOCATIONS`].
    pub fn learn(&self, pending: PendingRevocation) -> Result<bool, IssueError> {
        let now = self.clock.now();
        if !in_force(&pending.entry.revocation, now) {
            return Ok(false);
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_REVOCATIONS && !entries.contains_key(&pending.entry.key()) {
            entries.retain(|_, e| in_force(&e.revocation, now));
            if entries.len() >= MAX_REVOCATIONS {
                return Err(IssueError::TooManyRevocations);
            }
        }
        let learned = merge(&mut entries, pending.entry);
        drop(entries);
        Ok(learned.is_some_and(|revocation| {
            let _ = self.events.send(Arc::from([revocation]));
            true
        }))
    }

    /// How many revocations are held (some may have expired since).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes in what another replica sharing the file revoked, and tells
    /// this replica's watchers; returns how many revocations were new.
    ///
    /// # Errors
    /// A description when the file cannot be read (nothing changes then).
    pub fn sync_from_disk(&self) -> Result<usize, String> {
        let now = self.clock.now();
        let on_disk = self.read_disk()?;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let learned: Vec<Revocation> = on_disk
            .into_iter()
            .filter(|e| in_force(&e.revocation, now))
            .filter_map(|e| merge(&mut entries, e))
            .collect();
        drop(entries);
        let count = learned.len();
        if count > 0 {
            let _ = self.events.send(Arc::from(learned));
        }
        Ok(count)
    }

    /// The file revocations are kept in (replicas sharing it watch it).
    pub fn file(&self) -> &std::path::Path {
        &self.file
    }

    fn read_disk(&self) -> Result<Vec<Entry>, String> {
        let stored: StoredFile = match std::fs::read_to_string(&self.file) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| e.to_string())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StoredFile::default(),
            Err(e) => return Err(e.to_string()),
        };
        stored
            .revocations
            .into_iter()
            .map(|s| Entry::from_stored(s).ok_or_else(|| "malformed entry".to_owned()))
            .collect()
    }

    /// Every revocation in force now.
    pub fn snapshot(&self) -> Vec<Revocation> {
        let now = self.clock.now();
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|e| in_force(&e.revocation, now))
            .map(|e| e.revocation.clone())
            .collect()
    }

    /// The latest `iat` cutoff in force for `sub`, if any.
    pub fn subject_cutoff(&self, sub: &str) -> Option<u64> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries
            .get(&RevocationKey::Subject(sub.to_owned()))?
            .revocation
            .target
        {
            RevokedTarget::Subject { issued_before, .. } => Some(issued_before),
            RevokedTarget::Token(_) => None,
        }
    }

    /// New revocations from now on. Subscribe before taking the snapshot, so
    /// nothing made in between is missed (a duplicate is harmless).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<[Revocation]>> {
        self.events.subscribe()
    }
}

/// Adds `entry` unless what is held already covers it; returns it when it was new.
fn merge(into: &mut HashMap<RevocationKey, Entry>, entry: Entry) -> Option<Revocation> {
    if into
        .get(&entry.key())
        .is_some_and(|held| covers(&held.revocation, &entry.revocation))
    {
        return None;
    }
    let revocation = entry.revocation.clone();
    into.insert(entry.key(), entry);
    Some(revocation)
}

/// Whether `old` already revokes everything `new` does, for as long.
fn covers(old: &Revocation, new: &Revocation) -> bool {
    let cutoff = |r: &Revocation| match r.target {
        RevokedTarget::Subject { issued_before, .. } => issued_before,
        RevokedTarget::Token(_) => 0,
    };
    cutoff(old) >= cutoff(new) && old.expires_at >= new.expires_at
}

/// Whether `value` can name a token (`jti`) or a subject: 1 to 1024 visible ASCII characters.
pub(crate) fn is_printable_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= auth_interceptor::revocation::MAX_REVOCATION_ID_BYTES
        && value.bytes().all(|b| b.is_ascii_graphic())
}

fn check_id(value: &str, what: &'static str) -> Result<(), IssueError> {
    if is_printable_id(value) {
        Ok(())
    } else {
        Err(IssueError::InvalidRevocation(match what {
            "jti" => "jti must be 1 to 1024 visible ASCII characters",
            _ => "sub must be 1 to 1024 visible ASCII characters",
        }))
    }
}

#[cfg(test)]
mod tests {
    use auth_interceptor::{Clock, OffsetClock};

    use super::*;

    fn store(dir: &Path, clock: &OffsetClock) -> RevocationStore {
        RevocationStore::load(&dir.join("revocations.json"), Arc::new(clock.clone())).expect("load")
    }

    #[test]
    fn revocations_survive_a_restart_until_they_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = OffsetClock::default();
        let first = store(dir.path(), &clock);
        let now = clock.now();
        let token = first
            .revoke_token(
                "jti-1",
                Some(i64::try_from(now + 60).expect("time")),
                "leaked",
            )
            .expect("revoke");
        assert_eq!(token.expires_at, now + 60);
        let subject = first
            .revoke_subject("spiffe://d/orders", None, "")
            .expect("revoke");
        assert_eq!(
            subject.expires_at,
            subject.revoked_at + MAX_TTL_CEILING_SECONDS
        );
        let reloaded = store(dir.path(), &clock);
        assert_eq!(reloaded.snapshot().len(), 2);
        // Kept for the longest verifier leeway after the token expired, then dropped.
        clock.advance(100);
        assert_eq!(store(dir.path(), &clock).snapshot().len(), 2);
        clock.advance(30);
        assert_eq!(store(dir.path(), &clock).snapshot(), vec![subject]);
    }

    #[test]
    fn replicas_sharing_the_file_keep_each_others_revocations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = OffsetClock::default();
        let (a, b) = (store(dir.path(), &clock), store(dir.path(), &clock));
        let mut b_events = b.subscribe();
        a.revoke_token("from-a", None, "").expect("revoke at a");
        assert_eq!(b.sync_from_disk(), Ok(1));
        assert_eq!(b.sync_from_disk(), Ok(0), "nothing new the second time");
        assert!(b_events.try_recv().is_ok(), "b's watchers hear of it");
        // b writes the union: a's revocation is not lost.
        b.revoke_token("from-b", None, "").expect("revoke at b");
        assert_eq!(a.sync_from_disk(), Ok(1));
        assert_eq!(store(dir.path(), &clock).snapshot().len(), 2);
    }

    #[test]
    fn bad_revocations_change_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = OffsetClock::default();
        let store = store(dir.path(), &clock);
        let future = i64::try_from(clock.now() + 10).expect("time");
        for result in [
            store.revoke_token("", None, ""),
            store.revoke_token("a b", None, ""),
            store.revoke_token(&"j".repeat(2000), None, ""),
            store.revoke_token("ok", None, &"r".repeat(300)),
            store.revoke_token("ok", None, "line\nbreak"),
            store.revoke_subject("svc", Some(future), ""),
            store.revoke_subject("svc", Some(-5), ""),
        ] {
            assert!(
                matches!(result, Err(IssueError::InvalidRevocation(_))),
                "{result:?}"
            );
        }
        assert!(store.snapshot().is_empty());
        assert!(!dir.path().join("revocations.json").exists());
    }

    #[test]
    fn an_unwritable_file_revokes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = OffsetClock::default();
        let blocked = dir.path().join("state");
        let store = RevocationStore::load(&blocked.join("revocations.json"), Arc::new(clock))
            .expect("load");
        // Its directory turns into a file: nothing can be written there now.
        std::fs::write(&blocked, b"file").expect("write");
        let mut events = store.subscribe();
        assert_eq!(
            store.revoke_token("jti-1", None, ""),
            Err(IssueError::RevocationNotPersisted)
        );
        assert!(store.snapshot().is_empty());
        assert!(events.try_recv().is_err());
    }

    #[test]
    fn a_later_subject_cutoff_replaces_an_earlier_one_and_is_broadcast() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = OffsetClock::default();
        let store = store(dir.path(), &clock);
        let mut events = store.subscribe();
        let earlier = i64::try_from(clock.now() - 100).expect("time");
        store.revoke_subject("svc", None, "").expect("now");
        let kept = store
            .revoke_subject("svc", Some(earlier), "")
            .expect("earlier");
        assert_eq!(store.snapshot(), vec![kept.clone()]);
        assert!(
            matches!(kept.target, RevokedTarget::Subject { issued_before, .. } if issued_before == kept.revoked_at)
        );
        assert_eq!(
            events.try_recv().expect("event").to_vec(),
            vec![kept.clone()]
        );
    }
}
