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
])  # fmt: skip
def test_bad_limits_are_refused_before_anything_is_made(guest, env_name, project, args, message):
    r = guest.guest_script("create", env_name, project, *args)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert guest.run(["test", "-e", f"/var/lib/llima-box/envs/{env_name}"]).returncode == 1
    assert guest.run(["id", env_name]).returncode == 1
