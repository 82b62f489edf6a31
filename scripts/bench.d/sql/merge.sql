-- The naive baseline, step 2 (timed): one keyed merge under the version rule. A line wins
-- when its version (file date, SEQ, line number) is greater than the stored one; a `D`
-- line leaves a tombstone (deleted = 1, no raw line) that keeps its version.
PRAGMA synchronous = NORMAL;
PRAGMA cache_size = -40960;
CREATE TABLE records (type TEXT NOT NULL, key TEXT NOT NULL, deleted INTEGER NOT NULL,
  d INTEGER NOT NULL, s INTEGER NOT NULL, l INTEGER NOT NULL, raw TEXT, PRIMARY KEY (type, key));
INSERT INTO records (type, key, deleted, d, s, l, raw)
  SELECT type, key, ind = 'D', d, s, l, CASE WHEN ind = 'D' THEN NULL ELSE raw END
  FROM staging WHERE true
  ON CONFLICT (type, key) DO UPDATE SET
    deleted = excluded.deleted, d = excluded.d, s = excluded.s, l = excluded.l, raw = excluded.raw
  WHERE (excluded.d, excluded.s, excluded.l) > (records.d, records.s, records.l);
