"""The env's namespaces gone (holders killed), and the whole guest restarted: the next command rebuilds
the env; project and home data are intact; ``list`` tells the truth in between."""

from __future__ import annotations

import json
import secrets
import subprocess

import pytest

from tests.guest import Guest
from tests.robust import env_processes, holder_pids, lb, new_home


@pytest.fixture(scope="module", autouse=True)
def cli(guest: Guest) -> None:
    guest.install_cli()


def _status(guest: Guest, home: str, name: str) -> str:
    r = lb(guest, home, "list", "--json")
    assert r.returncode == 0, r.stderr
    return {row["name"]: row["status"] for row in json.loads(r.stdout)}[name]


def _data_intact(guest: Guest, home: str, project: str, token: str) -> None:
    r = lb(guest, home, "shell", project, "--", "sh", "-c", 'cat "$1/data" ~/data', "sh", project)
    assert (r.returncode, r.stdout.decode()) == (0, f"{token}\n{token}\n"), r.stderr


@pytest.fixture
def env(guest: Guest) -> tuple[str, str, str, str]:
    """A running env with data in its project and home: (state home, project, name, token)."""
    home, token = new_home(guest), secrets.token_hex(8)
    project = guest.make_project("alice", "r" + secrets.token_hex(4))
    r = lb(guest, home, "create", project)
    assert r.returncode == 0, r.stderr
    name = r.stdout.decode().strip()
    script = 'echo "$2" >"$1/data"; echo "$2" >~/data'
    r = lb(guest, home, "shell", project, "--", "sh", "-c", script, "sh", project, token)
    assert r.returncode == 0, r.stderr
    assert _status(guest, home, name) == "running"
    return home, project, name, token


def test_holders_killed(guest: Guest, env: tuple[str, str, str, str]) -> None:
    home, project, name, token = env
    sleeper = subprocess.Popen(
        [*guest.argv(["env", f"LLIMA_BOX_HOME={home}", "llima-box", "--backend", "local", "shell", project, "--",
                      "sh", "-c", "echo up; exec sleep 300"], user="alice")],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert sleeper.stdout is not None and sleeper.stdout.readline() == b"up\n"
    pids = holder_pids(guest)
    assert pids
    guest.run(["kill", "-KILL", *map(str, pids)]).check_returncode()
    sleeper.communicate(timeout=30)  # the env's processes went with its holder
    assert not [p for p in env_processes(guest) if "sleep 300" in p]
    assert _status(guest, home, name) == "stopped"
    _data_intact(guest, home, project, token)
    assert _status(guest, home, name) == "running"
    assert lb(guest, home, "delete", name, "--yes").returncode == 0


def test_guest_restart(guest: Guest, env: tuple[str, str, str, str]) -> None:
    home, project, name, token = env
    guest.restart()
    assert env_processes(guest) == [] and holder_pids(guest) == []
    assert _status(guest, home, name) == "stopped"
    _data_intact(guest, home, project, token)
    assert _status(guest, home, name) == "running"
    assert subprocess.run(guest.ssh_argv("true"), capture_output=True, timeout=30).returncode == 0  # sshd is back
    assert lb(guest, home, "delete", name, "--yes").returncode == 0
