//! `sequence skip`: the operator's way past a gap or a quarantined file, audited. The
//! skip itself is the engine's (`Engine::skip`).

use super::{EXIT_OK, UsageError};
use crate::config::Settings;
use crate::engine::EngineError;
use tokio_util::sync::CancellationToken;

pub async fn skip(settings: Settings, region: String, seq: u64, reason: String) -> anyhow::Result<i32> {
    if reason.trim().is_empty() {
        return Err(UsageError("--reason must say why the SEQ is skipped".into()).into());
    }
    if seq == 0 {
        return Err(UsageError("--seq must be greater than 0".into()).into());
    }
    let engine = crate::service::wiring::operator_engine(&settings).await?;
    let actor = std::env::var("USER").unwrap_or_else(|_| "operator".into());
    let skipped = match engine.skip(&region, seq, &reason, &actor, &CancellationToken::new()).await {
        Ok(skipped) => skipped,
        Err(EngineError::Usage(why)) => return Err(UsageError(why).into()),
        Err(e) => return Err(e.into()),
    };
    println!(
        "skipped {region} SEQ {seq} ({reason}); next expected SEQ: {}",
        skipped.next_seq.map_or("not set yet".into(), |n| n.to_string())
    );
    Ok(EXIT_OK)
}
