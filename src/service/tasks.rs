//! The tasks the service starts, and the one order they stop in.

use crate::engine::ownership::Ownership;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

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
    /// the regions over only once nothing of this one writes any more. A task still
    /// running after `limit` in all is aborted (a call that never returns cannot hold
    /// the process).
    pub async fn stop(self, limit: Duration) {
        let Tasks { server, events, notifier, consumers, lease_keeper, ownership } = self;
        let deadline = Instant::now() + limit;
        for (name, task) in [("health server", server), ("S3 events", events), ("alert notifier", notifier)] {
            if let Some(task) = task {
                wait(name, task, deadline).await;
            }
        }
        for consumer in consumers {
            wait("consumer", consumer, deadline).await;
        }
        if let Some(keeper) = lease_keeper {
            wait("lease keeper", keeper, deadline).await;
        }
        if let Some(o) = ownership {
            o.release_all(chrono::Utc::now()).await;
        }
    }
}

async fn wait(name: &str, mut task: JoinHandle<()>, deadline: Instant) {
    match tokio::time::timeout_at(deadline, &mut task).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(task = name, error = %e, "task ended abnormally"),
        Err(_) => {
            tracing::warn!(task = name, "task still running at the end of the shutdown time; aborted");
            task.abort();
        }
    }
}
