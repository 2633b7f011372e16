"""The hot path of ``llima-box shell -- CMD``: hand the command to the mux (see ``llimabox.mux`` on imports).

:func:`run` returns ``None`` whenever the mux cannot or should not serve this invocation; the
caller then runs the full command line itself, so the mux is only ever an accelerator.
"""

from __future__ import annotations

import _socket  # socket.py's own imports (enum, selectors) cost more than the rest of the client
import os
import struct
import sys

from llimabox.mux import ACCEPTED, runtime_dir, socket_path, wire

TYPE_CHECKING = False
if TYPE_CHECKING:
    import typing as t

__all__ = ["run", "parse"]

_GLOBALS = ("--backend", "--host", "--identity")
_ENV_KEEP = (
    "HOME", "USER", "LOGNAME", "SSH_AUTH_SOCK", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "TERM", "LANG", "COLORTERM",
)  # fmt: skip


class Parsed:
    """A command line the mux can serve: ``op`` is ``shell``, ``create`` or ``list``."""

    __slots__ = ("cmd", "no_pty", "op", "overrides", "path")

    def __init__(self, op: str, overrides: dict[str, str], path: str | None, cmd: list[str], no_pty: bool) -> None:
        self.op, self.overrides, self.path, self.cmd, self.no_pty = op, overrides, path, cmd, no_pty


def parse(args: t.Sequence[str]) -> Parsed | None:
    """``[--backend|--host|--identity VALUE]...`` then ``shell [PATH] [-T] -- CMD...``, ``create [PATH]``
    or ``list --json``; anything else is ``None``."""
    overrides: dict[str, str] = {}
    i = 0
    while i < len(args) and args[i] not in ("shell", "create", "list"):
        name, eq, value = args[i].partition("=")
        if name not in _GLOBALS:
            return None
        if not eq:
            if i + 1 >= len(args):
                return None
            value, i = args[i + 1], i + 1
        overrides[name[2:]] = value
        i += 1
    if i >= len(args):
        return None
    op, rest = args[i], list(args[i + 1 :])
    if op == "list":
        return Parsed(op, overrides, None, [], True) if rest == ["--json"] else None
    if op == "create":
        if len(rest) > 1 or any(a.startswith("-") for a in rest):
            return None
        return Parsed(op, overrides, rest[0] if rest else None, [], True)
    if "--" not in rest:
        return None
    sep = rest.index("--")
    before, cmd = rest[:sep], rest[sep + 1 :]
    no_pty = "-T" in before
    paths = [a for a in before if a != "-T"]
    if not cmd or len(paths) > 1 or any(a.startswith("-") for a in paths):
        return None
    return Parsed(op, overrides, paths[0] if paths else None, cmd, no_pty)


def _wanted(req: Parsed) -> bool:
    if os.environ.get("LLIMA_BOX_MUX", "").strip().lower() in ("0", "false", "no", "off"):
        return False
    return req.no_pty or not (os.isatty(0) and os.isatty(1))


def _private_dir_ok(path: str) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return st.st_uid == os.getuid() and (st.st_mode & 0o077) == 0 and not os.path.islink(path)


def _connect(path: str) -> _socket.socket | None:
    if not _private_dir_ok(os.path.dirname(path)):
        return None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def _start(overrides: dict[str, str]) -> None:
    """Start the mux in the background for the next command (this one runs directly meanwhile)."""
    import subprocess

    import llimabox

    directory = runtime_dir()
    home = os.path.dirname(os.path.dirname(os.path.abspath(llimabox.__file__)))  # run this very package
    try:
        os.makedirs(os.path.dirname(directory), mode=0o700, exist_ok=True)  # the state dir: private too
        os.makedirs(directory, mode=0o700, exist_ok=True)
        log = os.open(os.path.join(directory, "log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError:
        return
    try:
        subprocess.Popen(
            [sys.executable, "-m", "llimabox.mux.server", *(f"{k}={v}" for k, v in overrides.items())],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, cwd=home,
        )  # fmt: skip
    except OSError:
        pass
    finally:
        os.close(log)


def _send(sock: _socket.socket, req: Parsed) -> None:
    from llimabox import __version__

    env = {k: v for k, v in os.environ.items() if k.startswith(("LLIMA_BOX_", "LC_")) or k in _ENV_KEEP}
    message = wire.encode_request(wire.Request(__version__, req.op, os.getcwd(), req.path, req.overrides, env, req.cmd))
    sent = sock.sendmsg([message], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("3i", 0, 1, 2))])
    if sent < len(message):
        sock.sendall(message[sent:])


def _accepted(sock: _socket.socket) -> bool:
    """Whether the mux took the request (it may have been exiting when we connected)."""
    try:
        return sock.recv(1) == ACCEPTED
    except OSError:
        return False


def _recv_exactly(sock: _socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ValueError("the llima-box mux ended while running the command")
        data += chunk
    return data


def _reply(sock: _socket.socket) -> wire.Reply:
    return wire.decode_reply(_recv_exactly(sock, wire.unpack_size(_recv_exactly(sock, 4))))


def run(args: t.Sequence[str]) -> int | None:
    """Run ``llima-box ARGS`` through the mux; its exit status, or ``None`` to run it directly."""
    req = parse(args)
    if req is None or not _wanted(req):
        return None
    path = socket_path()
    if path is None:
        return None
    try:
        os.getcwd()
    except OSError:
        return None
    sock = _connect(path)
    if sock is None:
        _start(req.overrides)
        return None
    try:
        try:
            _send(sock, req)
        except OSError:
            return None  # nothing ran
        if not _accepted(sock):
            return None  # nor here
        try:
            reply = _reply(sock)
        except (OSError, ValueError) as exc:
            reply = wire.Reply(125, error=f"the llima-box mux failed: {exc}")
    finally:
        sock.close()
    if reply.exit is None:
        return None
    sys.stdout.write(reply.out)
    if reply.error:
        sys.stderr.write("Error: " + " ".join(reply.error.split()) + "\n")
    return reply.exit
