//! `generate`: synthetic files for demos and benchmarks.

use super::{EXIT_OK, UsageError};
use crate::generate::{DEFAULT_REGIONS, GenerateSpec, generate as write_files};
use chrono::NaiveDate;
use std::path::Path;

pub fn generate(
    out: &Path,
    regions: &[String],
    days: u32,
    start: NaiveDate,
    records: u64,
    seed: u64,
) -> anyhow::Result<i32> {
    let regions: Vec<String> = if regions.is_empty() {
        DEFAULT_REGIONS.iter().map(|r| r.to_string()).collect()
    } else {
        regions.iter().map(|r| r.trim().to_string()).collect()
    };
    if let Some(bad) = regions.iter().find(|r| r.len() != 3 || !r.bytes().all(|b| b.is_ascii_uppercase())) {
        return Err(UsageError(format!("--regions: {bad:?} is not 3 upper-case letters")).into());
    }
    if !(1..=100_000).contains(&days) {
        return Err(UsageError("--days must be between 1 and 100000".into()).into());
    }
    if start.checked_add_days(chrono::Days::new(u64::from(days))).is_none() {
        return Err(UsageError(format!("--start {start} plus {days} days is not a date")).into());
    }
    let spec = GenerateSpec { regions, days, start, records, seed };
    let files = write_files(out, &spec)?;
    println!(
        "wrote {} files ({} regions x {} days x {} records) to {}",
        files.len(),
        spec.regions.len(),
        days,
        records,
        out.display()
    );
    Ok(EXIT_OK)
}
