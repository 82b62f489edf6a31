#!/usr/bin/env python3
"""The peer for scripts/bench: dlt (data load tool) into DuckDB, run in the bench venv.

  peer.py load    --db DB --dir PIPELINES --layout TOML [--format F] INBOX
  peer.py batches --db DB --dir PIPELINES --layout TOML --plan PLAN [--format F] --state OUT.tsv INBOX

`load` loads every batch file of INBOX in one `pipeline.run`; `batches` runs one load per
line of PLAN (file names, in delivery order) into the same pipeline and then writes the
final table as a state dump (type, key, deleted, date, seq, line). Both print JSON with
the time spent inside dlt (import and process start not included; the caller's
/usr/bin/time has the whole).

The resource: one row per record line, its fields named by the layout, plus the version
as three integers and as one sortable text `version` (YYYYMMDD + 8-digit SEQ + 9-digit
line). Hints: write_disposition merge (strategy delete-insert, dlt's default and the
only one that deduplicates by primary key), primary_key (record_type, position_id),
`dedup_sort: desc` on `version` (within one load, the newest line of an identity wins)
and `hard_delete` on `deleted` (a `D` line removes the row).
"""

import argparse
import csv
import json
import os
import re
import sys
import time

import dlt

NAME = re.compile(r"^DE_([A-Z]{3})_(RMC|RMF)_(\d{8})_(\d{8})\.DAT$")


def layout_fields(path):
    """record type -> field names, read from the layout TOML (record / record.field)."""
    out, current = {}, None
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            m = re.match(r'^type\s*=\s*"([^"]+)"', line)
            if m:
                current = out.setdefault(m.group(1), [])
                continue
            m = re.match(r'^name\s*=\s*"([^"]+)"', line)
            if m and current is not None:
                current.append(m.group(1))
    return out


def rows(inbox, names, fields_by_type):
    for name in names:
        m = NAME.match(name)
        if not m:
            continue
        region, _kind, date, seq = m.group(1), m.group(2), int(m.group(3)), int(m.group(4))
        batch = []
        with open(os.path.join(inbox, name), encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            for fields in reader:
                if not fields or fields[0] in ("HDR", "TRL"):
                    continue
                names_ = fields_by_type.get(fields[0])
                if names_ is None or len(fields) != len(names_):
                    continue
                line = reader.line_num
                row = dict(zip(names_, fields))
                row.pop("indicator", None)
                row["deleted"] = fields[3] == "D"
                row["region"] = region
                row["file"] = name
                row["file_date"], row["seq"], row["line"] = date, seq, line
                row["version"] = f"{date:08d}{seq:08d}{line:09d}"
                batch.append(row)
        yield batch


def resource(inbox, names, fields_by_type):
    return dlt.resource(
        rows(inbox, names, fields_by_type),
        name="records",
        write_disposition={"disposition": "merge", "strategy": "delete-insert"},
        primary_key=("record_type", "position_id"),
        columns={"version": {"dedup_sort": "desc", "data_type": "text"},
                 "deleted": {"hard_delete": True, "data_type": "bool"}},
    )


def pipeline(args):
    return dlt.pipeline(
        pipeline_name="esr_peer",
        destination=dlt.destinations.duckdb(args.db),
        dataset_name="esr",
        pipelines_dir=args.dir,
        progress=None,
    )


def run_once(p, args, names, fields_by_type):
    kw = {} if args.format == "default" else {"loader_file_format": args.format}
    p.run(resource(args.inbox, names, fields_by_type), **kw)


def dump_state(args, out):
    import duckdb

    con = duckdb.connect(args.db, read_only=True)
    try:
        got = con.execute(
            "SELECT record_type, position_id, deleted, file_date, seq, line FROM esr.records"
        ).fetchall()
    except duckdb.CatalogException:
        got = []
    con.close()
    with open(out, "w") as w:
        for t, k, deleted, d, s, line in got:
            w.write(f"{t}\t{k}\t{int(bool(deleted))}\t{d}\t{s}\t{line}\n")
    return len(got)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["load", "batches"])
    ap.add_argument("inbox")
    ap.add_argument("--db", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--layout", required=True)
    ap.add_argument("--format", default="default")
    ap.add_argument("--plan")
    ap.add_argument("--state")
    args = ap.parse_args()
    fields_by_type = layout_fields(args.layout)
    p = pipeline(args)
    t0 = time.perf_counter()
    loads = 0
    if args.cmd == "load":
        names = sorted(n for n in os.listdir(args.inbox) if NAME.match(n))
        run_once(p, args, names, fields_by_type)
        loads = 1
    else:
        with open(args.plan) as f:
            for line in f:
                names = line.split()
                if names:
                    run_once(p, args, names, fields_by_type)
                    loads += 1
    secs = time.perf_counter() - t0
    out = {"seconds": round(secs, 3), "loads": loads, "dlt": dlt.__version__}
    if args.state:
        out["rows"] = dump_state(args, args.state)
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
