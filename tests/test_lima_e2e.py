"""End to end on the Lima backend: llima-box → the fake limactl → a copy-on-write test guest."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest

from llimabox import guest as guest_mod
from llimabox.lima import render
from tests.guest import guest_argv
from tests.lima_env import FakeLima, fake_lima

VM = "llima-box"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLima]:
    yield from fake_lima()


def as_root(fake: FakeLima, *argv: str, name: str = VM) -> subprocess.CompletedProcess[str]:
    pid = int((fake.lima_home / name / "vm" / "pid").read_text())
    return subprocess.run(guest_argv(pid, list(argv)), capture_output=True, text=True, timeout=60, check=False)


def status(fake: FakeLima, name: str = VM) -> str:
    r = fake.limactl("list", "--json", name)
    return json.loads(r.stdout)["status"] if r.returncode == 0 else "missing"


def test_from_no_vm_shell_creates_boots_provisions_and_runs(fake: FakeLima) -> None:
    assert status(fake) == "missing"
    project = fake.project("app")
    r = fake.lb("shell", project, "--", "sh", "-c", 'pwd; echo kept > "$HOME/data"')
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{project}\n".encode()
    assert b"creating the Lima VM llima-box" in r.stderr and b"READY" in r.stderr
    assert status(fake) == "Running"
    assert (fake.lima_home / VM / "lima.yaml").read_text().startswith("# llima-box embedded lima.yaml")
    r = fake.lb("shell", project, "--", "true")
    assert (r.returncode, r.stderr) == (0, b"")  # running VM: no progress output


def test_stop_then_shell_restarts_with_home_data(fake: FakeLima) -> None:
    project = fake.project("again")
    assert fake.lb("shell", project, "--", "sh", "-c", 'echo hello > "$HOME/note"').returncode == 0
    assert fake.lb("vm", "stop").returncode == 0
    assert status(fake) == "Stopped"
    r = fake.lb("shell", project, "--", "sh", "-c", 'cat "$HOME/note"')
    assert (r.returncode, r.stdout) == (0, b"hello\n"), r.stderr
    assert status(fake) == "Running"


def test_older_guest_scripts_are_upgraded(fake: FakeLima) -> None:
    project = fake.project("upg")
    prefix = guest_mod.GUEST_PREFIX
    assert as_root(fake, "sh", "-c", f"echo 1 > {prefix}/VERSION").returncode == 0
    r = fake.lb("shell", project, "--", "true")
    assert r.returncode == 0, r.stderr
    assert as_root(fake, "cat", f"{prefix}/VERSION").stdout.strip() == str(guest_mod.packaged_version())


def test_failing_probe_is_a_clear_125(fake: FakeLima) -> None:
    bad = fake.dir / "bad.yaml"
    bad.write_text(
        "images: []\nmounts:\n- location: '~'\n  writable: true\nprobes:\n- mode: readiness\n"
        "  script: |\n    #!/bin/sh\n    exit 1\n  hint: the probe of this test always fails\n"
    )
    env = {**fake.env, "LLIMA_BOX_VM_NAME": "bad", "LLIMA_BOX_LIMA_CONFIG": str(bad)}
    r = subprocess.run(
        [*fake.lb_argv, "shell", fake.project("probe"), "--", "true"], env=env, capture_output=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert r.returncode == 125
    last = r.stderr.decode().splitlines()[-1]
    assert last.startswith("Error: the Lima VM bad did not become ready: degraded")
    assert "retry: llima-box vm start" in last
    assert b"the probe of this test always fails" in r.stderr  # the log tail
    assert fake.limactl("delete", "-f", "bad").returncode == 0


def test_broken_vm_is_reported(fake: FakeLima) -> None:
    env = {**fake.env, "LLIMA_BOX_VM_NAME": "brk"}
    fake.limactl("create", "--name", "brk", "-", input="images: []\n")
    (fake.lima_home / "brk" / "lima.yaml").write_text("images: [\n")
    r = subprocess.run([*fake.lb_argv, "shell", fake.project("brk"), "--", "true"], env=env, capture_output=True,
                       timeout=60, check=False)
    assert r.returncode == 125
    assert b"is Broken" in r.stderr and b"llima-box vm stop --force" in r.stderr
    assert len(r.stderr.splitlines()) == 1
    fake.limactl("delete", "-f", "brk")


def test_vm_commands(fake: FakeLima) -> None:
    env = {**fake.env, "LLIMA_BOX_VM_NAME": "vmc"}

    def lb(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*fake.lb_argv, "vm", *args], env=env, capture_output=True, timeout=300, check=False)

    r = lb("status", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["status"] == "missing"
    assert lb("stop").returncode == 1 and lb("logs").returncode == 1
    r = lb("start", "--cpus", "2", "--memory", "2GiB", "--", "--timeout", "5m")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"the Lima VM vmc is running\n"
    assert lb("start").stdout == b"the Lima VM vmc is already running\n"
    info = json.loads(lb("status", "--json").stdout)
    assert info["status"] == "Running" and info["user"] == "alice" and isinstance(info["ssh_local_port"], int)
    r = lb("provision")
    assert r.returncode == 0 and b"installed" in r.stdout, r.stderr
    r = lb("logs", "-n", "5")
    assert r.returncode == 0 and b"==> " in r.stdout
    r = lb("delete")
    assert r.returncode == 2 and b"--yes" in r.stderr  # no terminal
    assert lb("stop").returncode == 0
    assert lb("stop").stdout == b"the Lima VM vmc is already stopped\n"
    assert json.loads(lb("status", "--json").stdout)["status"] == "Stopped"
    assert lb("stop", "--force").returncode == 0
    assert subprocess.run([*fake.lb_argv, "create", fake.project("vmc")], env=env, capture_output=True,
                          check=False).returncode == 0  # starts it again
    listed = subprocess.run([*fake.lb_argv, "list", "--json"], env=env, capture_output=True, check=False)
    assert [row["status"] for row in json.loads(listed.stdout)] == ["running"]
    assert lb("delete", "--yes").returncode == 0
    listed = subprocess.run([*fake.lb_argv, "list", "--json"], env=env, capture_output=True, check=False)
    assert json.loads(listed.stdout) == []  # no VM, and no records of the envs of the deleted one
    assert json.loads(lb("status", "--json").stdout)["status"] == "missing"  # list made none
    assert lb("delete", "--yes").returncode == 1
    r = subprocess.run([*fake.lb_argv, "--backend", "local", "vm", "status"], env=env, capture_output=True,
                       check=False)
    assert r.returncode == 2 and b"--backend lima" in r.stderr


def test_doctor(fake: FakeLima) -> None:
    project = fake.project("doc")
    assert fake.lb("shell", project, "--", "true").returncode == 0
    r = subprocess.run([*fake.lb_argv, "doctor", "--json"], env=fake.env, cwd=project, capture_output=True,
                       timeout=300, check=False)  # in the env's project: doctor runs llima-box verify there
    isolation = next((c for c in json.loads(r.stdout)["checks"] if c["name"] == "isolation"), None)
    assert isolation is not None, r
    assert (r.returncode, isolation["ok"]) == (0, True) and "all 10 checks" in isolation["detail"], isolation
    r = fake.lb("doctor", "--json")
    report = json.loads(r.stdout)
    assert r.returncode == 0 and report["ok"] is True, report
    names = [c["name"] for c in report["checks"]]
    assert names == ["backend", "limactl", "vm", "ssh", "guest_scripts", "guest_conf", "sudoers", "namespaces",
                     "network", "isolation", "state_db"]
    assert report["checks"][1]["detail"] == "limactl 2.2.0"

    assert as_root(fake, "rm", "-f", "/etc/sudoers.d/llima-box").returncode == 0
    r = fake.lb("doctor", "--json")
    report = json.loads(r.stdout)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert r.returncode == 1 and [c["name"] for c in failed] == ["sudoers"]
    assert failed[0]["fix"] == "llima-box vm provision"
    r = fake.lb("doctor")
    assert r.returncode == 1 and b"FAIL sudoers:" in r.stdout and b"(fix: llima-box vm provision)" in r.stdout
    assert fake.lb("vm", "provision").returncode == 0
    assert fake.lb("doctor").returncode == 0

    assert fake.lb("vm", "stop").returncode == 0
    report = json.loads(fake.lb("doctor", "--json").stdout)
    assert [c["name"] for c in report["checks"] if not c["ok"]] == ["vm"]
    assert status(fake) == "Stopped"  # doctor never starts it


def test_concurrent_first_use_creates_once(fake: FakeLima) -> None:
    env = {**fake.env, "LLIMA_BOX_VM_NAME": "conc"}  # three llima-box processes, no mux between them
    project = fake.project("conc")
    procs = [
        subprocess.Popen([*fake.lb_argv, "shell", project, "--", "true"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    for p in procs:
        p.stdout.close()  # type: ignore[union-attr]
        p.stderr.close()  # type: ignore[union-attr]
    assert [code for code, _ in results] == [0, 0, 0], results
    assert sum(b"creating the Lima VM conc" in err for _, err in results) == 1, results
    assert all(not err or b"creating the Lima VM" in err or b"waiting while" in err for _, err in results), results
    assert status(fake, "conc") == "Running"
    assert fake.limactl("delete", "-f", "conc").returncode == 0


def test_stopped_vm_gets_the_current_embedded_yaml(fake: FakeLima) -> None:
    project = fake.project("refresh")
    assert fake.lb("shell", project, "--", "true").returncode == 0
    assert fake.lb("vm", "stop").returncode == 0
    path = fake.lima_home / VM / "lima.yaml"
    old = path.read_text().replace(f"version {guest_mod.packaged_version()}\n", "version 1\n", 1)
    path.write_text(old)
    r = fake.lb("shell", project, "--", "true")
    assert r.returncode == 0, r.stderr
    assert b"updating the VM's lima.yaml" in r.stderr
    assert path.read_text() == render.render(str(fake.home))


def test_progress_on_a_terminal(fake: FakeLima) -> None:
    import pexpect

    env = {**fake.env, "LLIMA_BOX_VM_NAME": "tty"}
    p = pexpect.spawn(fake.lb_argv[0], [*fake.lb_argv[1:], "vm", "start"], env=env, timeout=120)
    p.expect(r"[|/\\-] Lima VM tty: .*\(\d+s\)")
    p.expect("Lima VM tty: ready after")
    p.expect("the Lima VM tty is running")
    p.expect(pexpect.EOF)
    p.close()
    assert p.exitstatus == 0
    assert fake.limactl("delete", "-f", "tty").returncode == 0


def test_vm_start_with_own_config(fake: FakeLima) -> None:
    env = {**fake.env, "LLIMA_BOX_VM_NAME": "own"}

    def lb(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*fake.lb_argv, "vm", *args], env=env, capture_output=True, timeout=300, check=False)

    r = lb("start", "--config", str(fake.dir / "missing.yaml"))
    assert r.returncode == 2 and r.stderr.startswith(b"Error: cannot read the Lima config")
    own = fake.dir / "own.yaml"
    own.write_text("# mine\nimages: []\ncpus: 2\n")
    r = lb("start", "--config", str(own))
    assert r.returncode == 0, r.stderr
    assert (fake.lima_home / "own" / "lima.yaml").read_text() == own.read_text()
    assert lb("delete", "--yes").returncode == 0


def test_status_never_boots_the_vm(fake: FakeLima) -> None:
    env = {**fake.env, "LLIMA_BOX_VM_NAME": "st"}
    r = subprocess.run([*fake.lb_argv, "status", "--json"], env=env, capture_output=True, timeout=60, check=False)
    info = json.loads(r.stdout)
    assert r.returncode == 1 and info["backend"] == "lima" and info["reachable"] is False
    assert "llima-box vm start" in info["error"]
    assert status(fake, "st") == "missing"


def test_run_installs_a_missing_agent_in_the_guest_once_when_so_configured(fake: FakeLima) -> None:
    """``agent_install = "guest"``: ``run`` provisions the agent's npm package for every env (recorded with the
    config's vm_packages), then runs it; the next run finds it. A local package stands in for the registry's."""
    import io
    import tarfile

    project = fake.project("agent-guest")
    package = fake.home / "fake-opencode.tgz"
    files = {"package/package.json": json.dumps({"name": "fake-opencode", "version": "1.0.0",
                                                  "bin": {"opencode": "opencode.js"}}),
             "package/opencode.js": '#!/usr/bin/env node\nconsole.log("fake opencode", process.argv[2])\n'}
    with tarfile.open(package, "w:gz") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(text.encode()), 0o755
            tar.addfile(info, io.BytesIO(text.encode()))
    for shared in (".config", ".config/opencode", ".local", ".local/share", ".local/share/opencode"):
        (fake.home / shared).mkdir(exist_ok=True)  # as `run` makes them, the user's (this test runs as root)
        os.chown(fake.home / shared, 1501, 1501)
    config = fake.dir / "state" / "config.toml"
    config.parent.mkdir(exist_ok=True)
    config.write_text(f'agent_install = "guest"\n[agents.opencode]\npackage = "{package}"\n')
    try:
        r = fake.lb("run", "-T", "opencode", project, "--", "hi")
        assert (r.returncode, r.stdout) == (0, b"fake opencode hi\n"), r.stderr
        assert b"installing opencode in the guest, for every env" in r.stderr
        assert as_root(fake, "cat", "/etc/llima-box/packages").stdout == f"npm:{package}\n"
        r = fake.lb("run", "-T", "opencode", project, "--", "again")
        assert (r.returncode, r.stdout, b"installing" in r.stderr) == (0, b"fake opencode again\n", False), r.stderr
    finally:
        config.unlink()
        as_root(fake, "sh", "-c", "npm uninstall -g fake-opencode; rm -f /etc/llima-box/packages")
