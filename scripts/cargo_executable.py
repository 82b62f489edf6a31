"""Reads cargo's JSON messages (`cargo build|test|bench --no-run --message-format=json`)
on stdin and prints the path of the executable built for the target named as the only
argument, so a script can run a test or bench binary directly (holding no cargo lock).
Prints nothing when cargo built no such executable."""

import json
import sys


def main(target):
    for line in sys.stdin:
        if not line.startswith("{"):
            continue
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message.get("executable") \
                and message["target"]["name"] == target:
            print(message["executable"])


if __name__ == "__main__":
    main(sys.argv[1])
