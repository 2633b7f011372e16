"""Trust boundaries of the guest verbs, attacked for real in the test guest: whose projects and envs
a caller may touch, what a deleted env leaves to the next, and what a failed create leaves behind."""

from __future__ import annotations

import json
import secrets
import shlex
import subprocess

import pytest

from tests.guest import PREFIX, REPO, Guest
from tests.test_guest_contract import VERBS, snapshot


def listed(guest: Guest, user: str = "alice") -> dict[str, dict]:
    r = guest.guest_script("list", user=user) if user != "root" else guest.run([f"{PREFIX}/list"])
    return {e["name"]: e for e in map(json.loads, r.stdout.splitlines())}


@pytest.fixture
def bob_may_sudo(guest: Guest):
    """bob in the group llima-box, and provisioning that lets its members run the verbs."""
    guest.run(["sh", "-c", "getent group llima-box >/dev/null || groupadd --system llima-box; "
                           "usermod -aG llima-box bob"]).check_returncode()
    guest.reprovision("--group", "llima-box").check_returncode()
    yield
    guest.reprovision("--group", "").check_returncode()


def test_another_accounts_project_is_refused(guest, env_name):
    bobs = guest.make_project("bob", "secret" + secrets.token_hex(3))
    guest.run(["sh", "-c", f"echo KEY > {bobs}/private && chown bob: {bobs}/private && chmod 600 {bobs}/private"])
    before = snapshot(guest)
    for verb, code, lead in VERBS:
        r = guest.guest_script(verb, env_name, bobs, *(["--", "cat", f"{bobs}/private"] if verb == "enter" else []))
        want = f"{lead}llima-box-guest: project belongs to another account: {bobs}\n"
        assert (r.returncode, r.stderr) == (code, want)
        assert "KEY" not in r.stdout
    assert snapshot(guest) == before


def test_only_root_names_the_account(guest, env_name, project):
    r = guest.guest_script("create", env_name, project, "--owner", "alice")
    assert (r.returncode, r.stderr) == (2, "llima-box-guest: --owner is only for root callers\n")
    r = guest.run([f"{PREFIX}/create", env_name, project, "--owner", "bob"])  # serve acting for bob
    assert (r.returncode, r.stderr) == (2, f"llima-box-guest: project belongs to another account: {project}\n")
    try:
        r = guest.run([f"{PREFIX}/enter", env_name, project, "--owner", "alice", "--", "id", "-un"])
        assert (r.returncode, r.stdout) == (0, env_name + "\n")
        r = guest.run([f"{PREFIX}/enter", env_name, project, "--owner", "bob", "--", "true"])
        assert (r.returncode, r.stderr) == (125, f"Error: llima-box-guest: env {env_name} belongs to another account\n")
    finally:
        guest.guest_script("delete", env_name)


def test_list_and_delete_touch_the_callers_envs_only(guest, bob_may_sudo, env_name, project):
    bobs = guest.make_project("bob", "b" + secrets.token_hex(3))
    mine, his = env_name, env_name + "b"
    assert guest.guest_script("create", mine, project).returncode == 0
    guest.reprovision().check_returncode()  # an upgrade that names no group keeps it
    assert guest.guest_script("create", his, bobs, user="bob").returncode == 0
    try:
        assert mine in listed(guest) and his not in listed(guest)
        assert his in listed(guest, "bob") and mine not in listed(guest, "bob")
        everyone = listed(guest, "root")
        assert (everyone[mine]["owner"], everyone[his]["owner"]) == (1501, 1502)
        r = guest.guest_script("delete", his)
        assert (r.returncode, r.stderr) == (2, f"llima-box-guest: env {his} belongs to another account\n")
        assert guest.guest_script("enter", his, bobs, "--", "true", user="bob").returncode == 0  # still whole
    finally:
        guest.guest_script("delete", mine)
        guest.guest_script("delete", his, user="bob")
    assert his not in listed(guest, "root")


def test_env_homes_are_private(guest, env_name, project):
    assert guest.enter(env_name, project, "sh", "-c", "umask 022; mkdir -p ~/.config && echo t > ~/.config/token"
                       ).returncode == 0
    image = f"/var/lib/llima-box/home/{env_name}.img"  # the home's filesystem (lib/home.sh)
    try:
        assert guest.run(["stat", "-c", "%a %U", image]).stdout == "600 root\n"
        assert guest.enter(env_name, project, "stat", "-c", "%a %U", f"/home/{env_name}").stdout == f"700 {env_name}\n"
        holder = guest.run(["cat", f"/run/llima-box/{env_name}.holder"]).stdout.split()[0]
        for path in (image, f"/proc/{holder}/root/home/{env_name}/.config/token"):
            assert guest.run(["cat", path], user="bob").returncode != 0
    finally:
        guest.guest_script("delete", env_name)


