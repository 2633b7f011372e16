"""The uid boundary, the env's lifetime and its terminal in a real systemd guest whose login user owns the share.

Lima's login user has the host user's uid, and so owns every file of the share; an env on it must still share no
per-uid kernel object with her (keyrings, inotify instances, process counts, the identity ``SO_PEERCRED`` shows),
must outlive her sessions, and gets a terminal of its own.
"""

from __future__ import annotations

import secrets
import shlex
import subprocess
import time
import typing as t
from pathlib import Path

import pexpect
import pytest

from tests.vm.lb import LB
from tests.vm.machine import VM

#: add (or look for) a key in the caller's user keyring
USER_KEY = """
import ctypes, os, sys
add_key, keyctl = {"x86_64": (248, 250), "aarch64": (217, 219)}[os.uname().machine]
libc = ctypes.CDLL(None, use_errno=True)
if sys.argv[1] == "add":
    print(libc.syscall(add_key, b"user", b"login-secret", b"s3cr3t", 6, -4) > 0)  # KEY_SPEC_USER_KEYRING
else:
    print(libc.syscall(keyctl, 10, -4, b"user", b"login-secret", 0) > 0)  # KEYCTL_SEARCH
"""

#: hold as many inotify instances as the uid may have, say how many, then wait
INOTIFY_HOG = """
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
held = []
while len(held) < 100000:
    fd = libc.inotify_init()
    if fd < 0:
        break
    held.append(fd)
print("held", len(held), ctypes.get_errno(), flush=True)
time.sleep(60)
"""

#: a service of the login user on an abstract socket: it writes the uid each client connects with
PEER_SERVICE = """
import socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.bind("\\0" + sys.argv[1])
s.listen()
s.settimeout(60)
print("listening", flush=True)
c, _ = s.accept()
pid, uid, gid = struct.unpack("3i", c.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
open(sys.argv[2], "w").write(str(uid))
"""

PEER_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect("\\0" + sys.argv[1])
    print("connected")
except OSError as e:
    print("refused", e.errno)
"""


@pytest.fixture(scope="module")
def project(vm: VM, lb: LB) -> t.Iterator[Path]:
    path = vm.host_project(vm.share("9p"), f"boundary-{secrets.token_hex(2)}")
    r = lb("create", str(path), "--network", "shared")  # the guest's abstract sockets: SO_PEERCRED is seen
    assert r.returncode == 0, r.stderr
    yield path
    lb("delete", r.stdout.decode().strip(), "--yes")


def env_uid(lb: LB, project: Path) -> int:
    r = lb("shell", str(project), "--", "id", "-u")
    assert r.returncode == 0, r.stderr
    return int(r.stdout)


def test_the_login_users_keyring_is_not_the_envs(vm: VM, lb: LB, project: Path) -> None:
    assert vm.ssh(shlex.join(["python3", "-c", USER_KEY, "add"])).stdout == "True\n"
    assert vm.ssh(shlex.join(["python3", "-c", USER_KEY, "search"])).stdout == "True\n"
    r = lb("shell", str(project), "--", "python3", "-c", USER_KEY, "search")
    assert (r.returncode, r.stdout) == (0, b"False\n"), r.stderr


def test_an_env_using_up_its_inotify_instances_leaves_the_login_users(vm: VM, lb: LB, project: Path) -> None:
    hog = subprocess.Popen([*lb.base, "shell", str(project), "--", "python3", "-c", INOTIFY_HOG],
                           stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=lb.env)  # fmt: skip
    try:
        line = hog.stdout.readline().decode().split()
        assert line[:1] == ["held"] and 0 < int(line[1]) < 100000, line  # stopped by the uid's limit
        r = vm.ssh(shlex.join(["python3", "-c", "import ctypes; print(ctypes.CDLL(None).inotify_init() >= 0)"]))
        assert r.stdout == "True\n", r.stderr
    finally:
        hog.kill()
        hog.communicate()


def test_processes_and_peer_credentials_are_the_envs_uid(vm: VM, lb: LB, project: Path) -> None:
    uid = env_uid(lb, project)
    assert uid != vm.uid
    name, out = f"lbvm-peer-{secrets.token_hex(3)}", f"/tmp/peer-{secrets.token_hex(3)}"
    service = subprocess.Popen(vm.ssh_argv(shlex.join(["python3", "-c", PEER_SERVICE, name, out])),
                               stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        assert service.stdout.readline() == b"listening\n"
        marker = f"sleep 7{secrets.randbelow(10**6)}"
        r = lb.shell(project, f"({marker} </dev/null >/dev/null 2>&1 &); python3 -c {shlex.quote(PEER_CLIENT)} {name}")
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"connected\n", r.stdout  # a shared env: the guest's abstract sockets
        service.wait(timeout=30)
        assert vm.ssh(f"cat {out}").stdout == str(uid)
        owners = vm.ssh(f"ps -o uid= -C sleep -o args= | grep -F '{marker}' | awk '{{print $1}}'").stdout.split()
        assert owners == [str(uid)]  # counted against the env's uid (RLIMIT_NPROC), never the login user's
    finally:
        service.kill()
        service.communicate()


def test_the_env_outlives_every_session_of_the_login_user(vm: VM, lb: LB, project: Path) -> None:
    """``loginctl terminate-user`` ends every session of the user (what logout does with KillUserProcesses=yes);
    the env, and what an entry left running in it, live in llima-box's cgroup, not in a session's."""
    in_env, in_session = (f"sleep {n}{secrets.randbelow(10**6)}" for n in (8, 9))
    r = lb.shell(project, f"(setsid {in_env} </dev/null >/dev/null 2>&1 &); cat /proc/self/cgroup")
    assert r.returncode == 0, r.stderr
    assert "/llima-box.slice/" in r.stdout.decode(), r.stdout  # the entry itself
    with subprocess.Popen(vm.ssh_argv(in_session), stdin=subprocess.DEVNULL) as session:  # a live login session
        deadline = time.monotonic() + 60
        while vm.ssh(f"pgrep -fx '{in_session}'").returncode != 0 and time.monotonic() < deadline:
            time.sleep(1)
        r = vm.ssh(f"cat /proc/$(pgrep -fx '{in_session}')/cgroup")
        assert "/session-" in r.stdout, r.stdout + r.stderr  # a logind session's scope, which the next line ends
        vm.root(f"loginctl terminate-user {vm.user}", timeout=30)  # this session ends with it too
        session.wait(timeout=60)
    assert vm.ssh(f"pgrep -fx '{in_session}'").returncode == 1  # the session's processes are gone
    r = lb.shell(project, f"pgrep -fx '{in_env}' >/dev/null && echo alive")
    assert (r.returncode, r.stdout) == (0, b"alive\n"), r.stderr


def test_an_interactive_env_has_a_terminal_of_its_own(lb: LB, project: Path) -> None:
    child = pexpect.spawn(lb.base[0], [*lb.base[1:], "shell", str(project), "--", "sh", "-c",
                                       "tty; test -t 0 && echo on-a-terminal; stty size"],
                          env=lb.env, timeout=120, dimensions=(31, 97))  # fmt: skip
    child.expect(pexpect.EOF)
    out = child.before.decode().replace("\r", "").split("\n")
    child.close()
    assert out[0].startswith("/dev/pts/"), out
    assert out[1:3] == ["on-a-terminal", "31 97"], out
