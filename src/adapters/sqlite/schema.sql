-- esr-ingest SQLite store, schema version 4 (version 1 lacked the broker columns and tables,
-- version 2 the `counted` flag, version 3 the lows; `migrate` adds them).
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- The ledger: every object name ever seen.
CREATE TABLE IF NOT EXISTS objects (
    name                 TEXT PRIMARY KEY,
    key                  TEXT NOT NULL,
    region               TEXT,
    kind                 TEXT,
    file_date            INTEGER,
    seq                  INTEGER,
    size                 INTEGER NOT NULL,
    fingerprint          TEXT NOT NULL,
    sha256               TEXT,
    state                TEXT NOT NULL,
    reason               TEXT,
    conflict_fingerprint TEXT,
    conflict_sha256      TEXT,
    conflict_reason      TEXT,
    conflict_at          TEXT,
    first_seen           TEXT NOT NULL,
    updated_at           TEXT NOT NULL,
    record_lines         INTEGER NOT NULL DEFAULT 0,
    records_applied      INTEGER NOT NULL DEFAULT 0,
    records_stale        INTEGER NOT NULL DEFAULT 0,
    records_unchanged    INTEGER NOT NULL DEFAULT 0,
    records_rejected     INTEGER NOT NULL DEFAULT 0,
    generation           INTEGER NOT NULL DEFAULT 0,
    records_dead_lettered INTEGER NOT NULL DEFAULT 0,
    -- 1 once the file is counted in `applied_files` (the first time it became applied)
    counted              INTEGER NOT NULL DEFAULT 0,
    -- records of its region it turned into tombstones (a full file, `core::full`)
    records_removed      INTEGER NOT NULL DEFAULT 0,
    -- lines of record types the layout does not apply
    records_ignored      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS objects_by_stream ON objects (region, seq);

-- Ids of recent commits (`Commit::id`): a retried write whose first attempt took effect
-- is recognised and not applied twice. Pruned after a week.
CREATE TABLE IF NOT EXISTS commits (
    id TEXT PRIMARY KEY,
    at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS commits_by_age ON commits (at);

CREATE TABLE IF NOT EXISTS streams (
    region        TEXT PRIMARY KEY,
    next_seq      INTEGER,
    waiting_since TEXT
);

CREATE TABLE IF NOT EXISTS skips (
    region TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    PRIMARY KEY (region, seq)
) WITHOUT ROWID;

-- The field-name lists of record types, as JSON arrays. A record row refers to one and
-- stores only its values, so rows stay compact and a later change of layout cannot
-- mislabel values stored under an earlier one.
CREATE TABLE IF NOT EXISTS shapes (
    id    INTEGER PRIMARY KEY,
    rtype TEXT NOT NULL,
    names TEXT NOT NULL,
    UNIQUE (rtype, names)
);

-- Current records: one row per identity (type, key), tombstones included
-- (shape and field_values are NULL for a tombstone). The version columns hold the
-- identity's last write, which the version rule compares with. A record a full file
-- removed (`core::full`) shows as a tombstone of that file: s_file at (s_date, s_seq, 0);
-- its last write stays in the other columns (its field values are dropped).
CREATE TABLE IF NOT EXISTS records (
    rtype        TEXT NOT NULL,
    key          TEXT NOT NULL,
    deleted      INTEGER NOT NULL,
    region       TEXT NOT NULL,
    file         TEXT NOT NULL,
    v_date       INTEGER NOT NULL,
    v_seq        INTEGER NOT NULL,
    v_line       INTEGER NOT NULL,
    shape        INTEGER REFERENCES shapes (id),
    field_values TEXT,
    s_date       INTEGER,
    s_seq        INTEGER,
    s_file       TEXT,
    PRIMARY KEY (rtype, key)
) WITHOUT ROWID;

-- Full files applied in `tombstone` mode (`core::full`), per region and record type they
-- cover: their version (date, SEQ; line 0) and name. A few per region and year.
CREATE TABLE IF NOT EXISTS full_files (
    region TEXT NOT NULL,
    rtype  TEXT NOT NULL,
    v_date INTEGER NOT NULL,
    v_seq  INTEGER NOT NULL,
    file   TEXT NOT NULL,
    PRIMARY KEY (region, rtype, v_date, v_seq)
) WITHOUT ROWID;

-- Per region and record type, a version (date, SEQ) at or below that of every live
-- record of that region and type (`lows.rs`): a full file's sweep reads the records of a
-- type only where its region may have one below the version it compares with. A few
-- rows per region.
CREATE TABLE IF NOT EXISTS lows (
    region TEXT NOT NULL,
    rtype  TEXT NOT NULL,
    v_date INTEGER NOT NULL,
    v_seq  INTEGER NOT NULL,
    PRIMARY KEY (region, rtype)
) WITHOUT ROWID;

-- Records a sweep removed, per file and delivery (only when it removed any), so a retried
-- sweep reports the same count and a redelivery counts its own (none).
CREATE TABLE IF NOT EXISTS sweeps (
    file       TEXT NOT NULL,
    generation INTEGER NOT NULL,
    removed    INTEGER NOT NULL,
    PRIMARY KEY (file, generation)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS rejects (
    file   TEXT NOT NULL,
    line   INTEGER NOT NULL,
    reason TEXT NOT NULL,
    raw    TEXT NOT NULL,
    PRIMARY KEY (file, line)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     TEXT NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    region TEXT,
    seq    INTEGER,
    detail TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);

-- Broker delivery: one receipt per applied message (its id names file, generation and
-- first line), written in the same transaction as the message's records, so a
-- redelivered message changes nothing and is counted once.
CREATE TABLE IF NOT EXISTS receipts (
    id         TEXT PRIMARY KEY,
    file       TEXT NOT NULL,
    generation INTEGER NOT NULL,
    applied    INTEGER NOT NULL,
    stale      INTEGER NOT NULL,
    unchanged  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS receipts_by_file ON receipts (file, generation);

-- Lines a consumer sent to the dead-letter queue; cleared when a replay applies them.
CREATE TABLE IF NOT EXISTS dead_letters (
    file       TEXT NOT NULL,
    generation INTEGER NOT NULL,
    line       INTEGER NOT NULL,
    reason     TEXT NOT NULL,
    PRIMARY KEY (file, generation, line)
) WITHOUT ROWID;

-- Small documents shared by every instance, changed by compare-and-set (the alert
-- state). Needs no schema version: older builds never read it.
CREATE TABLE IF NOT EXISTS shared (
    key     TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    value   TEXT NOT NULL
);

-- Region leases (core::lease): the owner, the fencing token and the expiry. A fenced
-- commit checks its token here inside its own transaction.
CREATE TABLE IF NOT EXISTS leases (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    token      INTEGER NOT NULL,
    expires_at TEXT NOT NULL
);

-- What a pass and `status` read instead of the whole ledger (`active.rs`): the entries
-- that are not applied (or carry a conflict, or a bad name), and arrivals by region.
CREATE INDEX IF NOT EXISTS objects_open ON objects (name)
    WHERE state <> 'applied' OR conflict_reason IS NOT NULL OR region IS NULL;
CREATE INDEX IF NOT EXISTS objects_by_arrival ON objects (region, first_seen);
-- Every name a pass compares its listing with (`known_names`), read from this narrow
-- index instead of the wide rows.
CREATE INDEX IF NOT EXISTS objects_known ON objects (name, fingerprint, conflict_fingerprint);
