"""``llima-box doctor``: check everything llima-box depends on; each failed check names its fix."""

from __future__ import annotations

import dataclasses
import os
import shlex
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
GUEST_CONF = "/etc/llima-box/guest.conf"


@dataclasses.dataclass
class Check:
    """One check: ``ok`` is True, False, or None when it could not run (informational: doctor still passes)."""

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
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False)
    except OSError as exc:
        return 127, b"", f"{argv[0]}: {exc.strerror}".encode()
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


def _ssh_fix(backend: Backend) -> str:
    if backend.kind == "lima":
        return "llima-box vm start"
    target = getattr(backend, "target", None)
    if target is None:
        return "check the host"
    key = ["-i", target.key_filename] if target.key_filename else []
    ssh = shlex.join(["ssh", "-p", str(target.port), *key, f"{target.user}@{target.host}", "true"])
    return f"{ssh} (what it says is wrong), or --accept-host-key for a host key not yet pinned"


def _guest_checks(backend: Backend) -> list[Check]:
    fix = backend.provision_hint
    try:
        code, out, err = _capture(backend, [f"{guest.GUEST_PREFIX}/version"])
    except LlimaBoxError as exc:
        return [Check("ssh", False, str(exc), _ssh_fix(backend))]
    checks = [Check("ssh", True, f"guest {backend.identity} reachable")]
    want = guest.packaged_version()
    have = guest.parse_version(out) if code == 0 else None
    if have is None:
        checks.append(Check("guest_scripts", False, f"not installed ({_text(err) or 'no version'})", fix))
    elif have < want:
        checks.append(Check("guest_scripts", False, f"version {have}, older than {want}", fix))
    else:
        checks.append(Check("guest_scripts", True, f"version {have}"))
    conf = _read_guest_conf(backend)
    checks.append(_guest_conf_check(conf, fix))
    full_sudo = _has_full_sudo(backend)
    checks.append(_sudoers_check(backend, conf, full_sudo, fix))
    checks.append(_namespace_check(backend, full_sudo))
    checks.append(_network_check(backend, fix))
    if all(c.ok for c in checks if c.name in ("guest_scripts", "guest_conf", "sudoers")):
        checks.append(_isolation_check(backend))
    return checks


def _logs_in_as_root(backend: Backend) -> bool:
    if backend.kind == "local":
        return os.geteuid() == 0
    return getattr(getattr(backend, "target", None), "user", None) == "root"


def _has_full_sudo(backend: Backend) -> bool:
    """Whether the login user is root or may run any command as root (not only the guest verbs)."""
    return _logs_in_as_root(backend) or _capture(backend, ["sudo", "-n", "true"])[0] == 0


def _sudo(backend: Backend, argv: list[str]) -> tuple[int, bytes, bytes]:
    """``argv`` as root in the guest: through ``sudo -n`` unless we log in as root."""
    return _capture(backend, argv if _logs_in_as_root(backend) else ["sudo", "-n", *argv])


#: what provisioning writes to guest.conf (provision/steps/30-config.sh), and the values it accepts
_CONF_KEYS = ("USER", "GROUP", "ROOTS", "PROJECT_MODE")
_PROJECT_MODES = ("auto", "idmap", "mapped", "shared-uid")


def _read_guest_conf(backend: Backend) -> dict[str, str] | None:
    """``GUEST_CONF`` as KEY → value (the last line of a key wins, as the guest scripts read it); None if unreadable."""
    code, out, _ = _capture(backend, ["cat", GUEST_CONF])
    if code != 0:
        return None
    lines = out.decode("utf-8", "replace").splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def _guest_conf_check(conf: dict[str, str] | None, fix: str) -> Check:
    if conf is None:
        return Check("guest_conf", False, f"{GUEST_CONF} is missing or unreadable", fix)
    missing = [key for key in _CONF_KEYS if key not in conf]
    if missing:
        return Check("guest_conf", False, f"{GUEST_CONF} lacks {', '.join(missing)}", fix)
    if not conf["ROOTS"].strip(":"):
        return Check("guest_conf", False, f"{GUEST_CONF} names no project roots (ROOTS)", fix)
    if conf["PROJECT_MODE"] not in _PROJECT_MODES:
        return Check("guest_conf", False, f"{GUEST_CONF}: unknown PROJECT_MODE {conf['PROJECT_MODE']!r}", fix)
    return Check("guest_conf", True, f"projects under {conf['ROOTS']}, project mode {conf['PROJECT_MODE']}")


def expected_sudoers(user: str, group: str) -> str | None:
    """The rule provisioning writes for ``user`` and ``group`` (provision/steps/40-sudoers.sh); None: no file."""
    if not user and not group:
        return None
    verbs = ", ".join(f"{guest.GUEST_PREFIX}/{verb}" for verb in guest.VERBS)
    return (
        "# Installed by llima-box provisioning; changes are overwritten.\n"
        f"Cmnd_Alias LLIMA_BOX = {verbs}\n"
        "Defaults!LLIMA_BOX use_pty\n"
        f"{f'{user} ALL=(root) NOPASSWD: LLIMA_BOX' if user else ''}\n"
        f"{f'%{group} ALL=(root) NOPASSWD: LLIMA_BOX' if group else ''}\n"
    )


