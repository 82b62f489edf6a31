//! `run [--once]`: installs the signal handler and hands over to the service.

use super::EXIT_OK;
use crate::config::Settings;
use crate::service::{self, Mode};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

pub async fn run(settings: Settings, once: bool, listen: Option<SocketAddr>) -> anyhow::Result<i32> {
    let cancel = CancellationToken::new();
    super::signals::install(cancel.clone(), settings.shutdown_timeout);
    let mode = if once { Mode::Once } else { Mode::Service { listen } };
    service::run(settings, mode, cancel).await?;
    Ok(EXIT_OK)
}
