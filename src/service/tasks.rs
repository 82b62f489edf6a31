//! The tasks the service starts, and the one order they stop in.

use crate::engine::ownership::Ownership;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// Every task the service started. [`Tasks::stop`] waits for them in the order the
/// module docs of `service` give; the shared cancellation token has told them all to
/// stop already.
#[derive(Default)]
pub(super) struct Tasks {
    pub server: Option<JoinHandle<()>>,
    pub events: Option<JoinHandle<()>>,
    pub notifier: Option<JoinHandle<()>>,
    pub consumers: Vec<JoinHandle<()>>,
    pub lease_keeper: Option<JoinHandle<()>>,
    pub ownership: Option<Arc<Ownership>>,
}

impl Tasks {
    /// Waits for each task in turn, then lets the leases go, so another instance takes
    /// the regions over only once nothing of this one writes any more.
    pub async fn stop(self) {
        let Tasks { server, events, notifier, consumers, lease_keeper, ownership } = self;
        for (name, task) in [("health server", server), ("S3 events", events), ("alert notifier", notifier)] {
            if let Some(task) = task {
                wait(name, task).await;
            }
        }
        for consumer in consumers {
            wait("consumer", consumer).await;
        }
        if let Some(keeper) = lease_keeper {
            wait("lease keeper", keeper).await;
        }
        if let Some(o) = ownership {
            o.release_all(chrono::Utc::now()).await;
        }
    }
}

async fn wait(name: &str, task: JoinHandle<()>) {
    if let Err(e) = task.await {
        tracing::warn!(task = name, error = %e, "task ended abnormally");
    }
}
