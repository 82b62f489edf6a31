//! `backfill`: a date range under the version rule, with a progress bar and a summary.

use super::EXIT_OK;
use crate::config::Settings;
use chrono::NaiveDate;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

pub async fn backfill(
    settings: Settings,
    from: NaiveDate,
    to: NaiveDate,
    regions: Vec<String>,
    dry_run: bool,
) -> anyhow::Result<i32> {
    let engine = crate::service::wiring::engine(&settings).await?;
    let cancel = CancellationToken::new();
    let consumers =
        if dry_run { None } else { crate::service::wiring::consumers(&settings, engine.store.clone()).await? };
    let consumers = consumers.map(|pool| pool.spawn(cancel.clone(), &engine.heartbeat));
    super::signals::install(cancel.clone(), settings.shutdown_timeout);
    let (plan, work) = engine.backfill_plan(from, to, &regions, !dry_run, &cancel).await?;
    if dry_run {
        println!(
            "backfill {from}..{to}: {} file(s) would be processed",
            plan.files.iter().filter(|f| f.excluded.is_none()).count()
        );
        for f in &plan.files {
            let note = f.excluded.as_deref().map(|w| format!("  (left out: {w})")).unwrap_or_default();
            println!("{}  {:>8}  {}  {}  [{}]{}", f.region, f.seq, f.date, f.name, f.state, note);
        }
        return Ok(EXIT_OK);
    }
    // Hidden automatically when stderr is not a terminal.
    let bar = ProgressBar::new(plan.files.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} files  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = engine
        .backfill(&plan, &work, &cancel, |f, _| {
            bar.set_message(f.name.clone());
            bar.inc(1);
        })
        .await;
    bar.finish_and_clear();
    let report = report?;
    if consumers.is_some() {
        crate::service::drain(&engine, &cancel).await?;
        println!("all delivered files were applied by the consumers (per-file counts: `status`)");
    }
    cancel.cancel();
    if let Err(e) = engine.store.close().await {
        tracing::warn!(error = %e, "closing the store");
    }
    let t = report.tally;
    println!(
        "backfill {from}..{to}: {} file(s) processed; records {} applied, {} stale, {} unchanged, {} rejected",
        report.processed, t.applied, t.stale, t.unchanged, t.rejected
    );
    for (region, files, t) in &report.by_region {
        println!(
            "  {region}: {files} file(s); {} applied, {} stale, {} unchanged, {} rejected",
            t.applied, t.stale, t.unchanged, t.rejected
        );
    }
    for (name, why) in report.quarantined.iter().chain(&report.excluded) {
        println!("  not applied: {name}: {why}");
    }
    Ok(EXIT_OK)
}
