from __future__ import annotations

import pytest

from llimabox import __version__
from llimabox.cli import cli

COMMANDS = sorted(cli.commands)


def test_every_command_has_help_with_example() -> None:
    assert set(COMMANDS) >= {"shell", "create", "list", "delete", "delete-all", "status", "provision"}
    for name in COMMANDS:
        assert cli.commands[name].help and "Example" in cli.commands[name].help, name


@pytest.mark.parametrize("name", COMMANDS)
def test_help_exits_0(runner, name: str) -> None:
    result = runner.invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert f"llima-box {name}" in result.output


def test_version(runner) -> None:
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_unknown_command_exit_2(runner) -> None:
    result = runner.invoke(cli, ["frobnicate"])
    assert result.exit_code == 2
    assert "Error:" in result.stderr


def test_cli_does_not_import_heavy_modules() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from llimabox.cli import main\n"
        "heavy = [m for m in ('paramiko', 'sqlalchemy', 'llimabox.api', 'llimabox.transport') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
