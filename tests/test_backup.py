"""``export`` and ``import`` through the installed CLI (local backend) in the test guest, as alice."""

from __future__ import annotations

import io
import json
import secrets
import tarfile
import typing as t

import pytest

from tests.test_e2e_local import _out, _run

HOME = "/home/alice.guest"


@pytest.fixture(scope="module")
def projects(guest: t.Any) -> t.Iterator[tuple[str, str]]:
    guest.install_cli()
    tag = secrets.token_hex(3)
    made = str(guest.make_project("alice", f"backup-from-{tag}")), str(guest.make_project("alice", f"backup-to-{tag}"))
    yield made
    for project in made:
        _run(guest, "delete", project, "--yes")
        guest.run(["rm", "-rf", project])


def _in(guest: t.Any, project: str, script: str) -> str:
    r = _run(guest, "shell", project, "--", "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    return _out(r).decode()


def test_export_import_round_trip_keeps_modes_links_and_the_envs_ownership(guest: t.Any, projects) -> None:
    src, dst = projects
    _in(guest, src, "mkdir -p ~/d/e && echo secret >~/d/f && chmod 0640 ~/d/f && chmod 0750 ~/d && "
                    "ln -s d/f ~/link && echo in-project >proj-file")
    r = guest.run(["sh", "-c", f"llima-box --backend local export {src} >{HOME}/home.tar"], user="alice")
    assert r.returncode == 0, r.stderr
    data = guest.run(["cat", f"{HOME}/home.tar"], input=b"").stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = archive.getnames()
        manifest = json.load(archive.extractfile(members[0]))
    assert members[0] == "llima-box-export.json"
    assert (manifest["format"], manifest["project"]) == ("llima-box-home", src)
    assert "home/d/f" in members and not any("proj-file" in m or "lost+found" in m for m in members)
    r = _run(guest, "import", f"{HOME}/home.tar", dst)
    assert r.returncode == 0, r.stderr
    got = _in(guest, dst, "stat -c '%a %U %n' ~/d ~/d/f ~/d/e; readlink ~/link; cat ~/link; id -un; ls")
    lines = got.splitlines()
    user = lines[5]
    assert lines[:5] == [f"750 {user} /home/{user}/d", f"640 {user} /home/{user}/d/f",
                         f"755 {user} /home/{user}/d/e", "d/f", "secret"], got
    assert lines[6:] == []  # the project's own file stayed in the source project


def test_import_writes_nothing_outside_the_home(guest: t.Any, projects) -> None:
    """An archive that links out of the home and writes through the link leaves the project untouched."""
    _, dst = projects
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        def add(info: tarfile.TarInfo, body: bytes = b"") -> None:
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
        add(tarfile.TarInfo("llima-box-export.json"), json.dumps({"format": "llima-box-home"}).encode())
        link = tarfile.TarInfo("home/out")
        link.type, link.linkname = tarfile.SYMTYPE, dst
        add(link)
        add(tarfile.TarInfo("home/out/escaped"), b"x")
        add(tarfile.TarInfo("home/../escaped2"), b"x")
    guest.run(["sh", "-c", f"cat >{HOME}/evil.tar"], user="alice", input=buf.getvalue()).check_returncode()
    r = _run(guest, "import", f"{HOME}/evil.tar", dst)
    assert (r.returncode, r.stderr) == (2, f"Error: {HOME}/evil.tar: member 'home/out/escaped' would land outside "
                                           "the env's home; nothing imported\n")
    assert _in(guest, dst, "ls -A; ls -A ~ | grep -c '^out$' || true").split() == ["0"]


def test_bad_input_is_one_error_line(guest: t.Any, projects) -> None:
    src, _ = projects
    guest.run(["sh", "-c", f"echo not a tar >{HOME}/junk.tar"], user="alice").check_returncode()
    for args in (("import", f"{HOME}/junk.tar", src), ("import", f"{HOME}/missing.tar", src),
                 ("export", "lb-nosuchenv")):
        r = guest.run(["sh", "-c", 'llima-box --backend local "$@" >/dev/null', "sh", *args], user="alice")
        assert r.returncode != 0 and r.stderr.startswith(("Error: ", "Usage: ")), (args, r.stderr)
        assert "Traceback" not in r.stderr
