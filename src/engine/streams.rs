//! Rebuilding every region's stream from what the store holds.

use crate::core::ledger::{FileState, LedgerEntry};
use crate::core::sequencer::{Stream, StreamRecord};
use std::collections::{BTreeMap, HashSet};

/// Builds one [`Stream`] per region from the ledger and the saved stream records. When
/// `present` is given, waiting files that are no longer in the source are left out (an
/// object deleted before it was processed is absent, not held).
pub fn build_streams<'a>(
    ledger: impl IntoIterator<Item = &'a LedgerEntry>,
    records: &[StreamRecord],
    present: Option<&HashSet<String>>,
) -> BTreeMap<String, Stream> {
    let mut streams: BTreeMap<String, Stream> =
        records.iter().map(|r| (r.region.clone(), Stream::new(r.clone()))).collect();
    for entry in ledger {
        let Some(batch) = &entry.batch else { continue };
        let waiting = matches!(entry.state, FileState::Pending);
        if waiting && present.is_some_and(|p| !p.contains(&entry.name)) {
            continue;
        }
        streams
            .entry(batch.region.clone())
            .or_insert_with(|| Stream::new(StreamRecord { region: batch.region.clone(), ..Default::default() }))
            .observe(&entry.name, batch.seq, sequencing_state(entry.state));
    }
    for stream in streams.values_mut() {
        stream.settle();
    }
    streams
}

/// The sequencer only tells processed from waiting files: a file handed to the broker in
/// full counts as applied.
fn sequencing_state(state: FileState) -> FileState {
    if state.is_processed() { FileState::Applied } else { state }
}
