"""Helpers of the robustness tests: ``llima-box`` (local backend) run as alice inside the test guest,
and what the guest holds of envs right now (users, env dirs, homes, holders, mounts, processes)."""

from __future__ import annotations

import json
import secrets
import subprocess
import typing as t

from tests.guest import PREFIX, Guest

UID_MIN, UID_MAX = 200000, 299999


def lb_argv(guest: Guest, home: str, *args: str) -> list[str]:
    """The argv running ``llima-box --backend local ARGS`` as alice in the guest, state in ``home``."""
    return guest.argv(["env", f"LLIMA_BOX_HOME={home}", "llima-box", "--backend", "local", *args], user="alice")


def lb(guest: Guest, home: str, *args: str, input: bytes = b"", timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(lb_argv(guest, home, *args), input=input, capture_output=True, timeout=timeout, check=False)


def lb_popen(guest: Guest, home: str, *args: str, **kw: t.Any) -> subprocess.Popen:
    kw.setdefault("stdin", subprocess.DEVNULL)
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(lb_argv(guest, home, *args), **kw)


def new_home(guest: Guest) -> str:
    """A fresh state directory (``LLIMA_BOX_HOME``) owned by alice."""
    home = f"{guest.home}/lbh-{secrets.token_hex(4)}"
    guest.run(["install", "-d", "-m", "0700", "-o", "alice", "-g", "alice", home]).check_returncode()
    return home


def one_error_line(r: subprocess.CompletedProcess) -> str:
    """The single ``Error: …`` line a failed command printed (asserts there is exactly one and no traceback)."""
    err = r.stderr.decode(errors="replace")
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    return lines[0]


def guest_envs(guest: Guest) -> dict[str, dict[str, t.Any]]:
    """The guest's own view: its ``list`` verb, by name."""
    r = guest.run([f"{PREFIX}/list"])
    assert r.returncode == 0, r.stderr
    return {row["name"]: row for row in map(json.loads, r.stdout.splitlines())}


def db_names(guest: Guest, home: str) -> set[str]:
    """The env names the state database in ``home`` records (read with sqlite directly)."""
    code = ("import sqlite3,sys; "
            "print('\\n'.join(r[0] for r in sqlite3.connect(sys.argv[1]).execute('select name from envs')))")
    r = guest.run(["python3", "-c", code, f"{home}/state.db"])
    assert r.returncode == 0, r.stderr
    return set(r.stdout.split())


def env_traces(guest: Guest, name: str) -> list[str]:
    """Everything of env ``name`` still in the guest: user, dirs, holder file, mounts, processes."""
    script = r"""
n=$1
getent passwd "$n" >/dev/null && echo "user $n"
getent group "$n" >/dev/null && echo "group $n"
for p in /var/lib/llima-box/envs/$n /var/lib/llima-box/envs/$n.new /var/lib/llima-box/home/$n \
	/var/lib/llima-box/home/$n.new /var/lib/llima-box/home/$n.img /var/lib/llima-box/home/$n.img.new \
	/run/llima-box/$n.holder /run/llima-box/roots/$n /run/llima-box/roots/$n.fifo \
	/run/llima-box-net/$n.net /run/llima-box-net/$n.user /run/llima-box/roots/$n.ports; do
	[ -e "$p" ] && echo "path $p"
done
losetup -a 2>/dev/null | grep -F "/var/lib/llima-box/home/$n.img" | sed 's/^/loop /'
grep -F " /run/llima-box/roots/$n" /proc/self/mountinfo | sed 's/^/mount /'
for c in /proc/[0-9]*/cmdline; do
	tr '\0' ' ' <"$c" 2>/dev/null | grep -q -- "holder.sh $n " && echo "holder ${c//[^0-9]/}"
done
exit 0
"""
    r = guest.run(["bash", "-c", script, "traces", name])
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def env_processes(guest: Guest) -> list[str]:
    """Processes of any env user (uid in the env range) in the guest."""
    r = guest.run(["ps", "-e", "-o", "uid=,pid=,args="])
    return [ln for ln in r.stdout.splitlines() if UID_MIN <= int(ln.split()[0]) <= UID_MAX]


def holder_pids(guest: Guest) -> list[int]:
    r = guest.run(["sh", "-c", "cat /run/llima-box/*.holder 2>/dev/null || true"])
    return [int(ln.split()[0]) for ln in r.stdout.splitlines() if ln.strip()]


def finish(p: subprocess.Popen, timeout: float = 120) -> tuple[int, bytes, bytes]:
    """Wait for ``p``; its exit status, stdout and stderr (pipes closed)."""
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out or b"", err or b""
