//! The SQLite store (embedded mode): WAL journal, one writer thread, a reader connection
//! for queries.
//!
//! Durability: WAL with `synchronous = NORMAL`. Every commit is atomic, and survives a
//! crash or kill of the process; after a power loss the last commits may be rolled back
//! (never half-applied). That only means the inbox files they covered are processed again,
//! which the ledger and the version rule make harmless. The
//! page cache is 40 MiB per connection (SQLite sizes its sorter from it too, so memory
//! stays bounded whatever the file size). WAL checkpoints run on a checkpointer thread
//! (`checkpointer.rs`), off the writer's path; the writer only checkpoints itself if the
//! WAL passes 256 MiB (measured: with the default, every file's commit checkpointed).

mod active;
mod checkpointer;
mod full_files;
mod lows;
mod newest;
mod rows;
mod writer;

use crate::core::full::{Sweep, Swept};
use crate::core::lease::Lease;
use crate::core::ledger::{FileState, LedgerEntry};
use crate::core::record::Reject;
use crate::core::record::Tally;
use crate::ports::store::{
    AuditEntry, Commit, Counts, DeadLetter, DeliveredBatch, FileTicket, FileTxn, KnownName, RegionHistory, Shared,
    Snapshot, Store, StoreError, StoredRecord,
};
use async_trait::async_trait;
use backon::{BlockingRetryable, ConstantBuilder};
use chrono::{DateTime, TimeDelta, Utc};
use rows::map_err;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use writer::{SqliteFileTxn, WriterCmd};

const SCHEMA: &str = include_str!("schema.sql");
const SCHEMA_VERSION: &str = "4";
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
const EXPORT_BATCH: usize = 1000;

