from __future__ import annotations

import os

from llimabox import guest, names
from llimabox.cli import cli
from llimabox.selfpath import self_command


def test_shell_runs_command_with_argv_intact(lb, project) -> None:
    args = ["a b", "'q\"", "$(id)", "`id`", "x\ny", "*"]
    result = lb("shell", str(project), "--", "printf", "<%s>", *args)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "".join(f"<{a}>" for a in args)
    assert lb.envs_in_guest()[names.env_name(str(project))] == str(project)


def test_shell_streams_stdin_and_keeps_stderr_apart(lb, project) -> None:
    result = lb("shell", str(project), "--", "sh", "-c", "tr a-z A-Z; echo oops >&2", input="hello\n")
    assert result.exit_code == 0, result.stderr
    assert (result.stdout, result.stderr) == ("HELLO\n", "oops\n")


def test_shell_exit_status_is_the_commands(lb, project) -> None:
    for code in (0, 1, 42):
        assert lb("shell", str(project), "--", "sh", "-c", f"exit {code}").exit_code == code
    assert lb("shell", str(project), "--", "no-such-command").exit_code == 127
    assert lb("shell", str(project), "--", "/etc/passwd").exit_code == 126


def test_shell_leading_double_dash_uses_cwd(lb, project, monkeypatch) -> None:
    monkeypatch.chdir(project)
    result = lb("shell", "--", "pwd")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(project)


def test_shell_in_subdir_of_known_env_starts_there(lb, project, monkeypatch) -> None:
    assert lb("create", str(project)).exit_code == 0
    sub = project / "src"
    lb.guest.run(["install", "-d", "-o", "alice", "-g", "alice", str(sub)]).check_returncode()
    monkeypatch.chdir(sub)
    result = lb("shell", "--", "pwd")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(sub)
    assert names.env_name(str(sub)) not in lb.envs_in_guest()


def test_shell_not_provisioned_is_125(lb, project, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(guest, "GUEST_PREFIX", str(tmp_path / "nothing-here"))
    result = lb("--backend", "local", "shell", str(project), "--", "true")
    assert result.exit_code == 125
    assert result.stderr.startswith("Error: ")
    assert f"run: sudo {self_command()} --backend local provision" in result.stderr
    assert self_command().startswith(("/", "'/"))  # sudo's secure_path may lack the venv of llima-box
    assert len(result.stderr.strip().splitlines()) == 1


def test_shell_bad_path_is_125(lb, project) -> None:
    missing = project / "nope"
    result = lb("shell", str(missing), "--", "true")
    assert result.exit_code == 125
    assert result.stderr == f"Error: llima-box-guest: project is not an existing directory: {missing}\n"


def test_shell_usage_error_is_125(lb) -> None:
    assert lb("shell", "--bogus").exit_code == 125
    result = lb("shell", "/tmp", "echo", "hi")
    assert result.exit_code == 125 and "after --" in result.stderr


def test_shell_unreachable_ssh_is_125_one_line(lb, project) -> None:
    result = lb("--host", "alice@127.0.0.1:1", "shell", str(project), "--", "true")
    assert result.exit_code == 125
    assert result.stderr.startswith("Error: connection to 127.0.0.1:1 refused")
    assert len(result.stderr.splitlines()) == 1


def test_lima_backend_without_limactl(lb, project, monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    result = lb("--backend", "lima", "create", str(project))
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: limactl is not on PATH") and "brew install lima" in result.stderr


def test_debug_shows_traceback(lb, tmp_path) -> None:
    missing = tmp_path / "nope"
    result = lb("--debug", "--backend", "local", "create", str(missing))
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and result.stderr.rstrip().endswith("does not exist: " + str(missing))
    assert os.path.isdir(tmp_path) and cli is not None
