"""Env management: ``create``, ``list``, ``delete``, ``delete-all``."""

from __future__ import annotations

import json
import sys
import typing as t

import click

from llimabox.cli._common import CONTEXT_SETTINGS, Globals, complete_dirs, complete_envs, pass_globals

__all__ = ["create", "list_envs", "ports", "stop", "delete", "delete_all"]


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("path", required=False, shell_complete=complete_dirs)
@click.option("--network", type=click.Choice(["isolated", "offline", "shared"]),
              help="isolated (default): its own network, outbound through NAT, its ports published; offline: "
                   "loopback only; shared: the guest's. Fixed once made. [env_network]")
@click.option("--publish", "publish", multiple=True, metavar="INSIDE[:OUTSIDE]",
              help="Always publish the env's port INSIDE on the guest's OUTSIDE (default the same). Repeatable.")
@click.option("--allow", "allow", multiple=True, metavar="HOST",
              help="Reach only HOST (repeatable; .example.com: and its subdomains) through a filtering proxy that "
                   "tools find in HTTP(S)_PROXY; the rest fails at once. Fixed once made. [env_allow]")
@click.option("--home", metavar="SIZE", help="Size of its home's filesystem, e.g. 20G. Fixed once made. [env_home]")
@click.option("--memory", metavar="SIZE", help="Memory the env may use, e.g. 4G (no swap). [env_memory]")
@click.option("--pids", type=click.IntRange(min=16), metavar="N", help="Processes and threads at most. [env_pids]")
@click.option("--cpus", type=click.FloatRange(min=0.01), metavar="N", help="CPUs at most, e.g. 1.5. [env_cpus]")
@click.option("--idle-stop", type=click.IntRange(min=0, max=999999999), metavar="SECONDS",
              help="Stop the env once nothing of it has run for SECONDS (0: never). [env_idle_stop]")
@click.option("--share", "shares", multiple=True, metavar="SRC[:DST][:ro|rw]",
              help="Show your file or directory SRC in the env at DST (default the same path; ~/… is the env's "
                   "home), read-only unless rw; at once in a running env. Repeatable. [shares]")
@click.option("--unshare", multiple=True, metavar="DST", help="Remove the share at DST. Repeatable.")
@pass_globals
def create(g: Globals, path: str | None, network: str | None, publish: tuple[str, ...], allow: tuple[str, ...],
           home: str | None, memory: str | None, pids: int | None, cpus: float | None, idle_stop: int | None,
           shares: tuple[str, ...], unshare: tuple[str, ...]) -> None:
    """Create the env of PATH (default: the current directory) and print its name.

    Creating an env that exists already succeeds; limits given then change at once (the sizes of its
    /tmp, /var/tmp and /dev/shm, a quarter of its memory each, at its next start). Defaults: 3/4 of the
    guest's memory, 4096 processes, an equal CPU share, a home of a quarter of the guest's disk. An
    isolated env's listening ports are published on the guest's loopback as they open (`llima-box ports`
    shows where).

    \b
    Examples:
        llima-box create ~/src/app
        llima-box create ~/src/app --memory 4G --pids 2048 --cpus 2
        llima-box create ~/src/untrusted --network offline
        llima-box create ~/src/web --publish 3000:8080
        llima-box create ~/src/agent --allow pypi.org --allow files.pythonhosted.org
        llima-box create ~/src/app --share ~/.claude:rw --share ~/datasets:/srv/data
    """
    from llimabox import api

    click.echo(api.create(path, network=network, memory=memory, pids=pids, cpus=cpus, publish=publish, home=home,
                          allow=allow, idle_stop=idle_stop, shares=shares, unshare=unshare, **g.api_kwargs()))


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("path", required=False, shell_complete=complete_dirs)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of objects.")
@pass_globals
def ports(g: Globals, path: str | None, as_json: bool) -> None:
    """List the ports the envs publish (of the env of PATH only, when given).

    An isolated env's listening TCP ports appear on the guest's loopback, on the same port when it is
    free, else on another; Lima forwards them to this machine's localhost.

    \b
    Example:
        llima-box ports ~/src/web --json
    """
    from llimabox import api

    rows = api.ports(path, **g.api_kwargs())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no published ports", err=True)
        return
    cells = [["ENV", "PROJECT", "INSIDE", "PUBLISHED"]]
    cells += [[r["name"], r["project"], str(r["inside"]), str(r["published"] or "taken")] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    for row in cells:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip())