pub struct SqliteStore {
    path: PathBuf,
    writer: mpsc::Sender<WriterCmd>,
    reader: Arc<Mutex<Connection>>,
    /// Dropping it stops the checkpointer thread.
    _checkpointer: checkpointer::Checkpointer,
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn =
        Connection::open_with_flags(path, flags).map_err(|e| StoreError::Open(format!("{}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(map_err)?;
    let settings = || {
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;
             PRAGMA cache_size = -40960; PRAGMA temp_store = FILE;
             PRAGMA wal_autocheckpoint = 65536; PRAGMA journal_size_limit = 134217728;",
        )
    };
    // Switching a new database to WAL takes a lock SQLite does not wait for: two processes
    // opening a fresh store at once (a `status` during the first `run`) retry it here.
    let busy = |e: &rusqlite::Error| {
        use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
        matches!(e, rusqlite::Error::SqliteFailure(f, _) if matches!(f.code, DatabaseBusy | DatabaseLocked))
    };
    let backoff = ConstantBuilder::default()
        .with_delay(Duration::from_millis(20))
        .with_max_times((BUSY_TIMEOUT.as_millis() / 20) as usize)
        .with_jitter();
    settings.retry(backoff).when(busy).call().map_err(|e| StoreError::Open(format!("{}: {e}", path.display())))?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` and starts its writer thread.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let path = path.into();
        let p = path.clone();
        let (write_conn, read_conn, checkpoint_conn) = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Open(format!("{}: {e}", dir.display())))?;
            }
            let w = connect(&p)?;
            migrate(&w)?;
            let r = connect(&p)?;
            let c = connect(&p)?;
            Ok((w, r, c))
        })
        .await
        .map_err(|e| StoreError::Open(e.to_string()))??;
        let (tx, rx) = mpsc::channel(16);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer::run(write_conn, rx))
            .map_err(|e| StoreError::Open(format!("cannot start the writer thread: {e}")))?;
        let checkpointer = checkpointer::Checkpointer::start(checkpoint_conn)?;
        Ok(Self { path, writer: tx, reader: Arc::new(Mutex::new(read_conn)), _checkpointer: checkpointer })
    }

    /// Live records below their region's and type's low (`lows.rs`), or with none: 0 while
    /// the lows hold. Reads every record: for tests and diagnosis.
    pub async fn records_below_their_low(&self) -> Result<u64, StoreError> {
        self.read(lows::records_below_their_low).await
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            // A poisoned lock only means another reader panicked; the connection is fine.
            let conn = reader.lock().unwrap_or_else(|p| p.into_inner());
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::Io(e.to_string()))?
    }
}

/// Columns version 2 added to `objects` (its new tables are created by `SCHEMA`).
const V2_COLUMNS: &str = "ALTER TABLE objects ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE objects ADD COLUMN records_dead_lettered INTEGER NOT NULL DEFAULT 0;
     UPDATE meta SET value = '2' WHERE key = 'schema_version';";

/// The columns version 3 added: whether a file is counted in `applied_files` and the
/// records a full file removed (`objects`), and how a record a full file removed shows
/// (`records`). Its new tables are created by `SCHEMA`. A row written before it is counted once applied, or once delivered
/// again (its first delivery was counted when it completed).
const V3_COLUMNS: &str = "ALTER TABLE objects ADD COLUMN counted INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE objects ADD COLUMN records_removed INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE objects ADD COLUMN records_ignored INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE records ADD COLUMN s_date INTEGER;
     ALTER TABLE records ADD COLUMN s_seq INTEGER;
     ALTER TABLE records ADD COLUMN s_file TEXT;
     UPDATE objects SET counted = (state = 'applied' OR generation > 1);
     UPDATE meta SET value = '3' WHERE key = 'schema_version';";

/// What version 4 added: the lows (`lows.rs`; the table is created by `SCHEMA`), each
/// region and type of a store from before them at a low of zero.
const V4_LOWS: &str = concat!(
    "INSERT OR IGNORE INTO lows (region, rtype, v_date, v_seq) SELECT DISTINCT region, rtype, 0, 0 FROM records;",
    "UPDATE meta SET value = '4' WHERE key = 'schema_version';"
);

/// Creates what is missing and moves the schema to [`SCHEMA_VERSION`].
///
/// The version is read and moved in one `BEGIN IMMEDIATE` transaction: processes opening
/// the same store at once (a service starting while an operator runs `status`) take turns
/// there, and each later one finds the work done.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(SCHEMA).map_err(map_err)?;
    conn.execute_batch("BEGIN IMMEDIATE").map_err(map_err)?;
    match migrate_in_transaction(conn).and_then(|()| conn.execute_batch("COMMIT").map_err(map_err)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

fn migrate_in_transaction(conn: &Connection) -> Result<(), StoreError> {
    let version = || -> Result<Option<String>, StoreError> {
        conn.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
            .optional()
            .map_err(map_err)
    };
    if version()?.as_deref() == Some("1") {
        conn.execute_batch(V2_COLUMNS).map_err(map_err)?;
    }
    if version()?.as_deref() == Some("2") {
        conn.execute_batch(V3_COLUMNS).map_err(map_err)?;
    }
    if version()?.as_deref() == Some("3") {
        conn.execute_batch(V4_LOWS).map_err(map_err)?;
    }
    match version()? {
        None => {
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?1)", params![SCHEMA_VERSION])
                .map_err(map_err)?;
            Ok(())
        }
        Some(v) if v == SCHEMA_VERSION => Ok(()),
        Some(v) => Err(StoreError::SchemaVersion { found: v, expected: SCHEMA_VERSION.into() }),
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    fn atomic_files(&self) -> bool {
        true
    }

    fn group_lines(&self) -> u64 {
        writer::GROUP_LINES
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(map_err)).await
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        // One read transaction, so ledger and streams are consistent with each other.
        self.read(|c| {
            in_read_transaction(c, |c| Ok(Snapshot { ledger: rows::load_ledger(c)?, streams: rows::load_streams(c)? }))
        })
        .await
    }

    async fn close(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer.send(WriterCmd::Truncate(tx)).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn active(&self) -> Result<Snapshot, StoreError> {
        self.read(|c| in_read_transaction(c, active::active)).await
    }

    async fn known_names(&self) -> Result<Vec<KnownName>, StoreError> {
        self.read(active::known_names).await
    }

    async fn ledger_lookup(
        &self,
        names: Vec<String>,
        positions: Vec<(String, u64)>,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        self.read(move |c| active::lookup(c, &names, &positions)).await
    }

    async fn region_history(&self, since: DateTime<Utc>) -> Result<Vec<RegionHistory>, StoreError> {
        self.read(move |c| in_read_transaction(c, |c| active::region_history(c, since))).await
    }

    async fn recent_audit(&self, n: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.read(move |c| active::recent_audit(c, n)).await
    }

    async fn files_in_state(&self, state: FileState) -> Result<Vec<LedgerEntry>, StoreError> {
        self.read(move |c| rows::load_ledger_in(c, state)).await
    }

    async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        if commit.is_empty() {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        self.writer.send(WriterCmd::Commit(commit, tx)).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn sweep(&self, sweep: &Sweep) -> Result<Swept, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer.send(WriterCmd::Sweep(sweep.clone(), tx)).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn begin_file(&self, ticket: FileTicket) -> Result<Box<dyn FileTxn>, StoreError> {
        // A few batches queued, so the writer has the next one at hand (`FileTxn::apply`
        // does not wait for a batch to be applied).
        let (txn_tx, txn_rx) = mpsc::channel(4);
        let (tx, rx) = oneshot::channel();
        self.writer.send(WriterCmd::BeginFile(ticket, txn_rx, tx)).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)??;
        Ok(Box::new(SqliteFileTxn { commands: txn_tx }))
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        self.read(|c| {
            let get = |name: &str| -> Result<u64, StoreError> {
                c.query_row("SELECT value FROM counters WHERE name = ?1", params![name], |r| r.get(0))
                    .optional()
                    .map(|v| v.unwrap_or(0))
                    .map_err(map_err)
            };
            Ok(Counts {
                applied_files: get("applied_files")?,
                duplicate_files: get("duplicate_files")?,
                records_applied: get("records_applied")?,
                records_stale: get("records_stale")?,
                records_unchanged: get("records_unchanged")?,
                records_rejected: c.query_row("SELECT count(*) FROM rejects", [], |r| r.get(0)).map_err(map_err)?,
                records_dead_lettered: get("records_dead_lettered")?,
                records_removed: get("records_removed")?,
                records_ignored: get("records_ignored")?,
            })
        })
        .await
    }

    async fn rejects(&self, file: Option<String>) -> Result<Vec<Reject>, StoreError> {
        self.read(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT file, line, reason, raw FROM rejects WHERE ?1 IS NULL OR file = ?1 ORDER BY file, line",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map(params![file], |r| {
                    Ok(Reject {
                        file: r.get::<_, String>(0)?.into(),
                        line: r.get(1)?,
                        reason: r.get(2)?,
                        raw: r.get(3)?,
                    })
                })
                .map_err(map_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(map_err)
        })
        .await
    }

    async fn audit_log(&self) -> Result<Vec<AuditEntry>, StoreError> {
        self.read(|c| {
            let mut stmt =
                c.prepare("SELECT at, actor, action, region, seq, detail FROM audit ORDER BY id").map_err(map_err)?;
            let rows = stmt.query_map([], rows::read_audit).map_err(map_err)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row.map_err(map_err)??);
            }
            Ok(out)
        })
        .await
    }

    async fn export(&self, sink: mpsc::Sender<Vec<StoredRecord>>) -> Result<u64, StoreError> {
        // One read transaction: shapes and records from the same snapshot.
        self.read(move |c| in_read_transaction(c, |c| export_rows(c, &sink))).await
    }

    async fn apply_delivered(&self, batches: Vec<DeliveredBatch>) -> Result<Vec<Option<Tally>>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer.send(WriterCmd::Delivered(batches, tx)).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read_shared(&self, key: &str) -> Result<Option<Shared>, StoreError> {
        let key = key.to_string();
        self.read(move |c| {
            c.query_row("SELECT version, value FROM shared WHERE key = ?1", params![key], |r| {
                Ok(Shared { version: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0), value: r.get(1)? })
            })
            .optional()
            .map_err(map_err)
        })
        .await
    }

    async fn write_shared(&self, key: &str, expected: Option<u64>, value: String) -> Result<Option<u64>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(WriterCmd::Shared(key.to_string(), expected, value, tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn claim_lease(
        &self,
        name: &str,
        owner: &str,
        ttl: TimeDelta,
        now: DateTime<Utc>,
    ) -> Result<Option<Lease>, StoreError> {
        let (tx, rx) = oneshot::channel();
        let cmd = WriterCmd::Lease(name.to_string(), owner.to_string(), Some(ttl), now, tx);
        self.writer.send(cmd).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn release_lease(&self, name: &str, owner: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        let cmd = WriterCmd::Lease(name.to_string(), owner.to_string(), None, now, tx);
        self.writer.send(cmd).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?.map(|_| ())
    }

    async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        self.read(rows::load_leases).await
    }

    async fn keep_rejects(&self, batch: Vec<Reject>) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer.send(WriterCmd::Rejects(batch, tx)).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn mark_dead_lettered(&self, marks: Vec<DeadLetter>) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer.send(WriterCmd::DeadLetters(marks, tx)).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn delivery_progress(&self, file: &str, generation: u32) -> Result<Tally, StoreError> {
        let file = file.to_string();
        self.read(move |c| in_read_transaction(c, |c| rows::delivery_progress(c, &file, generation))).await
    }
}

/// Runs `read` in one read transaction (a consistent snapshot), always closing it.
fn in_read_transaction<T>(
    c: &Connection,
    read: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    c.execute_batch("BEGIN").map_err(map_err)?;
    let result = read(c);
    let _ = c.execute_batch("COMMIT");
    result
}

/// Streams every record, sorted by (type, key), in batches.
fn export_rows(c: &Connection, sink: &mpsc::Sender<Vec<StoredRecord>>) -> Result<u64, StoreError> {
    let shapes = rows::load_shapes(c)?;
    let mut stmt = c
        .prepare(
            "SELECT rtype, key, deleted OR s_date IS NOT NULL, region, COALESCE(s_file, file),
               COALESCE(s_date, v_date), COALESCE(s_seq, v_seq), CASE WHEN s_date IS NULL THEN v_line ELSE 0 END,
               shape, field_values
             FROM records ORDER BY rtype, key",
        )
        .map_err(map_err)?;
    let rows = stmt.query_map([], |r| rows::read_record(r, &shapes)).map_err(map_err)?;
    let mut batch = Vec::with_capacity(EXPORT_BATCH);
    let mut sent = 0u64;
    for row in rows {
        batch.push(row.map_err(map_err)??);
        if batch.len() == EXPORT_BATCH {
            sent += batch.len() as u64;
            if sink.blocking_send(std::mem::replace(&mut batch, Vec::with_capacity(EXPORT_BATCH))).is_err() {
                return Ok(sent); // the consumer went away
            }
        }
    }
    sent += batch.len() as u64;
    if !batch.is_empty() {
        let _ = sink.blocking_send(batch);
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ledger::{FileState, LedgerEntry, Listed, Observation, observe};
    use crate::core::name::NameProfile;
    use crate::core::record::Record;

    fn entry(name: &str, state: FileState, generation: u32) -> LedgerEntry {
        let listed = Listed { key: name.into(), size: 1, modified: Utc::now(), fingerprint: "f".into(), problem: None };
        let Observation::New(e) = observe(&listed, None, &NameProfile::default(), Utc::now()) else {
            panic!("a new name is observed as new");
        };
        LedgerEntry { state, generation, ..e }
    }

    /// Several processes opening the same fresh store at once (a service starting while
    /// an operator runs `status`) all open it: none fails on the schema version row.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fresh_store_opened_at_once_by_several_opens_every_time() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("store.db");
            let opens: Vec<_> = (0..6).map(|_| tokio::spawn(SqliteStore::open(path.clone()))).collect();
            for open in opens {
                if let Err(e) = open.await.unwrap() {
                    panic!("round {round}: {e}");
                }
            }
        }
    }

    /// A version 2 store gets the `counted` flag derived from what its rows say: applied,
    /// or delivered again (the first delivery was counted when it completed).
    #[tokio::test]
    async fn version_2_rows_get_their_counted_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let rows = [
            ("DE_SEV_RMC_20220730_00000001.DAT", FileState::Applied, 1, true),
            ("DE_SEV_RMC_20220730_00000002.DAT", FileState::Delivered, 1, false),
            ("DE_SEV_RMC_20220730_00000003.DAT", FileState::Delivered, 2, true),
            ("DE_SEV_RMC_20220730_00000004.DAT", FileState::Pending, 0, false),
        ];
        {
            let store = SqliteStore::open(&path).await.unwrap();
            let ledger = rows.iter().map(|(n, s, g, _)| entry(n, *s, *g)).collect();
            store.commit(Commit { ledger, ..Default::default() }).await.unwrap();
        }
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "ALTER TABLE objects DROP COLUMN counted; ALTER TABLE objects DROP COLUMN records_removed;
             ALTER TABLE objects DROP COLUMN records_ignored;
             DROP TABLE lows;
             ALTER TABLE records DROP COLUMN s_date; ALTER TABLE records DROP COLUMN s_seq;
             ALTER TABLE records DROP COLUMN s_file; DROP TABLE full_files; DROP TABLE sweeps;
             UPDATE meta SET value = '2' WHERE key = 'schema_version';",
        )
        .unwrap();
        drop(conn);
        let store = SqliteStore::open(&path).await.unwrap();
        let ledger = store.snapshot().await.unwrap().ledger;
        let found: Vec<(String, bool)> = ledger.into_iter().map(|e| (e.name, e.counted)).collect();
        let expected: Vec<(String, bool)> = rows.iter().map(|(n, _, _, c)| (n.to_string(), *c)).collect();
        assert_eq!(found, expected);
    }

    fn pos(key: &str, day: u32, seq: u64, line: u64) -> crate::core::record::Record {
        use crate::core::record::{Fields, Record};
        use crate::core::version::Version;
        Record {
            record_type: "POS".into(),
            key: key.into(),
            deleted: false,
            version: Version { date: chrono::NaiveDate::from_ymd_opt(2022, 7, day).unwrap(), seq, line },
            region: "SEV".into(),
            file: format!("DE_SEV_RMC_202207{day:02}_{seq:08}.DAT").into(),
            fields: Some(Fields::new(vec![Arc::from("position_title")].into(), ["t"])),
        }
    }

    fn full_file_sweep(day: u32, seq: u64) -> Sweep {
        use crate::core::full::{FullFile, FullFileMode};
        use crate::core::version::Version;
        Sweep {
            region: "SEV".into(),
            file: format!("DE_SEV_RMF_202207{day:02}_{seq:08}.DAT"),
            generation: 1,
            version: Version { date: chrono::NaiveDate::from_ymd_opt(2022, 7, day).unwrap(), seq, line: 0 },
            full: Some(FullFile { mode: FullFileMode::Tombstone, record_types: vec!["POS".into()] }),
        }
    }

    /// A store from before the lows (version 3) still has its full files' sweeps read the
    /// records they must: its regions and types start at a low of zero.
    #[tokio::test]
    async fn version_3_records_are_swept_by_the_next_full_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let deliver = |receipt: &str, records| DeliveredBatch {
            receipt: receipt.into(),
            file: "f".into(),
            generation: 1,
            records,
        };
        {
            let store = SqliteStore::open(&path).await.unwrap();
            let c1 = deliver("c1", vec![pos("1", 30, 1, 2), pos("2", 30, 1, 3)]);
            store.apply_delivered(vec![c1]).await.unwrap();
        }
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("DROP TABLE lows; UPDATE meta SET value = '3' WHERE key = 'schema_version';").unwrap();
        drop(conn);
        let store = SqliteStore::open(&path).await.unwrap();
        // the full file holds POS/1 only: POS/2, written before the upgrade, goes
        let f3 = Record { file: "DE_SEV_RMF_20220731_00000003.DAT".into(), ..pos("1", 31, 3, 2) };
        store.apply_delivered(vec![deliver("f3", vec![f3])]).await.unwrap();
        assert_eq!(store.sweep(&full_file_sweep(31, 3)).await.unwrap().removed, 1);
        assert_eq!(store.records_below_their_low().await.unwrap(), 0);
    }

    /// A connection to the store at `path` that has made it refuse every record keyed `boom`.
    fn refusing_boom(path: &Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON records WHEN NEW.key = 'boom'
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        )
        .unwrap();
        conn
    }

    /// The ticket of the first generation of the batch file `name`.
    fn ticket(name: &str, record_lines: u64) -> FileTicket {
        use crate::core::name::NameVerdict;
        let NameVerdict::Batch(file) = NameProfile::default().classify(name) else { panic!("{name}") };
        FileTicket { file, key: name.into(), reapply: false, record_lines, generation: 1, together: false }
    }

    /// A batch that fails to apply has no reply of its own (`FileTxn::apply` does not
    /// wait): the failure is the answer to the file's next call, its commit fails too,
    /// and nothing of the file is written.
    #[tokio::test]
    async fn a_batch_that_fails_is_answered_later_and_nothing_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let conn = refusing_boom(&path);
        let mut txn = store.begin_file(ticket("DE_SEV_RMC_20220730_00000001.DAT", 3)).await.unwrap();
        txn.apply(vec![pos("1", 30, 1, 2)]).await.unwrap();
        txn.apply(vec![pos("boom", 30, 1, 3)]).await.unwrap(); // queued: no answer yet
        txn.apply(vec![pos("2", 30, 1, 4)]).await.unwrap();
        // the batch's own error, not that of a step refused after it
        let settled = txn.settle().await.map_err(|e| e.to_string());
        assert!(
            settled.as_ref().is_err_and(|e| e.contains("refused by the test") && !e.contains("aborted")),
            "{settled:?}"
        );
        let committed = txn.commit(Commit::default()).await;
        assert!(committed.is_err_and(|e| e.to_string().contains("aborted")));
        let written: u64 = conn.query_row("SELECT count(*) FROM records", [], |r| r.get(0)).unwrap();
        assert_eq!(written, 0);
    }

    /// Deliveries that queue while the writer is busy are written together; a call whose
    /// record the store refuses gets its own error, and the calls beside it their tallies.
    #[tokio::test]
    async fn deliveries_written_together_answer_each_call_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = Arc::new(SqliteStore::open(&path).await.unwrap());
        let conn = refusing_boom(&path);
        let deliver = |receipt: &str, records| DeliveredBatch {
            receipt: receipt.into(),
            file: "DE_SEV_RMC_20220730_00000001.DAT".into(),
            generation: 1,
            records,
        };
        // a file's transaction holds the writer while the calls queue
        let mut txn = store.begin_file(ticket("DE_SEV_RMC_20220729_00000001.DAT", 1)).await.unwrap();
        txn.apply(vec![pos("0", 29, 1, 2)]).await.unwrap();
        let call = |batches: Vec<DeliveredBatch>| {
            let store = store.clone();
            tokio::spawn(async move { store.apply_delivered(batches).await })
        };
        let first = call(vec![deliver("m1", vec![pos("1", 30, 1, 2)]), deliver("m2", vec![pos("1", 30, 1, 3)])]);
        let refused = call(vec![deliver("m3", vec![pos("2", 30, 1, 4), pos("boom", 30, 1, 5)])]);
        let last = call(vec![deliver("m4", vec![pos("3", 30, 1, 6)])]);
        tokio::time::sleep(Duration::from_millis(100)).await;
        txn.settle().await.unwrap();
        txn.commit(Commit::default()).await.unwrap();

        let first = first.await.unwrap().unwrap();
        let applied: Vec<u64> = first.iter().map(|t| t.as_ref().map_or(0, |t| t.applied)).collect();
        assert_eq!(applied, [1, 1]);
        let refused = refused.await.unwrap().map_err(|e| e.to_string());
        assert!(refused.as_ref().is_err_and(|e| e.contains("refused by the test")), "{refused:?}");
        assert_eq!(last.await.unwrap().unwrap().iter().map(|t| t.as_ref().map_or(0, |t| t.applied)).sum::<u64>(), 1);
        let keys: Vec<String> = conn
            .prepare("SELECT key FROM records ORDER BY key")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(keys, ["0", "1", "3"]);
        let receipts: u64 = conn.query_row("SELECT count(*) FROM receipts", [], |r| r.get(0)).unwrap();
        assert_eq!(receipts, 3);
    }
}
