#!/usr/bin/python3
"""Make the user namespace of an env whose project is on a share where the host decides ownership.

usage: userns.py PIN ENV_UID ENV_GID OWNER OWNER_GID

A new user namespace, owned by root, whose maps hold exactly the env's ids and the project owner's,
each as itself ({ENV_UID, OWNER} and {ENV_GID, OWNER_GID}), is kept alive by a bind mount of it at
PIN (a file made here; /run/llima-box/userns/NAME). Entries of an env in userns mode join it as ENV_UID
with CAP_DAC_OVERRIDE and CAP_FOWNER in it (lib/entry.pl): those count only for files whose owner is
mapped there, that is the project's and the env's own; the env's kernel identity stays ENV_UID.
"""

import ctypes
import os
import sys

CLONE_NEWUSER, CLONE_NEWNET, MS_BIND = 0x10000000, 0x40000000, 0x1000

libc = ctypes.CDLL(None, use_errno=True)


def namespaces(uid_map, gid_map, run_as=None, net=False):
    """Return fds of a new user namespace with the given maps (lines "INSIDE OUTSIDE COUNT"), and of a new
    network namespace it owns when net. The user namespace is owned by root, or by run_as (uid, gid)."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(done_w)
        try:
            if run_as:
                os.setgroups([])
                os.setresgid(run_as[1], run_as[1], run_as[1])
                os.setresuid(run_as[0], run_as[0], run_as[0])
            ok = libc.unshare(CLONE_NEWUSER | (CLONE_NEWNET if net else 0)) == 0
        except OSError:
            ok = False
        os.write(ready_w, b"1" if ok else b"0")
        os.read(done_r, 1)
        os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise OSError("unshare(CLONE_NEWUSER) failed")
        for name, lines in (("uid_map", uid_map), ("gid_map", gid_map)):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(lines)
        kinds = ("user", "net") if net else ("user",)
        return [os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC) for kind in kinds]
    finally:
        os.close(done_w)
        os.waitpid(pid, 0)


def user_namespace(uid_map, gid_map):
    """Return an fd of a new user namespace (owned by root) with the given maps."""
    return namespaces(uid_map, gid_map)[0]


def pin(ns, path):
    """Keep the namespace of fd ns alive by a bind mount of it at path (a file made here)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    if libc.mount(f"/proc/self/fd/{ns}".encode(), os.fsencode(path), None, MS_BIND, None) != 0:
        err = ctypes.get_errno()
        os.unlink(path)
        raise OSError(err, f"bind {path}: {os.strerror(err)}")


def main(pin_path, env_uid, env_gid, owner, owner_gid):
    ids = [int(x) for x in (env_uid, env_gid, owner, owner_gid)]
    if min(ids) <= 0 or ids[0] == ids[2] or ids[1] == ids[3]:
        raise ValueError("ids must be positive, the env's apart from the owner's")
    ns = user_namespace(f"{ids[0]} {ids[0]} 1\n{ids[2]} {ids[2]} 1\n", f"{ids[1]} {ids[1]} 1\n{ids[3]} {ids[3]} 1\n")
    try:
        pin(ns, pin_path)
    finally:
        os.close(ns)


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.exit(__doc__.strip().splitlines()[2])
    try:
        main(*sys.argv[1:])
    except (OSError, ValueError) as e:
        sys.exit(f"userns.py: {e}")
