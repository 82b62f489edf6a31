#!/usr/bin/env python3
"""Untimed data helpers for scripts/bench (python 3 standard library only).

  oracle DIR OUT.tsv          the expected final state of DIR's files (JSON summary on stdout)
  csv DIR OUT.csv             the record lines with their versions, for the sqlite3 baseline
  state-esr EXPORT OUT.tsv    an `esr-ingest export` file as a state dump
  compare ORACLE.tsv STATE.tsv [--short]   identities whose visible state differs
  plan DIR SCENARIO [SEED [--days]]   delivery batches (one line of file names per batch;
                              --days: the day numbers in delivery order instead)
  dates DIR                   the first and last file date (YYYY-MM-DD YYYY-MM-DD)
  field FILE.json KEY         one value of a JSON object
  status-counts               a `status --json` document (stdin) -> a line of its counts

The oracle applies the contract's rules directly: each record line's version is (file
date, file SEQ, line number), line numbers counting every physical line, header
included; a line wins when its version is greater than the stored one; `D` leaves a
tombstone; a full file (RMF) first tombstones its region's live records that it does not
contain and that are older than it (version (date, SEQ, 0)). Files are taken in version
order, which the rule makes equal to any other order. Identity = (record type, position
ID), the key field of schemas/esr-rmt.toml.

A state dump (TSV) has one line per identity: type, key, deleted (0/1), date, seq, line.
"""

import csv
import json
import os
import random
import re
import sys

NAME = re.compile(r"^DE_([A-Z]{3})_(RMC|RMF)_(\d{8})_(\d{8})\.DAT$")
TYPES = ("POR", "POS")
FULL_KINDS = ("RMF",)


def batch_files(folder):
    """(date, seq, region, kind, name, path) of every batch file under folder, in version order."""
    out = []
    for base, _dirs, names in os.walk(folder):
        for name in names:
            m = NAME.match(name)
            if m:
                region, kind, date, seq = m.groups()
                out.append((int(date), int(seq), region, kind, name, os.path.join(base, name)))
    out.sort()
    return out


