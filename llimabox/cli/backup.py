"""``llima-box export`` and ``llima-box import``: an env's home as a tar stream."""

from __future__ import annotations

import os
import sys

import click

from llimabox.cli._common import CONTEXT_SETTINGS, Globals, complete_envs, pass_globals

__all__ = ["export", "import_"]


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("target", metavar="[PATH|NAME]", required=False, shell_complete=complete_envs)
@pass_globals
def export(g: Globals, target: str | None) -> None:
    """Write the home of the env of PATH or NAME to stdout as a tar stream (not the project).

    Its first member, llima-box-export.json, says which env it came from; the home's files follow
    under home/, as the env's user reads them.

    \b
    Example:
        llima-box export ~/src/app > app-home.tar
    """
    if os.isatty(sys.stdout.fileno()):
        raise click.UsageError("stdout is a terminal: redirect it to a file, e.g. llima-box export > home.tar")
    from llimabox import backup

    backup.export_home(target, **g.api_kwargs())


@click.command("import", context_settings=CONTEXT_SETTINGS)
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.argument("target", metavar="[PATH|NAME]", required=False, shell_complete=complete_envs)
@pass_globals
def import_(g: Globals, file: str, target: str | None) -> None:
    """Unpack an export FILE into the home of the env of PATH or NAME (the env of a PATH is made if missing).

    Files of the same name are replaced; the others stay. What lands there belongs to the env's user.

    \b
    Example:
        llima-box import app-home.tar ~/src/app-copy
    """
    from llimabox import backup

    click.echo(backup.import_home(file, target, **g.api_kwargs()))
