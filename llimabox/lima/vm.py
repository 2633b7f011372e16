"""The one shared Lima VM: created from the embedded yaml and started on demand, stopped, deleted."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import typing as t
from pathlib import Path

from llimabox import guest
from llimabox.errors import GuestUnreachable, InvalidInput
from llimabox.lima import render
from llimabox.lima.limactl import (
    Instance,
    Limactl,
    LimactlError,
    lima_home,
    read_ssh_config,
)

if t.TYPE_CHECKING:
    from llimabox.transport import SSHTarget

__all__ = ["VM", "VMMissing", "VMNotReady"]

log = logging.getLogger("llimabox")
RUNNING, STOPPED, BROKEN = "Running", "Stopped", "Broken"
#: The lima.yaml keys ``vm start`` sets: sizes (an existing VM takes them at a restart) and the VM type (fixed).
SIZE_KEYS, VM_TYPE = ("cpus", "memory", "disk"), "vmType"


class VMNotReady(GuestUnreachable):
    """The VM could not be created, started or made ready."""


class VMMissing(VMNotReady):
    """There is no VM yet (and this command does not create one)."""


_UNITS = "BKMGTP"


def size_bytes(size: object) -> float:
    """A Lima size (``16GiB``, ``16G``, ``512MiB``, a number of bytes) in bytes; its units are binary, as Lima's."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(?:([KMGTP])i?B?|B)?\s*", str(size), re.IGNORECASE)
    if not m:
        raise InvalidInput(f"{size!r} is not a size like 16GiB")
    return float(m.group(1)) * 1024 ** _UNITS.index((m.group(2) or "B").upper())


def _differ(have: object, want: object) -> bool:
    if have is None:
        return True
    if isinstance(want, int):
        return str(have) != str(want)
    try:
        return size_bytes(have) != size_bytes(want)
    except InvalidInput:
        return True


