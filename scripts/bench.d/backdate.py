"""Gives a history loaded in one go the arrival times it would have had: each ledger
entry's first_seen and updated_at become its file's date (06:00 UTC), as if the files had
arrived over the years their names say. Otherwise every file of the history counts as a
recent arrival. Arguments: a MongoDB URI and a database name; needs pymongo."""

import sys

import pymongo
from pymongo import UpdateOne


def main(uri, database):
    db = pymongo.MongoClient(uri)[database]
    updates = []
    for entry in db.ledger.find({}, {"batch": 1}):
        batch = entry.get("batch")
        if not batch:
            continue
        at = batch["date"] + "T06:00:00.000000Z"
        updates.append(UpdateOne({"_id": entry["_id"]}, {"$set": {"first_seen": at, "updated_at": at}}))
        if len(updates) >= 1000:
            db.ledger.bulk_write(updates)
            updates = []
    if updates:
        db.ledger.bulk_write(updates)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
