"""``python -m llimabox``."""

from __future__ import annotations

from llimabox.cli import main

if __name__ == "__main__":
    main(prog_name="llima-box")
