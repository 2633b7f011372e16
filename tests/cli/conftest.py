"""The command layer in-process (click's CliRunner) against the real test guest, over the ssh backend.

Projects live in the guest's shared directory, at the same path here and there, so commands that
take the working directory as the project work as they do with Lima's home mount.
"""

from __future__ import annotations

import secrets
import typing as t
from pathlib import Path

import pytest
from click.testing import CliRunner

from llimabox.cli import cli
from tests.guest import Guest


class LB:
    """Invokes the CLI with a state dir of its own, the host key of the guest pinned."""

    def __init__(self, guest: Guest, home: Path) -> None:
        self.guest, self.home = guest, home
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | bytes | None = None) -> t.Any:
        return self.runner.invoke(cli, list(args), input=input)

    def json(self, *args: str) -> t.Any:
        import json

        result = self(*args, "--json")
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)

    def envs_in_guest(self) -> dict[str, str]:
        """The guest's own view: env name → project."""
        import json

        out = self.guest.run(["/usr/local/libexec/llima-box/list"]).stdout
        return {e["name"]: e["project"] for e in map(json.loads, out.splitlines())}


@pytest.fixture
def lb(guest: Guest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LB:
    home = tmp_path / "lbhome"
    home.mkdir()
    known = home / "known_hosts"
    known.write_text(f"[127.0.0.1]:{guest.port} {guest.host_key_pub}")
    settings = {
        "HOME": str(home),
        "BACKEND": "ssh",
        "HOST": f"{guest.user}@127.0.0.1:{guest.port}",
        "IDENTITY": str(guest.key),
        "KNOWN_HOSTS": str(known),
    }
    for key, value in settings.items():
        monkeypatch.setenv(f"LLIMA_BOX_{key}", value)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return LB(guest, home)


@pytest.fixture
def project(guest: Guest) -> Path:
    return guest.make_shared_project("alice", "My App " + secrets.token_hex(3))


@pytest.fixture
def runner() -> CliRunner:
    """For commands that reach no guest (help, usage)."""
    return CliRunner()
