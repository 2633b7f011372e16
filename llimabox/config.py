"""Configuration: the TOML file, then ``LLIMA_BOX_<KEY>`` environment variables, then flags."""

from __future__ import annotations

import dataclasses
import os
import re
import typing as t

from llimabox import paths
from llimabox.errors import InvalidInput

__all__ = ["Config", "FIELDS", "Secret", "granted_secrets", "load_config", "project_shares"]

# key, type, default, description (README's configuration table is this table)
FIELDS: list[tuple[str, type, object, str]] = [
    ("backend", str, None, "lima, local or ssh; default: lima when limactl is on PATH, else local on Linux"),
    ("host", str, None, "ssh backend: user@host[:port]"),
    ("identity", str, None, "ssh backend: private key file (default: the SSH agent and ~/.ssh keys)"),
    ("known_hosts", str, "~/.ssh/known_hosts", "ssh backend: where host keys are checked and pinned"),
    ("forward_agent", bool, False, "forward the SSH agent into the env (like -A)"),
    ("connect_timeout", float, 10.0, "seconds to wait for the guest's SSH port"),
    ("env_network", str, None,
     "network of each new env: isolated (default: its own, outbound through NAT, ports published), offline "
     "(loopback only) or shared (the guest's)"),
    ("env_memory", str, None, "memory of each new env, e.g. 4G (default: 3/4 of the guest's; no swap)"),
    ("env_pids", int, None, "processes and threads of each new env (default: 4096)"),
    ("env_cpus", float, None, "CPUs each new env may use at most, e.g. 1.5 (default: no cap, an equal share)"),
    ("env_allow", str, None, "hosts each new env alone may reach, through a filtering proxy (comma-separated; "
     ".example.com: and its subdomains; default: no list, the internet)"),
    ("env_home", str, None, "size of each new env's home filesystem, e.g. 20G (default: a quarter of the disk)"),
    ("env_idle_stop", int, 0, "stop each new env once no process of it has run for this many seconds, checked "
     "once a minute where the guest runs systemd (0: never)"),
    ("shares", list, (), "host paths shown in every env, SRC[:DST][:ro|rw] (DST: the same path by default, ~/… "
     "the env's home; read-only by default); per project: a [projects.\"PATH\"] table's shares"),
    ("git_identity", bool, True, "show the host's ~/.gitconfig read-only as each env's ~/.gitconfig"),
    ("agent_install", str, "env", "where `run` installs a missing agent: env (npm into the env's ~/.local) or guest "
     "(npm into the guest's /usr/local, for every env, by provisioning); agents: [agents.NAME] tables"),
    ("vm_packages", list, (), "Debian/Ubuntu packages installed in the guest by provisioning (provision, vm provision, "
     "a new VM) and again at each boot when missing"),
    ("vm_setup", str, None, "a script of yours run as root in the guest after vm_packages, at each provisioning "
     "(not at boots)"),
    ("vm_name", str, "llima-box", "lima backend: the VM instance name"),
    ("lima_config", str, None, "lima backend: your own lima.yaml instead of the embedded one"),
    ("sudo", bool, True, "run the guest scripts through sudo -n (unless the guest user is root)"),
    ("mux", bool, True, "keep the guest connection open in a background process for `shell -- CMD`"),
    ("mux_idle", float, 600.0, "seconds the background connection stays open unused"),
    ("ide_attach", bool, True, "lima backend: install llima-box in the VM and run serve on its loopback for "
     "ssh-config (IDE attach; its Python packages come from PyPI)"),
    ("ide_port", int, 2242, "IDE attach: the port serve listens on, on the guest's loopback (ssh-config's Port)"),
    ("serve_group", str, "llima-box", "serve: only members of this group may log in"),
    ("serve_pam_service", str, "llima-box", "serve: the PAM service (passwords; account checks of key logins)"),
    ("serve_projects_root", str, "~", "serve: where an account's projects are (~ is its home, {user} its name)"),
    ("serve_default_project", str, None, "serve: the project a plain USER login lands in (default: refused)"),
    ("serve_authorized_keys", str, "~/.ssh/authorized_keys",
     "serve: an account's public keys (~ and {user} as above)"),
    ("serve_max_sessions", int, 10, "serve: concurrent sessions per account"),
    ("serve_idle_timeout", float, 3600.0, "serve: seconds without traffic before a session is closed (0: never)"),
    ("serve_login_grace", float, 30.0, "serve: seconds a connection may take to authenticate"),
    ("serve_max_startups", str, "30:30:100",
     "serve: unauthenticated connections in all, START:RATE:FULL as OpenSSH's MaxStartups (or N: none beyond N)"),
    ("serve_per_source_max_startups", int, 20,
     "serve: unauthenticated connections from one address (IPv6: one /64); 0: no limit"),
    ("serve_max_connections", int, 512, "serve: authenticated connections open at once"),
    ("serve_auth_delay", float, 0.5,
     "serve: delay after a failed password, doubled per further failure of that account from that address "
     "(up to 16 times, 8 s at most)"),
    ("serve_lockout_user", int, 10,
     "serve: failed passwords of one account from one address before those are locked out"),
    ("serve_lockout_source", int, 100,
     "serve: failed passwords from one address before its password logins are locked out "
     "(but of accounts that logged in from it lately)"),
    ("serve_lockout_seconds", float, 900.0, "serve: how long a lockout lasts (failures older than that are forgotten)"),
    ("serve_tcp_forwarding", bool, False,
     "serve: allow direct-tcpip (ssh -L) connections, each made from inside the login's env"),
    ("serve_sftp", bool, False, "serve: allow the sftp subsystem (runs sftp-server inside the env)"),
]


