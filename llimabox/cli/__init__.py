"""The ``llima-box`` command line: parses, calls one library function, prints.

Errors of the library are mapped to exit codes here and nowhere else: ``shell`` exits 125 for
its own failures, the management commands 2 for bad input and 1 for anything else.
"""

from __future__ import annotations

import sys
import typing as t

import click

from llimabox import __version__
from llimabox.cli._common import CONTEXT_SETTINGS, Globals
from llimabox.cli.backup import export, import_
from llimabox.cli.doctor import doctor
from llimabox.cli.envs import create, delete, delete_all, list_envs, ports, stop
from llimabox.cli.guest import provision, status
from llimabox.cli.run import run
from llimabox.cli.serve import audit, serve, ssh_config
from llimabox.cli.shell import shell
from llimabox.cli.verify import verify
from llimabox.cli.vm import vm

__all__ = ["main", "cli"]

SHELL_FAILURE = 125


class _Group(click.Group):
    """The root group; its ``main`` maps errors to exit codes in one place."""

    def main(  # type: ignore[override]
        self,
        args: t.Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: t.Any,
    ) -> t.Any:
        g = Globals()
        extra.setdefault("obj", g)
        g = extra["obj"]
        code = _run(self, g, args, prog_name or "llima-box", complete_var, extra)
        if not standalone_mode:
            return code
        sys.exit(code)


def _run(group: _Group, g: Globals, args: t.Any, prog_name: str, complete_var: t.Any, extra: t.Any) -> int:
    try:
        rv = click.Group.main(group, args, prog_name, complete_var, standalone_mode=False, **extra)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        in_shell = isinstance(exc, click.UsageError) and exc.ctx is not None and exc.ctx.info_name == "shell"
        return SHELL_FAILURE if in_shell or g.command == "shell" else exc.exit_code
    except click.Abort:
        click.echo("Aborted!", err=True)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place errors become exit codes
        return _report(exc, g)
    if rv is None:
        return 0
    return int(rv)


def _report(exc: Exception, g: Globals) -> int:
    from llimabox.errors import LlimaBoxError

    if g.debug:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, LlimaBoxError):
        message, code = str(exc), exc.exit_code
    else:
        message, code = f"internal error: {type(exc).__name__}: {exc} (rerun with --debug)", 1
    click.echo("Error: " + " ".join(message.split()), err=True)
    return SHELL_FAILURE if g.command == "shell" else code


@click.group(cls=_Group, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "--version", prog_name="llima-box")
@click.option("--backend", type=click.Choice(["lima", "local", "ssh"]), help="Where the guest is (default: auto).")
@click.option("--host", metavar="USER@HOST[:PORT]", help="The guest host for the ssh backend.")
@click.option("--identity", metavar="KEY", help="SSH private key file for the ssh backend.")
@click.option("--accept-host-key", is_flag=True, help="Trust and pin the guest's host key if it is unknown.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def cli(
    ctx: click.Context, backend: str | None, host: str | None, identity: str | None, accept_host_key: bool, debug: bool
) -> None:
    """Isolated, persistent per-project sandboxes ("envs") in one shared Linux guest.

    \b
    Example:
        llima-box shell ~/src/app -- make test
    """
    g = ctx.ensure_object(Globals)
    g.backend, g.host, g.identity = backend, host, identity
    g.accept_host_key, g.debug = accept_host_key, debug
    if debug:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="llima-box: %(levelname)s: %(message)s")


for _command in (shell, run, create, list_envs, ports, stop, delete, delete_all, export, import_, status, provision,
                 verify, vm, doctor, serve, audit, ssh_config):
    cli.add_command(_command)

main = cli
