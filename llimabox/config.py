"""Configuration: the TOML file, then ``LLIMA_BOX_<KEY>`` environment variables, then flags."""

from __future__ import annotations

import dataclasses
import os
import typing as t

from llimabox import paths
from llimabox.errors import InvalidInput

__all__ = ["Config", "FIELDS", "load_config"]

# key, type, default, description (README's configuration table is this table)
FIELDS: list[tuple[str, type, object, str]] = [
    ("backend", str, None, "lima, local or ssh; default: lima when limactl is on PATH, else local on Linux"),
    ("host", str, None, "ssh backend: user@host[:port]"),
    ("identity", str, None, "ssh backend: private key file (default: the SSH agent and ~/.ssh keys)"),
    ("known_hosts", str, "~/.ssh/known_hosts", "ssh backend: where host keys are checked and pinned"),
    ("forward_agent", bool, False, "forward the SSH agent into the env (like -A)"),
    ("connect_timeout", float, 10.0, "seconds to wait for the guest's SSH port"),
    ("vm_name", str, "llima-box", "lima backend: the VM instance name"),
    ("lima_config", str, None, "lima backend: your own lima.yaml instead of the embedded one"),
    ("sudo", bool, True, "run the guest scripts through sudo -n (unless the guest user is root)"),
    ("mux", bool, True, "keep the guest connection open in a background process for `shell -- CMD`"),
    ("mux_idle", float, 600.0, "seconds the background connection stays open unused"),
]


@dataclasses.dataclass(frozen=True)
class Config:
    """The effective configuration."""

    backend: str | None = None
    host: str | None = None
    identity: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    forward_agent: bool = False
    connect_timeout: float = 10.0
    vm_name: str = "llima-box"
    lima_config: str | None = None
    sudo: bool = True
    mux: bool = True
    mux_idle: float = 600.0


_TYPES = {key: typ for key, typ, _, _ in FIELDS}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def _coerce(key: str, value: object, where: str) -> object:
    typ = _TYPES[key]
    if isinstance(value, str) and typ is not str:
        low = value.strip().lower()
        if typ is bool and low in _TRUE | _FALSE:
            return low in _TRUE
        if typ is float:
            try:
                return float(value)
            except ValueError:
                pass
    elif isinstance(value, typ) or (typ is float and isinstance(value, int) and not isinstance(value, bool)):
        return typ(value)  # type: ignore[call-arg]
    raise InvalidInput(f"{where}: {key} must be a {typ.__name__}, not {value!r}")


def _from_file(path: os.PathLike[str]) -> dict[str, object]:
    import tomllib

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise InvalidInput(f"{path}: {e}") from None
    for key in data:
        if key not in _TYPES:
            raise InvalidInput(f"{path}: unknown key {key!r} (known: {', '.join(_TYPES)})")
    return {key: _coerce(key, value, str(path)) for key, value in data.items()}


def load_config(environ: t.Mapping[str, str] = os.environ, overrides: t.Mapping[str, object] | None = None) -> Config:
    """Merge the config file, ``LLIMA_BOX_<KEY>`` variables and non-None ``overrides``, in that order."""
    values = _from_file(paths.config_path(environ))
    for key in _TYPES:
        var = "LLIMA_BOX_" + key.upper()
        if var in environ:
            values[key] = _coerce(key, environ[var], var)
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _coerce(key, value, "--" + key.replace("_", "-"))
    return Config(**values)  # type: ignore[arg-type]
