//! What the `authmesh` binary's integration tests share.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_authmesh");

/// Runs `authmesh --state-dir <state> <args>` to completion.
pub fn authmesh(state: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .output()
        .expect("authmesh runs")
}

/// Every file under `dir` at any depth, relative to it, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(current) = dirs.pop() {
        for entry in std::fs::read_dir(&current).expect("a readable directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path.strip_prefix(dir).expect("inside").to_path_buf());
            }
        }
    }
    files.sort();
    files
}
