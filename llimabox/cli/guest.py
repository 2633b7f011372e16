"""Guest management: ``status`` and ``provision``."""

from __future__ import annotations

import json

import click

from llimabox.cli._common import CONTEXT_SETTINGS, Globals, pass_globals

__all__ = ["status", "provision"]


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@pass_globals
def status(g: Globals, as_json: bool) -> int:
    """Show the backend, whether the guest is reachable and up to date, and the state database.

    Exits 1 when the guest is unreachable or not provisioned.

    \b
    Example:
        llima-box status --json
    """
    from llimabox import api

    info = api.status(**g.api_kwargs())
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            click.echo(f"{key.replace('_', ' ')}: {'-' if value is None else value}")
    return 0 if info.get("up_to_date") else 1


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--user", help="Guest login user allowed to run the guest scripts (default: the one we log in as).")
@click.option("--roots", help="Colon-separated directories projects may live under (default: kept, else /home).")
@click.option("--group", help='Also let every member of this group use llima-box, each with envs of their own '
              '(default: kept; "" for none).')
@pass_globals
def provision(g: Globals, user: str | None, roots: str | None, group: str | None) -> None:
    """Install or upgrade the guest side: scripts, sudoers rule and settings.

    Also installs the missing vm_packages of the configuration (recorded in the guest, installed
    again when missing at every later run) and runs its vm_setup script there as root, with progress.

    \b
    Example:
        llima-box provision --roots /home          # the configured backend
        LLIMA_BOX_VM_PACKAGES=nodejs,npm llima-box provision
        sudo "$(command -v llima-box)" --backend local provision --user "$USER" --roots /home
        sudo "$(command -v llima-box)" --backend local provision --group llima-box --roots /home   # a shared box
    """
    from llimabox import api

    click.echo(api.provision(user=user, roots=roots, group=group, **g.api_kwargs()))
