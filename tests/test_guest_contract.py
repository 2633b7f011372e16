"""The guest scripts' contract (guest-scripts/README.md), run for real in the test guest."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os

import pytest

from tests.guest import Guest

HOSTILE = ["lb-a'b", "lb-$(touch /tmp/pwned)", "lb-`touch /tmp/pwned`", "lb-a;touch /tmp/pwned",
           "lb-a\nb", "..", "-rf", "LB-UPPER", "lb-" + "a" * 40, "x" * 4096, ""]


def snapshot(guest: Guest) -> str:
    return guest.sh("cat /etc/passwd; ls /var/lib/llima-box/envs /var/lib/llima-box/home; "
                    "grep -c . /proc/self/mountinfo; ls /tmp").stdout


#: each verb taking a project, its status for a refusal, and how its line starts: enter's stderr is the
#: caller's own, so its line reads as the CLI's errors do
VERBS = (("create", 2, ""), ("enter", 125, "Error: "))


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_refused(guest, project, name):
    before = snapshot(guest)
    for verb, code, lead in VERBS:
        r = guest.guest_script(verb, name, project)
        assert r.returncode == code
        assert r.stderr.count("\n") == 1 and r.stderr.startswith(lead + "llima-box-guest: ")
    assert snapshot(guest) == before


def test_hostile_projects_are_refused(guest, env_name, project):
    guest.sh(f"ln -s {project} /Users/alice/link; mkdir -p {project}/sub")
    bad = [project + "/", project + "/../" + project.rsplit("/", 1)[1], project + "/./sub",
           "/Users/alice/link", "/Users/alice/link/sub", "/", "/Users/alice", "/etc", "/home/alice.guest",
           "relative/path", project + "\nx", "/Users/alice/$(touch /tmp/pwned)", "/Users/alice/" + "a" * 4096,
           "/Users/alice/missing", "-rf"]
    before = snapshot(guest)
    for p in bad:
        for verb, code in (("create", 2), ("enter", 125)):
            r = guest.guest_script(verb, env_name, p)
            assert r.returncode == code, (verb, p, r.stderr)
            assert r.stderr.count("\n") == 1
    assert snapshot(guest) == before


def test_a_home_directory_is_never_a_project(guest, env_name):
    home, user = f"/Users/alice/{env_name}h", f"lbhome{os.getpid()}"
    guest.sh(f"mkdir {home} && chown alice: {home} && useradd -M -d {home} -s /bin/false {user}").check_returncode()
    try:
        for verb, code, lead in VERBS:
            r = guest.guest_script(verb, env_name, home)
            want = f"{lead}llima-box-guest: project may not be a home directory: {home}\n"
            assert (r.returncode, r.stderr) == (code, want)
    finally:
        guest.sh(f"userdel {user}; rmdir {home}")


def test_create_is_idempotent_and_safe_under_concurrency(guest, env_name, project):
    with cf.ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda _: guest.guest_script("create", env_name, project).returncode, range(4)))
    assert codes == [0] * 4
    assert guest.sh(f"grep -c '^{env_name}:' /etc/passwd").stdout.strip() == "1"
    other = guest.make_project("alice", env_name + "o")
    assert guest.guest_script("create", env_name, other).returncode == 2
    guest.guest_script("delete", env_name)


def test_enter_exit_codes_argv_cwd_and_environment(guest, env_name, project):
    guest.sh(f"mkdir {project}/sub; printf x > {project}/noexec; chown -R alice: {project}")
    assert guest.enter(env_name, project, "sh", "-c", "exit 42").returncode == 42
    assert guest.enter(env_name, project, "/nonexistent").returncode == 127
    assert guest.enter(env_name, project, "./noexec").returncode == 126
    args = ["a b", "'q'", '"d"', "$(id)", "`id`", "x\ny", ";|&", "-n"]
    assert guest.enter(env_name, project, "printf", "%s\\0", *args).stdout == "".join(a + "\0" for a in args)
    assert guest.enter(env_name, project, "pwd").stdout == project + "\n"
    r = guest.guest_script("enter", env_name, project, "--cwd", project + "/sub", "--", "pwd")
    assert r.stdout == project + "/sub\n"
    assert guest.guest_script("enter", env_name, project, "--cwd", "/Users/alice", "--", "pwd").returncode == 125
    env = guest.guest_script("enter", env_name, project, "--env", "TERM=xterm", "--", "env").stdout
    assert sorted(line.split("=")[0] for line in env.splitlines()) == \
        ["HOME", "LANG", "LOGNAME", "PATH", "PIP_BREAK_SYSTEM_PACKAGES", "SHELL", "TERM", "USER"]
    assert "TERM=xterm" in env
    assert guest.guest_script("enter", env_name, project, "--env", "LD_PRELOAD=x", "--", "true").returncode == 125
    guest.guest_script("delete", env_name)


def test_list_reports_envs(guest, env_name, project):
    guest.guest_script("create", env_name, project)
    envs = {e["name"]: e for e in map(json.loads, guest.guest_script("list").stdout.splitlines())}
    e = envs[env_name]
    assert e["project"] == project and e["alive"] is True and e["uid"] >= 200000
    assert e["created"].endswith("Z") and e["mode"] == "idmap"
    guest.guest_script("delete", env_name)


def test_delete_leaves_nothing_behind(guest, env_name, project):
    before = guest.sh("cat /etc/passwd /etc/group; ls /var/lib/llima-box/home /run/llima-box; "
                      "grep -c . /proc/self/mountinfo").stdout
    guest.sh(f"echo keep > {project}/keep")
    r = guest.enter(env_name, project, "sh", "-c", "sleep 300 >/dev/null 2>&1 & echo h > ~/h; touch made")
    assert r.returncode == 0
    uid = guest.run(["id", "-u", env_name]).stdout.strip()
    r = guest.guest_script("delete", env_name)
    assert r.returncode == 0
    after = guest.sh("cat /etc/passwd /etc/group; ls /var/lib/llima-box/home /run/llima-box; "
                     "grep -c . /proc/self/mountinfo").stdout
    # /run/llima-box/{locks,roots} come and go with any env. Processes: none of the env's uid, no holder of it
    # (a count of all processes also counts those of earlier tests that are still ending)
    def infrastructure_dropped(snapshot: str) -> str:
        return snapshot.replace("locks\n", "").replace("roots\n", "").replace("/run/llima-box:\n\n", "")

    assert infrastructure_dropped(after) == infrastructure_dropped(before)
    assert guest.run(["pgrep", "-u", uid]).returncode == 1
    assert guest.run(["pgrep", "-f", f"holder.sh {env_name} "]).returncode == 1
    assert guest.sh(f"ls {project}").stdout.split() == ["keep", "made"]
    r = guest.guest_script("delete", env_name)
    assert r.returncode == 0 and "nothing to delete" in r.stderr


def test_sudoers_allows_only_the_verbs(guest):
    assert guest.run(["sudo", "-n", "true"], user="alice").returncode != 0
    assert guest.run(["sudo", "-n", "/usr/bin/id"], user="alice").returncode != 0
    assert guest.run(["visudo", "-cf", "/etc/sudoers.d/llima-box"]).returncode == 0
    assert guest.run(["stat", "-c", "%a %U", "/etc/sudoers.d/llima-box"]).stdout == "440 root\n"
    assert guest.guest_script("version").stdout.strip().isdigit()


def test_provisioning_is_idempotent(guest):
    before = guest.sh("stat -c '%n %Y' /usr/local/libexec/llima-box/* /etc/sudoers.d/llima-box").stdout
    assert guest.reprovision().returncode == 0
    assert guest.sh("stat -c '%n %Y' /usr/local/libexec/llima-box/* /etc/sudoers.d/llima-box").stdout == before
