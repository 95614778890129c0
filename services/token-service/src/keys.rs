//! The issuer's signing keys: generated on first start, persisted with 0600
//! permissions, reloaded after a restart so tokens minted before it still
//! verify. `kid` is the RFC 7638 thumbprint of the public key, so it is
//! stable across restarts without metadata.
//!
//! Rotation is driven by `keyring.json` in the key directory, written by
//! [`rotate`] (`authmesh keys rotate`): each key has the time it starts
//! signing and, once replaced, the time it is retired. At any moment the
//! newest key whose start has come signs, and every key not yet retired is
//! published, so a next key is published well before it signs (verifiers
//! fetch it meanwhile) and an old key stays published until every token it
//! signed has expired. Replicas sharing the directory see the same ring.
//! Without a `keyring.json`, `eddsa.pem` / `es256.pem` are used as before.
//!
//! With the etcd store each replica keeps its own ring on its own disk and
//! publishes only the public keys ([`Publication`]): the key set served is
//! the union of every replica's, and a key signs only once it has been
//! published for the configured lead (publish before sign).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use arc_swap::ArcSwap;
use auth_interceptor::{Jwk, JwkSet, SharedClock, SigningAlgorithm};
use authmesh_signing::SigningKey;
use serde::{Deserialize, Serialize};
use service_runtime::file_watch::WatchedFiles;

use crate::error::StartError;

/// The ring file's name in the key directory.
pub const KEYRING_FILE: &str = "keyring.json";

/// The largest leeway any verifier allows past `exp`.
const MAX_LEEWAY_SECONDS: u64 = auth_interceptor::verifier::MAX_LEEWAY_SECONDS;

/// One key of the ring, as written in `keyring.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RingEntry {
    /// PKCS#8 PEM file, relative to the key directory.
    file: String,
    /// Unix seconds from which it signs (if it is the newest started key).
    activate_at: u64,
    /// Unix seconds from which it is no longer published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retire_at: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RingFile {
    keys: Vec<RingEntry>,
}

/// A loaded key and its schedule.
#[derive(Debug)]
struct RingKey {
    key: Arc<SigningKey>,
    activate_at: u64,
    retire_at: Option<u64>,
}

impl RingKey {
    fn published_at(&self, now: u64) -> bool {
        self.retire_at.is_none_or(|retire| now < retire)
    }
}

/// One public key as the shared store publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedKey {
    /// The public key (a private part can never be serialized into it).
    pub jwk: Jwk,
    /// The replica that signs with it.
    pub replica: String,
    /// Unix seconds when it was first published.
    pub published_at: u64,
}

/// Every replica's published public keys, as this replica last saw them.
#[derive(Debug)]
pub struct Publication {
    lead_seconds: u64,
    keys: ArcSwap<BTreeMap<String, PublishedKey>>,
}

impl Publication {
    /// Nothing published yet; a key signs `lead_seconds` after it is published.
    pub fn new(lead_seconds: u64) -> Self {
        Self {
            lead_seconds,
            keys: ArcSwap::from_pointee(BTreeMap::new()),
        }
    }

    /// Replaces everything known (a full read of the store).
    pub fn replace(&self, keys: BTreeMap<String, PublishedKey>) {
        self.keys.store(Arc::new(keys));
    }

    /// Adds or updates one key.
    pub fn upsert(&self, key: PublishedKey) {
        self.keys.rcu(|keys| {
            let mut keys = BTreeMap::clone(keys);
            keys.insert(key.jwk.kid.clone(), key.clone());
            keys
        });
    }

    /// Forgets one key (its lease ended or its replica retired it).
    pub fn remove(&self, kid: &str) {
        self.keys.rcu(|keys| {
            let mut keys = BTreeMap::clone(keys);
            keys.remove(kid);
            keys
        });
    }

    /// The key `kid` as published, if it is.
    pub fn get(&self, kid: &str) -> Option<PublishedKey> {
        self.keys.load().get(kid).cloned()
    }

    /// The union of every replica's keys.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self.keys.load().values().map(|k| k.jwk.clone()).collect(),
        }
    }

    /// Whether `kid` has been published long enough to sign at `now`.
    fn may_sign(&self, kid: &str, now: u64) -> bool {
        self.keys
            .load()
            .get(kid)
            .is_some_and(|k| k.published_at.saturating_add(self.lead_seconds) <= now)
    }
}

