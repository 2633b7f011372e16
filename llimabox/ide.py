"""IDE attach: an OpenSSH ``Host`` block that opens the env of a project through ``serve``.

``serve`` listens on the guest's loopback on ``ide_port`` (the Lima VM's loopback reaches the
host's through Lima's port forwarding; the local backend's is this machine's). The block logs in
as ``ACCOUNT+ENV`` (the guest account and the env's name), so a plain ``ssh HOST``, exec channels,
``sftp`` and ``ssh -L`` all land in that env without a RemoteCommand. Keys only: the user's own
key, which must be in the guest account's ``~/.ssh/authorized_keys`` (:func:`authorize_key`).
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
import socket
import subprocess
import typing as t

from llimabox import names
from llimabox.errors import InvalidInput, LlimaBoxError

if t.TYPE_CHECKING:
    from llimabox.backends.base import Backend
    from llimabox.config import Config

__all__ = ["DEFAULT_KEYS", "IdeTarget", "IdeConfig", "host_block", "default_key", "public_key", "authorize_key",
           "serve_answers", "ssh_config"]

#: Private keys tried, in this order, when none is given.
DEFAULT_KEYS = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
_ALIAS_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_KEY_LINE_RE = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|"
                          r"sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+=*( [^\x00-\x1f\x7f]*)?$")
# Appends the public key on stdin to ~/.ssh/authorized_keys unless it is there: a fixed script, the key is data.
_AUTHORIZE = ('umask 077; mkdir -p "$HOME/.ssh"; f="$HOME/.ssh/authorized_keys"; key=$(cat); '
              'if grep -qxF -- "$key" "$f" 2>/dev/null; then echo present; '
              'else printf "%s\\n" "$key" >>"$f" && echo added; fi')


@dataclasses.dataclass(frozen=True)
class IdeTarget:
    """Everything a Host block needs."""

    alias: str
    host: str
    port: int
    user: str  # ACCOUNT+ENV
    identity: str
    key_alias: str = "llima-box-serve"  # the name the server's host key is pinned under
    proxy_jump: str | None = None
    known_hosts: str | None = None


@dataclasses.dataclass(frozen=True)
class IdeConfig:
    """What :func:`ssh_config` found: the block, whether the key was ``"added"`` or ``"present"`` (None: not
    asked), and whether serve answers on the port (None: not checked, behind a ProxyJump)."""

    block: str
    authorized: str | None
    serve_answers: bool | None


def _quote(value: str) -> str:
    """A value for ssh_config: double-quoted when it has a space (ssh_config has no other escaping)."""
    if any(c in value for c in '"\n\r'):
        raise InvalidInput(f"cannot write {value!r} into an ssh_config")
    return f'"{value}"' if " " in value or "\t" in value else value


def host_block(target: IdeTarget) -> str:
    """The ``Host`` block of ``target`` (text ending in a newline).

    The server's host key is pinned on first use under one ``HostKeyAlias`` per guest, so every
    env's block shares it.
    """
    if not _ALIAS_RE.fullmatch(target.alias):
        raise InvalidInput(f"invalid host alias {target.alias!r} (want [A-Za-z0-9._-])")
    lines = [
        f"Host {target.alias}",
        f"  HostName {target.host}",
        f"  Port {target.port}",
        f"  User {target.user}",
        f"  IdentityFile {_quote(target.identity)}",
        "  IdentitiesOnly yes",
        "  PreferredAuthentications publickey",
        f"  HostKeyAlias {_quote(target.key_alias)}",
        "  StrictHostKeyChecking accept-new",
    ]
    if target.proxy_jump:
        lines.append(f"  ProxyJump {_quote(target.proxy_jump)}")
    if target.known_hosts:
        lines.append(f"  UserKnownHostsFile {_quote(target.known_hosts)}")
    return "\n".join(lines) + "\n"


def default_key() -> str:
    """The first of :data:`DEFAULT_KEYS` that exists with its ``.pub``.

    :raises InvalidInput: none does.
    """
    for candidate in DEFAULT_KEYS:
        path = os.path.expanduser(candidate)
        if os.path.isfile(path) and os.path.isfile(path + ".pub"):
            return path
    raise InvalidInput("no SSH key in ~/.ssh (id_ed25519, id_ecdsa, id_rsa): make one with "
                       "ssh-keygen -t ed25519, or name one with --key FILE")


def public_key(identity: str) -> str:
    """The one-line public key of the private key file ``identity`` (its ``.pub``), checked.

    :raises InvalidInput: no ``.pub``, or not a public key line.
    """
    try:
        with open(identity + ".pub", encoding="utf-8") as f:
            line = f.read(16384).strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read the public key {identity}.pub: {exc}") from None
    if "\n" in line or not _KEY_LINE_RE.fullmatch(line):
        raise InvalidInput(f"{identity}.pub is not one public key line")
    return line


def authorize_key(backend: Backend, key_line: str) -> str:
    """Put ``key_line`` into the guest account's ``~/.ssh/authorized_keys`` (where serve reads it by
    default) unless it is there; ``"added"`` or ``"present"``.

    Runs as the guest account itself (the Lima or SSH login user, or this user on the local backend),
    never as root.
    """
    argv = ["sh", "-c", _AUTHORIZE]
    if backend.kind == "local":
        r = subprocess.run(argv, input=key_line.encode() + b"\n", capture_output=True, check=False)
        code, out, err = r.returncode, r.stdout, r.stderr
    else:
        code, out, err = backend.conn.capture(argv, stdin=key_line.encode() + b"\n")  # type: ignore[attr-defined]
    if code != 0:
        raise LlimaBoxError(f"cannot add the key to ~/.ssh/authorized_keys in the guest: "
                            f"{err.decode('utf-8', 'replace').strip() or code}")
    return out.decode().strip()


def serve_answers(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``llima-box serve`` answers on host:port (its SSH banner)."""
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            s.settimeout(2)
            return s.recv(64).startswith(b"SSH-2.0-llima-box")
    except OSError:
        return False


