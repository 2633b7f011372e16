"""The fake ``limactl`` on PATH, a short ``LIMA_HOME`` and a host home Lima mounts (for tests/test_lima_*)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.guest import REPO, GuestUnavailable, check_prerequisites


class FakeLima:
    """A private world for the fake limactl: ``env`` is what to run llima-box and limactl with."""

    def __init__(self) -> None:
        check_prerequisites()
        self.dir = Path(tempfile.mkdtemp(prefix="lbl.", dir="/var/tmp"))  # short: Lima's socket paths
        self.home = Path(tempfile.mkdtemp(prefix="lbl-home.", dir="/mnt"))  # not a system dir: projects go here
        self.lima_home = self.dir / "l"
        bin_dir = self.dir / "bin"
        bin_dir.mkdir()
        fake = shlex.quote(str(REPO / "tests" / "fake_limactl.py"))
        wrapper = f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {fake} "$@"\n'
        (bin_dir / "limactl").write_text(wrapper)
        (bin_dir / "limactl").chmod(0o755)
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "LIMA_HOME": str(self.lima_home),
            "HOME": str(self.home),
            "LLIMA_BOX_HOME": str(self.dir / "state"),
            "LLIMA_BOX_MUX": "0",
            "LLIMA_BOX_IDE_ATTACH": "0",  # no pip in every fake VM: tests/test_serve_ide.py installs it once
            "PYTHONPATH": str(REPO),  # this checkout's llimabox, from any working directory
        }
        for var in ("SSH_AUTH_SOCK", "LLIMA_BOX_BACKEND", "LLIMA_BOX_HOST", "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
            self.env.pop(var, None)

    def limactl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["limactl", *args], env=self.env, capture_output=True, text=True, input=input,
                              timeout=300, check=False)

    lb_argv: t.ClassVar[list[str]] = [sys.executable, "-m", "llimabox"]

    def lb(self, *args: str, input: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*self.lb_argv, *args], env=self.env, capture_output=True, input=input, timeout=300,
                              check=False)

    def project(self, name: str) -> str:
        path = self.home / name
        path.mkdir()
        os.chown(path, 1501, 1501)  # the guest user's uid, as files of the host user are in a real Lima VM
        return str(path)

    def close(self) -> None:
        if self.lima_home.is_dir():
            for inst in self.lima_home.iterdir():
                if not inst.name.startswith("_"):
                    self.limactl("delete", "--force", inst.name)
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.home, ignore_errors=True)


def fake_lima() -> Iterator[FakeLima]:
    """For a fixture: a fake Lima world; every VM in it is deleted at the end."""
    try:
        f = FakeLima()
    except GuestUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield f
    finally:
        f.close()