_COLUMNS = ("name", "status", "project", "last_used_at")


@click.command(name="list", context_settings=CONTEXT_SETTINGS)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of objects.")
@click.option("--prune", is_flag=True, help="Settle drift and delete the envs whose project is gone (asks first).")
@click.option("--yes", is_flag=True, help="Prune without asking (needed without a terminal).")
@pass_globals
def list_envs(g: Globals, as_json: bool, prune: bool, yes: bool) -> None:
    """List the envs of the guest with their status.

    Status is running, stopped, missing-in-guest or unknown-to-database. With --prune: a record of an
    env the guest no longer has (missing-in-guest) is dropped, an env of yours the state database does
    not know (unknown-to-database) is recorded, and an env whose project directory is gone (while the
    directory above it is there) is deleted, with its home.

    \b
    Examples:
        llima-box list --json
        llima-box list --prune
    """
    from llimabox import api

    if prune:
        _prune(g, yes)
        return
    rows = api.list_envs(**g.api_kwargs())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _table(rows)


def _prune(g: Globals, yes: bool) -> None:
    from llimabox import api

    plan = api.prune_plan(**g.api_kwargs())
    if not plan:
        click.echo("nothing to prune", err=True)
        return
    for row in plan:
        click.echo(f"{row['action']:<6}  {row['name']}  {row['project']}")
    if any(row["action"] == "delete" for row in plan):
        _confirm("Delete the envs marked delete (their homes too) and settle the rest?", yes)
    api.prune(plan, **g.api_kwargs())


def _table(rows: list[dict[str, t.Any]]) -> None:
    if not rows:
        click.echo("no envs", err=True)
        return
    cells = [[h.upper() for h in _COLUMNS]] + [[str(r.get(c) or "-") for c in _COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(_COLUMNS))]
    for row in cells:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip())


def _confirm(question: str, yes: bool) -> None:
    """Ask on a terminal; without one and without --yes, refuse (exit 2)."""
    if yes:
        return
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise click.UsageError("not a terminal: pass --yes to confirm")
    if not click.confirm(question, default=False):
        raise click.Abort()


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("target", metavar="[PATH|NAME]", required=False, shell_complete=complete_envs)
@pass_globals
def stop(g: Globals, target: str | None) -> None:
    """Stop the env of PATH or NAME (default: the env of the current directory).

    Every process in it ends (servers, daemons, its network); its home and user stay, and the next
    `llima-box shell` starts it again.

    \b
    Example:
        llima-box stop ~/src/app
    """
    from llimabox import api

    click.echo(api.stop(target, **g.api_kwargs()))


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("target", metavar="[PATH|NAME]", required=False, shell_complete=complete_envs)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_globals
def delete(g: Globals, target: str | None, yes: bool) -> None:
    """Delete the env of PATH or NAME (default: the env of the current directory).

    The env's user, home and processes go; the project is never touched. On a terminal you are
    asked first unless --yes is given.

    \b
    Example:
        llima-box delete ~/src/app --yes
    """
    if sys.stdin.isatty() and sys.stdout.isatty():
        _confirm(f"Delete the env of {target or 'the current directory'}?", yes)
    from llimabox import api

    click.echo(api.delete(target, **g.api_kwargs()))


@click.command(name="delete-all", context_settings=CONTEXT_SETTINGS)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_globals
def delete_all(g: Globals, yes: bool) -> None:
    """Delete every env of the guest (projects are never touched).

    Asks on a terminal; without a terminal, --yes is required (else exit 2).

    \b
    Example:
        llima-box delete-all --yes
    """
    _confirm("Delete every env of this guest?", yes)
    from llimabox import api

    for name in api.delete_all(**g.api_kwargs()):
        click.echo(name)
