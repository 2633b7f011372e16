"""Connection caps of ``serve``: unauthenticated connections are capped apart from authenticated ones.

A new connection is unauthenticated until it logs in. Those are capped per source address
(``serve_per_source_max_startups``) and in all, as OpenSSH's ``MaxStartups start:rate:full``
(``serve_max_startups``): from ``start`` on, a new connection is dropped at once with probability
``rate`` %, rising linearly to 100 % at ``full``. Authenticated connections have their own cap
(``serve_max_connections``), so a flood of unauthenticated ones never refuses a logged-in user.
"""

from __future__ import annotations

import collections
import dataclasses
import ipaddress
import random
import threading
import typing as t

from llimabox.errors import InvalidInput

__all__ = ["Startups", "parse_startups", "source_key", "Gate", "Ticket"]


@dataclasses.dataclass(frozen=True)
class Startups:
    start: int
    rate: int
    full: int

    def drop_chance(self, unauthenticated: int) -> float:
        """The probability of dropping a new connection while ``unauthenticated`` ones are open."""
        if unauthenticated >= self.full:
            return 1.0
        if unauthenticated < self.start:
            return 0.0
        rate = self.rate / 100
        return rate + (1 - rate) * (unauthenticated - self.start) / (self.full - self.start)


def parse_startups(text: str) -> Startups:
    """``START:RATE:FULL`` or ``N`` (all dropped from N on), as OpenSSH's ``MaxStartups``.

    :raises InvalidInput: neither, or not 0 < START <= FULL and 0 <= RATE <= 100.
    """
    parts = text.strip().split(":")
    if len(parts) == 1:
        parts = [parts[0], "100", parts[0]]
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise InvalidInput(f"serve_max_startups {text!r}: want START:RATE:FULL (e.g. 20:30:100) or N")
    start, rate, full = (int(p) for p in parts)
    if not 0 < start <= full or rate > 100:
        raise InvalidInput(f"serve_max_startups {text!r}: want 0 < START <= FULL and RATE at most 100")
    return Startups(start, rate, full)


def source_key(address: str) -> str:
    """The unit a per-source limit counts: an IPv4 address (mapped ones too), an IPv6 /64."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


class Ticket:
    """One admitted connection: unauthenticated until :meth:`promote`, until :meth:`release`."""

    def __init__(self, gate: Gate, source: str) -> None:
        self.gate, self.source = gate, source
        self.state = "unauthenticated"

    def promote(self) -> bool:
        """The connection logged in: count it as authenticated; False (and released) at that cap."""
        return self.gate._promote(self)

    def release(self) -> None:
        """The connection ended (idempotent)."""
        self.gate._release(self)


class Gate:
    """Counts open connections and decides which new ones to drop; thread-safe."""

    def __init__(self, startups: Startups, per_source: int, max_authenticated: int,
                 chance: t.Callable[[], float] = random.random) -> None:
        self.startups, self.per_source, self.max_authenticated = startups, per_source, max_authenticated
        self._chance = chance
        self._unauthenticated: collections.Counter[str] = collections.Counter()
        self.authenticated = 0
        self._lock = threading.Lock()

    def unauthenticated(self, source: str | None = None) -> int:
        with self._lock:
            if source is None:
                return sum(self._unauthenticated.values())
            return self._unauthenticated[source_key(source)]

    def admit(self, address: str) -> tuple[Ticket | None, str]:
        """A ticket for a new connection from ``address``, or None and why it is dropped."""
        source = source_key(address)
        with self._lock:
            if 0 < self.per_source <= self._unauthenticated[source]:
                return None, f"{self._unauthenticated[source]} unauthenticated connections from {source}"
            total = sum(self._unauthenticated.values())
            chance = self.startups.drop_chance(total)
            if chance and (chance >= 1 or self._chance() < chance):
                return None, f"{total} unauthenticated connections in all"
            self._unauthenticated[source] += 1
        return Ticket(self, source), ""

    def _promote(self, ticket: Ticket) -> bool:
        with self._lock:
            if ticket.state != "unauthenticated":
                return ticket.state == "authenticated"
            self._uncount(ticket.source)
            if self.authenticated >= self.max_authenticated:
                ticket.state = "released"
                return False
            self.authenticated += 1
            ticket.state = "authenticated"
            return True

    def _release(self, ticket: Ticket) -> None:
        with self._lock:
            if ticket.state == "unauthenticated":
                self._uncount(ticket.source)
            elif ticket.state == "authenticated":
                self.authenticated -= 1
            ticket.state = "released"

    def _uncount(self, source: str) -> None:
        self._unauthenticated[source] -= 1
        if self._unauthenticated[source] <= 0:
            del self._unauthenticated[source]
