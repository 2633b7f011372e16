"""``llima-box doctor``: check everything llima-box depends on; each failed check names its fix."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import typing as t

from llimabox import guest
from llimabox.errors import LlimaBoxError

if t.TYPE_CHECKING:
    from llimabox.backends.base import Backend
    from llimabox.config import Config

__all__ = ["Check", "run_checks"]

SUDOERS = "/etc/sudoers.d/llima-box"


@dataclasses.dataclass
class Check:
    """One check: ``ok`` is True, False, or None when it could not run (counts as failed)."""

    name: str
    ok: bool | None
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, t.Any]:
        return dataclasses.asdict(self)


def _capture(backend: Backend, argv: list[str]) -> tuple[int, bytes, bytes]:
    """Run ``argv`` in the guest as the login user (over SSH, or here for the local backend)."""
    conn = getattr(backend, "conn", None)
    if conn is not None:
        return t.cast("tuple[int, bytes, bytes]", conn.capture(argv))
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def _text(data: bytes) -> str:
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _lima_checks(config: Config) -> tuple[list[Check], bool]:
    """limactl and the VM; returns the checks and whether the VM is running."""
    from llimabox.lima.limactl import Limactl
    from llimabox.lima.vm import VM

    if shutil.which("limactl") is None:
        return [Check("limactl", False, "limactl is not on PATH", "install Lima (macOS: brew install lima)")], False
    checks = []
    try:
        checks.append(Check("limactl", True, f"limactl {Limactl().version()}"))
    except LlimaBoxError as exc:
        return [Check("limactl", False, str(exc), "reinstall Lima (macOS: brew reinstall lima)")], False
    vm = VM(str(config.vm_name))
    try:
        inst = vm.info()
    except LlimaBoxError as exc:
        checks.append(Check("vm", False, str(exc), "llima-box vm logs"))
        return checks, False
    if inst is None:
        checks.append(Check("vm", False, f"the Lima VM {vm.name} does not exist", "llima-box vm start"))
    elif inst.status == "Running":
        checks.append(Check("vm", True, f"the Lima VM {vm.name} is Running"))
        return checks, True
    elif inst.status == "Stopped":
        checks.append(Check("vm", False, f"the Lima VM {vm.name} is Stopped", "llima-box vm start"))
    else:
        checks.append(Check("vm", False, str(vm.bad_status(inst)), "llima-box vm stop --force; llima-box vm start"))
    return checks, False


def _guest_checks(backend: Backend) -> list[Check]:
    fix = backend.provision_hint if backend.kind != "local" else f"sudo {backend.provision_hint}"
    try:
        code, out, err = _capture(backend, [f"{guest.GUEST_PREFIX}/version"])
    except LlimaBoxError as exc:
        return [Check("ssh", False, str(exc), "llima-box vm start" if backend.kind == "lima" else None)]
    checks = [Check("ssh", True, f"guest {backend.identity} reachable")]
    want = guest.packaged_version()
    have = guest.parse_version(out) if code == 0 else None
    if have is None:
        checks.append(Check("guest_scripts", False, f"not installed ({_text(err) or 'no version'})", fix))
    elif have < want:
        checks.append(Check("guest_scripts", False, f"version {have}, older than {want}", fix))
    else:
        checks.append(Check("guest_scripts", True, f"version {have}"))
    checks.append(_sudoers_check(backend, fix))
    checks.append(_namespace_check(backend))
    checks.append(_network_check(backend, fix))
    if checks[1].ok and checks[2].ok:
        checks.append(_isolation_check(backend))
    return checks


def _sudo(backend: Backend, argv: list[str]) -> tuple[int, bytes, bytes]:
    """``argv`` as root in the guest: through ``sudo -n`` unless we log in as root."""
    as_root = backend.kind != "local" and getattr(getattr(backend, "target", None), "user", None) == "root"
    return _capture(backend, argv if as_root else ["sudo", "-n", *argv])


def _sudoers_check(backend: Backend, fix: str) -> Check:
    code, _, err = _sudo(backend, ["visudo", "-cqf", SUDOERS])
    if code == 0:
        return Check("sudoers", True, f"{SUDOERS} is valid")
    if not err.startswith(b"sudo:"):
        return Check("sudoers", False, f"{SUDOERS}: {_text(err) or 'missing or invalid'}", fix)
    code, _, err = _capture(backend, ["sudo", "-n", "-l", f"{guest.GUEST_PREFIX}/list"])
    if code == 0:
        return Check("sudoers", True, "the login user may run the guest scripts")
    return Check("sudoers", False, f"sudo refuses the guest scripts ({_text(err) or 'not allowed'})", fix)


def _namespace_check(backend: Backend) -> Check:
    code, _, err = _sudo(backend, ["unshare", "--mount", "--pid", "--ipc", "--uts", "--fork", "true"])
    if code == 0:
        return Check("namespaces", True, "mount, PID, IPC and UTS namespaces can be created")
    if err.startswith(b"sudo:"):
        return Check("namespaces", None, "cannot check without full sudo in the guest (the guest verbs will tell)")
    return Check("namespaces", False, f"cannot create namespaces: {_text(err)}",
                 "use a guest kernel with namespaces (Ubuntu 24.04 has them)")


#: what an isolated env (the default network) needs in the guest; prints a word for each thing missing
_NETWORK_PROBE = ("command -v pasta >/dev/null || echo pasta; getent passwd llima-box-net >/dev/null || echo account; "
                  "[ -c /dev/net/tun ] && [ \"$(stat -c %a /dev/net/tun)\" = 666 ] || echo tun; "
                  "command -v tinyproxy >/dev/null || echo proxy")
_NETWORK_FIXES = {
    "pasta": ("pasta is missing", "in the guest: sudo apt-get install passt"),
    "account": ("the account llima-box-net is missing", None),
    "tun": ("/dev/net/tun is not open to every user", "in the guest: sudo chmod 0666 /dev/net/tun (udev does it)"),
}


def _network_check(backend: Backend, provision: str) -> Check:
    code, out, err = _capture(backend, ["sh", "-c", _NETWORK_PROBE])
    words = _text(out).split()
    missing = [word for word in words if word in _NETWORK_FIXES]
    if code != 0 and not missing:
        return Check("network", None, f"cannot check: {_text(err) or 'the probe failed'}")
    if not missing:
        detail = "isolated envs can start (pasta, /dev/net/tun, the network account)"
        if "proxy" in words:
            detail += "; envs with --allow need tinyproxy (in the guest: sudo apt-get install tinyproxy-bin)"
        return Check("network", True, detail)
    fixes = [_NETWORK_FIXES[w][1] or provision for w in missing]
    return Check("network", False, "isolated envs cannot start: " + "; ".join(_NETWORK_FIXES[w][0] for w in missing),
                 "; ".join(dict.fromkeys(fixes)) + " (or create envs with --network offline or shared)")


def _isolation_check(backend: Backend) -> Check:
    """``llima-box verify`` in the env of the working directory, when it has one (doctor makes none)."""
    from llimabox import api

    try:
        target = api.shell_target(backend, os.getcwd())
    except LlimaBoxError:
        target = None
    if target is None or not target.known:
        return Check("isolation", True, "no env for this directory to verify (llima-box verify PATH checks one)")
    try:
        results = api.verify_in(backend, target)
    except LlimaBoxError as exc:
        return Check("isolation", False, f"env {target.name}: {exc}", f"llima-box verify {target.project}")
    failed = [r["check"] for r in results if not r["ok"]]
    if failed:
        return Check("isolation", False, f"env {target.name}: {', '.join(failed)} do not hold",
                     f"llima-box verify {target.project} (each check's detail)")
    return Check("isolation", True, f"env {target.name}: all {len(results)} checks of llima-box verify hold")


def _state_check() -> Check:
    from llimabox import paths
    from llimabox.fastindex import HEAD_REVISION
    from llimabox.store import Store

    try:
        store = Store(paths.db_path())
        try:
            rev = store.schema_revision()
        finally:
            store.close()
    except LlimaBoxError as exc:
        return Check("state_db", False, str(exc), f"move {paths.db_path()} away (llima-box rebuilds it)")
    if rev != HEAD_REVISION:
        return Check("state_db", False, f"schema {rev}, expected {HEAD_REVISION}", "upgrade llima-box")
    return Check("state_db", True, f"{paths.db_path()} at schema {rev}")


def run_checks(overrides: t.Mapping[str, object] | None = None, accept_host_key: bool = False) -> list[Check]:
    """Every check, in order; the VM is never started by a check."""
    from llimabox.backends import choose_kind, get_backend
    from llimabox.config import load_config

    config = load_config(os.environ, overrides)
    checks: list[Check] = []
    reachable = True
    try:
        kind = choose_kind(config)
    except LlimaBoxError as exc:
        return [Check("backend", False, str(exc), "install Lima (macOS: brew install lima)"), _state_check()]
    checks.append(Check("backend", True, kind))
    if kind == "lima":
        lima, reachable = _lima_checks(config)
        checks += lima
    if reachable:
        try:
            backend = get_backend(config, accept_host_key=accept_host_key)
        except LlimaBoxError as exc:
            checks.append(Check("ssh", False, str(exc)))
        else:
            backend.auto_upgrade = False  # type: ignore[attr-defined] # diagnose, never change the guest
            backend.start_on_demand = False
            try:
                checks += _guest_checks(backend)
            finally:
                backend.close()
    checks.append(_state_check())
    return checks
