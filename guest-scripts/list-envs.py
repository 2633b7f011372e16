#!/usr/bin/python3
"""The body of the ``list`` verb: one JSON object a line for every env.

usage: list-envs.py STATE_DIR RUN_DIR [OWNER_UID]

With OWNER_UID, only the envs of that account.

In Python rather than bash because it is one pass over hundreds of envs: no process per env.
An env is alive when the pid in RUN_DIR/NAME.holder runs with the recorded start time (the
same test as holder_alive in common.sh).
"""

import json
import os
import re
import sys


def uids():
    found = {}
    with open("/etc/passwd", "rb") as f:
        for line in f:
            fields = line.split(b":")
            if len(fields) > 2 and fields[0].startswith(b"lb-"):
                found[fields[0].decode()] = int(fields[2]) if fields[2].isdigit() else None
    return found


def first_line(path):
    """The first line of a small file, "" when it cannot be read (raw reads: a few thousand a run)."""
    return text(path).split("\n", 1)[0]


def text(path):
    """A small file's text, "" when it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return ""
    try:
        data = os.read(fd, 4096)
    except OSError:
        return ""
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace")


def alive(run, name):
    recorded = first_line(f"{run}/{name}.holder").split()
    if len(recorded) != 2 or not recorded[0].isdigit():
        return False
    stat = first_line(f"/proc/{recorded[0]}/stat")
    fields = stat.rpartition(") ")[2].split()
    if len(fields) <= 28 or fields[19] != recorded[1] or fields[0] in "ZXx":
        return False
    exiting, sigkill_pending = int(fields[6]) & 0x4, int(fields[28]) & 0x100
    return not exiting and not sigkill_pending


def env_dirs(state):
    with os.scandir(f"{state}/envs") as entries:
        found = [(e.name, e.path) for e in entries
                 if e.name.startswith("lb-") and not e.name.endswith(".new") and e.is_dir(follow_symlinks=False)]
    return sorted(found)


def owner_of(path, project):
    """The recorded owner; for envs made before owners were recorded, the project's."""
    owner = first_line(f"{path}/owner")
    if owner.isdigit():
        return int(owner)
    try:
        return os.stat(project).st_uid
    except OSError:
        return None


def limits(path, cgroup):
    """What holds in the env's cgroup ({"memory": bytes, "pids": n, "cpus": n}, None: no limit there),
    "enforced" False where the guest has none of these controllers (or the env is not running): then
    the recorded values (None: the default)."""
    held = {key: first_line(f"{cgroup}/{name}") if cgroup else "" for key, name in
            (("memory", "memory.max"), ("pids", "pids.max"), ("cpus", "cpu.max"))}
    if any(held.values()):
        quota, _, period = held["cpus"].partition(" ")
        return {"memory": int(held["memory"]) if held["memory"].isdigit() else None,
                "pids": int(held["pids"]) if held["pids"].isdigit() else None,
                "cpus": round(int(quota) / int(period), 2) if quota.isdigit() and period.isdigit() else None,
                "enforced": True}
    recorded = (first_line(f"{path}/limits").split() + ["0"] * 3)[:3]
    memory, pids = (int(v) if v.isdigit() and v != "0" else None for v in recorded[:2])
    cpus = float(recorded[2]) if recorded[2].replace(".", "", 1).isdigit() and float(recorded[2]) else None
    return {"memory": memory, "pids": pids, "cpus": cpus, "enforced": False}


def ports(path, run, name, alive):
    """[{"inside": port, "published": port or None}] of an isolated env: what lib/ports.py publishes while
    it runs, else the pinned ones (create --publish) with the ports they will have."""
    rows = []
    if alive:
        for line in text(f"{run}/roots/{name}.ports").splitlines():
            inside, _, published = line.partition(" ")
            if inside.isdigit():
                rows.append({"inside": int(inside), "published": int(published) if published.isdigit() else None})
        return rows
    for line in text(f"{path}/publish").splitlines():
        inside, _, outside = line.partition(":")
        if inside.isdigit() and outside.isdigit():
            rows.append({"inside": int(inside), "published": int(outside)})
    return rows


REFUSED = re.compile(r'^NOTICE\s+(\w{3} \d\d \d\d:\d\d:\d\d)\S* \[\d+\]: Proxying refused on filtered domain "(.*)"$')


def refused(name, keep=50):
    """The last hosts an env with an allow-list was refused by its proxy: [{"time", "host"}] (lib/network.sh)."""
    rows = []
    for line in tail(f"/run/llima-box-net/{name}.proxy/log").splitlines()[1:]:  # the first may be cut
        m = REFUSED.match(line)
        if m:
            rows.append({"time": m.group(1), "host": m.group(2)})
    return rows[-keep:]


def tail(path, size=64 * 1024):
    """The last ``size`` bytes of a file's text, "" when it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return ""
    try:
        return "\n" + os.pread(fd, size, max(0, os.fstat(fd).st_size - size)).decode("utf-8", "replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


def home_size(state, name):
    """Bytes the env's home filesystem holds at most (lib/home.sh); None for a home made before images."""
    try:
        return os.stat(f"{state}/home/{name}.img").st_size
    except OSError:
        return None


def shares(path, run, name, alive):
    """[{"src", "dst", "mode", "error"}]: the env's shares (lib/shares.sh), "error" why one did not mount at the
    env's last start (None: it did, or the env is not running)."""
    why = {}
    if alive:
        for line in text(f"{run}/roots/{name}.shares").splitlines():
            dst, _, status = line.partition("\t")
            why[dst] = None if status == "ok" else status
    rows = []
    for line in text(f"{path}/shares").splitlines():
        fields = line.split("\t")
        if len(fields) == 3:
            rows.append({"src": fields[0], "dst": fields[1], "mode": fields[2], "error": why.get(fields[1])})
    return rows


def project_gone(project):
    """The project is no more while its parent is there (so not an absent share: that hides the parent too)."""
    return not os.path.lexists(project) and os.path.isdir(os.path.dirname(project))


def secrets(path):
    """[{"name", "hosts", "env"}] of the env's secrets (lib/secret-proxy.py): never a value."""
    rows = []
    try:
        with open(f"{path}/secrets", errors="replace") as f:
            lines = f.read(1024 * 1024).splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            s = json.loads(line)
            rows.append({"name": s["name"], "hosts": s["hosts"], "env": s["env"]})
        except (ValueError, KeyError, TypeError):
            continue
    return rows


def main(state, run, only=""):
    known = uids()
    lines = []
    for name, path in env_dirs(state):
        project = first_line(f"{path}/project")
        owner = owner_of(path, project)
        if only and owner != int(only):
            continue
        row = {
            "name": name,
            "project": project,
            "owner": owner,
            "uid": known.get(name),
            "alive": alive(run, name),
            "created": first_line(f"{path}/created"),
            "mode": first_line(f"{path}/mode").partition(" ")[0],
            "cgroup": first_line(f"{path}/cgroup"),
            "network": first_line(f"{path}/network") or "shared",
            "project_gone": project_gone(project),
        }
        row["limits"] = limits(path, row["cgroup"] if row["alive"] else "")
        row["limits"]["home"] = home_size(state, name)
        row["ports"] = ports(path, run, name, row["alive"]) if row["network"] == "isolated" else []
        row["shares"] = shares(path, run, name, row["alive"])
        row["secrets"] = secrets(path)
        allow = text(f"{path}/allow").split()
        if allow:
            row["allow"], row["refused"] = allow, refused(name)
        lines.append(json.dumps(row, separators=(",", ":")) + "\n")
    sys.stdout.write("".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:4])
