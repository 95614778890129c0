//! `authmesh client-kit export | import`: the client kit (the CA
//! certificate, the demo-cli and operator certificates and keys, demo-cli's
//! secret) carried as one JSON document on a pipe, for a cluster whose
//! image has no shell or tar: `kubectl exec <client-kit pod> -- authmesh
//! client-kit export | authmesh --state-dir DIR client-kit import`.

use std::{collections::BTreeMap, io::Read, path::Path, process::ExitCode};

use clap::Subcommand;
use service_runtime::files::{read_to_string, write_private, write_public};

use super::CliError;
use crate::dev_state::{ClientKitFiles, client_kit_files};

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    #[command(subcommand)]
    command: KitCommand,
}

#[derive(Debug, Subcommand)]
enum KitCommand {
    /// Print the client kit of <state-dir> on standard output, as JSON.
    Export,
    /// Write the kit read from standard input into <state-dir>, laid out
    /// like a state directory (private files 0600): use it as --state-dir.
    Import,
}

/// The kit on the wire: each file's path (relative to a state directory)
/// and contents. Only the kit's own paths are read or written.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Bundle {
    files: BTreeMap<String, String>,
}

pub(super) fn run(state_dir: &Path, args: Args) -> Result<ExitCode, CliError> {
    let ClientKitFiles { public, private } = client_kit_files();
    match args.command {
        KitCommand::Export => {
            let mut files = BTreeMap::new();
            for file in public.iter().chain(&private) {
                let contents = read_to_string(&state_dir.join(file))?;
                files.insert(file.display().to_string(), contents);
            }
            println!("{}", serde_json::to_string(&Bundle { files })?);
        }
        KitCommand::Import => {
            let mut input = String::new();
            std::io::stdin().take(1 << 20).read_to_string(&mut input)?;
            let mut bundle: Bundle = serde_json::from_str(&input).map_err(|e| {
                format!("not a client kit (from `authmesh client-kit export`): {e}")
            })?;
            // Every file taken out first: nothing is written from a kit
            // with a file missing, and a path outside the kit is refused.
            let mut writes = Vec::new();
            for (files, private) in [(&public, false), (&private, true)] {
                for file in files {
                    let name = file.display().to_string();
                    let contents = bundle
                        .files
                        .remove(&name)
                        .ok_or_else(|| format!("the kit has no {name}"))?;
                    writes.push((file, contents, private));
                }
            }
            if let Some(extra) = bundle.files.keys().next() {
                return Err(format!("{extra:?} is not a file of the client kit").into());
            }
            for (file, contents, private) in writes {
                let path = state_dir.join(file);
                if private {
                    write_private(&path, contents.as_bytes())?;
                } else {
                    write_public(&path, contents.as_bytes())?;
                }
            }
            println!(
                "client kit in {} (use it as --state-dir)",
                state_dir.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
