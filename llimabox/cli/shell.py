"""``llima-box shell``."""

from __future__ import annotations

import click

from llimabox.cli._common import CONTEXT_SETTINGS, Globals, complete_dirs, pass_globals

__all__ = ["shell"]


class _ShellCommand(click.Command):
    """Keeps a leading ``--`` visible, so ``shell -- CMD`` and ``shell PATH -- CMD`` both parse."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            i = args.index("--")
            if all(a.startswith("-") for a in args[:i]):
                args = [*args[:i], "--", *args[i:]]
        return super().parse_args(ctx, args)


@click.command(
    cls=_ShellCommand,
    context_settings={**CONTEXT_SETTINGS, "ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.option("-t", "pty", flag_value=True, default=None, help="Force a pseudo-terminal.")
@click.option("-T", "pty", flag_value=False, help="Never use a pseudo-terminal.")
@click.option("-A", "forward_agent", is_flag=True, help="Forward the SSH agent into the env.")
@click.option("--share", "shares", multiple=True, metavar="SRC[:DST][:ro|rw]",
              help="Add a share to the env first, as create --share does. Repeatable.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="[PATH] [-- CMD [ARG]...]",
                shell_complete=complete_dirs)
@pass_globals
def shell(g: Globals, pty: bool | None, forward_agent: bool, shares: tuple[str, ...], args: tuple[str, ...]) -> int:
    """Run a shell or a command in the env of PATH (default: the current directory).

    The env is created on first use. When the current directory lies inside the project of an
    existing env, that env is used and the command starts in the current directory. Without
    CMD and on a terminal you get an interactive login shell.

    Exit status: CMD's own; 125 when llima-box itself fails; 126 CMD cannot run; 127 not found.

    \b
    Example:
        llima-box shell ~/src/app -- make test
        echo hi | llima-box shell -- cat
    """
    g.command = "shell"
    path, cmd = _split(args)
    from llimabox import api

    return api.shell(path, cmd, pty=pty, forward_agent=forward_agent, shares=shares, **g.api_kwargs())


def _split(args: tuple[str, ...]) -> tuple[str | None, list[str]]:
    """``[PATH] [-- CMD...]``: click drops nothing after ``--`` only when it is first; handle both."""
    items = list(args)
    if "--" in items:
        i = items.index("--")
        before, cmd = items[:i], items[i + 1 :]
    else:
        before, cmd = items[:1], items[1:]
        if cmd:
            raise click.UsageError("put the command after --: llima-box shell [PATH] -- CMD [ARG ...]")
    if len(before) > 1:
        raise click.UsageError(f"expected at most one PATH before --, got {len(before)}")
    if before and before[0].startswith("-"):
        raise click.UsageError(f"no such option: {before[0]}")
    return (before[0] if before else None), cmd
