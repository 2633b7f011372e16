"""A real reboot of the VM (kernel, systemd, Lima's provisioning at boot): envs come back with their data."""

from __future__ import annotations

import secrets

from tests.vm.lb import LB
from tests.vm.machine import VM


def test_reboot_brings_envs_back_with_their_data(vm: VM, lb: LB) -> None:
    envs = {}
    for kind in ("9p", "virtiofs"):
        project = vm.host_project(vm.share(kind), f"reboot-{kind}-{secrets.token_hex(2)}")
        r = lb("create", str(project))
        assert r.returncode == 0, r.stderr
        envs[r.stdout.decode().strip()] = project
        r = lb.shell(project, "echo kept > data; echo gone > /tmp/scratch")
        assert r.returncode == 0, r.stderr
    before = vm.boot_id()

    vm.reboot()

    assert vm.boot_id() != before
    rows = {row["name"]: row for row in lb.json("list")}
    for name, project in envs.items():
        assert rows[name]["project"] == str(project)
        r = lb.shell(project, "cat data; test -e /tmp/scratch || echo fresh-tmp")
        assert (r.returncode, r.stdout) == (0, b"kept\nfresh-tmp\n"), r.stderr
    guest_list = lb.guest_envs()
    assert all(guest_list[name]["alive"] for name in envs)
    for name in envs:
        assert lb("delete", name, "--yes").returncode == 0
