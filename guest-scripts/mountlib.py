"""System calls of the new mount API, shared by project-mount.py and share-mount.py (ctypes: no
compiler, no package; util-linux 2.38 has no idmapped mounts).

A path is opened once, with openat2 refusing every symlink, checked on that file descriptor,
and what is mounted is a clone of that very object: a path swapped between a check and the mount
gains nothing.
"""

import ctypes
import os
import shutil
import subprocess
import tempfile

SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_OPENAT2, SYS_MOUNT_SETATTR, SYS_PIDFD_OPEN = 428, 429, 437, 442, 434
OPEN_TREE_CLONE = 1
MOVE_MOUNT_F_EMPTY_PATH, MOVE_MOUNT_T_EMPTY_PATH = 0x4, 0x40
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_IDMAP = 0x1, 0x2, 0x4, 0x100000
RESOLVE_NO_XDEV, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_BENEATH = 0x01, 0x02, 0x04, 0x08
AT_FDCWD, AT_EMPTY_PATH, AT_RECURSIVE = -100, 0x1000, 0x8000
MNT_DETACH, UMOUNT_NOFOLLOW = 2, 8

libc = ctypes.CDLL(None, use_errno=True)


class OpenHow(ctypes.Structure):
    _fields_ = [(f, ctypes.c_uint64) for f in ("flags", "mode", "resolve")]


class MountAttr(ctypes.Structure):
    _fields_ = [(f, ctypes.c_uint64) for f in ("attr_set", "attr_clr", "propagation", "userns_fd")]


def check(result, what):
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def openat2(dirfd, path, flags, resolve, mode=0, what=None):
    """openat2(2): an fd of PATH (relative to DIRFD) resolved as RESOLVE says."""
    how = OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    return check(libc.syscall(SYS_OPENAT2, dirfd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how)),
                 what or f"open {path}")


def open_nofollow(path, flags=os.O_PATH):
    """An fd of the absolute PATH, no component of which may be a symlink."""
    return openat2(AT_FDCWD, path, flags, RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)


def clone_tree(fd, recursive=False):
    """A detached clone of the mount at the object FD refers to (open_tree OPEN_TREE_CLONE)."""
    flags = AT_EMPTY_PATH | OPEN_TREE_CLONE | os.O_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    return check(libc.syscall(SYS_OPEN_TREE, fd, b"", flags), "open_tree")


def set_attr(tree, attr_set, userns=0):
    """mount_setattr(2) on a detached tree; returns the raw result (idmapping may be refused)."""
    attr = MountAttr(attr_set, 0, 0, userns)
    return libc.syscall(SYS_MOUNT_SETATTR, tree, b"", AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr))


def move(tree, dst):
    """Attach TREE at the path DST."""
    check(libc.syscall(SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, os.fsencode(dst), MOVE_MOUNT_F_EMPTY_PATH),
          "move_mount")


def move_to_fd(tree, target_fd):
    """Attach TREE on the object TARGET_FD refers to (no path is resolved again)."""
    check(libc.syscall(SYS_MOVE_MOUNT, tree, b"", target_fd, b"", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH),
          "move_mount")


def pidfd_open(pid):
    return check(libc.syscall(SYS_PIDFD_OPEN, int(pid), 0), f"pidfd_open {pid}")


def mapped(tree, dst, owner, gid, env_uid, env_gid, staging_in=None, pass_fds=()):
    """bindfs --map over the checked clone TREE at DST (which may be /proc/self/fd/N of an fd in PASS_FDS):
    the clone is attached at a private staging directory (in STAGING_IN, default DST's parent), bindfs opens it
    (and works relative to it from then on), the staging mount is detached. Raise when bindfs is missing or
    fails."""
    if shutil.which("bindfs") is None:
        raise OSError("the filesystem refuses idmapped mounts and bindfs is not installed: install bindfs "
                      "(apt-get install bindfs), or provision with --project-mode shared-uid")
    staging = tempfile.mkdtemp(prefix=".src-", dir=staging_in or os.path.dirname(os.path.abspath(dst)))
    try:
        os.chmod(staging, 0o700)
        move(tree, staging)
        try:
            subprocess.run(["bindfs", f"--map={owner}/{env_uid}:@{gid}/@{env_gid}", "--create-with-perms=ug-s",
                            "-o", "allow_other,nosuid,nodev,fsname=llima-box", staging, dst],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, pass_fds=pass_fds, check=True)
        finally:
            check(libc.umount2(os.fsencode(staging), MNT_DETACH), "umount staging")
    finally:
        os.rmdir(staging)
