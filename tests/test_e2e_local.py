"""End to end: the local backend inside the guest, running the installed ``llima-box`` as alice."""

from __future__ import annotations

import json
import typing as t

import pytest


def _run(guest: t.Any, *args: str, input: bytes | None = None) -> t.Any:
    kwargs = {"input": input} if input is not None else {}
    return guest.run(["llima-box", "--backend", "local", *args], user="alice", **kwargs)


def _out(r: t.Any) -> bytes:
    out = r.stdout
    return out if isinstance(out, bytes) else out.encode()


@pytest.fixture(scope="module")
def project(guest: t.Any) -> str:
    guest.install_cli()
    return str(guest.make_project("alice", "e2e-local"))


def test_create_shell_list_delete(guest: t.Any, project: str) -> None:
    r = _run(guest, "create", project)
    assert r.returncode == 0, r.stderr
    name = _out(r).decode().strip()
    rows = json.loads(_out(_run(guest, "list", "--json")))
    assert [(row["name"], row["status"]) for row in rows if row["project"] == project] == [(name, "running")]
    r = _run(guest, "shell", project, "--", "printf", "<%s>", "a b", "$(id)", "x\ny")
    assert (r.returncode, _out(r)) == (0, b"<a b><$(id)><x\ny>")
    assert _run(guest, "delete", name, "--yes").returncode == 0
    assert all(row["name"] != name for row in json.loads(_out(_run(guest, "list", "--json"))))


@pytest.mark.parametrize("code", [0, 1, 42])
def test_exit_codes(guest: t.Any, project: str, code: int) -> None:
    assert _run(guest, "shell", project, "--", "sh", "-c", f"exit {code}").returncode == code


def test_126_127_and_stdin(guest: t.Any, project: str) -> None:
    assert _run(guest, "shell", project, "--", "no-such-command-xyz").returncode == 127
    assert _run(guest, "shell", project, "--", "/etc/passwd").returncode == 126
    r = _run(guest, "shell", project, "--", "cat", input=b"hi\n")
    assert (r.returncode, _out(r)) == (0, b"hi\n")


def test_bad_project_is_125(guest: t.Any) -> None:
    r = _run(guest, "shell", "/nonexistent", "--", "true")
    assert r.returncode == 125
    err = r.stderr if isinstance(r.stderr, bytes) else r.stderr.encode()
    assert err.startswith(b"Error: ") and len(err.splitlines()) == 1


def test_delete_all(guest: t.Any) -> None:
    p = str(guest.make_project("alice", "e2e-local-2"))
    assert _run(guest, "create", p).returncode == 0
    assert _run(guest, "delete-all").returncode == 2
    assert _run(guest, "delete-all", "--yes").returncode == 0
    assert json.loads(_out(_run(guest, "list", "--json"))) == []


def test_agent_forwarding_to_an_env_of_its_own_uid(guest: t.Any, project: str) -> None:
    """OpenSSH's agent answers its own uid only; the env has another one: the entry's relay asks as the caller."""
    script = ('eval "$(ssh-agent -s)" >/dev/null && trap "kill $SSH_AGENT_PID" EXIT && '
              'k=$(mktemp -u) && ssh-keygen -q -t ed25519 -N "" -C local-fwd -f "$k" && ssh-add -q "$k" 2>/dev/null && '
              f'llima-box --backend local shell -A {project} -- sh -c "id -un; ssh-add -l"')
    r = guest.run(["sh", "-c", script], user="alice")
    assert r.returncode == 0, r.stderr
    assert "local-fwd" in r.stdout and r.stdout.startswith("lb-")


@pytest.mark.parametrize("owner", ["root", "bob"])
def test_a_project_not_yours_is_one_error_line(guest: t.Any, project: str, owner: str) -> None:
    """The guest refuses it; the caller sees that refusal as llima-box's own one-line error, nothing is made."""
    p = f"/Users/alice/not-yours-{owner}"
    guest.run(["install", "-d", "-o", owner, "-m", "0755", p]).check_returncode()
    try:
        r = _run(guest, "shell", p, "--", "true")
        err = r.stderr if isinstance(r.stderr, bytes) else r.stderr.encode()
        assert (r.returncode, err.startswith(b"Error: "), len(err.splitlines())) == (125, True, 1), err
        assert all(row["project"] != p for row in json.loads(_out(_run(guest, "list", "--json"))))
    finally:
        guest.run(["rmdir", p])


