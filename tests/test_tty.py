"""The env gets a terminal of its own and never the caller's (attacked for real in the test guest)."""

from __future__ import annotations

import time

import pexpect
import pytest

from tests.guest import PREFIX, Guest

#: Left behind in the env: it keeps the entry's fd 0 and reads whatever arrives there for 4 s.
READER = """
import os, signal, sys, time
signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as a daemon does: the hangup at the end must not stop it
try:
    print("tty", os.ttyname(0), flush=True)
except OSError as e:
    print("tty none", e.errno, flush=True)
if os.fork() == 0:
    os.setsid()
    sys.stdout = open(sys.argv[1], "w", buffering=1)
    end = time.monotonic() + 4
    while time.monotonic() < end:
        try:
            data = os.read(0, 100)
        except OSError as e:
            print("error", e.errno)
            break
        if not data:
            print("eof")
            break
        print("read", data)
    print("END")
    os._exit(0)
"""


def shell(guest: Guest, user: str) -> pexpect.spawn:
    argv = guest.argv(["bash", "--norc", "--noprofile", "-i"], user=user)
    child = pexpect.spawn(argv[0], argv[1:], timeout=20, encoding="utf-8", dimensions=(33, 101))
    child.sendline("PS1='P''> '")
    child.expect_exact("P> ")
    return child


@pytest.mark.parametrize("user", ["root", "alice"])
def test_what_the_caller_types_later_never_reaches_the_env(guest, env_name, project, user):
    sudo = "" if user == "root" else "sudo -n "
    out = f"{project}/reader.out"
    child = shell(guest, user)
    try:
        child.sendline(f"{sudo}{PREFIX}/enter {env_name} {project} -- python3 -c '{READER}' {out}"
                       "; echo ctty=$(ps -o tty= -p $$)")
        child.expect(r"tty (/dev/pts/\d+|none \d+)")
        name = child.match.group(1)
        child.expect(r"ctty=(\S+)")
        ctty = child.match.group(1)
        child.expect_exact("P> ")
        for i in range(8):
            child.sendline(f"# typed-secret-{i}")
            child.expect_exact("P> ")
        child.sendline(f"until grep -q END {out}; do sleep 0.2; done; cat {out}")
        child.expect_exact("END")
        child.expect_exact("P> ")
    finally:
        child.close(force=True)
    seen = guest.run(["cat", out]).stdout
    assert "typed-secret" not in seen
    assert ctty.startswith("pts/")  # the caller's shell kept its terminal
    assert seen.splitlines()[0] in ("eof", "error 5")  # hung up when the command ended
    assert name.startswith("/dev/pts/")  # the env's own terminal has a name
    guest.guest_script("delete", env_name)


def test_terminal_size_resize_and_ctrl_c_pass_through(guest, env_name, project):
    child = shell(guest, "alice")
    try:
        child.sendline(f"sudo -n {PREFIX}/enter {env_name} {project} -- sh -c 'stty size; read x; stty size; "
                       "sleep 60; echo not-interrupted'; echo status=$?")
        child.expect_exact("33 101")
        child.setwinsize(40, 120)
        child.sendline("")
        child.expect_exact("40 120")
        child.sendcontrol("c")
        child.expect(r"status=(\d+)")
        assert child.match.group(1) == "130", child.before
        assert "not-interrupted" not in child.before
    finally:
        child.close(force=True)
    guest.guest_script("delete", env_name)


def test_the_status_comes_back_when_the_end_and_the_hangup_are_seen_at_once(guest, env_name, project):
    child = shell(guest, "alice")
    try:
        child.sendline(f"sudo -n {PREFIX}/enter {env_name} {project} -- sh -c 'echo $(echo st)arted; sleep 1; exit 7'"
                       "; echo status=$?")
        child.expect_exact("started")
        # the relay sleeps through the command's end: SIGCHLD and the pty's hangup wait for it together
        guest.run(["pkill", "-STOP", "-f", "lib/tty-relay.py"])
        time.sleep(2)
        guest.run(["pkill", "-CONT", "-f", "lib/tty-relay.py"])
        child.expect(r"status=(\d+)")
        assert child.match.group(1) == "7", child.before
    finally:
        child.close(force=True)
    guest.guest_script("delete", env_name)
