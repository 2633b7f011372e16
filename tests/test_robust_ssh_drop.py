"""The SSH connection dropped in the middle of a command (ssh backend, this machine → the guest's sshd):
one clear line and exit 125 here; the remote command gets SIGHUP instead of running on forever."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.guest import Guest
from tests.robust import env_processes

SCRIPT = 'trap "" PIPE; trap "echo hup >\\"$1/hup\\"; exit 0" HUP; echo up; while :; do sleep 0.2; done'


def _ssh_session_pids(guest: Guest, pid: int) -> list[int]:
    """The sshd processes (not the listener) among the ancestors of guest process ``pid``."""
    script = r"""
p=$1 listener=$(cat /run/sshd-test.pid)
while [ "$p" -gt 1 ]; do
	comm=$(cat /proc/$p/comm); pp=$(awk '{print $4}' /proc/$p/stat)
	[ "$comm" = sshd ] && [ "$p" != "$listener" ] && echo "$p"
	p=$pp
done
"""
    r = guest.run(["sh", "-c", script, "sh", str(pid)])
    return [int(x) for x in r.stdout.split()]


def test_dropped_connection(guest: Guest, tmp_path: Path) -> None:
    project = guest.make_project("alice", "drop" + secrets.token_hex(3))
    env = {**os.environ, "LLIMA_BOX_HOME": str(tmp_path), "LLIMA_BOX_KNOWN_HOSTS": str(tmp_path / "known_hosts")}
    env.pop("SSH_AUTH_SOCK", None)
    base = [sys.executable, "-m", "llimabox", "--backend", "ssh", "--host", f"alice@127.0.0.1:{guest.port}",
            "--identity", guest.key, "--accept-host-key"]  # fmt: skip
    p = subprocess.Popen([*base, "shell", project, "--", "sh", "-c", SCRIPT, "sh", project],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert p.stdout is not None and p.stdout.readline() == b"up\n"
    r = guest.run(["pgrep", "-f", f"^sh -c trap .* {project}$"])
    pids = _ssh_session_pids(guest, int(r.stdout.split()[0]))
    assert pids, "no sshd session found above the command"
    guest.run(["kill", "-KILL", *map(str, pids)])  # one may already be gone with the other
    _, err = p.communicate(timeout=60)
    assert p.returncode == 125, err
    lines = err.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "lost" in lines[0], err
    for _ in range(100):  # the guest's watcher notices within about a second
        if guest.run(["test", "-e", f"{project}/hup"]).returncode == 0:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the remote command got no SIGHUP")
    for _ in range(50):
        if not [ln for ln in env_processes(guest) if "while :" in ln or "sleep 0.2" in ln]:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the remote command is still running: {env_processes(guest)}")
