"""The ``local`` backend: this Linux machine is the guest."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import typing as t

from llimabox import guest
from llimabox.backends.base import Backend, ProgressRelay, one_line
from llimabox.errors import GuestNotProvisioned, GuestScriptFailed, InvalidInput

__all__ = ["LocalBackend"]



def _fix() -> str:
    """The command that provisions this machine, runnable from a venv or pipx install too."""
    from llimabox.selfpath import self_command

    return f"sudo {self_command()} --backend local provision"


class LocalBackend(Backend):
    """Runs the guest scripts on this machine, through ``sudo -n`` unless we are root."""

    kind = "local"
    identity = "local"
    local_paths = True

    @property
    def provision_hint(self) -> str:  # type: ignore[override]
        return _fix()

    def __init__(self, sudo: bool = True) -> None:
        self.sudo = sudo and os.geteuid() != 0

    def _check_installed(self, verb: str) -> None:
        if not os.access(f"{guest.GUEST_PREFIX}/{verb}", os.X_OK):
            raise GuestNotProvisioned(f"the llima-box guest scripts are not installed here; run: {_fix()}")

    def _refused(self, code: int, err: bytes) -> GuestNotProvisioned | None:
        if guest.is_sudo_refusal(code, err):
            return GuestNotProvisioned(f"sudo refuses the llima-box guest scripts ({one_line(err, '')}); run: {_fix()}")
        return None

    def run_verb(self, verb: str, *args: str, input: bytes | None = None) -> tuple[int, bytes, bytes]:
        self._check_installed(verb)
        argv = guest.verb_argv(verb, *args, sudo=self.sudo)
        stdin = {"stdin": subprocess.DEVNULL} if input is None else {"input": input}
        proc = subprocess.run(argv, capture_output=True, check=False, **stdin)  # type: ignore[call-overload]
        refused = self._refused(proc.returncode, proc.stderr)
        if refused is not None:
            raise refused
        return proc.returncode, proc.stdout, proc.stderr

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
        """Run the env's command with our own file descriptors (no copying); ``pty`` is not needed here."""
        self._check_installed("enter")
        agent = os.environ.get("SSH_AUTH_SOCK") if forward_agent else None
        argv = guest.enter_argv(name, project, cmd, cwd=cwd, env=env, agent_socket=agent, sudo=self.sudo)
        old = signal.signal(signal.SIGINT, _ignore) if _main_thread() else None
        try:
            proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr)
            if cancel_fd is not None:
                _terminate_when_readable(proc, cancel_fd)
            code = proc.wait()
        except OSError as exc:
            raise GuestNotProvisioned(f"cannot run {argv[0]}: {exc.strerror}; run: {_fix()}") from exc
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)
        if code < 0:
            return 128 - code
        if code == 1 and self.sudo and not self._sudo_allows("enter"):
            raise GuestNotProvisioned(f"sudo does not allow the llima-box guest scripts; run: {_fix()}")
        return code

    def _sudo_allows(self, verb: str) -> bool:
        proc = subprocess.run(
            ["sudo", "-n", "-l", f"{guest.GUEST_PREFIX}/{verb}"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        return proc.returncode == 0

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
        conf = _read_conf()
        user = user or _default_user() or conf.get("USER") or None
        roots = roots or conf.get("ROOTS") or "/home"
        src = guest.data_dir("provision")
        argv = ["bash", str(src / "install.sh"), "--roots", roots]
        if user:
            argv += ["--user", user]
        if group is not None:
            argv += ["--group", group]
        argv += tools.installer_args(packages, setup)
        if os.geteuid() != 0:
            argv = ["sudo", "-n", *argv]
        relay = ProgressRelay()
        code, out = _run_relayed(argv, relay)
        reason = relay.finish(failed=code != 0)
        if code != 0:
            if os.geteuid() != 0 and relay.head.startswith(b"sudo:"):
                raise GuestNotProvisioned(f"provisioning needs root; run: {_fix()}")
            if code == 2:
                raise InvalidInput(reason or "provisioning refused its arguments")
            raise GuestScriptFailed(reason or f"provisioning failed (exit {code})")
        return one_line(out, "provisioned")


def _run_relayed(argv: list[str], relay: ProgressRelay) -> tuple[int, bytes]:
    """Run ``argv``, its stderr through ``relay`` as it comes; return its status and stdout."""
    import threading

    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    while chunk := os.read(proc.stderr.fileno(), 65536):
        relay.write(chunk)
    reader.join()
    return proc.wait(), b"".join(out)


def _terminate_when_readable(proc: subprocess.Popen[bytes], fd: int) -> None:
    """Terminate ``proc`` (sudo passes the signal on) once ``fd`` turns readable, unless it has ended."""
    import select
    import threading

    def watch() -> None:
        with contextlib.suppress(OSError, ValueError):
            while proc.poll() is None:
                if select.select([fd], [], [], 1.0)[0]:
                    if proc.poll() is None:
                        proc.terminate()
                    return

    threading.Thread(target=watch, daemon=True).start()


def _ignore(signum: int, frame: object) -> None:
    """Ctrl-C goes to the env's command (same process group); we wait for it."""


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _default_user() -> str | None:
    if os.geteuid() == 0:
        sudo_user = os.environ.get("SUDO_USER")
        return sudo_user if sudo_user and sudo_user != "root" else None
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _read_conf(path: str = "/etc/llima-box/guest.conf") -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in lines if "=" in line)
