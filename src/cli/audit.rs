//! `audit [--from D --to D] [--stuck-after DURATION] [--json]`: exit 0 when the source,
//! the ledger and the store agree; exit 3 with one finding per discrepancy otherwise, so
//! it can run from cron.

use super::{EXIT_FINDINGS, EXIT_OK};
use crate::config::Settings;
use crate::engine::audit::{AuditInput, AuditScope, Finding, audit as compare};
use crate::engine::completion::in_flight;
use anyhow::Context;
use chrono::{NaiveDate, TimeDelta, Utc};
use std::io::Write;
use std::time::Duration;

/// Objects younger than this are left to the next pass rather than reported.
const GRACE: TimeDelta = TimeDelta::minutes(15);

pub async fn audit(
    settings: Settings,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    stuck_after: Duration,
    json: bool,
) -> anyhow::Result<i32> {
    let engine = crate::service::wiring::engine(&settings).await?;
    let listing = engine.source.list().await.context("listing the source")?;
    let snapshot = engine.store.snapshot().await.context("reading the ledger")?;
    let flying = in_flight(engine.store.as_ref(), &snapshot.ledger).await?;
    let dead_letters = if engine.delivery.asynchronous() {
        let probe = engine.delivery.probe().await.context("asking the broker for the dead-letter queue")?;
        probe.dead_letter_depth.map(|d| (d, settings.rabbitmq.dead_letter_queue.clone()))
    } else {
        None
    };
    let scope = AuditScope {
        from,
        to,
        stuck_after: TimeDelta::from_std(stuck_after).context("--stuck-after is too large")?,
        grace: GRACE,
    };
    let input = AuditInput {
        listing: &listing,
        ledger: &snapshot.ledger,
        in_flight: &flying,
        dead_letters,
        profile: &engine.profile,
        now: Utc::now(),
    };
    let findings = compare(&input, &scope);
    let mut out = std::io::stdout().lock();
    if json {
        let doc = serde_json::json!({
            "checked": { "objects": listing.len(), "ledger_entries": snapshot.ledger.len(), "in_flight": flying.len() },
            "findings": findings,
        });
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
    } else {
        write_table(&mut out, &findings, listing.len(), snapshot.ledger.len())?;
    }
    Ok(if findings.is_empty() { EXIT_OK } else { EXIT_FINDINGS })
}

fn write_table(out: &mut impl Write, findings: &[Finding], objects: usize, entries: usize) -> std::io::Result<()> {
    if findings.is_empty() {
        return writeln!(out, "audit: no findings ({objects} objects listed, {entries} ledger entries)");
    }
    writeln!(out, "audit: {} finding(s) ({objects} objects listed, {entries} ledger entries)", findings.len())?;
    for f in findings {
        let kind = serde_json::to_value(f.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        writeln!(out, "\n{kind}  {}\n  {}\n  fix: {}", f.file, f.detail, f.fix)?;
    }
    Ok(())
}
