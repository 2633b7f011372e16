"""Guest-side benchmark: env create and enter against bare unshare/nsenter, in one run.

Boots the copy-on-write test guest (tests/guest.py; needs root), then prints medians and ratios:

    python bench/guest_verbs.py [--runs N]

All commands run inside the guest as root, so the ratios compare the guest scripts with the
kernel work they wrap (useradd + namespace setup; a bare nsenter into saved namespaces).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.guest import PREFIX, Guest


def timed(guest: Guest, script: str) -> float:
    """Seconds one shell script takes inside the guest (measured there, without nsenter overhead)."""
    r = guest.sh(f"s=$(date +%s%N); {script} >/dev/null 2>&1; e=$(date +%s%N); echo $((e - s))")
    return int(r.stdout.split()[-1]) / 1e9


def median(guest: Guest, make_script, runs: int) -> float:
    return statistics.median(timed(guest, make_script(i)) for i in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    with Guest() as g:
        project = g.make_project("alice", "bench")
        bare_create = median(g, lambda i: (
            f"useradd -M -K UID_MIN=300000 -K UID_MAX=399999 -K SUB_UID_COUNT=0 -K SUB_GID_COUNT=0 b{i}; "
            "unshare --mount --pid --ipc --uts --fork --propagation private "
            "sh -c 'mount -t tmpfs t /mnt; mount -t proc p /mnt'"), runs)
        create = median(g, lambda i: f"{PREFIX}/create lb-bench{i} {project}", runs)
        g.sh("unshare --mount --pid --ipc --uts --fork --propagation private sleep 600 >/dev/null 2>&1 & "
             "sleep 0.2; echo $(pgrep -n -x sleep) > /run/bare.pid")
        bare_enter = median(g, lambda i: "nsenter -t $(cat /run/bare.pid) -m -p -i -u true", runs)
        enter = median(g, lambda i: f"{PREFIX}/enter lb-bench0 {project} -- true", runs)
    print(f"{'what':<28}{'median ms':>10}{'baseline ms':>13}{'ratio':>8}")
    print(f"{'create new env':<28}{create * 1e3:>10.1f}{bare_create * 1e3:>13.1f}{create / bare_create:>8.2f}")
    print(f"{'enter warm env':<28}{enter * 1e3:>10.1f}{bare_enter * 1e3:>13.1f}{enter / bare_enter:>8.2f}")
    print(f"enter adds {(enter - bare_enter) * 1e3:.1f} ms over a bare nsenter (goal: 10 ms); "
          f"create takes {create:.3f} s (goal: 0.4 s)")


if __name__ == "__main__":
    main()
