#!/usr/bin/python3
"""Mount an env's project at DST: open it once, check the opened directory, mount that object.

usage: project-mount.py PROJECT DST OWNER MODE ENV_UID ENV_GID [USERNS]

PROJECT is opened with openat2(RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS), so no component
can be a symlink at the moment it is used; the checks (a directory, owned by OWNER, not by root)
are made on that file descriptor, and the mount is a clone of that very directory (open_tree on
the fd, then move_mount): swapping a path component for a symlink between the verbs' checks
and this mount gains nothing. The env always runs as its own uid, except in shared-uid mode:

- idmap: an idmapped mount (files of OWNER appear owned by ENV_UID, what ENV_UID creates belongs
  to OWNER on disk; util-linux 2.38 has no X-mount.idmap). MODE auto and idmap try it first.
- userns: where the filesystem refuses idmapped mounts and the host decides who owns what is
  created (Lima's 9p: QEMU runs as the host user; macOS's virtiofs), a plain bind, and the env's
  entries join the user namespace USERNS (lib/userns.py) with CAP_DAC_OVERRIDE and CAP_FOWNER there:
  the project is the owner's, the env is its own uid, and nothing stands between them (full speed).
  MODE auto picks it when a probe, made with exactly those rights, creates a directory in the
  project that comes out the owner's (and removes it again).
- mapped: where the filesystem refuses idmapped mounts and the caller's uid would own new files
  (virtiofs with a root virtiofsd, NFS, overlayfs), bindfs --map does the same in user space: the
  checked clone is mounted at a private staging directory, bindfs opens it (and works relative to
  it from then on), the staging mount is detached. New files never get setuid or setgid bits.
- shared-uid (only when provisioned so): a plain bind, and the env runs as OWNER.

The mount is nosuid and nodev. Prints the mode used and the uid and gid the env runs as.
"""

import ctypes
import os
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))  # lib/, root's own (run with python3 -I)
sys.dont_write_bytecode = True  # the installed prefix stays as installed
from mountlib import (  # noqa: E402 -- after the path it is found on
    MOUNT_ATTR_IDMAP,
    MOUNT_ATTR_NODEV,
    MOUNT_ATTR_NOSUID,
    check,
    clone_tree,
    libc,
    mapped,
    move,
    open_nofollow,
    set_attr,
)
from userns import user_namespace  # noqa: E402

CLONE_NEWUSER = 0x10000000
CAP_DAC_OVERRIDE, CAP_FOWNER = 1, 3
PR_SET_KEEPCAPS, LINUX_CAPABILITY_VERSION_3 = 8, 0x20080522


def open_project(path, owner):
    """An O_PATH fd of the directory PATH, resolved without any symlink, owned by OWNER."""
    fd = open_nofollow(path, os.O_PATH | os.O_DIRECTORY)
    st = os.fstat(fd)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != owner or st.st_uid == 0:
        raise OSError(f"{path} is not a directory of uid {owner}")
    return fd, st


def host_decides(project_fd, pin, owner, gid, env_uid, env_gid):
    """Does a directory the env makes in the project (in USERNS, with the env's rights) come out the owner's?"""
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            ns = os.open(pin, os.O_RDONLY | os.O_CLOEXEC)
            check(libc.setns(ns, CLONE_NEWUSER), "setns")
            os.setgroups([])
            os.setresgid(env_gid, env_gid, env_gid)
            check(libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "keepcaps")
            os.setresuid(env_uid, env_uid, env_uid)
            mask = 1 << CAP_DAC_OVERRIDE | 1 << CAP_FOWNER
            header, data = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0), (ctypes.c_uint32 * 6)(mask, mask)
            check(libc.capset(header, data), "capset")
            probe = f".llima-box-probe-{os.getpid()}"
            os.mkdir(probe, 0o700, dir_fd=project_fd)
            try:
                st = os.stat(probe, dir_fd=project_fd, follow_symlinks=False)
            finally:
                os.rmdir(probe, dir_fd=project_fd)
            code = 0 if (st.st_uid, st.st_gid) == (owner, gid) else 1
        except OSError:
            pass
        os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def main(project, dst, owner, mode, env_uid, env_gid, pin=None):
    owner, env_uid, env_gid = int(owner), int(env_uid), int(env_gid)
    if mode not in ("auto", "idmap", "mapped", "shared-uid"):
        raise ValueError(f"unknown mode {mode}")
    fd, st = open_project(project, owner)
    tree = clone_tree(fd)
    plain = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
    used = mode
    if mode in ("auto", "idmap"):
        userns = user_namespace(f"{owner} {env_uid} 1\n", f"{st.st_gid} {env_gid} 1\n")
        if set_attr(tree, plain | MOUNT_ATTR_IDMAP, userns) == 0:
            used = "idmap"
        elif mode == "idmap":
            check(-1, f"idmapped mount of {project}")
        elif pin and host_decides(fd, pin, owner, st.st_gid, env_uid, env_gid):
            used = "userns"
        else:
            used = "mapped"
    if used != "idmap":
        check(set_attr(tree, plain), "mount_setattr")
    if used == "mapped":
        mapped(tree, dst, owner, st.st_gid, env_uid, env_gid)
    else:
        if used == "shared-uid":
            env_uid, env_gid = owner, st.st_gid
        move(tree, dst)
    print(used, env_uid, env_gid)


if __name__ == "__main__":
    if len(sys.argv) not in (7, 8):
        sys.exit(__doc__.strip().splitlines()[2])
    try:
        main(*sys.argv[1:])
    except (OSError, ValueError) as e:
        sys.exit(f"project-mount: {e}")
