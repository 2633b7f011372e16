"""``llima-box run AGENT``: a coding agent in the env of a project, with its config shared and installed on demand.

Each agent names its command, its npm package, the shares it needs (its config directory, read-write) and the
variables that point it there. ``[agents.NAME]`` tables of the config override a built-in agent's fields or
add an agent.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import typing as t

from llimabox import api
from llimabox.errors import InvalidInput

if t.TYPE_CHECKING:
    from llimabox.config import Config

__all__ = ["Agent", "AGENTS", "agent", "agents", "run", "readiness"]


@dataclasses.dataclass(frozen=True)
class Agent:
    name: str
    command: str
    package: str | None  # npm package installed when the command is missing
    shares: tuple[str, ...] = ()  # SRC[:DST][:ro|rw], as --share
    env: tuple[str, ...] = ()  # VAR=VALUE; {home} is the env's home
    exposes: str = ""  # what the shares give every env the agent runs in


AGENTS = {
    "claude": Agent("claude", "claude", "@anthropic-ai/claude-code", ("~/.claude:rw",),
                    ("CLAUDE_CONFIG_DIR={home}/.claude",),
                    "~/.claude: your Claude Code login, settings, history and every project's transcripts"),
    "codex": Agent("codex", "codex", "@openai/codex", ("~/.codex:rw",), ("CODEX_HOME={home}/.codex",),
                   "~/.codex: your Codex login (auth.json), config and every session's history"),
    "opencode": Agent("opencode", "opencode", "opencode-ai", ("~/.config/opencode:rw", "~/.local/share/opencode:rw"),
                      (), "~/.config/opencode and ~/.local/share/opencode: your opencode config, its provider "
                          "logins (auth.json) and every session"),
}

#: In the env: the agent's command, installed first (npm, into ~/.local) when missing, then run with its variables.
_RUN = r"""
cmd=$1 pkg=$2 mode=$3
shift 3
PATH=$HOME/.local/bin:$PATH
export PATH
if ! command -v "$cmd" >/dev/null 2>&1; then
	if [ -z "$pkg" ]; then
		echo "llima-box: $cmd is not installed in this env" >&2
		exit 127
	fi
	if [ "$mode" = guest ]; then
		echo "llima-box: $cmd is not installed in the guest: add \"npm:$pkg\" to vm_packages," \
			"then: llima-box vm provision" >&2
		exit 127
	fi
	if ! command -v npm >/dev/null 2>&1; then
		echo "llima-box: the guest has no npm to install $cmd: add vm_packages = [\"nodejs\", \"npm\"]," \
			"then: llima-box vm provision" >&2
		exit 127
	fi
	echo "llima-box: installing $cmd into this env: npm install -g --prefix ~/.local $pkg" >&2
	npm install -g --prefix "$HOME/.local" --no-audit --no-fund "$pkg" >&2 || exit 125
fi
exec env "$@"
"""

_READY = r"""
PATH=$HOME/.local/bin:$PATH
for c; do command -v "$c" >/dev/null 2>&1 && echo yes || echo no; done
command -v npm >/dev/null 2>&1 && echo yes || echo no
"""


def agents(config: Config) -> dict[str, Agent]:
    """The built-in agents with the config's ``[agents.NAME]`` tables applied."""
    found = dict(AGENTS)
    for name, items in config.agents:
        fields = dict(items)
        base = found.get(name, Agent(name, fields.get("command", name), None))
        found[name] = dataclasses.replace(base, **fields)
    return found


def agent(config: Config, name: str | None, cmd: str | None) -> Agent:
    """AGENT by name, or for ``--cmd CMD`` any command (with its ``[agents.CMD]`` table, if any)."""
    known = agents(config)
    if cmd is not None:
        return known.get(cmd, Agent(cmd, cmd, None))
    if name not in known:
        raise InvalidInput(f"no agent {name!r} (known: {', '.join(sorted(known))}; any other: run --cmd CMD)")
    return known[name]


