"""Each property of docs/isolation.md, attacked from inside an env of the real test guest."""

from __future__ import annotations

import json
import secrets
import time

import pytest

from tests.guest import Guest


@pytest.fixture
def env(guest: Guest, env_name: str, project: str) -> tuple[str, str]:
    assert guest.guest_script("create", env_name, project).returncode == 0
    yield env_name, project
    guest.guest_script("delete", env_name)


def inside(guest: Guest, env: tuple[str, str], script: str):
    return guest.enter(env[0], env[1], "sh", "-c", script)


def test_env_runs_as_its_own_unprivileged_user(guest, env):
    r = inside(guest, env, "id -un; id -G; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status")
    lines = r.stdout.split("\n")
    assert lines[0] == env[0]
    assert lines[1] == guest.run(["id", "-g", env[0]]).stdout.strip()
    assert "CapEff:\t0000000000000000" in r.stdout
    assert "CapBnd:\t0000000000000000" in r.stdout
    assert "NoNewPrivs:\t1" in r.stdout


def test_other_projects_homes_and_guest_files_are_invisible(guest, env):
    other = guest.make_project("alice", "other" + secrets.token_hex(3))
    guest.run(["sh", "-c", f"echo secret > {other}/s; echo secret > /home/alice.guest/s; echo s > /root/s"])
    for path in (f"{other}/s", "/home/alice.guest/s", "/root/s", "/Users/bob", "/var/lib/llima-box/envs"):
        assert inside(guest, env, f"test -e {path}").returncode == 1, path
    for path in ("/etc/shadow", "/etc/sudoers.d/llima-box"):
        assert inside(guest, env, f"cat {path}").returncode != 0, path
    assert inside(guest, env, "ls /Users").stdout.split() == ["alice"]
    assert inside(guest, env, "ls /Users/alice").stdout.split() == [env[1].rsplit("/", 1)[1]]


def test_another_envs_project_and_home_are_invisible(guest, env, env_name):
    other = guest.make_project("alice", "o" + secrets.token_hex(3))
    name2 = env_name + "b"
    assert guest.enter(name2, other, "sh", "-c", "echo s > ~/h; echo s > p").returncode == 0
    try:
        r = inside(guest, env, f"cat {other}/p /home/{name2}/h /var/lib/llima-box/home/{name2}/h; ls /home")
        assert "s\n" not in r.stdout
        assert r.stdout.split() == [env[0]]
    finally:
        guest.guest_script("delete", name2)


def test_system_is_read_only_and_only_project_home_scratch_writable(guest, env):
    for path in ("/usr/x", "/etc/x", "/x", "/var/x", "/run/x", "/Users/alice/x", "/home/x"):
        assert inside(guest, env, f"touch {path}").returncode != 0, path
    for path in (f"{env[1]}/x", "~/x", "/tmp/x", "/var/tmp/x", "/dev/shm/x"):
        assert inside(guest, env, f"touch {path}").returncode == 0, path


def test_project_files_belong_to_the_project_owner(guest, env):
    assert inside(guest, env, "mkdir d && echo hi > d/f && stat -c %U d/f").stdout.strip() == env[0]
    r = guest.run(["stat", "-c", "%U %G %a", f"{env[1]}/d/f", f"{env[1]}/d"])
    assert r.stdout.split("\n")[:2] == ["alice alice 644", "alice alice 755"]
    assert guest.run(["stat", "-c", "%U %a", env[1]]).stdout.strip() == "alice 755"


def test_processes_of_guest_and_other_envs_are_invisible(guest, env):
    guest.run(["sh", "-c", "sleep 30 >/dev/null 2>&1 &"])
    r = inside(guest, env, "ps -e -o pid=,uid=,args=")
    procs = [line.split(None, 2) for line in r.stdout.splitlines()]
    uid = guest.run(["id", "-u", env[0]]).stdout.strip()
    assert {user for _, user, _ in procs} == {"0", uid}
    assert [(pid, args) for pid, user, args in procs if user == "0"] == [
        ("1", next(a for p, _, a in procs if p == "1"))]
    assert "sleep 30" not in r.stdout and "sshd" not in r.stdout
    r = inside(guest, env, "ls /proc/1/root/ || cat /proc/1/environ")
    assert r.returncode != 0 and r.stdout == ""


