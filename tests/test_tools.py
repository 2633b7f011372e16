"""Tools in the guest: ``vm_packages`` and ``vm_setup`` applied by provisioning, per-env user installs.

Packages come from the Debian mirror the test machine's apt is configured with (as the real-VM tier's
image does); ``hello`` is small and not installed on the test machines.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import tarfile
import typing as t
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.guest import guest_argv
from tests.lima_env import FakeLima, fake_lima

PACKAGE = "hello"
RECORD = "/etc/llima-box/packages"
APT_HISTORY = "/var/log/apt/history.log"


def _no_man_db(run: t.Callable[[list[str]], subprocess.CompletedProcess]) -> None:
    """man-db's trigger rebuilds its cache at every install (seconds): not what these tests are about."""
    r = run(["sh", "-c", "echo 'man-db man-db/auto-update boolean false' | debconf-set-selections"])
    assert r.returncode == 0, r.stderr


def _installed(run: t.Callable[[list[str]], subprocess.CompletedProcess], package: str) -> bool:
    r = run(["dpkg-query", "-W", "-f=${db:Status-Status}", package])
    return r.returncode == 0 and (r.stdout if isinstance(r.stdout, str) else r.stdout.decode()) == "installed"


def _text(out: str | bytes) -> str:
    return out if isinstance(out, str) else out.decode()


def _not_progress(stderr: str | bytes) -> list[str]:
    """The lines of stderr that are not progress (``llima-box: …``)."""
    return [ln for ln in _text(stderr).splitlines() if not ln.startswith("llima-box: ")]


# ---- vm start and vm provision: the Lima backend (fake limactl, the guest reached over SSH) ----


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLima]:
    yield from fake_lima()


def test_vm_start_installs_packages_runs_setup_and_vm_provision_skips_apt(fake: FakeLima, tmp_path: Path) -> None:
    setup = tmp_path / "my-setup.sh"
    setup.write_text('#!/bin/sh\necho "setup as $(id -u): $(command -v hello)"\necho to-stderr >&2\n'
                     "touch /var/tmp/setup-ran\n")
    env = {**fake.env, "LLIMA_BOX_VM_NAME": "tools", "LLIMA_BOX_VM_PACKAGES": PACKAGE,
           "LLIMA_BOX_VM_SETUP": str(setup)}

    def lb(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*fake.lb_argv, "vm", *args], env=env, capture_output=True, text=True, timeout=300,
                              check=False)

    def as_root(*argv: str) -> subprocess.CompletedProcess[str]:
        pid = int((fake.lima_home / "tools" / "vm" / "pid").read_text())
        return subprocess.run(guest_argv(pid, list(argv)), capture_output=True, text=True, timeout=60, check=False)

    assert not _installed(lambda a: subprocess.run(a, capture_output=True, text=True, check=False), PACKAGE)
    r = lb("start")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "the Lima VM tools is running\n"
    assert f"llima-box: installing packages: {PACKAGE}\n" in r.stderr
    assert "llima-box: running the setup script my-setup.sh\n" in r.stderr
    assert "llima-box: setup: setup as 0: /usr/bin/hello\n" in r.stderr  # as root, after the packages
    assert "llima-box: setup: to-stderr\n" in r.stderr
    assert _installed(lambda argv: as_root(*argv), PACKAGE) and as_root("hello").stdout == "Hello, world!\n"
    assert as_root("cat", RECORD).stdout == f"{PACKAGE}\n"
    assert as_root("stat", "-c", "%U %a", "/var/lib/llima-box/setup").stdout == "root 700\n"

    history = as_root("cat", APT_HISTORY).stdout
    as_root("rm", "/var/tmp/setup-ran").check_returncode()
    r = lb("provision")  # again: the package is there, apt does not run; the setup script runs again
    assert r.returncode == 0 and "installed" in r.stdout, r.stderr
    assert "installing packages" not in r.stderr and f"llima-box: packages already installed: {PACKAGE}\n" in r.stderr
    assert as_root("cat", APT_HISTORY).stdout == history
    assert as_root("test", "-e", "/var/tmp/setup-ran").returncode == 0
    assert lb("delete", "--yes").returncode == 0


def test_vm_provision_refuses_bad_input_before_the_vm_is_made(fake: FakeLima, tmp_path: Path) -> None:
    env = {**fake.env, "LLIMA_BOX_VM_NAME": "tools-bad"}
    for var, value, why in [("LLIMA_BOX_VM_PACKAGES", "git,Bad_Name", "'Bad_Name' is not a Debian package name"),
                            ("LLIMA_BOX_VM_SETUP", str(tmp_path / "missing.sh"), "vm_setup: no such file: ")]:
        for cmd in (["vm", "start"], ["vm", "provision"], ["provision"]):
            r = subprocess.run([*fake.lb_argv, *cmd], env={**env, var: value}, capture_output=True, text=True,
                               timeout=60, check=False)
            assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, (cmd, r.stderr)
            assert r.stderr.startswith("Error: ") and why in r.stderr, r.stderr
    assert not (fake.lima_home / "tools-bad").exists()  # nothing was made


