"""Attacks on ``llima-box serve`` that once locked people out or told names apart, run for real.

Each test floods or guesses against a real server in the test guest with raw sockets or OpenSSH
(``ssh``, ``sshpass``). Other loopback addresses (127.0.0.2, …) stand for other clients.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import subprocess
import time
import typing as t

import pytest

from tests.serve_harness import PASSWORDS, STATE, Serve, run_channel, setup_accounts

WEB = "/Users/alice/web"
DUMMY = "llima-box-nobody"
PAM_LOG = "/var/tmp/lb-pam-calls"


@pytest.fixture(scope="module")
def key(guest: t.Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("attack-key") / "id")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path], check=True)
    guest.install_cli()
    with open(path + ".pub", encoding="ascii") as f:
        setup_accounts(guest, f.read())
    guest.run(["install", "-d", "-m", "0755", "-o", "alice", "-g", "alice", WEB]).check_returncode()
    guest.run(["install", "-d", "-m", "0755", "-o", "bob", "-g", "bob", "/Users/bob/secret"]).check_returncode()
    return path


@pytest.fixture
def serve(guest: t.Any, key: str, tmp_path: t.Any) -> t.Iterator[t.Callable[..., Serve]]:
    servers: list[Serve] = []

    def start(**config: object) -> Serve:
        state = f"{STATE}-{secrets.token_hex(4)}"  # an audit log of its own
        servers.append(Serve(guest, str(tmp_path), state=state, serve_auth_delay=0.001, **config))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def _login(box: Serve, login: str, password: str, source: str, *cmd: str) -> subprocess.CompletedProcess[bytes]:
    return box.ssh(login, *(cmd or ("pwd",)), password=password, options=["-b", source])


def _key_login(box: Serve, login: str, key: str, source: str) -> subprocess.CompletedProcess[bytes]:
    return box.ssh(login, "pwd", key=key, options=["-b", source])


def _flood(port: int, source: str, count: int, stack: contextlib.ExitStack) -> list[bool]:
    """``count`` connections from ``source`` that send a client banner and then nothing; for each,
    whether the server answered with its banner (True) or dropped it at once (False). They stay open."""
    answered = []
    for _ in range(count):
        sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=20,
                                                            source_address=(source, 0)))
        sock.sendall(b"SSH-2.0-flood\r\n")
        data = b""
        while b"\n" not in data:
            chunk = sock.recv(256)
            if not chunk:
                break
            data += chunk
        answered.append(data.startswith(b"SSH-2.0-"))
    return answered


def test_banner_only_flood_from_one_source_locks_nobody_out(serve: t.Callable[..., Serve]) -> None:
    box = serve(serve_max_startups="8", serve_per_source_max_startups=3, serve_login_grace=120)
    inside = box.login("alice+web", PASSWORDS["alice"])  # authenticated before the flood
    try:
        with contextlib.ExitStack() as flood:
            assert _flood(box.port, "127.0.0.3", 20, flood) == [True] * 3 + [False] * 17
            r = _login(box, "alice+web", PASSWORDS["alice"], "127.0.0.2")
            assert (r.returncode, r.stdout) == (0, f"{WEB}\n".encode()), (r.stderr, box.output())
            assert run_channel(inside, "echo still-here")[:2] == (0, b"still-here\n")
            # floods from more sources fill the server's unauthenticated slots (8): then new
            # connections wait, but the authenticated ones go on and open sessions
            assert _flood(box.port, "127.0.0.4", 3, flood) + _flood(box.port, "127.0.0.5", 3, flood) == \
                [True] * 5 + [False]
            assert _login(box, "bob+secret", PASSWORDS["bob"], "127.0.0.2").returncode == 255
            assert run_channel(inside, "echo still-here")[:2] == (0, b"still-here\n")
        # the flood is over: its address may log in again once the server has seen its connections close
        for _ in range(100):
            r = _login(box, "bob+secret", PASSWORDS["bob"], "127.0.0.3")
            if r.returncode == 0:
                break
            time.sleep(0.2)
        assert r.returncode == 0, (r.stderr, box.output())
    finally:
        inside.close()


def test_banner_only_connection_is_closed_after_the_login_grace(serve: t.Callable[..., Serve]) -> None:
    box = serve(serve_login_grace=1)
    with socket.create_connection(("127.0.0.1", box.port), timeout=30) as sock:
        sock.sendall(b"SSH-2.0-flood\r\n")
        data = b""
        while chunk := sock.recv(4096):  # the server's banner and key exchange offer, then the close
            data += chunk
    assert data.startswith(b"SSH-2.0-llima-box")


def test_wrong_passwords_lock_neither_keys_nor_others_out(serve: t.Callable[..., Serve], key: str) -> None:
    box = serve(serve_lockout_user=3, serve_lockout_source=10)
    for _ in range(12):  # one client guesses alice's password from 127.0.0.1
        assert _login(box, "alice+web", "not-the-password", "127.0.0.1").returncode == 255
    r = _login(box, "alice+web", PASSWORDS["alice"], "127.0.0.1")
    assert r.returncode == 255, r.stdout  # alice's passwords from 127.0.0.1 are locked out…
    r = _key_login(box, "alice+web", key, "127.0.0.1")
    assert (r.returncode, r.stdout) == (0, f"{WEB}\n".encode()), r.stderr  # …not her key
    r = _login(box, "alice+web", PASSWORDS["alice"], "127.0.0.2")
    assert r.returncode == 0, r.stderr  # …nor her password from elsewhere
    r = _login(box, "bob+secret", PASSWORDS["bob"], "127.0.0.1")
    assert r.returncode == 0, r.stderr  # …nor another account at the same address
    # one address guessing many names is locked out at serve_lockout_source failures, for passwords only
    assert _login(box, "dave", PASSWORDS["dave"], "127.0.0.4", "true").returncode == 1  # dave logged in here
    for i in range(10):
        assert _login(box, f"guess{i}", "whatever", "127.0.0.4").returncode == 255
    assert _login(box, "bob+secret", PASSWORDS["bob"], "127.0.0.4").returncode == 255
    assert _key_login(box, "bob+secret", key, "127.0.0.4").returncode == 0
    assert _login(box, "dave", PASSWORDS["dave"], "127.0.0.4", "true").returncode == 1  # a recent login is exempt
    assert _login(box, "bob+secret", PASSWORDS["bob"], "127.0.0.5").returncode == 0
    results = [(r["login"], r["source"], r["result"]) for r in box.audit()["auth"]]
    assert results.count(("alice+web", "127.0.0.1", "failure")) == 3
    assert ("alice+web", "127.0.0.1", "locked") in results and ("bob+secret", "127.0.0.4", "locked") in results


_PAM_LOGGER = f"""#!/bin/sh
echo "$PAM_TYPE $PAM_USER" >> {PAM_LOG}
"""
_PAM_SERVICE = """auth optional pam_exec.so quiet /usr/local/sbin/lb-pam-log
@include llima-box
"""


def test_pam_checks_a_password_whatever_the_name(guest: t.Any, serve: t.Callable[..., Serve]) -> None:
    """Unknown names, accounts outside the group and root cost a PAM check as a member's wrong password
    does (a dummy account's, with a hash of the same method), so the answer's timing tells nothing."""
    guest.run(["sh", "-c", "cat > /usr/local/sbin/lb-pam-log && chmod 755 /usr/local/sbin/lb-pam-log"],
              input=_PAM_LOGGER).check_returncode()
    guest.run(["sh", "-c", "cat > /etc/pam.d/llima-box-logged"], input=_PAM_SERVICE).check_returncode()
    guest.run(["rm", "-f", PAM_LOG]).check_returncode()
    box = serve(serve_pam_service="llima-box-logged")
    attempts = [("alice+web", "wrong"), ("nosuchuser+web", "whatever"), ("carol", PASSWORDS["carol"]),
                ("root", PASSWORDS["root"]), ("alice+..", PASSWORDS["alice"])]
    for login, password in attempts:
        r = box.ssh(login, "true", password=password)
        assert r.returncode == 255 and b"Permission denied" in r.stderr, (login, r.stderr)
    calls = guest.run(["cat", PAM_LOG]).stdout.splitlines()
    assert calls == ["auth alice"] + [f"auth {DUMMY}"] * 4, box.output()
    shadow = {f[0]: f for line in guest.run(["cat", "/etc/shadow"]).stdout.splitlines() if (f := line.split(":"))}
    assert shadow[DUMMY][1].split("$")[1] == shadow["alice"][1].split("$")[1]  # a real hash, of the same method
    assert shadow[DUMMY][7] in ("0", "1")  # expired since 1970: no PAM account check lets it log in
    assert guest.run(["getent", "passwd", DUMMY]).stdout.strip().endswith("nologin")
    assert DUMMY not in guest.run(["getent", "group", "llima-box"]).stdout
