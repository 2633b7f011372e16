"""How to run this very ``llima-box`` again, e.g. under ``sudo`` (whose secure_path lacks a venv's bin)."""

from __future__ import annotations

import os
import shlex
import shutil
import sys

__all__ = ["self_command"]


def self_command() -> str:
    """A shell command running the ``llima-box`` that runs now, by absolute path (quoted for a shell)."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "llima-box":
        found = argv0 if os.sep in argv0 else shutil.which(argv0)
        if found:
            return shlex.quote(os.path.abspath(found))
    installed = shutil.which("llima-box")
    if installed:
        return shlex.quote(os.path.abspath(installed))
    return f"{shlex.quote(sys.executable)} -m llimabox"
