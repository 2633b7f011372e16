"""The host side of the guest-script contract (see ``guest-scripts/README.md``).

Builds the argv of the five guest verbs and parses what they print. Remote commands are
always ``shlex.join(argv)`` (see :func:`remote_command`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import typing as t
from pathlib import Path

from llimabox.errors import GuestScriptFailed

__all__ = [
    "GUEST_PREFIX",
    "VERBS",
    "ENV_VARS",
    "AGENT_SOCKET_FROM_ENV",
    "GuestEnv",
    "ShellVar",
    "verb_argv",
    "enter_argv",
    "remote_command",
    "parse_list",
    "parse_version",
    "data_dir",
    "packaged_version",
    "is_sudo_refusal",
]

GUEST_PREFIX = "/usr/local/libexec/llima-box"
VERBS = ("create", "enter", "stop", "delete", "list", "version")
#: Environment variables ``enter --env`` accepts, and the values it accepts for them.
ENV_VARS = re.compile(r"^(TERM|LANG|COLORTERM|LC_[A-Z]+)$")
_ENV_VALUE = re.compile(r"^[A-Za-z0-9._@:+=-]*$")


class ShellVar(str):
    """An argv entry the remote shell expands as ``"$NAME"`` (only for fixed variable names)."""

    __slots__ = ()


#: The forwarded agent socket of the remote session, expanded by the guest user's shell.
AGENT_SOCKET_FROM_ENV = ShellVar("SSH_AUTH_SOCK")


@dataclasses.dataclass(frozen=True)
class GuestEnv:
    """One line of the ``list`` verb."""

    name: str
    project: str
    uid: int | None
    alive: bool
    created: str
    mode: str
    owner: int | None = None
    limits: dict[str, t.Any] | None = None
    network: str | None = None
    ports: list[dict[str, t.Any]] | None = None
    allow: list[str] | None = None
    refused: list[dict[str, t.Any]] | None = None
    project_gone: bool = False
    shares: list[dict[str, t.Any]] | None = None
    secrets: list[dict[str, t.Any]] | None = None


def verb_argv(verb: str, *args: str, sudo: bool) -> list[str]:
    """Return the argv running a guest verb, through ``sudo -n`` when ``sudo`` is true.

    :param verb: one of :data:`VERBS`.
    """
    if verb not in VERBS:
        raise ValueError(f"unknown guest verb {verb!r}")
    argv = [f"{GUEST_PREFIX}/{verb}", *args]
    return ["sudo", "-n", *argv] if sudo else argv


def enter_argv(
    name: str,
    project: str,
    cmd: t.Sequence[str] = (),
    cwd: str | None = None,
    env: t.Mapping[str, str] | None = None,
    agent_socket: str | None = None,
    sudo: bool = True,
    owner: str | None = None,
) -> list[str]:
    """Return the argv of ``enter NAME PROJECT [--owner U] [--cwd DIR] [--env V=X]... [--agent-socket P] -- CMD...``.

    Variables the guest would refuse (other names, or values with other characters) are left out
    rather than failing the command. ``owner``: the account a root caller acts for.
    """
    args = [name, project]
    if owner is not None:
        args += ["--owner", owner]
    if cwd is not None and cwd != project:
        args += ["--cwd", cwd]
    for key, value in sorted((env or {}).items()):
        if ENV_VARS.match(key) and _ENV_VALUE.match(value):
            args += ["--env", f"{key}={value}"]
    if agent_socket:
        args += ["--agent-socket", agent_socket]
    args.append("--")
    args.extend(cmd)
    return verb_argv("enter", *args, sudo=sudo)


def remote_command(argv: t.Sequence[str]) -> str:
    """Return the command line for a remote shell: ``shlex.join(argv)``, with :class:`ShellVar` expanded."""
    return " ".join(f'"${arg}"' if isinstance(arg, ShellVar) else shlex.quote(arg) for arg in argv)


def parse_list(stdout: bytes) -> list[GuestEnv]:
    """Parse the JSON Lines of the ``list`` verb.

    :raises GuestScriptFailed: a line is not a valid env object.
    """
    envs = []
    for line in stdout.decode("utf-8", "surrogateescape").splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            uid, owner = obj.get("uid"), obj.get("owner")
            envs.append(
                GuestEnv(
                    name=str(obj["name"]),
                    project=str(obj["project"]),
                    uid=int(uid) if uid is not None else None,
                    alive=bool(obj.get("alive", False)),
                    created=str(obj.get("created", "")),
                    mode=str(obj.get("mode", "")),
                    owner=int(owner) if owner is not None else None,
                    limits=obj["limits"] if isinstance(obj.get("limits"), dict) else None,
                    network=str(obj["network"]) if obj.get("network") else None,
                    ports=[_port(p) for p in obj["ports"]] if isinstance(obj.get("ports"), list) else None,
                    allow=[str(h) for h in obj["allow"]] if isinstance(obj.get("allow"), list) else None,
                    refused=[{"time": str(r["time"]), "host": str(r["host"])} for r in obj["refused"]]
                    if isinstance(obj.get("refused"), list) else None,
                    project_gone=obj.get("project_gone") is True,
                    shares=[_share(s) for s in obj["shares"]] if isinstance(obj.get("shares"), list) else None,
                    secrets=[{"name": str(s["name"]), "hosts": [str(h) for h in s["hosts"]], "env": str(s["env"])}
                             for s in obj["secrets"]] if isinstance(obj.get("secrets"), list) else None,
                )
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise GuestScriptFailed(f"guest list printed an invalid line: {line[:200]!r}") from exc
    return envs


def _port(obj: t.Any) -> dict[str, t.Any]:
    published = obj.get("published")
    return {"inside": int(obj["inside"]), "published": int(published) if published is not None else None}


def _share(obj: t.Any) -> dict[str, t.Any]:
    error = obj.get("error")
    return {"src": str(obj["src"]), "dst": str(obj["dst"]), "mode": str(obj["mode"]),
            "error": str(error) if error is not None else None}


def parse_version(stdout: bytes) -> int | None:
    """Parse the ``version`` verb's output; ``None`` when it is not an integer."""
    try:
        return int(stdout.decode("ascii", "replace").strip())
    except ValueError:
        return None


def data_dir(name: str) -> Path:
    """Return ``guest-scripts`` or ``provision`` from the source tree or the installed wheel data."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_data" / name, here.parent / name):
        if candidate.is_dir():
            return candidate
    raise GuestScriptFailed(f"llima-box is installed without its {name} directory")


def packaged_version() -> int:
    """Return the guest-scripts version this llima-box ships (``guest-scripts/VERSION``)."""
    text = (data_dir("guest-scripts") / "VERSION").read_text(encoding="ascii")
    return int(text.strip())


_SUDO_REFUSALS = (
    b"a password is required",
    b"a terminal is required",
    b"is not allowed to execute",
    b"may not run sudo",
    b"is not in the sudoers file",
    b"command not found",
)


def is_sudo_refusal(code: int, stderr: bytes) -> bool:
    """Whether a verb failed before running: sudo refused it, or the script is not installed."""
    if code == 127 and (b"No such file" in stderr or b"not found" in stderr):
        return True
    if code != 1 or not stderr.startswith(b"sudo:"):
        return False
    return any(marker in stderr for marker in _SUDO_REFUSALS)


def _local_env_vars(environ: t.Mapping[str, str] = os.environ) -> dict[str, str]:
    return {k: v for k, v in environ.items() if ENV_VARS.match(k)}
