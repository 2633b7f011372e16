"""A project on a filesystem that refuses idmapped mounts (here overlayfs; on Lima every 9p and virtiofs share):
the env still runs as its own uid (bindfs --map), and no per-uid kernel object is the owner's."""

from __future__ import annotations

import secrets

import pytest

from tests.guest import Guest
from tests.test_isolation import inside

#: Run by the project's owner outside the env: an abstract socket that reports its peer's uid (SO_PEERCRED).
PEERCRED = """
import os, socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])  # a socket file in the env's home: an isolated env reaches no abstract socket of the guest
os.chmod(sys.argv[1], 0o777)
s.listen()
print("listening", flush=True)
c, _ = s.accept()
print(struct.unpack("3i", c.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1], flush=True)
"""
KEY = """
import ctypes, os, sys
nr = {"x86_64": (248, 250), "aarch64": (217, 219)}[os.uname().machine]
libc = ctypes.CDLL(None, use_errno=True)
if sys.argv[1] == "add":
    print(libc.syscall(nr[0], b"user", b"owners-key", b"s3cr3t", 6, -4) > 0)
else:
    print(libc.syscall(nr[1], 10, -4, b"user", b"owners-key", 0) > 0)
"""


@pytest.fixture
def overlay_project(guest: Guest):
    """A project of alice's on an overlayfs (which refuses idmapped mounts) under an allowed root."""
    tag = secrets.token_hex(3)
    base, path = f"/var/tmp/ov{tag}", f"/Users/alice/ov{tag}"
    guest.sh(f"mkdir -p {base} {path} && mount -t tmpfs t {base} && mkdir {base}/l {base}/u {base}/w && "
             f"mount -t overlay ov -o lowerdir={base}/l,upperdir={base}/u,workdir={base}/w {path} && "
             f"chown alice: {path} && echo hi > {path}/f && chown alice: {path}/f").check_returncode()
    yield path
    guest.sh(f"umount -l {path}; umount -l {base}; rmdir {path} {base}")


@pytest.fixture
def mapped_env(guest, env_name, overlay_project):
    assert guest.guest_script("create", env_name, overlay_project).returncode == 0
    yield env_name, overlay_project
    guest.guest_script("delete", env_name)


def test_idmap_refused_gives_mapped_mode_with_the_envs_own_uid(guest, mapped_env):
    mode = [line for line in guest.guest_script("list").stdout.splitlines() if mapped_env[0] in line]
    assert '"mode":"mapped"' in mode[0]
    r = inside(guest, mapped_env, "id -un; stat -c %U f .")
    assert r.stdout.split() == [mapped_env[0]] * 3  # the project looks like its own, as with idmap


def test_the_project_is_writable_and_what_it_writes_is_the_owners(guest, mapped_env):
    r = inside(guest, mapped_env, "echo more >> f && mkdir -p d && echo n > d/new && chmod 755 d/new && "
                                  "touch ~/home-ok && mv d/new d/moved && rm f && ls d")
    assert (r.returncode, r.stdout) == (0, "moved\n"), r.stderr
    project = mapped_env[1]
    assert guest.run(["stat", "-c", "%U:%G %a", f"{project}/d", f"{project}/d/moved"]).stdout.split() == [
        "alice:alice", "755", "alice:alice", "755"]


def test_new_files_never_get_setuid_bits(guest, mapped_env):
    """Refused at the call (the entry's seccomp filter); bindfs strips the bits of whatever gets through."""
    script = ("import os\ntry:\n    os.close(os.open('s', os.O_CREAT | os.O_WRONLY, 0o6755))\nexcept OSError:\n"
              "    open('s', 'w').close()\nos.mkdir('g', 0o2775)")
    assert guest.enter(*mapped_env, "python3", "-c", script).returncode == 0
    modes = guest.run(["stat", "-c", "%a", f"{mapped_env[1]}/s", f"{mapped_env[1]}/g"]).stdout.split()
    assert [int(m, 8) & 0o6000 for m in modes] == [0, 0] and len(modes) == 2


def assert_no_per_uid_kernel_object_is_the_owners(guest: Guest, env: tuple[str, str]) -> None:
    """The keyring and the identity a service sees (SO_PEERCRED) are the env's own, not the owner's."""
    import subprocess

    assert guest.run(["python3", "-c", KEY, "add"], user="alice").stdout == "True\n"
    assert guest.enter(*env, "python3", "-c", KEY, "search").stdout == "False\n"
    name = f"lb-peer-{secrets.token_hex(3)}"
    holder = guest.run(["cat", f"/run/llima-box/{env[0]}.holder"]).stdout.split()[0]
    with subprocess.Popen(guest.argv(["python3", "-c", PEERCRED, f"/proc/{holder}/root/home/{env[0]}/{name}"]),
                          stdout=subprocess.PIPE, text=True) as service:
        try:
            assert service.stdout.readline() == "listening\n"
            connect = f"import socket; socket.socket(socket.AF_UNIX).connect('/home/{env[0]}/{name}')"
            assert guest.enter(*env, "python3", "-c", connect).returncode == 0
            seen = service.stdout.readline().strip()
        finally:
            service.kill()
    assert seen == guest.run(["id", "-u", env[0]]).stdout.strip() != "1501"


def test_no_per_uid_kernel_object_is_the_owners(guest, mapped_env):
    assert_no_per_uid_kernel_object_is_the_owners(guest, mapped_env)


def test_the_env_outlives_a_restart_in_mapped_mode(guest, mapped_env):
    assert inside(guest, mapped_env, "echo keep > k").returncode == 0
    holder = guest.run(["cat", f"/run/llima-box/{mapped_env[0]}.holder"]).stdout.split()[0]
    guest.run(["kill", "-KILL", holder]).check_returncode()
    r = inside(guest, mapped_env, "cat k; id -un")
    assert r.stdout.split() == ["keep", mapped_env[0]]
