//! Files a server re-reads while it runs (policy files, certificates, the
//! issuer's key ring, a shared revocations file), watched one way: polled,
//! not inotify, so it works alike on bind mounts, Kubernetes' ConfigMap
//! symlink swaps and network filesystems.

use std::{
    fmt::Display,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use crate::task::BackgroundTask;

/// How some files look on disk: each one's modification time and length
/// (`None` while it is missing). A rewrite within the filesystem's mtime
/// granularity usually still changes the length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp(Vec<Option<(SystemTime, u64)>>);

impl FileStamp {
    /// How `paths` look now.
    pub fn of<P: AsRef<Path>>(paths: &[P]) -> Self {
        Self(
            paths
                .iter()
                .map(|path| {
                    let meta = std::fs::metadata(path).ok()?;
                    Some((meta.modified().ok()?, meta.len()))
                })
                .collect(),
        )
    }
}

/// Files and how they looked when last loaded, so a change is acted on once.
#[derive(Debug)]
pub struct WatchedFiles {
    paths: Vec<PathBuf>,
    loaded: Mutex<FileStamp>,
}

impl WatchedFiles {
    /// Remembers how `paths` look now. Take it before reading them: a change
    /// made while they are read is then seen on the next check.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        let loaded = Mutex::new(FileStamp::of(&paths));
        Self { paths, loaded }
    }

    /// The watched files.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Runs `reload` if a file changed since the last successful reload, and
    /// returns its result (`None`: nothing changed). The new state is
    /// remembered only when `reload` succeeds, so a half-written file is
    /// tried again on the next check.
    ///
    /// # Errors
    /// Whatever `reload` returns.
    pub fn reload_if_changed<T, E>(
        &self,
        reload: impl FnOnce() -> Result<T, E>,
    ) -> Result<Option<T>, E> {
        let now = FileStamp::of(&self.paths);
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if *loaded == now {
            return Ok(None);
        }
        let value = reload()?;
        *loaded = now;
        Ok(Some(value))
    }
}

/// Runs `check` every `every` in the background until the task is dropped.
/// A failure (a changed file that does not load) is logged as `what`,
/// once per distinct error rather than on every check, and the last good
/// version stays in force; `check` logs its own successes.
pub fn poll<E: Display>(
    what: &'static str,
    every: Duration,
    mut check: impl FnMut() -> Result<(), E> + Send + 'static,
) -> BackgroundTask {
    BackgroundTask::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_error: Option<String> = None;
        loop {
            tick.tick().await;
            match check() {
                Ok(()) => last_error = None,
                Err(err) => {
                    let err = err.to_string();
                    if last_error.as_ref() != Some(&err) {
                        tracing::error!(what, error = %err, "a watched file changed but does not load; the last good version stays in force");
                        last_error = Some(err);
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_reloaded_once_and_a_failed_reload_is_retried() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("watched");
        std::fs::write(&path, "one").expect("write");
        let files = WatchedFiles::new(vec![path.clone()]);
        assert_eq!(files.reload_if_changed(|| Ok::<_, ()>(1)), Ok(None));

        // A longer file is a change even within one mtime tick.
        std::fs::write(&path, "two!").expect("write");
        assert_eq!(
            files.reload_if_changed(|| Err::<u8, _>("half written")),
            Err("half written")
        );
        assert_eq!(files.reload_if_changed(|| Ok::<_, &str>(2)), Ok(Some(2)));
        assert_eq!(files.reload_if_changed(|| Ok::<_, &str>(3)), Ok(None));

        // A deleted file is a change too (its reload decides what that means).
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(files.reload_if_changed(|| Ok::<_, &str>(4)), Ok(Some(4)));
        assert_eq!(files.reload_if_changed(|| Ok::<_, &str>(5)), Ok(None));
    }
}
