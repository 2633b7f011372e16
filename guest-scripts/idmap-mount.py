#!/usr/bin/python3
"""Bind-mount SRC on DST through an idmapped mount (mount_setattr MOUNT_ATTR_IDMAP).

usage: idmap-mount.py SRC DST DISK_UID:SEEN_UID DISK_GID:SEEN_GID

Files owned by DISK_UID on disk appear owned by SEEN_UID under DST, and what SEEN_UID
creates under DST is owned by DISK_UID on disk. util-linux gained X-mount.idmap only
in 2.39 (Debian 12 ships 2.38), hence this helper. Exit 1 when the filesystem refuses.
"""

import ctypes
import os
import sys

SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC = 1, os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 4
MOUNT_ATTR_IDMAP = 0x100000
AT_FDCWD, AT_EMPTY_PATH, AT_RECURSIVE = -100, 0x1000, 0x8000
CLONE_NEWUSER = 0x10000000

libc = ctypes.CDLL(None, use_errno=True)


class MountAttr(ctypes.Structure):
    _fields_ = [(f, ctypes.c_uint64) for f in ("attr_set", "attr_clr", "propagation", "userns_fd")]


def check(result, what):
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def user_namespace(uid_map, gid_map):
    """Return an fd of a new user namespace with the given one-line maps."""
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
        for name, line in (("uid_map", uid_map), ("gid_map", gid_map)):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(line)
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(done_w)
        os.waitpid(pid, 0)


def main(src, dst, uids, gids):
    disk_uid, seen_uid = (int(x) for x in uids.split(":"))
    disk_gid, seen_gid = (int(x) for x in gids.split(":"))
    userns = user_namespace(f"{disk_uid} {seen_uid} 1\n", f"{disk_gid} {seen_gid} 1\n")
    tree = check(libc.syscall(SYS_OPEN_TREE, AT_FDCWD, os.fsencode(src),
                              OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC), "open_tree")
    attr = MountAttr(MOUNT_ATTR_IDMAP, 0, 0, userns)
    check(libc.syscall(SYS_MOUNT_SETATTR, tree, b"", AT_EMPTY_PATH,
                       ctypes.byref(attr), ctypes.sizeof(attr)), "mount_setattr")
    check(libc.syscall(SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, os.fsencode(dst),
                       MOVE_MOUNT_F_EMPTY_PATH), "move_mount")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__.strip().splitlines()[2])
    try:
        main(*sys.argv[1:])
    except (OSError, ValueError) as e:
        sys.exit(f"idmap-mount: {e}")
