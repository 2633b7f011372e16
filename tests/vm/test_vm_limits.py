"""Per-env limits in a real systemd guest: each env's cgroup (a scope of llima-box.slice) holds them, so one
misbehaving env stops at its own limits while another env and the guest answer."""

from __future__ import annotations

import secrets
import subprocess
import typing as t
from pathlib import Path

import pytest

from tests.vm.lb import LB
from tests.vm.machine import VM

#: fork until refused, say how far it got, hold the processes until told, then end them
FORKS = """
import os, signal, sys, time
kids = []
while len(kids) < 1000:
    try:
        pid = os.fork()
    except OSError as e:
        print("stopped", len(kids), e.errno, flush=True)
        break
    if pid == 0:
        time.sleep(120)
        os._exit(0)
    kids.append(pid)
else:
    print("not stopped", len(kids), flush=True)
sys.stdin.readline()
for pid in kids:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
"""

HOG = "b = bytearray(); [b.extend(bytes(1 << 20)) for _ in range(600)]; print('survived')"


@pytest.fixture(scope="module")
def envs(vm: VM, lb: LB) -> t.Iterator[tuple[Path, Path]]:
    """A with small limits (through the CLI's flags), B with the defaults."""
    a = vm.host_project(vm.share("9p"), f"limits-a-{secrets.token_hex(2)}")
    b = vm.host_project(vm.share("9p"), f"limits-b-{secrets.token_hex(2)}")
    made = []
    for project, flags in ((a, ["--memory", "256M", "--pids", "64", "--cpus", "0.5", "--home", "96M"]), (b, [])):
        r = lb("create", str(project), *flags)
        assert r.returncode == 0, r.stderr
        made.append(r.stdout.decode().strip())
    yield a, b
    for name in made:
        lb("delete", name, "--yes")


def test_the_limits_are_the_env_cgroups(vm: VM, lb: LB, envs: tuple[Path, Path]) -> None:
    a, _ = envs
    name = lb("shell", str(a), "--", "hostname").stdout.decode().strip()
    row = lb.guest_envs()[name]
    assert row["limits"] == {"memory": 256 << 20, "pids": 64, "cpus": 0.5, "enforced": True, "home": 96 << 20}
    assert ".scope" in row["cgroup"]
    r = vm.root(f"cat {row['cgroup']}/memory.swap.max {row['cgroup']}/cpu.max")
    assert r.stdout.split() == ["0", "50000", "100000"], r.stderr


def test_a_fork_bomb_stops_at_its_envs_pids_max(vm: VM, lb: LB, envs: tuple[Path, Path]) -> None:
    a, b = envs
    with subprocess.Popen([*lb.base, "shell", str(a), "--", "python3", "-c", FORKS], env=lb.env,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE) as bomb:  # fmt: skip
        try:
            words = bomb.stdout.readline().decode().split()
            assert words[:1] == ["stopped"] and int(words[1]) < 64 and words[2] == "11", words  # EAGAIN
            assert lb("shell", str(b), "--", "true").returncode == 0  # while A holds every pid it may
            assert vm.ssh("true").returncode == 0
        finally:
            bomb.communicate(b"\n", timeout=60)


def test_a_memory_hog_is_killed_inside_its_env_only(vm: VM, lb: LB, envs: tuple[Path, Path]) -> None:
    a, b = envs
    r = lb("shell", str(a), "--", "python3", "-c", HOG)
    assert r.returncode == 137 and b"survived" not in r.stdout, (r.returncode, r.stderr)  # SIGKILL: the OOM killer
    assert lb("shell", str(b), "--", "python3", "-c", "print(len(bytearray(300 << 20)))").stdout == b"314572800\n"
    assert lb.shell(a, "echo still-here").stdout == b"still-here\n"  # the env itself lives on


def test_filling_the_envs_tmp_fails_there_only(lb: LB, envs: tuple[Path, Path]) -> None:
    a, b = envs
    r = lb.shell(a, "dd if=/dev/zero of=/tmp/fill bs=1M count=100 2>&1; rm -f /tmp/fill")
    assert b"No space left on device" in r.stdout, r.stdout  # /tmp: a quarter of A's 256 MiB
    r = lb.shell(b, "dd if=/dev/zero of=/tmp/fill bs=1M count=100 status=none && echo ok; rm -f /tmp/fill")
    assert r.stdout == b"ok\n", r.stderr


def test_a_full_home_leaves_the_other_env_and_the_guest_writable(vm: VM, lb: LB, envs: tuple[Path, Path]) -> None:
    a, b = envs
    r = lb.shell(a, "head -c 200M /dev/zero > ~/fill; echo rc=$?; df -B1M --output=size ~ | tail -n 1")
    assert r.stdout.split()[0] == b"rc=1" and b"No space left on device" in r.stderr, (r.stdout, r.stderr)
    assert int(r.stdout.split()[1]) <= 96
    assert lb.shell(b, "head -c 16M /dev/zero > ~/f && rm ~/f && echo ok").stdout == b"ok\n"
    assert vm.ssh("head -c 16M /dev/zero > ~/f && rm ~/f && echo ok").stdout == "ok\n"
    assert lb.shell(a, "rm ~/fill && echo ok").stdout == b"ok\n"


def test_systemd_stops_an_idle_env(vm: VM, lb: LB) -> None:
    """Provisioning's timer runs the idle sweep; the sweep's service, started as the timer does, stops an env
    made with --idle-stop once it was seen idle that long."""
    assert vm.root("systemctl is-active llima-box-idle-stop.timer").stdout.strip() == "active"
    project = vm.host_project(vm.share("9p"), f"idle-{secrets.token_hex(2)}")
    r = lb("create", str(project), "--idle-stop", "1")
    assert r.returncode == 0, r.stderr
    name = r.stdout.decode().strip()
    try:
        for _ in range(2):  # first seen idle, then idle for longer than a second
            vm.root("sleep 1.2; systemctl start llima-box-idle-stop.service").check_returncode()
        status = {row["name"]: row["status"] for row in lb.json("list")}[name]
        assert status == "stopped", vm.root("journalctl -u llima-box-idle-stop.service -n 20").stdout
    finally:
        lb("delete", name, "--yes")
