"""``llima-box doctor``: is everything in place? Each failed check names its fix."""

from __future__ import annotations

import json

import click

from llimabox.cli._common import CONTEXT_SETTINGS, Globals, pass_globals

__all__ = ["doctor"]


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object: ok, and every check.")
@pass_globals
def doctor(g: Globals, as_json: bool) -> int:
    """Check limactl, the VM, SSH to the guest, the guest scripts, guest.conf, sudoers, namespaces, the network
    and the state database.

    Exits 1 when any check fails, each failure naming its fix; a check it cannot run (??) does not fail.
    It never starts the VM or changes the guest.

    \b
    Example:
        llima-box doctor --json
    """
    from llimabox import doctor as lib

    checks = lib.run_checks(**g.api_kwargs())
    ok = all(c.ok is not False for c in checks)
    if as_json:
        click.echo(json.dumps({"ok": ok, "checks": [c.as_dict() for c in checks]}, indent=2))
    else:
        for c in checks:
            mark = "ok  " if c.ok else ("??  " if c.ok is None else "FAIL")
            click.echo(f"{mark} {c.name}: {c.detail}" + (f" (fix: {c.fix})" if c.fix and c.ok is False else ""))
    return 0 if ok else 1
