"""The state database in trouble: locked, read-only, disk full, corrupt, newer schema.

Each gets one clear ``Error:`` line and a non-zero exit, never a traceback; nothing recorded is lost,
and a file llima-box cannot read is never overwritten. ``shell`` keeps working without the database.
"""

from __future__ import annotations

import hashlib
import secrets
import subprocess
import typing as t

import pytest

from tests.guest import Guest
from tests.robust import db_names, finish, guest_envs, lb, new_home, one_error_line


@pytest.fixture(scope="module", autouse=True)
def cli(guest: Guest) -> None:
    guest.install_cli()


@pytest.fixture
def state(guest: Guest) -> t.Iterator[tuple[str, str, str]]:
    """A state dir with one env recorded: (home, its env's name, a second project not yet made)."""
    home = new_home(guest)
    first, second = (guest.make_project("alice", "s" + secrets.token_hex(4)) for _ in range(2))
    r = lb(guest, home, "create", first)
    assert r.returncode == 0, r.stderr
    name = r.stdout.decode().strip()
    yield home, name, second
    guest.run(["umount", home])  # the read-only and full-disk cases mount over it
    lb(guest, home, "delete-all", "--yes")


def _digest(guest: Guest, path: str) -> str:
    r = guest.run(["cat", path], input=b"")
    return hashlib.sha256(r.stdout).hexdigest()


def _refused(guest: Guest, home: str, project: str, why: str) -> None:
    """``create`` and ``list`` fail with one line naming ``why``; ``shell`` still runs its command."""
    for args in (("create", project), ("list",)):
        r = lb(guest, home, *args)
        assert r.returncode == 1
        assert why in one_error_line(r)
    r = lb(guest, home, "shell", project, "--", "echo", "ran")
    assert (r.returncode, r.stdout) == (0, b"ran\n"), r.stderr
    assert b"Traceback" not in r.stderr


def test_locked_by_another_process(guest: Guest, state: tuple[str, str, str]) -> None:
    home, name, second = state
    hold = ("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('BEGIN EXCLUSIVE'); "
            "print('held', flush=True); sys.stdin.read()")
    locker = subprocess.Popen(guest.argv(["python3", "-c", hold, f"{home}/state.db"], user="alice"),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert locker.stdout is not None and locker.stdout.readline() == b"held\n"
        r = lb(guest, home, "create", second)
        assert r.returncode == 1 and "locked by another process" in one_error_line(r)
        assert all(row["project"] != second for row in guest_envs(guest).values())  # refused before the guest
    finally:
        finish(locker)
    assert db_names(guest, home) == {name}
    assert lb(guest, home, "create", second).returncode == 0
    assert len(db_names(guest, home)) == 2


def test_read_only_state_dir(guest: Guest, state: tuple[str, str, str]) -> None:
    home, name, second = state
    before = _digest(guest, f"{home}/state.db")
    guest.run(["mount", "--bind", home, home]).check_returncode()
    guest.run(["mount", "-o", "remount,bind,ro", home]).check_returncode()
    r = lb(guest, home, "create", second)
    assert r.returncode == 1 and "read-only" in one_error_line(r)
    assert _digest(guest, f"{home}/state.db") == before
    guest.run(["umount", home]).check_returncode()
    assert db_names(guest, home) == {name}


def test_full_disk(guest: Guest, state: tuple[str, str, str]) -> None:
    home, _name, second = state
    tiny = "size=256k,mode=0700,uid=1501,gid=1501"
    guest.run(["mount", "-t", "tmpfs", "-o", tiny, "lb-full", home]).check_returncode()
    assert lb(guest, home, "create", second).returncode == 0  # a fresh database in the tiny state dir
    third = guest.make_project("alice", "s" + secrets.token_hex(4))
    guest.run(["sh", "-c", f"dd if=/dev/zero of={home}/filler bs=4k 2>/dev/null; sync"], user="alice")
    before = _digest(guest, f"{home}/state.db")
    r = lb(guest, home, "create", third)
    assert r.returncode == 1 and "disk is full" in one_error_line(r), r.stderr
    assert lb(guest, home, "list").returncode in (0, 1)  # reading may still work; it never crashes
    assert _digest(guest, f"{home}/state.db") == before
    guest.run(["rm", f"{home}/filler"]).check_returncode()
    assert lb(guest, home, "create", third).returncode == 0
    assert len(db_names(guest, home)) == 2  # the first record survived the full disk


def test_corrupt_database_is_kept(guest: Guest, state: tuple[str, str, str]) -> None:
    home, _, second = state
    path = f"{home}/state.db"
    guest.run(["sh", "-c", f"rm -f {path}-wal {path}-shm; head -c 40000 /dev/urandom >{path}"], user="alice")
    before = _digest(guest, path)
    _refused(guest, home, second, "not a llima-box database")
    assert _digest(guest, path) == before


def test_newer_schema_is_kept(guest: Guest, state: tuple[str, str, str]) -> None:
    home, name, second = state
    path = f"{home}/state.db"
    bump = ("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); "
            "c.execute(\"update alembic_version set version_num='9999'\"); c.commit()")
    guest.run(["python3", "-c", bump, path], user="alice").check_returncode()
    before = _digest(guest, path)
    _refused(guest, home, second, "newer llima-box")
    assert _digest(guest, path) == before
    assert db_names(guest, home) == {name}
