"""``llima-box verify``: the env's isolation, checked from inside it."""

from __future__ import annotations

import json

import click

from llimabox.cli._common import CONTEXT_SETTINGS, Globals, complete_dirs, pass_globals

__all__ = ["verify"]


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("path", required=False, shell_complete=complete_dirs)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of the checks.")
@pass_globals
def verify(g: Globals, path: str | None, as_json: bool) -> int:
    """Check, from inside the env of PATH, every property of its isolation.

    Runs a battery in the env as its user: its own uid, no capabilities and no_new_privs, its own
    PID namespace, private /tmp /var/tmp /dev/shm, a read-only system, nothing of other projects or
    of the host home, no terminal of the caller's, its own keyring and cgroup, its home and project
    writable. Exits 0 only when every check holds.

    \b
    Example:
        llima-box verify ~/src/app
    """
    from llimabox import api

    results = api.verify(path, **g.api_kwargs())
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        for r in results:
            click.echo(f"{'ok' if r['ok'] else 'FAIL':<5} {r['check']:<26} {r['detail']}")
    return 0 if all(r["ok"] for r in results) else 1
