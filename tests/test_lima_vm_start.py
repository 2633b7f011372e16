"""``vm start`` sizes reach the VM's lima.yaml; commands that only report or delete never create or boot it;
README's vm examples run (against the fake limactl)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from llimabox.lima import render
from tests.lima_env import FakeLima, fake_lima

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLima]:
    yield from fake_lima()


def run(fake: FakeLima, vm: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**fake.env, "LLIMA_BOX_VM_NAME": vm}
    return subprocess.run([*fake.lb_argv, *args], env=env, capture_output=True, text=True, timeout=300,
                          cwd=cwd, check=False)


def instance_yaml(fake: FakeLima, vm: str) -> dict:
    return yaml.safe_load((fake.lima_home / vm / "lima.yaml").read_text())


def status(fake: FakeLima, vm: str) -> str:
    r = fake.limactl("list", "--json", vm)
    return json.loads(r.stdout)["status"] if r.returncode == 0 else "missing"


def test_sizes_go_into_the_new_vms_yaml(fake: FakeLima) -> None:
    r = run(fake, "sz", "vm", "start", "--cpus", "2", "--memory", "3GiB", "--disk", "30GiB")
    assert r.returncode == 0, r.stderr
    doc = instance_yaml(fake, "sz")
    assert (doc["cpus"], doc["memory"], doc["disk"]) == (2, "3GiB", "30GiB")
    assert render.rendered_version((fake.lima_home / "sz" / "lima.yaml").read_text()) is not None
    assert json.loads(fake.limactl("list", "--json", "sz").stdout)["cpus"] == 2


def test_new_sizes_of_an_existing_vm_need_yes(fake: FakeLima) -> None:
    r = run(fake, "sz", "vm", "start", "--cpus", "3")
    assert r.returncode != 0 and status(fake, "sz") == "Running"
    (line,) = r.stderr.splitlines()
    assert "llima-box vm start --cpus 3 --yes" in line and "Traceback" not in r.stderr
    assert instance_yaml(fake, "sz")["cpus"] == 2
    r = run(fake, "sz", "vm", "start", "--cpus", "3", "--memory", "3GiB", "--yes")
    assert r.returncode == 0, r.stderr
    doc = instance_yaml(fake, "sz")
    assert (doc["cpus"], doc["memory"], doc["disk"]) == (3, "3GiB", "30GiB")
    assert status(fake, "sz") == "Running"
    assert run(fake, "sz", "vm", "start", "--cpus", "3").stdout == "the Lima VM sz is already running\n"


def test_fixed_settings_of_an_existing_vm_are_refused(fake: FakeLima) -> None:
    r = run(fake, "sz", "vm", "start", "--vm-type", "vz")
    assert r.returncode == 2 and "llima-box vm delete, then llima-box vm start --vm-type vz" in r.stderr
    own = fake.dir / "own.yaml"
    own.write_text("images: []\n")
    r = run(fake, "sz", "vm", "start", "--config", str(own))
    assert r.returncode == 2 and "--config applies when it is created" in r.stderr
    r = run(fake, "sz", "vm", "start", "--disk", "20GiB", "--yes")
    assert r.returncode == 2 and "cannot shrink from 30GiB to 20GiB" in r.stderr
    assert run(fake, "sz", "vm", "start", "--memory", "3G").stdout == "the Lima VM sz is already running\n"  # same
    for bad in (["--memory", "lots"], ["--vm-type", "xen"], ["--cpus", "0"]):
        r = run(fake, "sz", "vm", "start", *bad)
        assert r.returncode == 2 and "Traceback" not in r.stderr


def test_upgrade_keeps_the_sizes(fake: FakeLima) -> None:
    assert run(fake, "sz", "vm", "stop").returncode == 0
    path = fake.lima_home / "sz" / "lima.yaml"
    path.write_text(re.sub(r"version \d+\n", "version 1\n", path.read_text(), count=1))
    r = run(fake, "sz", "vm", "start")
    assert r.returncode == 0 and "updating the VM's lima.yaml" in r.stderr, r.stderr
    doc = instance_yaml(fake, "sz")
    assert (doc["cpus"], doc["memory"], doc["disk"]) == (3, "3GiB", "30GiB")


def test_reports_and_deletes_never_create_the_vm(fake: FakeLima) -> None:
    r = run(fake, "no", "list", "--json")
    assert (r.returncode, json.loads(r.stdout)) == (0, [])
    for args in (["delete-all", "--yes"], ["delete", "--yes", "lb-x"], ["status"], ["doctor"], ["ports"]):
        r = run(fake, "no", *args)
        assert "Traceback" not in r.stderr
        if args[0] != "ports":
            assert r.returncode != 0, args
        assert status(fake, "no") == "missing", args
    assert "llima-box vm start" in run(fake, "no", "delete-all", "--yes").stderr


def test_reports_and_deletes_never_boot_a_stopped_vm(fake: FakeLima) -> None:
    assert run(fake, "sz", "vm", "stop").returncode == 0
    for args in (["list"], ["delete-all", "--yes"], ["delete", "--yes", "lb-x"], ["status"], ["doctor"]):
        r = run(fake, "sz", *args)
        assert r.returncode != 0 and "Traceback" not in r.stderr, args
        assert "llima-box vm start" in r.stderr + r.stdout, args
        assert status(fake, "sz") == "Stopped", args
    r = run(fake, "sz", "list")
    assert r.stderr == "Error: the Lima VM sz is Stopped; start it: llima-box vm start\n"
    assert fake.limactl("delete", "-f", "sz").returncode == 0


def readme_vm_examples() -> list[list[str]]:
    """The ``llima-box vm …`` lines of README's code blocks, as argv (comments dropped)."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    lines = [ln for block in blocks for ln in block.splitlines() if ln.startswith("llima-box vm ")]
    return [shlex.split(ln, comments=True)[1:] for ln in lines]


