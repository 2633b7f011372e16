"""llima-box killed (SIGKILL) at random moments of ``create``: the next command finishes or cleans up."""

from __future__ import annotations

import random
import secrets
import subprocess
import time

import pytest

from llimabox.names import env_name
from tests.guest import Guest
from tests.robust import UID_MAX, UID_MIN, db_names, env_traces, finish, guest_envs, lb, new_home


@pytest.fixture(scope="module", autouse=True)
def cli(guest: Guest) -> None:
    guest.install_cli()


def _killed_create(guest: Guest, home: str, project: str, delay: float, whole_group: bool) -> None:
    """Start ``create``, SIGKILL it (or its whole process group, sudo and the guest verb too) after ``delay``."""
    script = 'echo $$; exec env LLIMA_BOX_HOME="$1" llima-box --backend local create "$2"'
    argv = guest.argv(["setsid", "sh", "-c", script, "sh", home, project], user="alice")
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None
    pid = int(p.stdout.readline())
    time.sleep(delay)
    guest.run(["kill", "-KILL", "--", f"-{pid}" if whole_group else str(pid)])
    finish(p)


@pytest.mark.parametrize("run", range(10))
def test_sigkill_during_create(guest: Guest, run: int) -> None:
    rnd = random.Random(run)
    home, project = new_home(guest), guest.make_project("alice", "k" + secrets.token_hex(4))
    _killed_create(guest, home, project, rnd.uniform(0.0, 0.9), whole_group=run % 2 == 1)
    if run % 3 == 2:  # the next command deletes: everything half-made goes
        r = lb(guest, home, "delete", project, "--yes")
        assert r.returncode == 0 or r.stderr.startswith(b"Error: no env "), r.stderr
        assert all(row["project"] != project for row in guest_envs(guest).values())
        assert db_names(guest, home) == set()
        assert env_traces(guest, env_name(project)) == []
        return
    r = lb(guest, home, "create", project)  # the next command finishes the env
    assert r.returncode == 0, r.stderr
    name = r.stdout.decode().strip()
    assert guest_envs(guest)[name]["alive"] is True
    assert db_names(guest, home) == {name}
    r = lb(guest, home, "shell", project, "--", "sh", "-c", 'test "$(id -un)" = "$1" && echo ok', "sh", name)
    assert (r.returncode, r.stdout) == (0, b"ok\n"), r.stderr
    assert lb(guest, home, "delete", name, "--yes").returncode == 0
    assert env_traces(guest, name) == []
    assert db_names(guest, home) == set()


@pytest.mark.parametrize("leftover", ["user without group", "group without user"])
def test_half_made_account_is_repaired(guest: Guest, leftover: str) -> None:
    """What a useradd killed between /etc/passwd and /etc/group leaves: create repairs it, delete removes it."""
    home, project = new_home(guest), guest.make_project("alice", "h" + secrets.token_hex(4))
    name = env_name(project)
    ids = f"-K UID_MIN={UID_MIN} -K UID_MAX={UID_MAX} -K GID_MIN={UID_MIN} -K GID_MAX={UID_MAX}"
    if leftover == "user without group":
        script = f'useradd {ids} -M -U "$1" && sed -i "/^$1:/d" /etc/group /etc/gshadow'
    else:
        script = f'groupadd {ids} "$1"'
    assert guest.run(["sh", "-c", script, "sh", name]).returncode == 0
    assert lb(guest, home, "delete", project, "--yes").returncode == 0
    assert env_traces(guest, name) == []
    assert guest.run(["sh", "-c", script, "sh", name]).returncode == 0
    r = lb(guest, home, "shell", project, "--", "id", "-gn")
    assert (r.returncode, r.stdout) == (0, f"{name}\n".encode()), r.stderr
    assert lb(guest, home, "delete", project, "--yes").returncode == 0
    assert env_traces(guest, name) == []
