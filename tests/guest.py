"""A real guest for tests: a copy-on-write clone of this machine in its own namespaces.

It runs sshd on a loopback port, has the guest login user ``alice`` (and ``bob``), the
"host home" mount ``/Users`` (tmpfs), a directory ``shared`` of this machine seen at the same
path inside (as Lima mounts the host's home: for tests that use this process's working
directory as a project), and the guest side installed by the project's own
``provision/install.sh``. Everything it writes stays in an overlay that vanishes on stop.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PREFIX = "/usr/local/libexec/llima-box"
USERS = {"alice": 1501, "bob": 1502}


class GuestUnavailable(RuntimeError):
    """A prerequisite of the test guest is missing."""


def check_prerequisites() -> None:
    """Raise GuestUnavailable naming what is missing (never a skip)."""
    if os.geteuid() != 0:
        raise GuestUnavailable("the real-guest tests must run as root")
    for tool in ("unshare", "nsenter", "setpriv", "sudo", "ssh", "ssh-keygen", "/usr/sbin/sshd"):
        if shutil.which(tool) is None:
            raise GuestUnavailable(f"{tool} is missing: run .ci/run (it installs the test prerequisites)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def guest_argv(pid: int, argv: list[str], user: str = "root", cwd: str | None = None) -> list[str]:
    """The argv that runs ``argv`` as ``user`` inside the guest whose PID 1 is ``pid`` (seen from here)."""
    enter = ["nsenter", "-t", str(pid), "-m", "-p", "-u", "-i", "-r", "-w"]
    if user == "root":
        env = ["env", "-i", "HOME=/root", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        if cwd:
            env[1:1] = ["-C", cwd]
        return [*enter, "--", *env, *list(argv)]
    home = f"/home/{user}.guest"
    env = ["env", "-i", "-C", cwd or home, f"HOME={home}", f"USER={user}", f"LOGNAME={user}",
           "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"]
    drop = ["setpriv", "--reuid", user, "--regid", user, "--init-groups", "--"]
    return [*enter, "--", *drop, *env, *list(argv)]


def boot_argv(dir: str | os.PathLike[str], port: int, shared: str | os.PathLike[str], *options: str) -> list[str]:
    """The argv that boots a guest in ``dir`` (see tests/guest_boot.sh for ``options``)."""
    return ["unshare", "--mount", "--pid", "--fork", "--uts", "--ipc", "--propagation", "private",
            "bash", str(REPO / "tests" / "guest_boot.sh"), str(dir), str(REPO), str(port), str(shared), *options]


def _remove_empty_cgroups() -> None:
    """The guest shares this machine's cgroup2 hierarchy: drop the env cgroups its guests left (empty ones)."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2":
            parent = Path(fields[1]) / "llima-box"
            for group in parent.glob("lb-*") if parent.is_dir() else ():
                with contextlib.suppress(OSError):
                    group.rmdir()
            with contextlib.suppress(OSError):
                parent.rmdir()


