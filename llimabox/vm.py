"""``llima-box vm …``: the library side of managing the shared Lima VM."""

from __future__ import annotations

import os
import typing as t

from llimabox.errors import EnvNotFound, InvalidInput

if t.TYPE_CHECKING:
    from llimabox.config import Config
    from llimabox.lima.vm import VM

__all__ = ["delete", "logs", "open_vm", "provision", "start", "status", "stop"]

Overrides = t.Mapping[str, object]


def _config(overrides: Overrides | None) -> Config:
    from llimabox.backends import choose_kind
    from llimabox.config import load_config

    config = load_config(os.environ, overrides)
    kind = choose_kind(config)
    if kind != "lima":
        raise InvalidInput(f"`vm` manages the Lima VM, but the backend is {kind} (use --backend lima)")
    return config


def open_vm(
    overrides: Overrides | None = None, config_file: str | None = None, start_args: t.Sequence[str] = ()
) -> VM:
    """The configured VM (``vm_name``), with ``config_file`` (else the ``lima_config`` key) for creation."""
    from llimabox.lima.vm import VM

    config = _config(overrides)
    return VM(str(config.vm_name), config_file=config_file or config.lima_config, start_args=start_args)


def _existing(vm: VM) -> t.Any:
    inst = vm.info()
    if inst is None:
        raise EnvNotFound(f"there is no Lima VM {vm.name} (llima-box vm start creates it)")
    return inst


def start(vm: VM) -> str:
    """Create (when missing) and start the VM; return a summary line."""
    was = vm.info()
    inst = vm.ensure_running()
    if was is not None and was.status == "Running":
        return f"the Lima VM {inst.name} is already running"
    return f"the Lima VM {inst.name} is running"


def stop(vm: VM, force: bool = False) -> str:
    inst = _existing(vm)
    if inst.status == "Stopped" and not force:
        return f"the Lima VM {vm.name} is already stopped"
    if inst.status not in ("Running", "Stopped") and not force:
        raise vm.bad_status(inst)
    vm.stop(force=force)
    return f"the Lima VM {vm.name} is stopped"


def delete(vm: VM) -> str:
    """Delete the VM, and the state database's records of the envs it held."""
    from llimabox import paths
    from llimabox.store import Store

    _existing(vm)
    vm.delete()
    store = Store(paths.db_path())
    try:
        store.delete_many(rec.name for rec in store.all(guest=f"lima:{vm.name}"))
    finally:
        store.close()
    return f"the Lima VM {vm.name} is deleted, with every env in it"


def status(vm: VM) -> dict[str, t.Any]:
    inst = vm.info()
    if inst is None:
        return {"name": vm.name, "status": "missing", "dir": str(vm.dir)}
    return {
        "name": inst.name,
        "status": inst.status,
        "dir": inst.dir,
        "message": inst.message,
        "ssh_local_port": inst.ssh_local_port,
        "ssh_config_file": inst.ssh_config_file,
        "user": inst.user,
        "lima_version": inst.lima_version,
    }


def logs(vm: VM, lines: int = 50) -> list[tuple[str, list[str]]]:
    """The last ``lines`` lines of each of the VM's log files."""
    _existing(vm)
    return [(str(p), p.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]) for p in vm.logs()]


def provision(overrides: Overrides | None = None) -> str:
    """Install or upgrade the guest side in the VM now (starting it first if it must)."""
    from llimabox.backends import lima_backend

    backend = lima_backend(_config(overrides))
    try:
        return backend.provision()
    finally:
        backend.close()
