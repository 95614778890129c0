//! `authmesh wait-for`: block until files exist and this user can read
//! them. A Kubernetes init container runs it so that a server starts only
//! once the init Job has written its configuration and handed it its key,
//! instead of crash-looping (with a growing back-off) until then.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use super::CliError;

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Seconds to wait in all before failing.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// The files (absolute, or relative to the working directory).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// How often the files are looked at again.
const POLL: Duration = Duration::from_millis(500);

pub(super) async fn run(args: Args) -> Result<ExitCode, CliError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    loop {
        // Opening, not just stat: a key handed over by group is there
        // before it is readable.
        let missing: Vec<String> = args
            .files
            .iter()
            .filter_map(|file| {
                std::fs::File::open(file)
                    .err()
                    .map(|e| format!("{}: {e}", file.display()))
            })
            .collect();
        if missing.is_empty() {
            println!("ready: {} file(s)", args.files.len());
            return Ok(ExitCode::SUCCESS);
        }
        if tokio::time::Instant::now() + POLL > deadline {
            return Err(format!(
                "still not readable after {} s: {}",
                args.timeout,
                missing.join("; ")
            )
            .into());
        }
        tokio::time::sleep(POLL).await;
    }
}