KEYS = """
import ctypes, os, sys
keyctl = {"x86_64": 250, "aarch64": 219}[os.uname().machine]
add_key = {"x86_64": 248, "aarch64": 217}[os.uname().machine]
libc = ctypes.CDLL(None, use_errno=True)
if sys.argv[1] == "add":
    print(libc.syscall(add_key, b"user", b"lbsecret", b"s3cr3t", 6, -4) > 0)
else:  # KEYCTL_SEARCH in the user keyring
    print(libc.syscall(keyctl, 10, -4, b"user", b"lbsecret", 0) > 0)
"""


def test_a_new_env_inherits_nothing_of_a_deleted_ones_uid(guest, env_name, project):
    assert guest.enter(env_name, project, "python3", "-c", KEYS, "add").stdout == "True\n"
    old_uid = guest.run(["id", "-u", env_name]).stdout.strip()
    assert guest.guest_script("delete", env_name).returncode == 0
    root_sees = guest.run(["setpriv", "--reuid", old_uid, "--regid", old_uid, "--clear-groups",
                           "python3", "-c", KEYS, "search"])
    assert root_sees.stdout == "False\n"  # delete cleared the keyring
    try:
        assert guest.enter(env_name, project, "python3", "-c", KEYS, "search").stdout == "False\n"
        assert guest.run(["id", "-u", env_name]).stdout.strip() != old_uid
    finally:
        guest.guest_script("delete", env_name)


def test_a_refused_project_leaves_nothing_behind(guest, env_name):
    roots = f"/Users/alice/r{secrets.token_hex(3)}"
    guest.run(["install", "-d", "-m", "0755", roots]).check_returncode()  # root's, under an allowed root
    before = snapshot(guest)
    for verb, code, lead in VERBS:
        r = guest.guest_script(verb, env_name, roots)
        assert r.returncode == code
        assert r.stderr.startswith(lead + "llima-box-guest: project belongs to ")
    assert snapshot(guest) == before


def test_a_failed_first_start_is_rolled_back(guest, env_name, project):
    before = snapshot(guest)
    guest.run(["mv", f"{PREFIX}/lib/project-mount.py", f"{PREFIX}/lib/project-mount.py.off"]).check_returncode()
    try:
        r = guest.guest_script("create", env_name, project)
    finally:
        guest.run(["mv", f"{PREFIX}/lib/project-mount.py.off", f"{PREFIX}/lib/project-mount.py"])
    assert r.returncode == 1 and r.stderr.startswith(f"llima-box-guest: could not start env {env_name}")
    assert snapshot(guest) == before


def test_delete_does_not_hang_on_a_holder_nobody_reaps(guest, env_name, project):
    """The holder's parent is a subreaper that never waits (as a guest whose PID 1 does not reap)."""
    script = ("import ctypes, subprocess, sys, time\n"
              "ctypes.CDLL(None).prctl(36, 1)\n"  # PR_SET_CHILD_SUBREAPER
              f"subprocess.run(['{PREFIX}/create', sys.argv[1], sys.argv[2]], check=True)\n"
              "print('made', flush=True)\n"
              "time.sleep(120)\n")
    with subprocess.Popen(guest.argv(["python3", "-c", script, env_name, project]),
                          stdout=subprocess.PIPE, text=True) as parent:
        try:
            assert parent.stdout.readline() == "made\n"
            r = guest.guest_script("delete", env_name, timeout=60)
            assert r.returncode == 0
            assert env_name not in listed(guest)
        finally:
            parent.kill()


INSTALL = ["bash", str(REPO / "provision" / "install.sh"), "--user", "alice"]


def test_roots_under_which_no_project_could_lie_are_refused(guest):
    before = guest.run(["cat", "/etc/llima-box/guest.conf"]).stdout
    for root in ("/var", "/var/lib/x", "/var/log", "/usr/local", "/etc/x", "/tmp/x", "/opt/x", "/proc/1"):
        r = guest.run([*INSTALL, "--roots", f"/Users/alice:{root}"])
        assert (r.returncode, r.stderr) == (
            2, f"llima-box-provision: root {root} is a system directory: no project under it would be accepted\n")
    assert guest.run(["cat", "/etc/llima-box/guest.conf"]).stdout == before


