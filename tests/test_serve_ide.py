"""IDE attach for real: the OpenSSH client (``ssh``, ``ssh -L``, ``sftp``) with the Host block ``ssh-config``
writes, against ``llima-box serve`` in the test guest, set up as the IDE service runs it (keys, direct-tcpip
and sftp on).

The attacks: a local forward that tries to reach the guest's own loopback services (a server there, serve
itself) or another env's server, and sftp reading outside the env.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import time
import typing as t

import pytest

from llimabox import ide, names
from tests.guest import free_port
from tests.serve_harness import Serve, setup_accounts

WEB = "/Users/alice/web"  # env A: where the IDE attaches
OTHER = "/Users/alice/other"  # env B: another env of the same account
ALIAS = "ide-web"


@pytest.fixture(scope="module")
def ide_box(guest: t.Any, tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[tuple[Serve, str, str]]:
    """serve with forwarding and sftp on; alice's key; envs A (WEB) and B (OTHER) made; the config of A."""
    tmp = tmp_path_factory.mktemp("ide")
    key = str(tmp / "id")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    guest.install_cli()
    with open(key + ".pub", encoding="ascii") as f:
        setup_accounts(guest, f.read())
    for path in (WEB, OTHER):
        guest.run(["install", "-d", "-m", "0755", "-o", "alice", "-g", "alice", path]).check_returncode()
    guest.sh(f"echo env-a > {WEB}/marker && echo env-b > {OTHER}/marker && echo not-yours > {OTHER}/secret.txt"
             f" && chown alice:alice {WEB}/marker {OTHER}/marker {OTHER}/secret.txt"
             " && echo guest-root > /root/guest-secret.txt").check_returncode()
    box = Serve(guest, str(tmp), serve_tcp_forwarding=1, serve_sftp=1)
    try:
        for project in ("web", "other"):  # make both envs (the project form of the login)
            r = box.ssh(f"alice+{project}", "true", key=key)
            assert r.returncode == 0, (r.stderr, box.output())
        target = ide.IdeTarget(ALIAS, "127.0.0.1", box.port, f"alice+{names.env_name(WEB)}", key,
                               known_hosts=str(tmp / "known_hosts"))
        config = str(tmp / "ssh_config")
        with open(config, "w", encoding="utf-8") as f:
            f.write(ide.host_block(target))
        yield box, config, key
    finally:
        box.stop()


def _ssh(config: str, *args: str, input: bytes = b"", timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ssh", "-F", config, "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", *args],
                          input=input, capture_output=True, timeout=timeout)


def _server_command(port: int) -> str:
    """python3 -m http.server on the env's 127.0.0.1:port, left running in the env."""
    return f"setsid python3 -m http.server {port} --bind 127.0.0.1 </dev/null >/dev/null 2>&1 &"