/// The issuer's keys and their schedule; cheap to read on every mint.
#[derive(Debug)]
pub struct KeyStore {
    dir: PathBuf,
    ring: ArcSwap<Vec<RingKey>>,
    clock: SharedClock,
    /// `keyring.json` as it looked when last loaded.
    ring_file: WatchedFiles,
    /// With a shared store: what is published, which gates signing.
    publication: Option<Arc<Publication>>,
}

impl KeyStore {
    /// Loads the keys of `dir`: the ring when `keyring.json` exists, else
    /// `eddsa.pem` / `es256.pem` (creating the one for `algorithm`, which signs).
    ///
    /// # Errors
    /// [`StartError::Key`] when a key file or the ring is unusable or no key can sign now.
    pub fn load_or_create(
        dir: &Path,
        algorithm: SigningAlgorithm,
        clock: SharedClock,
    ) -> Result<Self, StartError> {
        Self::open(dir, Some(algorithm), clock)
    }

    /// Loads the keys of `dir` and creates none: for tools that read an
    /// issuer's state without being the issuer (`authmesh explain` offline).
    ///
    /// # Errors
    /// [`StartError::Key`] when a key file or the ring is unusable or no key can sign now.
    pub fn load(dir: &Path, clock: SharedClock) -> Result<Self, StartError> {
        Self::open(dir, None, clock)
    }

    fn open(
        dir: &Path,
        create: Option<SigningAlgorithm>,
        clock: SharedClock,
    ) -> Result<Self, StartError> {
        let store = Self {
            dir: dir.to_path_buf(),
            ring: ArcSwap::from_pointee(Vec::new()),
            clock,
            ring_file: WatchedFiles::new(vec![dir.join(KEYRING_FILE)]),
            publication: None,
        };
        let ring = load_ring(dir, create)?;
        store.install(ring)?;
        Ok(store)
    }

    /// A store around one in-memory key (tests, drills).
    pub fn from_key(key: SigningKey, clock: SharedClock) -> Self {
        Self {
            dir: PathBuf::new(),
            ring: ArcSwap::from_pointee(vec![RingKey {
                key: Arc::new(key),
                activate_at: 0,
                retire_at: None,
            }]),
            clock,
            ring_file: WatchedFiles::new(Vec::new()),
            publication: None,
        }
    }

    /// Signs only with keys `publication` has published for its lead, and
    /// serves its union of every replica's keys.
    #[must_use]
    pub fn with_publication(mut self, publication: Arc<Publication>) -> Self {
        self.publication = Some(publication);
        self
    }

    fn install(&self, ring: Vec<RingKey>) -> Result<(), StartError> {
        let now = self.clock.now();
        if signing_key(&ring, now, |_| true).is_none() {
            return Err(StartError::Key(
                "no key in the ring can sign now (none has started, or all are retired)".into(),
            ));
        }
        self.ring.store(Arc::new(ring));
        Ok(())
    }

    /// Re-reads `keyring.json` if it changed since the last load (what
    /// `authmesh keys rotate` writes); an unusable new ring is refused and the
    /// current one stays.
    ///
    /// # Errors
    /// [`StartError::Key`] naming what is wrong with the new ring.
    pub fn reload_if_changed(&self) -> Result<bool, StartError> {
        let reloaded = self.ring_file.reload_if_changed(|| {
            // Without the ring the key files alone would decide: keep the
            // ring in force rather than fall back to them.
            if !self.dir.join(KEYRING_FILE).exists() {
                return Err(StartError::Key(format!(
                    "{KEYRING_FILE} was removed; the current keys stay"
                )));
            }
            self.install(load_ring(&self.dir, None)?)
        })?;
        Ok(reloaded.is_some())
    }

    /// The key that signs now: the newest whose start has come and that is
    /// not retired. `None` only when every key has been retired (the ring
    /// was not rotated for longer than a key's retirement period).
    /// With a shared store, only a key published for the lead signs: the
    /// newest such one (an older one still signs while a newer one waits).
    pub fn signing(&self) -> Option<Arc<SigningKey>> {
        let now = self.clock.now();
        let ring = self.ring.load();
        match &self.publication {
            None => signing_key(&ring, now, |_| true),
            Some(publication) => signing_key(&ring, now, |k| publication.may_sign(k.kid(), now)),
        }
        .map(|k| k.key.clone())
    }

    /// The key this replica's own ring would sign with, published or not
    /// (the start-up self-test uses it).
    pub fn local_signing(&self) -> Option<Arc<SigningKey>> {
        signing_key(&self.ring.load(), self.clock.now(), |_| true).map(|k| k.key.clone())
    }

