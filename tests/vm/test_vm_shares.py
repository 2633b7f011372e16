"""An env on a project on each of Lima's host shares (9p, virtiofs), driven from the host side over ssh.

Both shares refuse idmapped mounts (facts in docs/real-vm-measured.md). On 9p the host decides who owns new files
(QEMU runs as the host user), so the env joins a user namespace of its own ("userns" mode: the share itself, at
full speed); this virtiofsd runs as root and creates files as the caller, so the project goes through bindfs --map
("mapped" mode). Either way the env keeps its own uid, and what it writes belongs to the host user on the host.
"""

from __future__ import annotations

import os
import secrets
import typing as t
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.vm.lb import LB
from tests.vm.machine import VM, Share


@dataclass
class Env:
    name: str
    project: Path
    share: Share


@pytest.fixture(scope="module", params=["9p", "virtiofs"])
def env(request: pytest.FixtureRequest, vm: VM, lb: LB) -> t.Iterator[Env]:
    share = vm.share(request.param)
    project = vm.host_project(share, f"My App {request.param} {secrets.token_hex(2)}")
    r = lb("create", str(project))
    assert r.returncode == 0, r.stderr
    e = Env(r.stdout.decode().strip(), project, share)
    yield e
    lb("delete", e.name, "--yes")


def test_guest_sees_the_share_owned_by_the_host_user(vm: VM, env: Env) -> None:
    r = vm.ssh(f"stat -c '%u %g' '{env.project}'; findmnt -n -o FSTYPE -T '{env.project}'")
    owner, fstype = r.stdout.splitlines()
    assert owner == f"{vm.host.uid} {vm.host.gid}"
    assert fstype == env.share.kind


def test_shell_runs_and_env_is_listed(lb: LB, env: Env) -> None:
    r = lb("shell", str(env.project), "--", "pwd")
    assert (r.returncode, r.stdout.decode().strip()) == (0, str(env.project)), r.stderr
    rows = {row["name"]: row for row in lb.json("list")}
    assert rows[env.name]["project"] == str(env.project)
    assert rows[env.name]["status"] == "running"


MODES = {"9p": "userns", "virtiofs": "mapped"}


def test_each_share_gets_its_mode_and_the_env_keeps_its_own_uid(lb: LB, vm: VM, env: Env) -> None:
    """The mode the guest reports (the host's ``list --json`` has no mode column) and the uid it means: the env's
    own, never the guest login user's (issue 13, point 1). Through bindfs the project looks like the env's own;
    in userns mode it is the login user's (the host user's uid), as on the share."""
    line = lb.guest_envs()[env.name]
    assert line["mode"] == MODES[env.share.kind]
    r = lb("shell", str(env.project), "--", "sh", "-c", "id -u; id -un; stat -c %u .")
    uid, name, owner = r.stdout.decode().split()
    assert name == env.name and uid != str(vm.uid), r.stdout
    assert owner == (uid if line["mode"] == "mapped" else str(vm.host.uid))


def test_what_the_env_writes_belongs_to_the_host_user_on_the_host(lb: LB, vm: VM, env: Env) -> None:
    r = lb.shell(env.project, "mkdir -p out/d && echo from-env > out/d/f && ln -s f out/d/l && chmod 0600 out/d/f")
    assert r.returncode == 0, r.stderr
    f = env.project / "out" / "d" / "f"
    assert f.read_text() == "from-env\n"
    for path in (env.project / "out", env.project / "out" / "d", f):
        st = os.lstat(path)
        assert (st.st_uid, st.st_gid) == (vm.host.uid, vm.host.gid), path
    assert os.lstat(f).st_mode & 0o777 == 0o600
    assert os.readlink(env.project / "out" / "d" / "l") == "f"


def test_host_side_changes_are_seen_in_the_env(lb: LB, env: Env, vm: VM) -> None:
    p = env.project / "from-host.txt"
    p.write_text("hello from the host\n")
    os.chown(p, vm.host.uid, vm.host.gid)
    r = lb.shell(env.project, "cat from-host.txt && echo more >> from-host.txt")
    assert r.stdout == b"hello from the host\n", r.stderr
    assert p.read_text() == "hello from the host\nmore\n"


