"""An offline env in a real systemd guest: loopback of its own, none of the guest's services, not its DNS stub."""

from __future__ import annotations

import secrets

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
