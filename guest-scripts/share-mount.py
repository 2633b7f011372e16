#!/usr/bin/python3
"""Mount an env's shares (create --share): host paths of the owner's, shown in the env.

usage: share-mount.py build NAME OWNER MODE ENV_UID ENV_GID
       share-mount.py add HOLDER_PID HOLDER_START NAME OWNER MODE ENV_UID ENV_GID SRC DST ro|rw
       share-mount.py remove HOLDER_PID HOLDER_START NAME DST

build: in the holder (lib/holder.sh, before pivot_root, the env's root the working directory), every
share of STATE/envs/NAME/shares (lines SRC TAB DST TAB ro|rw); what became of each goes to
RUN/roots/NAME.shares (a line each: "ok" or why not), and a share that cannot be mounted is left out.
add, remove: the same for one share of a running env, in its mount namespace (joined by a pidfd of
the holder whose start time is HOLDER_START); they print "later" when it changes only at the next start.

SRC (a file or directory) is opened once with openat2(RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS),
checked on that fd (owned by OWNER, not root) and cloned (open_tree): that very object is mounted,
nosuid, nodev, read-only unless rw. MODE is the env's project mode: idmap mounts it idmapped (OWNER's
files are the env's), userns and shared-uid bind it as is (an env in userns mode reaches the owner's
files through its capabilities in its user namespace), mapped goes through bindfs (directories; a file
is bound as is). DST is absolute (made in the env's root, a tmpfs of root's) or ~/PATH (in the env's
home, which the env controls: every component is walked with openat2(RESOLVE_BENEATH |
RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV) from the home's root, what is missing is made and given to the
env's user, and the clone is moved onto the fd of the last one, so no symlink the env plants is followed).
"""

import os
import stat
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))  # lib/, root's own (run with python3 -I)
sys.dont_write_bytecode = True  # the installed prefix stays as installed
import mountlib as mnt  # noqa: E402 -- after the path it is found on
from userns import user_namespace  # noqa: E402

STATE, RUN = "/var/lib/llima-box", "/run/llima-box"
CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT = 0x1, 0x2, 0x4, 0x20
WALK = mnt.RESOLVE_BENEATH | mnt.RESOLVE_NO_SYMLINKS | mnt.RESOLVE_NO_MAGICLINKS | mnt.RESOLVE_NO_XDEV


def open_source(src, owner):
    """An O_PATH fd of SRC, a directory or regular file of OWNER's, and its stat."""
    fd = mnt.open_nofollow(src)
    st = os.fstat(fd)
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)) or st.st_uid != owner or st.st_uid == 0:
        os.close(fd)
        raise OSError(f"{src} is not a file or directory of uid {owner}")
    return fd, st


def prepared_tree(src, owner, mode, env_uid, env_gid, writable):
    """The clone of SRC with its mount attributes set; (tree, st, needs_bindfs)."""
    fd, st = open_source(src, owner)
    try:
        tree = mnt.clone_tree(fd)
    finally:
        os.close(fd)
    plain = mnt.MOUNT_ATTR_NOSUID | mnt.MOUNT_ATTR_NODEV | (0 if writable else mnt.MOUNT_ATTR_RDONLY)
    if mode in ("idmap", "mapped"):
        userns = user_namespace(f"{owner} {env_uid} 1\n", f"{st.st_gid} {env_gid} 1\n")
        if mnt.set_attr(tree, plain | mnt.MOUNT_ATTR_IDMAP, userns) == 0:
            return tree, st, False
    mnt.check(mnt.set_attr(tree, plain), "mount_setattr")
    return tree, st, mode == "mapped" and stat.S_ISDIR(st.st_mode)


