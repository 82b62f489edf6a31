//! The health server: `/healthz` (liveness), `/readyz` (readiness), `/status` (the
//! `status --json` document), `/metrics` (Prometheus) and `/` (the status page).
//!
//! Liveness fails when discovery has not made progress (a completed pass or a processed
//! file) within 3 × the pass interval, or when a long-running worker (a consumer, the
//! event listener, the notifier) has been silent for longer than its own limit: a
//! scheduler that silently stops turns it red, and orchestration restarts the process.
//! Readiness needs the store, the source and the delivery (broker and topology) to answer
//! now, each within [`PROBE_TIMEOUT`].

mod page;
pub mod prometheus;

use crate::core::ledger::LedgerEntry;
use crate::engine::Heartbeat;
use crate::engine::status::{StatusDoc, StatusRules, collect, collect_with_snapshot};
use crate::ports::delivery::Delivery;
use crate::ports::source::ObjectSource;
use crate::ports::store::{Snapshot, Store};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Json};
use axum::routing::get;
use chrono::Utc;
use prometheus::BrokerGauges;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The longest a readiness check waits for one dependency.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct HealthState {
    pub heartbeat: Arc<Heartbeat>,
    pub store: Arc<dyn Store>,
    pub source: Arc<dyn ObjectSource>,
    pub delivery: Arc<dyn Delivery>,
    /// How often discovery passes; liveness allows 3 × this without progress.
    pub pass_interval: Duration,
    pub rules: StatusRules,
}

pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics_text))
        .layer(axum::middleware::map_response(scrub_secrets))
        .with_state(state)
}

/// Every body is scrubbed of registered secrets (`crate::secrets`): an error text from a
/// dependency can quote a URL.
async fn scrub_secrets(response: axum::response::Response) -> axum::response::Response {
    let (parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, 16 << 20).await {
        Ok(bytes) => bytes,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("response body: {e}")).into_response(),
    };
    let text = String::from_utf8_lossy(&bytes);
    let clean = crate::secrets::scrub(&text).into_owned();
    let mut response = axum::response::Response::from_parts(parts, axum::body::Body::from(clean));
    response.headers_mut().remove(header::CONTENT_LENGTH);
    response
}

async fn healthz(State(s): State<HealthState>) -> impl IntoResponse {
    let limit = s
        .pass_interval
        .checked_mul(3)
        .and_then(|d| chrono::TimeDelta::from_std(d).ok())
        .unwrap_or(chrono::TimeDelta::MAX);
    let now = Utc::now();
    let last = s.heartbeat.last_beat();
    let discovery = last.is_some_and(|t| now - t <= limit);
    let wedged = s.heartbeat.wedged_workers(now);
    let alive = discovery && wedged.is_empty();
    let code = if alive { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "alive": alive,
        "last_heartbeat": last.map(|t| t.to_rfc3339()),
        "discovery": if discovery { "ok".to_string() } else { format!("no progress within {}s", limit.num_seconds()) },
        "wedged_workers": wedged,
    });
    (code, Json(body))
}

/// `ok`, or the reason, for one dependency checked within [`PROBE_TIMEOUT`].
async fn check<E: std::fmt::Display>(
    what: &str,
    f: impl std::future::Future<Output = Result<(), E>>,
) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, f).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("{what}: no answer within {}s", PROBE_TIMEOUT.as_secs())),
    }
}

async fn readyz(State(s): State<HealthState>) -> impl IntoResponse {
    let (store, source, delivery) = tokio::join!(
        check("store", s.store.ping()),
        check("source", s.source.ping()),
        check("delivery", async { s.delivery.probe().await.map(|_| ()) }),
    );
    let ready = store.is_ok() && source.is_ok() && delivery.is_ok();
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let verdict = |r: Result<(), String>| r.err().unwrap_or_else(|| "ok".into());
    let last_pass = s.heartbeat.last_pass();
    (
        code,
        Json(json!({
            "ready": ready,
            "store": verdict(store),
            "source": verdict(source),
            "delivery": verdict(delivery),
            "delivery_kind": s.delivery.describe(),
            "last_pass": last_pass.map(|(t, ok)| json!({"at": t.to_rfc3339(), "ok": ok})),
        })),
    )
}

/// The `status --json` document; 503 with the reason when the store does not answer.
async fn status(State(s): State<HealthState>) -> axum::response::Response {
    match collect(s.store.as_ref(), &s.rules, Utc::now()).await {
        Ok(doc) => Json(doc).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": e.to_string() }))).into_response(),
    }
}

async fn metrics_text(State(s): State<HealthState>) -> impl IntoResponse {
    let now = Utc::now();
    let (doc, probe) = tokio::join!(
        tokio::time::timeout(PROBE_TIMEOUT, collect(s.store.as_ref(), &s.rules, now)),
        tokio::time::timeout(PROBE_TIMEOUT, s.delivery.probe()),
    );
    let doc = match doc {
        Ok(Ok(doc)) => Some(doc),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: the store did not answer; store gauges left out");
            None
        }
        Err(_) => None,
    };
    let broker = s.delivery.asynchronous().then_some(match probe {
        Ok(Ok(p)) => BrokerGauges { reachable: true, dead_letter_depth: p.dead_letter_depth },
        _ => BrokerGauges { reachable: false, dead_letter_depth: None },
    });
    let body = prometheus::render(doc.as_ref(), broker.as_ref(), now);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}

async fn page(State(s): State<HealthState>) -> axum::response::Response {
    let now = Utc::now();
    let built = async {
        let (doc, snapshot) = collect_with_snapshot(s.store.as_ref(), &s.rules, now).await?;
        let strips = strips(s.store.as_ref(), &doc, &snapshot).await?;
        Ok::<_, crate::engine::EngineError>(page::render(&doc, &strips, now))
    };
    match built.await {
        Ok(html) => Html(html).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Html(page::unavailable(&e.to_string()))).into_response(),
    }
}

/// Each region's strip window and the files in it: the active ledger holds every file
/// from the expected SEQ on; the settled ones before it in the window are looked up.
async fn strips(
    store: &dyn Store,
    doc: &StatusDoc,
    snapshot: &Snapshot,
) -> Result<BTreeMap<String, ((u64, u64), page::SeqFiles)>, crate::engine::EngineError> {
    let seq_files = |entries: &mut dyn Iterator<Item = &LedgerEntry>, region: &str| -> page::SeqFiles {
        entries
            .filter(|e| e.region() == Some(region))
            .filter_map(|e| Some((e.seq()?, (e.state, e.conflict.is_some(), e.name.clone()))))
            .collect()
    };
    let mut windows = BTreeMap::new();
    let mut positions = Vec::new();
    for stream in &doc.streams {
        let upper = seq_files(&mut snapshot.ledger.iter(), &stream.region);
        let Some(window) = page::window(stream, &upper) else { continue };
        positions.extend((window.0..=window.1).filter(|q| !upper.contains_key(q)).map(|q| (stream.region.clone(), q)));
        windows.insert(stream.region.clone(), window);
    }
    let settled = if positions.is_empty() { Vec::new() } else { store.ledger_lookup(Vec::new(), positions).await? };
    let mut out = BTreeMap::new();
    for (region, window) in windows {
        let mut entries = snapshot.ledger.iter().chain(settled.iter());
        let files: page::SeqFiles =
            seq_files(&mut entries, &region).into_iter().filter(|(q, _)| (window.0..=window.1).contains(q)).collect();
        out.insert(region, (window, files));
    }
    Ok(out)
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
