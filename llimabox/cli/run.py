"""``run``: a coding agent in the env of a project."""

from __future__ import annotations

import json

import click

from llimabox.cli._common import CONTEXT_SETTINGS, Globals, complete_dirs, pass_globals

__all__ = ["run"]


@click.command(context_settings={**CONTEXT_SETTINGS, "allow_interspersed_args": False})
@click.option("--cmd", metavar="CMD", help="Run CMD (any command of the env's) as an agent, instead of AGENT.")
@click.option("--list", "listing", is_flag=True, help="What each agent needs, and whether it is ready (for PATH).")
@click.option("--json", "as_json", is_flag=True, help="With --list: a JSON array.")
@click.option("-t", "pty", flag_value=True, default=None, help="Force a pseudo-terminal.")
@click.option("-T", "pty", flag_value=False, help="Never use a pseudo-terminal.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="[AGENT] [PATH] [-- ARGS...]",
                shell_complete=complete_dirs)
@pass_globals
def run(g: Globals, cmd: str | None, listing: bool, as_json: bool, pty: bool | None, args: tuple[str, ...]) -> int:
    """Run a coding agent (claude, codex, opencode) in the env of PATH (default: the current directory).

    Its config directory is shared into the env read-write (see run --list), and a missing agent is
    installed first: with npm into the env's ~/.local, or for every env into the guest
    (agent_install = "guest"). ARGS go to the agent.

    \b
    Examples:
        llima-box run claude ~/src/app
        llima-box run codex -- exec "fix the failing test"
        llima-box run --cmd aider ~/src/app -- --model sonnet
        llima-box run --list
    """
    from llimabox import agents
    from llimabox.config import load_config

    items = list(args)
    rest: list[str] = []
    if "--" in items:
        i = items.index("--")
        items, rest = items[:i], items[i + 1:]
    name = None if cmd is not None or listing else (items.pop(0) if items else None)
    if len(items) > 1 or any(a.startswith("-") for a in items):
        raise click.UsageError("expected [AGENT] [PATH] [-- ARGS...]")
    path = items[0] if items else None
    kwargs = g.api_kwargs()
    config = load_config(overrides=kwargs["overrides"])
    if listing:
        rows = agents.readiness(path, config=config, accept_host_key=kwargs["accept_host_key"])
        if as_json:
            click.echo(json.dumps(rows, indent=2))
        else:
            for row in rows:
                state = {True: "installed", False: "not installed", None: "no env yet"}[row["installed"]]
                ready = "ready" if row["ready"] else "not ready"
                click.echo(f"{row['agent']}: {ready} ({state}; npm package {row['package'] or '-'}; npm in the "
                           f"guest: {({True: 'yes', False: 'no', None: '?'})[row['npm']]})")
                for share in row["shares"]:
                    click.echo(f"  share {share['spec']}{'' if share['present'] else ' (made at the first run)'}")
                if row["exposes"]:
                    click.echo(f"  exposes to each env it runs in: {row['exposes']}")
        return 0
    if name is None and cmd is None:
        raise click.UsageError("name an AGENT (claude, codex, opencode), or --cmd CMD, or --list")
    found = agents.agent(config, name, cmd)
    return agents.run(found, path, rest, config=config, pty=pty, accept_host_key=kwargs["accept_host_key"])