@dataclasses.dataclass(frozen=True)
class Secret:
    """A ``[secrets.NAME]`` table: where the value comes from (never the config file), the hosts it is
    sent to, how (a header, with a prefix such as ``Bearer ``), the variable the env gets (set to a
    placeholder) and the projects it is granted to (``*``: every env)."""

    name: str
    hosts: tuple[str, ...]
    header: str
    prefix: str
    env: str
    projects: tuple[str, ...]
    from_env: str | None = None
    from_file: str | None = None


@dataclasses.dataclass(frozen=True)
class Config:
    """The effective configuration."""

    backend: str | None = None
    host: str | None = None
    identity: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    forward_agent: bool = False
    connect_timeout: float = 10.0
    env_network: str | None = None
    env_memory: str | None = None
    env_pids: int | None = None
    env_cpus: float | None = None
    env_home: str | None = None
    env_allow: str | None = None
    env_idle_stop: int = 0
    shares: tuple[str, ...] = ()
    git_identity: bool = True
    agent_install: str = "env"
    vm_packages: tuple[str, ...] = ()
    vm_setup: str | None = None
    projects: tuple[tuple[str, tuple[str, ...]], ...] = ()
    agents: tuple[tuple[str, tuple[tuple[str, t.Any], ...]], ...] = ()
    secrets: tuple[Secret, ...] = ()
    vm_name: str = "llima-box"
    lima_config: str | None = None
    sudo: bool = True
    mux: bool = True
    mux_idle: float = 600.0
    ide_attach: bool = True
    ide_port: int = 2242
    serve_group: str = "llima-box"
    serve_pam_service: str = "llima-box"
    serve_projects_root: str = "~"
    serve_default_project: str | None = None
    serve_authorized_keys: str = "~/.ssh/authorized_keys"
    serve_max_sessions: int = 10
    serve_idle_timeout: float = 3600.0
    serve_login_grace: float = 30.0
    serve_max_startups: str = "30:30:100"
    serve_per_source_max_startups: int = 20
    serve_max_connections: int = 512
    serve_auth_delay: float = 0.5
    serve_lockout_user: int = 10
    serve_lockout_source: int = 100
    serve_lockout_seconds: float = 900.0
    serve_tcp_forwarding: bool = False
    serve_sftp: bool = False


_TYPES = {key: typ for key, typ, _, _ in FIELDS}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


#: numbers that must be above zero; every other number may not be negative
_POSITIVE = {"connect_timeout", "mux_idle", "serve_login_grace", "serve_max_sessions", "serve_max_connections",
             "env_pids", "env_cpus", "ide_port"}


def _coerce(key: str, value: object, where: str) -> object:
    number = _coerce_type(key, value, where)
    if isinstance(number, (int, float)) and not isinstance(number, bool):
        if number != number or number in (float("inf"), float("-inf")):
            raise InvalidInput(f"{where}: {key} must be a finite number, not {value!r}")
        if number < 0 or (number == 0 and key in _POSITIVE):
            raise InvalidInput(f"{where}: {key} must be {'above' if key in _POSITIVE else 'at least'} 0, not {value!r}")
    return number


