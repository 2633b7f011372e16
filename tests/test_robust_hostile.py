"""Hostile project paths and command lines, generated with hypothesis.

Never a traceback, never interpreted by a shell on the way (every injection tries to create a marker
file), never a file outside the intended env; an invalid path gets exit 2 and one line naming it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import typing as t

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llimabox import names
from llimabox.cli import cli
from llimabox.errors import InvalidInput
from tests.guest import Guest
from tests.robust import guest_envs, lb, lb_argv, new_home

MARKER = "/tmp/lb-pwned"
INJECTIONS = [
    f"$(touch {MARKER})", f"`touch {MARKER}`", f";touch {MARKER}", f"|touch {MARKER}", f"&&touch {MARKER}",
    f"'$(touch {MARKER})'", f'"`touch {MARKER}`"', f"\ntouch {MARKER}\n", f"$({MARKER})",
]  # fmt: skip
PIECES = [*INJECTIONS, "..", ".", "", "-x", "--help", "-", " ", "a b", "'", '"', "\\", "*", "?", "~", "\n", "\t",
          "\x1b[31m", "\u00e9t\u00e9", "\u202eevil", "\U0001f600", "x" * 200, "\ufeff"]  # fmt: skip
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))

NO_SURROGATES = ("Cs",)  # a lone surrogate cannot even be an argv of this test's subprocess
piece = st.one_of(
    st.sampled_from(PIECES),
    st.text(st.characters(exclude_characters="\x00/", exclude_categories=NO_SURROGATES), max_size=12),
)
component_lists = st.lists(piece, min_size=1, max_size=4)


@pytest.fixture(scope="module")
def base(guest: Guest) -> t.Iterator[tuple[str, str]]:
    """(state home, base directory of the generated projects)."""
    guest.install_cli()
    home, root = new_home(guest), guest.make_project("alice", "hostile")
    yield home, root
    lb(guest, home, "delete-all", "--yes")


def _no_marker(guest: Guest) -> None:
    assert guest.run(["test", "-e", MARKER]).returncode == 1, "a shell interpreted the input"


def _errline(r: subprocess.CompletedProcess) -> str:
    err = r.stderr.decode(errors="replace")
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    return lines[0]


@SETTINGS
@given(parts=component_lists, relative=st.booleans(), make=st.booleans())
def test_hostile_project_paths(
    guest: Guest, base: tuple[str, str], parts: list[str], relative: bool, make: bool
) -> None:
    home, root = base
    rel = "/".join(parts)
    path = rel if relative else f"{root}/{rel}"
    if make:  # maybe make it exist (as argv, never through a shell); it may be refused anyway
        mkdir = "import os,sys; os.makedirs(sys.argv[1], exist_ok=True)"
        guest.run(["python3", "-c", mkdir, path], user="alice", cwd=root)
    argv = lb_argv(guest, home, "create", "--", path)
    argv[argv.index("-C") + 1] = root  # relative paths are relative to the project base
    r = subprocess.run(argv, capture_output=True, timeout=120, check=False)
    _no_marker(guest)
    if r.returncode == 0:
        name = r.stdout.decode().strip()
        real = guest.run(["realpath", "-e", "--", path], cwd=root).stdout.rstrip("\n")
        assert guest_envs(guest)[name]["project"] == real
        assert real.startswith("/Users/")
        assert lb(guest, home, "delete", name, "--yes").returncode == 0
    else:
        assert r.returncode == 2, r.stderr
        assert "project" in _errline(r) or "path" in _errline(r)


@pytest.fixture(scope="module")
def project(guest: Guest, base: tuple[str, str]) -> str:
    return guest.make_project("alice", "hostile-argv")


argv_text = st.one_of(
    st.sampled_from(PIECES),
    st.text(st.characters(exclude_characters="\x00", exclude_categories=NO_SURROGATES), max_size=300),
)


@SETTINGS
@given(args=st.lists(argv_text, max_size=6))
def test_hostile_command_argv_arrives_intact(
    guest: Guest, base: tuple[str, str], project: str, args: list[str]
) -> None:
    home, _ = base
    r = lb(guest, home, "shell", project, "--", "printf", "%s\\0", "first", *args)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"".join(os.fsencode(a) + b"\0" for a in ["first", *args])
    _no_marker(guest)


def _not_a_command(name: str) -> bool:
    """Random text is sometimes a real command (``w``, ``id``): those would rightly run."""
    return name.strip() != "" and shutil.which(name, path="/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin") is None


@SETTINGS
@given(cmd=argv_text.filter(_not_a_command), args=st.lists(argv_text, max_size=3))
def test_hostile_command_name_never_reaches_a_shell(
    guest: Guest, base: tuple[str, str], project: str, cmd: str, args: list[str]
) -> None:
    home, _ = base
    r = lb(guest, home, "shell", project, "--", cmd, *args)
    assert b"Traceback" not in r.stderr
    assert r.returncode in (125, 126, 127), (r.returncode, r.stderr)  # refused, cannot run, not found
    _no_marker(guest)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_project_path_checks_take_any_text(text: str) -> None:
    """Any text, NUL and lone surrogates included: a normalised absolute path or InvalidInput, nothing else."""
    for check in (names.normalise_project, names.resolve_project):
        try:
            out = check("/" + text)
        except InvalidInput as exc:
            assert "\n" not in str(exc).replace("\\n", "")
            continue
        assert out.startswith("/") and "\x00" not in out and "\n" not in out
        assert names.NAME_RE.fullmatch(names.env_name(out))


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_cli_refuses_bad_paths_with_exit_2(text: str) -> None:
    from click.testing import CliRunner

    path = f"/nonexistent-{secrets.token_hex(4)}/{text}"
    for args in (["create", path], ["delete", path, "--yes"]):
        result = CliRunner().invoke(cli, ["--backend", "local", *args])
        assert result.exit_code == 2, result.output
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: project path"), result.stderr
