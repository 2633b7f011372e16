#!/usr/bin/python3
"""Show an entry's agent socket (lib/agent-relay.py's) inside an env, for that entry (run by enter).

usage: agent-bind.py HOLDER_PID SOCKET TARGET OWNER_UID

A classic bind mount cannot take its source from another mount namespace, so the socket's
mount is cloned here (open_tree), checked to be a socket owned by OWNER_UID (the env's), and
moved into the env's mount namespace (setns + move_mount) at TARGET.
"""

import ctypes
import os
import stat
import sys

SYS_OPEN_TREE, SYS_MOVE_MOUNT = 428, 429
OPEN_TREE_CLONE = 1
AT_FDCWD, AT_SYMLINK_NOFOLLOW = -100, 0x100
MOVE_MOUNT_F_EMPTY_PATH = 4
CLONE_NEWNS = 0x00020000

libc = ctypes.CDLL(None, use_errno=True)


def check(result, what):
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def main(holder, sock, target, caller):
    flags = OPEN_TREE_CLONE | os.O_CLOEXEC | AT_SYMLINK_NOFOLLOW
    tree = check(libc.syscall(SYS_OPEN_TREE, AT_FDCWD, os.fsencode(sock), flags), "open_tree")
    st = os.fstat(tree)
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != int(caller):
        raise OSError(f"{sock} is not a socket of uid {caller}")
    ns = os.open(f"/proc/{int(holder)}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    check(libc.setns(ns, CLONE_NEWNS), "setns")
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    check(libc.syscall(SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, os.fsencode(target),
                       MOVE_MOUNT_F_EMPTY_PATH), "move_mount")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__.strip().splitlines()[2])
    try:
        main(*sys.argv[1:])
    except (OSError, ValueError) as e:
        sys.exit(f"agent-bind: {e}")
