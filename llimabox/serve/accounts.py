"""Who may log in and where they land: the ``USER+PROJECT`` login name, accounts, projects.

Every refusal is a :class:`Refused` whose message is one line meant for the person logging in.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import re
import stat
import typing as t

if t.TYPE_CHECKING:
    from llimabox.guest import GuestEnv

__all__ = ["Refused", "Login", "Account", "parse_login", "lookup_account", "expand", "resolve_project",
           "resolve_env", "project_label"]

_USER_RE = re.compile(r"^[A-Za-z0-9._-]{1,32}$")
_PROJECT_RE = re.compile(r"^[A-Za-z0-9._-]{1,255}$")


class Refused(Exception):
    """A login or a request that is denied; the message is shown to the client."""


@dataclasses.dataclass(frozen=True)
class Login:
    """The SSH login name, split: ``alice+web`` is account ``alice``, project ``web``."""

    user: str
    project: str | None


@dataclasses.dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str
    shell: str


def _check_component(kind: str, value: str, pattern: re.Pattern[str]) -> str:
    if not pattern.fullmatch(value) or value in (".", ".."):
        raise Refused(f"invalid {kind} name (want [A-Za-z0-9._-], not . or ..)")
    return value


def parse_login(login: str) -> Login:
    """Split and validate ``USER`` or ``USER+PROJECT``.

    :raises Refused: a part is empty or has another character than ``[A-Za-z0-9._-]``.
    """
    user, plus, project = login.partition("+")
    _check_component("user", user, _USER_RE)
    if not plus:
        return Login(user, None)
    return Login(user, _check_component("project", project, _PROJECT_RE))


def lookup_account(name: str, group: str) -> Account:
    """The account ``name`` if it may log in: it exists, is not root and is in ``group``.

    :raises Refused: it may not (the message does not say which check failed).
    """
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise Refused("login refused") from None
    if pw.pw_uid == 0 or name == "root":
        raise Refused("login refused")
    try:
        gr = grp.getgrnam(group)
    except KeyError:
        raise Refused("login refused") from None
    if name not in gr.gr_mem and pw.pw_gid != gr.gr_gid:
        raise Refused("login refused")
    return Account(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir, _login_shell(pw.pw_shell))


def _login_shell(shell: str) -> str:
    """The account's shell when /etc/shells lists it, else /bin/bash."""
    try:
        with open("/etc/shells", encoding="utf-8") as f:
            shells = {line.strip() for line in f if line.startswith("/")}
    except OSError:
        shells = set()
    return shell if shell in shells and os.access(shell, os.X_OK) else "/bin/bash"


def expand(template: str, account: Account) -> str:
    """``~`` (leading) is the account's home, ``{user}`` its name; the result must be absolute."""
    path = template.replace("{user}", account.name)
    if path == "~" or path.startswith("~/"):
        path = account.home + path[1:]
    if not path.startswith("/"):
        raise Refused(f"the server's configuration names a relative path: {template}")
    return os.path.normpath(path)


def resolve_project(account: Account, project: str, root_template: str) -> str:
    """The real path of ``project`` under the account's projects root.

    Symlinks are resolved; the result must lie strictly below the (real) projects root, be a
    directory and be owned by the account.

    :raises Refused: anything else, with a one-line reason that reveals nothing of others.
    """
    _check_component("project", project, _PROJECT_RE)
    root = expand(root_template, account)
    try:
        real_root = os.path.realpath(root, strict=True)
        real = os.path.realpath(os.path.join(real_root, project), strict=True)
        st = os.stat(real)
    except OSError:
        raise Refused(f"no project {project} in {root}") from None
    if not real.startswith(real_root.rstrip("/") + "/"):
        raise Refused(f"project {project} is not inside {root}")
    if not stat.S_ISDIR(st.st_mode):
        raise Refused(f"project {project} is not a directory")
    if st.st_uid != account.uid:
        raise Refused(f"project {project} does not belong to {account.name}")
    return real


def resolve_env(account: Account, name: str, envs: t.Iterable[GuestEnv]) -> str:
    """The project of the account's env ``name`` (one of ``envs``, the guest's ``list``).

    The env must be recorded as the account's, and its project must still be a directory of the
    account's at that real path (``enter`` checks it again when it enters).

    :raises Refused: no such env of the account's, or its project is gone or changed hands.
    """
    env = next((e for e in envs if e.name == name and e.owner == account.uid), None)
    if env is None:
        raise Refused(f"no env {name} of {account.name}")
    try:
        real = os.path.realpath(env.project, strict=True)
        st = os.stat(real)
    except OSError:
        raise Refused(f"the project of env {name} is gone") from None
    if real != env.project or not stat.S_ISDIR(st.st_mode) or st.st_uid != account.uid:
        raise Refused(f"the project of env {name} is not a directory of {account.name}")
    return real


def project_label(account: Account, project: str, root_template: str) -> str | None:
    """The name under which ``project`` (a real path) is reachable for the account, if any."""
    try:
        root = os.path.realpath(expand(root_template, account))
    except Refused:
        return None
    if os.path.dirname(project) != root or not project.startswith("/"):
        return None
    try:
        return project.rsplit("/", 1)[1] if os.stat(project).st_uid == account.uid else None
    except OSError:
        return None
