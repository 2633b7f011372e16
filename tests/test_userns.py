"""A project on a share where the host decides who owns new files (Lima's 9p, macOS's virtiofs; here a bindfs
that shows everything as alice's): the env joins a user namespace of its own (userns mode), runs as its own uid
and reaches the project at full speed through CAP_DAC_OVERRIDE and CAP_FOWNER that count there only."""

from __future__ import annotations

import json
import secrets

import pytest

from tests.guest import PREFIX, Guest
from tests.test_isolation import inside
from tests.test_mapped import assert_no_per_uid_kernel_object_is_the_owners


@pytest.fixture
def share_project(guest: Guest):
    """A project of alice's on a filesystem that refuses idmapped mounts and shows every file as alice's."""
    tag = secrets.token_hex(3)
    base, path = f"/var/tmp/hd{tag}", f"/Users/alice/hd{tag}"
    guest.sh(f"mkdir -p {base} {path} && mount -t tmpfs t {base} && chown alice: {base} && "
             f"bindfs --force-user=alice --force-group=alice -o allow_other {base} {path} && "
             f"echo hi > {path}/f && chmod 0600 {path}/f").check_returncode()
    yield path
    guest.sh(f"umount -l {path}; umount -l {base}; rmdir {path} {base}")


@pytest.fixture
def userns_env(guest, env_name, share_project):
    assert guest.guest_script("create", env_name, share_project).returncode == 0
    yield env_name, share_project
    guest.guest_script("delete", env_name)


def listed_mode(guest: Guest, name: str) -> str:
    rows = [json.loads(line) for line in guest.guest_script("list").stdout.splitlines()]
    return next(row["mode"] for row in rows if row["name"] == name)


def test_a_share_where_the_host_decides_gives_userns_mode_with_the_envs_own_uid(guest, userns_env):
    assert listed_mode(guest, userns_env[0]) == "userns"
    r = inside(guest, userns_env, "id -un; stat -c %U f .; cat f; ls -a")
    assert r.stdout.split() == [userns_env[0], "alice", "alice", "hi", ".", "..", "f"], r.stderr  # no probe left


def test_the_project_is_writable_and_what_it_writes_is_the_owners(guest, userns_env):
    r = inside(guest, userns_env, "echo more >> f && mkdir -p d && echo n > d/new && chmod 755 d/new && "
                                  "touch ~/home-ok && mv d/new d/moved && rm f && ls d && stat -c %U ~/home-ok")
    assert (r.returncode, r.stdout.split()) == (0, ["moved", userns_env[0]]), r.stderr
    assert guest.run(["stat", "-c", "%U %a", f"{userns_env[1]}/d/moved"]).stdout.split() == ["alice", "755"]


def test_git_works_on_the_owners_repository(guest, userns_env):
    r = inside(guest, userns_env, "git init -q r && cd r && git -c user.name=a -c user.email=a@b commit -q "
                                  "--allow-empty -m one && git status --short && git log --format=%s")
    assert (r.returncode, r.stdout) == (0, "one\n"), r.stderr


def test_the_rights_reach_only_the_project_and_the_home(guest, userns_env):
    """Root's files, alice's files outside the project and the other envs' stay closed; no other capability."""
    guest.sh("echo s > /Users/alice/outside && chown alice: /Users/alice/outside && chmod 0600 /Users/alice/outside")
    r = inside(guest, userns_env, "grep -E '^Cap(Eff|Bnd|Amb)' /proc/self/status; touch /etc/x /usr/x 2>&1; "
                                  "cat /proc/1/environ /Users/alice/outside 2>&1; chown 0 f 2>&1; "
                                  "chmod u+s f 2>&1; stat -c %a f")
    lines = r.stdout.splitlines()
    assert lines[:3] == ["CapEff:\t000000000000000a", "CapBnd:\t000000000000000a", "CapAmb:\t000000000000000a"]
    assert lines[-1] == "600", lines  # no setuid bit
    refused = lines[3:-1]
    assert len(refused) == 6 and all(x.endswith(("Read-only file system", "Permission denied", "No such file or "
                                                 "directory", "Invalid argument", "Operation not permitted"))
                                     for x in refused), refused


def test_no_per_uid_kernel_object_is_the_owners(guest, userns_env):
    assert_no_per_uid_kernel_object_is_the_owners(guest, userns_env)


def test_verify_holds_in_userns_mode(guest, userns_env):
    r = guest.enter(*userns_env, "python3", f"{PREFIX}/lib/verify-env.py", userns_env[1])
    assert r.returncode == 0, r.stdout


def test_delete_releases_the_user_namespace(guest, userns_env):
    pin = f"/run/llima-box/roots/{userns_env[0]}.userns"
    assert guest.run(["findmnt", "-n", pin]).returncode == 0
    assert guest.guest_script("delete", userns_env[0]).returncode == 0
    assert guest.run(["test", "-e", pin]).returncode == 1
