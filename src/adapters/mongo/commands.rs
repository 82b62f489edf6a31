//! Counting the commands the store sends (`esr_ingest_store_commands_total`): how many
//! round trips a record costs is a property of the code, measured the same on MongoDB
//! and on the MongoDB-wire server the tests use, whatever either's speed.
//!
//! Invariant: both labels take a closed set of values: the commands and collections
//! this store uses, anything else counted as `other`.

use mongodb::event::EventHandler;
use mongodb::event::command::CommandEvent;

/// The commands this store sends (the driver's `hello` and `endSessions` included).
const COMMANDS: [&str; 16] = [
    "find",
    "getMore",
    "insert",
    "update",
    "delete",
    "aggregate",
    "findAndModify",
    "count",
    "distinct",
    "createIndexes",
    "listIndexes",
    "killCursors",
    "ping",
    "hello",
    "endSessions",
    "isMaster",
];

/// The collections of the store's database.
const COLLECTIONS: [&str; 15] = [
    super::records::RECORDS,
    super::RECEIPTS,
    super::DEAD_LETTERS,
    super::REJECTS,
    super::SHARED,
    super::journal::JOURNAL,
    super::journal::LEDGER,
    super::journal::STREAMS,
    super::journal::AUDIT,
    super::leases::LEASES,
    super::full_files::FULL_FILES,
    super::full_files::SWEEPS,
    super::rollup::ROLLUP,
    "admin",
    "none",
];

fn bounded<'a>(value: &str, known: &[&'a str]) -> &'a str {
    known.iter().find(|k| **k == value).copied().unwrap_or("other")
}

/// The event handler that counts every command the client starts, and traces each
/// finished one with its time (`ESR_INGEST_LOG=esr_ingest::store::commands=trace` shows
/// where a read spends its round trips).
pub(super) fn counter() -> EventHandler<CommandEvent> {
    EventHandler::callback(|event: CommandEvent| {
        let started = match event {
            CommandEvent::Started(started) => started,
            CommandEvent::Succeeded(done) => {
                tracing::trace!(target: "esr_ingest::store::commands", command = %done.command_name,
                    micros = micros(done.duration), returned = returned(&done.reply), "store command done");
                return;
            }
            CommandEvent::Failed(failed) => {
                tracing::trace!(target: "esr_ingest::store::commands", command = %failed.command_name,
                    micros = micros(failed.duration), "store command failed");
                return;
            }
            _ => return,
        };
        let name = started.command_name.as_str();
        // Most commands name their collection as their own value; getMore in `collection`.
        let collection = started
            .command
            .get_str(name)
            .or_else(|_| started.command.get_str("collection"))
            .unwrap_or(if started.db == "admin" { "admin" } else { "none" });
        crate::telemetry::metrics::store_command(bounded(name, &COMMANDS), bounded(collection, &COLLECTIONS));
        tracing::trace!(target: "esr_ingest::store::commands", command = name, collection, "store command started");
    })
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// How many documents a reply carries (a cursor's batch, or the values of `distinct`).
fn returned(reply: &mongodb::bson::Document) -> usize {
    let batch = reply
        .get_document("cursor")
        .ok()
        .and_then(|c| c.get_array("firstBatch").or_else(|_| c.get_array("nextBatch")).ok());
    batch.or_else(|| reply.get_array("values").ok()).map_or(0, Vec::len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_within_their_sets() {
        assert_eq!(bounded("update", &COMMANDS), "update");
        assert_eq!(bounded("dropDatabase", &COMMANDS), "other");
        assert_eq!(bounded("records", &COLLECTIONS), "records");
        assert_eq!(bounded("someone_elses", &COLLECTIONS), "other");
    }
}
