"""The SSH server of ``serve``: the listening socket, one thread per connection, clean shutdown.

Each connection is a paramiko Transport whose :class:`Connection` (the ServerInterface) takes
its decisions from :mod:`auth` and hands session channels to :class:`Session`. SIGTERM (and
SIGINT) stop accepting, tell every open session, end their processes and close everything.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import signal
import socket
import threading
import time
import typing as t
from pathlib import Path

import paramiko
from paramiko.common import MSG_CHANNEL_REQUEST

from llimabox.errors import InvalidInput, LlimaBoxError
from llimabox.serve.accounts import Account, Login, parse_login
from llimabox.serve.audit import Audit
from llimabox.serve.auth import DUMMY_ACCOUNT, Authenticator
from llimabox.serve.limits import Gate, Ticket, parse_startups
from llimabox.serve.session import Session

if t.TYPE_CHECKING:
    from llimabox.config import Config

__all__ = ["Server", "Connection", "parse_listen", "load_host_key", "run"]

log = logging.getLogger("llimabox.serve")
_MAX_AUTH_FAILURES = 6  # per connection, like OpenSSH's MaxAuthTries
_SHUTDOWN_GRACE = 15.0
_DROP_LOG_EVERY = 10.0  # seconds between warnings about dropped connections
_BANNER = "SSH-2.0-llima-box"
_FORWARD_HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._:-]{0,252}$")  # what lib/tcp-connect.py accepts


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` (``[v6]:PORT`` for IPv6) → (addr, port).

    :raises InvalidInput: not that form.
    """
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(f"--listen {text!r}: want ADDR:PORT, e.g. 0.0.0.0:2222")
    return host, int(port)


def load_host_key(path: Path | None, state_dir: Path) -> paramiko.PKey:
    """The host key from ``path``; without one, ``STATE_DIR/serve_host_key`` (made on first use, Ed25519)."""
    if path is None:
        path = state_dir / "serve_host_key"
        if not path.exists():
            _generate_host_key(path)
    try:
        return paramiko.PKey.from_path(path)
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise InvalidInput(f"host key {path}: {exc}") from None


