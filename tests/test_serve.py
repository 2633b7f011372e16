"""``llima-box serve`` for real: as root in the test guest, driven by OpenSSH (ssh, sshpass) and paramiko.

The tests share one server (``box``) and run in file order: the audit test checks the rows of all before it.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import subprocess
import time
import typing as t

import paramiko
import pytest

from llimabox import names
from tests.serve_harness import PASSWORDS, Serve, run_channel, setup_accounts

WEB = "/Users/alice/web"
SECRET = "/Users/bob/secret"


@pytest.fixture(scope="module")
def key(guest: t.Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("serve-key") / "id")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path], check=True)
    return path


@pytest.fixture(scope="module")
def box(guest: t.Any, key: str, tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Serve]:
    guest.install_cli()
    with open(key + ".pub", encoding="ascii") as f:
        setup_accounts(guest, f.read())
    for owner, path in (("alice", WEB), ("bob", SECRET)):
        guest.run(["install", "-d", "-m", "0755", "-o", owner, "-g", owner, path]).check_returncode()
    guest.run(["sh", "-c", f"echo top-secret > {SECRET}/secret.txt && chown bob:bob {SECRET}/secret.txt"])
    server = Serve(guest, str(tmp_path_factory.mktemp("serve-log")), serve_max_sessions=25,
                   serve_auth_delay=0.001, serve_lockout_user=1000, serve_lockout_source=1000,
                   serve_max_startups="100", serve_per_source_max_startups=100)  # 20 logins at once
    yield server
    server.stop()


def _alice(box: Serve, *cmd: str, login: str = "alice+web", **kw: t.Any) -> subprocess.CompletedProcess[bytes]:
    return box.ssh(login, *cmd, password=PASSWORDS["alice"], **kw)


def test_password_login_lands_in_the_project_env(guest: t.Any, box: Serve) -> None:
    r = _alice(box, "pwd; id -un; hostname; ls /Users; touch made-by-env; ps -e -o comm= | wc -l")
    assert r.returncode == 0, (r.stderr, box.output())
    pwd, user, host, users, procs = r.stdout.decode().split()
    env = names.env_name(WEB)
    assert (pwd, user, host, users) == (WEB, env, env, "alice")  # bob's projects are not even visible
    assert int(procs) < 10  # its own PID namespace: the holder, the shell, ps, wc
    owner = guest.run(["stat", "-c", "%U", f"{WEB}/made-by-env"]).stdout.strip()
    assert owner == "alice"  # what the env writes belongs to the account


def test_keyboard_interactive_and_key_login(box: Serve, key: str) -> None:
    r = _alice(box, "pwd", method="keyboard-interactive")
    assert (r.returncode, r.stdout) == (0, f"{WEB}\n".encode()), r.stderr
    r = box.ssh("alice+web", "pwd", key=key)
    assert (r.returncode, r.stdout) == (0, f"{WEB}\n".encode()), r.stderr
    r = box.ssh("bob+secret", "cat secret.txt", key=key)
    assert (r.returncode, r.stdout) == (0, b"top-secret\n"), r.stderr


@pytest.mark.parametrize("login, password", [
    ("alice+web", "wrong"),
    ("nosuchuser+web", "whatever"),
    ("root", PASSWORDS["root"]),
    ("root+web", PASSWORDS["root"]),
    ("carol", PASSWORDS["carol"]),  # right password, not in the group llima-box
])
def test_refused_logins(box: Serve, login: str, password: str) -> None:
    r = box.ssh(login, "true", password=password)
    assert r.returncode == 255 and b"Permission denied" in r.stderr, r.stderr


def test_expired_account_and_nologin_stop_key_logins_too(guest: t.Any, box: Serve, key: str) -> None:
    guest.run(["chage", "-E", "0", "bob"]).check_returncode()  # the account expired in 1970
    try:
        for how in ({"key": key}, {"password": PASSWORDS["bob"]}):
            r = box.ssh("bob+secret", "true", **how)
            assert r.returncode == 255 and b"Permission denied" in r.stderr, (how, r.stderr)
    finally:
        guest.run(["chage", "-E", "-1", "bob"]).check_returncode()
    assert box.ssh("bob+secret", "true", key=key).returncode == 0
    guest.run(["sh", "-c", "echo 'down for maintenance' > /etc/nologin"]).check_returncode()
    try:
        r = box.ssh("alice+web", "true", key=key)
        assert r.returncode == 255 and b"Permission denied" in r.stderr, r.stderr
    finally:
        guest.run(["rm", "-f", "/etc/nologin"]).check_returncode()
    assert box.ssh("alice+web", "true", key=key).returncode == 0
    auth = box.audit("--user", "bob")["auth"]
    assert any(row["method"] == "publickey" and row["result"] == "refused" and "expired" in row["detail"]
               for row in auth), auth


def test_plain_user_lists_envs(box: Serve) -> None:
    assert _alice(box, "true").returncode == 0  # the env of web exists
    r = _alice(box, "true", login="alice")
    err = r.stderr.decode()
    assert r.returncode == 1 and len(err.splitlines()) == 1, err
    assert "alice+PROJECT" in err and "web" in err and "secret" not in err


def test_no_naming_trick_reaches_bob(guest: t.Any, box: Serve, key: str) -> None:
    guest.run(["ln", "-sfn", SECRET, "/Users/alice/link"], user="alice").check_returncode()
    guest.run(["ln", "-sfn", "../bob", "/Users/alice/up"], user="alice").check_returncode()
    guest.run(["install", "-d", "-o", "bob", "-g", "bob", "/Users/alice/bobs"]).check_returncode()
    denied = {"link": "not inside", "up": "not inside", "bobs": "does not belong", "secret": "no project"}
    for project, why in denied.items():
        r = _alice(box, "cat secret.txt; pwd", login=f"alice+{project}")
        err = r.stderr.decode()
        assert r.returncode == 1 and why in err and len(err.splitlines()) == 1, err
        assert b"top-secret" not in r.stdout
    for login in ("alice+..", "alice+.", "alice+../bob", "alice+/Users/bob/secret", "alice+a/../../bob",
                  "alice+web+x", "alice+", "+secret", "bob+secret"):
        with pytest.raises(paramiko.AuthenticationException):
            box.login(login, PASSWORDS["alice"]).close()
    r = box.ssh("bob+secret", "cat secret.txt", password=PASSWORDS["alice"])
    assert r.returncode == 255 and b"top-secret" not in r.stdout
    # alice's key is bob's too in this test: with it, bob's project is reached only as bob
    r = box.ssh("alice+secret", "cat secret.txt", key=key)
    assert r.returncode == 1 and b"top-secret" not in r.stdout
    r = _alice(box, f"cat {SECRET}/secret.txt")
    assert r.returncode != 0 and b"top-secret" not in r.stdout


def test_exec_status_streams_and_env(box: Serve) -> None:
    assert _alice(box, "exit 42").returncode == 42
    r = _alice(box, "tr a-z A-Z; echo to-stderr >&2", input=b"hello\nworld\n")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"HELLO\nWORLD\n", b"to-stderr\n")
    transport = box.login("alice+web", PASSWORDS["alice"])
    try:
        chan = transport.open_session()
        chan.update_environment({"LANG": "C.UTF-8", "LC_TIME": "C", "SECRET_VAR": "x", "LD_PRELOAD": "/x.so"})
        chan.exec_command("echo $LANG/$LC_TIME/${SECRET_VAR:-unset}/${LD_PRELOAD:-unset}")
        assert chan.makefile().read() == b"C.UTF-8/C/unset/unset\n"
        assert chan.recv_exit_status() == 0
        code, out, _ = run_channel(transport, "head -c 3000000 /dev/zero | wc -c", stdin=b"x" * 100000)
        assert (code, out) == (0, b"3000000\n")
    finally:
        transport.close()


def _read_until(chan: paramiko.Channel, pattern: bytes, timeout: float = 30) -> bytes:
    buf, deadline = b"", time.monotonic() + timeout
    chan.settimeout(1)
    while not re.search(pattern, buf):
        assert time.monotonic() < deadline, buf
        try:
            data = chan.recv(4096)
        except TimeoutError:
            continue
        assert data, buf
        buf += data
    return buf


def test_pty_shell_follows_resize_and_signals(box: Serve) -> None:
    transport = box.login("alice+web", PASSWORDS["alice"])
    try:
        chan = transport.open_session()
        chan.get_pty(term="xterm", width=80, height=24)
        chan.invoke_shell()
        _read_until(chan, rb"\$ $")  # the prompt: typeahead before it may be dropped by the shell's setup
        chan.sendall(b'echo "S=$(stty size)=$TERM"; test -t 0 && echo is-a-tty\n')
        _read_until(chan, rb"S=24 80=xterm\r\nis-a-tty")
        chan.resize_pty(width=132, height=50)
        chan.sendall(b'echo "S=$(stty size)"\n')
        _read_until(chan, rb"S=50 132")
        chan.sendall(b"sleep 300; echo slept\n")
        time.sleep(0.5)
        chan.sendall(b"\x03")  # Ctrl-C through the terminal
        chan.sendall(b"echo after-$?\n")
        _read_until(chan, rb"after-130")
        chan.sendall(b"exit 7\n")
        assert chan.recv_exit_status() == 7
    finally:
        transport.close()


def test_signal_request_reaches_the_command(box: Serve) -> None:
    from paramiko.common import cMSG_CHANNEL_REQUEST

    transport = box.login("alice+web", PASSWORDS["alice"])
    try:
        chan = transport.open_session()
        chan.exec_command("trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.1; done")
        _read_until(chan, rb"ready\n")
        m = paramiko.Message()  # RFC 4254 6.9; paramiko's client has no call for it
        m.add_byte(cMSG_CHANNEL_REQUEST)
        m.add_int(chan.remote_chanid)
        m.add_string("signal")
        m.add_boolean(False)
        m.add_string("TERM")
        transport._send_user_message(m)
        _read_until(chan, rb"got-term\n")
        assert chan.recv_exit_status() == 3
    finally:
        transport.close()


def test_forwarding_x11_and_subsystems_refused(box: Serve) -> None:
    transport = box.login("alice+web", PASSWORDS["alice"])
    try:
        with pytest.raises(paramiko.ChannelException):
            transport.open_channel("direct-tcpip", ("127.0.0.1", box.port), ("127.0.0.1", 0))
        with pytest.raises(paramiko.SSHException):
            transport.request_port_forward("127.0.0.1", 0)
        chan = transport.open_session()
        with pytest.raises(paramiko.SSHException):
            chan.invoke_subsystem("sftp")
        chan = transport.open_session()
        with pytest.raises(paramiko.SSHException):
            chan.request_x11(single_connection=True)
    finally:
        transport.close()
    r = _alice(box, "true", options=["-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:22"])
    assert r.returncode == 255, r.stderr


def test_agent_forwarding(box: Serve, key: str) -> None:
    agent = subprocess.run(["ssh-agent", "-s"], capture_output=True, text=True, check=True).stdout
    env = dict(os.environ)
    env.update(re.findall(r"(SSH_AUTH_SOCK|SSH_AGENT_PID)=([^;]+);", agent))
    try:
        subprocess.run(["ssh-add", "-q", key], env=env, check=True, capture_output=True)
        argv = box.ssh_argv("alice+web", "ssh-add -l; echo sock=$SSH_AUTH_SOCK", key=key, options=["-A"])
        r = subprocess.run(argv, env=env, capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert b"ED25519" in r.stdout and b"sock=/run/" in r.stdout
        r = box.ssh("alice+web", "ssh-add -l; echo sock=${SSH_AUTH_SOCK:-none}", key=key)
        assert b"sock=none" in r.stdout  # no agent unless asked for
    finally:
        subprocess.run(["ssh-agent", "-k"], env=env, capture_output=True)


def test_twenty_concurrent_sessions(box: Serve, key: str) -> None:
    def one(i: int) -> subprocess.CompletedProcess[bytes]:
        login = "alice+web" if i % 2 else "bob+secret"
        return box.ssh(login, f"sleep 1; echo n{i}", key=key, timeout=120)

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    assert [(r.returncode, r.stdout) for r in results] == [(0, f"n{i}\n".encode()) for i in range(20)], \
        [r.stderr for r in results]


def test_audit_records_everything(box: Serve) -> None:
    rows = box.audit()
    auth = {(r["login"], r["method"], r["result"]) for r in rows["auth"]}
    for expected in [("alice+web", "password", "success"), ("alice+web", "keyboard-interactive", "success"),
                     ("alice+web", "publickey", "success"), ("alice+web", "password", "failure"),
                     ("root", "password", "refused"), ("carol", "password", "refused"),
                     ("nosuchuser+web", "password", "refused"), ("alice+..", "password", "refused")]:
        assert expected in auth
    assert all(r["source"] == "127.0.0.1" and r["at"].endswith("Z") for r in rows["auth"])
    sessions = rows["sessions"]
    env = names.env_name(WEB)
    exits = [s for s in sessions if s["command"] == "exit 42"]
    assert exits and exits[0]["exit_status"] == 42 and exits[0]["env"] == env and exits[0]["ended_at"]
    upper = [s for s in sessions if s["command"] and s["command"].startswith("tr a-z")]
    assert upper[0]["bytes_in"] == 12 and upper[0]["bytes_out"] == 22
    assert any(s["kind"] == "shell" and s["exit_status"] == 7 for s in sessions)
    assert any(s["env"] is None and s["project"] == "link" and s["exit_status"] == 1 for s in sessions)
    assert sum(1 for s in sessions if s["command"] and s["command"].startswith("sleep 1; echo n")) == 20
    bob = box.audit("--user", "bob", "--since", "1h")
    assert bob["sessions"] and all(s["user"] == "bob" for s in bob["sessions"] + bob["auth"])
    assert box.audit("--since", "2999-01-01T00:00:00") == {"auth": [], "sessions": []}


def test_lockout_per_account_and_source_and_session_cap(guest: t.Any, box: Serve, tmp_path: t.Any) -> None:
    strict = Serve(guest, str(tmp_path), serve_lockout_user=10, serve_lockout_source=25,
                   serve_auth_delay=0.001, serve_lockout_seconds=600, serve_max_sessions=1)
    try:
        for _ in range(30):
            with pytest.raises(paramiko.AuthenticationException):
                strict.login("dave", "not-the-password").close()
        with pytest.raises(paramiko.AuthenticationException):
            strict.login("dave", PASSWORDS["dave"]).close()  # dave's passwords from 127.0.0.1 are locked out
        strict.login("dave", PASSWORDS["dave"], source="127.0.0.2").close()  # not from elsewhere
        transport = strict.login("bob+secret", PASSWORDS["bob"])  # nor other accounts from 127.0.0.1
        try:
            first = transport.open_session()
            first.exec_command("cat secret.txt; sleep 600")
            _read_until(first, rb"top-secret\n")
            code, _, err = run_channel(transport, "true")  # at most one session at a time here
            assert code == 1 and b"too many sessions of bob (at most 1)" in err
            first.close()
        finally:
            transport.close()
    finally:
        assert strict.terminate() == 0
    auth = strict.audit("--user", "dave")["auth"]
    results = [r["result"] for r in auth if r["source"] == "127.0.0.1"]
    assert results == ["failure"] * 10 + ["locked"] * 21, results


def test_idle_timeout_and_sigterm_end_sessions(guest: t.Any, box: Serve, tmp_path: t.Any) -> None:
    server = Serve(guest, str(tmp_path), serve_idle_timeout=1, serve_tcp_forwarding=1, serve_sftp=1,
                   serve_default_project="web")
    try:
        plain = server.login("alice", PASSWORDS["alice"])  # a plain USER lands in the default project
        assert run_channel(plain, "pwd")[:2] == (0, f"{WEB}\n".encode())
        plain.close()
        transport = server.login("alice+web", PASSWORDS["alice"])
        # when configured: ssh -L and sftp (inside the env, in the project): serve itself on the guest's
        # loopback is not reached from there (tests/test_serve_ide.py has the rest)
        chan = transport.open_channel("direct-tcpip", ("127.0.0.1", box.port), ("127.0.0.1", 0))
        assert chan.makefile("rb").readline() == b""
        chan.close()
        guest.run(["touch", f"{WEB}/made-by-env"], user="alice").check_returncode()
        with paramiko.SFTPClient.from_transport(transport) as sftp:
            assert "made-by-env" in sftp.listdir(".") and sftp.normalize(".") == WEB
        code, _, err = run_channel(transport, "sleep 4321")
        assert code == 129 and b"llima-box: closing the session after 1 s without traffic" in err
        assert b"Hangup" not in err, err  # the shell that ran the command keeps its notes to itself
        chan = transport.open_session()
        chan.exec_command("echo started; while :; do sleep 0.2; echo tick; done")
        _read_until(chan, rb"started\n(tick\n){8}")  # traffic keeps it open past the idle timeout
        assert server.terminate() == 0
        chan.settimeout(30)
        assert b"llima-box: the server is shutting down" in chan.makefile_stderr().read()
        assert chan.recv_exit_status() == 129
    finally:
        server.stop()
    for pattern in ("sleep 4321", "echo tick"):  # enter's caller watcher may take its one-second poll to end
        deadline = time.monotonic() + 15
        while guest.run(["pgrep", "-f", pattern]).returncode != 1:
            assert time.monotonic() < deadline, guest.run(["pgrep", "-a", "-f", pattern]).stdout
            time.sleep(0.2)
    commands = ("sleep 4321", "echo started; while :; do sleep 0.2; echo tick; done")
    ended = [s for s in server.audit()["sessions"] if s["command"] in commands]
    assert len(ended) == 2 and all(s["ended_at"] and s["exit_status"] == 129 for s in ended)


def test_serve_needs_root_and_a_valid_address(guest: t.Any, box: Serve) -> None:
    r = guest.run(["llima-box", "serve", "--listen", "127.0.0.1:2222"], user="alice")
    assert r.returncode == 2 and r.stderr == "Error: serve must run as root (it enters every account's envs)\n"
    r = guest.run(["env", "LLIMA_BOX_HOME=/var/tmp/lb-serve-bad", "llima-box", "serve", "--listen", "nowhere"])
    assert r.returncode == 2 and r.stderr.startswith("Error: --listen 'nowhere'") and len(r.stderr.splitlines()) == 1