def _coerce_type(key: str, value: object, where: str) -> object:
    typ = _TYPES[key]
    if key == "agent_install" and value not in ("env", "guest"):
        raise InvalidInput(f"{where}: agent_install is env or guest, not {value!r}")
    if typ is list:
        if isinstance(value, str):  # a variable: comma-separated
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise InvalidInput(f"{where}: {key} must be a list of strings, not {value!r}")
    if isinstance(value, str) and typ is not str:
        low = value.strip().lower()
        if typ is bool and low in _TRUE | _FALSE:
            return low in _TRUE
        if typ in (float, int):
            try:
                return typ(value)
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
    projects, agents, secrets = data.pop("projects", {}), data.pop("agents", {}), data.pop("secrets", {})
    for key in data:
        if key not in _TYPES:
            raise InvalidInput(f"{path}: unknown key {key!r} (known: {', '.join(_TYPES)}, projects, agents, "
                               "secrets)")
    for key, value in data.items():
        if _TYPES[key] is list and not isinstance(value, list):  # a string is a list only in a variable
            raise InvalidInput(f"{path}: {key} must be a list of strings, not {value!r}")
    values = {key: _coerce(key, value, str(path)) for key, value in data.items()}
    if projects:
        values["projects"] = _projects(projects, str(path))
    if agents:
        values["agents"] = _agents(agents, str(path))
    if secrets:
        values["secrets"] = _secrets(secrets, str(path))
    return values


