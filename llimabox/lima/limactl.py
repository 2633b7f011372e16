"""Drive ``limactl``: always non-interactive, JSON Lines parsed, every instance status mapped.

Connection details come from ``limactl list --json`` and the instance's ``ssh.config``, never from
guesses; ``LIMA_HOME`` is honoured because limactl itself honours it (we pass the environment on).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import typing as t
from pathlib import Path

from llimabox.errors import GuestUnreachable, InvalidInput, LlimaBoxError

__all__ = ["NAME_RE", "Instance", "Limactl", "LimactlError", "lima_home", "read_ssh_config"]

NAME_RE = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")
INSTALL_HINT = "install Lima (macOS: brew install lima; see https://lima-vm.io)"


class LimactlError(LlimaBoxError):
    """limactl failed; carries its last error message."""


def lima_home(environ: t.Mapping[str, str] = os.environ) -> Path:
    """``$LIMA_HOME``, default ``~/.lima``."""
    return Path(environ.get("LIMA_HOME") or os.path.expanduser("~/.lima"))


@dataclasses.dataclass(frozen=True)
class Instance:
    """One line of ``limactl list --json`` (the keys llima-box uses; others are ignored)."""

    name: str
    status: str
    dir: str
    ssh_local_port: int | None = None
    ssh_config_file: str | None = None
    message: str | None = None
    user: str | None = None
    lima_version: str | None = None
    vm_type: str | None = None

    @classmethod
    def from_json(cls, obj: t.Mapping[str, t.Any]) -> Instance:
        config = obj.get("config") or {}
        user = (config.get("user") or {}).get("name") if isinstance(config, dict) else None
        port = obj.get("sshLocalPort")
        return cls(
            name=str(obj.get("name", "")),
            status=str(obj.get("status") or ""),
            dir=str(obj.get("dir", "")),
            ssh_local_port=int(port) if isinstance(port, int) and port > 0 else None,
            ssh_config_file=obj.get("sshConfigFile") or None,
            message=obj.get("message") or None,
            user=user,
            lima_version=obj.get("limaVersion") or None,
            vm_type=obj.get("vmType") or None,
        )


def parse_list(stdout: str) -> list[Instance]:
    """Parse JSON Lines (one object per instance); a line that is not an object is an error."""
    out = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LimactlError(f"limactl list --json printed something that is not JSON: {line[:80]!r}") from exc
        if not isinstance(obj, dict):
            raise LimactlError(f"limactl list --json printed a non-object: {line[:80]!r}")
        out.append(Instance.from_json(obj))
    return out


_MSG = re.compile(r'(?:^|\s)msg=("(?:[^"\\]|\\.)*"|\S+)')


def log_message(line: str) -> str:
    """The ``msg=`` of a logrus text line (``time=… level=… msg=…``), else the line itself."""
    m = _MSG.search(line)
    if not m:
        return line.strip()
    value = m.group(1)
    if value.startswith('"'):
        try:
            return str(json.loads(value))
        except json.JSONDecodeError:
            return value.strip('"')
    return value


def last_error(stderr: str, default: str) -> str:
    """The last fatal/error message in limactl's stderr."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "level=fatal" in ln or "level=error" in ln:
            return log_message(ln)
    return log_message(lines[-1]) if lines else default


def read_ssh_config(path: str | os.PathLike[str]) -> dict[str, str]:
    """The options of the first ``Host`` block of an OpenSSH config Lima wrote (keys lower-cased, unquoted)."""
    opts: dict[str, str] = {}
    seen_host = False
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ") if " " in line else line.partition("=")
        key = key.strip().lower()
        value = value.strip().lstrip("=").strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if key == "host":
            if seen_host:
                break
            seen_host = True
        opts.setdefault(key, value)
    return opts


class Limactl:
    """Runs ``limactl`` with ``--tty=false`` on the commands that take it, stdin closed."""

    def __init__(self, exe: str = "limactl", environ: t.Mapping[str, str] | None = None) -> None:
        self.exe = exe
        self.environ = dict(environ if environ is not None else os.environ)

    def _run(self, args: t.Sequence[str], timeout: float | None = 120) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [self.exe, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                env=self.environ, timeout=timeout, check=False,
            )  # fmt: skip
        except FileNotFoundError as exc:
            raise GuestUnreachable(f"limactl is not on PATH: {INSTALL_HINT}") from exc
        except subprocess.TimeoutExpired as exc:
            raise GuestUnreachable(f"limactl {args[0]} did not answer within {timeout:g}s") from exc

    def version(self) -> str:
        """``limactl --version`` → ``2.2.0``."""
        r = self._run(["--version"], timeout=30)
        if r.returncode != 0:
            raise LimactlError(last_error(r.stderr, f"limactl --version failed (exit {r.returncode})"))
        return r.stdout.strip().rsplit(" ", 1)[-1]

    def get(self, name: str) -> Instance | None:
        """The instance ``name``, ``None`` when it does not exist."""
        check_name(name)
        r = self._run(["list", "--json", name], timeout=60)
        if r.returncode != 0:
            if "No instance matching" in r.stderr:
                return None
            raise LimactlError(last_error(r.stderr, f"limactl list failed (exit {r.returncode})"))
        for inst in parse_list(r.stdout):
            if inst.name == name:
                return inst
        return None

    def create(self, name: str, yaml_path: str | os.PathLike[str]) -> None:
        check_name(name)
        r = self._run(["create", "--tty=false", "--name", name, os.fspath(yaml_path)], timeout=600)
        if r.returncode != 0:
            raise LimactlError(last_error(r.stderr, f"limactl create failed (exit {r.returncode})"))

    def start_argv(self, name: str, extra: t.Sequence[str] = ()) -> list[str]:
        check_name(name)
        return [self.exe, "start", "--tty=false", *extra, name]

    def stop(self, name: str, force: bool = False) -> None:
        check_name(name)
        r = self._run(["stop", *(["--force"] if force else []), name], timeout=600)
        if r.returncode != 0:
            raise LimactlError(last_error(r.stderr, f"limactl stop failed (exit {r.returncode})"))

    def delete(self, name: str, force: bool = False) -> None:
        check_name(name)
        r = self._run(["delete", *(["--force"] if force else []), name], timeout=600)
        if r.returncode != 0:
            raise LimactlError(last_error(r.stderr, f"limactl delete failed (exit {r.returncode})"))


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise InvalidInput(f"invalid Lima instance name {name!r} (letters, digits and single . _ - between them)")
    return name
