"""Drive ``llima-box`` (this checkout's, over the ssh backend) against the real VM, as a user's machine would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing as t
from pathlib import Path

from tests.vm.machine import VM

REPO = Path(__file__).resolve().parents[2]


class LB:
    """Runs ``python -m llimabox --backend ssh`` with a state dir of its own."""

    def __init__(self, vm: VM, home: Path) -> None:
        self.vm = vm
        self.env = {**os.environ, "LLIMA_BOX_HOME": str(home), "LLIMA_BOX_KNOWN_HOSTS": str(home / "known_hosts"),
                    "PYTHONPATH": str(REPO)}  # fmt: skip
        self.env.pop("SSH_AUTH_SOCK", None)
        self.base = [sys.executable, "-m", "llimabox", "--backend", "ssh",
                     "--host", f"{vm.user}@127.0.0.1:{vm.port}", "--identity", str(vm.key)]  # fmt: skip

    def __call__(self, *args: str, input: bytes | None = b"", timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([*self.base, *args], input=input, capture_output=True, env=self.env,
                              timeout=timeout, check=False, cwd=REPO)  # fmt: skip

    def shell(self, project: str | Path, script: str, **kw: t.Any) -> subprocess.CompletedProcess:
        return self("shell", str(project), "--", "sh", "-c", script, **kw)

    def json(self, *args: str) -> t.Any:
        r = self(*args, "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def guest_envs(self) -> dict[str, dict]:
        """The guest's own ``list`` verb (it alone reports ``mode``): name → its line."""
        r = self.vm.ssh("sudo -n /usr/local/libexec/llima-box/list", timeout=60)
        assert r.returncode == 0, r.stderr
        return {e["name"]: e for e in map(json.loads, r.stdout.splitlines())}
