from __future__ import annotations

import json

from llimabox import names
from llimabox.cli import cli

LOCAL = ["--backend", "local"]


def _list(runner) -> list[dict]:
    result = runner.invoke(cli, [*LOCAL, "list", "--json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_create_prints_name_and_list_matches(runner, fake_guest, project) -> None:
    result = runner.invoke(cli, [*LOCAL, "create", str(project)])
    assert result.exit_code == 0, result.stderr
    name = result.stdout.strip()
    assert name == names.env_name(str(project))
    rows = _list(runner)
    assert [(r["name"], r["project"], r["status"], r["backend"]) for r in rows] == [
        (name, str(project), "running", "local")
    ]
    assert set(rows[0]) >= {"name", "project", "status", "backend", "created_at", "last_used_at"}
    table = runner.invoke(cli, [*LOCAL, "list"])
    assert name in table.stdout


def test_list_reconciles(runner, fake_guest, project, tmp_path) -> None:
    runner.invoke(cli, [*LOCAL, "create", str(project)])
    (fake_guest.state / "lb-stray").mkdir()
    (fake_guest.state / "lb-stray" / "project").write_text("/home/x")
    other = tmp_path / "other"
    other.mkdir()
    runner.invoke(cli, [*LOCAL, "create", str(other)])
    import shutil

    shutil.rmtree(fake_guest.state / names.env_name(str(other)))
    status = {r["name"]: r["status"] for r in _list(runner)}
    assert status == {
        names.env_name(str(project)): "running",
        "lb-stray": "unknown-to-database",
        names.env_name(str(other)): "missing-in-guest",
    }


def test_delete_by_path_and_name(runner, fake_guest, project, tmp_path) -> None:
    name = runner.invoke(cli, [*LOCAL, "create", str(project)]).stdout.strip()
    result = runner.invoke(cli, [*LOCAL, "delete", str(project)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == name and fake_guest.envs() == {}
    assert project.is_dir()
    other = tmp_path / "o"
    other.mkdir()
    name2 = runner.invoke(cli, [*LOCAL, "create", str(other)]).stdout.strip()
    assert runner.invoke(cli, [*LOCAL, "delete", name2]).exit_code == 0
    assert _list(runner) == []


def test_delete_unknown_is_1(runner, fake_guest) -> None:
    result = runner.invoke(cli, [*LOCAL, "delete", "lb-nothing"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: no env 'lb-nothing'")


def test_delete_all_needs_yes_without_terminal(runner, fake_guest, project) -> None:
    runner.invoke(cli, [*LOCAL, "create", str(project)])
    result = runner.invoke(cli, [*LOCAL, "delete-all"])
    assert result.exit_code == 2
    assert "--yes" in result.stderr
    assert len(fake_guest.envs()) == 1
    result = runner.invoke(cli, [*LOCAL, "delete-all", "--yes"])
    assert result.exit_code == 0, result.stderr
    assert fake_guest.envs() == {} and _list(runner) == []


def test_create_bad_input_is_2(runner, fake_guest, tmp_path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    result = runner.invoke(cli, [*LOCAL, "create", str(f)])
    assert result.exit_code == 2
    assert result.stderr == f"Error: project path is not a directory: {f}\n"


def test_status_json(runner, fake_guest) -> None:
    result = runner.invoke(cli, [*LOCAL, "status", "--json"])
    assert result.exit_code == 0, result.stdout
    info = json.loads(result.stdout)
    assert info["backend"] == "local" and info["up_to_date"] and info["reachable"]


def test_status_not_provisioned_is_1(runner, monkeypatch, tmp_path) -> None:
    from llimabox import guest

    monkeypatch.setattr(guest, "GUEST_PREFIX", str(tmp_path / "none"))
    result = runner.invoke(cli, [*LOCAL, "status", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["provisioned"] is False
