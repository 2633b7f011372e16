"""``export`` and ``import``: an env's home as a tar stream, and back.

Both run ``tar`` inside the env, as its own user: an export holds what that user can read of its home
(never the project), an import writes only what that user may write. The stream's first member is a
small manifest (:data:`MANIFEST`); the home's files follow under ``home/``.
"""

from __future__ import annotations

import datetime
import json
import os
import tarfile
import typing as t

from llimabox import api, guest
from llimabox.errors import EnvNotFound, GuestScriptFailed, InvalidInput

if t.TYPE_CHECKING:
    from llimabox.backends.base import Backend
    from llimabox.config import Config

__all__ = ["export_home", "import_home", "MANIFEST"]

MANIFEST = "llima-box-export.json"
FORMAT = "llima-box-home"

# $1: the manifest. Member names of the home get "home" for their leading "." (not symlink targets: S).
_EXPORT = r"""set -eu
m=$(mktemp -d)
trap 'rm -rf "$m"' EXIT
printf '%s\n' "$1" >"$m/$2"
tar -cf - -C "$m" "$2" -C "$HOME" --exclude=./lost+found --transform='s,^\.,home,S' .
"""
# Only the home's members, into the home; GNU tar refuses names with "..", strips a leading "/", and
# makes a link to outside the home only after every file is out (so nothing is written through it).
_IMPORT = r"""set -eu
tar -xf - -C "$HOME" --strip-components=1 --no-overwrite-dir home
"""


def _live(backend: Backend) -> dict[str, guest.GuestEnv]:
    return {env.name: env for env in guest.parse_list(backend.check_verb("list"))}


def _target(backend: Backend, target: str | None, new_options: t.Sequence[str] | None) -> api.ShellTarget:
    """The env of NAME or PATH (default: the working directory's, as for ``shell``); a missing env of a
    PATH is made (with ``new_options``) when they are given, else :class:`EnvNotFound`."""
    live = _live(backend)
    if target is not None and api.names_an_env(target):
        if target not in live:
            raise EnvNotFound(f"no env {target!r} on {backend.identity}")
        return api.ShellTarget(target, live[target].project, None, known=True)
    found = api.shell_target(backend, target if target is not None else os.getcwd())
    if found.name not in live:
        if new_options is None:
            raise EnvNotFound(f"no env for {found.project} on {backend.identity}")
        api.create_in(backend, found.project, (), new_options)
    return api.ShellTarget(found.name, found.project, None, known=True)


def _run(backend: Backend, target: api.ShellTarget, script: str, args: list[str], **streams: t.Any) -> None:
    code = api.run_in_env(backend, target, ["sh", "-c", script, "sh", *args], environ={}, pty=False, **streams)
    if code != 0:
        raise GuestScriptFailed(f"tar in env {target.name} failed with exit status {code}")


def export_home(target: str | None, out: t.BinaryIO | None = None, **kwargs: t.Any) -> str:
    """Write the home of the env of ``target`` (NAME or PATH) as a tar stream to ``out`` (default: this
    process's stdout); return the env's name. ``kwargs``: those of :func:`api.open_backend`."""
    backend = api.open_backend(start=True, **kwargs)
    try:
        env = _target(backend, target, None)
        manifest = {
            "format": FORMAT, "version": 1, "env": env.name, "project": env.project,
            "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }  # fmt: skip
        _run(backend, env, _EXPORT, [json.dumps(manifest), MANIFEST], stdout=out)
        return env.name
    finally:
        backend.close()


def read_manifest(path: str, stream: t.BinaryIO) -> dict[str, t.Any]:
    """The manifest of the export file ``path`` open as ``stream`` (left at its start again), after checking
    every member stays in the home: :class:`InvalidInput` when it is no export or a member would land outside
    (nothing is written then)."""
    try:
        with tarfile.open(fileobj=stream, mode="r:") as archive:
            first = archive.next()
            data = archive.extractfile(first) if first is not None and first.name == MANIFEST else None
            manifest = json.loads(data.read(65536)) if data is not None else None
            if isinstance(manifest, dict) and manifest.get("format") == FORMAT:
                _check_members(path, archive, first)
    except (OSError, tarfile.TarError, ValueError) as exc:
        raise InvalidInput(f"{path}: not a llima-box export ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InvalidInput(f"{path}: not a llima-box export (no {MANIFEST} first)")
    stream.seek(0)
    return manifest


def _check_members(path: str, archive: tarfile.TarFile, manifest: tarfile.TarInfo) -> None:
    links: set[str] = set()
    for member in archive:
        if member is manifest:
            continue
        parts = member.name.rstrip("/").split("/")
        inside = parts[0] == "home" and ".." not in parts and "" not in parts
        through_link = any("/".join(parts[:i]) in links for i in range(2, len(parts)))
        if member.islnk():
            target = member.linkname.split("/")
            inside = inside and target[0] == "home" and ".." not in target
        if not inside or through_link or not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise InvalidInput(f"{path}: member {member.name!r} would land outside the env's home; nothing imported")
        if member.issym():
            links.add(member.name.rstrip("/"))


def import_home(path: str, target: str | None, config: Config | None = None, **kwargs: t.Any) -> str:
    """Unpack the export file ``path`` into the home of the env of ``target`` (NAME or PATH; the env of a
    PATH is made if missing); return the env's name. Files of the same name are replaced. The file is
    opened once: what was checked is what is unpacked."""
    try:
        stream = open(path, "rb")
    except OSError as exc:
        raise InvalidInput(f"{path}: {exc.strerror}") from None
    with stream:
        read_manifest(path, stream)
        if config is None:
            from llimabox.config import load_config

            config = load_config(os.environ, kwargs.get("overrides"))
        backend = api.open_backend(config, start=True, **kwargs)
        try:
            env = _target(backend, target, api.config_options(config))
            _run(backend, env, _IMPORT, [], stdin=stream)
            return env.name
        finally:
            backend.close()
