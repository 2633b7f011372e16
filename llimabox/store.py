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
from llimabox.models import AuthAttempt, Env, SessionLog

__all__ = ["EnvRecord", "Store", "migrations_dir"]

UTC = datetime.UTC


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


def _disk_full(directory: Path) -> bool:
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024


@contextlib.contextmanager
def _file_lock(path: Path) -> t.Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created when missing) for the block."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _now() -> datetime.datetime:
    return datetime.datetime.now(UTC)


def _row_dict(row: t.Any) -> dict[str, t.Any]:
    out = {}
    for column in row.__table__.columns:
        value = getattr(row, column.key)
        if isinstance(value, datetime.datetime):
            value = _utc(value).isoformat().replace("+00:00", "Z")  # type: ignore[union-attr]
        out[column.key] = value
    return out


class Store:
    """The envs table (and the audit tables of ``serve``) of one state database file."""

    def __init__(self, path: os.PathLike[str] | str) -> None:
        self.path = Path(path)
        self._engine: sa.Engine | None = None

    @contextlib.contextmanager
    def _errors(self) -> t.Iterator[None]:
        try:
            yield
        except exc.OperationalError as e:
            raise StateError(self._explain(str(e.orig))) from None
        except exc.IntegrityError as e:
            raise StateError(f"state database {self.path}: {e.orig}") from None
        except exc.DatabaseError as e:
            raise StateError(f"{self.path}: not a llima-box database (corrupt?): {e.orig}; "
                             "move it away to start fresh") from None
        except OSError as e:
            raise StateError(f"{self.path}: {e.strerror}") from None

    def _explain(self, reason: str) -> str:
        if "locked" in reason or "busy" in reason:
            return f"state database {self.path} is locked by another process; try again"
        if "full" in reason or ("I/O error" in reason and _disk_full(self.path.parent)):
            return f"state database {self.path}: the disk is full; nothing was changed"
        if "readonly" in reason or "read-only" in reason or "unable to open" in reason:
            if not os.access(self.path.parent, os.W_OK) or not os.access(self.path, os.W_OK):
                return f"state database {self.path} is read-only (its directory or file is not writable)"
        return f"state database {self.path}: {reason}"

    def _open(self) -> sa.Engine:
        if self._engine is None:
            with self._errors():
                self._private()
                engine = sa.create_engine(f"sqlite:///{self.path}", connect_args={"timeout": 3})
                try:
                    self._migrate(engine)
                except BaseException:
                    engine.dispose()
                    raise
                self._engine = engine
        return self._engine

    def _private(self) -> None:
        """The state directory 0700 and the database 0600 (env names and project paths are nobody else's)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        for path, mode in ((self.path.parent, 0o700), (self.path, 0o600)):
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | (os.O_CREAT if mode == 0o600 else 0), mode)
            try:
                if os.fstat(fd).st_mode & 0o777 != mode:
                    with contextlib.suppress(PermissionError):  # not ours: leave it as it is
                        os.fchmod(fd, mode)
            finally:
                os.close(fd)

    def _migrate(self, engine: sa.Engine) -> None:
        from llimabox.fastindex import HEAD_REVISION

        with engine.connect() as conn:
            if self._revision(conn) == HEAD_REVISION:
                return  # current: no need to load Alembic (a tenth of a second)
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        cfg = Config()
        cfg.set_main_option("script_location", str(migrations_dir()))
        scripts = ScriptDirectory.from_config(cfg)
        with _file_lock(self.path.with_name(self.path.name + ".lock")), engine.begin() as conn:
            self._upgrade(conn, cfg, {s.revision for s in scripts.walk_revisions()})

    def _upgrade(self, conn: sa.Connection, cfg: t.Any, known: set[str]) -> None:
        """Migrate to the head revision (holding the migration lock: one process at a time)."""
        from alembic import command

        current = self._revision(conn)
        if current is not None and current not in known:
            raise StateError(f"{self.path} was written by a newer llima-box (schema {current}); "
                             "upgrade llima-box")
        if current is None and sa.inspect(conn).get_table_names():
            raise StateError(f"{self.path} is not a llima-box database (it has other tables); "
                             "move it away to start fresh")
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        # One transaction for every step: pysqlite would run each CREATE TABLE on its own, and a
        # crash between two of them would leave tables without a revision.
        conn.exec_driver_sql("BEGIN IMMEDIATE")
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
        """Insert or replace the record of ``record.name`` (one statement: safe against concurrent upserts)."""
        from sqlalchemy.dialects.sqlite import insert

        values = dataclasses.asdict(record)
        values["created_at"] = _naive(record.created_at)
        values["last_used_at"] = _naive(record.last_used_at)
        stmt = insert(Env).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[Env.name], set_={k: stmt.excluded[k] for k in values if k != "name"}
        )
        with self._session() as s:
            s.execute(stmt)

    def touch(self, name: str, when: datetime.datetime | None = None) -> None:
        """Record that ``name`` was used (one UPDATE: it takes the write lock even when no row matches)."""
        stamp = _naive(when or datetime.datetime.now(UTC))
        with self._session() as s:
            s.execute(sa.update(Env).where(Env.name == name).values(last_used_at=stamp))

    def delete(self, name: str) -> bool:
        with self._session() as s:
            return s.execute(sa.delete(Env).where(Env.name == name)).rowcount > 0

    def delete_many(self, names: t.Iterable[str]) -> None:
        names = list(names)
        if names:
            with self._session() as s:
                s.execute(sa.delete(Env).where(Env.name.in_(names)))

    @contextlib.contextmanager
    def changing_envs(self) -> t.Iterator[None]:
        """Hold the host's env lock: a change of the guest's envs and its record happen as one step.

        ``create`` holds it from the guest verb to the upsert, ``delete``/``delete-all`` from reading
        the guest's list to dropping the records, so neither can undo half of the other.
        """
        with self._errors():
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            lock = _file_lock(self.path.with_name("envs.lock"))
            lock.__enter__()
        try:
            yield
        finally:
            lock.__exit__(None, None, None)

    # -- the audit tables of ``llima-box serve`` --

    def add_auth(self, login: str, user: str, source: str, method: str, result: str,
                 detail: str | None = None) -> None:
        """Record one authentication attempt (now)."""
        with self._session() as s:
            s.add(AuthAttempt(at=_naive(_now()), login=login, user=user, source=source, method=method,
                              result=result, detail=detail))

    def start_session(self, user: str, source: str, env: str | None, project: str | None, kind: str,
                      command: str | None) -> int:
        """Record the start of a session (now); returns its id for :meth:`end_session`."""
        with self._session() as s:
            row = SessionLog(user=user, source=source, env=env, project=project, kind=kind, command=command,
                             started_at=_naive(_now()), bytes_in=0, bytes_out=0)
            s.add(row)
            s.flush()
            return row.id

    def add_session(self, row: t.Mapping[str, t.Any]) -> None:
        """Record a whole session at once (a ``shell`` of the CLI): ``row`` has every column but the id and
        bytes; its datetimes are UTC."""
        with self._session() as s:
            s.add(SessionLog(**{**row, "started_at": _naive(row["started_at"]), "ended_at": _naive(row["ended_at"]),
                                "bytes_in": 0, "bytes_out": 0}))

    def end_session(self, session_id: int, exit_status: int | None, bytes_in: int, bytes_out: int) -> None:
        """Record the end of a session (now)."""
        with self._session() as s:
            row = s.get(SessionLog, session_id)
            if row is not None:
                row.ended_at = _naive(_now())
                row.exit_status, row.bytes_in, row.bytes_out = exit_status, bytes_in, bytes_out

    def audit(self, user: str | None = None, since: datetime.datetime | None = None) -> dict[str, list[dict]]:
        """Authentication attempts and sessions, oldest first; datetimes as ISO 8601 UTC strings."""
        auth = sa.select(AuthAttempt).order_by(AuthAttempt.id)
        sessions = sa.select(SessionLog).order_by(SessionLog.id)
        if user is not None:
            auth = auth.where(AuthAttempt.user == user)
            sessions = sessions.where(SessionLog.user == user)
        if since is not None:
            auth = auth.where(AuthAttempt.at >= _naive(since))
            sessions = sessions.where(SessionLog.started_at >= _naive(since))
        with self._session() as s:
            return {"auth": [_row_dict(r) for r in s.scalars(auth)],
                    "sessions": [_row_dict(r) for r in s.scalars(sessions)]}

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