def test_readme_vm_examples_run(fake: FakeLima, tmp_path: Path) -> None:
    examples = readme_vm_examples()
    assert len(examples) >= 3 and ["vm", "status", "--json"] in examples
    (tmp_path / "my-lima.yaml").write_text(render.render(str(fake.home)))
    for argv in examples:
        if argv[:2] == ["vm", "start"] and status(fake, "rd") != "missing":
            assert run(fake, "rd", "vm", "delete", "--yes").returncode == 0  # each start example from scratch
        r = run(fake, "rd", *argv, cwd=tmp_path)
        assert r.returncode == 0, (argv, r.stderr)
    assert run(fake, "rd", "vm", "delete", "--yes").returncode == 0


def test_new_sizes_are_asked_for_on_a_terminal(fake: FakeLima) -> None:
    import pexpect

    assert run(fake, "tt", "vm", "start").returncode == 0
    env = {**fake.env, "LLIMA_BOX_VM_NAME": "tt"}
    argv = [*fake.lb_argv[1:], "vm", "start", "--cpus", "1"]
    p = pexpect.spawn(fake.lb_argv[0], argv, env=env, timeout=120)
    p.expect(r"Restart the Lima VM tt with cpus 1\? \[y/N\]")
    p.sendline("n")
    p.expect(pexpect.EOF)
    p.close()
    assert p.exitstatus == 2 and instance_yaml(fake, "tt")["cpus"] == 4
    p = pexpect.spawn(fake.lb_argv[0], argv, env=env, timeout=120)
    p.expect(r"\[y/N\]")
    p.sendline("y")
    p.expect("the Lima VM tt is running")
    p.expect(pexpect.EOF)
    p.close()
    assert p.exitstatus == 0 and instance_yaml(fake, "tt")["cpus"] == 1 and status(fake, "tt") == "Running"
    assert fake.limactl("delete", "-f", "tt").returncode == 0
