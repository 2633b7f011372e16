"""Backends: where the guest is and how to reach it."""

from __future__ import annotations

import os
import shutil
import sys
import typing as t

from llimabox.backends.base import Backend
from llimabox.errors import InvalidInput

if t.TYPE_CHECKING:
    from llimabox.config import Config
    from llimabox.lima.vm import VM

__all__ = ["Backend", "choose_kind", "get_backend", "lima_backend", "lima_backend_of"]


def choose_kind(config: Config) -> str:
    """Which backend a config means: explicit, else ssh when a host is set, else lima/local by what is here."""
    if config.backend:
        return str(config.backend)
    if config.host:
        return "ssh"
    if shutil.which("limactl"):
        return "lima"
    if sys.platform.startswith("linux"):
        return "local"
    raise InvalidInput(
        "limactl is not on PATH: install Lima (macOS: brew install lima), or use --backend ssh --host user@host"
    )


def get_backend(config: Config, accept_host_key: bool = False) -> Backend:
    """Return the backend a config asks for (nothing is connected yet).

    :raises InvalidInput: unknown backend, or missing settings for it.
    """
    kind = choose_kind(config)
    if kind == "lima":
        return lima_backend(config)
    if kind == "local":
        from llimabox.backends.local import LocalBackend

        return LocalBackend(sudo=bool(getattr(config, "sudo", True)))
    if kind == "ssh":
        return _ssh_backend(config, accept_host_key)
    raise InvalidInput(f"unknown backend {kind!r} (want lima, local or ssh)")


def _ssh_backend(config: Config, accept_host_key: bool) -> Backend:
    from llimabox.backends.ssh import SSHBackend
    from llimabox.transport import SSHTarget, parse_host

    if not config.host:
        raise InvalidInput("the ssh backend needs a host: --host user@host[:port]")
    import getpass

    user, host, port = parse_host(str(config.host), default_user=getpass.getuser())
    identity = os.path.expanduser(str(config.identity)) if config.identity else None
    target = SSHTarget(
        host=host,
        port=port,
        user=user,
        key_filename=identity,
        known_hosts=os.path.expanduser(str(config.known_hosts)),
        accept_new=accept_host_key,
        connect_timeout=float(config.connect_timeout),
    )
    return SSHBackend(target, sudo=bool(getattr(config, "sudo", True)))


def lima_backend(config: Config, start_args: t.Sequence[str] = (), config_file: str | None = None) -> Backend:
    """The Lima VM of ``config`` (``vm_name``, ``lima_config``), started on demand."""
    from llimabox.lima.vm import VM

    vm = VM(str(config.vm_name), config_file=config_file or config.lima_config, start_args=start_args,
            ide_attach=bool(config.ide_attach))
    return lima_backend_of(vm, config)


def lima_backend_of(vm: VM, config: Config) -> Backend:
    """The backend of the Lima VM ``vm`` with the settings of ``config`` (``vm_packages`` and ``vm_setup``
    are applied when this process creates the VM)."""
    from llimabox.backends.lima import LimaBackend

    return LimaBackend(vm, sudo=bool(config.sudo), connect_timeout=float(config.connect_timeout),
                       packages=config.vm_packages, setup=config.vm_setup)
