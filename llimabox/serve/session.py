"""One session channel of ``serve``: exec, shell or subsystem, run through the guest's ``enter``.

The command runs as ``enter NAME PROJECT -- SHELL -c COMMAND`` (a login shell for ``shell``)
with a clean environment, in a new session; with a PTY its standard streams are the PTY's
slave side, else pipes. Bytes are copied between the channel and the process by threads.

A ``direct-tcpip`` channel (``ssh -L``, ``ssh -W``) is one too: its process is the guest's
``lib/tcp-connect.py HOST PORT`` run through ``enter``, so the connection is made inside the env
(its network namespace, as its user) and reaches what the env reaches, nothing of the guest's.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import termios
import threading
import time
import typing as t

from llimabox import guest, names
from llimabox.serve.accounts import Refused, project_label, resolve_env, resolve_project

if t.TYPE_CHECKING:
    import paramiko

    from llimabox.config import Config
    from llimabox.serve.accounts import Account, Login
    from llimabox.serve.audit import Audit


class Sessions(t.Protocol):
    """What a session needs of the server (``serve.server.Server``): its settings, audit and session count."""

    config: Config
    audit: Audit

    def claim(self, user: str) -> bool: ...

    def release(self, user: str) -> None: ...


class Connection(t.Protocol):
    """What a session needs of its SSH connection (``serve.server.Connection``), once authenticated."""

    server: Sessions
    transport: paramiko.Transport
    source: str
    account: Account
    login: Login
    target: tuple[str, str] | None  # (env, project) of the login, once resolved
    sessions: dict[int, Session]  # by channel id

__all__ = ["Session", "ALLOWED_ENV", "relay", "process_tree"]

log = logging.getLogger("llimabox.serve")
ALLOWED_ENV = re.compile(r"^(LANG|LC_[A-Z]+|TERM)$")
_CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
_SIGNALS = {"ABRT", "ALRM", "FPE", "HUP", "ILL", "INT", "KILL", "PIPE", "QUIT", "SEGV", "TERM", "USR1", "USR2"}
_SFTP_SERVERS = ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/libexec/sftp-server")
TCP_CONNECT = f"{guest.GUEST_PREFIX}/lib/tcp-connect.py"
RUN_DIR = "/run/llima-box-serve"
_CHUNK = 32768


def process_tree(pid: int) -> list[int]:
    """The descendants of ``pid`` (not itself), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _signal_tree(pid: int, sig: int, users_only: bool = True) -> None:
    """Send ``sig`` to the descendants of ``pid``; only the env's (non-root) ones when ``users_only``."""
    for child in process_tree(pid):
        try:
            if users_only and os.stat(f"/proc/{child}").st_uid == 0:
                continue
            os.kill(child, sig)
        except OSError:
            continue


def relay(sock: socket.socket, chan: paramiko.Channel) -> None:
    """Copy bytes both ways between a socket and a channel until either side ends."""
    try:
        while True:
            ready, _, _ = select.select([sock, chan], [], [], 60)
            if sock in ready:
                data = sock.recv(_CHUNK)
                if not data:
                    break
                chan.sendall(data)
            if chan in ready:
                data = chan.recv(_CHUNK)
                if not data:
                    break
                sock.sendall(data)
    except (OSError, EOFError):
        pass
    finally:
        sock.close()
        chan.close()