def test_shell_is_audited(guest: t.Any, project: str) -> None:
    assert _run(guest, "shell", project, "--", "sh", "-c", "exit 5 # local-audit").returncode == 5
    sessions = json.loads(_out(_run(guest, "audit", "--json")))["sessions"]
    row = [s for s in sessions if "local-audit" in (s["command"] or "")][-1]
    assert (row["user"], row["project"], row["exit_status"], row["kind"]) == ("alice", project, 5, "exec")


def _doctor(guest: t.Any, *, path: str | None = None) -> tuple[int, dict, str]:
    argv = ["llima-box", "--backend", "local", "doctor"]
    if path is not None:
        argv = ["env", f"PATH={path}", *argv]
    report = guest.run([*argv, "--json"], user="alice")
    text = guest.run(argv, user="alice")
    assert "internal error" not in text.stderr + report.stderr, (text.stderr, report.stderr)
    return report.returncode, json.loads(_out(report)), text.stdout


def test_doctor_passes_on_a_healthy_local_install(guest: t.Any, project: str) -> None:
    """alice may run only the guest verbs through sudo: nothing doctor cannot check fails it."""
    code, report, text = _doctor(guest)
    assert (code, report["ok"]) == (0, True), report
    assert [c["name"] for c in report["checks"]] == ["backend", "ssh", "guest_scripts", "guest_conf", "sudoers",
                                                     "namespaces", "network", "isolation", "state_db"]
    assert "??" not in text and "FAIL" not in text, text


def test_doctor_before_provisioning_names_the_fix(guest: t.Any, project: str) -> None:
    """What provisioning writes, missing: no internal error, each failure names sudo with the absolute path."""
    guest.sh("rm -f /usr/local/libexec/llima-box/version /etc/llima-box/guest.conf /etc/sudoers.d/llima-box"
             ).check_returncode()
    try:
        code, report, text = _doctor(guest)
    finally:
        guest.reprovision().check_returncode()
    fix = "sudo /usr/local/bin/llima-box --backend local provision"
    failed = {c["name"]: c["fix"] for c in report["checks"] if c["ok"] is not True}
    assert code == 1 and failed == {"guest_scripts": fix, "guest_conf": fix, "sudoers": fix}, report
    assert f"(fix: {fix})" in text and "sudo sudo" not in text, text


def test_the_sudo_hint_works_for_a_venv_install(guest: t.Any, project: str) -> None:
    """sudo's secure_path lacks a venv's bin: the hint names the running llima-box by its absolute path."""
    venv = "/home/alice.guest/venv with space/bin"
    guest.run(["install", "-D", "-m", "0755", "/usr/local/bin/llima-box", f"{venv}/llima-box"]).check_returncode()
    guest.sh("rm -f /usr/local/libexec/llima-box/version").check_returncode()
    try:
        code, report, _ = _doctor(guest, path=f"{venv}:/usr/bin:/bin")
        fix = next(c["fix"] for c in report["checks"] if c["name"] == "guest_scripts")
        assert code == 1 and fix == f"sudo '{venv}/llima-box' --backend local provision", report
        assert guest.run(["sh", "-c", fix]).returncode == 0  # as root: sudo with its secure_path
        assert _doctor(guest)[0] == 0
    finally:
        guest.reprovision().check_returncode()
        guest.run(["rm", "-rf", "/home/alice.guest/venv with space"])


def test_doctor_as_root_compares_the_sudoers_rule_with_what_provisioning_writes(guest: t.Any, project: str) -> None:
    argv = ["llima-box", "--backend", "local", "doctor", "--json"]
    healthy = guest.run(argv)
    assert healthy.returncode == 0, healthy.stdout
    guest.sh("sed -i 's/^alice /bob /' /etc/sudoers.d/llima-box").check_returncode()
    try:
        broken = guest.run(argv)
    finally:
        guest.reprovision().check_returncode()
    failed = {c["name"]: c["fix"] for c in json.loads(_out(broken))["checks"] if c["ok"] is not True}
    assert broken.returncode == 1, broken.stdout
    assert failed == {"sudoers": "sudo /usr/local/bin/llima-box --backend local provision"}, failed


def test_doctor_as_root_knows_the_rule_of_a_provisioned_group(guest: t.Any, project: str) -> None:
    guest.reprovision("--group", "llima-box").check_returncode()
    try:
        r = guest.run(["llima-box", "--backend", "local", "doctor", "--json"])
    finally:
        guest.reprovision("--group", "").check_returncode()
    assert r.returncode == 0, r.stdout