def _account(backend: Backend) -> str:
    """The guest account serve logs the user in as: the guest login user (this user on local)."""
    if backend.kind == "local":
        return pwd.getpwuid(os.getuid()).pw_name
    user = backend.target.user  # type: ignore[attr-defined]
    if not user or user == "root":
        raise InvalidInput("serve never logs root in: use a guest login user that is not root")
    return str(user)


def _key_alias(identity: str, port: int) -> str:
    """One pinned host key per guest and port: ``llima-box-serve-lima-llima-box-2242``."""
    slug = re.sub(r"[^A-Za-z0-9.-]+", "-", identity).strip("-")
    return f"llima-box-serve-{slug}-{port}"


def _proxy_jump(backend: Backend) -> str | None:
    if backend.kind != "ssh":
        return None  # local: this machine; lima: the VM's loopback is forwarded to ours
    target = backend.target  # type: ignore[attr-defined]
    return f"{target.user}@{target.host}:{target.port}" if target.user else f"{target.host}:{target.port}"


def ssh_config(
    path: str | os.PathLike[str] | None = None,
    *,
    config: Config | None = None,
    overrides: t.Mapping[str, object] | None = None,
    accept_host_key: bool = False,
    key: str | None = None,
    alias: str | None = None,
    authorize: bool = False,
) -> IdeConfig:
    """The Host block for the env of ``path`` (default: the working directory; the env is made when
    missing); with ``authorize`` the key is put into the guest account's authorized_keys.

    :raises InvalidInput: no usable key, a bad alias, or a project the guest refuses.
    """
    from llimabox import api

    if config is None:
        from llimabox.config import load_config

        config = load_config(os.environ, overrides)
    identity = os.path.abspath(os.path.expanduser(key)) if key else default_key()
    key_line = public_key(identity)
    backend = api.open_backend(config, overrides, accept_host_key, start=True)
    try:
        name = api.create_in(backend, path if path is not None else os.getcwd(), (), api.config_options(config))
        account = _account(backend)
        status = authorize_key(backend, key_line) if authorize else None
        target = IdeTarget(alias or f"llima-box-{name.removeprefix('lb-')}", "127.0.0.1", config.ide_port,
                           f"{account}+{name}", identity, _key_alias(backend.identity, config.ide_port),
                           _proxy_jump(backend))
    finally:
        backend.close()
    assert names.NAME_RE.fullmatch(name)
    answers = serve_answers(target.port) if target.proxy_jump is None else None
    return IdeConfig(host_block(target), status, answers)
