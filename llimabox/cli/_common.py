"""Shared pieces of the command modules: the global options object and output helpers."""

from __future__ import annotations

import dataclasses
import typing as t

import click

__all__ = ["Globals", "pass_globals", "CONTEXT_SETTINGS", "complete_dirs", "complete_envs"]

CONTEXT_SETTINGS: dict[str, t.Any] = {"help_option_names": ["-h", "--help"]}


@dataclasses.dataclass
class Globals:
    """What the group's options say, handed to every command."""

    backend: str | None = None
    host: str | None = None
    identity: str | None = None
    accept_host_key: bool = False
    debug: bool = False
    command: str | None = None

    def api_kwargs(self) -> dict[str, t.Any]:
        """Keyword arguments every api function takes."""
        given = (("backend", self.backend), ("host", self.host), ("identity", self.identity))
        overrides = {k: v for k, v in given if v}
        return {"overrides": overrides, "accept_host_key": self.accept_host_key}


pass_globals = click.make_pass_decorator(Globals, ensure=True)


def complete_dirs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[t.Any]:
    """Shell completion of a project: the shell's own directory completion."""
    from click.shell_completion import CompletionItem

    return [CompletionItem(incomplete, type="dir")]


def complete_envs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[t.Any]:
    """Shell completion of PATH|NAME: the recorded envs' names, then directories."""
    from click.shell_completion import CompletionItem

    from llimabox import fastindex, paths

    try:
        found = [n for n in fastindex.env_names(paths.db_path()) if n.startswith(incomplete)]
    except fastindex.FastIndexUnavailable:
        found = []
    return [CompletionItem(n) for n in found] + complete_dirs(ctx, param, incomplete)
