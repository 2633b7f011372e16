"""The hot path's read of the state database, with stdlib sqlite3 (no SQLAlchemy import).

Answers only when the file exists and its schema is exactly ``HEAD_REVISION``; otherwise it
raises FastIndexUnavailable and the caller uses the Store, which migrates.
"""

from __future__ import annotations

import datetime
import os
import sqlite3
from collections.abc import Mapping
from typing import Any

__all__ = ["HEAD_REVISION", "FastIndexUnavailable", "env_names", "find_containing", "touch"]

HEAD_REVISION = "0002"
_STAMP = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy keeps a naive UTC DateTime in SQLite


class FastIndexUnavailable(Exception):
    """The fast index cannot answer; use the Store."""


def _connect(db: os.PathLike[str] | str) -> sqlite3.Connection:
    if not os.path.exists(db):
        raise FastIndexUnavailable(f"{db} does not exist")
    try:
        conn = sqlite3.connect(f"file:{os.fspath(db)}?mode=rw", uri=True, timeout=3)
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error as e:
        raise FastIndexUnavailable(str(e)) from None
    if row is None or row[0] != HEAD_REVISION:
        conn.close()
        raise FastIndexUnavailable("schema is not at the head revision")
    return conn


def find_containing(db: os.PathLike[str] | str, guest: str, path: str) -> tuple[str, str] | None:
    """(name, project) of the env of ``guest`` whose project is ``path`` or one of its parents."""
    conn = _connect(db)
    try:
        rows = conn.execute("SELECT name, project FROM envs WHERE guest = ?", (guest,)).fetchall()
    except sqlite3.Error as e:
        raise FastIndexUnavailable(str(e)) from None
    finally:
        conn.close()
    hits = [(n, p) for n, p in rows if path == p or path.startswith(p.rstrip("/") + "/")]
    return max(hits, key=lambda hit: len(hit[1])) if hits else None


def env_names(db: os.PathLike[str] | str) -> list[str]:
    """Every recorded env's name (for shell completion)."""
    conn = _connect(db)
    try:
        return [row[0] for row in conn.execute("SELECT name FROM envs ORDER BY name")]
    except sqlite3.Error as e:
        raise FastIndexUnavailable(str(e)) from None
    finally:
        conn.close()


def touch(db: os.PathLike[str] | str, name: str, session: Mapping[str, Any] | None = None) -> None:
    """Record that env ``name`` was used now, and the ``session`` (a row of ``audit_sessions`` without id
    and bytes, its datetimes UTC) in the same transaction."""
    conn = _connect(db)
    now = datetime.datetime.now(datetime.UTC).strftime(_STAMP)
    try:
        with conn:
            conn.execute("UPDATE envs SET last_used_at = ? WHERE name = ?", (now, name))
            if session is not None:
                row = {**session, "started_at": _stamp(session["started_at"]), "ended_at": _stamp(session["ended_at"])}
                conn.execute("INSERT INTO audit_sessions (user, source, env, project, kind, command, started_at, "
                             "ended_at, exit_status, bytes_in, bytes_out) VALUES (:user, :source, :env, :project, "
                             ":kind, :command, :started_at, :ended_at, :exit_status, 0, 0)", row)
    except sqlite3.Error as e:
        raise FastIndexUnavailable(str(e)) from None
    finally:
        conn.close()


def _stamp(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime(_STAMP)
