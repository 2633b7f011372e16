"""The ``llima-box`` entry point: ``shell -- CMD`` through the mux when it can, else the click CLI."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    args = sys.argv[1:]
    if {"shell", "create", "list"}.intersection(args[:8]):
        from llimabox.mux import client

        code = client.run(args)
        if code is not None:
            sys.exit(code)
    from llimabox.cli import main as cli_main

    cli_main(prog_name="llima-box")
