"""The mux: one background process per user that keeps the guest connection open.

``llima-box shell -- CMD`` is what agents run for every command. Instead of importing paramiko and
opening an SSH connection each time, the command hands its argv, working directory, environment and
its three file descriptors (``SCM_RIGHTS``) to the mux over a Unix socket in a private directory of
the state dir; the mux runs CMD over its open connection, writing straight to those descriptors, and
answers with the exit status. The mux starts on demand, exits when idle, serves only its own user,
reconnects when the guest went away, and llima-box runs the command itself whenever the mux is not
available or not suitable (a terminal, agent forwarding, unusual options).

This module, ``client`` and ``wire`` import only ``os``, ``sys``, ``struct`` and ``_socket``: they are the hot
path, and on a plain interpreter ``typing``, ``pathlib``, ``json`` or ``socket`` would each cost more than
everything else the client does.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import typing as t

__all__ = ["runtime_dir", "socket_path", "PROTOCOL", "ACCEPTED"]

PROTOCOL = 2  # names the socket and the lock: a mux of another protocol is left to idle out
ACCEPTED = b"+"  # the mux's first byte back: it has taken the request
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes


def runtime_dir(environ: t.Mapping[str, str] = os.environ) -> str:
    """The mux's private directory (mode 0700) under the state dir."""
    from llimabox import paths

    return os.path.join(paths.state_root(environ), "mux")


def socket_path(environ: t.Mapping[str, str] = os.environ) -> str | None:
    """Where the mux listens; ``None`` when that path is too long for a Unix socket."""
    path = os.path.join(runtime_dir(environ), f"v{PROTOCOL}.sock")
    return path if len(os.fsencode(path)) <= _MAX_SOCKET_PATH else None
