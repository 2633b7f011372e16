from __future__ import annotations

import os

from llimabox import guest, names
from llimabox.cli import cli


def test_shell_runs_command_with_argv_intact(runner, fake_guest, project, capfd) -> None:
    args = ["a b", "'q\"", "$(id)", "`id`", "x\ny"]
    result = runner.invoke(cli, ["--backend", "local", "shell", str(project), "--", "printf", "<%s>", *args])
    out, _ = capfd.readouterr()
    assert result.exit_code == 0, result.stderr
    assert out == "".join(f"<{a}>" for a in args)
    assert fake_guest.envs() == {names.env_name(str(project)): str(project)}


def test_shell_exit_status_is_the_commands(runner, fake_guest, project) -> None:
    for code in (0, 1, 42):
        result = runner.invoke(cli, ["--backend", "local", "shell", str(project), "--", "sh", "-c", f"exit {code}"])
        assert result.exit_code == code


def test_shell_leading_double_dash_uses_cwd(runner, fake_guest, project, monkeypatch, capfd) -> None:
    monkeypatch.chdir(project)
    result = runner.invoke(cli, ["--backend", "local", "shell", "--", "pwd"])
    assert result.exit_code == 0, result.stderr
    assert capfd.readouterr().out.strip() == str(project)


def test_shell_in_subdir_of_known_env_starts_there(runner, fake_guest, project, monkeypatch, capfd) -> None:
    assert runner.invoke(cli, ["--backend", "local", "create", str(project)]).exit_code == 0
    sub = project / "src"
    sub.mkdir()
    monkeypatch.chdir(sub)
    result = runner.invoke(cli, ["--backend", "local", "shell", "--", "pwd"])
    assert result.exit_code == 0, result.stderr
    assert capfd.readouterr().out.strip() == str(sub)
    assert list(fake_guest.envs()) == [names.env_name(str(project))]


def test_shell_not_provisioned_is_125(runner, project, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(guest, "GUEST_PREFIX", str(tmp_path / "nothing-here"))
    result = runner.invoke(cli, ["--backend", "local", "shell", str(project), "--", "true"])
    assert result.exit_code == 125
    assert result.stderr.startswith("Error: ")
    assert "sudo llima-box --backend local provision" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_shell_bad_path_is_125(runner, tmp_path) -> None:
    result = runner.invoke(cli, ["--backend", "local", "shell", str(tmp_path / "nope"), "--", "true"])
    assert result.exit_code == 125
    assert result.stderr == f"Error: project path does not exist: {tmp_path / 'nope'}\n"


def test_shell_usage_error_is_125(runner) -> None:
    result = runner.invoke(cli, ["shell", "--bogus"])
    assert result.exit_code == 125
    result = runner.invoke(cli, ["shell", "/tmp", "echo", "hi"])
    assert result.exit_code == 125 and "after --" in result.stderr


def test_shell_unreachable_ssh_is_125_one_line(runner, project) -> None:
    result = runner.invoke(cli, ["--host", "alice@127.0.0.1:1", "shell", str(project), "--", "true"])
    assert result.exit_code == 125
    assert result.stderr.startswith("Error: connection to 127.0.0.1:1 refused")
    assert len(result.stderr.splitlines()) == 1


def test_lima_backend_not_yet(runner, project) -> None:
    result = runner.invoke(cli, ["--backend", "lima", "create", str(project)])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: lima backend: coming soon")


def test_debug_shows_traceback(runner, tmp_path) -> None:
    result = runner.invoke(cli, ["--debug", "--backend", "local", "create", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and result.stderr.rstrip().endswith("does not exist: " + str(tmp_path / "nope"))
    assert os.path.basename(str(tmp_path))
