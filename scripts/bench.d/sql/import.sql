-- The naive baseline, step 1 (timed): the prepared CSV of record lines into a staging table.
-- Run in the folder that holds lines.csv.
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA cache_size = -40960;
CREATE TABLE staging (type TEXT, key TEXT, ind TEXT, d INTEGER, s INTEGER, l INTEGER, raw TEXT);
.import --csv lines.csv staging
