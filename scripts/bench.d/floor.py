#!/usr/bin/env python3
"""The floor for scripts/bench: the least work that yields the final records, in
python 3 (standard library csv, hashlib, sqlite3), timed as a whole by the caller.

  floor.py DIR DB  ->  JSON of phase times on stdout

1. read each batch file's bytes and sha256 them;
2. decode and split the lines with the csv module, keeping, per identity (record type,
   position ID), the line with the greatest version (file date, SEQ, line number);
3. write only those final records into a fresh SQLite table (the baseline's schema and
   the store's pragmas: WAL, synchronous NORMAL) in one transaction.

No validation beyond the CSV split, no ledger, no sequencing. The full-file rule is left
out: in generated data each region's full file (RMF) is its first file, so it removes
nothing.
"""

import csv
import hashlib
import json
import os
import re
import sqlite3
import sys
import time

NAME = re.compile(r"^DE_([A-Z]{3})_(RMC|RMF)_(\d{8})_(\d{8})\.DAT$")


def main(folder, db):
    t0 = time.perf_counter()
    blobs = []
    for name in sorted(os.listdir(folder)):
        m = NAME.match(name)
        if not m:
            continue
        with open(os.path.join(folder, name), "rb") as f:
            data = f.read()
        hashlib.sha256(data).hexdigest()
        blobs.append((int(m.group(3)), int(m.group(4)), data))
    t1 = time.perf_counter()

    newest = {}
    lines = 0
    for date, seq, data in blobs:
        text = data.decode("utf-8-sig").split("\n")
        reader = csv.reader(text)
        for fields in reader:
            if not fields or fields[0] in ("HDR", "TRL"):
                continue
            lines += 1
            lineno = reader.line_num
            ident = (fields[0], fields[1])
            v = (date, seq, lineno)
            old = newest.get(ident)
            if old is None or v > old[0]:
                newest[ident] = (v, fields[3] == "D", text[lineno - 1].rstrip("\r"))
    t2 = time.perf_counter()

    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.remove(db + suffix)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA cache_size = -40960")
    conn.execute(
        "CREATE TABLE records (type TEXT NOT NULL, key TEXT NOT NULL, deleted INTEGER NOT NULL,"
        " d INTEGER NOT NULL, s INTEGER NOT NULL, l INTEGER NOT NULL, raw TEXT,"
        " PRIMARY KEY (type, key))"
    )
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)",
        ((t, k, int(dl), v[0], v[1], v[2], None if dl else raw) for (t, k), (v, dl, raw) in newest.items()),
    )
    conn.execute("COMMIT")
    conn.close()
    t3 = time.perf_counter()
    print(json.dumps({"read_sha256": round(t1 - t0, 4), "parse_newest": round(t2 - t1, 4),
                      "write": round(t3 - t2, 4), "lines": lines, "written": len(newest)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
