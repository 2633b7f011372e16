"""Runs as root inside the real VM (``sudo python3 - ARGS`` from tests/vm/measure.py): the facts of
docs/real-vm-measured.md for the uid-boundary choice of issue 13, on each host share and on the guest's ext4.

argv: JSON [{"kind": …, "path": …}, …], owner uid, owner gid, file count of the speed tree (0: no speed runs)
stdout: one JSON object.
"""

import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

SHARES = json.loads(sys.argv[1])
OWNER, GROUP, NFILES = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
WAYS = sys.argv[5].split(",") if len(sys.argv) > 5 else ["userns", "bindfs"]  # measured against direct
ROUNDS = int(sys.argv[6]) if len(sys.argv) > 6 else 1
ENV = 200001  # an env's own uid and gid
IDMAP = "/usr/local/libexec/llima-box/lib/project-mount.py"
CAP_DAC_OVERRIDE, CAP_FOWNER = 1, 3
libc = ctypes.CDLL(None, use_errno=True)

OPS = r"""
r() { if "$@" >/dev/null 2>&1; then echo ok; else echo no; fi; }
echo "read_0644 $(r cat host644)"
echo "read_0600 $(r cat host600)"
echo "append_host_file $(r sh -c 'echo w >> host644')"
echo "create_file $(r sh -c 'echo c > new_file')"
echo "mkdir $(r mkdir new_dir)"
echo "create_in_new_dir $(r sh -c 'echo c > new_dir/f')"
echo "chmod_host_file $(r chmod 0640 host644)"
echo "chmod_own_new_file $(r chmod 0600 new_file)"
echo "utime_host_file $(r touch -d @86400 host644)"
echo "rename_host_file $(r mv hostmv hostmv2)"
echo "delete_host_file $(r rm -f hostdel)"
echo "chown_new_file_to_root $(r chown 0:0 new_file)"
echo "seen_owner_of_host_file $(stat -c %u:%g host644)"
echo "seen_owner_of_new_file $(stat -c %u:%g new_file 2>/dev/null || echo -)"
echo "id $(id -u):$(id -g)"
"""


def sh(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kw)


def prepare(path):
    """A fresh test dir owned by the share owner with files of the owner (as the host user made them)."""
    shutil.rmtree(path, ignore_errors=True)
    os.mkdir(path, 0o755)
    for name, mode in (("host644", 0o644), ("host600", 0o600), ("hostmv", 0o644), ("hostdel", 0o644)):
        p = os.path.join(path, name)
        with open(p, "w") as f:
            f.write("host\n")
        os.chown(p, OWNER, GROUP)
        os.chmod(p, mode)
    os.chown(path, OWNER, GROUP)
    os.chmod(path, 0o755)


def parse(out):
    res = {}
    for line in out.splitlines():
        k, _, v = line.partition(" ")
        res[k] = v
    return res


