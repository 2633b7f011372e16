"""The benchmarks' quick mode runs in CI so they never rot (timings are printed, never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "run.py"


def test_quick_benchmark_runs_and_prints_every_row() -> None:
    r = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=900,
                       check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    for row in ("B1 warm", "B2 cold", "B3 create", "B4 exec with 10 envs", "B4 list --json, 10 envs",
                "B4 idle env memory", "B5 local", "B6 serve p50", "B6 serve failures"):
        assert row in r.stdout, (row, r.stdout)
