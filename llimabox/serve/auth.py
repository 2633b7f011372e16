"""Authentication for ``serve``: PAM passwords, authorized keys, and rate limiting.

Failed passwords are counted per (account, source address) and per source address. Each
failure delays the answer (``serve_auth_delay``, doubled per further failure of that account
from that address, up to 16 times that, at most 8 s). ``serve_lockout_user`` failures of one
account from one address lock that account's passwords out *from that address*;
``serve_lockout_source`` failures from one address lock its password logins out, except for
accounts that logged in from it within the window. Attempts while locked are not counted, so
one client that keeps guessing locks out no one else; public keys are never locked out.

Names that may not log in (unknown, not in the group, root, malformed) still cost a PAM check:
that of the dummy account :data:`DUMMY_ACCOUNT` (made by provisioning, with a hash of the
system's method), so the time of a refusal does not tell which names exist.
"""

from __future__ import annotations

import base64
import binascii
import collections
import logging
import os
import stat
import threading
import time
import typing as t

from llimabox.serve.accounts import Account, Refused, expand, lookup_account, parse_login
from llimabox.serve.limits import source_key

if t.TYPE_CHECKING:
    import paramiko

    from llimabox.config import Config
    from llimabox.serve.audit import Audit

__all__ = ["DUMMY_ACCOUNT", "RateLimiter", "Authenticator", "authorized_keys", "pam_account"]

log = logging.getLogger("llimabox.serve")
DUMMY_ACCOUNT = "llima-box-nobody"
_MAX_DELAY = 8.0
_MAX_KEYS = 100_000
_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
              "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")


class RateLimiter:
    """Failed passwords per (account, source) and per source within a sliding window; thread-safe.

    Sources are counted by :func:`limits.source_key` (an IPv6 /64 is one source).
    """

    def __init__(self, per_login: int, per_source: int, window: float, base_delay: float,
                 clock: t.Callable[[], float] = time.monotonic) -> None:
        self.per_login, self.per_source = per_login, per_source
        self.window, self.base_delay, self.clock = window, base_delay, clock
        self._fails: dict[tuple[str, ...], collections.deque[float]] = {}
        self._logins: dict[tuple[str, str], float] = {}  # (account, source) -> last successful login
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, ...], now: float) -> collections.deque[float]:
        if len(self._fails) > _MAX_KEYS:  # made-up user names must not grow this without bound
            self._fails = {k: v for k, v in self._fails.items() if v and v[-1] > now - self.window}
        fails = self._fails.setdefault(key, collections.deque())
        while fails and fails[0] <= now - self.window:
            fails.popleft()
        return fails

    def locked(self, user: str, address: str) -> str | None:
        """``"account"`` (this account from this source) or ``"source"`` when locked out now, else None."""
        now, source = self.clock(), source_key(address)
        with self._lock:
            if len(self._recent(("login", user, source), now)) >= self.per_login > 0:
                return "account"
            if len(self._recent(("source", source), now)) >= self.per_source > 0:
                if self._logins.get((user, source), -self.window) <= now - self.window:
                    return "source"
        return None

    def failure(self, user: str, address: str) -> float:
        """Count a failed password; return how long to delay the answer."""
        now, source = self.clock(), source_key(address)
        with self._lock:
            fails = self._recent(("login", user, source), now)
            fails.append(now)
            self._recent(("source", source), now).append(now)
        return self.delay(len(fails))

    def delay(self, failures: int) -> float:
        """The delay after the ``failures``-th failure in a row."""
        return min(self.base_delay * 2 ** min(max(failures, 1) - 1, 4), _MAX_DELAY)

    def success(self, user: str, address: str) -> None:
        """A login forgets the failures of the account from that source (not the source's) and exempts
        the account from that source's lockout for the window."""
        now, source = self.clock(), source_key(address)
        with self._lock:
            self._fails.pop(("login", user, source), None)
            if len(self._logins) > _MAX_KEYS:
                self._logins = {k: v for k, v in self._logins.items() if v > now - self.window}
            self._logins[(user, source)] = now


