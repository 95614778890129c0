//! `authmesh idle`: do nothing until stopped. The main process of a pod
//! that exists only for `kubectl exec` (the Kubernetes client-kit pod): the
//! image has no shell and no `sleep`.

use std::process::ExitCode;

use super::CliError;

pub(super) async fn run() -> Result<ExitCode, CliError> {
    service_runtime::shutdown::signal().await;
    Ok(ExitCode::SUCCESS)
}