def _get(port: int) -> bytes:
    """GET /marker from 127.0.0.1:port; what came back (b"" when the connection was closed or refused)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"GET /marker HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            return data
    except OSError:
        return b""


def _wait_for(port: int, expect: bytes) -> bytes:
    deadline = time.monotonic() + 30
    while expect not in (data := _get(port)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return data


@contextlib.contextmanager
def _forwards(config: str, tmp: str, *pairs: tuple[int, int]) -> t.Iterator[None]:
    """``ssh -L LOCAL:127.0.0.1:REMOTE`` for each pair, as one background master (ended after)."""
    control = os.path.join(tmp, "ctl")
    args = [arg for local, remote in pairs for arg in ("-L", f"{local}:127.0.0.1:{remote}")]
    r = _ssh(config, "-M", "-S", control, "-f", "-N", "-o", "ExitOnForwardFailure=yes", *args, ALIAS)
    assert r.returncode == 0, r.stderr
    try:
        yield
    finally:
        _ssh(config, "-S", control, "-O", "exit", ALIAS)


def test_ssh_lands_in_the_project_env(ide_box: tuple[Serve, str, str], guest: t.Any) -> None:
    box, config, key = ide_box
    assert ide.serve_answers(box.port)  # what ssh-config checks before it says serve is not there
    r = _ssh(config, ALIAS, "pwd; id -un; ls /Users/alice")
    assert r.returncode == 0, (r.stderr, box.output())
    assert r.stdout.decode().split() == [WEB, names.env_name(WEB), "web"]  # the other project is not there
    r = _ssh(config, "-tt", ALIAS, input=b"echo at=$(pwd) tty=$(tty)\nexit\n")  # a plain `ssh HOST`: a login shell
    assert r.returncode == 0 and f"at={WEB} tty=/dev/pts/".encode() in r.stdout, (r.stdout, r.stderr)
    # the env form of the login names only the account's own envs
    bob = box.ssh("bob+secret-ide", "true", key=key)  # bob has no such project: refused, no env
    assert bob.returncode != 0
    r = box.ssh(f"bob+{names.env_name(WEB)}", "pwd", key=key)
    assert r.returncode == 1 and f"no env {names.env_name(WEB)} of bob".encode() in r.stderr, r.stderr


def test_local_forward_reaches_the_env_and_nothing_outside(ide_box: tuple[Serve, str, str], guest: t.Any,
                                                           tmp_path: t.Any) -> None:
    box, config, key = ide_box
    dev, other, outside = free_port(), free_port(), free_port()
    r = _ssh(config, ALIAS, _server_command(dev))  # env A, through the IDE's config
    assert r.returncode == 0, r.stderr
    r = box.ssh("alice+other", _server_command(other), key=key)  # env B, through its own login
    assert r.returncode == 0, r.stderr
    guest.sh("mkdir -p /var/tmp/lb-ide-guest && echo guest-loopback > /var/tmp/lb-ide-guest/marker")
    guest_server = subprocess.Popen(guest.argv(["python3", "-m", "http.server", str(outside), "--bind", "127.0.0.1",
                                                "--directory", "/var/tmp/lb-ide-guest"]),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # env B's server is published on the guest's loopback (ports.py), the guest's own server listens there:
        # both are there to be reached from the guest, which is where the old serve connected from
        assert b"env-b" in _wait_for(other, b"env-b")
        assert b"guest-loopback" in _wait_for(outside, b"guest-loopback")
        l_dev, l_other, l_outside, l_serve = free_port(), free_port(), free_port(), free_port()
        with _forwards(config, str(tmp_path), (l_dev, dev), (l_other, other), (l_outside, outside),
                       (l_serve, box.port)):
            assert b"env-a" in _wait_for(l_dev, b"env-a")  # the dev server inside the env
            assert _get(l_outside) == b""  # the guest's loopback service: not reached
            assert _get(l_other) == b""  # another env's server (published on the guest's loopback): not reached
            with socket.create_connection(("127.0.0.1", l_serve), timeout=30) as s:
                assert s.recv(256) == b""  # serve itself, on the guest's loopback: not reached
    finally:
        guest_server.terminate()
        guest_server.wait()


def test_sftp_sees_the_env_only(ide_box: tuple[Serve, str, str], tmp_path: t.Any) -> None:
    _, config, _ = ide_box
    batch = tmp_path / "batch"
    batch.write_text(f"pwd\nls -1 /Users/alice\nget marker {tmp_path}/a\n-get {OTHER}/secret.txt {tmp_path}/b\n"
                     f"-get /root/guest-secret.txt {tmp_path}/c\n-ls -1 /home\n")
    r = subprocess.run(["sftp", "-F", config, "-b", str(batch), ALIAS], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert f"Remote working directory: {WEB}" in out
    assert (tmp_path / "a").read_text() == "env-a\n"
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
    home = out.split("ls -1 /home", 1)[1].split()
    assert home == [f"/home/{names.env_name(WEB)}"], out  # the env's own home, not the guest's accounts
    listed = out.split("ls -1 /Users/alice", 1)[1].split("sftp>", 1)[0].split()
    assert listed == ["/Users/alice/web"], out


def test_a_key_not_authorized_is_refused(ide_box: tuple[Serve, str, str], tmp_path: t.Any) -> None:
    _, config, key = ide_box
    other = str(tmp_path / "other")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other], check=True)
    with open(config, encoding="utf-8") as f:
        text = f.read().replace(key, other)
    (tmp_path / "config").write_text(text)
    r = _ssh(str(tmp_path / "config"), ALIAS, "pwd")
    assert r.returncode == 255 and b"Permission denied" in r.stderr, r.stderr


def test_the_lima_payload_installs_a_serve_of_its_own(ide_box: tuple[Serve, str, str], guest: t.Any,
                                                      tmp_path: t.Any) -> None:
    """provision/steps/62-serve-python.sh with the Lima VM's payload: a root-owned llima-box that serves."""
    from llimabox.lima import render

    payload = tmp_path / "payload.tar.gz"
    payload.write_bytes(render.payload(ide_attach=True))
    guest.sh("rm -rf /var/tmp/lb-payload && mkdir -m 0700 /var/tmp/lb-payload").check_returncode()
    guest.run(["tar", "-xzf", "-", "-C", "/var/tmp/lb-payload", "--no-same-owner"],
              input=payload.read_bytes()).check_returncode()
    try:
        r = guest.run(["env", "LB_SRC=/var/tmp/lb-payload", "bash",
                       "/var/tmp/lb-payload/provision/steps/62-serve-python.sh"])
        assert r.returncode == 0 and "IDE attach is off" not in r.stderr, r.stderr
        r = guest.sh("find /usr/local/lib/llima-box/python /usr/local/bin/llima-box \\( ! -user root -o -perm /022 \\)"
                     " -print | head -3; head -c 300 /usr/local/bin/llima-box")
        assert r.stdout.startswith("#!/bin/sh\nPYTHONPATH=/usr/local/lib/llima-box/python\n"), r.stdout
        own = Serve(guest, str(tmp_path), state="/var/lib/llima-box-serve-own", serve_sftp=1)
        try:
            _, config, _ = ide_box
            with open(config, encoding="utf-8") as f:
                text = f.read().replace(f"Port {ide_box[0].port}", f"Port {own.port}")  # another host key:
            text = re.sub(r"(?m)^  UserKnownHostsFile .*$", f"  UserKnownHostsFile {tmp_path}/own-known", text)
            (tmp_path / "config").write_text(text)
            r = _ssh(str(tmp_path / "config"), ALIAS, "pwd")
            assert (r.returncode, r.stdout) == (0, f"{WEB}\n".encode()), (r.stderr, own.output())
        finally:
            own.stop()
    finally:
        guest.install_cli()  # the other tests' llima-box: this checkout
