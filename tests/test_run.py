"""``llima-box run AGENT``: the agent's config shared into the env, installed on demand, run with a PTY (test guest,
local backend, as alice; a stand-in under the agent's name, and a local npm package in place of the registry's)."""

from __future__ import annotations

import json
import secrets
import typing as t

import pytest

from tests.test_e2e_local import _out


@pytest.fixture
def setup(guest: t.Any) -> t.Iterator[tuple[str, str, str]]:
    """(home, project, environment prefix) of a user whose HOME is under the guest's allowed roots."""
    guest.install_cli()
    tag = secrets.token_hex(3)
    home, project = f"/Users/alice/run-home-{tag}", f"/Users/alice/run-proj-{tag}"
    guest.run(["install", "-d", "-o", "alice", "-g", "alice", home, f"{home}/.config/llima-box", project])
    env = f"HOME={home} XDG_CONFIG_HOME={home}/.config"
    yield home, project, env
    guest.run(["sh", "-c", f"{env} llima-box --backend local delete {project} --yes"], user="alice")
    guest.run(["rm", "-rf", home, project])


def _lb(guest: t.Any, env: str, args: str) -> t.Any:
    return guest.run(["sh", "-c", f"{env} llima-box --backend local {args}"], user="alice")


STAND_IN = """#!/bin/sh
echo "args: $*"
echo "cwd: $(pwd)"
echo "config: $CLAUDE_CONFIG_DIR"
tty >/dev/null && echo "tty: yes"
echo from-env >"$CLAUDE_CONFIG_DIR/written"
"""


def test_run_shares_the_agents_config_and_runs_it_in_the_project_with_a_pty(guest: t.Any, setup) -> None:
    home, project, env = setup
    r = guest.run(["sh", "-c", f"{env} llima-box --backend local shell {project} -- sh -c "
                               "'mkdir -p ~/.local/bin && cat >~/.local/bin/claude && chmod +x ~/.local/bin/claude'"],
                  user="alice", input=STAND_IN)
    assert r.returncode == 0, r.stderr
    run = f"{env} llima-box --backend local run claude {project} -- --resume 'two words'"
    r = guest.run(["script", "-qec", run, "/dev/null"], user="alice")  # on a terminal, as a person runs it
    assert r.returncode == 0, r.stderr
    lines = _out(r).decode().replace("\r", "").replace("^@", "").splitlines()
    name = _name(guest, env, project)
    assert lines == ["args: --resume two words", f"cwd: {project}", f"config: /home/{name}/.claude", "tty: yes"]
    assert guest.run(["cat", f"{home}/.claude/written"]).stdout == "from-env\n"  # the host's ~/.claude, read-write
    assert guest.run(["stat", "-c", "%a %U", f"{home}/.claude"]).stdout.strip() == "700 alice"  # made by run


FAKE = {"name": "fake-codex", "version": "1.0.0", "bin": {"codex": "codex.js"}}


def test_run_installs_a_missing_agent_into_the_env_once(guest: t.Any, setup) -> None:
    home, project, env = setup
    pkg = f"{project}/pkg"
    guest.run(["sh", "-c", f"mkdir {pkg} && cat >{pkg}/package.json && printf '%s\\n' '#!/usr/bin/env node' "
                           f"'console.log(\"fake codex\", process.argv.slice(2).join(\" \"), process.env.CODEX_HOME)' "
                           f">{pkg}/codex.js"], user="alice", input=json.dumps(FAKE)).check_returncode()
    guest.run(["sh", "-c", f"printf '[agents.codex]\\npackage = \"{pkg}\"\\n' >{home}/.config/llima-box/config.toml"],
              user="alice").check_returncode()
    r = _lb(guest, env, f"run -T codex {project} -- hello")
    assert r.returncode == 0, r.stderr
    assert "installing codex into this env" in r.stderr
    assert _out(r).decode().split() == ["fake", "codex", "hello", f"/home/{_name(guest, env, project)}/.codex"]
    r = _lb(guest, env, f"run -T codex {project} -- again")
    assert (r.returncode, "installing" in r.stderr) == (0, False), r.stderr
    rows = {row["agent"]: row for row in json.loads(_out(_lb(guest, env, f"run --list --json {project}")))}
    assert (rows["codex"]["installed"], rows["codex"]["ready"], rows["claude"]["installed"]) == (True, True, False)
    assert rows["opencode"]["shares"][0] == {"spec": "~/.config/opencode:rw", "present": False}


def _name(guest: t.Any, env: str, project: str) -> str:
    return next(row["name"] for row in json.loads(_out(_lb(guest, env, "list --json"))) if row["project"] == project)


def test_run_refuses_an_unknown_agent_with_one_line(guest: t.Any, setup) -> None:
    _, project, env = setup
    r = _lb(guest, env, f"run nope {project}")
    assert r.returncode != 0 and len(r.stderr.splitlines()) == 1 and "no agent 'nope'" in r.stderr, r.stderr
    r = _lb(guest, env, f"run --cmd true {project}")
    assert r.returncode == 0, r.stderr
