"""The multi-user SSH server: ``serve``, its ``audit`` log, and ``ssh-config`` (IDE attach through it)."""

from __future__ import annotations

import json

import click

from llimabox.cli._common import CONTEXT_SETTINGS, Globals, complete_dirs, pass_globals

__all__ = ["serve", "audit", "ssh_config"]


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--listen", required=True, metavar="ADDR:PORT", help="Where to listen, e.g. 0.0.0.0:2222.")
@click.option("--host-key", metavar="FILE", help="Host key (default: one generated in the state dir).")
@pass_globals
def serve(g: Globals, listen: str, host_key: str | None) -> int:
    """Run an SSH server (as root) where each account lands in its own project envs.

    Log in as USER+PROJECT to reach the env of the project PROJECT under USER's projects root.
    Only members of the group llima-box (serve_group) may log in; root never does.

    \b
    Example (sudo by path: its secure_path may lack a venv's llima-box):
        sudo "$(command -v llima-box)" serve --listen 0.0.0.0:2222   # as root: llima-box serve ...
        ssh -p 2222 alice+web@box make test
    """
    import logging
    import os

    from llimabox.config import load_config

    config = load_config(os.environ)
    logging.basicConfig(level=logging.DEBUG if g.debug else logging.INFO,
                        format="llima-box serve: %(levelname)s: %(message)s")
    if not g.debug:
        logging.getLogger("paramiko").setLevel(logging.CRITICAL)
        logging.getLogger("alembic").setLevel(logging.WARNING)
    from llimabox.serve import server

    return server.run(config, listen, host_key, lambda msg: click.echo(f"llima-box serve: {msg}", err=True))


_AUTH_COLUMNS = ("at", "login", "source", "method", "result", "detail")
_SESSION_COLUMNS = ("started_at", "ended_at", "user", "source", "env", "kind", "command", "exit_status",
                    "bytes_in", "bytes_out")


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object {auth: [...], sessions: [...]}.")
@click.option("--user", metavar="U", help="Only this account.")
@click.option("--since", metavar="T", help="Only since T: 30m, 2h, 7d or an ISO 8601 time (UTC by default).")
@click.option("--egress", is_flag=True,
              help="Show instead what the filtering proxies of envs with an allow-list refused (from the guest).")
@pass_globals
def audit(g: Globals, as_json: bool, user: str | None, since: str | None, egress: bool) -> None:
    """Show the log of sessions (every shell of yours; serve's: its logins too) (--egress: the refused hosts of envs).

    \b
    Examples:
        sudo "$(command -v llima-box)" audit --user alice --since 1d
        llima-box audit --egress
    """
    if egress:
        from llimabox import api

        refused = api.refused_egress(**g.api_kwargs())
        if as_json:
            click.echo(json.dumps(refused, indent=2))
            return
        for row in refused:
            click.echo("  ".join(str(row[c]) for c in ("time", "name", "host", "project")))
        return
    from llimabox.serve.audit import query

    rows = query(user=user, since=since)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for title, columns, key in (("authentication", _AUTH_COLUMNS, "auth"), ("sessions", _SESSION_COLUMNS,
                                                                           "sessions")):
        click.echo(f"{title}:")
        for row in rows[key]:
            click.echo("  " + "  ".join("-" if row[c] is None else str(row[c]) for c in columns))


@click.command(name="ssh-config", context_settings=CONTEXT_SETTINGS)
@click.argument("path", required=False, shell_complete=complete_dirs)
@click.option("--key", metavar="FILE", help="Your private key (default: ~/.ssh/id_ed25519, id_ecdsa or id_rsa).")
@click.option("--alias", metavar="NAME", help="The Host name (default: llima-box-ENV).")
@click.option("--authorize", is_flag=True,
              help="Also add the key's .pub to the guest account's ~/.ssh/authorized_keys (what serve accepts).")
@pass_globals
def ssh_config(g: Globals, path: str | None, key: str | None, alias: str | None, authorize: bool) -> None:
    """Print an OpenSSH Host block that opens the env of PATH (default: the current directory) for IDEs.

    VS Code Remote-SSH, Cursor, Zed, JetBrains Gateway and plain ssh reach the env through serve on the
    guest's loopback (port ide_port), logging in with your key as ACCOUNT+ENV: sessions, sftp and ssh -L
    all stay inside the env. The env is made when missing.

    \b
    Examples:
        llima-box ssh-config ~/src/app --authorize >> ~/.ssh/config
        ssh llima-box-app-XXXX pwd
    """
    from llimabox import ide

    found = ide.ssh_config(path, key=key, alias=alias, authorize=authorize, **g.api_kwargs())
    click.echo(found.block, nl=False)
    if found.authorized == "added":
        click.echo("llima-box: added your public key to ~/.ssh/authorized_keys in the guest", err=True)
    elif found.authorized is None:
        click.echo("llima-box: serve accepts the key once it is in the guest account's ~/.ssh/authorized_keys "
                   "(run again with --authorize to put it there)", err=True)
    if found.serve_answers is False:
        click.echo("llima-box: llima-box serve does not answer on 127.0.0.1 at ide_port yet "
                   "(README: IDE attach)", err=True)