def _generate_host_key(path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.replace(tmp, path)
    log.info("generated host key %s", path)


def _handle_channel_request(chan: paramiko.Channel, m: paramiko.Message) -> None:
    """paramiko ignores ``signal`` requests: pass them to the session, everything else on.

    After a request is answered, the session learns it: its thread must not send data or close
    the channel before the client has the reply to its exec or shell request.
    """
    pos = m.packet.tell()
    if m.get_text() == "signal":
        m.get_boolean()
        name = m.get_text()
        conn = chan.transport.server_object if chan.transport else None
        session = conn.sessions.get(chan.get_id()) if isinstance(conn, Connection) else None
        if session is not None:
            session.signal(name)
        return
    m.packet.seek(pos)
    paramiko.Channel._handle_request(chan, m)
    conn = chan.transport.server_object if chan.transport else None
    session = conn.sessions.get(chan.get_id()) if isinstance(conn, Connection) else None
    if session is not None:
        session.replied.set()  # the reply to exec/shell is out: the session may write and close


class Connection(paramiko.ServerInterface):
    """The decisions of one SSH connection."""

    def __init__(self, server: Server, transport: paramiko.Transport, source: str, ticket: Ticket) -> None:
        self.server, self.transport, self.source, self.ticket = server, transport, source, ticket
        self.account: Account | None = None
        self.login: Login | None = None
        self.sessions: dict[int, Session] = {}
        self.forwards: dict[int, tuple[str, int]] = {}
        self.target: tuple[str, str] | None = None
        self._accounts: dict[str, Account] = {}
        self._interactive_login = ""
        self._key: tuple[str, str] | None = None
        self._failures = 0
        self._auth_lock = threading.Lock()
        self._over_cap = False

    # -- authentication --

    def get_allowed_auths(self, username: str) -> str:
        return "publickey,password,keyboard-interactive"

    def _result(self, login: str, account: Account | None) -> int:
        if account is not None:
            self._accounts[login] = account
            return paramiko.AUTH_SUCCESSFUL
        self._failures += 1
        if self._failures >= _MAX_AUTH_FAILURES:
            threading.Timer(0.1, self.transport.close).start()
        return paramiko.AUTH_FAILED

    def check_auth_password(self, username: str, password: str) -> int:
        self._key = None
        return self._result(username, self.server.auth.password(username, password, self.source))

    def check_auth_interactive(self, username: str, submethods: str) -> paramiko.InteractiveQuery:
        self._interactive_login = username
        return paramiko.InteractiveQuery("", "", ("Password: ", False))

    def check_auth_interactive_response(self, responses: t.Sequence[str]) -> int:
        self._key = None
        if len(responses) != 1:
            return self._result(self._interactive_login, None)
        account = self.server.auth.password(self._interactive_login, responses[0], self.source,
                                            "keyboard-interactive")
        return self._result(self._interactive_login, account)

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if self._key == (username, key.fingerprint):
            return paramiko.AUTH_SUCCESSFUL  # the signed request after the accepted query: paramiko verifies it
        account = self.server.auth.public_key(username, key, self.source)
        self._key = (username, key.fingerprint) if account else None
        if account is None:
            return paramiko.AUTH_FAILED  # offered keys are not counted as failures
        self._accounts[username] = account
        return paramiko.AUTH_SUCCESSFUL

    def authenticated(self) -> None:
        """Once the transport is authenticated: count it as such, fix the account and record a key login (once).

        Over ``serve_max_connections`` authenticated connections, it is closed instead.
        """
        with self._auth_lock:
            if self.account is not None or self._over_cap:
                return
            if not self.ticket.promote():
                self._over_cap = True
                log.warning("closing a login from %s: %d authenticated connections open", self.source,
                            self.server.config.serve_max_connections)
                threading.Timer(0.1, self.transport.close).start()
                return
            self._authenticated()

    def _authenticated(self) -> None:
        username = self.transport.get_username() or ""
        self.account = self._accounts[username]
        self.login = parse_login(username)
        if self._key is not None and self._key[0] == username:
            self.server.limiter_success(self.account.name, self.source)
            self.server.audit.auth(username, self.account.name, self.source, "publickey", "success", self._key[1])

    # -- channels --

    def _session(self, channel: paramiko.Channel) -> Session | None:
        if self.account is None and self.transport.is_authenticated():
            self.authenticated()
        if self.account is None:
            return None
        session = self.sessions.get(channel.get_id())
        if session is None:
            session = self.sessions[channel.get_id()] = Session(self, channel)
        return session

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session" and not self.server.stopping.is_set():
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_pty_request(self, channel: paramiko.Channel, term: bytes, width: int, height: int,
                                  pixelwidth: int, pixelheight: int, modes: bytes) -> bool:
        session = self._session(channel)
        name = term.decode("ascii", "replace") if isinstance(term, bytes) else term
        return session is not None and session.set_pty(name, width, height, pixelwidth, pixelheight)

    def check_channel_window_change_request(self, channel: paramiko.Channel, width: int, height: int,
                                            pixelwidth: int, pixelheight: int) -> bool:
        session = self._session(channel)
        return session is not None and session.resize(width, height, pixelwidth, pixelheight)

    def check_channel_env_request(self, channel: paramiko.Channel, name: bytes, value: bytes) -> bool:
        session = self._session(channel)
        text = (name.decode("ascii", "replace") if isinstance(name, bytes) else name,
                value.decode("utf-8", "replace") if isinstance(value, bytes) else value)
        return session is not None and session.set_env(*text)

    def check_channel_forward_agent_request(self, channel: paramiko.Channel) -> bool:
        session = self._session(channel)
        if session is None or session.started:
            return False
        session.agent = True
        return True

    def check_channel_shell_request(self, channel: paramiko.Channel) -> bool:
        session = self._session(channel)
        return session is not None and session.start("shell", None)

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        session = self._session(channel)
        text = command.decode("utf-8", "surrogateescape") if isinstance(command, bytes) else command
        return session is not None and session.start("exec", text)

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        session = self._session(channel)
        if session is None or name != "sftp" or not self.server.config.serve_sftp:
            log.info("refused subsystem %r of %s", name, self.account.name if self.account else "?")
            return False
        return session.start("subsystem", "sftp")

    def check_channel_x11_request(self, *args: t.Any) -> bool:
        return False

    def check_port_forward_request(self, address: str, port: int) -> bool:
        return False

    def check_global_request(self, kind: str, msg: paramiko.Message) -> bool:
        return False

    def check_channel_direct_tcpip_request(self, chanid: int, origin: tuple[str, int],
                                           destination: tuple[str, int]) -> int:
        if self.account is None and self.transport.is_authenticated():
            self.authenticated()
        host, port = destination
        if (self.account is None or not self.server.config.serve_tcp_forwarding or self.server.stopping.is_set()
                or not _FORWARD_HOST.fullmatch(str(host)) or not 0 < int(port) < 65536):
            log.info("refused port forwarding to %s:%s of %s", *destination, self.account.name if self.account else "?")
            return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        self.forwards[chanid] = (str(host), int(port))
        return paramiko.OPEN_SUCCEEDED

    # -- the connection's thread --

    def run(self, grace: float) -> None:
        transport = self.transport
        deadline = time.monotonic() + grace
        while transport.is_active() and not transport.is_authenticated():
            if time.monotonic() > deadline or self.server.stopping.is_set():
                transport.close()
                return
            time.sleep(0.05)
        if not transport.is_active():
            return
        self.authenticated()
        while transport.is_active():
            chan = transport.accept(0.5)
            if chan is not None and chan.get_id() in self.forwards:
                self._forward(chan, self.forwards.pop(chan.get_id()))
        for session in list(self.sessions.values()):
            session.terminate()

    def _forward(self, chan: paramiko.Channel, destination: tuple[str, int]) -> None:
        """A direct-tcpip channel: connected from inside the login's env (see :mod:`session`), never from here."""
        session = self.sessions[chan.get_id()] = Session(self, chan, forward=destination)
        if not session.start_forward():
            chan.close()


class Server:
    """The listening server; one per process."""

    def __init__(self, config: Config, host_key: paramiko.PKey, audit: Audit) -> None:
        self.config, self.host_key, self.audit = config, host_key, audit
        self.auth = Authenticator(config, audit)
        self.stopping = threading.Event()
        self.connections: set[Connection] = set()
        self.gate = Gate(parse_startups(config.serve_max_startups), config.serve_per_source_max_startups,
                         config.serve_max_connections)
        self._dropped = 0
        self._dropped_logged = 0.0
        self._active: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def limiter_success(self, user: str, source: str) -> None:
        self.auth.limiter.success(user, source)

    def claim(self, user: str) -> bool:
        """Count a starting session of ``user``; False when at the cap."""
        with self._lock:
            if self._active[user] >= self.config.serve_max_sessions:
                return False
            self._active[user] += 1
            return True

    def release(self, user: str) -> None:
        with self._lock:
            self._active[user] -= 1

    def sessions(self) -> list[Session]:
        with self._lock:
            conns = list(self.connections)
        return [s for c in conns for s in list(c.sessions.values())]

    def serve_forever(self, sock: socket.socket) -> None:
        sock.settimeout(0.5)
        watchdog = threading.Thread(target=self._watch_idle, name="idle-watchdog", daemon=True)
        watchdog.start()
        while not self.stopping.is_set():
            try:
                client, addr = sock.accept()
            except TimeoutError:
                continue
            except InterruptedError:
                continue
            ticket, why = self.gate.admit(addr[0])
            if ticket is None:
                self._drop(client, addr[0], why)
                continue
            client.settimeout(None)
            threading.Thread(target=self._connection, args=(client, addr[0], ticket), name=f"conn-{addr[0]}",
                             daemon=True).start()
        sock.close()
        self._shutdown()

    def _drop(self, client: socket.socket, source: str, why: str) -> None:
        """Close a new connection at once, with a line saying so (before any SSH banner)."""
        try:
            client.setblocking(False)
            client.send(b"llima-box: too many unauthenticated connections, try again later\r\n")
        except OSError:
            pass
        client.close()
        self._dropped += 1
        now = time.monotonic()
        if now - self._dropped_logged >= _DROP_LOG_EVERY:
            log.warning("dropped %d new connections (the last from %s: %s)", self._dropped, source, why)
            self._dropped, self._dropped_logged = 0, now

    def _connection(self, client: socket.socket, source: str, ticket: Ticket) -> None:
        try:
            self._transport(client, source, ticket)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            log.debug("connection from %s: %s", source, exc)
        except Exception:
            log.exception("connection from %s failed", source)
        finally:
            ticket.release()
            client.close()

    def _transport(self, client: socket.socket, source: str, ticket: Ticket) -> None:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = paramiko.Transport(client)
        transport.local_version = _BANNER
        transport._channel_handler_table = dict(transport._channel_handler_table)
        transport._channel_handler_table[MSG_CHANNEL_REQUEST] = _handle_channel_request
        transport.add_server_key(self.host_key)
        conn = Connection(self, transport, source, ticket)
        with self._lock:
            self.connections.add(conn)
        try:
            transport.start_server(server=conn)
            conn.run(self.config.serve_login_grace)
        finally:
            with self._lock:
                self.connections.discard(conn)
            transport.close()

    def _watch_idle(self) -> None:
        timeout = self.config.serve_idle_timeout
        while not self.stopping.wait(min(1.0, timeout) if timeout > 0 else 1.0):
            if timeout <= 0:
                continue
            now = time.monotonic()
            for session in self.sessions():
                if session.started and not session.closing and now - session.last_activity > timeout:
                    session.terminate(f"closing the session after {timeout:g} s without traffic")

    def _shutdown(self) -> None:
        sessions = self.sessions()
        log.info("shutting down: %d open sessions", len(sessions))
        for session in sessions:
            session.terminate("the server is shutting down")
        deadline = time.monotonic() + _SHUTDOWN_GRACE
        for session in sessions:
            if session.thread is not None:
                session.thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            conns = list(self.connections)
        for conn in conns:
            conn.transport.close()


def _check_dummy_account() -> None:
    import pwd

    try:
        pwd.getpwnam(DUMMY_ACCOUNT)
    except KeyError:
        log.warning("no account %s (provisioning makes it): refusing an unknown name takes less time than "
                    "a wrong password, which tells names apart", DUMMY_ACCOUNT)


def run(config: Config, listen: str, host_key_file: str | None, ready: t.Callable[[str], None]) -> int:
    """Run the server until SIGTERM or SIGINT; returns the exit code.

    :raises InvalidInput: bad ``listen`` or host key, or not root.
    :raises LlimaBoxError: the address cannot be bound.
    """
    from llimabox import paths
    from llimabox.store import Store

    if os.geteuid() != 0:
        raise InvalidInput("serve must run as root (it enters every account's envs)")
    host, port = parse_listen(listen)
    parse_startups(config.serve_max_startups)
    _check_dummy_account()
    key = load_host_key(Path(host_key_file) if host_key_file else None, paths.state_dir())
    store = Store(paths.db_path())
    store.schema_revision()  # migrate now, not at the first login
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise LlimaBoxError(f"cannot listen on {listen}: {exc.strerror}") from None
    server = Server(config, key, Audit(store))

    def stop(signum: int, frame: object) -> None:
        server.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    ready(f"listening on {listen} (host key {key.get_name()} {key.fingerprint})")
    try:
        server.serve_forever(sock)
    finally:
        store.close()
    return 0
