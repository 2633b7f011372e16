"""Many llima-box commands at once against one real guest (local backend, run as alice in the guest)."""

from __future__ import annotations

import json
import secrets
import time

import pytest

from tests.guest import Guest
from tests.robust import db_names, env_processes, env_traces, finish, guest_envs, lb, lb_popen, new_home, one_error_line


@pytest.fixture(scope="module", autouse=True)
def cli(guest: Guest) -> None:
    guest.install_cli()


def _project(guest: Guest) -> str:
    return guest.make_project("alice", "c" + secrets.token_hex(4))


def test_twenty_shells_at_once_make_one_env(guest: Guest) -> None:
    home, project = new_home(guest), _project(guest)
    procs = [lb_popen(guest, home, "shell", project, "--", "true") for _ in range(20)]
    results = [finish(p)[::2] for p in procs]
    assert [code for code, _ in results] == [0] * 20, results
    assert [err for _, err in results if err] == []  # no warning about the state database either
    mine = [n for n, row in guest_envs(guest).items() if row["project"] == project]
    assert len(mine) == 1
    assert db_names(guest, home) == set(mine)
    assert lb(guest, home, "delete", project, "--yes").returncode == 0


def test_ten_creates_of_different_projects_at_once(guest: Guest) -> None:
    home = new_home(guest)
    projects = [_project(guest) for _ in range(10)]
    procs = [lb_popen(guest, home, "create", p) for p in projects]
    outs = [finish(p) for p in procs]
    assert [code for code, _, _ in outs] == [0] * 10, outs
    names = {out.decode().strip() for _, out, _ in outs}
    live = guest_envs(guest)
    assert len(names) == 10 and names <= set(live)
    assert {live[n]["project"] for n in names} == set(projects)
    assert db_names(guest, home) == names
    for n in names:
        assert lb(guest, home, "delete", n, "--yes").returncode == 0


@pytest.mark.parametrize("made_by", ["create", "shell"])
def test_delete_while_a_shell_runs(guest: Guest, made_by: str) -> None:
    home, project = new_home(guest), _project(guest)
    if made_by == "create":
        assert lb(guest, home, "create", project).returncode == 0
    shell = lb_popen(guest, home, "shell", project, "--", "sh", "-c", "echo started; exec sleep 300")
    assert shell.stdout is not None and shell.stdout.readline() == b"started\n"
    (name,) = db_names(guest, home)
    r = lb(guest, home, "delete", project, "--yes")
    assert r.returncode == 0, r.stderr
    code, _, _ = finish(shell, timeout=30)
    assert code != 0  # the command was ended by the delete
    assert name not in guest_envs(guest)
    assert env_traces(guest, name) == []
    assert not [p for p in env_processes(guest) if "sleep 300" in p]
    assert name not in db_names(guest, home)  # the ended shell did not record the env again


def test_delete_all_racing_creates_is_consistent(guest: Guest) -> None:
    home = new_home(guest)
    projects = [_project(guest) for _ in range(6)]
    for rnd in range(3):
        creates = [lb_popen(guest, home, "create", p) for p in projects]
        time.sleep(0.05 * rnd)
        wipe = lb_popen(guest, home, "delete-all", "--yes")
        for p in [*creates, wipe]:
            code, _, err = finish(p)
            assert code == 0 or (err.startswith(b"Error: ") and len(err.splitlines()) == 1), err
        r = lb(guest, home, "list", "--json")
        assert r.returncode == 0, r.stderr
        rows = json.loads(r.stdout)
        assert {row["status"] for row in rows} <= {"running", "stopped"}, rows
        live = {n for n, row in guest_envs(guest).items() if row["project"] in projects}
        assert db_names(guest, home) == live
    r = lb(guest, home, "delete-all", "--yes")
    assert r.returncode == 0, one_error_line(r)
    assert db_names(guest, home) == set()
