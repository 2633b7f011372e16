"""Where llima-box keeps its state and looks for its configuration."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # the mux client imports this module: no typing or pathlib on its hot path
    import typing as t
    from pathlib import Path

__all__ = ["state_root", "state_dir", "config_path", "db_path"]


def state_root(environ: t.Mapping[str, str] = os.environ) -> str:
    """``$LLIMA_BOX_HOME``, else ``$XDG_STATE_HOME/llima-box``, else ``~/.local/state/llima-box``."""
    if environ.get("LLIMA_BOX_HOME"):
        return environ["LLIMA_BOX_HOME"]
    base = environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "llima-box")


def state_dir(environ: t.Mapping[str, str] = os.environ) -> Path:
    """:func:`state_root` as a path."""
    from pathlib import Path

    return Path(state_root(environ))


def config_path(environ: t.Mapping[str, str] = os.environ) -> Path:
    """``$LLIMA_BOX_HOME/config.toml``, else ``$XDG_CONFIG_HOME/llima-box/config.toml`` (``~/.config``)."""
    from pathlib import Path

    if environ.get("LLIMA_BOX_HOME"):
        return Path(environ["LLIMA_BOX_HOME"]) / "config.toml"
    base = environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "llima-box" / "config.toml"


def db_path(environ: t.Mapping[str, str] = os.environ) -> Path:
    """The SQLite state database."""
    return state_dir(environ) / "state.db"
