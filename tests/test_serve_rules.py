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
from llimabox.serve.limits import Gate, Startups, parse_startups, source_key
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
    limiter = RateLimiter(per_login=3, per_source=5, window=60, base_delay=0.5, clock=lambda: now[0])
    assert [limiter.failure("a", "1.1.1.1") for _ in range(2)] == [0.5, 1.0]
    assert limiter.locked("a", "1.1.1.1") is None
    assert limiter.failure("a", "1.1.1.1") == 2.0
    assert limiter.locked("a", "1.1.1.1") == "account"
    assert limiter.locked("a", "2.2.2.2") is None  # the same account from elsewhere
    assert limiter.locked("b", "1.1.1.1") is None  # another account from there
    limiter.success("b", "1.1.1.1")
    assert limiter.failure("b", "1.1.1.1") == 0.5  # its delay grows from its own failures only
    limiter.failure("c", "1.1.1.1")
    assert limiter.locked("d", "1.1.1.1") == "source"  # five failures from 1.1.1.1
    assert limiter.locked("b", "1.1.1.1") is None  # b logged in from there within the window
    assert limiter.locked("d", "::ffff:1.1.1.1") == "source"  # the same address
    for _ in range(5):
        limiter.failure("e", "2001:db8::1")
    assert limiter.locked("f", "2001:db8::ffff") == "source"  # one /64 is one source
    assert limiter.locked("f", "2001:db8:0:1::1") is None
    assert max(limiter.failure("g", "4.4.4.4") for _ in range(10)) == 8.0  # capped
    now[0] += 61
    assert limiter.locked("a", "1.1.1.1") is None and limiter.locked("d", "1.1.1.1") is None  # the window ended
    limiter.failure("a", "5.5.5.5")
    limiter.success("a", "5.5.5.5")
    assert limiter.failure("a", "5.5.5.5") == 0.5


def test_startups_and_gate() -> None:
    assert parse_startups("10:30:100") == Startups(10, 30, 100)
    assert parse_startups("8") == Startups(8, 100, 8)
    for bad in ("", "a:b:c", "10:30", "10:130:100", "100:30:10", "0", "-1:30:100"):
        with pytest.raises(InvalidInput, match="serve_max_startups"):
            parse_startups(bad)
    startups = Startups(10, 30, 20)
    assert [round(startups.drop_chance(n), 6) for n in (9, 10, 15, 20, 30)] == [0.0, 0.3, 0.65, 1.0, 1.0]
    chance = [0.4]
    gate = Gate(Startups(4, 50, 6), per_source=2, max_authenticated=1, chance=lambda: chance[0])
    a1, a2 = gate.admit("10.0.0.1")[0], gate.admit("10.0.0.1")[0]
    ticket, why = gate.admit("10.0.0.1")
    assert a1 and a2 and ticket is None and "from 10.0.0.1" in why  # per source
    b1, b2 = gate.admit("10.0.0.2")[0], gate.admit("10.0.0.2")[0]
    assert b1 and b2 and gate.unauthenticated() == 4
    assert gate.admit("10.0.0.3")[0] is None  # 4 open: dropped with probability 0.5, and chance() says 0.4
    chance[0] = 0.8  # over both 0.5 (4 open) and 0.75 (5 open)
    c1 = gate.admit("10.0.0.3")[0]
    assert c1 is not None and gate.admit("10.0.0.4")[0] is not None
    assert gate.admit("10.0.0.5")[0] is None  # full
    assert a1.promote() and gate.unauthenticated() == 5 and gate.authenticated == 1
    assert not a2.promote() and gate.unauthenticated() == 4  # authenticated ones are capped apart
    a2.release()
    b1.release()
    b1.release()  # idempotent
    assert gate.unauthenticated() == 3 and gate.unauthenticated("10.0.0.2") == 1
    a1.release()
    assert gate.authenticated == 0
    assert source_key("::ffff:10.0.0.1") == "10.0.0.1" and source_key("2001:db8::1") == "2001:db8::/64"


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
