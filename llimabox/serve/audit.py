"""The audit log of ``serve``: authentication attempts and sessions in the state database.

Writes are serialised by a lock and never fail a login or a session: a database error is
logged and the server goes on.
"""

from __future__ import annotations

import datetime
import logging
import threading
import typing as t

from llimabox.errors import InvalidInput, LlimaBoxError

if t.TYPE_CHECKING:
    from llimabox.store import Store

__all__ = ["Audit", "parse_since", "query"]

log = logging.getLogger("llimabox.serve")


class Audit:
    """Thread-safe recording into one Store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()

    def auth(self, login: str, user: str, source: str, method: str, result: str, detail: str | None) -> None:
        log.info("auth %s from %s by %s: %s%s", login, source, method, result, f" ({detail})" if detail else "")
        self._call(self.store.add_auth, login[:256], user[:64], source, method, result, detail)

    def session_start(self, user: str, source: str, env: str | None, project: str | None, kind: str,
                      command: str | None) -> int | None:
        log.info("session of %s from %s: %s %s in %s", user, source, kind, command or "", env)
        return self._call(self.store.start_session, user, source, env, project, kind, command)

    def session_end(self, session_id: int | None, exit_status: int | None, bytes_in: int, bytes_out: int) -> None:
        if session_id is not None:
            self._call(self.store.end_session, session_id, exit_status, bytes_in, bytes_out)

    def _call(self, fn: t.Callable[..., t.Any], *args: t.Any) -> t.Any:
        with self._lock:
            try:
                return fn(*args)
            except LlimaBoxError as exc:
                log.error("audit log: %s", exc)
                return None


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: datetime.datetime | None = None) -> datetime.datetime:
    """``30m``, ``2h``, ``7d`` (ago), or an ISO 8601 date or time (UTC when it has no zone).

    :raises InvalidInput: neither.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    text = text.strip()
    if text[:-1].isdigit() and text[-1:] in _UNITS:
        return now - datetime.timedelta(seconds=int(text[:-1]) * _UNITS[text[-1]])
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"--since {text!r}: want e.g. 30m, 2h, 7d or 2026-11-23T04:00") from None
    return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)


def query(user: str | None = None, since: str | None = None) -> dict[str, list[dict[str, t.Any]]]:
    """The audit rows of this machine's state database (``LLIMA_BOX_HOME`` picks another)."""
    from llimabox import paths
    from llimabox.store import Store

    when = parse_since(since) if since else None
    store = Store(paths.db_path())
    try:
        return store.audit(user=user, since=when)
    finally:
        store.close()
