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
    overrides: Overrides | None = None,
    config_file: str | None = None,
    start_args: t.Sequence[str] = (),
    settings: t.Mapping[str, t.Any] | None = None,
) -> VM:
    """The configured VM (``vm_name``), with ``config_file`` (else the ``lima_config`` key) and ``settings``
    (lima.yaml keys: ``cpus``, ``memory``, ``disk``, ``vmType``) for creation."""
    from llimabox.lima.vm import VM

    config = _config(overrides)
    return VM(str(config.vm_name), config_file=config_file or config.lima_config, start_args=start_args,
              settings=settings, ide_attach=bool(config.ide_attach))


def _existing(vm: VM) -> t.Any:
    inst = vm.info()
    if inst is None:
        raise EnvNotFound(f"there is no Lima VM {vm.name} (llima-box vm start creates it)")
    return inst


def start(
    vm: VM, yes: bool = False, ask: t.Callable[[str], bool] | None = None, config_given: bool = False,
    overrides: Overrides | None = None,
) -> str:
    """Create (when missing) and start the VM; return a summary line.

    An existing VM takes new sizes at a restart: with ``yes``, or when ``ask`` (a terminal's prompt) agrees.
    A VM this call creates gets ``vm_packages`` and ``vm_setup`` (checked before it is created), with progress.

    :raises InvalidInput: an existing VM would need a restart (refused), ``--config``/the VM type cannot apply,
        or a package name or the setup script is not acceptable.
    """
    was = vm.info()
    config = _config(overrides)
    if was is None:  # it will be created: its tools are checked first
        from llimabox import tools

        tools.checked(config.vm_packages, config.vm_setup)
    if was is not None and was.status in ("Running", "Stopped"):  # else ensure_running says what is wrong
        _check_fixed(vm, was.vm_type, config_given)
        sizes = vm.changed_sizes()
        if sizes and _agreed(vm, sizes, yes, ask):
            vm.apply_sizes(sizes)
            was = None
    inst = vm.ensure_running()
    if vm.created and (config.vm_packages or config.vm_setup):
        _apply_tools(vm, config)
    if was is not None and was.status == "Running":
        return f"the Lima VM {inst.name} is already running"
    return f"the Lima VM {inst.name} is running"


def _apply_tools(vm: VM, config: Config) -> None:
    """Provision the VM just created with the configured packages and setup script."""
    from llimabox.backends import lima_backend_of

    backend = lima_backend_of(vm, config)
    try:
        backend.connect()  # a VM this process created: its first connection applies them
    finally:
        backend.close()


def _check_fixed(vm: VM, vm_type: str | None, config_given: bool) -> None:
    from llimabox.lima.vm import VM_TYPE

    recreate = f"to recreate it: llima-box vm delete, then llima-box vm start {_flags(vm.settings)}".rstrip()
    want = vm.settings.get(VM_TYPE)
    if want and vm_type and want != vm_type:
        raise InvalidInput(f"the Lima VM {vm.name} exists with VM type {vm_type}; {recreate}")
    if config_given and vm.template() != vm.instance_yaml():
        import shlex

        raise InvalidInput(f"the Lima VM {vm.name} exists: --config applies when it is created; "
                           f"{recreate} --config {shlex.quote(str(vm.config_file))}")


def _agreed(vm: VM, sizes: t.Mapping[str, t.Any], yes: bool, ask: t.Callable[[str], bool] | None) -> bool:
    if yes:
        return True
    change = ", ".join(f"{k} {v}" for k, v in sizes.items())
    if ask is not None:
        if ask(f"Restart the Lima VM {vm.name} with {change}?"):
            return True
        raise InvalidInput(f"the Lima VM {vm.name} keeps its sizes")
    raise InvalidInput(f"the Lima VM {vm.name} exists; to restart it with {change}, run: "
                       f"llima-box vm start {_flags(sizes)} --yes")


def _flags(settings: t.Mapping[str, t.Any]) -> str:
    """``settings`` as the ``vm start`` options that give them."""
    import shlex

    flag = {"cpus": "--cpus", "memory": "--memory", "disk": "--disk", "vmType": "--vm-type"}
    return " ".join(f"{flag[k]} {shlex.quote(str(v))}" for k, v in settings.items() if k in flag)


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
    """Install or upgrade the guest side in the VM now (starting it first if it must), with ``vm_packages``
    (recorded in the guest, installed again at every boot when missing) and ``vm_setup`` (run this time).

    :raises InvalidInput: a package name or the setup script is not acceptable (checked before the VM starts).
    """
    from llimabox import tools
    from llimabox.backends import lima_backend

    config = _config(overrides)
    packages, setup = tools.checked(config.vm_packages, config.vm_setup)
    backend = lima_backend(config)
    backend.start_on_demand = True
    try:
        return backend.provision(packages=packages, setup=setup)
    finally:
        backend.close()