# ---- llima-box provision: the local backend (the guest is this machine) ----


@pytest.fixture(scope="module")
def local(guest: t.Any) -> Iterator[t.Any]:
    guest.install_cli()
    _no_man_db(guest.run)
    yield guest
    guest.reprovision("--packages", "").check_returncode()  # the session's guest: no record left behind


def _provision(guest: t.Any, *env: str) -> subprocess.CompletedProcess[str]:
    return guest.run(["env", "LLIMA_BOX_HOME=/var/tmp/lb-tools", *env, "llima-box", "--backend", "local", "provision",
                      "--user", "alice", "--roots", guest.roots])


def test_local_provision_records_packages_and_every_run_keeps_them(local: t.Any) -> None:
    guest = local
    r = _provision(guest, "LLIMA_BOX_VM_PACKAGES=bash,coreutils")  # installed already: apt does not run
    assert r.returncode == 0, r.stderr
    assert "llima-box: packages already installed: bash coreutils\n" in r.stderr and "installing" not in r.stderr
    assert guest.run(["cat", RECORD]).stdout == "bash\ncoreutils\n"
    r = guest.reprovision()  # a boot, an automatic upgrade: no --packages, the record stays and is applied
    assert r.returncode == 0 and "packages already installed: bash coreutils" in r.stderr, r.stderr
    assert guest.run(["cat", RECORD]).stdout == "bash\ncoreutils\n"
    assert _provision(guest).returncode == 0  # the configuration names none now
    assert guest.run(["test", "-e", RECORD]).returncode == 1
    r = guest.reprovision()  # no record: nothing to say about packages
    assert (r.returncode, r.stderr) == (0, ""), r.stderr


def test_local_provision_bad_input_is_one_line_and_changes_nothing(local: t.Any, tmp_path: Path) -> None:
    guest = local
    assert _provision(guest, "LLIMA_BOX_VM_PACKAGES=bash").returncode == 0
    before = guest.sh(f"cat {RECORD}; md5sum /etc/llima-box/guest.conf; ls -l --time-style=+%s.%N {RECORD}").stdout
    cases = [
        (["LLIMA_BOX_VM_PACKAGES=bash,-rf"], 2, "Error: vm_packages: '-rf' is not a Debian package name"),
        (["LLIMA_BOX_VM_PACKAGES=bash,x"], 2, "Error: vm_packages: 'x' is not a Debian package name"),
        (["LLIMA_BOX_VM_SETUP=/root/no-such-setup.sh"], 2, "Error: vm_setup: no such file: /root/no-such-setup.sh"),
        (["LLIMA_BOX_VM_PACKAGES=bash,llima-box-no-such-package"], 1,
         "Error: llima-box-provision: apt-get install llima-box-no-such-package failed: "
         "E: Unable to locate package llima-box-no-such-package"),
    ]
    for env, code, line in cases:
        r = _provision(guest, *env)
        lines = _not_progress(r.stderr)
        assert (r.returncode, len(lines)) == (code, 1) and lines[0].startswith(line), r.stderr
    # the installer checks them too, before any step
    for args, line in [(["--packages", "bash -rf"], "invalid package name -rf"),
                       (["--packages", "bash Bad"], "invalid package name Bad"),
                       (["--packages", "npm:../x.tgz"], "invalid package name npm:../x.tgz"),
                       (["--packages", "bash\nrm"], "invalid --packages"),
                       (["--setup", "/nonexistent"], "no setup script /nonexistent")]:
        r = guest.reprovision(*args)
        assert r.returncode == 2 and r.stderr.startswith(f"llima-box-provision: {line}"), r.stderr
        assert len(r.stderr.splitlines()) == 1, r.stderr
    after = guest.sh(f"cat {RECORD}; md5sum /etc/llima-box/guest.conf; ls -l --time-style=+%s.%N {RECORD}").stdout
    assert after == before


def test_local_provision_failing_setup_script_is_one_line(local: t.Any) -> None:
    guest = local
    script = "/root/failing-setup.sh"
    guest.run(["sh", "-c", f"printf 'echo step one\\nexit 7\\n' > {script}"]).check_returncode()
    r = _provision(guest, f"LLIMA_BOX_VM_SETUP={script}")
    assert r.returncode == 1, r.stderr
    assert "llima-box: setup: step one\n" in r.stderr  # a script without #!: run by /bin/sh
    assert _not_progress(r.stderr) == ["Error: llima-box-provision: the setup script failing-setup.sh failed "
                                       "(exit status 7)"]


