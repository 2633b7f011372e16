"""What every backend (where the guest is, and how to reach it) provides."""

from __future__ import annotations

import abc
import logging
import typing as t

from llimabox import guest
from llimabox.errors import GuestScriptFailed

__all__ = ["Backend", "ProgressRelay", "one_line"]


def one_line(stderr: bytes, default: str) -> str:
    """The last non-empty line of a verb's stderr, or ``default``."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else default


class Backend(abc.ABC):
    """A guest reachable by some means.

    :ivar kind: ``"local"`` or ``"ssh"`` (what the state database records as backend).
    :ivar identity: which guest this is, e.g. ``"local"`` or ``"ssh:alice@127.0.0.1:2222"``.
    :ivar local_paths: whether project paths are checked on this machine (same file system).
    """

    kind: str = ""
    identity: str = ""
    local_paths: bool = True
    #: The fix shown when the guest side is missing.
    provision_hint: str = "llima-box provision"
    #: Whether first use may create or start the guest (the Lima VM): only commands that make or enter envs
    #: (and provisioning) turn it on; the others say the VM is missing or stopped.
    start_on_demand: bool = False

    @abc.abstractmethod
    def run_verb(self, verb: str, *args: str, input: bytes | None = None) -> tuple[int, bytes, bytes]:
        """Run a management verb and return ``(exit status, stdout, stderr)``; ``input``: its stdin (else
        none), for what must not be in its argv (``create --secrets-from-stdin``)."""

    @abc.abstractmethod
    def enter(
        self,
        name: str,
        project: str,
        cmd: t.Sequence[str] = (),
        cwd: str | None = None,
        env: t.Mapping[str, str] | None = None,
        pty: bool = False,
        forward_agent: bool = False,
        stdin: t.Any = None,
        stdout: t.Any = None,
        stderr: t.Any = None,
        cancel_fd: int | None = None,
    ) -> int:
        """Run ``cmd`` (default: a login shell) in the env, creating it on demand; return its status.

        :param cancel_fd: when this descriptor turns readable (e.g. the client that asked hung up),
            the command is abandoned: its session closed or its process terminated.
        :raises GuestNotProvisioned: the guest scripts are missing or sudo refuses them.
        """

    @abc.abstractmethod
    def provision(
        self,
        user: str | None = None,
        roots: str | None = None,
        group: str | None = None,
        packages: t.Sequence[str] | None = None,
        setup: str | None = None,
    ) -> str:
        """Install or upgrade the guest side; return its last line of output.

        The installer's progress (each stage, the setup script's output) goes to stderr as it comes.

        :param group: also let the members of this group run the guest verbs (``""``: no group;
            ``None``: keep the guest's setting).
        :param packages: Debian/Ubuntu packages to install when missing, and to record for every later run
            (``None``: keep the guest's record; ``()``: none).
        :param setup: a script on this machine, run as root in the guest after the packages, this time.
        :raises InvalidInput: a package name or the setup script is not acceptable (nothing ran).
        """

    def guest_version(self) -> int | None:
        """The guest-scripts version installed in the guest, ``None`` when not installed/runnable."""
        code, out, _err = self.run_verb("version")
        if code != 0:
            return None
        return guest.parse_version(out)

    def ready(self) -> bool:
        """Whether connecting needs no slow preparation first (such as creating or booting a VM)."""
        return True

    def connect(self) -> None:
        """Open the connection now rather than on first use (for callers that share the backend)."""

    def healthy(self) -> bool:
        """Whether a kept backend can serve another command (its connection, if any, is alive)."""
        return True

    def close(self) -> None:
        """Release connections (safe to call twice)."""

    def check_verb(self, verb: str, *args: str, notes: bool = False, input: bytes | None = None) -> bytes:
        """Run a verb, return stdout; raise on a non-zero exit (2 → InvalidInput). ``notes``: pass the
        guest's notes of a success (its ``llima-box-guest: …`` lines on stderr) on as warnings."""
        from llimabox.errors import InvalidInput

        code, out, err = self.run_verb(verb, *args, input=input) if input is not None else self.run_verb(verb, *args)
        if code == 2:
            raise InvalidInput(one_line(err, f"guest {verb}: bad argument"))
        if code != 0:
            raise GuestScriptFailed(one_line(err, f"guest {verb} failed with exit status {code}"))
        if notes:
            for line in err.decode("utf-8", "replace").splitlines():
                if line.startswith("llima-box-guest: "):
                    logging.getLogger("llimabox").warning("%s", line.removeprefix("llima-box-guest: "))
        return out


class ProgressRelay:
    """The installer's stderr, as a binary file: its progress shown line by line as it comes.

    Its own ``llima-box-provision: …`` lines (warnings, and on failure the reason, always last) are held
    back: :meth:`finish` returns the reason and shows the rest, so a failure is told once, as the error.
    """

    HELD = ("llima-box-provision: ", "sudo:")

    def __init__(self, out: t.Any = None) -> None:
        import sys

        self.out = out if out is not None else sys.stderr
        self.head = b""  # the first bytes, for telling sudo's refusal
        self.held: list[str] = []
        self._buf = b""

    def fileno(self) -> int:
        raise OSError("not a real file")

    def write(self, data: bytes) -> None:
        if len(self.head) < 64:
            self.head += data[: 64 - len(self.head)]
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            self._line(line.decode("utf-8", "replace").rstrip())

    def flush(self) -> None:
        return None

    def _line(self, text: str) -> None:
        if text.startswith(self.HELD):
            self.held.append(text)
        elif text:
            self.out.write(text + "\n")
            self.out.flush()

    def finish(self, failed: bool) -> str:
        """Show what was held (but the reason of a failure); return that reason (``""`` when none)."""
        if self._buf:
            self._line(self._buf.decode("utf-8", "replace").rstrip())
            self._buf = b""
        reason = self.held.pop() if failed and self.held else ""
        for line in self.held:
            self.out.write(line + "\n")
        self.held = []
        self.out.flush()
        return reason
