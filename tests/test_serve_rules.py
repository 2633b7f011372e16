"""serve's rules on their own: login names, projects, authorized keys, rate limits, --since."""

from __future__ import annotations

import datetime
import os

import paramiko
import pytest

from llimabox.errors import InvalidInput
from llimabox.serve.accounts import Account, Login, Refused, expand, parse_login, resolve_project
from llimabox.serve.audit import parse_since
from llimabox.serve.auth import RateLimiter, authorized_keys
from llimabox.serve.server import parse_listen


@pytest.mark.parametrize("login, parsed", [
    ("alice", Login("alice", None)),
    ("alice+web", Login("alice", "web")),
    ("a.b_c-d+My.Project_2", Login("a.b_c-d", "My.Project_2")),
])
def test_parse_login(login: str, parsed: Login) -> None:
    assert parse_login(login) == parsed


@pytest.mark.parametrize("login", ["", "+web", "alice+", "alice+.", "alice+..", "alice+../bob", "alice+/etc",
                                   "alice+a/b", "alice+web+x", "..+web", "al ice", "alice+w\x00b", "alice+wéb",
                                   "a" * 33, "alice+" + "p" * 256])
def test_parse_login_refuses(login: str) -> None:
    with pytest.raises(Refused):
        parse_login(login)


def _account(tmp_path) -> Account:
    return Account("me", os.getuid(), os.getgid(), str(tmp_path / "home"), "/bin/bash")


def test_resolve_project(tmp_path) -> None:
    me = _account(tmp_path)
    (tmp_path / "home" / "web").mkdir(parents=True)
    (tmp_path / "home" / "file").write_text("")
    (tmp_path / "other").mkdir()
    (tmp_path / "home" / "out").symlink_to(tmp_path / "other")
    (tmp_path / "home" / "in").symlink_to("web")
    assert resolve_project(me, "web", "~") == str(tmp_path / "home" / "web")
    assert resolve_project(me, "in", "~") == str(tmp_path / "home" / "web")  # its real path
    for name, why in (("out", "not inside"), ("file", "not a directory"), ("nope", "no project"),
                      ("..", "invalid")):
        with pytest.raises(Refused, match=why):
            resolve_project(me, name, "~")
    os.chown(tmp_path / "home" / "web", 4321, 4321)
    with pytest.raises(Refused, match="does not belong to me"):
        resolve_project(me, "web", "~")
    assert expand("/srv/{user}/p", me) == "/srv/me/p" and expand("~/src", me) == str(tmp_path / "home" / "src")
    with pytest.raises(Refused):
        expand("relative/{user}", me)


def test_authorized_keys(tmp_path) -> None:
    me = _account(tmp_path)
    key = paramiko.Ed25519Key.from_private_key_file(_keygen(tmp_path))
    path = tmp_path / "authorized_keys"
    line = f"{key.get_name()} {key.get_base64()} me@there\n"
    path.write_text(f"# comment\n\n{line}command=\"/bin/true\" {line}garbage\n")
    path.chmod(0o600)
    assert authorized_keys(str(path), me) == [(key.get_name(), key.asbytes())]
    path.chmod(0o666)
    assert authorized_keys(str(path), me) == []  # writable by others: ignored
    path.chmod(0o600)
    os.chown(path, 4321, 4321)
    assert authorized_keys(str(path), me) == []  # someone else's file
    link = tmp_path / "link"
    link.symlink_to(path)
    assert authorized_keys(str(link), me) == []
    assert authorized_keys(str(tmp_path / "missing"), me) == []


def _keygen(tmp_path) -> str:
    import subprocess

    path = str(tmp_path / "id")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path], check=True)
    return path


def test_rate_limiter() -> None:
    now = [1000.0]
    limiter = RateLimiter(per_user=3, per_source=5, window=60, base_delay=0.5, clock=lambda: now[0])
    assert [limiter.failure("a", "1.1.1.1") for _ in range(2)] == [0.5, 1.0]
    assert limiter.locked("a", "1.1.1.1") is None
    assert limiter.failure("a", "1.1.1.1") == 2.0
    assert limiter.locked("a", "2.2.2.2") == "user"
    assert limiter.locked("b", "1.1.1.1") is None
    limiter.failure("b", "1.1.1.1")
    limiter.failure(None, "1.1.1.1")
    assert limiter.locked("c", "1.1.1.1") == "source"
    assert limiter.failure("d", "3.3.3.3") == 0.5
    assert max(limiter.failure("e", "4.4.4.4") for _ in range(10)) == 8.0  # capped
    now[0] += 61
    assert limiter.locked("a", "1.1.1.1") is None  # the lockout ends with the window
    limiter.failure("a", "5.5.5.5")
    limiter.success("a")
    assert limiter.failure("a", "6.6.6.6") == 0.5


def test_parse_since_and_listen() -> None:
    now = datetime.datetime(2026, 11, 23, 12, 0, tzinfo=datetime.UTC)
    assert parse_since("90m", now) == now - datetime.timedelta(minutes=90)
    assert parse_since("2d", now) == now - datetime.timedelta(days=2)
    assert parse_since("2026-11-23T04:00", now) == datetime.datetime(2026, 11, 23, 4, tzinfo=datetime.UTC)
    assert parse_since("2026-11-23T04:00Z", now).hour == 4
    with pytest.raises(InvalidInput, match="--since"):
        parse_since("yesterday", now)
    assert parse_listen("0.0.0.0:2222") == ("0.0.0.0", 2222)
    assert parse_listen("[::1]:22") == ("::1", 22)
    for bad in ("2222", ":22", "host:", "host:99999", "host:x"):
        with pytest.raises(InvalidInput, match="--listen"):
            parse_listen(bad)
