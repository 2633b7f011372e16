"""Network modes of an env against `shared` (the guest's own network), in one run in the test guest.

Boots the copy-on-write test guest (tests/guest.py; needs root) and prints one table:

    python bench/network.py [--runs N] [--megabytes N]

For each mode (shared, isolated, offline): the exec latency of `enter NAME P -- true` (timed in the guest, as
alice); 100 MB over HTTP from a server in the env to a client in the guest (for isolated through the port
ports.py publishes; offline has no way out); the download of one package from this machine's package index
(its host read from pip's configuration) from inside the env; and the memory an idle isolated env's network
helpers hold (pasta and ports.py, resident set).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.run import timed_in_guest
from tests.guest import PREFIX, Guest
from tests.test_isolated import package_index_host, published

#: the client in the guest: seconds to read the whole file
READ = """
import sys, time, urllib.request
t = time.perf_counter()
with urllib.request.urlopen(sys.argv[1], timeout=60) as r:
    while r.read(1 << 20):
        pass
print(time.perf_counter() - t)
"""

#: inside the env: seconds to fetch one package (its index page, then its first file)
PACKAGE = """
import re, sys, time, urllib.parse, urllib.request
t = time.perf_counter()
page = sys.argv[1]
html = urllib.request.urlopen(page, timeout=60).read().decode()
link = urllib.parse.urljoin(page, re.findall(r'href="([^"]+)"', html)[-1])
data = urllib.request.urlopen(link, timeout=60).read()
print(time.perf_counter() - t, len(data))
"""


def http_seconds(guest: Guest, name: str, project: str, network: str, megabytes: int, runs: int) -> float | None:
    if network == "offline":
        return None
    guest.run(["sh", "-c", f"head -c {megabytes}M /dev/zero > {project}/blob"], user="alice")
    port = 3000  # shared: the guest's own 3000 (one env at a time)
    server = subprocess.Popen(guest.argv(["sudo", "-n", f"{PREFIX}/enter", name, project, "--cwd", project, "--",
                                          "python3", "-m", "http.server", "--bind", "127.0.0.1", str(port)],
                                         user="alice"),
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        outside = published(guest, name, port) if network == "isolated" else port
        deadline = time.monotonic() + 15
        while guest.run(["python3", "-c", READ, f"http://127.0.0.1:{outside}/"]).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit(f"the server of {name} never answered")
            time.sleep(0.2)
        times = []
        for _ in range(runs):
            r = guest.run(["python3", "-c", READ, f"http://127.0.0.1:{outside}/blob"], user="alice")
            times.append(float(r.stdout))
        return statistics.median(times)
    finally:
        server.kill()
        server.wait()


def package_seconds(guest: Guest, name: str, project: str, network: str, runs: int) -> float | None:
    if network == "offline":
        return None
    page = f"https://{package_index_host()}/simple/six/"
    times = []
    for _ in range(runs):
        r = guest.enter(name, project, "python3", "-c", PACKAGE, page)
        if r.returncode != 0:
            raise SystemExit(f"the package download failed in {network}: {r.stderr[-300:]}")
        times.append(float(r.stdout.split()[0]))
    return statistics.median(times)


def helper_memory(guest: Guest) -> float:
    """MiB resident in the network account's processes (one idle isolated env)."""
    r = guest.run(["sh", "-c", "for p in $(pgrep -u llima-box-net); do grep VmRSS /proc/$p/status; done"])
    return sum(int(line.split()[1]) for line in r.stdout.splitlines()) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--megabytes", type=int, default=100)
    args = parser.parse_args()
    results = {}
    with Guest() as g:
        for network in ("shared", "isolated", "offline"):
            name = f"lb-bench-{network}"
            project = g.make_project("alice", f"bench-{network}")
            if g.guest_script("create", name, project, "--network", network).returncode != 0:
                raise SystemExit(f"create --network {network} failed")
            memory = helper_memory(g) if network == "isolated" else 0.0
            exec_ms = timed_in_guest(g, f"sudo -n {PREFIX}/enter {name} {project} -- true", args.runs)
            http = http_seconds(g, name, project, network, args.megabytes, max(3, args.runs // 5))
            package = package_seconds(g, name, project, network, max(3, args.runs // 5))
            results[network] = (exec_ms, http, package, memory)
            g.guest_script("delete", name)
    base = results["shared"]
    print(f"{'mode':10} {'exec ms':>10} {'HTTP MB/s':>12} {'package s':>10} {'helpers MiB':>12}")
    for network, (exec_ms, http, package, memory) in results.items():
        rate = f"{args.megabytes / http:8.0f} ({base[1] / http:.2f}x)" if http else "-"
        pkg = f"{package:.2f} ({package / base[2]:.2f}x)" if package else "-"
        print(f"{network:10} {exec_ms:6.1f} ({exec_ms / base[0]:.2f}x) {rate:>12} {pkg:>10} {memory:8.1f}")


if __name__ == "__main__":
    main()
