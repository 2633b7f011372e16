"""``llima-box doctor`` over the ssh backend against the real test guest: a healthy install passes;
each thing doctor checks, broken in the guest, fails with the fix that provisioning is."""

from __future__ import annotations

import json

import pytest

PREFIX = "/usr/local/libexec/llima-box"
HEALTHY = ["backend", "ssh", "guest_scripts", "guest_conf", "sudoers", "namespaces", "network", "isolation",
           "state_db"]


def _report(lb) -> tuple[int, dict]:
    result = lb("doctor", "--json")
    return result.exit_code, json.loads(result.stdout)


def test_a_healthy_ssh_install_passes(lb) -> None:
    code, report = _report(lb)
    assert (code, report["ok"]) == (0, True), report
    assert [c["name"] for c in report["checks"]] == HEALTHY
    assert all(c["ok"] is True for c in report["checks"]), report
    result = lb("doctor")
    assert result.exit_code == 0 and "??" not in result.stdout and "FAIL" not in result.stdout, result.stdout


BREAKAGES = {
    "guest.conf removed": ("rm -f /etc/llima-box/guest.conf", "guest_conf"),
    "guest.conf without ROOTS": ("sed -i '/^ROOTS=/d' /etc/llima-box/guest.conf", "guest_conf"),
    "guest.conf with a bad mode": ("sed -i 's/^PROJECT_MODE=.*/PROJECT_MODE=nonsense/' /etc/llima-box/guest.conf",
                                   "guest_conf"),
    "sudoers rule removed": ("rm -f /etc/sudoers.d/llima-box", "sudoers"),
    "sudoers rule for someone else": ("sed -i 's/^alice /bob /' /etc/sudoers.d/llima-box", "sudoers"),
    "sudoers rule without a verb": ("sed -i 's|, [^,]*/stop||' /etc/sudoers.d/llima-box", "sudoers"),
    "guest scripts removed": (f"rm -f {PREFIX}/version", "guest_scripts"),
    "guest scripts older": (f"echo 1 > {PREFIX}/VERSION", "guest_scripts"),
    "network account removed": ("userdel llima-box-net", "network"),
}


@pytest.mark.parametrize("breakage", BREAKAGES, ids=list(BREAKAGES))
def test_each_breakage_fails_with_its_fix(lb, guest, breakage: str) -> None:
    script, name = BREAKAGES[breakage]
    provision = f"llima-box --backend ssh --host alice@127.0.0.1:{guest.port} provision"
    guest.sh(script).check_returncode()
    try:
        code, report = _report(lb)
        text = lb("doctor").stdout
    finally:
        guest.reprovision().check_returncode()
    failed = [c for c in report["checks"] if c["ok"] is not True]
    assert code == 1 and report["ok"] is False, report
    assert [c["name"] for c in failed] == [name], report
    assert failed[0]["ok"] is False and provision in failed[0]["fix"], failed[0]
    assert f"FAIL {name}:" in text and f"(fix: {failed[0]['fix']})" in text, text
    assert _report(lb)[0] == 0  # provisioning, the named fix, repaired it


def test_an_unreachable_host_names_the_ssh_command(lb, guest, monkeypatch, tmp_path) -> None:
    from tests.guest import free_port

    monkeypatch.setenv("LLIMA_BOX_HOST", f"alice@127.0.0.1:{free_port()}")
    code, report = _report(lb)
    ssh = next(c for c in report["checks"] if c["name"] == "ssh")
    assert code == 1 and ssh["ok"] is False and ssh["fix"].startswith("ssh -p "), report


def test_an_unpinned_host_key_names_accept_host_key(lb, monkeypatch, tmp_path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    monkeypatch.setenv("LLIMA_BOX_KNOWN_HOSTS", str(empty))
    code, report = _report(lb)
    ssh = next(c for c in report["checks"] if c["name"] == "ssh")
    assert code == 1 and ssh["ok"] is False and "--accept-host-key" in ssh["fix"], report
    assert lb("--accept-host-key", "doctor").exit_code == 0