    /// Whether a key could sign but waits to have been published for the lead.
    pub fn awaiting_publication(&self) -> bool {
        self.publication.is_some() && self.signing().is_none() && self.local_signing().is_some()
    }

    /// Every key verifiers should trust now: the union of every replica's
    /// with a shared store, else all of this ring's not yet retired.
    pub fn published(&self) -> JwkSet {
        match &self.publication {
            Some(publication) => publication.jwks(),
            None => JwkSet {
                keys: self
                    .local_published()
                    .iter()
                    .map(|k| k.jwk().clone())
                    .collect(),
            },
        }
    }

    /// This ring's keys not yet retired: what this replica publishes.
    pub fn local_published(&self) -> Vec<Arc<SigningKey>> {
        let now = self.clock.now();
        self.ring
            .load()
            .iter()
            .filter(|k| k.published_at(now))
            .map(|k| k.key.clone())
            .collect()
    }
}

fn signing_key(
    ring: &[RingKey],
    now: u64,
    eligible: impl Fn(&SigningKey) -> bool,
) -> Option<&RingKey> {
    ring.iter()
        .filter(|k| k.activate_at <= now && k.published_at(now) && eligible(&k.key))
        .max_by_key(|k| k.activate_at)
}

/// Refuses anything but a plain file name inside the key directory.
fn plain_name(file: &str) -> Result<&str, StartError> {
    let mut parts = Path::new(file).components();
    match (parts.next(), parts.next()) {
        (Some(std::path::Component::Normal(_)), None) => Ok(file),
        _ => Err(StartError::Key(format!(
            "key file {file:?} must be a plain name"
        ))),
    }
}

fn read_key(dir: &Path, file: &str) -> Result<SigningKey, StartError> {
    let file = plain_name(file)?;
    let pem = service_runtime::files::read_to_string(&dir.join(file))?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|source| StartError::KeyFile {
        file: file.to_owned(),
        source,
    })
}

/// The ring of `dir`: from `keyring.json`, or the legacy files (creating
/// the key for `create` when it is given and missing).
fn load_ring(dir: &Path, create: Option<SigningAlgorithm>) -> Result<Vec<RingKey>, StartError> {
    let entries = ring_entries(dir, create)?;
    let mut ring = Vec::with_capacity(entries.len());
    for entry in entries {
        ring.push(RingKey {
            key: Arc::new(read_key(dir, &entry.file)?),
            activate_at: entry.activate_at,
            retire_at: entry.retire_at,
        });
    }
    let mut kids: Vec<&str> = ring.iter().map(|k| k.key.kid()).collect();
    kids.sort_unstable();
    if kids.windows(2).any(|w| w[0] == w[1]) {
        return Err(StartError::Key("the same key is in the ring twice".into()));
    }
    Ok(ring)
}

fn ring_entries(
    dir: &Path,
    create: Option<SigningAlgorithm>,
) -> Result<Vec<RingEntry>, StartError> {
    let ring_path = dir.join(KEYRING_FILE);
    if ring_path.exists() {
        let text = service_runtime::files::read_to_string(&ring_path)?;
        let file: RingFile = serde_json::from_str(&text).map_err(|source| StartError::Ring {
            path: ring_path.clone(),
            source,
        })?;
        for entry in &file.keys {
            plain_name(&entry.file)?;
        }
        return Ok(file.keys);
    }
    // Legacy layout: the configured algorithm's key signs, the other is only published.
    let mut entries = Vec::new();
    for candidate in [SigningAlgorithm::EdDSA, SigningAlgorithm::ES256] {
        let file = legacy_file(candidate);
        let path = dir.join(&file);
        if !path.exists() {
            if create != Some(candidate) {
                continue;
            }
            let (key, pem) = SigningKey::generate(candidate).map_err(StartError::KeyGeneration)?;
            service_runtime::files::write_private(&path, pem.as_bytes())?;
            tracing::info!(kid = key.kid(), alg = %candidate, path = %path.display(), "generated signing key");
        }
        let key = read_key(dir, &file)?;
        if key.algorithm() != candidate {
            return Err(StartError::Key(format!(
                "{} does not hold a {candidate} key",
                path.display()
            )));
        }
        entries.push(RingEntry {
            file,
            activate_at: u64::from(create == Some(candidate)),
            retire_at: None,
        });
    }
    Ok(entries)
}

fn legacy_file(algorithm: SigningAlgorithm) -> String {
    format!("{}.pem", algorithm.name().to_ascii_lowercase())
}

