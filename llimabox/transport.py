"""SSH transport to the guest (paramiko): connect, check the host key, run commands.

This is the only module besides the state store that imports a heavy dependency; import it
lazily.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import io
import logging
import os
import selectors
import signal
import socket
import struct
import sys
import termios
import tty
import typing as t

import paramiko
import paramiko.agent

from llimabox.errors import GuestAuthFailed, GuestUnreachable, HostKeyError, SessionRefused
from llimabox.guest import remote_command

__all__ = ["SSHTarget", "Connection", "parse_host"]

# paramiko logs a closed socket as an error; keep that off the user's terminal (``--debug`` shows it).
logging.getLogger("paramiko").addHandler(logging.NullHandler())

_CHUNK = 65536


def parse_host(spec: str, default_user: str | None = None) -> tuple[str | None, str, int]:
    """Split ``user@host[:port]`` (``[v6addr]:port`` allowed) into ``(user, host, port)``."""
    from llimabox.errors import InvalidInput

    user, _, hostport = spec.rpartition("@")
    port = 22
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        if rest:
            port_s = rest.removeprefix(":")
            if not port_s.isdigit():
                raise InvalidInput(f"invalid port in host {spec!r}")
            port = int(port_s)
    elif hostport.count(":") == 1:
        host, port_s = hostport.split(":")
        if not port_s.isdigit():
            raise InvalidInput(f"invalid port in host {spec!r}")
        port = int(port_s)
    else:
        host = hostport
    if not host or not 0 < port < 65536:
        raise InvalidInput(f"invalid host {spec!r} (want user@host[:port])")
    return (user or default_user), host, port


@dataclasses.dataclass(frozen=True)
class SSHTarget:
    """Where and as whom to connect."""

    host: str
    port: int
    user: str | None
    key_filename: str | None
    known_hosts: str
    accept_new: bool = False
    connect_timeout: float = 10.0

    @property
    def known_hosts_name(self) -> str:
        """The host's name in known_hosts, as OpenSSH writes it."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def _fingerprint(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


class _PinPolicy(paramiko.MissingHostKeyPolicy):
    """Unknown host: refuse, or pin it into known_hosts when the user said so."""

    def __init__(self, target: SSHTarget) -> None:
        self.target = target

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if not self.target.accept_new:
            raise HostKeyError(
                f"unknown host key for {hostname} ({_fingerprint(key)}); "
                "if you trust it, rerun with --accept-host-key to pin it"
            )
        path = self.target.known_hosts
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="ascii") as f:
            f.write(line)
        client.get_host_keys().add(hostname, key.get_name(), key)


def _open_socket(target: SSHTarget) -> socket.socket:
    where = f"{target.host}:{target.port}"
    try:
        sock = socket.create_connection((target.host, target.port), timeout=target.connect_timeout)
    except socket.gaierror as exc:
        raise GuestUnreachable(f"cannot resolve {target.host}: {exc.strerror}") from exc
    except ConnectionRefusedError as exc:
        raise GuestUnreachable(f"connection to {where} refused (is the guest running?)") from exc
    except TimeoutError as exc:
        raise GuestUnreachable(f"connection to {where} timed out after {target.connect_timeout:g}s") from exc
    except OSError as exc:
        raise GuestUnreachable(f"cannot connect to {where}: {exc.strerror or exc}") from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
    return sock


