"""The llima-box library: what the CLI's commands do.

Every function loads the configuration (unless given one), picks the backend, does its work
and closes what it opened. Nothing here imports click, paramiko or SQLAlchemy at module level.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import sys
import typing as t

from llimabox import guest, names
from llimabox.errors import (
    EnvNotFound,
    GuestAuthFailed,
    GuestNotProvisioned,
    GuestScriptFailed,
    GuestUnreachable,
    HostKeyError,
    InvalidInput,
    LlimaBoxError,
    SessionRefused,
    StateError,
)

if t.TYPE_CHECKING:
    from llimabox.backends.base import Backend
    from llimabox.config import Config
    from llimabox.store import Store

__all__ = [
    "shell", "shell_target", "prepare_new", "run_in_env", "record_use", "ShellTarget", "Use",
    "create", "create_in", "list_envs", "list_in", "prune_plan", "prune", "delete", "delete_all", "status",
    "provision", "open_backend",
    "verify", "verify_in",
]  # fmt: skip

log = logging.getLogger("llimabox")
Overrides = t.Mapping[str, object]
_SKIP_RECORD = (125,)  # enter refused its arguments or failed itself: maybe no env was made


def open_backend(
    config: Config | None = None, overrides: Overrides | None = None, accept_host_key: bool = False,
    start: bool = False,
) -> Backend:
    """Load the configuration (``config`` wins over environment + ``overrides``) and return the backend.

    :param start: first use may create or boot the guest (the Lima VM); else a missing or stopped VM is an error.
    """
    if config is None:
        from llimabox.config import load_config

        config = load_config(os.environ, overrides)
    from llimabox.backends import get_backend

    backend = get_backend(config, accept_host_key=accept_host_key)
    backend.start_on_demand = start
    return backend


def _project(backend: Backend, path: str | os.PathLike[str]) -> str:
    if not os.fspath(path):
        raise InvalidInput("project path is empty")
    if backend.local_paths:
        return names.resolve_project(path)
    return names.normalise_project(os.path.abspath(path))


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _open_store() -> Store:
    from llimabox import paths
    from llimabox.store import Store

    return Store(paths.db_path())


@dataclasses.dataclass
class ShellTarget:
    """Which env a ``shell`` runs in, and where in it."""

    name: str
    project: str
    cwd: str | None
    known: bool  # the state database knows this env
    fast: bool = False  # ... and the fast index answered
    recorded: bool = False  # not known before: recorded just now, before the command


def _find_containing(identity: str, where: str) -> ShellTarget | None:
    """The env whose project contains ``where``: the fast index first, then the store."""
    from llimabox import paths

    try:
        from llimabox import fastindex

        try:
            hit = fastindex.find_containing(paths.db_path(), identity, where)
        except fastindex.FastIndexUnavailable:
            pass
        else:
            return ShellTarget(hit[0], hit[1], where, known=True, fast=True) if hit else None
        store = _open_store()
        try:
            rec = store.find_containing(identity, where)
        finally:
            store.close()
    except Exception as exc:  # noqa: BLE001 -- never fail the command because of the state database
        log.warning("state database unavailable, continuing without it: %s", exc)
        return None
    return ShellTarget(rec.name, rec.project, where, known=True) if rec else None


def shell_target(backend: Backend, path: str | os.PathLike[str]) -> ShellTarget:
    """The env ``shell`` uses for ``path``: the known env containing it, else the env of ``path`` itself."""
    where = _project(backend, path)
    hit = _find_containing(backend.identity, where)
    if hit is not None and names.NAME_RE.fullmatch(hit.name):
        return hit
    return ShellTarget(names.env_name(where), where, None, known=False)


@dataclasses.dataclass
class Use:
    """A command run in an env, for the audit log (``llima-box audit``)."""

    command: str | None  # None: an interactive shell
    started_at: datetime.datetime
    source: str = "cli"

    @classmethod
    def of(cls, cmd: t.Sequence[str], source: str = "cli") -> Use:
        import shlex

        return cls(shlex.join(cmd) if cmd else None, _now(), source)

    def row(self, target: ShellTarget, code: int) -> dict[str, t.Any]:
        import getpass

        return {"user": getpass.getuser(), "source": self.source, "env": target.name, "project": target.project,
                "kind": "exec" if self.command else "shell", "command": self.command,
                "started_at": self.started_at, "ended_at": _now(), "exit_status": code}


def _record_first_use(backend: Backend, target: ShellTarget) -> None:
    """Before the first command in a new env: record it (so a ``delete`` meanwhile drops the record
    with the env, and nothing records it again afterwards); never raises."""
    try:
        store = _open_store()
        try:
            _upsert(store, backend, target.name, target.project, None)
        finally:
            store.close()
    except Exception as exc:  # noqa: BLE001 -- recording is best effort after the command ran
        log.warning("could not record the env in the state database: %s", exc)
        return
    target.recorded = True


def record_use(backend: Backend, target: ShellTarget, code: int, use: Use | None = None) -> None:
    """After the command: touch the env's record (or drop the one made before, when enter made no
    env) and log ``use`` with its exit status; never raises, never inserts an env (one deleted
    meanwhile stays deleted)."""
    session = use.row(target, code) if use is not None else None
    try:
        if target.fast:
            from llimabox import fastindex, paths

            try:
                fastindex.touch(paths.db_path(), target.name, session)
                return
            except fastindex.FastIndexUnavailable:
                pass
        if not target.known and not target.recorded:
            return
        store = _open_store()
        try:
            if target.known:
                store.touch(target.name)
            elif code in _SKIP_RECORD:
                store.delete(target.name)
            if session is not None:
                store.add_session(session)
        finally:
            store.close()
    except Exception as exc:  # noqa: BLE001 -- recording is best effort after the command ran
        log.warning("could not record the env in the state database: %s", exc)


def _upsert(store: Store, backend: Backend, name: str, project: str, version: int | None) -> None:
    from llimabox.store import EnvRecord

    old = store.get(name)
    now = _now()
    store.upsert(
        EnvRecord(
            name=name,
            project=project,
            backend=backend.kind,
            guest=backend.identity,
            created_at=old.created_at if old is not None else now,
            last_used_at=now,
            guest_version=version if version is not None else (old.guest_version if old is not None else None),
        )
    )


def _try_upgrade(backend: Backend) -> bool:
    """Install the guest side after a refusal, when llima-box may do that on its own (not on this machine)."""
    if backend.kind == "local":
        return False
    try:
        backend.provision()
    except LlimaBoxError as exc:
        log.warning("automatic provisioning failed: %s", exc)
        return False
    return True


def shell(
    path: str | os.PathLike[str] | None = None,
    cmd: t.Sequence[str] = (),
    *,
    config: Config | None = None,
    overrides: Overrides | None = None,
    accept_host_key: bool = False,
    pty: bool | None = None,
    forward_agent: bool = False,
    shares: t.Sequence[str] = (),
    stdin: t.Any = None,
    stdout: t.Any = None,
    stderr: t.Any = None,
    environ: t.Mapping[str, str] = os.environ,
) -> int:
    """Run ``cmd`` (default: an interactive login shell) in the env of ``path``; return its exit status.

    ``path`` defaults to the working directory; when it lies inside the project of an existing
    env, that env is used and the command starts there. The env is made on first use (one round
    trip: the guest's ``enter`` creates it).

    :param pty: force a pseudo-terminal on (True) or off (False); default: when stdin and stdout are terminals.
    :param stdin: binary streams; ``None`` means this process's own.
    :param forward_agent: forward the SSH agent (also when the ``forward_agent`` key is set).
    :param shares: ``SRC[:DST][:ro|rw]`` specs added to the env first (:mod:`llimabox.shares`).
    :raises LlimaBoxError: llima-box itself failed (the CLI exits 125).
    """
    if config is None:
        from llimabox.config import load_config

        config = load_config(os.environ, overrides)
    forward_agent = forward_agent or config.forward_agent
    backend = open_backend(config, overrides, accept_host_key, start=True)
    try:
        target = shell_target(backend, path if path is not None else os.getcwd())
        given = share_args(backend, None, target.project, shares) if shares else []
        if not target.known:
            prepare_new(backend, config, target, given)
        elif given:
            backend.check_verb("create", target.name, target.project, *given, notes=True)
        if pty is None:
            pty = _isatty(stdin, sys.stdin) and _isatty(stdout, sys.stdout)
        use = Use.of(cmd)
        code = run_in_env(
            backend, target, cmd, environ=environ, use=use, pty=pty, forward_agent=forward_agent,
            stdin=stdin, stdout=stdout, stderr=stderr,
        )  # fmt: skip
        record_use(backend, target, code, use)
        return code
    finally:
        backend.close()


def prepare_new(backend: Backend, config: Config, target: ShellTarget, options: t.Sequence[str] = ()) -> None:
    """Before the first command in an env the state database does not know: make it with the config's network,
    limits, shares and secrets and ``options`` (one round trip, once), when there are any; else ``enter``
    makes it."""
    options = [*config_options(config), *share_args(backend, config, target.project), *options]
    flag, secrets = secret_input(config, target.project)
    if options or flag:
        backend.check_verb("create", target.name, target.project, *options, *flag, notes=True, input=secrets)


def run_in_env(
    backend: Backend,
    target: ShellTarget,
    cmd: t.Sequence[str],
    *,
    environ: t.Mapping[str, str],
    use: Use | None = None,
    **kwargs: t.Any,
) -> int:
    """Run ``cmd`` in ``target``'s env on an open backend (upgrading the guest side once if it must).

    ``kwargs`` go to :meth:`Backend.enter` (pty, forward_agent, the streams, cancel_fd). When llima-box
    fails, the env's record is settled and ``use`` logged here; else the caller does it (:func:`record_use`).
    """
    env = {k: v for k, v in environ.items() if guest.ENV_VARS.match(k)}
    if not target.known:
        _record_first_use(backend, target)
    try:
        try:
            return backend.enter(target.name, target.project, list(cmd), cwd=target.cwd, env=env, **kwargs)
        except GuestNotProvisioned:
            if not _try_upgrade(backend):
                raise
            return backend.enter(target.name, target.project, list(cmd), cwd=target.cwd, env=env, **kwargs)
    except LlimaBoxError as exc:
        refused = isinstance(exc, SessionRefused)  # nothing ran: the caller may try again
        record_use(backend, target, _SKIP_RECORD[-1], None if refused else use)
        raise


def _isatty(f: t.Any, default: t.Any) -> bool:
    f = f if f is not None else default
    try:
        return f is not None and os.isatty(f.fileno())
    except (AttributeError, OSError, ValueError):
        return False


def _ensure_current(backend: Backend) -> int | None:
    """Make sure the guest side is installed and not older than ours; provision when allowed."""
    try:
        version = backend.guest_version()
    except GuestNotProvisioned:
        if backend.kind == "local":
            raise
        version = None
    if version is not None and version >= guest.packaged_version():
        return version
    if backend.kind == "local" and version is None:
        raise GuestNotProvisioned(f"the llima-box guest side is not installed; run: {backend.provision_hint}")
    backend.provision()
    return backend.guest_version()


def create_options(network: str | None = None, memory: str | None = None, pids: int | None = None,
                   cpus: float | None = None, publish: t.Sequence[str] = (), home: str | None = None,
                   allow: t.Sequence[str] = (), idle_stop: int | None = None) -> list[str]:
    """The guest's ``create`` options for an env's network, ports, egress, home size, limits and idle
    stop (those given)."""
    args = ["--network", network] if network is not None else []
    if idle_stop is not None:
        args += ["--idle-stop", str(int(idle_stop))]
    for spec in publish:
        args += ["--publish", str(spec)]
    for host in allow:
        args += ["--allow", str(host).strip()]
    if home is not None:
        args += ["--home", str(home).strip()]
    if memory is not None:
        args += ["--memory", str(memory).strip()]
    if pids is not None:
        args += ["--pids", str(pids)]
    if cpus is not None:
        args += ["--cpus", f"{round(cpus, 2):g}"]
    return args


def share_args(backend: Backend, config: Config | None, project: str, given: t.Sequence[str] = ()) -> list[str]:
    """The guest's ``--share`` options: ``config``'s shares of ``project``, then ``given``; and where paths are
    this machine's, ``--try-share`` for the defaults (the git identity, a worktree's repository), which the
    guest leaves out rather than refuses."""
    from llimabox import shares
    from llimabox.config import project_shares

    specs = [*project_shares(config, project), *given] if config is not None else list(given)
    args = shares.share_options(specs, backend.local_paths)
    if config is not None and backend.local_paths:
        args += shares.share_options(shares.default_specs(project, config.git_identity), soft=True)
    return args


def secret_input(config: Config | None, project: str, environ: t.Mapping[str, str] = os.environ,
                 always: bool = False) -> tuple[list[str], bytes | None]:
    """The guest ``create``'s ``--secrets-from-stdin`` and its stdin: the secrets ``config`` grants to the env of
    ``project`` as JSON lines (an empty set clears the env's). Nothing when the config has no secrets (unless
    ``always``: an explicit ``create`` clears what an env kept). The values go on stdin, never in argv."""
    import json

    from llimabox.config import granted_secrets, secret_value

    if config is None or not (config.secrets or always):
        return [], None
    lines = [json.dumps({"name": s.name, "hosts": list(s.hosts), "header": s.header, "prefix": s.prefix,
                         "value": secret_value(s, environ), "env": s.env}) + "\n"
             for s in granted_secrets(config, project)]
    return ["--secrets-from-stdin"], "".join(lines).encode()


def config_options(config: Config) -> list[str]:
    allow = (config.env_allow or "").replace(",", " ").split()
    return create_options(config.env_network, config.env_memory, config.env_pids, config.env_cpus,
                          home=config.env_home, allow=allow, idle_stop=config.env_idle_stop or None)


def create(
    path: str | os.PathLike[str] | None = None,
    *,
    config: Config | None = None,
    overrides: Overrides | None = None,
    accept_host_key: bool = False,
    network: str | None = None,
    memory: str | None = None,
    pids: int | None = None,
    cpus: float | None = None,
    publish: t.Sequence[str] = (),
    home: str | None = None,
    allow: t.Sequence[str] = (),
    idle_stop: int | None = None,
    shares: t.Sequence[str] = (),
    unshare: t.Sequence[str] = (),
) -> str:
    """Create the env of ``path`` (default: the working directory) and return its name.

    Creating an env that exists already succeeds; limits given then apply to it at once (the sizes of
    its /tmp, /var/tmp and /dev/shm at its next start), its ``network`` (``isolated``, ``offline`` or
    ``shared``), ``publish`` (``INSIDE[:OUTSIDE]`` ports of an isolated env, always published), ``allow``
    (the only hosts an isolated env reaches, through its filtering proxy) and ``home`` (the size of its
    home's filesystem) cannot change; ``idle_stop`` (seconds without a process of the env's before the guest
    stops it, 0: never) can. What is not given keeps its value, or for
    a new env comes from the config (``env_network``, ``env_memory``, ``env_pids``, ``env_cpus``,
    ``env_home``, ``env_allow``, ``env_idle_stop``) or the guest's defaults. ``shares`` (``SRC[:DST][:ro|rw]``)
    are added, ``unshare`` (targets) removed, and the config's shares (``shares``, the project's
    ``[projects."PATH"]`` table, the git identity, a worktree's repository) applied, new env or not.
    """
    if config is None:
        from llimabox.config import load_config

        config = load_config(os.environ, overrides)
    backend = open_backend(config, overrides, accept_host_key, start=True)
    try:
        given = create_options(network, memory, pids, cpus, publish, home, allow, idle_stop)
        return create_in(backend, path if path is not None else os.getcwd(), given, config_options(config), config,
                         shares, unshare)
    finally:
        backend.close()


def create_in(backend: Backend, path: str | os.PathLike[str], options: t.Sequence[str] = (),
              new_options: t.Sequence[str] = (), config: Config | None = None, shares: t.Sequence[str] = (),
              unshare: t.Sequence[str] = ()) -> str:
    """:func:`create` on an open backend: ``options`` (the guest's ``create`` options) apply to the env
    whether new or not, ``new_options`` (the config's) to a new one when ``options`` are empty; the shares
    of ``config`` and ``shares`` are added and the targets ``unshare`` removed in either case."""
    project = _project(backend, path)
    added = share_args(backend, config, project, shares) + [a for dst in unshare for a in ("--unshare", dst)]
    flag, secrets = secret_input(config, project, always=config is not None)
    name = names.env_name(project)
    version = _ensure_current(backend)
    store = _open_store()
    try:
        store.touch(name)  # a state database we cannot write fails before the guest changes
        with store.changing_envs():
            if not options and new_options and store.get(name) is None:
                options = new_options
            backend.check_verb("create", name, project, *options, *added, *flag, notes=True, input=secrets)
            _upsert(store, backend, name, project, version)
    finally:
        store.close()
    return name


def _iso(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return value.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")
    return str(value)


def _reconcile(backend: Backend, live: list[guest.GuestEnv], records: t.Sequence[t.Any]) -> list[dict[str, t.Any]]:
    by_name = {rec.name: rec for rec in records}
    in_guest = {env.name: env for env in live}
    rows = []
    for name in sorted(set(by_name) | set(in_guest)):
        rec, env = by_name.get(name), in_guest.get(name)
        if rec is not None and env is not None:
            state = "running" if env.alive else "stopped"
        elif rec is not None:
            state = "missing-in-guest"
        else:
            state = "unknown-to-database"
        rows.append(
            {
                "name": name,
                "project": env.project if env is not None else rec.project,
                "status": state,
                "backend": backend.kind,
                "guest": backend.identity,
                "created_at": _iso(rec.created_at) if rec is not None else (env.created if env else None),
                "last_used_at": _iso(rec.last_used_at) if rec is not None else None,
                "mode": env.mode if env is not None and env.mode else None,
                "limits": env.limits if env is not None else None,
                "network": env.network if env is not None else None,
                "ports": env.ports if env is not None else None,
                "shares": env.shares if env is not None else None,
                **({"allow": env.allow, "refused": env.refused} if env is not None and env.allow else {}),
                **({"secrets": env.secrets} if env is not None and env.secrets else {}),
                "project_gone": env.project_gone if env is not None else False,
            }
        )
    return rows


def list_envs(
    *, config: Config | None = None, overrides: Overrides | None = None, accept_host_key: bool = False
) -> list[dict[str, t.Any]]:
    """List the envs of the configured guest, reconciling the guest's view with the state database.

    Each row: ``name``, ``project``, ``status`` (``running``, ``stopped``, ``missing-in-guest`` or
    ``unknown-to-database``), ``backend``, ``guest``, ``created_at``, ``last_used_at``, ``mode`` (how the
    project is mounted: ``idmap``, ``userns``, ``mapped``, ``shared-uid``), ``limits`` (``memory``,
    ``pids``, ``cpus``, ``enforced``; see the guest's ``list``), ``network`` (``isolated``, ``offline``,
    ``shared``), ``ports`` (``inside``, ``published``: an isolated env's ports on the guest's loopback),
    ``shares`` (``src``, ``dst``, ``mode`` ``ro``/``rw``, ``error``: why it did not mount at the last start) and,
    for an env with an allow-list, ``allow`` (its hosts) and ``refused`` (``time``, ``host``: the last its
    proxy refused).
    """
    backend = open_backend(config, overrides, accept_host_key)
    try:
        return list_in(backend)
    finally:
        backend.close()


def prune_plan(
    *, config: Config | None = None, overrides: Overrides | None = None, accept_host_key: bool = False
) -> list[dict[str, t.Any]]:
    """What :func:`prune` would do: rows of :func:`list_envs`, each with an ``action``: ``forget`` (a record
    of an env the guest no longer has), ``adopt`` (an env of yours the state database does not know) or
    ``delete`` (an env whose project is gone)."""
    rows = list_envs(config=config, overrides=overrides, accept_host_key=accept_host_key)
    actions = {"missing-in-guest": "forget", "unknown-to-database": "adopt"}
    plan = [{**row, "action": "delete" if row["project_gone"] else actions.get(row["status"])} for row in rows]
    return [row for row in plan if row["action"]]


def prune(
    plan: t.Sequence[t.Mapping[str, t.Any]],
    *,
    config: Config | None = None,
    overrides: Overrides | None = None,
    accept_host_key: bool = False,
) -> None:
    """Carry out a :func:`prune_plan`."""
    backend = open_backend(config, overrides, accept_host_key)
    store = _open_store()
    try:
        with store.changing_envs():
            for row in plan:
                if row["action"] == "delete":
                    _named_verb(backend, "delete", row["name"])
                if row["action"] in ("delete", "forget"):
                    store.delete(row["name"])
                elif row["action"] == "adopt":
                    _upsert(store, backend, row["name"], row["project"], None)
    finally:
        store.close()
        backend.close()


def refused_egress(
    *, config: Config | None = None, overrides: Overrides | None = None, accept_host_key: bool = False
) -> list[dict[str, t.Any]]:
    """What the filtering proxies of envs with an allow-list refused: ``name``, ``project``, ``time``, ``host``."""
    rows = list_envs(config=config, overrides=overrides, accept_host_key=accept_host_key)
    return [{"name": r["name"], "project": r["project"], **x} for r in rows for x in r.get("refused") or []]


def ports(
    path: str | os.PathLike[str] | None = None,
    *,
    config: Config | None = None,
    overrides: Overrides | None = None,
    accept_host_key: bool = False,
) -> list[dict[str, t.Any]]:
    """The published ports of every env, or of the env of ``path`` (its project or a directory inside).

    Each row: ``name``, ``project``, ``inside`` (the port in the env), ``published`` (where it is on the
    guest's loopback, and so, through Lima's port forwarding, on the host's; ``None``: a pinned port
    that was taken).
    """
    backend = open_backend(config, overrides, accept_host_key)
    try:
        rows = list_in(backend)
        if path is not None:
            where = _project(backend, path)
            rows = [r for r in rows if r["project"] == where or where.startswith(r["project"].rstrip("/") + "/")]
            if not rows:
                raise InvalidInput(f"no env for {where}")
            rows = [max(rows, key=lambda r: len(r["project"]))]  # the innermost project holding path
        return [{"name": r["name"], "project": r["project"], **p} for r in rows for p in r["ports"] or []]
    finally:
        backend.close()


def list_in(backend: Backend) -> list[dict[str, t.Any]]:
    """:func:`list_envs` on an open backend; none when there is no Lima VM yet."""
    from llimabox.lima.vm import VMMissing

    try:
        live = guest.parse_list(backend.check_verb("list"))
    except VMMissing:
        return []
    store = _open_store()
    try:
        records = list(store.all(guest=backend.identity))
    finally:
        store.close()
    return _reconcile(backend, live, records)


def names_an_env(target: str | None) -> bool:
    """Whether a PATH|NAME argument is an env's NAME: it looks like one and is no existing path."""
    return target is not None and names.NAME_RE.fullmatch(target) is not None and not os.path.exists(target)


def _delete_target(backend: Backend, store: Store, target: str | None) -> str:
    if names_an_env(target):
        return t.cast(str, target)
    where = _project(backend, target if target is not None else os.getcwd())
    rec = store.find_by_project(backend.identity, where)
    if rec is None and target is None:
        rec = store.find_containing(backend.identity, where)
    return rec.name if rec is not None else names.env_name(where)


def _named_verb(backend: Backend, verb: str, name: str, missing: str | None = None) -> bytes:
    """Run the guest's ``VERB NAME`` (delete, stop); return its stderr (notes).

    :param missing: raise :class:`EnvNotFound` with this message when the guest fails for want of the env.
    """
    from llimabox.backends.base import one_line

    code, _, err = backend.run_verb(verb, name)
    if code == 2:
        raise InvalidInput(one_line(err, f"guest {verb}: bad argument"))
    if code != 0 and missing is not None and b"llima-box-guest: no env " in err:
        raise EnvNotFound(missing)
    if code != 0:
        raise GuestScriptFailed(one_line(err, f"guest {verb} failed with exit status {code}"))
    return err


def delete(
    target: str | None = None,
    *,
    config: Config | None = None,
    overrides: Overrides | None = None,
    accept_host_key: bool = False,
) -> str:
    """Delete an env given by NAME or project PATH (default: the env containing the working directory).

    The project itself is never touched. Returns the deleted env's name.

    :raises EnvNotFound: neither the guest nor the state database knows it.
    """
    backend = open_backend(config, overrides, accept_host_key)
    store = _open_store()
    try:
        name = _delete_target(backend, store, target)
        with store.changing_envs():
            known = store.get(name) is not None
            if not known and name not in {env.name for env in guest.parse_list(backend.check_verb("list"))}:
                # maybe half-made (an interrupted create): the guest's delete cleans that up, and says
                # "nothing to delete" when there was nothing at all
                if b"llima-box-guest: no env " in _named_verb(backend, "delete", name):
                    raise EnvNotFound(f"no env {target or name!r} on {backend.identity}")
                return name
            _named_verb(backend, "delete", name)
            store.delete(name)
        return name
    finally:
        store.close()
        backend.close()


def stop(
    target: str | None = None,
    *,
    config: Config | None = None,
    overrides: Overrides | None = None,
    accept_host_key: bool = False,
) -> str:
    """Stop an env given by NAME or project PATH (default: the env containing the working directory).

    Every process of the env ends; its home, user and record stay, and the next ``shell`` starts it
    again. Returns the env's name.

    :raises EnvNotFound: the guest has no such env.
    """
    backend = open_backend(config, overrides, accept_host_key)
    store = _open_store()
    try:
        name = _delete_target(backend, store, target)
    finally:
        store.close()
    try:
        _named_verb(backend, "stop", name, missing=f"no env {target or name!r} on {backend.identity}")
        return name
    finally:
        backend.close()


def delete_all(
    *, config: Config | None = None, overrides: Overrides | None = None, accept_host_key: bool = False
) -> list[str]:
    """Delete every env of the configured guest (those it has and those the database remembers).

    :raises GuestScriptFailed: some could not be deleted (the others are).
    """
    backend = open_backend(config, overrides, accept_host_key)
    store = _open_store()
    try:
        with store.changing_envs():
            live = guest.parse_list(backend.check_verb("list"))
            todo = sorted({env.name for env in live} | {rec.name for rec in store.all(guest=backend.identity)})
            done, failed = [], []
            for name in todo:
                try:
                    backend.check_verb("delete", name)
                    done.append(name)
                except LlimaBoxError as exc:
                    failed.append(f"{name}: {exc}")
            store.delete_many(done)
        if failed:
            raise GuestScriptFailed(f"{len(failed)} env(s) not deleted: " + "; ".join(failed))
        return done
    finally:
        store.close()
        backend.close()


def status(
    *, config: Config | None = None, overrides: Overrides | None = None, accept_host_key: bool = False
) -> dict[str, t.Any]:
    """Report the backend, whether the guest is reachable and up to date, and the state database."""
    from llimabox import __version__, paths

    backend = open_backend(config, overrides, accept_host_key)  # a report: never boots the VM
    info: dict[str, t.Any] = {
        "version": __version__,
        "backend": backend.kind,
        "guest": backend.identity,
        "packaged_guest_version": guest.packaged_version(),
        "guest_version": None,
        "reachable": False,
        "provisioned": False,
        "up_to_date": False,
        "error": None,
        "state_dir": str(paths.state_dir()),
        "database": str(paths.db_path()),
        "schema_revision": None,
        "envs": None,
    }
    try:
        version = backend.guest_version()
        info.update(reachable=True, guest_version=version, provisioned=version is not None)
        info["up_to_date"] = version is not None and version >= info["packaged_guest_version"]
    except (HostKeyError, GuestAuthFailed):
        raise  # the user must act on these: never a line in a report
    except GuestNotProvisioned as exc:
        info.update(reachable=True, error=str(exc))
    except (GuestUnreachable, LlimaBoxError) as exc:
        info["error"] = str(exc)
    finally:
        backend.close()
    try:
        store = _open_store()
        try:
            info["schema_revision"] = store.schema_revision()
            info["envs"] = len(list(store.all(guest=backend.identity)))
        finally:
            store.close()
    except StateError as exc:
        info["error"] = info["error"] or str(exc)
    return info


def provision(
    *,
    user: str | None = None,
    roots: str | None = None,
    group: str | None = None,
    config: Config | None = None,
    overrides: Overrides | None = None,
    accept_host_key: bool = False,
) -> str:
    """Install or upgrade the guest side (scripts, sudoers rule, settings); return its summary line.

    :param user: the guest login user allowed to run the guest verbs (default: who we log in as).
    :param roots: ``:``-separated directories projects may live under (default: the guest's current
        setting, else ``/home``).
    :param group: also let every member of this group run the guest verbs, each with envs of their
        own (``""``: no group; default: the guest's current setting).

    The configuration's ``vm_packages`` are installed in the guest when missing (and recorded there, so
    every later run of the installer, at each boot of a Lima VM too, installs them again when missing),
    then its ``vm_setup`` script runs as root; the progress of both goes to stderr.

    :raises InvalidInput: a package name or the setup script is not acceptable (before anything runs).
    """
    from llimabox import tools

    if config is None:
        from llimabox.config import load_config

        config = load_config(os.environ, overrides)
    packages, setup = tools.checked(config.vm_packages, config.vm_setup)
    backend = open_backend(config, overrides, accept_host_key, start=True)
    try:
        return backend.provision(user=user, roots=roots, group=group, packages=packages, setup=setup)
    finally:
        backend.close()


#: The isolation battery, run inside the env as its user (guest-scripts/verify-env.py).
VERIFY_SCRIPT = f"{guest.GUEST_PREFIX}/lib/verify-env.py"


def verify(
    path: str | os.PathLike[str] | None = None,
    *,
    config: Config | None = None,
    overrides: Overrides | None = None,
    accept_host_key: bool = False,
) -> list[dict[str, t.Any]]:
    """Check from inside the env of ``path`` that it has every property of its isolation.

    :return: one ``{"check", "ok", "detail"}`` per property, in a fixed order.
    :raises GuestScriptFailed: the battery could not run in the env.
    """
    backend = open_backend(config, overrides, accept_host_key)
    try:
        return verify_in(backend, shell_target(backend, path if path is not None else os.getcwd()))
    finally:
        backend.close()


def verify_in(backend: Backend, target: ShellTarget) -> list[dict[str, t.Any]]:
    """:func:`verify` on an open backend, for the env of ``target``."""
    import json
    import tempfile

    from llimabox.backends.base import one_line

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, open(os.devnull, "rb") as null:
        code = run_in_env(backend, target, ["python3", "-I", "-S", VERIFY_SCRIPT, target.project], environ={},
                          stdin=null, stdout=out, stderr=err)
        out.seek(0)
        err.seek(0)
        lines, problem = out.read().decode("utf-8", "replace").splitlines(), err.read()
    record_use(backend, target, code)
    try:
        results = [json.loads(line) for line in lines]
    except ValueError:
        results = []
    if code not in (0, 1) or not results:
        raise GuestScriptFailed(one_line(problem, f"the isolation checks could not run in the env (exit {code})"))
    return results
