"""A fake guest prefix for CLI tests: tiny scripts with the guest verbs' contract, run as us."""

from __future__ import annotations

import os
import textwrap
import typing as t
from pathlib import Path

import pytest
from click.testing import CliRunner

from llimabox import guest

_VERBS = {
    "version": 'echo "$FAKE_VERSION"',
    "create": 'mkdir -p "$FAKE/$1" && printf %s "$2" >"$FAKE/$1/project"',
    "delete": 'if [ -d "$FAKE/$1" ]; then rm -rf "$FAKE/$1"; else echo "llima-box-guest: no env $1" >&2; fi',
    "list": textwrap.dedent(
        """\
        for d in "$FAKE"/lb-*; do
          [ -d "$d" ] || continue
          printf '{"name":"%s","project":"%s","uid":200001,"alive":true,"created":"2026-01-01T00:00:00Z","mode":"idmap"}\\n' \\
            "${d##*/}" "$(cat "$d/project")"
        done"""
    ),
    "enter": textwrap.dedent(
        """\
        name=$1 project=$2 cwd=$2; shift 2
        while [ $# -gt 0 ]; do
          case $1 in --cwd) cwd=$2; shift 2 ;; --env|--agent-socket) shift 2 ;; --) shift; break ;; *) break ;; esac
        done
        mkdir -p "$FAKE/$name" && printf %s "$project" >"$FAKE/$name/project"
        cd "$cwd" || exit 125
        [ $# -gt 0 ] || set -- /bin/sh
        exec "$@\""""
    ).replace('"$@\\"', '"$@"'),
}


class FakeGuest(t.NamedTuple):
    prefix: Path
    state: Path

    def envs(self) -> dict[str, str]:
        return {d.name: (d / "project").read_text() for d in sorted(self.state.glob("lb-*"))}


@pytest.fixture
def fake_guest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeGuest:
    if os.geteuid() != 0:
        pytest.fail("the fake guest runs the verbs without sudo: the tests must run as root", pytrace=False)
    prefix, state = tmp_path / "prefix", tmp_path / "guest-state"
    prefix.mkdir()
    state.mkdir()
    for verb, body in _VERBS.items():
        script = prefix / verb
        script.write_text("#!/bin/bash\n" + body + "\n")
        script.chmod(0o755)
    monkeypatch.setattr(guest, "GUEST_PREFIX", str(prefix))
    monkeypatch.setenv("FAKE", str(state))
    monkeypatch.setenv("FAKE_VERSION", str(guest.packaged_version()))
    return FakeGuest(prefix, state)


@pytest.fixture(autouse=True)
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "lbhome"
    monkeypatch.setenv("LLIMA_BOX_HOME", str(home))
    for var in ("LLIMA_BOX_BACKEND", "LLIMA_BOX_HOST", "LLIMA_BOX_IDENTITY"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    p = tmp_path / "home" / "alice" / "My App"
    p.mkdir(parents=True)
    return Path(os.path.realpath(p))
