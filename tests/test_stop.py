"""`stop`: every process of an env ends and its namespaces go, while its user, home and record stay."""

from __future__ import annotations

import json

from tests.guest import Guest
from tests.test_trust import bob_may_sudo  # noqa: F401 -- a fixture


def alive(guest: Guest, name: str) -> bool:
    rows = {r["name"]: r for r in map(json.loads, guest.guest_script("list").stdout.splitlines())}
    return rows[name]["alive"]


def processes(guest: Guest, name: str) -> list[str]:
    """What runs as the env's uid, or for it (its holder, pasta, ports.py)."""
    r = guest.run(["sh", "-c", f"ps -u {name} -o args= ; pgrep -af 'holder.sh {name} |/{name}\\.'"])
    return [line for line in r.stdout.splitlines() if "pgrep" not in line]


def test_stop_ends_everything_of_the_env_and_keeps_its_home(guest, env_name, project):
    assert guest.guest_script("create", env_name, project).returncode == 0
    try:
        uid = guest.run(["id", "-u", env_name]).stdout
        daemon = "echo kept > ~/note; (setsid sleep 600 </dev/null >/dev/null 2>&1 &)"
        r = guest.enter(env_name, project, "sh", "-c", daemon)
        assert r.returncode == 0, r.stderr
        assert any("sleep 600" in p for p in processes(guest, env_name))
        r = guest.guest_script("stop", env_name)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        assert not alive(guest, env_name)
        assert processes(guest, env_name) == []  # the daemon, the holder, pasta and ports.py
        assert guest.run(["sh", "-c", f"ls /run/llima-box-net | grep -c {env_name}"]).stdout.strip() == "0"
        assert guest.guest_script("stop", env_name).returncode == 0  # stopping a stopped env is no error
        r = guest.enter(env_name, project, "sh", "-c", "cat ~/note; id -u")
        assert r.stdout.split() == ["kept", uid.strip()], r.stderr  # the next entry starts it again, the same env
        assert alive(guest, env_name)
    finally:
        guest.guest_script("delete", env_name)


def test_only_the_owner_stops_an_env_and_an_unknown_one_is_an_error(guest, bob_may_sudo, env_name, project):  # noqa: F811
    assert guest.guest_script("create", env_name, project).returncode == 0
    try:
        r = guest.guest_script("stop", env_name, user="bob")
        assert r.returncode == 2 and "belongs to another account" in r.stderr
        assert alive(guest, env_name)
        r = guest.guest_script("stop", "lb-nothing-here")
        assert r.returncode == 1 and "no env lb-nothing-here" in r.stderr and len(r.stderr.splitlines()) == 1
        assert guest.guest_script("stop", "../x").returncode == 2
    finally:
        guest.guest_script("delete", env_name)
