"""An isolated env in the test guest: outbound through pasta, its listeners published on the guest's
loopback without collisions, pinned ports, and what its network helpers may and may not do."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest

from tests.guest import PREFIX, Guest, free_port
from tests.test_network import ATTEMPT

#: a web server in an env: serves its project directory, where "who" names the env
SERVER = ["python3", "-m", "http.server", "--bind", "0.0.0.0", "3000"]
FETCH = """
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())
"""


def package_index_host() -> str:
    """The host of the package index this machine's pip uses (its configuration, else pip's own default)."""
    r = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"], capture_output=True,
                       text=True)  # fmt: skip
    url = r.stdout.strip() if r.returncode == 0 else ""
    if not url:
        from pip._internal.models.index import PyPI

        url = PyPI.simple_url
    host = urlsplit(url).hostname
    assert host, f"no package index host in pip's configuration ({url!r})"
    return host


def rows(guest: Guest) -> dict[str, dict]:
    return {r["name"]: r for r in map(json.loads, guest.guest_script("list").stdout.splitlines())}


def published(guest: Guest, name: str, inside: int, timeout: float = 15) -> int:
    """The guest port where env ``name`` publishes ``inside`` (waits for it to appear)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for port in rows(guest)[name]["ports"]:
            if port["inside"] == inside and port["published"]:
                return port["published"]
        time.sleep(0.2)
    raise AssertionError(f"{name} never published {inside}: {rows(guest)[name]}")