def _sudoers_check(backend: Backend, conf: dict[str, str] | None, full_sudo: bool, fix: str) -> Check:
    if full_sudo:
        return _sudoers_content_check(backend, conf, fix)
    return _sudoers_rights_check(backend, fix)


def _sudoers_content_check(backend: Backend, conf: dict[str, str] | None, fix: str) -> Check:
    """With root rights: the file is what provisioning writes for guest.conf's USER and GROUP, and valid."""
    if conf is None:
        return Check("sudoers", False, f"cannot tell the rule {SUDOERS} should hold without {GUEST_CONF}", fix)
    want = expected_sudoers(conf.get("USER", ""), conf.get("GROUP", ""))
    code, out, err = _sudo(backend, ["cat", SUDOERS])
    if want is None:
        if code == 0:
            return Check("sudoers", False, f"{SUDOERS} exists, but provisioning names no user or group", fix)
        return Check("sudoers", True, "no sudoers rule: no user or group was provisioned")
    if code != 0:
        return Check("sudoers", False, f"{SUDOERS}: {_text(err) or 'missing'}", fix)
    if out.decode("utf-8", "replace") != want:
        return Check("sudoers", False, f"{SUDOERS} differs from the rule provisioning writes", fix)
    code, _, err = _sudo(backend, ["visudo", "-cqf", SUDOERS])
    if code != 0:
        return Check("sudoers", False, f"{SUDOERS}: {_text(err) or 'invalid'}", fix)
    return Check("sudoers", True, f"{SUDOERS} is the rule provisioning writes")


#: prints each guest verb sudo does not let the login user run (one not installed is guest_scripts' failure)
_SUDO_RIGHTS_PROBE = 'for v; do [ ! -e "$v" ] || sudo -n -l "$v" >/dev/null 2>&1 || echo "${v##*/}"; done'


def _sudoers_rights_check(backend: Backend, fix: str) -> Check:
    """Without root rights: sudo lets the login user run each guest verb (what the rule is for)."""
    verbs = [f"{guest.GUEST_PREFIX}/{verb}" for verb in guest.VERBS]
    code, out, err = _capture(backend, ["sh", "-c", _SUDO_RIGHTS_PROBE, "probe", *verbs])
    if code != 0:
        return Check("sudoers", False, f"cannot ask sudo about the guest verbs: {_text(err) or 'the probe failed'}",
                     fix)
    refused = out.decode("utf-8", "replace").split()
    if refused:
        return Check("sudoers", False, f"sudo refuses the login user the guest verbs {', '.join(refused)}", fix)
    return Check("sudoers", True, "sudo lets the login user run every guest verb")


_NAMESPACES = ("mnt", "pid", "ipc", "uts")


def _namespace_check(backend: Backend, full_sudo: bool) -> Check:
    if not full_sudo:
        return _kernel_namespace_check(backend)
    code, _, err = _sudo(backend, ["unshare", "--mount", "--pid", "--ipc", "--uts", "--fork", "true"])
    if code == 0:
        return Check("namespaces", True, "mount, PID, IPC and UTS namespaces can be created")
    return Check("namespaces", False, f"cannot create namespaces: {_text(err)}",
                 "use a guest kernel with namespaces (Ubuntu 24.04 has them)")


def _kernel_namespace_check(backend: Backend) -> Check:
    """Without root rights (only the guest verbs create them): the kernel has the namespaces."""
    code, _, err = _capture(backend, ["ls", *(f"/proc/self/ns/{ns}" for ns in _NAMESPACES)])
    if code == 0:
        return Check("namespaces", True, "the kernel has mount, PID, IPC and UTS namespaces")
    return Check("namespaces", False, f"the kernel lacks namespaces: {_text(err)}",
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
        return Check("isolation", False, f"env {target.name}: {exc}",
                     f"llima-box verify {shlex.quote(target.project)}")
    failed = [r["check"] for r in results if not r["ok"]]
    if failed:
        return Check("isolation", False, f"env {target.name}: {', '.join(failed)} do not hold",
                     f"llima-box verify {shlex.quote(target.project)} (each check's detail)")
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
        db = str(paths.db_path())
        fix = f"mv {shlex.quote(db)} {shlex.quote(db + '.old')} (llima-box rebuilds it)"
        return Check("state_db", False, str(exc), fix)
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
            checks.append(Check("ssh", False, str(exc), "llima-box --backend ssh --host USER@HOST[:PORT] doctor"))
        else:
            backend.auto_upgrade = False  # type: ignore[attr-defined] # diagnose, never change the guest
            backend.start_on_demand = False
            try:
                checks += _guest_checks(backend)
            finally:
                backend.close()
    checks.append(_state_check())
    return checks
