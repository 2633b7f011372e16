"""Each env's limits as the guest verbs take, record and report them (the real guest's cgroup enforces them:
tests/vm/test_vm_limits.py; this test guest's cgroup2 has no memory, pids or cpu controller)."""

from __future__ import annotations

import json

import pytest

from tests.guest import Guest


def row(guest: Guest, name: str) -> dict:
    rows = [json.loads(line) for line in guest.guest_script("list").stdout.splitlines()]
    return next(r for r in rows if r["name"] == name)


def test_limits_are_recorded_and_size_the_scratch_dirs(guest, env_name, project):
    r = guest.guest_script("create", env_name, project, "--memory", "512M", "--pids", "100", "--cpus", "1.5")
    try:
        assert r.returncode == 0, r.stderr
        limits = row(guest, env_name)["limits"]
        assert {k: limits[k] for k in ("memory", "pids", "cpus")} == {"memory": 512 << 20, "pids": 100, "cpus": 1.5}
        sizes = guest.enter(env_name, project, "df", "-B1", "--output=size", "/tmp", "/var/tmp", "/dev/shm")
        assert sizes.stdout.split()[1:] == [str(128 << 20)] * 3  # a quarter of the env's memory each
    finally:
        guest.guest_script("delete", env_name)


def test_limits_change_on_an_existing_env_and_the_others_stay(guest, env_name, project):
    assert guest.guest_script("create", env_name, project, "--memory", "1G").returncode == 0
    try:
        assert guest.enter(env_name, project, "true").returncode == 0
        assert guest.guest_script("create", env_name, project, "--pids", "64").returncode == 0
        limits = row(guest, env_name)["limits"]
        assert (limits["memory"], limits["pids"], limits["cpus"]) == (1 << 30, 64, None)
    finally:
        guest.guest_script("delete", env_name)


def test_defaults_without_flags(guest, env_name, project):
    assert guest.guest_script("create", env_name, project).returncode == 0
    try:
        limits = row(guest, env_name)["limits"]
        assert (limits["memory"], limits["pids"], limits["cpus"], limits["enforced"]) == (None, None, None, False)
        total = int(guest.run(["awk", "/MemTotal/ {print $2}", "/proc/meminfo"]).stdout) * 1024
        size = int(guest.enter(env_name, project, "df", "-B1", "--output=size", "/tmp").stdout.split()[1])
        assert abs(size - total * 3 // 16) < 1 << 20  # a quarter of 3/4 of the guest's memory
    finally:
        guest.guest_script("delete", env_name)


@pytest.mark.parametrize("args, message", [
    (["--memory", "lots"], "--memory takes a size"),
    (["--memory", "1M"], "--memory takes a size"),
    (["--pids", "5"], "--pids takes a number of at least 16"),
    (["--cpus", "0"], "--cpus takes a number of CPUs"),
    (["--cpus", "1.234"], "--cpus takes a number of CPUs"),
    (["--pids"], "--pids needs a value"),
    (["--swap", "1G"], "unknown option --swap"),
    (["--home", "10M"], "--home takes a size"),
    (["--home", "lots"], "--home takes a size"),
])  # fmt: skip
def test_bad_limits_are_refused_before_anything_is_made(guest, env_name, project, args, message):
    r = guest.guest_script("create", env_name, project, *args)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert guest.run(["test", "-e", f"/var/lib/llima-box/envs/{env_name}"]).returncode == 1
    assert guest.run(["id", env_name]).returncode == 1


#: fill the home until the filesystem says no; print what errno it said and how much got written
FILL = """
import errno, os
written = 0
try:
    with open(os.path.expanduser("~/fill"), "wb") as f:
        while True:
            written += f.write(b"x" * (1 << 20))
            f.flush()
            os.fsync(f.fileno())
except OSError as e:
    print(errno.errorcode[e.errno], written >> 20)
"""


def test_filling_an_envs_home_leaves_the_others_and_the_guest_writable(guest, env_name, project):
    other = guest.make_project("alice", "other-" + env_name[-6:])
    assert guest.guest_script("create", env_name, project, "--home", "64M").returncode == 0
    assert guest.guest_script("create", env_name + "b", other).returncode == 0
    try:
        assert row(guest, env_name)["limits"]["home"] == 64 << 20
        r = guest.enter(env_name, project, "python3", "-c", FILL)
        code, megabytes = r.stdout.split()
        assert code == "ENOSPC" and 40 <= int(megabytes) <= 64, r.stdout + r.stderr
        assert guest.enter(env_name + "b", other, "sh", "-c", "head -c 8M /dev/zero > ~/f && echo ok").stdout == "ok\n"
        spare = "/var/lib/llima-box/spare"
        assert guest.run(["sh", "-c", f"head -c 8M /dev/zero > {spare} && rm {spare} && echo ok"]).stdout == "ok\n"
        assert int(guest.run(["du", "-m", f"/var/lib/llima-box/home/{env_name}.img"]).stdout.split()[0]) <= 70
        r = guest.guest_script("create", env_name, project, "--home", "128M")
        assert r.returncode == 2 and "cannot change" in r.stderr
    finally:
        guest.guest_script("delete", env_name)
        guest.guest_script("delete", env_name + "b")
    assert guest.run(["sh", "-c", f"losetup -a | grep -c {env_name}"]).stdout.strip() == "0"  # the loop device went
