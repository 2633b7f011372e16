"""Progress of a long limactl command: a spinner line on a terminal, plain log lines otherwise."""

from __future__ import annotations

import collections
import subprocess
import sys
import threading
import time
import typing as t

from llimabox.lima.limactl import log_message

__all__ = ["run_with_progress"]

_SPIN = "|/-\\"


def _elapsed(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def run_with_progress(
    argv: t.Sequence[str], title: str, env: t.Mapping[str, str], out: t.Any = None, keep: int = 30
) -> tuple[int, list[str]]:
    """Run ``argv`` (limactl), showing its log messages as progress; return its status and last messages."""
    out = out if out is not None else sys.stderr
    tty = hasattr(out, "isatty") and out.isatty()
    start = time.monotonic()
    tail: collections.deque[str] = collections.deque(maxlen=keep)
    phase = ["starting"]
    done = threading.Event()

    def spin() -> None:
        i = 0
        while True:  # the first frame at once, then every 0.2 s
            line = f"{_SPIN[i % 4]} {title}: {phase[0]} ({_elapsed(time.monotonic() - start)})"
            out.write("\r\033[K" + line[:200])
            out.flush()
            i += 1
            if done.wait(0.2):
                return

    proc = subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=dict(env), text=True, errors="replace",
    )  # fmt: skip
    spinner = threading.Thread(target=spin, daemon=True) if tty else None
    if spinner:
        spinner.start()
    else:
        out.write(f"llima-box: {title}: running {' '.join(argv[:2])} (this takes minutes the first time)\n")
        out.flush()
    assert proc.stdout is not None
    for line in proc.stdout:
        msg = log_message(line.rstrip("\n"))
        if not msg:
            continue
        tail.append(msg)
        phase[0] = msg
        if not tty:
            out.write(f"llima-box: {title}: [{_elapsed(time.monotonic() - start)}] {msg}\n")
            out.flush()
    code = proc.wait()
    done.set()
    if spinner:
        spinner.join()
        out.write("\r\033[K")
        out.write(f"{title}: {'ready' if code == 0 else 'failed'} after {_elapsed(time.monotonic() - start)}\n")
        out.flush()
    return code, list(tail)
