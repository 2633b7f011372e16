"""Shares: host paths of the user's shown in an env (``--share SRC[:DST][:ro|rw]``, the ``shares`` keys).

A spec becomes the guest's ``create --share SRC:DST:ro|rw``: SRC absolute with the user's own symlinks
resolved (the guest refuses any symlink, then mounts the very object it checked), DST the same path, or
``~/…`` (the env's home) when SRC was written so. Read-only unless ``rw``. Only the user's config names
shares: nothing inside a project can grant itself one.
"""

from __future__ import annotations

import os
import posixpath
import typing as t

from llimabox.errors import InvalidInput

__all__ = ["guest_spec", "default_specs", "share_options"]

_MODES = ("ro", "rw")


def guest_spec(spec: str, local_paths: bool = True) -> str:
    """``SRC:DST:ro|rw`` for the guest from a user's ``SRC[:DST][:ro|rw]``.

    :param local_paths: SRC is on this machine (lima, local): ``~`` and relative paths are resolved here.
    :raises InvalidInput: a malformed spec, or a SRC that does not exist.
    """
    parts = spec.split(":")
    mode = parts.pop() if len(parts) > 1 and parts[-1] in _MODES else "ro"
    if not parts[0] or len(parts) > 2 or (len(parts) == 2 and not parts[1]):
        raise InvalidInput(f"--share takes SRC[:DST][:ro|rw] (paths without ':'), not {spec!r}")
    src, dst = parts[0], parts[1] if len(parts) == 2 else None
    in_home = src == "~" or src.startswith("~/")
    if dst is None:
        dst = src if in_home else None
    if in_home or not posixpath.isabs(src):
        if not local_paths:
            raise InvalidInput(f"share source must be an absolute path of the guest: {src!r}")
        src = os.path.abspath(os.path.expanduser(src))
    given = posixpath.normpath(src)
    if local_paths:
        if not os.path.exists(src):
            raise InvalidInput(f"share source does not exist: {src}")
        src = os.path.realpath(src)
    return f"{src}:{_target(dst if dst is not None else given, spec)}:{mode}"


def _target(dst: str, spec: str) -> str:
    if dst == "~" or dst == "~/":
        raise InvalidInput(f"a share may not cover the env's whole home: {spec!r}")
    if dst.startswith("~/"):
        rel = posixpath.normpath(dst[2:])
        if rel.startswith("..") or rel.startswith("/"):
            raise InvalidInput(f"share target must stay in the env's home: {spec!r}")
        return "~/" + rel
    if not posixpath.isabs(dst):
        raise InvalidInput(f"share target must be absolute or ~/…: {spec!r}")
    return posixpath.normpath(dst)


def default_specs(project: str, git_identity: bool) -> list[str]:
    """The shares every env gets unless turned off: the host's git identity (``~/.gitconfig`` and
    ``~/.config/git/config``, read-only), and for a git worktree its main repository's ``.git`` (read-write)."""
    specs = []
    if git_identity:
        specs += [p + ":ro" for p in ("~/.gitconfig", "~/.config/git/config") if os.path.isfile(os.path.expanduser(p))]
    common = worktree_git_dir(project)
    if common is not None:
        specs.append(common + ":rw")
    return specs


def worktree_git_dir(project: str) -> str | None:
    """The main repository's git directory of a worktree ``project`` (its ``.git`` file points into it)."""
    try:
        with open(os.path.join(project, ".git"), encoding="utf-8") as f:
            line = f.readline().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not line.startswith("gitdir: "):
        return None
    gitdir = os.path.join(project, line[len("gitdir: "):])
    try:
        with open(os.path.join(gitdir, "commondir"), encoding="utf-8") as f:
            common = os.path.realpath(os.path.join(gitdir, f.readline().strip()))
    except (OSError, UnicodeDecodeError):
        return None
    inside = common == project or common.startswith(project.rstrip("/") + "/")
    return None if inside or not os.path.isdir(common) else common


def share_options(specs: t.Iterable[str], local_paths: bool = True, soft: bool = False) -> list[str]:
    """The guest's ``create`` options for ``specs`` (later ones win at the same target); ``soft``: as
    ``--try-share``, which the guest leaves out where it would refuse ``--share`` (and where a share is)."""
    by_target: dict[str, str] = {}
    for spec in specs:
        guest = guest_spec(spec, local_paths)
        by_target[guest.split(":")[1]] = guest
    option = "--try-share" if soft else "--share"
    return [arg for guest in by_target.values() for arg in (option, guest)]