class VM:
    """The Lima instance ``name``, driven through limactl.

    :param config_file: a lima.yaml of the user's own instead of the embedded one (used at creation).
    :param start_args: extra ``limactl start`` options (``--timeout 20m``, …).
    :param settings: top-level lima.yaml keys to set at creation (``cpus``, ``memory``, ``disk``, ``vmType``).
    :param ide_attach: the embedded lima.yaml installs llima-box's serve in the VM (IDE attach).
    """

    def __init__(
        self,
        name: str,
        config_file: str | None = None,
        start_args: t.Sequence[str] = (),
        environ: t.Mapping[str, str] | None = None,
        out: t.Any = None,
        settings: t.Mapping[str, t.Any] | None = None,
        ide_attach: bool = False,
    ) -> None:
        self.environ = dict(environ if environ is not None else os.environ)
        self.lc = Limactl(environ=self.environ)
        self.name = name
        self.config_file = config_file
        self.start_args = list(start_args)
        self.settings = dict(settings or {})
        self.ide_attach = ide_attach
        self.out = out
        self.started = False  # this process booted it (its readiness probe just passed)
        self.created = False  # this process created it

    @property
    def dir(self) -> Path:
        return lima_home(self.environ) / self.name

    def info(self) -> Instance | None:
        return self.lc.get(self.name)

    def ensure_running(self) -> Instance:
        """The running instance: created when missing, started when stopped.

        Concurrent llima-box processes take turns (a lock file in the state dir): one creates or
        starts the VM, the others wait for it and then find it running.

        :raises VMNotReady: broken, in a transitional state, or failed to start.
        """
        inst = self.info()
        if inst is not None and inst.status == RUNNING and self._ssh_config(inst).exists():
            return inst
        with self._lock():
            return self._ensure_running()

    def running(self) -> Instance:
        """The instance when it is running; never creates or starts it.

        :raises VMNotReady: missing, stopped or in another state (naming the fix).
        """
        inst = self.info()
        if inst is None:
            raise VMMissing(f"there is no Lima VM {self.name} yet; create it: llima-box vm start")
        if inst.status == STOPPED:
            raise VMNotReady(f"the Lima VM {self.name} is Stopped; start it: llima-box vm start")
        if inst.status != RUNNING:
            raise self.bad_status(inst)
        return inst

    @contextlib.contextmanager
    def _lock(self) -> t.Iterator[None]:
        import fcntl

        from llimabox import paths

        state = paths.state_dir(self.environ)
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(state / f"lima-{self.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._say(f"waiting while another llima-box process starts the Lima VM {self.name}")
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @staticmethod
    def _ssh_config(inst: Instance) -> Path:
        return Path(inst.ssh_config_file or Path(inst.dir) / "ssh.config")

    def _ensure_running(self) -> Instance:
        inst = self.info()
        if inst is None:
            self.create()
            inst = self.info()
        if inst is None:
            raise VMNotReady(f"limactl created the Lima VM {self.name} but does not list it")
        if inst.status == RUNNING:
            return inst
        if inst.status == STOPPED:
            self.start()
            inst = self.info()
            if inst is not None and inst.status == RUNNING:
                return inst
            raise VMNotReady(f"the Lima VM {self.name} did not stay running; see: llima-box vm logs")
        raise self.bad_status(inst)

    def bad_status(self, inst: Instance) -> VMNotReady:
        why = f" ({inst.message})" if inst.message else ""
        if inst.status == BROKEN:
            return VMNotReady(
                f"the Lima VM {self.name} is Broken{why}; run: llima-box vm stop --force (then llima-box doctor)"
            )
        return VMNotReady(
            f"the Lima VM {self.name} is {inst.status or 'in an unknown state'}{why}; "
            "wait for it, or run: llima-box vm stop --force"
        )

    def template(self) -> str:
        """The lima.yaml to create the VM from: the user's or the embedded one, with ``settings`` set."""
        if self.config_file:
            try:
                text = Path(os.path.expanduser(self.config_file)).read_text(encoding="utf-8")
            except OSError as exc:
                raise InvalidInput(f"cannot read the Lima config {self.config_file}: {exc.strerror}") from exc
        else:
            text = render.render(self.environ.get("HOME") or os.path.expanduser("~"), ide_attach=self.ide_attach)
        return render.with_top_level(text, self.settings)

    def instance_yaml(self) -> str:
        """The instance's own lima.yaml (``$LIMA_HOME/NAME/lima.yaml``); empty when unreadable."""
        try:
            return (self.dir / "lima.yaml").read_text(encoding="utf-8")
        except OSError:
            return ""

    def changed_sizes(self) -> dict[str, t.Any]:
        """The sizes in ``settings`` that differ from the instance's lima.yaml.

        :raises InvalidInput: the disk would shrink (Lima only grows a disk).
        """
        have = render.top_level(self.instance_yaml(), SIZE_KEYS)
        changed = {k: v for k, v in self.settings.items() if k in SIZE_KEYS and _differ(have.get(k), v)}
        if "disk" in changed and "disk" in have and size_bytes(changed["disk"]) < size_bytes(have["disk"]):
            raise InvalidInput(
                f"the disk of the Lima VM {self.name} cannot shrink from {have['disk']} to {changed['disk']}; "
                "to recreate it: llima-box vm delete, then llima-box vm start --disk " + str(changed["disk"])
            )
        return changed

    def apply_sizes(self, sizes: t.Mapping[str, t.Any]) -> None:
        """Stop the VM when it runs and write ``sizes`` into its lima.yaml (the next start boots with them)."""
        inst = self.info()
        if inst is not None and inst.status == RUNNING:
            self._say(f"stopping the Lima VM {self.name} to change its sizes")
            self.stop()
        (self.dir / "lima.yaml").write_text(render.with_top_level(self.instance_yaml(), sizes), encoding="utf-8")

    def create(self) -> None:
        """Create the instance (Stopped) from the embedded yaml or the user's."""
        text = self.template()
        self._say(f"creating the Lima VM {self.name}")
        with tempfile.TemporaryDirectory(prefix="llima-box-") as tmp:
            path = Path(tmp) / f"{self.name}.yaml"
            path.write_text(text, encoding="utf-8")
            try:
                self.lc.create(self.name, path)
            except LimactlError as exc:
                raise VMNotReady(f"cannot create the Lima VM {self.name}: {exc}") from exc
        self.created = True

    def refresh_template(self) -> None:
        """Rewrite a stopped instance's embedded yaml when it carries older guest scripts."""
        path = self.dir / "lima.yaml"
        try:
            have = render.rendered_version(path.read_text(encoding="utf-8"))
        except OSError:
            return
        if have is not None and have != guest.packaged_version() and not self.config_file:
            self._say(f"updating the VM's lima.yaml to guest scripts version {guest.packaged_version()}")
            kept = render.top_level(self.instance_yaml(), (*SIZE_KEYS, VM_TYPE))  # what it was made or resized with
            path.write_text(render.with_top_level(self.template(), kept), encoding="utf-8")

    def start(self) -> None:
        """``limactl start`` with progress; on failure show the log tail and raise."""
        from llimabox.lima.progress import run_with_progress

        self.refresh_template()
        argv = self.lc.start_argv(self.name, self.start_args)
        try:
            code, tail = run_with_progress(argv, f"Lima VM {self.name}", self.environ, out=self.out)
        except FileNotFoundError as exc:
            raise VMNotReady("limactl is not on PATH: install Lima (macOS: brew install lima)") from exc
        if code != 0:
            self._show_tail(tail)
            last = next((m for m in reversed(tail) if m), f"exit status {code}")
            raise VMNotReady(
                f"the Lima VM {self.name} did not become ready: {last}; "
                f"logs: llima-box vm logs; retry: llima-box vm start"
            )
        self.started = True

    def stop(self, force: bool = False) -> None:
        self.lc.stop(self.name, force=force)

    def delete(self) -> None:
        self.lc.delete(self.name, force=True)

    def logs(self) -> list[Path]:
        """The instance's log files, most relevant first."""
        names = ["ha.stderr.log", "serial.log", "ha.stdout.log", "serialp.log", "serialv.log"]
        return [self.dir / n for n in names if (self.dir / n).is_file()]

    def ssh_target(self, inst: Instance, connect_timeout: float) -> SSHTarget:
        """How to log in, from the instance's ssh.config (Lima's own ssh setup, trusted as Lima trusts it)."""
        from llimabox.transport import SSHTarget

        path = self._ssh_config(inst)
        try:
            cfg = read_ssh_config(path)
        except OSError as exc:
            raise VMNotReady(f"cannot read the Lima VM's ssh config {path}: {exc.strerror}") from exc
        port = int(cfg["port"]) if cfg.get("port", "").isdigit() else inst.ssh_local_port
        if not port:
            raise VMNotReady(f"the Lima VM {self.name} has no SSH port yet; retry: llima-box vm start")
        key = cfg.get("identityfile") or str(lima_home(self.environ) / "_config" / "user")
        strict = cfg.get("stricthostkeychecking", "yes").lower() in ("yes", "ask")
        return SSHTarget(
            host=cfg.get("hostname") or "127.0.0.1",
            port=port,
            user=cfg.get("user") or inst.user,
            key_filename=os.path.expanduser(key),
            known_hosts=os.path.expanduser(cfg.get("userknownhostsfile") or "~/.ssh/known_hosts"),
            accept_new=not strict,
            connect_timeout=connect_timeout,
        )

    def _show_tail(self, tail: list[str]) -> None:
        out = self.out if self.out is not None else sys.stderr
        logs = self.logs()
        lines = [f"llima-box: limactl: {m}" for m in tail[-10:]]
        if logs:
            text = logs[0].read_text(encoding="utf-8", errors="replace").splitlines()[-10:]
            lines += [f"llima-box: {logs[0]}: {ln}" for ln in text]
        out.write("\n".join(lines) + "\n")
        out.flush()

    def _say(self, msg: str) -> None:
        out = self.out if self.out is not None else sys.stderr
        out.write(f"llima-box: {msg}\n")
        out.flush()
