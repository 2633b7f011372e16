"""Tools in the guest: the ``vm_packages`` and ``vm_setup`` that provisioning applies, checked on the host.

The installer (``provision/install.sh --packages "A B" --setup FILE``) checks them again in the guest; here
they are checked first, so that a bad name or a missing script is one clear line before anything runs.
"""

from __future__ import annotations

import os
import re
import typing as t

from llimabox.errors import InvalidInput

__all__ = ["PACKAGE_NAME", "check_packages", "check_setup", "checked", "installer_args"]

#: A Debian package name (Debian policy 5.6.1): lowercase letters, digits, ``+ - .``; two characters at least;
#: or ``npm:NAME[@VERSION]`` (or ``npm:/PATH.tgz``, a package file in the guest), one of npm's (installed
#: globally in the guest, for every env).
PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+|npm:(@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*(@[a-z0-9.+-]+)?"
                          r"|npm:/[A-Za-z0-9._+/-]+\.tgz")


def check_packages(packages: t.Iterable[str]) -> tuple[str, ...]:
    """``packages`` without repeats, each checked against :data:`PACKAGE_NAME`.

    :raises InvalidInput: a name Debian would not accept (naming it).
    """
    names: list[str] = []
    for name in packages:
        if not PACKAGE_NAME.fullmatch(name):
            raise InvalidInput(f"vm_packages: {name!r} is not a Debian package name "
                               "(lowercase letters, digits, + - ., at least two characters) nor npm:NAME[@VERSION]")
        if name not in names:
            names.append(name)
    return tuple(names)


def check_setup(path: str | None) -> str | None:
    """The setup script ``path`` (``~`` expanded) as an absolute path; ``None`` when not set.

    :raises InvalidInput: it is not a readable file.
    """
    if not path:
        return None
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(full):
        raise InvalidInput(f"vm_setup: no such file: {path}")
    if not os.access(full, os.R_OK):
        raise InvalidInput(f"vm_setup: cannot read {path}")
    return full


def checked(packages: t.Iterable[str] | None, setup: str | None) -> tuple[tuple[str, ...] | None, str | None]:
    """Both checked, as a backend's ``provision`` takes them (``None`` packages: keep the guest's record).

    :raises InvalidInput: see :func:`check_packages` and :func:`check_setup`.
    """
    return (None if packages is None else check_packages(packages)), check_setup(setup)


def installer_args(packages: t.Sequence[str] | None, setup: str | None) -> list[str]:
    """The ``install.sh`` options for them: ``--packages`` when given (``None``: keep the guest's record,
    as boots and automatic upgrades do; empty: none), ``--setup`` with the script's path in the guest."""
    args = [] if packages is None else ["--packages", " ".join(packages)]
    return args + (["--setup", setup] if setup else [])
