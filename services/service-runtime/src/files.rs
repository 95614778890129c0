//! Writing state files: private material with 0600 permissions, atomically.

use std::{
    fs::{self, OpenOptions},
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use crate::error::RuntimeError;

/// Writes `contents` to `path` readable by the owner only (0600), through a
/// temporary file and a rename so a crash never leaves half a key behind.
///
/// # Errors
/// [`RuntimeError::Io`] when the file cannot be written.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), RuntimeError> {
    write_with_mode(path, contents, 0o600)
}

/// Writes a public file (certificates, generated configuration): 0644.
///
/// # Errors
/// [`RuntimeError::Io`] when the file cannot be written.
pub fn write_public(path: &Path, contents: &[u8]) -> Result<(), RuntimeError> {
    write_with_mode(path, contents, 0o644)
}

fn write_with_mode(path: &Path, contents: &[u8], mode: u32) -> Result<(), RuntimeError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| RuntimeError::io("creating", parent, e))?;
    }
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| RuntimeError::io("creating", &tmp, e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| RuntimeError::io("writing", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| RuntimeError::io("renaming into", path, e))
}

/// Reads a whole file to a string.
///
/// # Errors
/// [`RuntimeError::Io`] naming the file.
pub fn read_to_string(path: &Path) -> Result<String, RuntimeError> {
    fs::read_to_string(path).map_err(|e| RuntimeError::io("reading", path, e))
}

/// An exclusive lock on `<path>.lock`, held until the file is dropped:
/// processes sharing a directory take turns to rewrite `path`.
///
/// # Errors
/// When the lock file cannot be created or locked.
pub fn lock_beside(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path)?;
    lock.lock()?;
    Ok(lock)
}
