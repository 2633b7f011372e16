"""Hot-path benchmark skeleton: time ``llima-box shell -- true`` and the import cost.

Usage: python bench/run.py [--runs N] [-- extra llima-box global options...]
(e.g. ``python bench/run.py -- --backend ssh --host alice@127.0.0.1:2222 --identity key``)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def _time(argv: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=False)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def _report(label: str, times: list[float]) -> None:
    times.sort()
    print(f"{label:32} median {statistics.median(times):7.1f} ms   p90 {times[int(len(times) * 0.9) - 1]:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--project", default=os.getcwd())
    parser.add_argument("extra", nargs="*")
    opts = parser.parse_args()
    lb = [sys.executable, "-m", "llimabox", *opts.extra]
    _report("python -c pass", _time([sys.executable, "-c", "pass"], opts.runs))
    _report("llima-box --help", _time([*lb, "--help"], opts.runs))
    _report("llima-box shell -- true", _time([*lb, "shell", opts.project, "--", "true"], opts.runs))
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "llimabox", *opts.extra, "shell", "--help"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    heavy = [ln for ln in out.stderr.splitlines() if "paramiko" in ln or "sqlalchemy" in ln]
    print("heavy imports on `shell --help`:", "none" if not heavy else len(heavy))


if __name__ == "__main__":
    main()
