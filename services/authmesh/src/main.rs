//! `authmesh`: run the whole mesh locally, mint and inspect tokens. The
//! commands live in [`authmesh::cli`]; this parses and runs one.

use std::process::ExitCode;

use authmesh::cli::Cli;
use clap::Parser;

fn main() -> ExitCode {
    service_runtime::install_crypto_provider();
    let cli = Cli::parse();
    if cli.serves() {
        service_runtime::telemetry::init_tracing();
    }
    let answers = cli.answers();
    match cli.run() {
        Ok(code) => code,
        Err(err) => {
            // The whole cause: "reading x.pem: permission denied", not just "reading x.pem".
            eprintln!("error: {}", service_runtime::error::report(&*err));
            // `explain` and `token inspect` answer 1 for "no": failing is 2.
            if answers {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