/// What [`rotate`] scheduled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rotation {
    /// The new key's `kid`.
    pub next_kid: String,
    /// When it starts signing (Unix seconds); published from now on.
    pub signs_from: u64,
    /// Keys being replaced, and when each stops being published.
    pub retiring: Vec<(String, u64)>,
}

/// Schedules a key rotation in `dir`: a new `algorithm` key, published at
/// once and signing `overlap_seconds` from `now`; every older key retires
/// `max_ttl_seconds` (plus the largest verifier leeway) after that, when no
/// token it signed can still be valid. Retired keys past their time leave
/// the ring and their files are removed. Running token services pick the
/// new ring up within a second.
///
/// # Errors
/// [`StartError::Key`] when the ring or a key is unusable or cannot be written.
pub fn rotate(
    dir: &Path,
    current: SigningAlgorithm,
    algorithm: SigningAlgorithm,
    overlap_seconds: u64,
    max_ttl_seconds: u64,
    now: u64,
) -> Result<Rotation, StartError> {
    let mut entries = ring_entries(dir, Some(current))?;
    if overlap_seconds == 0 {
        return Err(StartError::Key(
            "the overlap must be positive (longer than the verifiers' key refresh interval)".into(),
        ));
    }
    if let Some(pending) = entries
        .iter()
        .map(|e| e.activate_at)
        .filter(|t| *t > now)
        .max()
    {
        // Another next key is still waiting: stacking a second one would let
        // the first sign after its own retirement was scheduled.
        return Err(StartError::Key(format!(
            "a rotation is already pending: its key signs from {pending}; rotate again after that"
        )));
    }
    let signs_from = now
        .checked_add(overlap_seconds)
        .filter(|t| {
            t.checked_add(max_ttl_seconds + MAX_LEEWAY_SECONDS)
                .is_some()
        })
        .ok_or_else(|| StartError::Key("overlap too large".into()))?;
    let (key, pem) = SigningKey::generate(algorithm).map_err(StartError::KeyGeneration)?;
    let mut file = format!("key-{now}-{}.pem", algorithm.name().to_ascii_lowercase());
    let mut n = 1;
    while dir.join(&file).exists() {
        n += 1;
        file = format!(
            "key-{now}-{}-{n}.pem",
            algorithm.name().to_ascii_lowercase()
        );
    }
    service_runtime::files::write_private(&dir.join(&file), pem.as_bytes())?;
    let retire_at = signs_from + max_ttl_seconds + MAX_LEEWAY_SECONDS;
    let mut retiring = Vec::new();
    let mut kept = Vec::new();
    for mut entry in entries.drain(..) {
        if entry.retire_at.is_some_and(|t| t <= now) {
            // Gone from every verifier's key set already: forget it.
            let _ = std::fs::remove_file(dir.join(&entry.file));
            continue;
        }
        let until = *entry.retire_at.get_or_insert(retire_at);
        retiring.push((read_key(dir, &entry.file)?.kid().to_owned(), until));
        kept.push(entry);
    }
    kept.push(RingEntry {
        file,
        activate_at: signs_from,
        retire_at: None,
    });
    let ring_path = dir.join(KEYRING_FILE);
    let text =
        serde_json::to_vec_pretty(&RingFile { keys: kept }).map_err(|source| StartError::Ring {
            path: ring_path.clone(),
            source,
        })?;
    service_runtime::files::write_public(&ring_path, &text)?;
    tracing::info!(kid = key.kid(), signs_from, "key rotation scheduled");
    Ok(Rotation {
        next_kid: key.kid().to_owned(),
        signs_from,
        retiring,
    })
}

#[cfg(test)]
mod tests {
    use auth_interceptor::{Clock, OffsetClock};

    use super::*;

    fn kid(keys: &KeyStore) -> String {
        keys.signing()
            .map(|k| k.kid().to_owned())
            .unwrap_or_default()
    }

    /// An EdDSA rotation at `now`: signs after 120 s, tokens live 300 s.
    fn rotate_eddsa(dir: &Path, now: u64) -> Rotation {
        rotate(
            dir,
            SigningAlgorithm::EdDSA,
            SigningAlgorithm::EdDSA,
            120,
            300,
            now,
        )
        .expect("rotate")
    }

    fn store(dir: &Path, clock: &OffsetClock) -> KeyStore {
        KeyStore::load_or_create(dir, SigningAlgorithm::EdDSA, Arc::new(clock.clone()))
            .expect("keys")
    }

