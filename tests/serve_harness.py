"""Runs ``llima-box serve`` as root inside the test guest and logs in to it with OpenSSH and paramiko."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import typing as t

import paramiko

from tests.guest import Guest, free_port

STATE = "/var/lib/llima-box-serve-test"
PASSWORDS = {"alice": "alice-pw-1", "bob": "bob-pw-2", "carol": "carol-pw-3", "dave": "dave-pw-4",
             "root": "root-pw-5"}


def setup_accounts(guest: Guest, key_pub: str) -> None:
    """carol and dave besides alice and bob; passwords for all (and root); alice, bob and dave
    in the group llima-box; the test key authorized for alice and bob."""
    for user in ("carol", "dave"):
        guest.run(["sh", "-c", f"getent passwd {user} >/dev/null || useradd -m -s /bin/bash {user}"]).check_returncode()
    lines = "".join(f"{u}:{p}\n" for u, p in PASSWORDS.items())
    guest.run(["chpasswd"], input=lines).check_returncode()
    for user in ("alice", "bob", "dave"):
        guest.run(["usermod", "-aG", "llima-box", user]).check_returncode()
    for user in ("alice", "bob"):
        home = f"/home/{user}.guest"
        script = (f"install -d -m 0700 -o {user} -g {user} {home}/.ssh && cat >> {home}/.ssh/authorized_keys && "
                  f"chown {user}:{user} {home}/.ssh/authorized_keys && chmod 600 {home}/.ssh/authorized_keys")
        guest.run(["sh", "-c", script], input=key_pub).check_returncode()


class Serve:
    """One ``llima-box serve`` in the guest, configured by ``LLIMA_BOX_SERVE_*`` variables (keyword: the config key),
    with its state (audit log) in ``state``."""

    def __init__(self, guest: Guest, log_dir: str, state: str = STATE, **config: object) -> None:
        self.guest, self.port, self.state = guest, free_port(), state
        env = [f"LLIMA_BOX_HOME={state}", "LLIMA_BOX_SERVE_PROJECTS_ROOT=/Users/{user}"]
        env += [f"LLIMA_BOX_{k.upper()}={v}" for k, v in config.items()]
        self.log = os.path.join(log_dir, f"serve-{self.port}.log")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                guest.argv(["env", *env, "llima-box", "serve", "--listen", f"127.0.0.1:{self.port}"]),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"serve did not start: {self.output()}") from None
                time.sleep(0.1)

    def output(self) -> str:
        with open(self.log, encoding="utf-8", errors="replace") as f:
            return f.read()[-3000:]

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM to the server (the child of nsenter); its exit status."""
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children", encoding="ascii") as f:
            children = [int(pid) for pid in f.read().split()]
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.terminate(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    # -- clients --

    def ssh_argv(self, login: str, *cmd: str, password: str | None = None, key: str | None = None,
                 method: str = "password", options: t.Sequence[str] = ()) -> list[str]:
        argv = ["ssh", "-F", "/dev/null", "-p", str(self.port), "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20",
                *options]
        if key is not None:
            argv += ["-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                     "-o", "PreferredAuthentications=publickey"]
        else:
            argv = ["sshpass", "-p", password or "", *argv, "-o", f"PreferredAuthentications={method}",
                    "-o", "PubkeyAuthentication=no", "-o", "NumberOfPasswordPrompts=1"]
        return [*argv, f"{login}@127.0.0.1", *cmd]

    def ssh(self, login: str, *cmd: str, input: bytes | None = None, timeout: float = 90,
            **kw: t.Any) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(self.ssh_argv(login, *cmd, **kw), input=input if input is not None else b"",
                              capture_output=True, timeout=timeout)

    def transport(self, source: str = "127.0.0.1") -> paramiko.Transport:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=20, source_address=(source, 0))
        transport = paramiko.Transport(sock)
        transport.start_client(timeout=20)
        return transport

    def login(self, login: str, password: str, source: str = "127.0.0.1") -> paramiko.Transport:
        """An authenticated paramiko transport; raises paramiko.AuthenticationException."""
        transport = self.transport(source)
        try:
            transport.auth_password(login, password)
        except Exception:
            transport.close()
            raise
        return transport

    def audit(self, *args: str) -> dict[str, list[dict[str, t.Any]]]:
        r = self.guest.run(["env", f"LLIMA_BOX_HOME={self.state}", "llima-box", "audit", "--json", *args])
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)


def run_channel(transport: paramiko.Transport, command: str, stdin: bytes = b"",
                timeout: float = 60) -> tuple[int, bytes, bytes]:
    """exec ``command`` on a new channel: (exit status, stdout, stderr)."""
    chan = transport.open_session(timeout=20)
    chan.settimeout(timeout)
    chan.exec_command(command)
    if stdin:
        chan.sendall(stdin)
    chan.shutdown_write()
    out = err = b""
    while True:
        data = chan.recv(65536)
        if not data:
            break
        out += data
    while True:
        data = chan.recv_stderr(65536)
        if not data:
            break
        err += data
    code = chan.recv_exit_status()
    chan.close()
    return code, out, err
