"""``python -m llimabox``."""

from __future__ import annotations

from llimabox.launcher import main

if __name__ == "__main__":
    main()