def test_chown_in_the_project_never_changes_the_host_owner(lb: LB, vm: VM, env: Env) -> None:
    lb.shell(env.project, "echo x > c; chown 0:0 c 2>/dev/null; chgrp 0 c 2>/dev/null; true")
    st = os.lstat(env.project / "c")
    assert (st.st_uid, st.st_gid) == (vm.host.uid, vm.host.gid)


def test_home_is_writable(lb: LB, env: Env) -> None:
    r = lb.shell(env.project, "touch ~/x && mkdir -p ~/.config/a && echo ok")
    assert (r.returncode, r.stdout) == (0, b"ok\n"), r.stderr


def test_other_projects_guest_home_and_processes_are_invisible(lb: LB, vm: VM, env: Env) -> None:
    other = vm.host_project(env.share, "other-" + secrets.token_hex(3))
    (other / "secret").write_text("s")
    vm.ssh("echo s > ~/secret")
    r = lb.shell(env.project, f"cat '{other}/secret' {vm.home}/secret")
    assert r.returncode != 0 and r.stdout == b""
    assert lb.shell(env.project, f"ls '{env.share.path}'").stdout.decode().split("\n")[:-1] == [env.project.name]
    procs = lb("shell", str(env.project), "--", "ps", "-e", "-o", "args=").stdout.decode()
    assert "sshd" not in procs and "systemd" not in procs


def test_verify_holds_on_the_share(lb: LB, env: Env) -> None:
    """llima-box verify's battery (own uid, keyrings, nothing else visible, ...) in a real systemd guest."""
    r = lb("verify", str(env.project))
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()


def test_no_privilege_gain_though_the_uid_has_sudo(lb: LB, env: Env) -> None:
    for cmd in ("sudo -n true", "su -c true root </dev/null", "mount -t tmpfs x /tmp", "chroot / true"):
        assert lb.shell(env.project, cmd).returncode != 0, cmd


def test_git_works_in_the_project(lb: LB, env: Env) -> None:
    """Also in userns mode, where the project is the login user's: git does not refuse it as someone else's."""
    r = lb.shell(env.project, "git init -q g && cd g && git -c user.name=a -c user.email=a@b commit -q --allow-empty "
                              "-m one && git status --short && git log --format=%s")
    assert (r.returncode, r.stdout) == (0, b"one\n"), r.stderr


def test_shares_from_the_host_share_are_read_only_or_writable_in_the_env(lb: LB, vm: VM, env: Env) -> None:
    """``--share`` of a host file (as ~/.gitconfig) and a host directory (read-write), on 9p (userns mode: mounted
    at once in the running env) and virtiofs (mapped mode: the directory through bindfs, from the next start)."""
    cfg, data = (vm.host_project(env.share, f"{what}-{secrets.token_hex(3)}") for what in ("cfg", "data"))
    (cfg / "gitconfig").write_text("[user]\n\tname = Host User\n")
    os.chown(cfg / "gitconfig", vm.host.uid, vm.host.gid)
    r = lb("create", str(env.project), "--share", f"{cfg}/gitconfig:~/.gitconfig:ro", "--share", f"{data}:~/data:rw")
    assert r.returncode == 0, r.stderr
    if env.share.kind == "virtiofs":
        assert b"from its next start" in r.stderr, r.stderr
        assert lb("stop", str(env.project)).returncode == 0
    r = lb.shell(env.project, "git config user.name; echo x >~/.gitconfig 2>/dev/null || echo refused; "
                              "echo from-env >~/data/f && echo wrote")
    assert r.stdout.decode().splitlines() == ["Host User", "refused", "wrote"], r.stderr
    st = os.lstat(data / "f")
    assert (st.st_uid, st.st_gid, (data / "f").read_text()) == (vm.host.uid, vm.host.gid, "from-env\n")
    assert (cfg / "gitconfig").read_text() == "[user]\n\tname = Host User\n"
    lb("create", str(env.project), "--unshare", "~/.gitconfig", "--unshare", "~/data")
