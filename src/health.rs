//! The health server: `/healthz` (liveness), `/readyz` (readiness) and `/status` (the
//! `status --json` document).
//!
//! Liveness fails when the service stops making progress: no heartbeat (a completed pass
//! or a processed batch) within 3 × `poll_interval`. A scheduler that silently stops turns
//! it red. Readiness needs the store to answer and the last pass to have succeeded.

use crate::engine::Heartbeat;
use crate::engine::status::StatusRules;
use crate::ports::store::Store;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use chrono::Utc;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct HealthState {
    pub heartbeat: Arc<Heartbeat>,
    pub store: Arc<dyn Store>,
    pub poll_interval: Duration,
    pub rules: StatusRules,
}

pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(state)
}

async fn healthz(State(s): State<HealthState>) -> impl IntoResponse {
    let limit = s
        .poll_interval
        .checked_mul(3)
        .and_then(|d| chrono::TimeDelta::from_std(d).ok())
        .unwrap_or(chrono::TimeDelta::MAX);
    let last = s.heartbeat.last_beat();
    let alive = last.is_some_and(|t| Utc::now() - t <= limit);
    let code = if alive { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(json!({ "alive": alive, "last_heartbeat": last.map(|t| t.to_rfc3339()) })))
}

async fn readyz(State(s): State<HealthState>) -> impl IntoResponse {
    let store = s.store.ping().await;
    let last_pass = s.heartbeat.last_pass();
    let ready = store.is_ok() && last_pass.is_some_and(|(_, ok)| ok);
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (
        code,
        Json(json!({
            "ready": ready,
            "store": store.err().map(|e| e.to_string()).unwrap_or_else(|| "ok".into()),
            "last_pass": last_pass.map(|(t, ok)| json!({"at": t.to_rfc3339(), "ok": ok})),
        })),
    )
}

/// The `status --json` document; 503 with the reason when the store does not answer.
async fn status(State(s): State<HealthState>) -> axum::response::Response {
    match crate::engine::status::collect(s.store.as_ref(), &s.rules, Utc::now()).await {
        Ok(doc) => Json(doc).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": e.to_string() }))).into_response(),
    }
}

/// Binds the listener (so a bad address fails at start) and serves until cancelled.
pub async fn serve(
    addr: SocketAddr,
    state: HealthState,
    cancel: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(listen = %listener.local_addr()?, "health server listening");
    let app = router(state);
    Ok(tokio::spawn(async move {
        let shutdown = async move { cancel.cancelled().await };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "health server failed");
        }
    }))
}
