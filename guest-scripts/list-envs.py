#!/usr/bin/python3
"""The body of the ``list`` verb: one JSON object a line for every env.

usage: list-envs.py STATE_DIR RUN_DIR

In Python rather than bash because it is one pass over hundreds of envs: no process per env.
An env is alive when the pid in RUN_DIR/NAME.holder runs with the recorded start time (the
same test as holder_alive in common.sh).
"""

import json
import os
import sys


def uids():
    found = {}
    with open("/etc/passwd", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split(":")
            if len(fields) > 2 and fields[0].startswith("lb-"):
                found[fields[0]] = int(fields[2]) if fields[2].isdigit() else None
    return found


def first_line(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().rstrip("\n")
    except OSError:
        return ""


def alive(run, name):
    recorded = first_line(f"{run}/{name}.holder").split()
    if len(recorded) != 2 or not recorded[0].isdigit():
        return False
    stat = first_line(f"/proc/{recorded[0]}/stat")
    fields = stat.rpartition(") ")[2].split()
    return len(fields) > 19 and fields[19] == recorded[1]


def main(state, run):
    known = uids()
    envs = f"{state}/envs"
    for name in sorted(os.listdir(envs)):
        if not name.startswith("lb-") or name.endswith(".new") or not os.path.isdir(f"{envs}/{name}"):
            continue
        row = {
            "name": name,
            "project": first_line(f"{envs}/{name}/project"),
            "uid": known.get(name),
            "alive": alive(run, name),
            "created": first_line(f"{envs}/{name}/created"),
            "mode": first_line(f"{envs}/{name}/mode"),
        }
        sys.stdout.write(json.dumps(row, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
