//! Background tasks of a server (readiness, file watches, certificate
//! following): each runs until it ends or its [`BackgroundTask`] is dropped,
//! so nothing outlives the server that started it.

use std::future::Future;

use tokio_util::task::AbortOnDropHandle;

/// A spawned task, aborted when this is dropped.
#[derive(Debug)]
pub struct BackgroundTask {
    _task: AbortOnDropHandle<()>,
}

impl BackgroundTask {
    /// Runs `task` on the current runtime until it ends or this is dropped.
    pub fn spawn(task: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            _task: AbortOnDropHandle::new(tokio::spawn(task)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_task_stops() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let task = BackgroundTask::spawn(async move {
            // Holds the sender until aborted.
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        drop(task);
        // The sender is dropped with the aborted task, closing the channel.
        assert!(rx.recv().await.is_none());
    }
}