def mountpoint(top, rel, is_dir, env_uid, env_gid, own):
    """An fd of REL below the directory fd TOP, made when missing (a directory, or for a file share an
    empty file; given to the env's user when OWN), no component a symlink or on another mount."""
    parts = rel.split("/")
    fd = os.dup(top)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if not last or is_dir:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                    made = True
                except FileExistsError:
                    made = False
                nxt = mnt.openat2(fd, part, os.O_RDONLY | os.O_DIRECTORY, WALK)
            else:
                try:
                    nxt = mnt.openat2(fd, part, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_NONBLOCK, WALK, 0o644)
                    made = True
                except FileExistsError:
                    nxt = mnt.openat2(fd, part, os.O_RDONLY | os.O_NONBLOCK, WALK)
                    made = False
                if not stat.S_ISREG(os.fstat(nxt).st_mode):
                    os.close(nxt)
                    raise OSError(f"{rel} is not a regular file in the env")
            if made and own:
                os.fchown(nxt, env_uid, env_gid)
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def attach(tree, needs_bindfs, st, dst, name, owner, env_uid, env_gid):
    """Attach TREE at DST of the env whose root is the working directory ("~/…": in its home)."""
    is_dir = stat.S_ISDIR(st.st_mode)
    if dst.startswith("~/"):
        top, rel, own = f"home/{name}", dst[2:], True
    else:
        top, rel, own = ".", dst.lstrip("/"), False
    top_fd = os.open(top, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        target = mountpoint(top_fd, rel, is_dir, env_uid, env_gid, own)
    finally:
        os.close(top_fd)
    try:
        if needs_bindfs:
            mnt.mapped(tree, f"/proc/self/fd/{target}", owner, st.st_gid, env_uid, env_gid, staging_in=".",
                       pass_fds=(target,))
        else:
            mnt.move_to_fd(tree, target)
    finally:
        os.close(target)


def read_shares(name):
    try:
        with open(f"{STATE}/envs/{name}/shares", encoding="utf-8") as f:
            return [line.rstrip("\n").split("\t") for line in f if line.count("\t") == 2]
    except FileNotFoundError:
        return []


def build(name, owner, mode, env_uid, env_gid):
    report = []
    for src, dst, rw in read_shares(name):
        try:
            tree, st, needs_bindfs = prepared_tree(src, owner, mode, env_uid, env_gid, rw == "rw")
            attach(tree, needs_bindfs, st, dst, name, owner, env_uid, env_gid)
            report.append(f"{dst}\tok")
        except OSError as e:
            report.append(f"{dst}\t{e.strerror or e}")
        except subprocess.CalledProcessError:
            report.append(f"{dst}\tbindfs failed")
    status = f"{RUN}/roots/{name}.shares"
    with open(status + ".new", "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in report))
    os.replace(status + ".new", status)


def join(holder_pid, holder_start):
    """Join the mount namespace of the holder HOLDER_PID started at HOLDER_START; chdir to its root."""
    pidfd = mnt.pidfd_open(holder_pid)
    with open(f"/proc/{int(holder_pid)}/stat", encoding="ascii") as f:
        if f.read().rpartition(") ")[2].split()[19] != holder_start:
            raise OSError("the env's holder is gone")
    mnt.check(mnt.libc.setns(pidfd, CLONE_NEWNS), "setns")
    os.chdir("/")


def remount_root(writable):
    flags = MS_REMOUNT | MS_NOSUID | MS_NODEV | (0 if writable else MS_RDONLY)
    mnt.check(mnt.libc.mount(b"none", b"/", None, flags, None), "remount /")


def add(holder_pid, holder_start, name, owner, mode, env_uid, env_gid, src, dst, rw):
    tree, st, needs_bindfs = prepared_tree(src, owner, mode, env_uid, env_gid, rw == "rw")
    if needs_bindfs:  # bindfs belongs in the env's PID namespace: it is started with the env
        print("later")
        return
    join(holder_pid, holder_start)
    if dst.startswith("~/"):
        attach(tree, False, st, dst, name, owner, env_uid, env_gid)
        return
    remount_root(True)
    try:
        attach(tree, False, st, dst, name, owner, env_uid, env_gid)
    finally:
        remount_root(False)


def remove(holder_pid, holder_start, name, dst):
    join(holder_pid, holder_start)
    top, rel = (f"home/{name}", dst[2:]) if dst.startswith("~/") else (".", dst.lstrip("/"))
    parent, _, last = rel.rpartition("/")
    top_fd = os.open(top, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fd = mnt.openat2(top_fd, parent, os.O_PATH | os.O_DIRECTORY, WALK) if parent else os.dup(top_fd)
    except OSError:  # the env moved what leads there: the mount goes with the env's next start
        print("later")
        return
    finally:
        os.close(top_fd)
    os.fchdir(fd)
    mnt.libc.umount2(os.fsencode(last), mnt.MNT_DETACH | mnt.UMOUNT_NOFOLLOW)  # not mounted: nothing to undo


COMMANDS = {"build": (build, 5), "add": (add, 10), "remove": (remove, 4)}

if __name__ == "__main__":
    command = COMMANDS.get(sys.argv[1] if len(sys.argv) > 1 else "")
    if command is None or len(sys.argv) != command[1] + 2:
        sys.exit(__doc__.strip().splitlines()[2])
    try:
        if sys.argv[1] == "build":
            build(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
        elif sys.argv[1] == "add":
            add(*sys.argv[2:5], int(sys.argv[5]), sys.argv[6], int(sys.argv[7]), int(sys.argv[8]), *sys.argv[9:])
        else:
            remove(*sys.argv[2:])
    except (OSError, ValueError, IndexError) as e:
        sys.exit(f"share-mount: {e.strerror if isinstance(e, OSError) and e.strerror else e}")
