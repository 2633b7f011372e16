"""The ``lima`` backend: the ssh backend on the shared Lima VM, which it creates and starts on demand."""

from __future__ import annotations

import logging
import os
import typing as t

from llimabox import guest
from llimabox.backends.ssh import SSHBackend, _remote_conf

if t.TYPE_CHECKING:
    from llimabox.lima.vm import VM
    from llimabox.transport import Connection, SSHTarget

__all__ = ["LimaBackend"]

log = logging.getLogger("llimabox")


class LimaBackend(SSHBackend):
    """Address, port, user and key come from limactl; the host home is mounted at the same path.

    :param packages: ``vm_packages``, and ``setup``: ``vm_setup``, applied when this process creates the VM.
    """

    kind = "lima"
    local_paths = True

    def __init__(
        self, vm: VM, sudo: bool = True, connect_timeout: float = 10.0,
        packages: t.Sequence[str] = (), setup: str | None = None,
    ) -> None:  # fmt: skip
        self.vm = vm
        self.vm_packages = tuple(packages)
        self.vm_setup = setup
        self._sudo = sudo
        self._timeout = connect_timeout
        self._target: SSHTarget | None = None
        self._conn: Connection | None = None
        self.auto_upgrade = True
        self.identity = f"lima:{vm.name}"
        self.provision_hint = "llima-box vm provision"

    @property
    def target(self) -> SSHTarget:  # type: ignore[override]
        """The VM's SSH endpoint; the VM is created/started first when it must be."""
        if self._target is None:
            inst = self.vm.ensure_running() if self.start_on_demand else self.vm.running()
            self._target = self.vm.ssh_target(inst, self._timeout)
        return self._target

    def ready(self) -> bool:
        from llimabox.lima.vm import RUNNING

        inst = self.vm.info()
        return inst is not None and inst.status == RUNNING

    @property
    def sudo(self) -> bool:  # type: ignore[override]
        return self._sudo and self.target.user != "root"

    @property
    def conn(self) -> Connection:
        """The SSH connection; on first use the guest side is upgraded when older than ours, and a VM this
        process has just created gets the configured packages and setup script."""
        if self._conn is None:
            from llimabox.transport import Connection

            self._conn = Connection(self.target)
            if self.auto_upgrade and self.vm.created and (self.vm_packages or self.vm_setup):
                self.provision(packages=self.vm_packages, setup=self.vm_setup)
            elif self.auto_upgrade and not self.vm.started:  # a fresh boot just passed the probe
                self.auto_upgrade = False
                self._upgrade_if_old()
        return self._conn

    def _upgrade_if_old(self) -> None:
        code, out, _ = self._conn.capture([f"{guest.GUEST_PREFIX}/version"])  # type: ignore[union-attr]
        have = guest.parse_version(out) if code == 0 else None
        want = guest.packaged_version()
        if have is None or have < want:
            log.info("guest side version %s is older than %s: upgrading", have, want)
            self.provision()

    def provision(
        self,
        user: str | None = None,
        roots: str | None = None,
        group: str | None = None,
        packages: t.Sequence[str] | None = None,
        setup: str | None = None,
    ) -> str:
        from llimabox import tools

        packages, setup = tools.checked(packages, setup)  # before the VM boots
        self.auto_upgrade = False
        roots = roots or _remote_conf(self).get("ROOTS") or self.vm.environ.get("HOME") or os.path.expanduser("~")
        return super().provision(user=user, roots=roots, group=group, packages=packages, setup=setup)
