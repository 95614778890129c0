//! Keeps a [`Verifier`]'s revocations current from the token service's
//! `WatchRevocations` stream, in the background. Revocations arrive as the
//! token service makes them (pushed, not polled); after any disconnect the
//! watch reconnects with backoff and receives the full list again, so what
//! was revoked meanwhile is not missed. Nothing here is on the call path.

use std::time::Duration;

use authmesh_proto::authmesh::v1::{
    RevocationBatch, WatchRevocationsRequest, token_service_client::TokenServiceClient,
};
use tokio_util::task::AbortOnDropHandle;
use tonic::{Streaming, transport::Channel};

use crate::{revocation::Revocation, verifier::Verifier};

/// Largest single revocation message accepted (the token service sends the
/// full list in chunks well below this).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// How the watch reconnects and tidies up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevocationWatchSettings {
    /// Upper bound of opening the stream.
    pub connect_timeout: Duration,
    /// Longest wait between reconnect attempts (backoff doubles up to it).
    pub max_backoff: Duration,
    /// How often revocations whose tokens have all expired are forgotten.
    pub prune_interval: Duration,
}

impl Default for RevocationWatchSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(5),
            prune_interval: Duration::from_secs(30),
        }
    }
}

/// The running watch; stops when dropped.
#[derive(Debug)]
pub struct RevocationWatchHandle {
    _task: AbortOnDropHandle<()>,
}

/// Starts watching the token service on `channel` for revocations and
/// applying them to `verifier`, which refuses every token (UNAVAILABLE
/// `REVOCATIONS_UNAVAILABLE`) until the full list has arrived once.
pub fn spawn_revocation_watch(
    verifier: Verifier,
    channel: Channel,
    settings: RevocationWatchSettings,
) -> RevocationWatchHandle {
    verifier.require_revocation_sync();
    let client = TokenServiceClient::new(channel).max_decoding_message_size(MAX_BATCH_BYTES);
    RevocationWatchHandle {
        _task: AbortOnDropHandle::new(tokio::spawn(watch_loop(verifier, client, settings))),
    }
}

async fn watch_loop(
    verifier: Verifier,
    mut client: TokenServiceClient<Channel>,
    settings: RevocationWatchSettings,
) {
    let min_backoff = Duration::from_millis(100);
    let mut backoff = min_backoff;
    let mut prune = tokio::time::interval(settings.prune_interval);
    loop {
        let opened = tokio::time::timeout(
            settings.connect_timeout,
            client.watch_revocations(WatchRevocationsRequest {}),
        )
        .await;
        let ended = match opened {
            Err(_) => format!("no answer within {:?}", settings.connect_timeout),
            Ok(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
            Ok(Ok(response)) => {
                follow(
                    &verifier,
                    response.into_inner(),
                    &mut prune,
                    &mut backoff,
                    min_backoff,
                )
                .await
            }
        };
        tracing::warn!(reason = %ended, revocations = verifier.revocation_count(), retry_in = ?backoff, "revocation watch interrupted; the revocations received so far stay in force");
        tokio::time::sleep(backoff).await;
        verifier.prune_revocations();
        backoff = (backoff * 2).min(settings.max_backoff);
    }
}

/// Applies batches until the stream ends; returns why it ended.
async fn follow(
    verifier: &Verifier,
    mut stream: Streaming<RevocationBatch>,
    prune: &mut tokio::time::Interval,
    backoff: &mut Duration,
    min_backoff: Duration,
) -> String {
    loop {
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(batch)) => {
                    apply(verifier, batch);
                    *backoff = min_backoff;
                }
                Ok(None) => return "the token service ended the stream".into(),
                Err(status) => return format!("{:?}: {}", status.code(), status.message()),
            },
            _ = prune.tick() => {
                let dropped = verifier.prune_revocations();
                if dropped > 0 {
                    tracing::debug!(dropped, "expired revocations forgotten");
                }
            }
        }
    }
}

fn apply(verifier: &Verifier, batch: RevocationBatch) {
    let mut entries = Vec::with_capacity(batch.revocations.len());
    for message in batch.revocations {
        match Revocation::try_from(message) {
            Ok(entry) => entries.push(entry),
            // One bad entry must not hold back the others.
            Err(err) => tracing::error!(error = %err, "revocation from the token service ignored"),
        }
    }
    let added = verifier.apply_revocations(&entries);
    if added > 0 {
        tracing::info!(
            added,
            total = verifier.revocation_count(),
            "revocations applied"
        );
    }
    if batch.snapshot {
        verifier.mark_revocations_synced();
    }
}
