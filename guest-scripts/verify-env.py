#!/usr/bin/python3
"""The isolation battery of ``llima-box verify``: run inside an env, as its user.

usage: verify-env.py PROJECT

Prints one JSON object a line, {"check": NAME, "ok": BOOL, "detail": TEXT}, for each property the
env must have (guest-scripts/README.md, "Isolation model"), looked at from inside: what an agent in
the env could find out for itself. Exit status 0 only when every check holds.
"""

import ctypes
import json
import os
import pwd
import stat
import sys

SYSTEM = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt")
SCRATCH = ("/tmp", "/var/tmp", "/dev/shm")
KEY_SPEC_SESSION_KEYRING, KEY_SPEC_USER_KEYRING, KEYCTL_DESCRIBE = -3, -4, 6
SYS_KEYCTL = {"x86_64": 250, "aarch64": 219}.get(os.uname().machine)


def status():
    with open("/proc/self/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def mounts():
    """Mount point -> (options, fstype) from mountinfo (octal escapes decoded)."""
    found = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            point = fields[4].encode().decode("unicode_escape")
            found[point] = (fields[5].split(","), right.split()[0])
    return found


def own_uid(project):
    uid = os.getuid()
    name = pwd.getpwuid(uid).pw_name
    if uid == 0 or not name.startswith("lb-"):
        return False, f"runs as uid {uid} ({name}), not an env user of its own"
    return True, f"uid {uid} ({name})"


def own_user_namespace(project):
    """Whether the env runs in a user namespace of its own that maps only its uid and the project owner's
    (userns mode: CAP_DAC_OVERRIDE and CAP_FOWNER there reach only their files)."""
    with open("/proc/self/uid_map") as f:
        mapped = sorted(int(line.split()[1]) for line in f)
    return mapped == sorted({os.getuid(), os.stat(project).st_uid}) and len(mapped) == 2


def no_privileges(project):
    s = status()
    caps = {k: s.get(k, "?") for k in ("CapEff", "CapPrm", "CapBnd", "CapAmb")}
    allowed = 0xA if own_user_namespace(project) else 0  # CAP_DAC_OVERRIDE | CAP_FOWNER in it
    if any(int(v, 16) & ~allowed for v in caps.values()) or s.get("NoNewPrivs") != "1":
        return False, f"{caps}, NoNewPrivs {s.get('NoNewPrivs')}"
    if allowed:
        return True, "only CAP_DAC_OVERRIDE and CAP_FOWNER, in a user namespace mapping its uid and the owner's"
    return True, "no capabilities, no_new_privs"


def own_processes(project):
    uids = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as f:
                uids.update(line.split()[1] for line in f if line.startswith("Uid:"))
        except OSError:
            continue
    with open("/proc/1/cmdline", "rb") as f:
        init = f.read().split(b"\0")
    others = uids - {"0", str(os.getuid())}
    if own_user_namespace(project):
        others.discard("65534")  # the holder (root, unmapped in the env's user namespace)
    if others or not init[1:2] or not init[1].endswith(b"/holder.sh"):
        return False, f"PID 1 {init[:2]}, other uids {sorted(others)}"
    return True, "own PID namespace (PID 1 is the env's holder)"


def private_scratch(project):
    table = mounts()
    bad = [p for p in SCRATCH if table.get(p, ([], ""))[1] != "tmpfs"]
    return (not bad), (f"not private: {bad}" if bad else "/tmp, /var/tmp, /dev/shm are tmpfs of its own")


def read_only_system(project):
    table = mounts()
    writable = [p for p in SYSTEM if p in table and "ro" not in table[p][0]]
    writable += [p for p in ("/",) if "ro" not in table[p][0]]
    return (not writable), (f"writable: {writable}" if writable else "system and root read-only")


def nothing_else_visible(project):
    home = os.path.expanduser("~")
    allowed = {"/", "/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/run", "/run/systemd/resolve", "/etc/resolv.conf",
               home, project,
               *SYSTEM, *SCRATCH} | {f"/dev/{n}" for n in ("null", "zero", "full", "random", "urandom", "tty")}
    extra = [p for p in mounts() if p not in allowed and not p.startswith(("/run/llima-agent.", "/sys/", "/proc/"))]
    expected = {}  # each directory on the way to the project and the home: the next step only
    for path in (project, home):
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            expected.setdefault("/" + "/".join(parts[:i]), set()).add(parts[i])
    crowded = [d for d, names in expected.items() if not set(os.listdir(d)) <= names]
    if extra or crowded:
        return False, f"other mounts {extra}, other entries in {crowded}"
    return True, "only the system, its home, its scratch and its project"


def no_caller_terminal(project):
    pts = os.stat("/dev/pts").st_dev
    foreign = [fd for fd in (0, 1, 2) if os.isatty(fd) and os.fstat(fd).st_dev != pts]
    if foreign:
        return False, f"fds {foreign} are a terminal from outside the env"
    return True, "no terminal but a pty of its own devpts"


def own_keyring(project):
    if SYS_KEYCTL is None:
        return True, "not checked on this architecture"
    libc = ctypes.CDLL(None, use_errno=True)
    owners = {}
    for name, spec in (("user", KEY_SPEC_USER_KEYRING), ("session", KEY_SPEC_SESSION_KEYRING)):
        buf = ctypes.create_string_buffer(256)
        if libc.syscall(SYS_KEYCTL, KEYCTL_DESCRIBE, spec, buf, 256) < 0:
            return False, f"keyctl describe {name}: {os.strerror(ctypes.get_errno())}"
        owners[name] = buf.value.decode().split(";")[1]
    # the session keyring is the entry's own: made by enter (root) or by the env itself
    ok = owners["user"] == str(os.getuid()) and owners["session"] in ("0", str(os.getuid()))
    return ok, ", ".join(f"{k} keyring of uid {v}" for k, v in owners.items())


def own_cgroup(project):
    """The env's holder (its PID 1, which every process of the env's namespaces needs) and this entry
    are in the env's own cgroup."""
    lines = set()
    for pid in ("1", "self"):
        with open(f"/proc/{pid}/cgroup") as f:
            lines.add(next((x.strip() for x in f if x.startswith("0::")), ""))
    name = os.uname().nodename
    if lines == {""}:
        return True, "no cgroup2 hierarchy in this guest"
    line = lines.pop()
    return (not lines and (line.endswith(f"/llima-box-{name}.scope") or line.endswith(f"/llima-box/{name}"))), line


def writable_home_and_project(project):
    home = os.path.expanduser("~")
    owners = {os.getuid(), os.stat(project).st_uid} if own_user_namespace(project) else {os.getuid()}
    problems = [p for p in (home, project)
                if not os.access(p, os.W_OK, effective_ids=True) or os.stat(p).st_uid not in owners]
    return (not problems), (f"not its own to write: {problems}" if problems else "its home and project")


CHECKS = (own_uid, no_privileges, own_processes, private_scratch, read_only_system, nothing_else_visible,
          no_caller_terminal, own_keyring, own_cgroup, writable_home_and_project)


def main(project):
    failed = 0
    for check in CHECKS:
        try:
            ok, detail = check(project)
        except (OSError, ValueError, KeyError, StopIteration) as e:
            ok, detail = False, f"{type(e).__name__}: {e}"
        failed += not ok
        print(json.dumps({"check": check.__name__.replace("_", "-"), "ok": ok, "detail": detail}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) != 2 or not stat.S_ISDIR(os.stat(sys.argv[1]).st_mode):
        sys.exit(__doc__.strip().splitlines()[2])
    sys.exit(main(sys.argv[1]))
