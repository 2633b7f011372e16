"""Benchmarks of llima-box against the tools it replaces, each with its baseline measured in the same run.

Boots the copy-on-write test guest (tests/guest.py; needs root, as the tests do) and prints one table:

    python bench/run.py            # the full run (500 envs for B4: a few minutes)
    python bench/run.py --quick    # few repetitions and envs: what CI runs so the benchmarks never rot

B1 warm `shell P -- true` (ssh backend, the mux up) vs OpenSSH through a ControlMaster running `sudo -n true`;
B2 cold (no mux, no connection) vs a fresh `ssh` running the same; B3 `create` of a new env vs `useradd` plus the
bare namespace setup; B4 exec latency and `list --json` with 1, N/5 and N envs, and the memory of an idle env;
B5 the local backend (inside the guest) vs `bwrap --ro-bind / / true`; B6 `serve` under concurrent OpenSSH clients
(50 x 20 execs) vs the same load through the guest's sshd. All as the guest user alice; medians.
Benchmarks never fail on timing; docs/performance.md holds a measured table and what it means.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import typing as t
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from llimabox.mux import PROTOCOL
from tests.guest import PREFIX, Guest

Row = tuple[str, float, str, float, str]  # what, ms, baseline, baseline ms, goal


def timed(argv: list[str], runs: int, env: dict[str, str] | None = None, before: t.Callable[[], None] | None = None
          ) -> float:
    """Median wall time of ``argv`` in milliseconds."""
    times = []
    for _ in range(runs):
        if before is not None:
            before()
        t0 = time.perf_counter()
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           env=env, check=False)
        times.append((time.perf_counter() - t0) * 1000)
        if r.returncode != 0:
            raise SystemExit(f"benchmark command failed ({r.returncode}): {argv}\n{r.stderr.decode()[-500:]}")
    return statistics.median(times)


def timed_in_guest(guest: Guest, command: str, runs: int, user: str = "alice") -> float:
    """Median milliseconds of a shell command, timed inside the guest (no nsenter overhead)."""
    script = (f'for i in $(seq {runs}); do s=$(date +%s%N); {command} >/dev/null 2>&1 || exit 9; '
              'e=$(date +%s%N); echo $(( (e - s) / 1000 )); done')
    r = guest.run(["bash", "-c", script], user=user, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"guest benchmark failed: {command}\n{r.stderr[-500:]}")
    return statistics.median(int(x) for x in r.stdout.split()) / 1000


class Bench:
    def __init__(self, guest: Guest, runs: int, envs: int) -> None:
        self.g, self.runs, self.envs = guest, runs, envs
        self.home = Path(tempfile.mkdtemp(prefix="lbbench."))
        (self.home / "known_hosts").write_text(f"[127.0.0.1]:{guest.port} {guest.host_key_pub}")
        self.env = {
            **os.environ, "LLIMA_BOX_HOME": str(self.home), "LLIMA_BOX_BACKEND": "ssh",
            "LLIMA_BOX_HOST": f"alice@127.0.0.1:{guest.port}", "LLIMA_BOX_IDENTITY": guest.key,
            "LLIMA_BOX_KNOWN_HOSTS": str(self.home / "known_hosts"),
        }  # fmt: skip
        self.env.pop("SSH_AUTH_SOCK", None)
        # as installed: compiled modules are cached (an install compiles them), and the command is the
        # console script pip writes, which imports this checkout's package
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
        script = self.home / "llima-box"
        script.write_text("import re\nimport sys\nfrom llimabox.launcher import main\n"
                          "if __name__ == '__main__':\n"
                          "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
                          "    sys.exit(main())\n")
        self.lb = [sys.executable, str(script)]
        self.ssh = [*guest.ssh_argv()[:-1], "-o", f"ControlPath={self.home}/cm-%C", guest.ssh_argv()[-1]]
        guest.run(["sh", "-c", "echo 'alice ALL=(root) NOPASSWD: /usr/bin/true, /bin/true' "
                   ">/etc/sudoers.d/bench && chmod 0440 /etc/sudoers.d/bench"]).check_returncode()
        self.project = str(guest.make_project("alice", "bench"))
        self.rows: list[Row] = []
        self.b6_results: dict[str, tuple[int, float, float]] = {}  # failures, p50, p99 by load

    def lb_run(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*self.lb, *args], env=self.env, capture_output=True, check=True)

    def stop_mux(self) -> None:
        pid_file = self.home / "mux" / "pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass
            pid_file.unlink()
        (self.home / "mux" / f"v{PROTOCOL}.sock").unlink(missing_ok=True)

    def b1_b2(self) -> None:
        shell = [*self.lb, "shell", self.project, "--", "true"]
        self.lb_run("shell", self.project, "--", "true")
        master = subprocess.Popen([*self.ssh[:-1], "-M", "-N", "-o", "ControlPersist=no", self.ssh[-1]])
        try:
            time.sleep(0.5)
            cm = timed([*self.ssh, "sudo", "-n", "true"], self.runs)
            name = self.lb_run("create", self.project).stdout.decode().strip()
            cm_enter = timed([*self.ssh, "sudo", "-n", f"{PREFIX}/enter", name, self.project, "--", "true"], self.runs)
        finally:
            master.terminate()
            master.wait()
        warm = timed(shell, self.runs, self.env)
        self.rows.append(("B1 warm shell -- true", warm, "ssh ControlMaster sudo -n true", cm, "<= 1.5"))
        self.rows.append(("   (transport floor)", warm, "ssh ControlMaster sudo enter", cm_enter, "info"))
        python = timed([sys.executable, "-c", "pass"], self.runs)
        self.rows.append(("   (interpreter start)", warm, "python -c pass", python, "info"))
        fresh = timed([*self.g.ssh_argv("sudo", "-n", "true")], max(3, self.runs // 2))
        cold = timed(shell, max(3, self.runs // 2), self.env, before=self.stop_mux)
        direct = timed(shell, max(3, self.runs // 2), {**self.env, "LLIMA_BOX_MUX": "0"})
        self.rows.append(("B2 cold shell -- true", cold, "fresh ssh sudo -n true", fresh, "<= 1.0"))
        self.rows.append(("   (mux off)", direct, "fresh ssh sudo -n true", fresh, "info"))

    def b3(self) -> None:
        times = []
        for i in range(max(3, self.runs // 2)):
            project = str(self.g.make_project("alice", f"new{i}"))
            t0 = time.perf_counter()
            self.lb_run("create", project)
            times.append((time.perf_counter() - t0) * 1000)
        bare = self._bare_create()
        self.rows.append(("B3 create new env", statistics.median(times), "useradd + unshare + mounts", bare,
                          "<= 400 ms"))

    def _bare_create(self) -> float:
        script = ("i=$RANDOM$RANDOM; useradd -M -K UID_MIN=300000 -K UID_MAX=399999 -K SUB_UID_COUNT=0 "
                  "-K SUB_GID_COUNT=0 bb$i && unshare --mount --pid --ipc --uts --fork --propagation private "
                  "sh -c 'mount -t tmpfs t /mnt; mount -t proc p /mnt'")
        return timed_in_guest(self.g, script, max(3, self.runs // 2), user="root")

    def b4(self) -> None:
        shell = [*self.lb, "shell", self.project, "--", "true"]
        listing = [*self.lb, "list", "--json"]
        sizes = sorted({1, max(2, self.envs // 5), self.envs})
        have = len(self.lb_run("list", "--json").stdout.decode().split('"name"')) - 1
        results = {}
        for size in sizes:
            while have < size:
                p = self.g.make_project("alice", f"many{have}")
                self.lb_run("create", str(p))
                have += 1
            results[size] = (timed(shell, self.runs, self.env), timed(listing, max(3, self.runs // 2), self.env))
        e1, l1 = results[sizes[0]]
        for size in sizes[1:]:
            self.rows.append((f"B4 exec with {size} envs", results[size][0], f"exec with {sizes[0]} env", e1,
                              "<= 1.1"))
            self.rows.append((f"B4 list --json, {size} envs", results[size][1], f"list with {sizes[0]} env", l1,
                              "<= 1.5"))
        rss, uss = self._idle_memory()
        self.rows.append(("B4 idle env memory (KiB)", uss, "resident incl. shared (KiB)", rss, "<= 1024 KiB"))

    def _idle_memory(self) -> tuple[float, float]:
        """Median resident and unique (private) memory of one idle env's processes, in KiB."""
        script = (
            "for f in /run/llima-box/lb-*.holder; do read -r pid _ <\"$f\"; "
            "awk '/^Rss:/{r=$2} /^Private_(Clean|Dirty):/{u+=$2} END{print r, u}' /proc/$pid/smaps_rollup; done"
        )
        rows = [line.split() for line in self.g.sh(script).stdout.splitlines() if line.strip()]
        return statistics.median(float(r) for r, _ in rows), statistics.median(float(u) for _, u in rows)

    def b5(self) -> None:
        self.g.install_cli()
        project = self.g.make_project("alice", "local")
        lb = f"llima-box --backend local shell {project} -- true"
        self.g.run(["sh", "-c", lb], user="alice").check_returncode()
        local = timed_in_guest(self.g, lb, self.runs)
        local_direct = timed_in_guest(self.g, "LLIMA_BOX_MUX=0 " + lb, self.runs)
        bwrap = timed_in_guest(self.g, "bwrap --ro-bind / / true", self.runs)
        self.rows.append(("B5 local shell -- true", local, "bwrap --ro-bind / / true", bwrap, "<= 5"))
        self.rows.append(("   (mux off)", local_direct, "bwrap --ro-bind / / true", bwrap, "info"))

    def b6(self) -> None:
        """``serve`` under many concurrent OpenSSH clients, against the same load through the guest's sshd."""
        import concurrent.futures as cf

        from tests.serve_harness import Serve, setup_accounts

        clients, execs = (10, 3) if self.envs <= 10 else (50, 20)
        setup_accounts(self.g, Path(self.g.key + ".pub").read_text())
        self.g.make_project("alice", "served")
        box = Serve(self.g, str(self.home), serve_max_sessions=clients + 5)
        opts = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "-i", self.g.key]  # fmt: skip
        loads = {
            "serve": ["ssh", "-p", str(box.port), *opts, "alice+served@127.0.0.1", "true"],
            "sshd": ["ssh", "-p", str(self.g.port), *opts, "alice@127.0.0.1", "true"],
        }

        def client(argv: list[str]) -> list[float | None]:
            times: list[float | None] = []
            for _ in range(execs):
                t0 = time.perf_counter()
                ok = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False).returncode == 0
                times.append((time.perf_counter() - t0) * 1000 if ok else None)
            return times

        try:
            for name, argv in loads.items():
                with cf.ThreadPoolExecutor(clients) as pool:
                    results = [x for times in pool.map(client, [argv] * clients) for x in times]
                done = sorted(x for x in results if x is not None)
                self.b6_results[name] = (len(results) - len(done), done[len(done) // 2], done[int(len(done) * 0.99)])
        finally:
            box.stop()
        serve, sshd = self.b6_results["serve"], self.b6_results["sshd"]
        load = f"{clients}x{execs}"
        self.rows.append((f"B6 serve p50, {load}", serve[1], "sshd p50, same load", sshd[1], "info"))
        self.rows.append((f"B6 serve p99, {load}", serve[2], "sshd p99, same load", sshd[2], "info"))
        self.rows.append((f"B6 serve failures, {load}", serve[0], "sshd failures", sshd[0], "0 failures"))

    def report(self) -> None:
        print(f"{'benchmark':<30}{'ms':>9}  {'baseline':<32}{'ms':>9}{'ratio':>8}  goal")
        for what, ms, base, base_ms, goal in self.rows:
            ratio = ms / base_ms if base_ms else float("nan")
            print(f"{what:<30}{ms:>9.1f}  {base:<32}{base_ms:>9.1f}{ratio:>8.2f}  {goal}")

    def close(self) -> None:
        self.stop_mux()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions and envs (CI)")
    parser.add_argument("--runs", type=int, help="repetitions per measurement (default 15; quick 3)")
    parser.add_argument("--envs", type=int, help="the largest env count of B4 (default 500; quick 10)")
    parser.add_argument("--only", choices=("b1_b2", "b3", "b4", "b5", "b6"), action="append",
                        help="run only these steps (repeatable), e.g. --only b1_b2 before and after a change")
    opts = parser.parse_args()
    runs = opts.runs or (3 if opts.quick else 15)
    envs = opts.envs or (10 if opts.quick else 500)
    with Guest() as g:
        bench = Bench(g, runs, envs)
        try:
            for step in opts.only or ("b1_b2", "b3", "b4", "b5", "b6"):
                getattr(bench, step)()
        finally:
            bench.close()
        bench.report()


if __name__ == "__main__":
    main()
