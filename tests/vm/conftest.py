"""The real-VM tier: one QEMU VM for the session (see tests/vm/machine.py).

A missing prerequisite (not root, no qemu, no mmdebstrap, no Debian mirror for the image build) fails the
run with the reason; it never becomes a skip. ``LLIMA_BOX_VM_KERNEL=backports`` boots bookworm-backports'
kernel instead of bookworm's.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator

import pytest

from tests.vm.lb import LB
from tests.vm.machine import VM, VMUnavailable


@pytest.fixture(scope="session")
def vm() -> Iterator[VM]:
    t0 = time.monotonic()
    try:
        machine = VM(kernel=os.environ.get("LLIMA_BOX_VM_KERNEL", "stable"))
    except VMUnavailable as e:
        pytest.fail(f"real VM unavailable: {e}", pytrace=False)
    with machine:
        print(f"\nreal VM: {machine.accel}, kernel {machine.kernel_version}, ready in "
              f"{time.monotonic() - t0:.0f} s (ssh {machine.timings['ssh']:.0f} s)", file=sys.stderr)
        yield machine


@pytest.fixture(scope="session")
def lb(vm: VM, tmp_path_factory: pytest.TempPathFactory) -> LB:
    """This checkout's llima-box on "the user's machine", its guest the VM (host key accepted on first use)."""
    runner = LB(vm, tmp_path_factory.mktemp("lbhome"))
    first = runner("--accept-host-key", "status", "--json")
    assert first.returncode == 0, first.stderr
    return runner
