"""Network modes in a real systemd guest: an offline env has a loopback of its own, none of the guest's services,
not its DNS stub; an isolated env (the default) neither, but it resolves names through pasta and systemd-resolved,
and its server is published on the guest's loopback, where Lima's port forwarding would find it."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from pathlib import Path

from tests.test_isolated import FETCH, package_index_host
from tests.test_network import ATTEMPT
from tests.vm.lb import LB
from tests.vm.machine import VM

#: the guest's sshd and its DNS stub (systemd-resolved), then a listener of the env's own on its loopback
PROBE = ATTEMPT + """
own = socket.socket()
own.bind(("127.0.0.1", 0))
own.listen()
print(attempt(socket.AF_INET, ("127.0.0.1", 22)), attempt(socket.AF_INET, ("127.0.0.53", 53)),
      attempt(socket.AF_INET, own.getsockname()))
"""


def test_an_offline_env_reaches_no_service_of_the_guest(vm: VM, lb: LB) -> None:
    project = vm.host_project(vm.share("9p"), f"offline-{secrets.token_hex(2)}")
    r = lb("create", str(project), "--network", "offline")
    assert r.returncode == 0, r.stderr
    name = r.stdout.decode().strip()
    try:
        assert lb.guest_envs()[name]["network"] == "offline"
        r = lb("shell", str(project), "--", "python3", "-c", PROBE)
        assert r.stdout.split() == [b"refused-111", b"refused-111", b"reached"], r.stderr
        assert lb("shell", str(project), "--", "sh", "-c", "echo ok > f && cat f").stdout == b"ok\n"
    finally:
        lb("delete", name, "--yes")


def test_an_isolated_env_resolves_through_pasta_and_its_server_is_published(vm: VM, lb: LB) -> None:
    project = vm.host_project(vm.share("9p"), f"isolated-{secrets.token_hex(2)}")
    (project / "who").write_text("isolated\n")
    r = lb("create", str(project))
    assert r.returncode == 0, r.stderr
    name = r.stdout.decode().strip()
    server = subprocess.Popen([*lb.base, "shell", str(project), "--", "python3", "-m", "http.server", "3000"],
                              env=lb.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert lb.guest_envs()[name]["network"] == "isolated"
        r = lb("shell", str(project), "--", "python3", "-c", PROBE)
        assert r.stdout.split() == [b"refused-111", b"refused-111", b"reached"], r.stderr
        host = package_index_host()
        r = lb("shell", str(project), "--", "getent", "hosts", host)
        assert r.returncode == 0 and r.stdout.split(), r.stderr  # systemd-resolved's answer, through pasta
        deadline = time.monotonic() + 30
        while True:
            ports = lb.json("ports", str(project))
            if ports and vm.ssh(f"python3 -c '{FETCH}' http://127.0.0.1:{ports[0]['published']}/who").returncode == 0:
                break
            assert time.monotonic() < deadline, ports
            time.sleep(0.5)
        assert ports == [{"name": name, "project": str(project), "inside": 3000, "published": 3000}]
        r = vm.ssh(f"python3 -c '{FETCH}' http://127.0.0.1:3000/who")
        assert r.stdout.strip() == "isolated", r.stderr
    finally:
        server.kill()
        server.wait()
        lb("delete", name, "--yes")
    r = vm.ssh(f"pgrep -u llima-box-net -f {name} | wc -l; "
               f"systemctl list-units --all llima-box-{name}.scope --no-legend | wc -l")
    assert r.stdout.split() == ["0", "0"], r.stdout  # pasta, the publisher and the env's scope went with it


def trust_what_this_machine_trusts(vm: VM) -> None:
    """The guest's CA bundle becomes the one pip here uses (this machine's network may re-sign TLS)."""
    r = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.cert"], capture_output=True,
                       text=True, check=False)  # fmt: skip
    bundle = Path(r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else "/etc/ssl/certs/ca-certificates.crt")
    r = vm.ssh("sudo -n tee /etc/ssl/certs/ca-certificates.crt >/dev/null", input=bundle.read_bytes())
    assert r.returncode == 0, r.stderr


def test_an_allow_list_holds_in_a_real_guest(vm: VM, lb: LB) -> None:
    from urllib.parse import urlsplit

    from tests.test_isolated import THROUGH
    from tests.vm.image import apt_sources

    index, other = package_index_host(), urlsplit(apt_sources()[0]).hostname
    trust_what_this_machine_trusts(vm)
    project = vm.host_project(vm.share("9p"), f"allow-{secrets.token_hex(2)}")
    r = lb("create", str(project), "--allow", index)
    assert r.returncode == 0, r.stderr
    name = r.stdout.decode().strip()
    try:
        r = lb("shell", str(project), "--", "python3", "-c", THROUGH, "192.0.2.1", f"https://{index}/simple/six/",
               f"https://{other}/")  # fmt: skip
        assert [line.split()[0] for line in r.stdout.decode().splitlines()] == ["200", "refused", "direct"], r
        assert [(x["name"], x["host"]) for x in lb.json("audit", "--egress")] == [(name, other)]
    finally:
        lb("delete", name, "--yes")