class Guest:
    """The running test guest; use as a context manager."""

    user = "alice"
    uid = USERS["alice"]
    home = "/home/alice.guest"
    host_home = "/Users/alice"

    def __init__(self) -> None:
        check_prerequisites()
        self.dir = Path(tempfile.mkdtemp(prefix="lbg.", dir="/var/tmp"))
        self.shared = Path(tempfile.mkdtemp(prefix="llima-box-test.", dir="/mnt"))  # not a system dir
        self.port = free_port()
        self.key = str(self.dir / "key")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.key], check=True)
        with open(self.dir / "boot.log", "wb") as log:
            self.proc = self._boot(log)
        self._wait_ready()
        self.pid = int((self.dir / "pid").read_text())
        self.host_key_pub = (self.dir / "out" / "host_key.pub").read_text()

    def _boot(self, log: object) -> subprocess.Popen:
        return subprocess.Popen(
            boot_argv(self.dir, self.port, self.shared),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
        )

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not (self.dir / "out" / "ready").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.dir / "boot.log").read_text(errors="replace")[-2000:]
                prov = self.dir / "out" / "provision.log"
                if prov.exists():
                    log += prov.read_text(errors="replace")[-2000:]
                self.stop()
                raise GuestUnavailable(f"test guest did not boot:\n{log}")
            time.sleep(0.05)

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.shared, ignore_errors=True)
        _remove_empty_cgroups()

    def restart(self) -> None:
        """Reboot the guest, as far as a reboot is visible to llima-box: every process but its init ends
        (sshd, env holders, everything in the envs), ``/run`` and ``/tmp`` start empty, then sshd and the
        provisioning (which runs at every boot) start again. Disk contents (``/var``, ``/home``, ``/Users``)
        are kept, and so is the port."""
        script = (
            "kill -KILL -1 2>/dev/null || true; sleep 0.2; "  # in the guest's PID namespace: all but init and us
            'park=$(mktemp -d /var/tmp/lb-repo.XXXXXX) && mount --move "$1" "$park" && '  # the checkout's bind
            "umount -l /run && mount -t tmpfs guest-run /run && umount -l /tmp && mount -t tmpfs guest-tmp /tmp && "
            'mkdir -p "$1" && mount --move "$park" "$1" && rmdir "$park" && '
            "install -d -m 0755 /run/sshd && /usr/sbin/sshd -f /etc/ssh/llima_test_sshd_config && "
            'bash "$1/provision/install.sh" --user alice --roots "$2"'
        )
        r = self.run(["bash", "-c", script, "restart", str(REPO), self.roots])
        if r.returncode != 0:
            raise GuestUnavailable(f"test guest did not restart: {r.stderr[-2000:]}")

    def argv(self, argv: list[str], user: str = "root", cwd: str | None = None) -> list[str]:
        """The argv that runs ``argv`` inside the guest as ``user``."""
        return guest_argv(self.pid, argv, user, cwd)

    def run(self, argv: list[str], user: str = "root", input: bytes | str | None = None,
            cwd: str | None = None, timeout: float = 60, **kw: object) -> subprocess.CompletedProcess:
        """Run ``argv`` in the guest; text mode unless ``input`` is bytes."""
        text = not isinstance(input, bytes)
        return subprocess.run(self.argv(argv, user, cwd), input=input, capture_output=True,
                              text=text, timeout=timeout, **kw)

    def sh(self, script: str, user: str = "root") -> subprocess.CompletedProcess:
        return self.run(["sh", "-c", script], user=user)

    def guest_script(self, verb: str, *args: str, user: str = "alice", **kw: object) -> subprocess.CompletedProcess:
        """Run a guest verb as ``user`` through sudo, as the host side does."""
        return self.run(["sudo", "-n", f"{PREFIX}/{verb}", *args], user=user, **kw)

    def enter(self, name: str, project: str, *cmd: str, **kw: object) -> subprocess.CompletedProcess:
        return self.guest_script("enter", name, project, "--", *cmd, **kw)

    def make_project(self, owner: str, name: str) -> str:
        path = f"/Users/{owner}/{name}"
        self.run(["install", "-d", "-m", "0755", "-o", owner, "-g", owner, path]).check_returncode()
        return path

    def ssh_argv(self, *cmd: str) -> list[str]:
        return ["ssh", "-p", str(self.port), "-i", self.key, "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", f"{self.user}@127.0.0.1", *cmd]

    def install_cli(self) -> None:
        """Make this checkout's ``llima-box`` (run by this interpreter) runnable by the guest's users."""
        exe = Path(sys.executable)
        for parent in {*exe.parents, *exe.resolve().parents}:  # a venv's python is a link into the system's
            self.run(["chmod", "o+rx", str(parent)])
        # this checkout's llimabox (seen read-only at the same path in the guest), not an installed copy
        wrapper = (f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(REPO))}\nexport PYTHONPATH\n"
                   f'exec {shlex.quote(str(exe))} -m llimabox "$@"\n')
        self.run(["sh", "-c", "cat > /usr/local/bin/llima-box && chmod 755 /usr/local/bin/llima-box"],
                 input=wrapper).check_returncode()

    def reprovision(self, *args: str) -> subprocess.CompletedProcess:
        return self.run(["bash", str(REPO / "provision" / "install.sh"), "--user", "alice",
                         "--roots", self.roots, *args])

    @property
    def roots(self) -> str:
        return f"/Users/alice:/Users/bob:{self.shared}"

    def make_shared_project(self, owner: str, name: str) -> Path:
        """A project at the same path here and in the guest, owned by ``owner``."""
        path = self.shared / owner / name
        path.mkdir()
        os.chown(path, USERS[owner], USERS[owner])
        return path
