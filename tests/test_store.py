"""The state database, on real SQLite files."""

from __future__ import annotations

import datetime
import sqlite3
import subprocess
import sys

import pytest

from llimabox import fastindex
from llimabox.errors import StateError
from llimabox.store import EnvRecord, Store

NOW = datetime.datetime(2026, 11, 22, 12, 0, tzinfo=datetime.UTC)


def rec(name: str, project: str, guest: str = "local") -> EnvRecord:
    return EnvRecord(name, project, "local", guest, NOW, None, 1)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "state" / "state.db")
    yield s
    s.close()


def test_crud_and_containing(store):
    store.upsert(rec("lb-b", "/a/b"))
    store.upsert(rec("lb-bc", "/a/b/c"))
    store.upsert(rec("lb-x", "/a/b", guest="ssh:x"))
    assert [r.name for r in store.all("local")] == ["lb-b", "lb-bc"]
    assert store.find_containing("local", "/a/b/c/d").name == "lb-bc"
    assert store.find_containing("local", "/a/b/x").name == "lb-b"
    assert store.find_containing("local", "/a/bc") is None
    assert store.find_by_project("ssh:x", "/a/b").name == "lb-x"
    store.touch("lb-b", NOW)
    assert store.get("lb-b").last_used_at == NOW
    assert store.delete("lb-b") and not store.delete("lb-b")
    store.delete_many(["lb-bc", "lb-x"])
    assert store.all() == []
    assert (store.path.parent.stat().st_mode & 0o777) == 0o700


def test_fastindex_agrees_with_store(store):
    with pytest.raises(fastindex.FastIndexUnavailable):
        fastindex.find_containing(store.path, "local", "/a")
    assert not store.path.exists()
    store.upsert(rec("lb-b", "/a/b"))
    assert fastindex.find_containing(store.path, "local", "/a/b/c") == ("lb-b", "/a/b")
    assert fastindex.find_containing(store.path, "local", "/a/bc") is None
    fastindex.touch(store.path, "lb-b")
    assert store.get("lb-b").last_used_at > NOW
    assert store.schema_revision() == fastindex.HEAD_REVISION


def test_corrupt_file_is_reported_and_kept(tmp_path):
    path = tmp_path / "state.db"
    path.write_bytes(b"not sqlite" * 500)
    with pytest.raises(StateError, match="not a llima-box database"):
        Store(path).all()
    assert path.read_bytes() == b"not sqlite" * 500


def test_newer_schema_is_refused_and_kept(store):
    store.upsert(rec("lb-b", "/a/b"))
    store.close()
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999zz'")
    before = store.path.read_bytes()
    with pytest.raises(StateError, match="newer llima-box"):
        Store(store.path).all()
    assert store.path.read_bytes() == before


def test_locked_database_fails_clearly(store):
    store.upsert(rec("lb-b", "/a/b"))
    store.close()
    conn = sqlite3.connect(store.path)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StateError, match="locked by another process"):
            Store(store.path).upsert(rec("lb-c", "/a/c"))
    finally:
        conn.close()


def test_unusable_state_dir(tmp_path):
    (tmp_path / "file").write_text("")  # the tests run as root: a file in the way, not permissions
    with pytest.raises(StateError, match="file"):
        Store(tmp_path / "file" / "sub" / "state.db").all()


def test_hot_path_modules_do_not_import_sqlalchemy():
    code = "import sys, llimabox.fastindex, llimabox.config, llimabox.paths; print('sqlalchemy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout == "False\n"


def test_head_revision_constant_is_alembics_head():
    """The store skips Alembic when a database is at HEAD_REVISION: it must be the newest migration."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from llimabox.store import migrations_dir

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    assert ScriptDirectory.from_config(cfg).get_heads() == [fastindex.HEAD_REVISION]


def _at_0001(path, sql):
    """A database at schema revision 0001, then ``sql`` run on it."""
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from llimabox.store import migrations_dir

    engine = sa.create_engine(f"sqlite:///{path}")
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.exec_driver_sql(sql)
    engine.dispose()
    return path


def test_upgrade_from_0001_keeps_rows(tmp_path):
    """A database of the first schema (envs only) gains the audit tables and keeps its envs."""
    path = _at_0001(tmp_path / "state.db", "INSERT INTO envs (name, project, backend, guest, created_at, "
                    "guest_version) VALUES ('lb-old', '/a/old', 'local', 'local', '2026-01-02 03:04:05', 1)")
    store = Store(path)
    try:
        assert store.schema_revision() == "0002" == fastindex.HEAD_REVISION
        old = store.get("lb-old")
        created = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
        assert (old.project, old.created_at) == ("/a/old", created)
        store.add_auth("alice+web", "alice", "10.0.0.1", "password", "failure", "bad password")
        sid = store.start_session("alice", "10.0.0.1", "lb-web", "/home/alice/web", "exec", "make test")
        store.end_session(sid, 2, 10, 20)
        rows = store.audit(user="alice")
        assert [(r["login"], r["result"]) for r in rows["auth"]] == [("alice+web", "failure")]
        assert [(r["command"], r["exit_status"], r["bytes_in"], r["bytes_out"]) for r in rows["sessions"]] == [
            ("make test", 2, 10, 20)]
        assert store.audit(user="bob") == {"auth": [], "sessions": []}
    finally:
        store.close()


def test_a_failed_upgrade_changes_nothing(tmp_path):
    """Migrations run in one transaction: a step failing half-way leaves the previous revision intact."""
    path = _at_0001(tmp_path / "state.db", "CREATE TABLE audit_sessions (x INTEGER)")  # 0002 fails at its 2nd
    with pytest.raises(StateError):
        Store(path).all()
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert tables == {"alembic_version", "envs", "audit_sessions"} and version == ("0001",)


def test_state_is_private(tmp_path):
    """Env names and project paths are nobody else's: the directory 0700, the database 0600, also when an
    older llima-box (or the mux, creating the state dir as a parent of its own) left them 0755 and 0644."""
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    (state / "state.db").touch(mode=0o644)
    (state / "state.db").chmod(0o644)
    s = Store(state / "state.db")
    try:
        s.upsert(rec("lb-b", "/a/b"))
    finally:
        s.close()
    assert (state.stat().st_mode & 0o777, (state / "state.db").stat().st_mode & 0o777) == (0o700, 0o600)
    fresh = Store(tmp_path / "new" / "state.db")
    try:
        fresh.upsert(rec("lb-b", "/a/b"))
    finally:
        fresh.close()
    assert ((tmp_path / "new").stat().st_mode & 0o777, (tmp_path / "new" / "state.db").stat().st_mode & 0o777) == (
        0o700, 0o600)
