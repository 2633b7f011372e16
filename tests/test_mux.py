"""The mux: ``shell -- CMD`` handed to a background process that keeps the guest connection open."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import signal
import subprocess
import time
import typing as t
from pathlib import Path

import pytest

from llimabox import __version__
from llimabox.mux import PROTOCOL
from tests.test_e2e_ssh import LB


@pytest.fixture
def lb(guest: t.Any, tmp_path: Path) -> LB:
    runner = LB(guest, tmp_path / "lbhome")
    (tmp_path / "lbhome").mkdir()
    (tmp_path / "lbhome" / "known_hosts").write_text(f"[127.0.0.1]:{guest.port} {guest.host_key_pub}")
    return runner


@pytest.fixture
def project(guest: t.Any) -> str:
    return guest.make_project("alice", "mux-" + os.urandom(3).hex())


def mux_dir(lb: LB) -> Path:
    return Path(lb.env["LLIMA_BOX_HOME"]) / "mux"


def logins(lb: LB) -> int:
    """How many connections to the guest the mux made."""
    return (mux_dir(lb) / "log").read_text().count("connecting to ssh:")


def warm(lb: LB, project: str) -> None:
    """Run a first command (directly: it starts the mux) and wait until the mux has connected."""
    assert lb("shell", project, "--", "true").returncode == 0
    for _ in range(400):
        if (mux_dir(lb) / f"v{PROTOCOL}.sock").exists() and logins(lb) == 1:
            return
        time.sleep(0.025)
    pytest.fail("the mux did not start: " + (mux_dir(lb) / "log").read_text())


def test_commands_share_one_connection(lb: LB, project: str) -> None:
    warm(lb, project)
    for code in (0, 3, 42, 0, 1):
        r = lb("shell", project, "--", "sh", "-c", f"echo out; echo err >&2; exit {code}")
        assert (r.returncode, r.stdout, r.stderr) == (code, b"out\n", b"err\n")
    assert logins(lb) == 1
    assert oct(mux_dir(lb).stat().st_mode & 0o777) == "0o700"


def test_without_the_mux_nothing_is_left_running(lb: LB, project: str) -> None:
    env = {**lb.env, "LLIMA_BOX_MUX": "0"}
    r = lb("shell", project, "--", "printf", "%s|", "a b", "$(id)", env=env)
    assert (r.returncode, r.stdout) == (0, b"a b|$(id)|")
    assert not mux_dir(lb).exists()
    (Path(lb.env["LLIMA_BOX_HOME"]) / "config.toml").write_text("mux = false\n")
    r = lb("shell", project, "--", "true")
    assert r.returncode == 0 and logins(lb) == 0  # the mux declined; the command ran directly


def test_concurrent_commands(lb: LB, project: str) -> None:
    def one(i: int) -> tuple[int, bytes]:
        r = lb("shell", project, "--", "sh", "-c", f"cat; echo {i}", input=f"in{i}\n".encode())
        return r.returncode, r.stdout

    warm(lb, project)
    with cf.ThreadPoolExecutor(10) as pool:
        results = list(pool.map(one, range(20)))
    assert results == [(0, f"in{i}\n{i}\n".encode()) for i in range(20)]


def test_reconnects_after_the_connection_drops(lb: LB, project: str, guest: t.Any) -> None:
    warm(lb, project)
    guest.run(["pkill", "-KILL", "-u", "alice", "-x", "sshd"])
    r = lb("shell", project, "--", "echo", "again")
    assert (r.returncode, r.stdout) == (0, b"again\n"), r.stderr
    assert logins(lb) == 2


def test_a_killed_client_does_not_take_the_mux_down(lb: LB, project: str, guest: t.Any) -> None:
    warm(lb, project)
    proc = subprocess.Popen([*lb.base, "shell", project, "--", "sleep", "77"], env=lb.env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        if guest.run(["pgrep", "-f", "^sleep 77$"]).returncode == 0:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the command never started in the guest")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = lb("shell", project, "--", "echo", "still")
    assert (r.returncode, r.stdout) == (0, b"still\n")
    assert logins(lb) == 1


def test_other_users_are_refused(lb: LB, project: str) -> None:
    warm(lb, project)
    sock_path = mux_dir(lb) / f"v{PROTOCOL}.sock"
    os.chmod(mux_dir(lb), 0o755)  # even with the directory and socket opened up, the peer's uid is checked
    os.chmod(sock_path, 0o777)
    os.chmod(lb.env["LLIMA_BOX_HOME"], 0o755)
    for parent in Path(lb.env["LLIMA_BOX_HOME"]).parents:
        os.chmod(parent, os.stat(parent).st_mode | 0o005)
    probe = (
        "import socket, struct\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"s.connect({str(sock_path)!r})\n"
        f"body = b'\\0'.join([b'{__version__}', b'shell', b'/', b'-', b'0', b'0', b'touch', b'/tmp/pwned'])\n"
        "try:\n"
        "    socket.send_fds(s, [struct.pack('!I', len(body)) + body], [0, 1, 2])\n"
        "    print(repr(s.recv(100)))\n"
        "except (BrokenPipeError, ConnectionResetError):\n"
        "    print(repr(b''))\n"
    )
    nobody = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
    r = subprocess.run([*nobody, "/usr/bin/python3", "-c", probe],
                       capture_output=True, text=True, timeout=30, check=False)
    assert r.stdout.strip() == "b''", r.stderr
    assert not Path("/tmp/pwned").exists()


def test_create_and_list_share_the_connection_too(lb: LB, project: str, guest: t.Any) -> None:
    warm(lb, project)
    r = lb("create", project)
    assert r.returncode == 0, r.stderr
    name = r.stdout.decode().strip()
    rows = {row["name"]: row for row in json.loads(lb("list", "--json").stdout)}
    assert (rows[name]["project"], rows[name]["status"]) == (project, "running")
    assert lb("shell", project, "--", "true").returncode == 0
    assert logins(lb) == 1
    bad = lb("create", project + "/missing")
    assert bad.returncode == 2
    assert bad.stderr.decode() == f"Error: llima-box-guest: project is not an existing directory: {project}/missing\n"
    assert lb("create", "/etc").returncode == 2 and name in guest.run(["ls", "/var/lib/llima-box/envs"]).stdout


def test_every_command_leaves_an_audit_row(lb: LB, project: str) -> None:
    """Through the mux as without it: who, env, project, command, start, end and exit status."""
    warm(lb, project)
    tag = f"audit-{os.getpid()}-{time.monotonic_ns()}"
    assert lb("shell", project, "--", "sh", "-c", f"exit 3 # {tag}").returncode == 3
    no_mux = {**lb.env, "LLIMA_BOX_MUX": "0"}
    assert lb("shell", project, "--", "sh", "-c", f"exit 4 # {tag}", env=no_mux).returncode == 4
    sessions = json.loads(lb("audit", "--json").stdout)["sessions"]
    mine = [s for s in sessions if tag in (s["command"] or "")]
    assert [(s["exit_status"], s["kind"], s["project"], s["source"]) for s in mine] == [
        (3, "exec", project, "cli"), (4, "exec", project, "cli")]
    assert all(s["env"].startswith("lb-") and s["user"] and s["started_at"] <= s["ended_at"] for s in mine)
    assert mine[0]["command"] == f"sh -c 'exit 3 # {tag}'"


def test_a_new_env_made_through_the_mux_gets_the_configs_options(lb: LB, project: str, guest: t.Any) -> None:
    """The first command in a new project, through a running mux, makes its env as the CLI would: with the
    config's network (and shares)."""
    (Path(lb.env["LLIMA_BOX_HOME"]) / "config.toml").write_text('env_network = "offline"\n')
    warm(lb, project)
    other = guest.make_project("alice", "mux-new-" + os.urandom(3).hex())
    r = lb("shell", other, "--", "true")
    assert r.returncode == 0 and logins(lb) == 1, r.stderr  # through the mux
    rows = {row["project"]: row for row in json.loads(lb("list", "--json").stdout)}
    assert rows[other]["network"] == rows[project]["network"] == "offline"