def authorized_keys(path: str, account: Account) -> list[tuple[str, bytes]]:
    """(type, blob) of the keys in an authorized_keys file.

    The file must be a regular file owned by the account or root and not writable by group or
    others (or it is ignored). Lines with options (``command=``, ``from=``, …) are skipped:
    serve cannot honour them, so it does not accept those keys at all.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return []
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid not in (0, account.uid) or st.st_mode & 0o022:
            log.warning("ignoring %s: not a regular file of %s, or writable by others", path, account.name)
            return []
        data = f.read(1 << 20)
    keys = []
    for raw in data.decode("utf-8", "replace").splitlines():
        parts = raw.strip().split()
        if len(parts) < 2 or parts[0] not in _KEY_TYPES:
            continue
        try:
            keys.append((parts[0], base64.b64decode(parts[1], validate=True)))
        except (binascii.Error, ValueError):
            continue
    return keys


def pam_account(name: str, service: str) -> str | None:
    """PAM account management alone (``pam_acct_mgmt``), as sshd runs it for a key login.

    Returns None when the account may log in now, else PAM's reason (expired, /etc/nologin, ...).
    """
    import ctypes

    import pam
    from pam.__internals import PamConv, PamHandle, conv_func

    @conv_func
    def no_conversation(n: int, messages: t.Any, responses: t.Any, data: t.Any) -> int:
        return pam.PAM_CONV_ERR  # a key login has nobody to answer prompts; notices are dropped

    lib = pam.PamAuthenticator()
    handle = PamHandle()
    conv = PamConv(no_conversation, 0)
    code = lib.pam_start(service.encode(), name.encode(), ctypes.byref(conv), ctypes.byref(handle))
    if code != pam.PAM_SUCCESS:
        return f"PAM could not start service {service} ({code})"
    try:
        code = lib.pam_acct_mgmt(handle, pam.PAM_SILENT)
        return None if code == pam.PAM_SUCCESS else lib.pam_strerror(handle, code).decode(errors="replace")
    finally:
        lib.pam_end(handle, code)


class Authenticator:
    """Decides logins and records each attempt in the audit log."""

    def __init__(self, config: Config, audit: Audit) -> None:
        self.config, self.audit = config, audit
        self.limiter = RateLimiter(config.serve_lockout_user, config.serve_lockout_source,
                                   config.serve_lockout_seconds, config.serve_auth_delay)

    def _fail(self, login: str, user: str, source: str, method: str, result: str, detail: str) -> None:
        self.audit.auth(login, user, source, method, result, detail)
        delay = self.limiter.failure(user, source)
        if delay:
            time.sleep(delay)

    def _pam(self, name: str, password: str) -> tuple[bool, str]:
        """PAM's authentication stack of service ``serve_pam_service``: (success, PAM's reason)."""
        import pam

        checker = pam.PamAuthenticator()
        ok = checker.authenticate(name, password, service=self.config.serve_pam_service, resetcreds=False)
        return bool(ok), str(checker.reason or "")[:200]

    def password(self, login: str, password: str, source: str, method: str = "password") -> Account | None:
        """Check a password through PAM; names that may not log in cost a PAM check too (the dummy's)."""
        user = login.partition("+")[0]
        locked = self.limiter.locked(user, source)
        if locked:  # not counted: guessing on does not extend the lockout or spread it to the source
            self.audit.auth(login, user, source, method, "locked", f"{locked} locked out")
            time.sleep(self.limiter.delay(16))
            return None
        try:
            parse_login(login)
            account = lookup_account(user, self.config.serve_group)
        except Refused as exc:
            self._pam(DUMMY_ACCOUNT, password)  # the same work as a member's wrong password
            self._fail(login, user, source, method, "refused", str(exc))
            return None
        ok, reason = self._pam(account.name, password)
        if ok:
            self.limiter.success(account.name, source)
            self.audit.auth(login, account.name, source, method, "success", None)
            return account
        self._fail(login, account.name, source, method, "failure", reason)
        return None

    def public_key(self, login: str, key: paramiko.PKey, source: str) -> Account | None:
        """Whether ``key`` is in the account's authorized keys (failures are recorded, not counted).

        Failed passwords never lock a key out: guessing proves nothing against a key.
        """
        user = login.partition("+")[0]
        try:
            parse_login(login)
            account = lookup_account(user, self.config.serve_group)
            path = expand(self.config.serve_authorized_keys, account)
        except Refused as exc:
            self.audit.auth(login, user, source, "publickey", "refused", str(exc))
            return None
        blob = key.asbytes()
        if not any(known == blob for _, known in authorized_keys(path, account)):
            self.audit.auth(login, user, source, "publickey", "failure", key.fingerprint)
            return None
        refused = pam_account(account.name, self.config.serve_pam_service)
        if refused is not None:
            self.audit.auth(login, user, source, "publickey", "refused", f"{refused}: {key.fingerprint}"[:200])
            return None
        return account
