"""The mux process: serves ``shell -- CMD`` requests of its own user over kept guest connections.

Started by the client as ``python -m llimabox.mux.server`` (detached, in the user's environment).
One request per client connection (``llimabox.mux.wire``), carrying the client's stdin, stdout and
stderr as ``SCM_RIGHTS``; back, one byte saying the request was taken (without it the client knows
nothing ran and runs the command itself), then the reply: an exit status with the output and error
message, or a fallback reason when the client should run the command itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import socketserver
import struct
import threading
import time
import typing as t

from llimabox import __version__
from llimabox.mux import ACCEPTED, PROTOCOL, runtime_dir, socket_path, wire

if t.TYPE_CHECKING:
    from llimabox.backends.base import Backend
    from llimabox.config import Config

__all__ = ["Mux", "main"]

log = logging.getLogger("llimabox.mux")


class _Fallback(Exception):
    """The client should run this command itself."""


class Mux(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A threaded Unix-socket server holding one open backend per configuration."""

    daemon_threads = True
    timeout = 1.0  # how often the idle check runs

    def __init__(self, path: str, idle: float) -> None:
        self.idle = idle
        self.active = 0
        self.last_used = time.monotonic()
        self.lock = threading.Lock()
        self.backends: dict[tuple[t.Any, ...], Backend] = {}
        self.state_lock = threading.Lock()  # the state database's migration check is not thread-safe
        super().__init__(path, _Handler)
        self.inode = os.stat(path).st_ino
        self.retired = False

    def process_request(self, request: t.Any, client_address: t.Any) -> None:
        with self.lock:  # counted before the handler's thread starts, so an idle exit cannot drop it
            self.active += 1
        super().process_request(request, client_address)

    def expired(self) -> bool:
        with self.lock:
            idle = self.active == 0 and (self.retired or time.monotonic() - self.last_used > self.idle)
        try:
            replaced = os.stat(self.server_address).st_ino != self.inode  # type: ignore[arg-type]
        except OSError:
            replaced = True
        return idle or replaced

    def backend(self, config: Config, agent: str | None) -> Backend:
        """The kept backend for ``config`` (a new one when there is none or its connection died)."""
        from llimabox.backends import get_backend

        key = (config, agent)
        with self.lock:
            backend = self.backends.get(key)
            if backend is not None and not backend.healthy():
                log.info("connection to %s lost; reconnecting", backend.identity)
                backend.close()
                backend = None
            if backend is None:
                backend = get_backend(config)
                if not backend.ready():
                    raise _Fallback("the guest needs starting: the command shows its progress itself")
                log.info("connecting to %s", backend.identity)
                backend.connect()
                self.backends[key] = backend
        return backend

    def warm_up(self, overrides: dict[str, str]) -> None:
        """Connect as the command that started us would have, before we are asked."""
        from llimabox.config import load_config

        try:
            config = load_config(os.environ, overrides)
            if config.mux and not config.forward_agent:
                self.backend(config, os.environ.get("SSH_AUTH_SOCK"))
        except Exception as exc:  # noqa: BLE001 - the first request will report it properly
            log.info("warm-up failed: %s", exc)

    def forget(self, backend: Backend) -> None:
        with self.lock:
            for key in [k for k, b in self.backends.items() if b is backend]:
                del self.backends[key]
        backend.close()

    def close_all(self) -> None:
        with self.lock:
            backends, self.backends = list(self.backends.values()), {}
        for backend in backends:
            backend.close()