    #[test]
    fn keys_persist_and_publish_every_algorithm_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = OffsetClock::new();
        let first = store(dir.path(), &clock);
        let again = store(dir.path(), &clock);
        assert_eq!(kid(&first), kid(&again));
        let switched =
            KeyStore::load_or_create(dir.path(), SigningAlgorithm::ES256, Arc::new(clock))
                .expect("switch");
        assert_eq!(
            switched.signing().map(|k| k.algorithm()),
            Some(SigningAlgorithm::ES256)
        );
        assert_eq!(
            switched.published().keys.len(),
            2,
            "old key stays published"
        );
    }

    #[test]
    fn a_rotation_publishes_first_signs_later_and_retires_the_old_key_last() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = OffsetClock::new();
        let keys = store(dir.path(), &clock);
        let old = kid(&keys);
        let now = clock.now();
        let rotation = rotate_eddsa(dir.path(), now);
        assert_eq!(rotation.signs_from, now + 120);
        assert_eq!(rotation.retiring, vec![(old.clone(), now + 120 + 300 + 60)]);
        // A running store picks the ring up.
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(keys.reload_if_changed().expect("reload"));
        let published = |keys: &KeyStore| -> Vec<String> {
            keys.published().keys.into_iter().map(|k| k.kid).collect()
        };
        assert_eq!(kid(&keys), old, "the old key signs during the overlap");
        assert!(
            published(&keys).contains(&rotation.next_kid),
            "next key published at once"
        );
        clock.advance(120);
        assert_eq!(kid(&keys), rotation.next_kid);
        assert!(
            published(&keys).contains(&old),
            "old key published while its tokens live"
        );
        clock.advance(360);
        assert_eq!(published(&keys), vec![rotation.next_kid.clone()]);
        // A restart reads the same ring.
        assert_eq!(kid(&store(dir.path(), &clock)), rotation.next_kid);
    }

    #[test]
    fn rotations_do_not_stack_and_ring_paths_stay_inside_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = OffsetClock::new();
        store(dir.path(), &clock);
        let now = clock.now();
        let alg = SigningAlgorithm::EdDSA;
        rotate(dir.path(), alg, alg, 120, 300, now).expect("first");
        assert!(
            rotate(dir.path(), alg, alg, 10, 300, now + 5).is_err(),
            "pending"
        );
        assert!(
            rotate(dir.path(), alg, alg, 10, 300, now + 121).is_ok(),
            "after it signs"
        );
        assert!(
            rotate(dir.path(), alg, alg, 0, 300, now + 300).is_err(),
            "zero overlap"
        );
        assert!(rotate(dir.path(), alg, alg, u64::MAX, 300, now + 300).is_err());
        let outside = dir.path().join("outside.txt");
        std::fs::write(&outside, "keep").expect("write");
        let ring = format!(
            r#"{{"keys":[{{"file":"{}","activate_at":0,"retire_at":1}}]}}"#,
            outside.display()
        );
        std::fs::write(dir.path().join(KEYRING_FILE), ring).expect("ring");
        assert!(rotate(dir.path(), alg, alg, 10, 300, now + 400).is_err());
        assert!(
            outside.exists(),
            "nothing outside the key directory is touched"
        );
    }

    #[test]
    fn a_broken_ring_is_refused_and_the_current_one_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = OffsetClock::new();
        let keys = store(dir.path(), &clock);
        let before = kid(&keys);
        for broken in [
            "not json",
            r#"{"keys":[{"file":"../eddsa.pem","activate_at":0}]}"#,
            r#"{"keys":[{"file":"eddsa.pem","activate_at":99999999999}]}"#,
            r#"{"keys":[]}"#,
        ] {
            std::thread::sleep(std::time::Duration::from_millis(20));
            std::fs::write(dir.path().join(KEYRING_FILE), broken).expect("write");
            assert!(keys.reload_if_changed().is_err(), "{broken}");
            assert_eq!(kid(&keys), before);
        }
    }

    #[test]
    fn a_removed_ring_stays_in_force() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = OffsetClock::new();
        let keys = store(dir.path(), &clock);
        let now = clock.now();
        rotate_eddsa(dir.path(), now);
        assert!(keys.reload_if_changed().expect("reload"));
        let ringed = kid(&keys);
        let published = keys.published().keys.len();
        // Without the ring only the bare key files would be left: keep the ring.
        std::fs::remove_file(dir.path().join(KEYRING_FILE)).expect("remove");
        let removed = keys
            .reload_if_changed()
            .expect_err("a removed ring is refused");
        assert!(removed.to_string().contains("removed"), "{removed}");
        assert_eq!(kid(&keys), ringed);
        assert_eq!(keys.published().keys.len(), published);
    }
}
