"""The ``ssh`` backend: any Linux host (or the Lima VM) reached over SSH with paramiko."""

from __future__ import annotations

import io
import os
import stat
import typing as t
from pathlib import Path

from llimabox import guest
from llimabox.backends.base import Backend, ProgressRelay, one_line
from llimabox.errors import GuestNotProvisioned, GuestScriptFailed, InvalidInput

if t.TYPE_CHECKING:
    from llimabox.transport import Connection, SSHTarget

__all__ = ["SSHBackend"]


class SSHBackend(Backend):
    """Runs the guest scripts on a remote host through ``sudo -n`` (unless we log in as root)."""

    kind = "ssh"
    local_paths = False

    def __init__(self, target: SSHTarget, sudo: bool = True) -> None:
        self.target = target
        self.sudo = sudo and target.user != "root"
        self.identity = f"ssh:{target.user}@{target.host}:{target.port}"
        self.provision_hint = f"llima-box --backend ssh --host {target.user}@{target.host}:{target.port} provision"
        self._conn: Connection | None = None

    @property
    def conn(self) -> Connection:
        """The SSH connection, opened on first use."""
        if self._conn is None:
            from llimabox.transport import Connection

            self._conn = Connection(self.target)
        return self._conn

    def _not_provisioned(self, err: bytes) -> GuestNotProvisioned:
        why = one_line(err, "guest scripts missing")
        return GuestNotProvisioned(f"the guest cannot run the llima-box scripts ({why}); run: {self.provision_hint}")

    def run_verb(self, verb: str, *args: str, input: bytes | None = None) -> tuple[int, bytes, bytes]:
        code, out, err = self.conn.capture(guest.verb_argv(verb, *args, sudo=self.sudo), stdin=input or b"")
        if guest.is_sudo_refusal(code, err):
            raise self._not_provisioned(err)
        return code, out, err

    def enter(
        self,
        name: str,
        project: str,
        cmd: t.Sequence[str] = (),
        cwd: str | None = None,
        env: t.Mapping[str, str] | None = None,
        pty: bool = False,
        forward_agent: bool = False,
        stdin: t.Any = None,
        stdout: t.Any = None,
        stderr: t.Any = None,
        cancel_fd: int | None = None,
    ) -> int:
        """Run the env's command over one SSH session; sudo refusals are held back and raised."""
        agent = guest.AGENT_SOCKET_FROM_ENV if forward_agent else None
        argv = guest.enter_argv(name, project, cmd, cwd=cwd, env=env, agent_socket=agent, sudo=self.sudo)
        sniff = _SudoSniffer(stderr)
        code = self.conn.run(
            argv,
            stdin=stdin if stdin is not None else _own_stdin(),
            stdout=stdout,
            stderr=sniff,
            pty=pty,
            term=(env or {}).get("TERM"),
            forward_agent=forward_agent,
            cancel_fd=cancel_fd,
        )
        if guest.is_sudo_refusal(code, sniff.held):
            raise self._not_provisioned(sniff.held)
        sniff.release()
        if pty and code in (1, 127) and self.guest_version() is None:  # a pty merges sudo's refusal into stdout
            raise self._not_provisioned(b"")
        return code

    def provision(
        self,
        user: str | None = None,
        roots: str | None = None,
        group: str | None = None,
        packages: t.Sequence[str] | None = None,
        setup: str | None = None,
    ) -> str:
        from llimabox import tools

        packages, setup = tools.checked(packages, setup)
        conn = self.conn
        user = user or (self.target.user if self.target.user != "root" else None)
        roots = roots or _remote_conf(self).get("ROOTS") or "/home"
        code, out, err = conn.capture(["mktemp", "-d", "/tmp/llima-box-provision.XXXXXXXX"])
        tmp = out.decode().strip()
        if code != 0 or not tmp.startswith("/tmp/llima-box-provision."):
            raise GuestScriptFailed(one_line(err, "cannot make a temporary directory in the guest"))
        relay = ProgressRelay()
        try:
            guest_setup = self._upload(tmp, setup)
            argv = ["bash", f"{tmp}/provision/install.sh", "--roots", roots]
            if user:
                argv += ["--user", user]
            if group is not None:
                argv += ["--group", group]
            argv += tools.installer_args(packages, guest_setup)
            if self.target.user != "root":
                argv = ["sudo", "-n", *argv]
            stdout = io.BytesIO()
            code = conn.run(argv, stdin=io.BytesIO(), stdout=stdout, stderr=relay)
        finally:
            conn.capture(["rm", "-rf", "--", tmp])
        reason = relay.finish(failed=code != 0)
        if code != 0:
            if relay.head.startswith(b"sudo:"):
                raise GuestNotProvisioned(f"provisioning needs root in the guest and sudo refused ({reason})")
            if code == 2:
                raise InvalidInput(reason or "provisioning refused its arguments")
            raise GuestScriptFailed(reason or f"provisioning failed (exit {code})")
        return one_line(stdout.getvalue(), "provisioned")

    def _upload(self, tmp: str, setup: str | None = None) -> str | None:
        """Copy the guest side (and the setup script) into ``tmp`` in the guest; return the script's path there."""
        sftp = self.conn.connect().open_sftp()
        try:
            for name in ("guest-scripts", "provision"):
                _put_tree(sftp, guest.data_dir(name), f"{tmp}/{name}")
            if setup is None:
                return None
            sftp.mkdir(f"{tmp}/setup", 0o700)
            dest = f"{tmp}/setup/{os.path.basename(setup)}"
            sftp.put(setup, dest)
            sftp.chmod(dest, 0o700)
            return dest
        finally:
            sftp.close()

    def connect(self) -> None:
        self.conn.connect()

    def healthy(self) -> bool:
        return self._conn is None or self._conn.is_active()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _put_tree(sftp: t.Any, src: Path, dest: str) -> None:
    sftp.mkdir(dest, 0o700)
    for entry in sorted(src.iterdir()):
        if entry.name.startswith(".") or entry.name == "__pycache__":
            continue
        if entry.is_dir():
            _put_tree(sftp, entry, f"{dest}/{entry.name}")
        else:
            sftp.put(str(entry), f"{dest}/{entry.name}")
            sftp.chmod(f"{dest}/{entry.name}", stat.S_IMODE(os.stat(entry).st_mode) & 0o755)


def _remote_conf(backend: SSHBackend) -> dict[str, str]:
    code, out, _ = backend.conn.capture(["cat", "/etc/llima-box/guest.conf"])
    if code != 0:
        return {}
    lines = out.decode("utf-8", "replace").splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


class _SudoSniffer:
    """Passes stderr through, but holds it back while it may be sudo's refusal (``sudo: …``)."""

    _LIMIT = 4096

    def __init__(self, target: t.Any) -> None:
        import sys

        self.target = target if target is not None else sys.stderr.buffer
        self.held = b""
        self.passing = False

    def fileno(self) -> int:
        raise OSError("not a real file")

    def write(self, data: bytes) -> None:
        if self.passing:
            self._out(data)
            return
        self.held += data
        if not b"sudo:".startswith(self.held[:5]) or len(self.held) > self._LIMIT:
            self.release()

    def flush(self) -> None:
        return None

    def release(self) -> None:
        self.passing = True
        if self.held:
            data, self.held = self.held, b""
            self._out(data)

    def _out(self, data: bytes) -> None:
        self.target.write(data)
        self.target.flush()


def _own_stdin() -> t.Any:
    import sys

    return getattr(sys.stdin, "buffer", sys.stdin)