def record_lines(path):
    """(line number, fields, raw line) of each record line of a file."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        for lineno, raw in enumerate(f, 1):
            raw = raw.rstrip("\r\n")
            if not raw:
                continue
            fields = next(csv.reader([raw]))
            if fields[0] in ("HDR", "TRL"):
                continue
            if len(fields) < 4 or fields[0] not in TYPES or fields[3] not in ("C", "D"):
                continue  # a line esr-ingest would reject; the generator writes none
            yield lineno, fields, raw


def oracle(folder, out):
    state = {}  # (type, key) -> [(date, seq, line), deleted, region]
    lines = 0
    files = batch_files(folder)
    for date, seq, region, kind, _name, path in files:
        recs = list(record_lines(path))
        lines += len(recs)
        if kind in FULL_KINDS:
            present = {(f[0], f[1]) for _, f, _ in recs}
            fv = (date, seq, 0)
            for ident, st in state.items():
                if st[2] == region and not st[1] and st[0] < fv and ident not in present:
                    state[ident] = [fv, True, region]
        for lineno, f, _raw in recs:
            ident, v = (f[0], f[1]), (date, seq, lineno)
            st = state.get(ident)
            if st is None or v > st[0]:
                state[ident] = [v, f[3] == "D", region]
    with open(out, "w") as w:
        for (t, k), (v, deleted, _r) in sorted(state.items()):
            w.write(f"{t}\t{k}\t{int(deleted)}\t{v[0]}\t{v[1]}\t{v[2]}\n")
    live = sum(1 for st in state.values() if not st[1])
    print(json.dumps({"files": len(files), "record_lines": lines, "identities": len(state),
                      "live": live, "tombstones": len(state) - live}))


def to_csv(folder, out):
    with open(out, "w", newline="") as w:
        cw = csv.writer(w, lineterminator="\n")
        for date, seq, _region, _kind, _name, path in batch_files(folder):
            for lineno, f, raw in record_lines(path):
                cw.writerow([f[0], f[1], f[3], date, seq, lineno, raw])


def state_esr(export, out):
    with open(export) as r, open(out, "w") as w:
        for line in r:
            if not line.strip():
                continue
            o = json.loads(line)
            v = o["version"]
            w.write(f"{o['type']}\t{o['key']}\t{int(bool(o['deleted']))}\t"
                    f"{v['date'].replace('-', '')}\t{v['seq']}\t{v['line']}\n")


def load_state(path):
    state = {}
    with open(path) as r:
        for line in r:
            p = line.rstrip("\n").split("\t")
            if len(p) < 6:
                continue
            state[(p[0], p[1])] = (p[2] in ("1", "true", "True"), (int(p[3]), int(p[4]), int(p[5])))
    return state


def compare(oracle_path, state_path, short):
    want, got = load_state(oracle_path), load_state(state_path)
    counts = {"missing": 0, "stale": 0, "newer": 0, "resurrected": 0, "extra": 0}
    idents = set(want) | set(got)
    for ident in idents:
        o, s = want.get(ident), got.get(ident)
        o_live = o is not None and not o[0]
        s_live = s is not None and not s[0]
        if o_live:
            if not s_live:
                counts["missing"] += 1
            elif s[1] < o[1]:
                counts["stale"] += 1
            elif s[1] > o[1]:
                counts["newer"] += 1
        elif s_live:
            counts["extra" if o is None else "resurrected"] += 1
    wrong = sum(counts.values())
    pct = 100.0 * wrong / len(idents) if idents else 0.0
    if short:
        print("= oracle" if wrong == 0 else f"{wrong:,} of {len(idents):,} wrong ({pct:.2f} %)")
    else:
        print(json.dumps({"identities": len(idents), "wrong": wrong, "pct": round(pct, 3), **counts}))


def plan(folder, scenario, seed, indices=False):
    by_day = {}
    for date, _seq, _region, _kind, name, _path in batch_files(folder):
        by_day.setdefault(date, []).append(name)
    days = sorted(by_day)
    mid = days[(len(days) + 1) // 2 - 1]  # day 15 of 30
    if scenario == "inorder":
        order = days
    elif scenario == "late":
        order = [d for d in days if d != mid] + [mid]
    elif scenario == "replay":
        order = days + [mid]
    elif scenario == "shuffle":
        order = list(days)
        random.Random(seed).shuffle(order)
    else:
        sys.exit(f"unknown scenario {scenario}")
    if indices:
        print(" ".join(str(days.index(d) + 1) for d in order))
        return
    for d in order:
        print(" ".join(sorted(by_day[d])))


def dates(folder):
    ds = sorted({f[0] for f in batch_files(folder)})
    fmt = lambda d: f"{d // 10000:04d}-{d // 100 % 100:02d}-{d % 100:02d}"  # noqa: E731
    print(fmt(ds[0]), fmt(ds[-1]))


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "oracle":
        oracle(args[0], args[1])
    elif cmd == "csv":
        to_csv(args[0], args[1])
    elif cmd == "state-esr":
        state_esr(args[0], args[1])
    elif cmd == "compare":
        compare(args[0], args[1], "--short" in args[2:])
    elif cmd == "plan":
        plan(args[0], args[1], int(args[2]) if len(args) > 2 else 7, "--days" in args[3:])
    elif cmd == "dates":
        dates(args[0])
    elif cmd == "status-counts":
        c = json.load(sys.stdin)["counts"]
        print(f"{c['applied_files']} file(s) applied, {c['records_rejected']} lines rejected, "
              f"{c['quarantined_files']} file(s) quarantined")
    elif cmd == "field":
        with open(args[0]) as f:
            print(json.load(f)[args[1]])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
