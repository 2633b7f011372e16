from __future__ import annotations

import shlex

import pytest

from llimabox import guest
from llimabox.errors import GuestScriptFailed

P = guest.GUEST_PREFIX


def test_verb_argv_sudo() -> None:
    assert guest.verb_argv("list", sudo=True) == ["sudo", "-n", f"{P}/list"]
    assert guest.verb_argv("delete", "lb-a", sudo=False) == [f"{P}/delete", "lb-a"]
    with pytest.raises(ValueError):
        guest.verb_argv("rm", sudo=False)


def test_enter_argv_full() -> None:
    argv = guest.enter_argv(
        "lb-a",
        "/home/a/p",
        ["echo", "a b", "--cwd"],
        cwd="/home/a/p/sub",
        env={"TERM": "xterm-256color", "LANG": "en_US.UTF-8", "HOME": "/x", "LC_ALL": "bad value"},
        agent_socket="/tmp/ssh-x/agent.1",
        sudo=True,
    )
    assert argv == [
        "sudo", "-n", f"{P}/enter", "lb-a", "/home/a/p",
        "--cwd", "/home/a/p/sub",
        "--env", "LANG=en_US.UTF-8", "--env", "TERM=xterm-256color",
        "--agent-socket", "/tmp/ssh-x/agent.1",
        "--", "echo", "a b", "--cwd",
    ]  # fmt: skip


def test_enter_argv_minimal_has_double_dash() -> None:
    assert guest.enter_argv("lb-a", "/p", [], sudo=False) == [f"{P}/enter", "lb-a", "/p", "--"]


@pytest.mark.parametrize("arg", ["a b", "'", '"', "$(id)", "`id`", "x\ny", "*", "-n", "", "\\"])
def test_remote_command_roundtrip(arg: str) -> None:
    assert shlex.split(guest.remote_command(["cmd", arg])) == ["cmd", arg]


def test_remote_command_agent_var() -> None:
    argv = guest.enter_argv("lb-a", "/p", ["x"], agent_socket=guest.AGENT_SOCKET_FROM_ENV, sudo=True)
    assert '--agent-socket "$SSH_AUTH_SOCK" --' in guest.remote_command(argv)


def test_parse_list() -> None:
    out = (
        b'{"name":"lb-a","project":"/home/a/p \\"q\\"","uid":200001,"alive":true,'
        b'"created":"2026-11-22T23:00:00Z","mode":"idmap"}\n\n'
        b'{"name":"lb-b","project":"/p","uid":null,"alive":false,"created":"x","mode":""}\n'
    )
    envs = guest.parse_list(out)
    assert envs[0] == guest.GuestEnv("lb-a", '/home/a/p "q"', 200001, True, "2026-11-22T23:00:00Z", "idmap")
    assert envs[1].uid is None and not envs[1].alive
    assert guest.parse_list(b"") == []
    with pytest.raises(GuestScriptFailed):
        guest.parse_list(b"not json\n")


def test_packaged_version_matches_source() -> None:
    text = (guest.data_dir("guest-scripts") / "VERSION").read_text()
    assert guest.packaged_version() == int(text)


def test_parse_version() -> None:
    assert guest.parse_version(b"3\n") == 3
    assert guest.parse_version(b"oops") is None


@pytest.mark.parametrize(
    "code, err, refused",
    [
        (1, b"sudo: a password is required\n", True),
        (1, b"sudo: /usr/local/libexec/llima-box/enter: command not found\n", True),
        (127, b"bash: line 1: /usr/local/libexec/llima-box/enter: No such file or directory\n", True),
        (1, b"grep: x: no match\n", False),
        (1, b"", False),
        (0, b"sudo: a password is required\n", False),
    ],
)
def test_is_sudo_refusal(code: int, err: bytes, refused: bool) -> None:
    assert guest.is_sudo_refusal(code, err) is refused