class _Handler(socketserver.BaseRequestHandler):
    server: Mux
    request: socket.socket

    def handle(self) -> None:
        try:
            if _peer_is_us(self.request):
                self._serve()
        finally:
            with self.server.lock:
                self.server.active -= 1
                self.server.last_used = time.monotonic()

    def _serve(self) -> None:
        try:
            msg, fds = _receive(self.request)
        except (OSError, ValueError) as exc:
            log.warning("bad request: %s", exc)
            return
        try:
            self.request.sendall(ACCEPTED)  # from here on the client waits for the outcome
        except OSError:
            for fd in fds:
                os.close(fd)
            return
        modes = (("rb", 0), ("wb", -1), ("wb", -1))  # stdin unbuffered: the pump reads its descriptor
        files = [os.fdopen(fd, mode, buffering=b) for fd, (mode, b) in zip(fds, modes, strict=False)]
        done: t.Callable[[], None] | None = None
        try:
            if len(files) != 3:
                raise _Fallback("protocol mismatch")
            if msg.version != __version__:
                self.server.retired = True  # llima-box was upgraded: let a new mux take over
                raise _Fallback("another llima-box version")
            if msg.op == "shell":
                code, done = self._run(msg, files)
                reply = wire.Reply(code)
            else:
                reply = self._manage(msg)
        except _Fallback as exc:
            reply = wire.Reply(None, fallback=str(exc))
        except Exception as exc:  # noqa: BLE001 - every failure becomes the client's one line
            reply = wire.Reply(125 if msg.op == "shell" else _exit_code(exc), error=_message(exc))
        finally:
            for f in files:
                with contextlib.suppress(OSError):
                    f.close()  # before replying: a reader of the client's stdout sees EOF with the exit
        with contextlib.suppress(OSError):
            self.request.sendall(wire.encode_reply(reply))
        if done is not None:
            with self.server.state_lock:
                done()

    def _setting(self, msg: wire.Request) -> tuple[Config, dict[str, str], str | None, str]:
        """The client's configuration, environment, agent socket and the path it means."""
        from llimabox.config import load_config

        env = msg.env
        config = load_config(env, dict(msg.overrides))
        if not config.mux or config.forward_agent:
            raise _Fallback("mux off or agent forwarding")
        agent = env.get("SSH_AUTH_SOCK")
        if agent != os.environ.get("SSH_AUTH_SOCK") and not config.identity:
            raise _Fallback("another SSH agent")
        return config, env, agent, os.path.join(msg.cwd, msg.path) if msg.path else msg.cwd

    def _manage(self, msg: wire.Request) -> wire.Reply:
        """``create`` and ``list --json``: the answer is a line of text."""
        from llimabox import api

        config, _env, agent, where = self._setting(msg)
        if msg.op == "create" and config.secrets:
            raise _Fallback("secrets: their values come from the command's own environment and files")
        if msg.op == "create":
            out = self._retrying(config, agent, lambda backend: api.create_in(
                backend, where, (), api.config_options(config), config))
        elif msg.op == "list":
            out = json.dumps(self._retrying(config, agent, api.list_in), indent=2)
        else:
            raise _Fallback(f"unknown operation {msg.op!r}")
        return wire.Reply(0, out=out + "\n")

    def _retrying(
        self, config: Config, agent: str | None, work: t.Callable[[Backend], t.Any], uses_state: bool = True
    ) -> t.Any:
        """``work(backend)`` on the kept backend; once more on a new connection when the kept one had died.

        ``uses_state``: ``work`` touches the state database, whose migration check is not thread-safe.
        """
        from llimabox.errors import GuestUnreachable, SessionRefused

        for attempt in (1, 2):
            backend = self.server.backend(config, agent)
            try:
                with self.server.state_lock if uses_state else contextlib.nullcontext():
                    return work(backend)
            except SessionRefused:
                self.server.forget(backend)
                if attempt == 2:
                    raise
            except GuestUnreachable:
                self.server.forget(backend)
                raise
        raise AssertionError("unreachable")

    def _run(self, msg: wire.Request, files: list[t.BinaryIO]) -> tuple[int, t.Callable[[], None]]:
        from llimabox import api

        config, env, agent, where = self._setting(msg)
        with self.server.state_lock:
            target = api.shell_target(self.server.backend(config, agent), where)
        if config.secrets and not target.known:
            raise _Fallback("a new env with secrets: the command makes it itself")

        use = api.Use.of(msg.cmd)

        def run(backend: Backend) -> int:
            if not target.known:  # as api.shell: the config's options and shares for a new env
                api.prepare_new(backend, config, target)
            return api.run_in_env(
                backend, target, msg.cmd, environ=env, use=use, pty=False,
                stdin=files[0], stdout=files[1], stderr=files[2], cancel_fd=self.request.fileno(),
            )  # fmt: skip

        code = self._retrying(config, agent, run, uses_state=False)
        backend = self.server.backend(config, agent)
        return code, lambda: api.record_use(backend, target, code, use)


def _message(exc: Exception) -> str:
    from llimabox.errors import LlimaBoxError

    if isinstance(exc, LlimaBoxError):
        return str(exc)
    log.exception("internal error")
    return f"internal error in the llima-box mux: {type(exc).__name__}: {exc}"


def _exit_code(exc: Exception) -> int:
    from llimabox.errors import LlimaBoxError

    return exc.exit_code if isinstance(exc, LlimaBoxError) else 1


def _peer_is_us(sock: socket.socket) -> bool:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid == os.getuid()


def _receive(sock: socket.socket) -> tuple[wire.Request, list[int]]:
    head, fds, _flags, _addr = socket.recv_fds(sock, 65536, 3)
    try:
        size = wire.unpack_size(head)
        body = head[4:]
        while len(body) < size:
            chunk = sock.recv(size - len(body))
            if not chunk:
                raise ValueError("truncated request")
            body += chunk
        return wire.decode_request(body), fds
    except (OSError, ValueError):
        for fd in fds:
            os.close(fd)
        raise


def _idle_seconds() -> float:
    from llimabox.config import load_config
    from llimabox.errors import LlimaBoxError

    try:
        return max(1.0, load_config(os.environ).mux_idle)
    except LlimaBoxError:
        return 600.0


def _overrides() -> dict[str, str]:
    """The global options of the command that started us (``KEY=VALUE`` arguments)."""
    import sys

    return dict(arg.split("=", 1) for arg in sys.argv[1:] if "=" in arg)


def main() -> None:
    """Serve until idle; exit at once when another mux holds the lock."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s llima-box mux[%(process)d]: %(message)s")
    log.setLevel(logging.INFO)
    path = socket_path()
    if path is None:
        return
    directory = runtime_dir()
    os.makedirs(os.path.dirname(directory), mode=0o700, exist_ok=True)  # the state dir: private too
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    lock = os.open(os.path.join(directory, f"v{PROTOCOL}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    server = Mux(path, _idle_seconds())
    with open(os.path.join(directory, "pid"), "w", encoding="ascii") as f:
        f.write(f"{os.getpid()}\n")
    os.chdir("/")
    log.info("serving on %s", path)
    threading.Thread(target=server.warm_up, args=(_overrides(),), daemon=True).start()
    try:
        while not server.expired():
            server.handle_request()
    finally:
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == server.inode:
                os.unlink(path)
        server.server_close()
        server.close_all()
        log.info("idle: exiting")


if __name__ == "__main__":
    main()