def serve(guest: Guest, name: str, project: str) -> subprocess.Popen:
    guest.run(["sh", "-c", f"echo {name} > {project}/who"], user="alice")
    enter = [f"{PREFIX}/enter", name, project, "--cwd", project, "--", *SERVER]
    return subprocess.Popen(guest.argv(["sudo", "-n", *enter], user="alice"), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def fetch(guest: Guest, port: int) -> str:
    r = guest.run(["python3", "-c", FETCH, f"http://127.0.0.1:{port}/who"])
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def helpers(guest: Guest) -> list[str]:
    """"PID ARGS" of the live processes of the network account (a zombie of a guest that reaps late is gone)."""
    r = guest.run(["ps", "-u", "llima-box-net", "-o", "pid=,stat=,args="])
    return [f"{pid} {args}" for pid, stat, args in (line.split(None, 2) for line in r.stdout.splitlines())
            if not stat.startswith("Z")]


def helpers_end(guest: Guest) -> list[str]:
    deadline = time.monotonic() + 5
    while helpers(guest) and time.monotonic() < deadline:
        time.sleep(0.1)
    return helpers(guest)


@pytest.fixture
def two_envs(guest: Guest, env_name: str):
    names = [env_name + "a", env_name + "b"]
    projects = [guest.make_project("alice", n) for n in names]
    yield list(zip(names, projects, strict=True))
    for name in names:
        guest.guest_script("delete", name)


def test_two_envs_both_serve_3000_each_reached_through_its_own_published_port(guest, two_envs):
    servers = []
    try:
        for name, project in two_envs:
            assert guest.guest_script("create", name, project).returncode == 0
            assert rows(guest)[name]["network"] == "isolated"
            servers.append(serve(guest, name, project))
        ports = [published(guest, name, 3000) for name, _ in two_envs]
        assert len(set(ports)) == 2 and 3000 in ports  # the first on its own number, the other moved
        assert [fetch(guest, port) for port in ports] == [name for name, _ in two_envs]
        # the first env does not reach the other's server, published on the guest's loopback
        (a, project_a), _ = two_envs
        probe = ATTEMPT + "print(attempt(socket.AF_INET, ('127.0.0.1', int(sys.argv[1]))))"
        r = guest.enter(a, project_a, "python3", "-c", probe, str(ports[1]))
        assert ports[0] == 3000 and r.stdout.split() == ["refused-111"], r.stderr
    finally:
        for server in servers:
            server.kill()
            server.wait()
    for name, _ in two_envs:
        assert guest.guest_script("delete", name).returncode == 0
    assert helpers_end(guest) == []  # pasta and the publisher end with their env
    assert guest.run(["sh", "-c", "ls /run/llima-box-net"]).stdout.strip() == ""


def test_a_pinned_port_is_published_where_asked_before_anything_listens(guest, env_name, project):
    outside = free_port()
    assert guest.guest_script("create", env_name, project, "--publish", f"3000:{outside}").returncode == 0
    try:
        assert rows(guest)[env_name]["ports"] == [{"inside": 3000, "published": outside}]
        assert guest.run(["python3", "-c", ATTEMPT + f"print(attempt(socket.AF_INET, ('127.0.0.1', {outside})))"]
                         ).stdout.split() == ["reached"]  # fmt: skip
        server = serve(guest, env_name, project)
        try:
            assert published(guest, env_name, 3000) == outside
            deadline = time.monotonic() + 10
            while guest.run(["python3", "-c", FETCH, f"http://127.0.0.1:{outside}/who"]).returncode != 0:
                assert time.monotonic() < deadline, "the pinned port never reached the server"
                time.sleep(0.2)
            assert fetch(guest, outside) == env_name
        finally:
            server.kill()
            server.wait()
        r = guest.guest_script("create", env_name, project, "--publish", "3001")
        assert r.returncode == 2 and "cannot change" in r.stderr
    finally:
        guest.guest_script("delete", env_name)


@pytest.mark.parametrize("spec", ["0", "65536", "http", "3000:", ":3000", "3000:0", "1:2:3"])
def test_a_bad_publish_is_refused_before_anything_is_made(guest, env_name, project, spec):
    r = guest.guest_script("create", env_name, project, "--publish", spec)
    assert r.returncode == 2 and "--publish takes" in r.stderr and len(r.stderr.splitlines()) == 1
    assert guest.run(["id", env_name]).returncode == 1


def test_publish_needs_an_isolated_env(guest, env_name, project):
    r = guest.guest_script("create", env_name, project, "--network", "offline", "--publish", "3000")
    assert r.returncode == 2 and "--publish needs --network isolated" in r.stderr
    assert guest.run(["id", env_name]).returncode == 1


def test_an_isolated_env_reaches_the_package_index_and_not_the_guests_other_addresses(guest, env_name, project):
    host = package_index_host()
    fetch_index = f"import urllib.request; print(urllib.request.urlopen('https://{host}/', timeout=20).status)"
    # a service of alice's on every address of the guest
    service = ("import socket; s = socket.socket(); s.bind(('0.0.0.0', 0)); s.listen(); "
               "print(s.getsockname()[1], flush=True); input()")  # fmt: skip
    assert guest.guest_script("create", env_name, project).returncode == 0
    with subprocess.Popen(guest.argv(["python3", "-c", service], user="alice"), stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as svc:  # fmt: skip
        try:
            port = int(svc.stdout.readline())
            addresses = guest.run(["hostname", "-I"]).stdout.split()
            v4 = [a for a in addresses if ":" not in a] + ["127.0.0.1"]
            probe = ATTEMPT + "print(*(attempt(socket.AF_INET, (a, int(sys.argv[1]))) for a in sys.argv[2:]))"
            r = guest.enter(env_name, project, "python3", "-c", probe, str(port), *v4)
            assert "reached" not in r.stdout.split() and len(r.stdout.split()) == len(v4), (v4, r.stdout, r.stderr)
            r = guest.enter(env_name, project, "python3", "-c", fetch_index)
            assert r.stdout.strip() in ("200", "301", "302"), r.stderr
        finally:
            svc.kill()
            guest.guest_script("delete", env_name)


def test_offline_resolves_and_reaches_nothing_outside(guest, env_name, project):
    host = package_index_host()
    address = guest.run(["getent", "ahostsv4", host]).stdout.split()[0]
    probe = ATTEMPT + "print(resolve(sys.argv[1]), attempt(socket.AF_INET, (sys.argv[2], 443)))"
    assert guest.guest_script("create", env_name, project, "--network", "offline").returncode == 0
    try:
        r = guest.enter(env_name, project, "python3", "-c", probe, host, address)
        assert r.stdout.split() == ["unresolved", "refused-101"], r.stderr  # ENETUNREACH: no route at all
    finally:
        guest.guest_script("delete", env_name)


def test_the_network_helpers_hold_nothing_an_env_could_use(guest, env_name, project):
    assert guest.guest_script("create", env_name, project).returncode == 0
    try:
        deadline = time.monotonic() + 10
        while True:  # the publisher drops to the account once it holds what it needs
            status = {}
            for line in helpers(guest):
                pid, args = line.split(None, 1)
                text = guest.run(["cat", f"/proc/{pid}/status"]).stdout
                status[args.split()[0] if "pasta" in args else "ports.py"] = dict(
                    f.split(":\t", 1) for f in text.splitlines() if ":\t" in f)
            if len(status) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert sorted(status) == ["pasta", "ports.py"], helpers(guest)
        ports = status["ports.py"]
        assert ports["CapEff"].strip() == ports["CapPrm"].strip() == "0000000000000000"
        assert ports["NoNewPrivs"].strip() == "1"
        # pasta's capabilities are those of the user namespace owning the env's network, not the guest's
        pasta = next(line.split()[0] for line in helpers(guest) if "pasta" in line)
        pasta_user, guest_user = guest.run(["readlink", f"/proc/{pasta}/ns/user", "/proc/self/ns/user"]).stdout.split()
        assert pasta_user != guest_user and status["pasta"]["Uid"].split()[0] != "0"
        assert status["pasta"]["NoNewPrivs"].strip() == "1"
        # the env's own uid cannot change its namespace's network
        r = guest.enter(env_name, project, "sh", "-c", "ip link set lo down; ip addr add 10.9.9.9/32 dev lo")
        assert r.returncode != 0 and r.stderr.count("Operation not permitted") == 2, r.stderr
    finally:
        guest.guest_script("delete", env_name)


def test_a_listener_that_ends_is_unpublished_and_its_port_freed(guest, env_name, project):
    assert guest.guest_script("create", env_name, project).returncode == 0
    server = serve(guest, env_name, project)
    try:
        port = published(guest, env_name, 3000)
        assert guest.enter(env_name, project, "pkill", "-f", "http.server").returncode == 0
        deadline = time.monotonic() + 10
        while rows(guest)[env_name]["ports"]:
            assert time.monotonic() < deadline, rows(guest)[env_name]["ports"]
            time.sleep(0.2)
        probe = ATTEMPT + f"print(attempt(socket.AF_INET, ('127.0.0.1', {port})))"
        assert guest.run(["python3", "-c", probe]).stdout.split() == ["refused-111"]  # the guest's port is free again
    finally:
        server.kill()
        server.wait()
        guest.guest_script("delete", env_name)


def npm_registry_host() -> str:
    """The host of the npm registry this machine's npm uses (its own configuration)."""
    r = subprocess.run(["npm", "config", "get", "registry"], capture_output=True, text=True, check=False)
    host = urlsplit(r.stdout.strip()).hostname
    assert r.returncode == 0 and host, f"npm has no registry configured: {r.stdout!r} {r.stderr!r}"
    return host


#: inside an env with an allow-list: each URL through the proxy (its status, or the error), then a direct
#: connection to an address outside
THROUGH = """
import socket, sys, time, urllib.request
for url in sys.argv[2:]:
    t = time.monotonic()
    try:
        print(urllib.request.urlopen(url, timeout=20).status, end=" ")
    except OSError as e:
        print("refused" if "403" in str(e) else f"error:{e}", end=" ")
    print(f"{time.monotonic() - t:.1f}")
try:
    socket.create_connection((sys.argv[1], 443), timeout=5)
    print("direct reached")
except OSError as e:
    print("direct", e.errno)
"""


def test_an_allow_list_lets_the_allowed_hosts_through_and_refuses_the_rest(guest, env_name, project):
    from tests.vm.image import apt_sources

    index, npm, other = package_index_host(), npm_registry_host(), urlsplit(apt_sources()[0]).hostname
    address = guest.run(["getent", "ahostsv4", index]).stdout.split()[0]
    r = guest.guest_script("create", env_name, project, "--allow", index, "--allow", npm)
    assert r.returncode == 0, r.stderr
    try:
        r = guest.enter(env_name, project, "python3", "-c", THROUGH, address, f"https://{index}/simple/six/",
                        f"https://{other}/", f"http://{other}/")  # fmt: skip
        lines = [line.split() for line in r.stdout.splitlines()]
        assert [line[0] for line in lines] == ["200", "refused", "refused", "direct"], r.stdout + r.stderr
        assert float(lines[1][1]) < 2 and lines[3][1] == "101"  # refused at once; no route but the proxy
        r = guest.enter(env_name, project, "npm", "view", "is-number", "version", "--cache", f"/home/{env_name}/.npm")
        assert r.returncode == 0 and r.stdout.strip()[0].isdigit(), r.stderr  # npm honours HTTPS_PROXY unchanged
        row = rows(guest)[env_name]
        assert row["allow"] == [index, npm] and other in {x["host"] for x in row["refused"]}
        assert rows(guest)[env_name]["ports"] == []  # the env's own 127.0.0.1:3128 is not published
        r = guest.guest_script("create", env_name, project, "--allow", other)
        assert r.returncode == 2 and "cannot change" in r.stderr
    finally:
        guest.guest_script("delete", env_name)
    assert helpers_end(guest) == []  # the proxy went with the env


@pytest.mark.parametrize("args, message", [
    (["--allow", "http://pypi.org"], "--allow takes a host name"),
    (["--allow", "PyPI..org"], "--allow takes a host name"),
    (["--allow", "x" * 300 + ".org"], "--allow takes a host name"),
    (["--network", "offline", "--allow", "pypi.org"], "--allow needs --network isolated"),
])  # fmt: skip
def test_a_bad_allow_is_refused_before_anything_is_made(guest, env_name, project, args, message):
    r = guest.guest_script("create", env_name, project, *args)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert guest.run(["id", env_name]).returncode == 1
