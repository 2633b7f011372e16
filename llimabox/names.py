"""Project paths and env names.

An env is named after its project: ``lb-`` + a slug of the project's base name + a hash of
its real path, so the name is stable, unique in practice and a valid Linux user name.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re

from llimabox.errors import InvalidInput

__all__ = ["NAME_RE", "MAX_PROJECT_BYTES", "resolve_project", "normalise_project", "env_name", "validate_name"]

#: What the guest accepts as an env name (also the env's Linux user name).
NAME_RE = re.compile(r"^lb-[a-z0-9][a-z0-9-]{0,28}$")
MAX_PROJECT_BYTES = 1024
_SLUG_MAX = 12
_HASH_LEN = 14
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def _check_text(path: str) -> None:
    if _CONTROL_RE.search(path):
        raise InvalidInput(f"project path contains a control character: {path!r}")
    if len(os.fsencode(path)) > MAX_PROJECT_BYTES:
        raise InvalidInput(f"project path is longer than {MAX_PROJECT_BYTES} bytes")


def resolve_project(path: str | os.PathLike[str]) -> str:
    """Return the real path of a project directory.

    Symlinks are resolved; the path must exist and be a directory.

    :param path: the project directory, absolute or relative to the working directory.
    :raises InvalidInput: the path is missing, not a directory, too long or has a control character.
    """
    raw = os.fspath(path)
    _check_text(raw)
    try:
        real = os.path.realpath(raw, strict=True)
    except OSError as exc:
        raise InvalidInput(f"project path does not exist: {raw}") from exc
    _check_text(real)
    if not os.path.isdir(real):
        raise InvalidInput(f"project path is not a directory: {real}")
    if real == "/":
        raise InvalidInput("project path may not be /")
    return real


def normalise_project(path: str | os.PathLike[str]) -> str:
    """Return an absolute, normalised project path without touching the file system.

    Used when the project lives on a remote guest (the ``ssh`` backend): the guest checks that
    it exists and has no symlinked component.

    :raises InvalidInput: the path is relative, too long or has a control character.
    """
    raw = os.fspath(path)
    _check_text(raw)
    if not raw.startswith("/"):
        raise InvalidInput(f"project path must be absolute for a remote guest: {raw}")
    norm = os.path.normpath(raw)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    if norm == "/":
        raise InvalidInput("project path may not be /")
    return norm


def _slug(project: str) -> str:
    base = os.path.basename(project.rstrip("/")).lower()
    slug = re.sub(r"[^a-z0-9]+", "-", base).strip("-")
    return slug[:_SLUG_MAX].strip("-")


def env_name(project: str) -> str:
    """Return the env name for a project's real path.

    ``lb-`` + slug of the base name (at most 12 characters, may be empty) + ``-`` + 14 characters
    of base32 SHA-256 of the path (about 70 bits). Always matches :data:`NAME_RE`.

    >>> env_name("/home/alice/My Project")[:14]
    'lb-my-project-'
    """
    digest = hashlib.sha256(os.fsencode(project)).digest()
    short = base64.b32encode(digest).decode("ascii").lower()[:_HASH_LEN]
    slug = _slug(project)
    return f"lb-{slug}-{short}" if slug else f"lb-{short}"


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid env name.

    :raises InvalidInput: it is not.
    """
    if not NAME_RE.fullmatch(name):
        raise InvalidInput(f"invalid env name {name!r} (want lb-[a-z0-9-], at most 32 characters)")
    return name