def test_a_root_under_var_holds_projects(guest, env_name):
    guest.run(["install", "-d", "-o", "alice", "-g", "alice", "/var/home/alice/p", "/var/lib/lbx/p"]
              ).check_returncode()
    try:
        guest.run([*INSTALL, "--roots", f"{guest.roots}:/var/home"]).check_returncode()
        r = guest.enter(env_name, "/var/home/alice/p", "sh", "-c", "touch made && pwd")
        assert (r.returncode, r.stdout) == (0, "/var/home/alice/p\n")
        for project, why in (("/var/home", "an allowed root itself"), ("/var/lib/lbx/p", "a system directory")):
            r = guest.guest_script("create", env_name + "x", project)
            assert r.returncode == 2 and why in r.stderr, r.stderr
    finally:
        guest.guest_script("delete", env_name)
        guest.reprovision().check_returncode()
        guest.run(["rm", "-rf", "/var/home", "/var/lib/lbx"])


def test_an_env_lives_in_a_cgroup_of_its_own(guest, env_name, project):
    """Not in the session that started it (where logout would end it): llima-box/NAME of the cgroup2
    hierarchy here (no systemd; the real-VM tier checks the systemd scope). Every entry starts there,
    so what it leaves running stays in the env's cgroup too."""
    r = guest.enter(env_name, project, "sh", "-c",
                    "cat /proc/1/cgroup /proc/self/cgroup; (setsid sleep 987 </dev/null >/dev/null 2>&1 &)")
    try:
        assert r.returncode == 0
        row = listed(guest)[env_name]
        assert row["cgroup"].endswith(f"/llima-box/{env_name}")
        holder = guest.run(["cat", f"/run/llima-box/{env_name}.holder"]).stdout.split()[0]
        assert guest.run(["grep", "^0::", f"/proc/{holder}/cgroup"]).stdout == f"0::/llima-box/{env_name}\n"
        assert r.stdout.count(f"0::/llima-box/{env_name}\n") == 2  # the holder's and the entry's, seen inside
        daemon = guest.run(["pgrep", "-f", "^sleep 987$"]).stdout.split()
        assert len(daemon) == 1
        assert guest.run(["grep", "^0::", f"/proc/{daemon[0]}/cgroup"]).stdout == f"0::/llima-box/{env_name}\n"
    finally:
        assert guest.guest_script("delete", env_name).returncode == 0
    assert guest.run(["test", "-e", row["cgroup"]]).returncode == 1


SESSION_KEY = """
import ctypes, os, sys
add_key, keyctl = {"x86_64": (248, 250), "aarch64": (217, 219)}[os.uname().machine]
libc = ctypes.CDLL(None, use_errno=True)
if sys.argv[1] == "add":  # into the session keyring sshd's pam_keyinit made for this login
    print(libc.syscall(add_key, b"user", b"login-secret", b"s3cr3t", 6, -3) > 0)
else:
    print(libc.syscall(keyctl, 10, -3, b"user", b"login-secret", 0) > 0)
"""


@pytest.mark.parametrize("terminal", [False, True])
def test_the_callers_session_keyring_stays_outside(guest, env_name, project, terminal):
    """A key the login keeps in its session keyring (Kerberos tickets, say) is not the env's to read."""
    enter = shlex.join(["sudo", "-n", f"{PREFIX}/enter", env_name, project,
                        "--", "python3", "-c", SESSION_KEY, "search"])
    add = shlex.join(["python3", "-c", SESSION_KEY, "add"])
    script = f"{add} && " + (shlex.join(["script", "-qec", enter, "/dev/null"]) if terminal else enter)
    try:
        r = subprocess.run(guest.ssh_argv(script), capture_output=True, text=True, timeout=60)
        seen = [word.strip("^@") for word in r.stdout.split()]  # script(1) echoes its stdin's EOF as ^@
        assert seen[:2] == ["True", "False"], (r.stdout, r.stderr)
    finally:
        guest.guest_script("delete", env_name)


PLANT = """
import errno, os
open("tool", "w").close()
for what, call in (("chmod u+s", lambda: os.chmod("tool", 0o4755)), ("chmod g+s", lambda: os.chmod("tool", 0o2755)),
                   ("create u+s", lambda: os.close(os.open("made", os.O_CREAT | os.O_WRONLY, 0o4755))),
                   ("mknod u+s", lambda: os.mknod("node", 0o104755)), ("chmod 755", lambda: os.chmod("tool", 0o755))):
    try:
        call()
        print(what, "done")
    except OSError as e:
        print(what, errno.errorcode[e.errno])
"""


def test_no_setuid_file_can_be_planted_in_the_project(guest, env_name, project):
    """Other accounts would run it with the project owner's euid outside the env."""
    try:
        r = guest.enter(env_name, project, "python3", "-c", PLANT)
        assert r.stdout.splitlines() == ["chmod u+s EPERM", "chmod g+s EPERM", "create u+s EPERM", "mknod u+s EPERM",
                                         "chmod 755 done"], r.stderr
        modes = guest.run(["find", project, "-perm", "/6000"]).stdout
        assert modes == ""
    finally:
        guest.guest_script("delete", env_name)
