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

CLONE_NEWUSER, MS_BIND = 0x10000000, 0x1000

libc = ctypes.CDLL(None, use_errno=True)


def user_namespace(uid_map, gid_map):
    """Return an fd of a new user namespace (owned by root) with the given maps (lines "INSIDE OUTSIDE COUNT")."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(done_w)
        ok = libc.unshare(CLONE_NEWUSER) == 0
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
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(done_w)
        os.waitpid(pid, 0)


def main(pin, env_uid, env_gid, owner, owner_gid):
    ids = [int(x) for x in (env_uid, env_gid, owner, owner_gid)]
    if min(ids) <= 0 or ids[0] == ids[2] or ids[1] == ids[3]:
        raise ValueError("ids must be positive, the env's apart from the owner's")
    ns = user_namespace(f"{ids[0]} {ids[0]} 1\n{ids[2]} {ids[2]} 1\n", f"{ids[1]} {ids[1]} 1\n{ids[3]} {ids[3]} 1\n")
    try:
        os.close(os.open(pin, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        if libc.mount(f"/proc/self/fd/{ns}".encode(), os.fsencode(pin), None, MS_BIND, None) != 0:
            err = ctypes.get_errno()
            os.unlink(pin)
            raise OSError(err, f"bind {pin}: {os.strerror(err)}")
    finally:
        os.close(ns)


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.exit(__doc__.strip().splitlines()[2])
    try:
        main(*sys.argv[1:])
    except (OSError, ValueError) as e:
        sys.exit(f"userns.py: {e}")
