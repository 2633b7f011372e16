"""`create --idle-stop SECONDS`: the guest's once-a-minute sweep (lib/idle-stop.sh) stops an env none of
whose processes has run for that long, and leaves busy envs and envs without it alone."""

from __future__ import annotations

import time

from tests.guest import PREFIX, Guest
from tests.test_stop import alive, processes

SWEEP = f"{PREFIX}/lib/idle-stop.sh"


def test_only_an_env_idle_for_its_time_is_stopped(guest: Guest, env_name: str, project: str) -> None:
    busy, plain = f"{env_name}b", f"{env_name}p"
    projects = {env_name: project, busy: guest.make_project("alice", f"{env_name}-busy"),
                plain: guest.make_project("alice", f"{env_name}-plain")}
    try:
        for name, idle in ((env_name, "1"), (busy, "1"), (plain, None)):
            r = guest.guest_script("create", name, projects[name], *(["--idle-stop", idle] if idle else []))
            assert r.returncode == 0, r.stderr
        r = guest.enter(busy, projects[busy], "sh", "-c", "(setsid sleep 600 </dev/null >/dev/null 2>&1 &)")
        assert r.returncode == 0 and any("sleep 600" in p for p in processes(guest, busy))
        assert guest.run([SWEEP]).stdout == ""  # first seen idle: noted, not stopped
        time.sleep(1.2)
        r = guest.run([SWEEP])
        assert (r.returncode, r.stdout) == (0, f"llima-box-idle-stop: stopped {env_name}\n"), r.stderr
        assert [alive(guest, n) for n in (env_name, busy, plain)] == [False, True, True]
        assert processes(guest, env_name) == []
        r = guest.enter(env_name, project, "true")  # the next entry starts it again
        assert r.returncode == 0 and alive(guest, env_name)
        r = guest.guest_script("create", env_name, project, "--idle-stop", "0")  # changeable; 0: never
        assert r.returncode == 0
        time.sleep(1.2)
        guest.run([SWEEP]).check_returncode()
        assert alive(guest, env_name)
    finally:
        for name in (env_name, busy, plain):
            guest.guest_script("delete", name)


def test_bad_idle_stop_is_refused(guest: Guest, env_name: str, project: str) -> None:
    for bad in ("-1", "1.5", "soon", "01", "9999999999"):
        r = guest.guest_script("create", env_name, project, "--idle-stop", bad)
        assert (r.returncode, r.stderr) == (2, f"llima-box-guest: --idle-stop takes seconds (0: never), not '{bad}'\n")
    assert guest.run(["test", "-e", f"/var/lib/llima-box/envs/{env_name}"]).returncode == 1
