"""``ssh-config``'s library (llimabox/ide.py): the Host block, the key, authorizing it, the env it names.

The block itself is used for real with OpenSSH in tests/test_serve_ide.py.
"""

from __future__ import annotations

import os
import pwd
import socket
import stat
import subprocess
import typing as t

import pytest
from click.testing import CliRunner

from llimabox import api, ide
from llimabox.cli import cli
from llimabox.errors import InvalidInput


class _Local:
    kind, identity = "local", "local"

    def close(self) -> None:
        pass


@pytest.fixture
def port(monkeypatch: pytest.MonkeyPatch) -> t.Iterator[int]:
    """ide_port: a port bound here and not listening, so nothing answers on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("LLIMA_BOX_IDE_PORT", str(s.getsockname()[1]))
        yield s.getsockname()[1]


@pytest.fixture
def home(tmp_path: t.Any, monkeypatch: pytest.MonkeyPatch, port: int) -> t.Any:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("LLIMA_BOX_HOME", str(tmp_path / "lb"))
    (tmp_path / ".ssh").mkdir(mode=0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "me@laptop", "-f",
                    str(tmp_path / ".ssh" / "id_ed25519")], check=True)
    monkeypatch.setattr(api, "open_backend", lambda *a, **kw: _Local())
    monkeypatch.setattr(api, "create_in", lambda backend, path, *a: "lb-app-0123456789abcd")
    return tmp_path


def test_block_names_the_env_the_key_and_the_port(home: t.Any, port: int) -> None:
    found = ide.ssh_config(str(home))
    block, status = found.block, found.authorized
    user = f"{pwd.getpwuid(os.getuid()).pw_name}+lb-app-0123456789abcd"
    assert block == (
        f"Host llima-box-app-0123456789abcd\n  HostName 127.0.0.1\n  Port {port}\n"
        f"  User {user}\n  IdentityFile {home}/.ssh/id_ed25519\n  IdentitiesOnly yes\n"
        f"  PreferredAuthentications publickey\n  HostKeyAlias llima-box-serve-local-{port}\n"
        "  StrictHostKeyChecking accept-new\n")
    assert status is None and found.serve_answers is False  # nothing listens on that port


def test_authorize_adds_the_key_once(home: t.Any) -> None:
    pub = (home / ".ssh" / "id_ed25519.pub").read_text().strip()
    assert ide.ssh_config(str(home), authorize=True).authorized == "added"
    assert ide.ssh_config(str(home), authorize=True).authorized == "present"
    path = home / ".ssh" / "authorized_keys"
    assert path.read_text() == pub + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_cli_prints_the_block_and_the_note(home: t.Any) -> None:
    r = CliRunner().invoke(cli, ["ssh-config", str(home), "--alias", "myapp"])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("Host myapp\n")
    assert "--authorize" in r.stderr and "does not answer" in r.stderr
    r = CliRunner().invoke(cli, ["ssh-config", str(home), "--alias", "my app"])
    assert r.exit_code == 2 and r.stderr.startswith("Error: invalid host alias")


def test_missing_or_bad_keys_are_refused(home: t.Any) -> None:
    (home / ".ssh" / "id_ed25519.pub").unlink()
    with pytest.raises(InvalidInput, match=r"no SSH key in ~/\.ssh"):
        ide.ssh_config(str(home))
    bad = home / "k"
    bad.write_text("x")
    (home / "k.pub").write_text("ssh-ed25519 AAAA\nssh-rsa BBBB\n")
    with pytest.raises(InvalidInput, match="is not one public key line"):
        ide.ssh_config(str(home), key=str(bad))


def test_values_that_would_break_the_config_are_refused() -> None:
    target = ide.IdeTarget("a", "127.0.0.1", 1, "u+lb-x", '/k"\nProxyCommand evil')
    with pytest.raises(InvalidInput, match="cannot write"):
        ide.host_block(target)
    spaced = ide.host_block(ide.IdeTarget("a", "127.0.0.1", 1, "u+lb-x", "/my keys/id"))
    assert '  IdentityFile "/my keys/id"\n' in spaced