def _ensure_sources(found: Agent) -> None:
    """Make the agent's config directories of yours that are missing (mode 0700), so they can be shared."""
    for spec in found.shares:
        src = spec.split(":")[0]
        if src.startswith("~/") and not os.path.exists(os.path.expanduser(src)):
            os.makedirs(os.path.expanduser(src), mode=0o700, exist_ok=True)


def run(found: Agent, path: str | None, args: t.Sequence[str], *, config: Config, pty: bool | None = None,
        accept_host_key: bool = False) -> int:
    """Run the agent in the env of ``path`` (default: the working directory), with a PTY when this process
    has a terminal (``pty`` forces it on or off); return its exit status."""
    backend = api.open_backend(config, None, accept_host_key, start=True)
    try:
        target = api.shell_target(backend, path if path is not None else os.getcwd())
        if backend.local_paths:
            _ensure_sources(found)
            added = api.share_args(backend, config, target.project, found.shares)
        else:  # the agent's config is on this machine, not the remote guest's
            added = api.share_args(backend, config, target.project)
        options = [] if target.known else api.config_options(config)
        flag, secrets = api.secret_input(config, target.project, always=True)
        backend.check_verb("create", target.name, target.project, *options, *added, *flag, notes=True, input=secrets)
        if config.agent_install == "guest" and found.package and not _installed(backend, target, found.command):
            print(f"llima-box: installing {found.command} in the guest, for every env: npm install -g "
                  f"{found.package}", file=sys.stderr)
            backend.provision(packages=[*config.vm_packages, f"npm:{found.package}"])
        variables = [v.replace("{home}", f"/home/{target.name}") for v in found.env]
        cmd = ["sh", "-c", _RUN, "sh", found.command, found.package or "", config.agent_install,
               *variables, found.command, *args]
        if pty is None:
            pty = sys.stdin.isatty() and sys.stdout.isatty()
        use = api.Use.of([found.command, *args])
        code = api.run_in_env(backend, target, cmd, environ=os.environ, use=use, pty=pty, forward_agent=False)
        api.record_use(backend, target, code, use)
        return code
    finally:
        backend.close()


def _quietly(backend: t.Any, target: api.ShellTarget, cmd: list[str]) -> tuple[int, str]:
    """Run ``cmd`` in the env with no input; its exit status and output (on any backend: real files)."""
    with open(os.devnull, "rb") as nothing, open(os.devnull, "wb") as null, tempfile.TemporaryFile() as out:
        code = backend.enter(target.name, target.project, cmd, cwd=target.cwd, env={}, stdin=nothing, stdout=out,
                             stderr=null)
        out.seek(0)
        return code, out.read().decode("utf-8", "replace")


def _installed(backend: t.Any, target: api.ShellTarget, command: str) -> bool:
    return _quietly(backend, target, ["sh", "-c", 'command -v "$1"', "sh", command])[0] == 0


def readiness(path: str | None, *, config: Config, accept_host_key: bool = False) -> list[dict[str, t.Any]]:
    """Each agent: its command, package, shares (``spec``, ``present`` on this machine), what they expose, and
    whether it is installed in the env of ``path`` (None: that env does not exist yet) and npm is there."""
    known = agents(config)
    backend = api.open_backend(config, None, accept_host_key)
    installed: dict[str, bool | None] = {name: None for name in known}
    npm = None
    try:
        target = api.shell_target(backend, path if path is not None else os.getcwd())
        if target.known:
            commands = [a.command for a in known.values()]
            code, text = _quietly(backend, target, ["sh", "-c", _READY, "sh", *commands])
            answers = text.split()
            if code == 0 and len(answers) == len(commands) + 1:
                installed = {name: answers[i] == "yes" for i, name in enumerate(known)}
                npm = answers[-1] == "yes"
    finally:
        backend.close()
    rows = []
    for name, a in sorted(known.items()):
        shares = [{"spec": s, "present": os.path.exists(os.path.expanduser(s.split(":")[0]))} for s in a.shares]
        rows.append({"agent": name, "command": a.command, "package": a.package, "shares": shares,
                     "env": list(a.env), "exposes": a.exposes, "installed": installed[name], "npm": npm,
                     "ready": bool(installed[name]) or (a.package is not None and bool(npm))})
    return rows
