"""An env's network: ``isolated`` (the default: a namespace of its own, outbound through pasta, its listeners
published on the guest's loopback), ``offline`` (loopback only) or ``shared`` (the guest's), attacked from
inside the env against services of the guest and of other envs in the test guest."""

from __future__ import annotations

import json
import secrets
import subprocess

import pytest

from tests.guest import Guest

#: a service of alice's outside every env: a TCP port on the guest's loopback and an abstract Unix socket
SERVICE = """
import socket, sys
tcp = socket.socket()
tcp.bind(("127.0.0.1", 0))
tcp.listen()
unix = socket.socket(socket.AF_UNIX)
unix.bind("\\0" + sys.argv[1])
unix.listen()
print(tcp.getsockname()[1], flush=True)
sys.stdin.read()
"""

#: run inside an env: attempt(family, address) says whether it reaches it; resolve(name) whether it resolves
ATTEMPT = """
import socket, sys
def attempt(family, address):
    s = socket.socket(family)
    s.settimeout(5)
    try:
        s.connect(address)
        return "reached"
    except OSError as e:
        return f"refused-{e.errno}"
def resolve(name):
    try:
        socket.getaddrinfo(name, 80)
        return "resolved"
    except OSError:
        return "unresolved"
"""

#: what the env reaches: the guest's TCP service, its abstract socket, a listener of its own, localhost's name,
#: and whether the guest's socket shows in /proc/net/unix
PROBE = ATTEMPT + """
own = socket.socket()
own.bind(("127.0.0.1", 0))
own.listen()
print(attempt(socket.AF_INET, ("127.0.0.1", int(sys.argv[1]))), attempt(socket.AF_UNIX, "\\0" + sys.argv[2]),
      attempt(socket.AF_INET, own.getsockname()), resolve("localhost"), sys.argv[2] in open("/proc/net/unix").read())
"""


@pytest.fixture
def service(guest: Guest):
    name = "lb-svc-" + secrets.token_hex(3)
    with subprocess.Popen(guest.argv(["python3", "-c", SERVICE, name], user="alice"), stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as proc:  # fmt: skip
        try:
            yield int(proc.stdout.readline()), name
        finally:
            proc.kill()


def network_of(guest: Guest, name: str) -> str:
    rows = [json.loads(line) for line in guest.guest_script("list").stdout.splitlines()]
    return next(r["network"] for r in rows if r["name"] == name)


@pytest.mark.parametrize("network, seen", [
    ("isolated", ["refused-111", "refused-111", "reached", "resolved", "False"]),  # none of the guest's
    ("offline", ["refused-111", "refused-111", "reached", "resolved", "False"]),  # loopback of its own only
    ("shared", ["reached", "reached", "reached", "resolved", "True"]),  # the guest's network, as before
])  # fmt: skip
def test_what_an_env_reaches_of_the_guest(guest, env_name, project, service, network, seen):
    port, socket_name = service
    flags = [] if network == "isolated" else ["--network", network]  # isolated is the default
    assert guest.guest_script("create", env_name, project, *flags).returncode == 0
    try:
        assert network_of(guest, env_name) == network
        r = guest.enter(env_name, project, "python3", "-c", PROBE, str(port), socket_name)
        assert r.stdout.split() == seen, r.stderr
    finally:
        guest.guest_script("delete", env_name)


def test_the_network_of_an_env_is_fixed_once_made(guest, env_name, project):
    assert guest.guest_script("create", env_name, project, "--network", "offline").returncode == 0
    try:
        r = guest.guest_script("create", env_name, project, "--network", "shared")
        assert r.returncode == 2 and "cannot change" in r.stderr and len(r.stderr.splitlines()) == 1
        assert guest.guest_script("create", env_name, project, "--network", "offline").returncode == 0
        assert network_of(guest, env_name) == "offline"
    finally:
        guest.guest_script("delete", env_name)


def test_an_unknown_network_is_refused_before_anything_is_made(guest, env_name, project):
    r = guest.guest_script("create", env_name, project, "--network", "bridged")
    assert r.returncode == 2 and "--network takes isolated, offline or shared" in r.stderr
    assert guest.run(["id", env_name]).returncode == 1