class Connection:
    """One SSH connection to the guest, opened on first use."""

    def __init__(self, target: SSHTarget) -> None:
        self.target = target
        self._client: paramiko.SSHClient | None = None

    def _load_known_hosts(self, client: paramiko.SSHClient) -> None:
        path = self.target.known_hosts
        if not os.path.exists(path):
            return
        try:
            client.get_host_keys().load(path)
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise HostKeyError(f"cannot read known_hosts {path}: {exc}") from exc

    def connect(self) -> paramiko.SSHClient:
        """Connect and authenticate (once).

        :raises GuestUnreachable: refused, timed out, DNS failure or SSH protocol failure.
        :raises GuestAuthFailed: the guest refused our credentials.
        :raises HostKeyError: the host key is unknown (without ``accept_new``) or has changed.
        """
        if self._client is not None:
            return self._client
        target = self.target
        sock = _open_socket(target)
        client = paramiko.SSHClient()
        self._load_known_hosts(client)
        client.set_missing_host_key_policy(_PinPolicy(target))
        try:
            client.connect(
                hostname=target.host,
                port=target.port,
                username=target.user,
                key_filename=target.key_filename,
                look_for_keys=target.key_filename is None,
                allow_agent=True,
                sock=sock,
                timeout=target.connect_timeout,
                banner_timeout=target.connect_timeout,
                auth_timeout=target.connect_timeout,
            )
        except HostKeyError:
            sock.close()
            raise
        except paramiko.BadHostKeyException as exc:
            sock.close()
            raise HostKeyError(
                f"HOST KEY FOR {target.known_hosts_name} HAS CHANGED (now {_fingerprint(exc.key)}, "
                f"expected {_fingerprint(exc.expected_key)}): possible man-in-the-middle attack; "
                f"if the guest was rebuilt, remove the old key with: "
                f"ssh-keygen -R '{target.known_hosts_name}' -f {target.known_hosts}"
            ) from exc
        except paramiko.AuthenticationException as exc:
            sock.close()
            raise GuestAuthFailed(
                f"the guest {target.user}@{target.known_hosts_name} refused our credentials ({exc})"
            ) from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            sock.close()
            raise GuestUnreachable(f"SSH to {target.host}:{target.port} failed: {exc}") from exc
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)
        self._client = client
        return client

    def is_active(self) -> bool:
        """Not connected yet, or connected and the transport still up."""
        if self._client is None:
            return True
        transport = self._client.get_transport()
        return transport is not None and transport.is_active()

    def close(self) -> None:
        """Close the connection (safe to call twice)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def _session(self) -> paramiko.Channel:
        client = self.connect()
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise SessionRefused("connection to the guest was lost")
        try:
            return transport.open_session(timeout=self.target.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SessionRefused(f"cannot open a session on the guest: {exc}") from exc

    def capture(self, argv: t.Sequence[str], stdin: bytes = b"") -> tuple[int, bytes, bytes]:
        """Run ``argv`` and return ``(exit status, stdout, stderr)``.

        :raises GuestUnreachable: the connection failed or dropped.
        """
        out, err = io.BytesIO(), io.BytesIO()
        code = self.run(argv, stdin=io.BytesIO(stdin), stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    def _exit_status(self, chan: paramiko.Channel) -> int:
        transport = chan.get_transport()
        while not chan.exit_status_ready():
            if transport is None or not transport.is_active():
                raise GuestUnreachable("connection to the guest was lost mid-command")
            chan.status_event.wait(1.0)
            if chan.closed and not chan.exit_status_ready():
                chan.status_event.wait(0.2)
                break
        code = chan.recv_exit_status() if chan.exit_status_ready() else -1
        if code < 0:  # no exit status (paramiko reports a closed channel as ready, with -1)
            # the guest's sshd ends a session with EOF then close, also when the command died of a
            # signal (exit-signal carries no status here); without EOF it went down with the connection
            if transport is None or not transport.is_active() or not chan.eof_received:
                raise GuestUnreachable("connection to the guest was lost mid-command")
            return 255
        return code

    def run(
        self,
        argv: t.Sequence[str],
        *,
        stdin: t.Any = None,
        stdout: t.Any = None,
        stderr: t.Any = None,
        pty: bool = False,
        term: str | None = None,
        size: tuple[int, int] | None = None,
        forward_agent: bool = False,
        cancel_fd: int | None = None,
    ) -> int:
        """Run ``argv`` streaming the three streams; return its exit status.

        :param stdin: a binary file (or ``None`` for no input: EOF at once).
        :param stdout: a binary file for the command's stdout (default ``sys.stdout``).
        :param stderr: a binary file for its stderr (default ``sys.stderr``).
        :param pty: allocate a pseudo-terminal; the local terminal goes raw meanwhile.
        :param size: ``(columns, rows)``; default: the local terminal's.
        :param cancel_fd: abandon the command (close its session, return 255) once this turns readable.
        :raises GuestUnreachable: the connection dropped mid-command.
        """
        out = stdout if stdout is not None else sys.stdout.buffer
        err = stderr if stderr is not None else sys.stderr.buffer
        chan = self._session()
        agent = None
        try:
            if forward_agent:
                agent = paramiko.agent.AgentRequestHandler(chan)
            if pty:
                cols, rows = size or _terminal_size(stdin, out)
                chan.get_pty(term=term or "xterm", width=cols, height=rows)
            chan.exec_command(remote_command(argv))
            pump = _Pump(chan, stdin, out, err, resize=pty and size is None, cancel_fd=cancel_fd)
            with _RawTerminal(stdin if pty else None):
                pump.loop()
            return 255 if pump.cancelled else self._exit_status(chan)
        except KeyboardInterrupt:
            return 130
        except (paramiko.SSHException, EOFError) as exc:
            raise GuestUnreachable(f"connection to the guest was lost: {exc}") from exc
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                return 141
            raise GuestUnreachable(f"connection to the guest was lost: {exc}") from exc
        finally:
            if agent is not None:
                agent.close()
            chan.close()


def _fileno(f: t.Any) -> int | None:
    try:
        return int(f.fileno())
    except (AttributeError, OSError, ValueError):
        return None


def _terminal_size(*files: t.Any) -> tuple[int, int]:
    for f in files:
        fd = _fileno(f)
        if fd is not None and os.isatty(fd):
            try:
                size = os.get_terminal_size(fd)
                return size.columns, size.lines
            except OSError:
                pass
    return 80, 24


class _RawTerminal:
    """Put a terminal into raw mode for the duration; restore it always."""

    def __init__(self, f: t.Any) -> None:
        fd = _fileno(f) if f is not None else None
        self.fd = fd if fd is not None and os.isatty(fd) else None
        self.saved: list[t.Any] | None = None

    def __enter__(self) -> _RawTerminal:
        if self.fd is not None:
            self.saved = termios.tcgetattr(self.fd)
            tty.setraw(self.fd)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None and self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)


class _Writer:
    def __init__(self, f: t.Any) -> None:
        self.f = f
        self.fd = _fileno(f)
        if self.fd is not None:
            with contextlib.suppress(AttributeError, ValueError, OSError):
                f.flush()

    def write(self, data: bytes) -> None:
        if self.fd is None:
            self.f.write(data)
            self.f.flush()
            return
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]


class _Pump:
    """Selector loop between the local streams and the channel."""

    def __init__(
        self, chan: paramiko.Channel, stdin: t.Any, out: t.Any, err: t.Any, resize: bool, cancel_fd: int | None = None
    ) -> None:
        self.chan = chan
        self.cancelled = False
        self.out = _Writer(out)
        self.err = _Writer(err)
        self.sel = selectors.DefaultSelector()
        self.pending = b""
        self.stdin_fd: int | None = None
        self.resize = resize
        self.wake_r = self.wake_w = -1
        self._setup_stdin(stdin)
        if cancel_fd is not None:
            self.sel.register(cancel_fd, selectors.EVENT_READ, "cancel")

    def _setup_stdin(self, stdin: t.Any) -> None:
        if stdin is None:
            self.chan.shutdown_write()
            return
        fd = _fileno(stdin)
        if fd is None:  # not a real file: send it all now
            data = stdin.read()
            self.pending = data if isinstance(data, bytes) else data.encode()
            self.stdin_fd = None
            if not self.pending:  # nothing to send: EOF now (the loop would wait for the remote side first)
                self.chan.shutdown_write()
                return
            self._eof_after_pending = True
            return
        self.stdin_fd = fd
        try:
            self.sel.register(fd, selectors.EVENT_READ, "stdin")
        except PermissionError:  # a regular file or /dev/null: epoll refuses it, and reads never block
            self.stdin_plain = True

    _eof_after_pending = False
    stdin_plain = False

    def _on_sigwinch(self, signum: int, frame: object) -> None:
        with contextlib.suppress(OSError):
            os.write(self.wake_w, b"w")

    def loop(self) -> None:
        self.chan.setblocking(False)
        self.sel.register(self.chan, selectors.EVENT_READ, "chan")
        old_handler = None
        if self.resize:
            self.wake_r, self.wake_w = os.pipe()
            for fd in (self.wake_r, self.wake_w):
                os.set_blocking(fd, False)
            self.sel.register(self.wake_r, selectors.EVENT_READ, "winch")
            with contextlib.suppress(ValueError):  # not the main thread
                old_handler = signal.signal(signal.SIGWINCH, self._on_sigwinch)
        try:
            while not self._step():
                pass
        finally:
            if old_handler is not None:
                signal.signal(signal.SIGWINCH, old_handler)
            self.sel.close()
            for fd in (self.wake_r, self.wake_w):
                if fd >= 0:
                    os.close(fd)

    def _step(self) -> bool:
        """One round of the loop; True when the remote side is done."""
        timeout = 0.02 if self.pending else None
        if self.stdin_plain and self.stdin_fd is not None and not self.pending:
            self._read_stdin()
            timeout = 0
        for key, _ in self.sel.select(timeout):
            if key.data == "stdin":
                self._read_stdin()
            elif key.data == "winch":
                self._do_resize()
            elif key.data == "cancel":
                self.cancelled = True
                return True
        self._send_pending()
        return self._drain()

    def _read_stdin(self) -> None:
        assert self.stdin_fd is not None
        if self.pending:
            return
        try:
            data = os.read(self.stdin_fd, _CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            data = b""
        if data:
            self.pending = data
        else:
            if not self.stdin_plain:
                self.sel.unregister(self.stdin_fd)
            self.stdin_fd = None
            self.chan.shutdown_write()

    def _send_pending(self) -> None:
        while self.pending:
            if self.chan.closed or self.chan.eof_sent:
                self.pending = b""
                return
            try:
                n = self.chan.send(self.pending)
            except TimeoutError:
                break
            if n <= 0:
                break
            self.pending = self.pending[n:]
        if self.stdin_fd is not None and self.pending:
            self._pause_stdin(True)
        elif self.stdin_fd is not None:
            self._pause_stdin(False)
        if not self.pending and self._eof_after_pending:
            self._eof_after_pending = False
            self.chan.shutdown_write()

    def _pause_stdin(self, pause: bool) -> None:
        assert self.stdin_fd is not None
        if self.stdin_plain:
            return
        registered = self.stdin_fd in self.sel.get_map()
        if pause and registered:
            self.sel.unregister(self.stdin_fd)
        elif not pause and not registered:
            self.sel.register(self.stdin_fd, selectors.EVENT_READ, "stdin")

    def _do_resize(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.wake_r, 64)
        fd = self.stdin_fd if self.stdin_fd is not None else self.out.fd
        if fd is None:
            return
        with contextlib.suppress(OSError):
            rows, cols = struct.unpack("hhhh", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))[:2]
            self.chan.resize_pty(width=cols, height=rows)

    def _drain(self) -> bool:
        chan = self.chan
        while chan.recv_ready():
            try:
                data = chan.recv(_CHUNK)
            except TimeoutError:
                break
            if data:
                self.out.write(data)
        while chan.recv_stderr_ready():
            try:
                data = chan.recv_stderr(_CHUNK)
            except TimeoutError:
                break
            if data:
                self.err.write(data)
        if chan.recv_ready() or chan.recv_stderr_ready():
            return False
        if chan.eof_received or chan.closed:
            return True
        transport = chan.get_transport()
        if transport is None or not transport.is_active():
            raise GuestUnreachable("connection to the guest was lost mid-command")
        return False