_HOST = re.compile(r"([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
_HEADER = re.compile(r"([A-Za-z0-9-]+)(?::[ ]?([\x21-\x7e]+(?: [\x21-\x7e]+)*))?")
_VARIABLE = re.compile(r"[A-Z_][A-Z0-9_]*")
_SECRET_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SECRET_KEYS = {"hosts", "header", "from_env", "from_file", "env", "projects"}
#: headers that frame or route a request: a secret may not be sent as one
_FRAMING = {"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer", "keep-alive",
            "proxy-connection", "expect"}
#: variables the guest's enter sets itself: a secret's placeholder may not take their place
_RESERVED = re.compile(r"HOME|USER|LOGNAME|SHELL|PATH|TERM|LANG|COLORTERM|LC_.*|NPM_CONFIG_PREFIX"
                       r"|PIP_BREAK_SYSTEM_PACKAGES"
                       r"|(?i:https?_proxy|no_proxy)|SSL_CERT_FILE|SSL_CERT_DIR|REQUESTS_CA_BUNDLE|CURL_CA_BUNDLE"
                       r"|NODE_EXTRA_CA_CERTS|NODE_OPTIONS|GIT_SSL_CAINFO|GIT_.*|SSH_AUTH_SOCK|LD_.*|PYTHON.*|PERL.*"
                       r"|BASH_ENV|ENV")


def _secrets(tables: object, where: str) -> tuple[Secret, ...]:
    """``[secrets.NAME]`` tables (see :class:`Secret`)."""
    if not isinstance(tables, dict):
        raise InvalidInput(f"{where}: secrets must be a table of [secrets.NAME] tables")
    out = []
    for name, table in tables.items():
        lead = f"{where}: [secrets.{name}]"
        if not _SECRET_NAME.fullmatch(str(name)):
            raise InvalidInput(f"{lead}: a secret's name is letters, digits, '_', '.' or '-'")
        if not isinstance(table, dict):
            raise InvalidInput(f"{lead} must be a table")
        if "value" in table:
            raise InvalidInput(f"{lead}: a value never goes in the config file: use from_env or from_file")
        unknown = set(table) - _SECRET_KEYS
        if unknown:
            raise InvalidInput(f"{lead}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(_SECRET_KEYS))})")
        for key in ("hosts", "projects"):
            value = table.get(key)
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
                raise InvalidInput(f"{lead}: {key} must be a non-empty list of strings")
        for key in ("header", "env", "from_env", "from_file"):
            if key in table and not isinstance(table[key], str):
                raise InvalidInput(f"{lead}: {key} must be a string")
        for host in table["hosts"]:
            if not (_HOST.fullmatch(host) and len(host) <= 253):
                raise InvalidInput(f"{lead}: hosts takes host names such as api.example.com (lowercase, exact), "
                                   f"not {host!r}")
        header = _HEADER.fullmatch(table.get("header", ""))
        if header is None or header.group(1).lower() in _FRAMING:
            raise InvalidInput(f"{lead}: header is a header name, optionally with a prefix (\"x-api-key\", "
                               f"\"Authorization: Bearer\"), not {table.get('header')!r}")
        prefix = f"{header.group(2)} " if header.group(2) else ""
        env = table.get("env", "")
        if not _VARIABLE.fullmatch(env) or _RESERVED.fullmatch(env):
            raise InvalidInput(f"{lead}: env is the variable the env gets (such as ANTHROPIC_API_KEY; not one "
                               f"llima-box sets itself), not {env!r}")
        if ("from_env" in table) == ("from_file" in table):
            raise InvalidInput(f"{lead}: give exactly one of from_env (a variable of yours) or from_file (a file "
                               f"of yours)")
        if "from_env" in table and not _VARIABLE.fullmatch(table["from_env"]):
            raise InvalidInput(f"{lead}: from_env is a variable name, not {table['from_env']!r}")
        projects = tuple("*" if p == "*" else os.path.normpath(os.path.expanduser(p)) for p in table["projects"])
        out.append(Secret(str(name), tuple(table["hosts"]), header.group(1), prefix, env, projects,
                          table.get("from_env"), table.get("from_file")))
    return tuple(out)


def secret_value(secret: Secret, environ: t.Mapping[str, str] = os.environ) -> str:
    """The value of ``secret``: its variable's, or its file's first line (checked printable, at most 8 KiB)."""
    lead = f"secret {secret.name}"
    if secret.from_env is not None:
        value = environ.get(secret.from_env)
        if value is None:
            raise InvalidInput(f"{lead}: the variable {secret.from_env} is not set")
    else:
        path = os.path.expanduser(t.cast(str, secret.from_file))
        try:
            with open(path, "rb") as f:
                raw = f.read(16 * 1024)
        except OSError as e:
            raise InvalidInput(f"{lead}: cannot read {path}: {e.strerror}") from None
        value = raw.decode("ascii", "replace").split("\n", 1)[0].removesuffix("\r")
    if not value or len(value) > 8192 or not all(" " <= c <= "~" for c in value):
        raise InvalidInput(f"{lead}: the value must be printable ASCII on one line, at most 8 KiB")
    return value


def granted_secrets(config: Config, project: str) -> list[Secret]:
    """The secrets ``config`` grants to the env of ``project`` (``projects = ["*"]``: every env's)."""
    real = os.path.realpath(project)
    return [s for s in config.secrets if "*" in s.projects or any(os.path.realpath(p) == real for p in s.projects)]


_AGENT_KEYS = {"command": str, "package": str, "shares": list, "env": list}


def _agents(tables: object, where: str) -> tuple[tuple[str, tuple[tuple[str, t.Any], ...]], ...]:
    """``[agents.NAME]`` tables: ``command``, ``package`` (npm), ``shares``, ``env`` (VAR=VALUE) of an agent
    for ``run`` (overriding a built-in one's, or a new one)."""
    if not isinstance(tables, dict):
        raise InvalidInput(f"{where}: agents must be a table of [agents.NAME] tables")
    out = []
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise InvalidInput(f"{where}: [agents.{name}] must be a table")
        items = []
        for key, value in table.items():
            typ = _AGENT_KEYS.get(key)
            ok = isinstance(value, str) if typ is str else isinstance(value, list) and all(
                isinstance(v, str) for v in value)
            if typ is None or not ok:
                raise InvalidInput(f"{where}: [agents.{name}] {key}: want command, package (strings), shares or "
                                   f"env (lists of strings), not {key} = {value!r}")
            items.append((key, tuple(value) if typ is list else value))
        out.append((str(name), tuple(items)))
    return tuple(out)


def _projects(tables: object, where: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``[projects."PATH"]`` tables: each may hold ``shares`` (for the env of that project only)."""
    if not isinstance(tables, dict):
        raise InvalidInput(f"{where}: projects must be a table of [projects.\"PATH\"] tables")
    out = []
    for project, table in tables.items():
        if not isinstance(table, dict) or set(table) - {"shares"}:
            raise InvalidInput(f"{where}: [projects.{project!r}] may hold only shares")
        shares = table.get("shares", [])
        if not isinstance(shares, list):
            raise InvalidInput(f"{where}: [projects.{project!r}] shares must be a list of strings")
        shares = _coerce("shares", shares, f"{where}: [projects.{project!r}]")
        out.append((os.path.normpath(os.path.expanduser(project)), t.cast(tuple, shares)))
    return tuple(out)


def project_shares(config: Config, project: str) -> tuple[str, ...]:
    """The shares of ``project``: the config's ``shares``, then those of its ``[projects."PATH"]`` table."""
    own = [shares for path, shares in config.projects if os.path.realpath(path) == os.path.realpath(project)]
    return config.shares + tuple(s for group in own for s in group)


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