def _capset(mask):
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    data = (Data * 2)(Data(mask, mask, mask), Data(0, 0, 0))
    if libc.capset(ctypes.byref(Header(0x20080522, 0)), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    for cap in (CAP_DAC_OVERRIDE, CAP_FOWNER):
        if mask & (1 << cap) and libc.prctl(47, 2, cap, 0, 0) != 0:  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE
            raise OSError(ctypes.get_errno(), "ambient raise")


def run_as(argv, cwd, uid, gid, userns=False, caps=0):
    """Run argv as uid:gid (no groups); in a new user namespace mapping {ENV, OWNER} and {ENV, GROUP} when
    ``userns``, holding ``caps`` as ambient capabilities there. Returns (exit, stdout+stderr)."""
    out = tempfile.TemporaryFile()
    go_r, go_w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
            if userns:
                if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
                    raise OSError(ctypes.get_errno(), "unshare")
                os.write(ready_w, b"x")
                os.read(go_r, 1)
            libc.prctl(8, 1, 0, 0, 0)  # PR_SET_KEEPCAPS
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            _capset(caps)
            os.chdir(cwd)
            os.execvp(argv[0], argv)
        except BaseException as e:  # noqa: BLE001 -- a forked child must never return
            print("child failed:", e, flush=True)
        os._exit(126)
    if userns:
        os.read(ready_r, 1)
        with open(f"/proc/{pid}/uid_map", "w") as f:
            f.write(f"{ENV} {ENV} 1\n{OWNER} {OWNER} 1\n")
        with open(f"/proc/{pid}/gid_map", "w") as f:
            f.write(f"{ENV} {ENV} 1\n{GROUP} {GROUP} 1\n")
        os.write(go_w, b"x")
    _, status = os.waitpid(pid, 0)
    for fd in (go_r, go_w, ready_r, ready_w):
        os.close(fd)
    out.seek(0)
    return os.waitstatus_to_exitcode(status), out.read().decode(errors="replace")


def idmap(path):
    dst = tempfile.mkdtemp(prefix="idmap.", dir="/run")
    r = sh(["python3", IDMAP, path, dst, str(OWNER), "idmap", str(ENV), str(ENV)])
    if r.returncode == 0:
        seen = sh(["stat", "-c", "%u:%g", dst]).stdout.strip()
        sh(["umount", dst])
        res = f"works (owner seen as {seen})"
    else:
        res = "refused: " + (r.stderr.strip().splitlines() or ["?"])[-1]
    os.rmdir(dst)
    return res


def bindfs_mount(src):
    mnt = tempfile.mkdtemp(prefix="bindfs.", dir="/run")
    os.chmod(mnt, 0o755)
    r = sh(["bindfs", f"--map={OWNER}/{ENV}:@{GROUP}/@{ENV}", "-o", "allow_other", src, mnt])
    if r.returncode != 0:
        raise RuntimeError(f"bindfs failed: {r.stderr}")
    return mnt


def bindfs_umount(mnt):
    sh(["fusermount3", "-u", mnt])
    os.rmdir(mnt)


def functional(share):
    base = share["path"]
    res = {"idmap": idmap(base)}
    cases = {
        "owner uid (shared-uid today)": dict(uid=OWNER, gid=GROUP),
        "own uid, no mechanism": dict(uid=ENV, gid=ENV),
        "own uid in userns, no caps": dict(uid=ENV, gid=ENV, userns=True),
        "own uid in userns + ambient DAC_OVERRIDE,FOWNER": dict(
            uid=ENV, gid=ENV, userns=True, caps=(1 << CAP_DAC_OVERRIDE) | (1 << CAP_FOWNER)
        ),
    }
    for i, (label, kw) in enumerate(cases.items()):
        d = os.path.join(base, f"m{i}")
        prepare(d)
        code, out = run_as(["sh", "-c", OPS], d, **kw)
        res[label] = {"dir": d, "exit": code, **parse(out)}
    d = os.path.join(base, "mb")
    prepare(d)
    mnt = bindfs_mount(d)
    try:
        code, out = run_as(["sh", "-c", OPS], mnt, uid=ENV, gid=ENV)
        res["own uid on bindfs --map"] = {"dir": d, "exit": code, **parse(out)}
    finally:
        bindfs_umount(mnt)
    return res


def make_tree():
    """A git work tree of NFILES small files (200 dirs), committed and packed, as a tar."""
    src = "/var/tmp/speedtree"
    tar = "/var/tmp/speedtree.tar"
    if os.path.exists(tar):
        return tar
    os.makedirs(src)
    per = max(1, NFILES // 200)
    for d in range(200):
        os.mkdir(f"{src}/d{d:03d}")
        for f in range(per):
            with open(f"{src}/d{d:03d}/f{f:04d}.txt", "w") as fh:
                fh.write(f"file {d} {f}\n" * 4)
    git = ["git", "-C", src, "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "tree"], ["repack", "-a", "-d", "-q"],
                 ["prune-packed"]):
        r = subprocess.run(git + args, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"git {args[0]} failed: {r.stderr[-800:]}")
    subprocess.run(["tar", "-cf", tar, "-C", "/var/tmp", "speedtree"], check=True)
    shutil.rmtree(src)
    os.chmod(tar, 0o644)
    return tar


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def timed(argv, cwd, uid, gid, **how):
    t0 = time.monotonic()
    code, out = run_as(argv, cwd, uid, gid, **how)
    dt = time.monotonic() - t0
    if code != 0:
        raise RuntimeError(f"{argv} failed ({code}): {out[-500:]}")
    return dt


def speed(workdir, uid, gid, tar, **how):
    t = {}
    git = ["git", "-c", "safe.directory=*", "status", "--porcelain"]
    t["untar"] = timed(["tar", "-xf", tar], workdir, uid, gid, **how)
    tree = os.path.join(workdir, "speedtree")
    t["git status (1st)"] = timed(git, tree, uid, gid, **how)
    t["git status (2nd)"] = timed(git, tree, uid, gid, **how)
    t["delete tree"] = timed(["rm", "-rf", "speedtree"], workdir, uid, gid, **how)
    t["write 200 MB"] = timed(["dd", "if=/dev/zero", "of=big", "bs=1M", "count=200", "conv=fsync"], workdir, uid, gid,
                              **how)
    drop_caches()
    t["read 200 MB"] = timed(["dd", "if=big", "of=/dev/null", "bs=1M"], workdir, uid, gid, **how)
    timed(["rm", "-f", "big"], workdir, uid, gid, **how)
    return t


def speeds(share, tar):
    d = os.path.join(share["path"], "speed")
    prepare(d)
    result = {}

    def add(way, times):
        for op, seconds in times.items():  # the best of the rounds: the least disturbed
            result.setdefault(way, {})[op] = min(seconds, result.get(way, {}).get(op, seconds))

    for _ in range(ROUNDS):
        add("direct", speed(d, OWNER, GROUP, tar))
        if "userns" in WAYS:
            try:  # userns mode: the share itself, as the env's uid with CAP_DAC_OVERRIDE, CAP_FOWNER in its namespace
                add("userns", speed(d, ENV, ENV, tar, userns=True, caps=1 << CAP_DAC_OVERRIDE | 1 << CAP_FOWNER))
            except RuntimeError:  # the share lets the caller's uid own new files: userns mode is not chosen there
                sh(["rm", "-rf", os.path.join(d, "speedtree"), os.path.join(d, "big")])
        if "bindfs" in WAYS:
            mnt = bindfs_mount(d)
            try:
                add("bindfs", speed(mnt, ENV, ENV, tar))
            finally:
                bindfs_umount(mnt)
    shutil.rmtree(d, ignore_errors=True)
    return result


def main():
    result = {"kernel": os.uname().release, "shares": {}}
    for share in SHARES:
        if not os.path.exists(share["path"]):  # the guest's own disk, as a control
            os.makedirs(share["path"])
            os.chown(share["path"], OWNER, GROUP)
        result["shares"][share["kind"]] = {"functional": functional(share)}
    if NFILES:
        tar = make_tree()
        for share in SHARES:
            if not share.get("speed", True):
                continue
            result["shares"][share["kind"]]["speed"] = speeds(share, tar)
    json.dump(result, sys.stdout)


main()