# ---- in an env: user installs go to the env's home ----


def _wheel() -> tuple[str, bytes]:
    """A pure-Python wheel with a console script ``lb-pip-tool``, built here (no network, no build backend)."""
    files = {
        "lb_pip_tool/__init__.py": "def main():\n    print('pip tool runs')\n",
        "lb_pip_tool-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: lb-pip-tool\nVersion: 1.0\n",
        "lb_pip_tool-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                           "Tag: py3-none-any\n",
        "lb_pip_tool-1.0.dist-info/entry_points.txt": "[console_scripts]\nlb-pip-tool = lb_pip_tool:main\n",
    }
    record = []
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as whl:
        for name, text in files.items():
            data = text.encode()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{name},sha256={digest},{len(data)}")
            whl.writestr(name, data)
        record.append("lb_pip_tool-1.0.dist-info/RECORD,,")
        whl.writestr("lb_pip_tool-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return "lb_pip_tool-1.0-py3-none-any.whl", raw.getvalue()


def _npm_package() -> tuple[str, bytes]:
    """An npm package tarball with a bin ``lb-npm-tool``."""
    files = {
        "package/package.json": (json.dumps({"name": "lb-npm-tool", "version": "1.0.0",
                                             "bin": {"lb-npm-tool": "cli.js"}}), 0o644),
        "package/cli.js": ("#!/usr/bin/env node\nconsole.log('npm tool runs')\n", 0o755),
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, (text, mode) in files.items():
            info = tarfile.TarInfo(name)
            data = text.encode()
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return "lb-npm-tool-1.0.0.tgz", raw.getvalue()


def test_pip_user_and_npm_global_install_into_the_env_home(guest: t.Any, env_name: str) -> None:
    """pip (python3-pip, installed by .ci/run) for real; npm for real where the guest has it (CI's has not:
    there a program is put where ``npm install -g`` with that prefix puts its bins, and must be found)."""
    project = guest.make_shared_project("alice", "tools-" + env_name)
    for name, data in (_wheel(), _npm_package()):
        (project / name).write_bytes(data)
        (project / name).chmod(0o644)
    r = guest.run(["python3", "-m", "pip", "--version"])
    assert r.returncode == 0, f"pip is missing in the test guest (.ci/run installs python3-pip): {r.stderr}"
    npm = guest.run(["sh", "-c", "command -v npm"]).returncode == 0
    p = str(project)
    assert guest.guest_script("create", env_name, p, "--network", "offline").returncode == 0
    try:
        r = guest.enter(env_name, p, "sh", "-c", 'echo "$PATH"; head -n 1 ~/.npmrc')
        system = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        assert r.stdout == f"/home/{env_name}/.local/bin:{system}\nprefix=${{HOME}}/.local\n", r.stderr
        if npm:  # the guest's own global config (registry, CA) still holds in the env
            want = guest.run(["sh", "-c", "cd / && HOME=/nonexistent npm config get globalconfig"]).stdout
            r = guest.enter(env_name, p, "npm", "config", "get", "globalconfig")
            assert r.stdout == want and not r.stdout.startswith(f"/home/{env_name}"), r.stderr
        whl, tgz = _wheel()[0], _npm_package()[0]
        r = guest.enter(env_name, p, "python3", "-m", "pip", "install", "-q", "--user", "--no-index",
                        "--disable-pip-version-check", f"{p}/{whl}")
        assert r.returncode == 0, r.stderr
        if npm:
            r = guest.enter(env_name, p, "npm", "install", "-g", "--offline", "--no-audit", "--no-fund",
                            "--no-update-notifier", f"{p}/{tgz}")
        else:
            r = guest.enter(env_name, p, "sh", "-c", 'mkdir -p ~/.local/bin && printf "#!/bin/sh\\necho npm tool '
                            'runs\\n" > ~/.local/bin/lb-npm-tool && chmod +x ~/.local/bin/lb-npm-tool')
        assert r.returncode == 0, r.stderr
        found = "lb-pip-tool; lb-npm-tool; command -v lb-pip-tool; command -v lb-npm-tool"
        r = guest.enter(env_name, p, "sh", "-c", found)
        assert r.stdout == (f"pip tool runs\nnpm tool runs\n/home/{env_name}/.local/bin/lb-pip-tool\n"
                            f"/home/{env_name}/.local/bin/lb-npm-tool\n"), r.stderr
        assert guest.run(["test", "-e", "/usr/local/bin/lb-npm-tool"]).returncode == 1
    finally:
        guest.guest_script("delete", env_name)
