"""Reads a JSON log of esr-ingest run with
ESR_INGEST_LOG=esr_ingest::service=debug,esr_ingest::store::commands=trace and prints, as
JSON, the MongoDB commands sent and documents returned: in all (a one-shot command such
as `status`), and per pass of the service (each pass's share ends at its "pass over"
line, so what the service does between passes, such as the alert check or the lease
keeper's renewals, counts in the next one; hence the range beside each median). Used by
scripts/bench.d/history_mongo.sh."""

import json
import statistics
import sys


def main(path):
    passes, commands, documents, micros = [], 0, 0, 0
    total = {"commands": 0, "documents": 0, "micros": 0}
    for line in open(path, encoding="utf-8", errors="replace"):
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        message = event.get("message", "")
        if message == "store command started":
            commands += 1
            total["commands"] += 1
        elif message in ("store command done", "store command failed"):
            documents += int(event.get("returned", 0))
            micros += int(event.get("micros", 0))
            total["documents"] += int(event.get("returned", 0))
            total["micros"] += int(event.get("micros", 0))
        elif message == "pass over":
            passes.append({"listing": event.get("listing"), "commands": commands, "documents": documents,
                           "seconds": float(event.get("seconds", 0))})
            commands = documents = micros = 0
    out = {"total": total}
    for listing in ("full", "quick"):
        chosen = [p for p in passes if p["listing"] == listing]
        if listing == "full":
            chosen = chosen[:1]
        else:
            chosen = chosen[1:]  # the first quick pass also carries the start's alert check
        if chosen:
            out[listing] = {
                "passes": len(chosen),
                "commands": statistics.median(p["commands"] for p in chosen),
                "commands_range": [min(p["commands"] for p in chosen), max(p["commands"] for p in chosen)],
                "documents": statistics.median(p["documents"] for p in chosen),
                "documents_range": [min(p["documents"] for p in chosen), max(p["documents"] for p in chosen)],
                "seconds": statistics.median(p["seconds"] for p in chosen),
            }
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
