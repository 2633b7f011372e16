"""What each uid-boundary candidate of issue 13 (point 1) can do on Lima's shares, in the real VM.

The facts (docs/real-vm-measured.md) the mechanism choice rests on, kept true by CI: the guest runs
tests/vm/measure_guest.py (no speed runs) and the host looks at what it created.
"""

from __future__ import annotations

import json
import os
import shlex
import typing as t
from pathlib import Path

import pytest

from tests.vm.machine import VM

HERE = Path(__file__).resolve().parent
USERNS = "own uid in userns + ambient DAC_OVERRIDE,FOWNER"
BINDFS = "own uid on bindfs --map"
OWNER = "owner uid (shared-uid today)"
EXT4 = "ext4 (guest disk)"


@pytest.fixture(scope="module")
def facts(vm: VM) -> dict[str, t.Any]:
    shares = [{"kind": s.kind, "path": str(s.path)} for s in vm.shares]
    shares.append({"kind": EXT4, "path": "/var/tmp/ext4-control"})
    argv = ["sudo", "-n", "python3", "-", json.dumps(shares), str(vm.host.uid), str(vm.host.gid), "0"]
    r = vm.ssh(shlex.join(argv), input=(HERE / "measure_guest.py").read_text(), timeout=600)
    assert r.returncode == 0, r.stderr
    return {kind: data["functional"] for kind, data in json.loads(r.stdout)["shares"].items()}


def host_owner(path: str) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


@pytest.mark.parametrize("kind", ["9p", "virtiofs"])
def test_shares_refuse_idmapped_mounts(facts: dict, kind: str) -> None:
    assert facts[kind]["idmap"].startswith("refused: project-mount: [Errno 22] idmapped mount of ")
    assert facts[kind]["idmap"].endswith(": Invalid argument")
    assert facts[EXT4]["idmap"].startswith("works")


@pytest.mark.parametrize("kind", ["9p", "virtiofs", EXT4])
def test_own_uid_without_a_mechanism_cannot_write(facts: dict, kind: str) -> None:
    for case in ("own uid, no mechanism", "own uid in userns, no caps"):
        c = facts[kind][case]
        assert (c["read_0644"], c["read_0600"], c["append_host_file"], c["create_file"]) == ("ok", "no", "no", "no")


@pytest.mark.parametrize("kind", ["9p", "virtiofs"])
def test_bindfs_map_gives_own_uid_the_project_and_the_host_user_the_files(vm: VM, facts: dict, kind: str) -> None:
    c = facts[kind][BINDFS]
    ops = ("read_0600", "append_host_file", "create_file", "mkdir", "create_in_new_dir", "chmod_host_file",
           "chmod_own_new_file", "utime_host_file", "rename_host_file", "delete_host_file")  # fmt: skip
    assert [c[op] for op in ops] == ["ok"] * len(ops)
    assert c["chown_new_file_to_root"] == "no"
    assert c["seen_owner_of_new_file"] == c["seen_owner_of_host_file"] == "200001:200001"
    for name in ("new_file", "new_dir/f"):
        assert host_owner(f"{c['dir']}/{name}") == (vm.host.uid, vm.host.gid)


def test_userns_with_caps_works_on_9p_and_files_belong_to_the_host_user(vm: VM, facts: dict) -> None:
    c = facts["9p"][USERNS]
    assert (c["append_host_file"], c["create_file"], c["mkdir"], c["chmod_host_file"]) == ("ok",) * 4
    assert c["seen_owner_of_new_file"] == f"{vm.host.uid}:{vm.host.gid}"
    assert host_owner(f"{c['dir']}/new_file") == (vm.host.uid, vm.host.gid)


def test_userns_with_caps_cannot_create_on_virtiofs_of_a_root_virtiofsd(facts: dict) -> None:
    """virtiofsd takes the caller's uid (200001) to the host, where the directory is the host user's 0755."""
    c = facts["virtiofs"][USERNS]
    assert (c["append_host_file"], c["chmod_host_file"]) == ("ok", "ok")
    assert (c["create_file"], c["mkdir"]) == ("no", "no")


def test_userns_with_caps_on_ext4_creates_files_of_the_env_uid(facts: dict) -> None:
    assert facts[EXT4][USERNS]["seen_owner_of_new_file"] == "200001:200001"
