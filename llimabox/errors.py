"""Errors of the llima-box library.

Each error carries the exit code the CLI uses for it; the CLI maps them in one place.
"""

from __future__ import annotations

__all__ = [
    "LlimaBoxError",
    "InvalidInput",
    "EnvNotFound",
    "GuestUnreachable",
    "GuestAuthFailed",
    "HostKeyError",
    "GuestScriptFailed",
    "GuestNotProvisioned",
    "StateError",
]


class LlimaBoxError(Exception):
    """Base of every error llima-box reports to the user."""

    exit_code = 1


class InvalidInput(LlimaBoxError):
    """A path, name or option given by the user is not acceptable."""

    exit_code = 2


class EnvNotFound(LlimaBoxError):
    """No environment matches the given name or path."""

    exit_code = 1


class GuestUnreachable(LlimaBoxError):
    """The guest cannot be reached (connection refused, timed out or dropped)."""


class SessionRefused(GuestUnreachable):
    """A kept connection could not open a session: nothing was started, so a retry is safe."""


class GuestAuthFailed(LlimaBoxError):
    """The guest refused our credentials."""


class HostKeyError(LlimaBoxError):
    """The guest's host key is unknown or has changed."""


class GuestScriptFailed(LlimaBoxError):
    """A guest script reported a failure."""


class GuestNotProvisioned(LlimaBoxError):
    """The guest scripts are missing or cannot be run through sudo."""


class StateError(LlimaBoxError):
    """The state database is locked, corrupt, read-only or from a newer schema."""
