"""The state database: an index and history of envs (the guest is the truth of what exists).

SQLite through the SQLAlchemy ORM; the schema is migrated to the newest revision on first use.
Every database failure leaves here as a one-line StateError naming the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import typing as t
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.orm import Session

from llimabox.errors import StateError
from llimabox.models import Env

__all__ = ["EnvRecord", "Store", "migrations_dir"]

UTC = datetime.timezone.utc


@dataclasses.dataclass(frozen=True)
class EnvRecord:
    """One env as recorded; datetimes are timezone-aware UTC."""

    name: str
    project: str
    backend: str
    guest: str
    created_at: datetime.datetime
    last_used_at: datetime.datetime | None
    guest_version: int | None


def migrations_dir() -> Path:
    """The Alembic scripts: in the source tree, or in the installed wheel's data."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "migrations", here / "_data" / "migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise StateError("llima-box is installed without its migrations")


def _utc(value: datetime.datetime | None) -> datetime.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _naive(value: datetime.datetime | None) -> datetime.datetime | None:
    return None if value is None else _utc(value).replace(tzinfo=None)  # type: ignore[union-attr]


def _record(row: Env) -> EnvRecord:
    return EnvRecord(row.name, row.project, row.backend, row.guest, _utc(row.created_at),  # type: ignore[arg-type]
                     _utc(row.last_used_at), row.guest_version)


class Store:
    """The envs table of one state database file."""

    def __init__(self, path: os.PathLike[str] | str) -> None:
        self.path = Path(path)
        self._engine: sa.Engine | None = None

    @contextlib.contextmanager
    def _errors(self) -> t.Iterator[None]:
        try:
            yield
        except exc.OperationalError as e:
            raise StateError(self._explain(str(e.orig))) from None
        except exc.DatabaseError as e:
            raise StateError(f"{self.path}: not a llima-box database (corrupt?): {e.orig}; "
                             "move it away to start fresh") from None
        except OSError as e:
            raise StateError(f"{self.path}: {e.strerror}") from None

    def _explain(self, reason: str) -> str:
        if "locked" in reason or "busy" in reason:
            return f"state database {self.path} is locked by another llima-box; try again"
        return f"state database {self.path}: {reason}"

    def _open(self) -> sa.Engine:
        if self._engine is None:
            with self._errors():
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                engine = sa.create_engine(f"sqlite:///{self.path}", connect_args={"timeout": 3})
                try:
                    self._migrate(engine)
                except BaseException:
                    engine.dispose()
                    raise
                self._engine = engine
        return self._engine

    def _migrate(self, engine: sa.Engine) -> None:
        from llimabox.fastindex import HEAD_REVISION

        with engine.connect() as conn:
            if self._revision(conn) == HEAD_REVISION:
                return  # current: no need to load Alembic (a tenth of a second)
        from alembic import command
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        cfg = Config()
        cfg.set_main_option("script_location", str(migrations_dir()))
        known = {s.revision for s in ScriptDirectory.from_config(cfg).walk_revisions()}
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            current = self._revision(conn)
            if current is not None and current not in known:
                raise StateError(f"{self.path} was written by a newer llima-box (schema {current}); "
                                 "upgrade llima-box")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    @staticmethod
    def _revision(conn: sa.Connection) -> str | None:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()

    @contextlib.contextmanager
    def _session(self) -> t.Iterator[Session]:
        engine = self._open()
        with self._errors(), Session(engine) as session, session.begin():
            yield session

    def schema_revision(self) -> str | None:
        """The database's Alembic revision."""
        with self._errors(), self._open().connect() as conn:
            return self._revision(conn)

    def get(self, name: str) -> EnvRecord | None:
        with self._session() as s:
            row = s.get(Env, name)
            return _record(row) if row else None

    def find_by_project(self, guest: str, project: str) -> EnvRecord | None:
        with self._session() as s:
            row = s.scalar(sa.select(Env).where(Env.guest == guest, Env.project == project))
            return _record(row) if row else None

    def find_containing(self, guest: str, path: str) -> EnvRecord | None:
        """The env whose project is ``path`` or its nearest parent (by whole path components)."""
        hits = [r for r in self.all(guest) if path == r.project or path.startswith(r.project.rstrip("/") + "/")]
        return max(hits, key=lambda r: len(r.project)) if hits else None

    def all(self, guest: str | None = None) -> list[EnvRecord]:
        query = sa.select(Env).order_by(Env.name)
        if guest is not None:
            query = query.where(Env.guest == guest)
        with self._session() as s:
            return [_record(row) for row in s.scalars(query)]

    def upsert(self, record: EnvRecord) -> None:
        values = dataclasses.asdict(record)
        values["created_at"] = _naive(record.created_at)
        values["last_used_at"] = _naive(record.last_used_at)
        with self._session() as s:
            s.merge(Env(**values))

    def touch(self, name: str, when: datetime.datetime | None = None) -> None:
        with self._session() as s:
            row = s.get(Env, name)
            if row is not None:
                row.last_used_at = _naive(when or datetime.datetime.now(UTC))

    def delete(self, name: str) -> bool:
        with self._session() as s:
            return s.execute(sa.delete(Env).where(Env.name == name)).rowcount > 0

    def delete_many(self, names: t.Iterable[str]) -> None:
        names = list(names)
        if names:
            with self._session() as s:
                s.execute(sa.delete(Env).where(Env.name.in_(names)))

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