class AgentRelay:
    """A root-only Unix socket whose connections become agent channels to the client."""

    def __init__(self, transport: paramiko.Transport) -> None:
        os.makedirs(RUN_DIR, mode=0o700, exist_ok=True)
        os.chmod(RUN_DIR, 0o700)
        self.dir = tempfile.mkdtemp(prefix="agent.", dir=RUN_DIR)
        self.path = f"{self.dir}/agent.sock"
        self.transport = transport
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.sock.settimeout(0.5)
        self.closed = False
        threading.Thread(target=self._accept, name="agent-relay", daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            chan = self.transport.open_forward_agent_channel()
            if chan is None:
                conn.close()
                continue
            conn.settimeout(None)
            threading.Thread(target=relay, args=(conn, chan), daemon=True).start()

    def close(self) -> None:
        self.closed = True
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Session:
    """The state and the process of one session channel."""

    def __init__(self, conn: Connection, channel: paramiko.Channel,
                 forward: tuple[str, int] | None = None) -> None:
        self.conn, self.channel = conn, channel
        self.forward = forward  # a direct-tcpip channel's destination
        self.env: dict[str, str] = {}
        self.pty: tuple[str, int, int, int, int] | None = None
        self.master: int | None = None
        self.agent = False
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = False
        self.closing = False
        self.bytes_in = self.bytes_out = 0
        self.last_activity = time.monotonic()
        self.thread: threading.Thread | None = None
        self.replied = threading.Event()  # set once the start request has been answered
        self._lock = threading.Lock()

    # -- channel requests (called in the transport's thread: never block) --

    def set_env(self, name: str, value: str) -> bool:
        if not ALLOWED_ENV.match(name) or self.started:
            return False
        self.env[name] = value
        return True

    def set_pty(self, term: str, width: int, height: int, pixelwidth: int, pixelheight: int) -> bool:
        if self.started:
            return False
        self.pty = (term, width, height, pixelwidth, pixelheight)
        return True

    def resize(self, width: int, height: int, pixelwidth: int, pixelheight: int) -> bool:
        if self.pty is None:
            return False
        self.pty = (self.pty[0], width, height, pixelwidth, pixelheight)
        if self.master is not None:
            _set_size(self.master, width, height, pixelwidth, pixelheight)
        return True

    def signal(self, name: str) -> bool:
        if name not in _SIGNALS or self.proc is None:
            return False
        _signal_tree(self.proc.pid, getattr(signal, "SIG" + name))
        return True

    def start(self, kind: str, command: str | None) -> bool:
        with self._lock:
            if self.started or self.closing:
                return False
            self.started = True
        if self.forward is None:
            self.replied.clear()
        self.thread = threading.Thread(target=self._run, args=(kind, command), name=f"session-{kind}", daemon=True)
        self.thread.start()
        return True

    # -- ending --

    def terminate(self, message: str | None = None) -> None:
        """Tell the client (when ``message``), then end the env's processes: HUP, TERM, KILL."""
        with self._lock:
            if self.closing:
                return
            self.closing = True
        threading.Thread(target=self._reap, args=(message,), name="session-end", daemon=True).start()

    def _reap(self, message: str | None) -> None:
        if message:
            self._stderr(message)  # here, not in the caller: a client that does not read may block it
        for sig, wait in ((signal.SIGHUP, 2.0), (signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            proc = self.proc
            if proc is None or proc.poll() is not None:
                break
            _signal_tree(proc.pid, sig)
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        proc = self.proc
        if proc is not None and proc.poll() is None:
            _signal_tree(proc.pid, signal.SIGKILL, users_only=False)
            proc.kill()
        if self.proc is None or not self.started:
            self.channel.close()

    # -- the session's thread --

    def start_forward(self) -> bool:
        """Start the connection of a direct-tcpip channel (once the channel is open)."""
        assert self.forward is not None
        self.replied.set()  # no request to answer: the open confirmation is out (start keeps it set)
        return self.start("direct-tcpip", f"{self.forward[0]}:{self.forward[1]}")

    def _stderr(self, message: str) -> None:
        if self.forward is not None:  # a forwarded connection has no stderr: the client would show nothing
            log.info("%s: %s", self.conn.account.name, message)
            return
        nl = "\r\n" if self.pty else "\n"
        try:
            self.channel.sendall_stderr(f"llima-box: {message}{nl}".encode())
        except (OSError, EOFError):
            pass

    def _run(self, kind: str, command: str | None) -> None:
        self.replied.wait(10)
        server, account = self.conn.server, self.conn.account
        audit_id = None
        code: int | None = 1
        claimed = server.claim(account.name)
        try:
            if not claimed:
                self._stderr(f"too many sessions of {account.name} (at most {server.config.serve_max_sessions})")
                return
            try:
                name, project = self._target()
            except Refused as exc:
                self._stderr(str(exc))
                audit_id = server.audit.session_start(account.name, self.conn.source, None, self.conn.login.project,
                                                      kind, command)
                return
            audit_id = server.audit.session_start(account.name, self.conn.source, name, project, kind, command)
            code = self._execute(name, project, kind, command)
        except Exception:
            log.exception("session of %s failed", account.name)
            self._stderr("internal error (see the server's log)")
            code = 1
        finally:
            if claimed:
                server.release(account.name)
            server.audit.session_end(audit_id, code, self.bytes_in, self.bytes_out)
            try:
                if code is not None and self.forward is None:
                    self.channel.send_exit_status(code)
                self.channel.close()
            except (OSError, EOFError):
                pass
            if self.forward is not None:  # an IDE opens many: the connection keeps none of them
                self.conn.sessions.pop(self.channel.get_id(), None)

    def _target(self) -> tuple[str, str]:
        """(env, project) of the login: ``USER+lb-…`` names one of the account's envs, ``USER+PROJECT``
        a directory under the account's projects root (kept for the connection once found)."""
        conn, config = self.conn, self.conn.server.config
        if conn.target is not None:
            return conn.target
        project = conn.login.project or config.serve_default_project
        if project is None:
            raise Refused(f"name a project: ssh {conn.account.name}+PROJECT@…; yours: {self._own_envs()}")
        if names.NAME_RE.fullmatch(project):
            conn.target = (project, resolve_env(conn.account, project, _guest_envs()))
        else:
            real = resolve_project(conn.account, project, config.serve_projects_root)
            conn.target = (names.env_name(real), real)
        return conn.target

    def _own_envs(self) -> str:
        try:
            envs = _guest_envs()
        except Exception:  # noqa: BLE001 - only a hint
            envs = []
        root = self.conn.server.config.serve_projects_root
        mine = (e for e in envs if e.owner in (None, self.conn.account.uid))
        labels = sorted(filter(None, (project_label(self.conn.account, e.project, root) for e in mine)))
        return ", ".join(labels) if labels else "no envs yet"

    def _argv(self, name: str, project: str, kind: str, command: str | None, agent: str | None) -> list[str]:
        shell = self.conn.account.shell
        if kind == "exec":
            cmd = [shell, "-c", command or ""]
        elif kind == "subsystem":
            cmd = [next((p for p in _SFTP_SERVERS if os.access(p, os.X_OK)), _SFTP_SERVERS[0])]
        elif kind == "direct-tcpip":
            assert self.forward is not None
            cmd = [TCP_CONNECT, self.forward[0], str(self.forward[1])]
        else:
            cmd = [shell, "-l"]
        env = {k: v for k, v in self.env.items() if ALLOWED_ENV.match(k)}
        if self.pty is not None:
            env["TERM"] = self.pty[0]
        return guest.enter_argv(name, project, cmd, env=env, agent_socket=agent, sudo=False,
                                owner=self.conn.account.name)

    def _execute(self, name: str, project: str, kind: str, command: str | None) -> int | None:
        relay_ = AgentRelay(self.conn.transport) if self.agent else None
        try:
            argv = self._argv(name, project, kind, command, relay_.path if relay_ else None)
            if self.closing:
                return None
            code = self._spawn_pty(argv) if self.pty is not None else self._spawn_pipes(argv)
        finally:
            if relay_ is not None:
                relay_.close()
        return code

    def _popen(self, argv: list[str], **streams: t.Any) -> subprocess.Popen[bytes]:
        with self._lock:
            if self.closing:
                raise _Closing
            self.proc = subprocess.Popen(argv, env=_CLEAN_ENV, start_new_session=True, close_fds=True, **streams)
        return self.proc

    def _touch(self, received: int = 0, sent: int = 0) -> None:
        self.bytes_in += received
        self.bytes_out += sent
        self.last_activity = time.monotonic()

    def _spawn_pipes(self, argv: list[str]) -> int | None:
        try:
            proc = self._popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               bufsize=0)
        except _Closing:
            return None
        assert proc.stdin and proc.stdout and proc.stderr
        stdin_fd = proc.stdin.fileno()

        def write(data: bytes) -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(stdin_fd, view):]

        feeder = threading.Thread(target=self._feed, args=(write, proc.stdin.close), daemon=True)
        feeder.start()
        out = threading.Thread(target=self._drain, args=(proc.stdout.fileno(), self.channel.sendall), daemon=True)
        to_stderr = self.channel.sendall_stderr if self.forward is None else self._log_stderr
        err = threading.Thread(target=self._drain, args=(proc.stderr.fileno(), to_stderr), daemon=True)
        out.start()
        err.start()
        code = proc.wait()
        out.join()
        err.join()
        proc.stdout.close()
        proc.stderr.close()
        return _status(code)

    def _log_stderr(self, data: bytes) -> None:
        log.info("forward of %s: %s", self.conn.account.name, data.decode("utf-8", "replace").strip()[:300])

    def _feed(self, write: t.Callable[[bytes], None], done: t.Callable[[], None]) -> None:
        """Channel → process, until the client's EOF; a vanished client ends the session."""
        try:
            while True:
                data = self.channel.recv(_CHUNK)
                if not data:
                    break
                self._touch(received=len(data))
                write(data)
        except (OSError, EOFError, ValueError):
            pass
        finally:
            try:
                done()
            except OSError:
                pass
        if self.channel.closed:
            self.terminate()

    def _drain(self, fd: int, send: t.Callable[[bytes], None]) -> None:
        """Process → channel, until EOF."""
        while True:
            try:
                data = os.read(fd, _CHUNK)
            except OSError:
                return
            if not data:
                return
            self._touch(sent=len(data))
            try:
                send(data)
            except (OSError, EOFError):
                return

    def _spawn_pty(self, argv: list[str]) -> int | None:
        assert self.pty is not None
        master, slave = os.openpty()
        _set_size(master, *self.pty[1:])
        self.master = master
        try:
            try:
                proc = self._popen(argv, stdin=slave, stdout=slave, stderr=slave)
            except _Closing:
                return None
            finally:
                os.close(slave)

            def write(data: bytes) -> None:
                view = memoryview(data)
                while view:
                    view = view[os.write(master, view):]

            threading.Thread(target=self._feed, args=(write, lambda: None), daemon=True).start()
            self._drain_master(master, proc)
            return _status(proc.wait())
        finally:
            self.master = None
            os.close(master)

    def _drain_master(self, master: int, proc: subprocess.Popen[bytes]) -> None:
        """PTY → channel, until the terminal hangs up, or the process is gone and nothing is left."""
        while True:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                if proc.poll() is not None:
                    return
                continue
            try:
                data = os.read(master, _CHUNK)
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return
                raise
            if not data:
                return
            self._touch(sent=len(data))
            try:
                self.channel.sendall(data)
            except (OSError, EOFError):
                return


def _guest_envs() -> list[guest.GuestEnv]:
    """Every env of the guest (serve runs as root there: its ``list`` shows all)."""
    from llimabox.backends.local import LocalBackend

    code, out, _ = LocalBackend(sudo=False).run_verb("list")
    if code != 0:
        raise Refused("cannot list the envs now")
    return guest.parse_list(out)


class _Closing(Exception):
    """The session was told to end before its process started."""


def _set_size(fd: int, width: int, height: int, pixelwidth: int, pixelheight: int) -> None:
    size = struct.pack("HHHH", max(0, min(height, 0xFFFF)), max(0, min(width, 0xFFFF)),
                       max(0, min(pixelwidth, 0xFFFF)), max(0, min(pixelheight, 0xFFFF)))
    fcntl.ioctl(fd, termios.TIOCSWINSZ, size)


def _status(code: int) -> int:
    return 128 - code if code < 0 else code
