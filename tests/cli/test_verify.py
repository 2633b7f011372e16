"""``llima-box verify``: the isolation battery, run inside a real env."""

from __future__ import annotations

CHECKS = ["own-uid", "no-privileges", "own-processes", "private-scratch", "read-only-system", "nothing-else-visible",
          "no-caller-terminal", "own-keyring", "own-cgroup", "writable-home-and-project"]


def test_verify_passes_in_a_healthy_env(lb, project) -> None:
    result = lb("verify", str(project))
    assert result.exit_code == 0, result.output
    assert [line.split()[:2] for line in result.stdout.splitlines()] == [["ok", c] for c in CHECKS]
    rows = lb.json("verify", str(project))
    assert [(r["check"], r["ok"]) for r in rows] == [(c, True) for c in CHECKS]


def test_verify_names_what_does_not_hold(lb, project, guest) -> None:
    """An env provisioned to share its owner's uid (shared-uid) is not an account of its own."""
    guest.reprovision("--project-mode", "shared-uid").check_returncode()
    try:
        result = lb("verify", str(project))
    finally:
        guest.reprovision().check_returncode()
        lb("delete", str(project), "--yes")
    assert result.exit_code == 1
    failed = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("FAIL")}
    assert failed == {"own-uid", "writable-home-and-project"}, result.stdout