def test_scratch_and_ipc_are_private(guest, env, env_name):
    other = guest.make_project("alice", "i" + secrets.token_hex(3))
    name2 = env_name + "c"
    try:
        r = inside(guest, env, "echo a > /tmp/t; echo a > /var/tmp/t; echo a > /dev/shm/t; ipcmk -M 4096")
        assert r.returncode == 0
        r = guest.enter(name2, other, "sh", "-c", "cat /tmp/t /var/tmp/t /dev/shm/t; ipcs -m | grep -c 4096")
        assert "a" not in r.stdout.split("\n")[:3]
        assert r.stdout.strip().endswith("0")
        assert inside(guest, env, "cat /tmp/t").stdout == "a\n"  # a second entry sees the first's /tmp
    finally:
        guest.guest_script("delete", name2)


def test_no_privilege_gain(guest, env):
    for cmd in ("sudo -n true", "su -c true root </dev/null", "mount -t tmpfs x /tmp", "umount /tmp",
                "mount -o remount,rw /usr", "chroot / true"):
        assert inside(guest, env, cmd).returncode != 0, cmd
    assert inside(guest, env, "grep -c ' /usr .*ro,' /proc/self/mountinfo").stdout.strip() == "1"


def test_tiocsti_cannot_push_input(guest, env):
    script = ("import fcntl, os, pty, termios\n"
              "m, s = pty.openpty()\n"
              "try:\n    fcntl.ioctl(s, termios.TIOCSTI, b'x'); print('pushed')\n"
              "except OSError as e:\n    print('refused', e.errno)\n")
    assert inside(guest, env, f"python3 -c \"{script}\"").stdout.startswith("refused")


def test_links_planted_in_project_do_not_reach_outside(guest, env):
    guest.run(["sh", "-c", "echo secret > /Users/alice/outside"])
    r = inside(guest, env, "ln -s /Users/alice/outside l1; ln -s ../outside l2; cat l1 l2")
    assert "secret" not in r.stdout
    assert inside(guest, env, "ln /etc/shadow h1").returncode != 0


def test_a_holder_on_its_way_out_counts_as_dead(guest, env):
    """A killed holder stays in /proc a while (SIGKILL pending, its namespaces emptying, a zombie): an
    entry then must start a new one, not join the dying one. A zombie in the holder file stands for it."""
    assert inside(guest, env, "true").returncode == 0
    guest.sh("setsid sh -c 'sleep 0 & echo $! >/tmp/zombie; exec sleep 60' </dev/null >/dev/null 2>&1 &")
    for _ in range(100):
        zombie = guest.run(["cat", "/tmp/zombie"]).stdout.strip()
        stat = guest.run(["cat", f"/proc/{zombie}/stat"]).stdout if zombie else ""
        if stat.rpartition(") ")[2].startswith("Z"):
            break
        time.sleep(0.05)
    fields = stat.rpartition(") ")[2].split()
    assert fields[0] == "Z"
    try:
        guest.sh(f"echo {zombie} {fields[19]} >/run/llima-box/{env[0]}.holder")
        listed = [json.loads(line) for line in guest.guest_script("list").stdout.splitlines()]
        assert [e["alive"] for e in listed if e["name"] == env[0]] == [False]
        assert inside(guest, env, "echo ok").stdout == "ok\n"
    finally:
        guest.run(["kill", fields[1]])
        guest.run(["rm", "-f", "/tmp/zombie"])


def test_persistence_and_concurrent_entries(guest, env):
    assert inside(guest, env, "echo keep > /tmp/k").returncode == 0
    import concurrent.futures as cf
    with cf.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: inside(guest, env, "cat /tmp/k"), range(20)))
    assert [r.stdout for r in results] == ["keep\n"] * 20


def test_reboot_rebuilds_namespaces_and_keeps_data(guest, env):
    assert inside(guest, env, "echo h > ~/h; echo p > p").returncode == 0
    holder = guest.run(["cat", f"/run/llima-box/{env[0]}.holder"]).stdout.split()[0]
    guest.run(["kill", "-KILL", holder])
    listed = [json.loads(line) for line in guest.guest_script("list").stdout.splitlines()]
    assert [e["alive"] for e in listed if e["name"] == env[0]] == [False]
    r = inside(guest, env, "cat ~/h p")
    assert r.stdout == "h\np\n"
    listed = [json.loads(line) for line in guest.guest_script("list").stdout.splitlines()]
    assert [e["alive"] for e in listed if e["name"] == env[0]] == [True]
