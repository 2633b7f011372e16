"""Measure, in the real VM, what docs/real-vm-measured.md reports (not a test: nothing here asserts).

usage: python3 -m tests.vm.measure [--kernel stable|backports] [--files N] [--json OUT]

Boots the VM of tests/vm/machine.py, runs tests/vm/measure_guest.py in it as root, looks at the files it
created from the host side, and prints Markdown tables. Under TCG only ratios within one run mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from tests.vm.machine import VM

HERE = Path(__file__).resolve().parent


def host_view(path: Path) -> str:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "-"
    return f"{st.st_uid}:{st.st_gid} {st.st_mode & 0o7777:04o}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", default="stable")
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--json")
    ap.add_argument("--ways", default="userns,bindfs", help="what to measure against direct (comma-separated)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of each; the best time of each counts")
    args = ap.parse_args()
    t0 = time.monotonic()
    with VM(kernel=args.kernel) as vm:
        boot = time.monotonic() - t0
        shares = [{"kind": s.kind, "path": str(s.path)} for s in vm.shares]
        shares.append({"kind": "ext4 (guest disk)", "path": "/var/tmp/ext4-control", "speed": False})
        script = (HERE / "measure_guest.py").read_text()
        argv = ["sudo", "-n", "python3", "-", json.dumps(shares), str(vm.host.uid), str(vm.host.gid), str(args.files),
                args.ways, str(args.rounds)]
        import shlex

        r = vm.ssh(shlex.join(argv), input=script, timeout=3600)
        if r.returncode != 0:
            raise SystemExit(f"measurement failed ({r.returncode}):\n{r.stderr[-3000:]}\n{r.stdout[-2000:]}")
        res = json.loads(r.stdout)
        for share in vm.shares:
            for case in res["shares"][share.kind]["functional"].values():
                if isinstance(case, dict):
                    d = Path(case["dir"])
                    case["host_owner_of_new_file"] = host_view(d / "new_file")
                    case["host_owner_of_new_dir_file"] = host_view(d / "new_dir" / "f")
                    case["host_owner_of_host_file"] = host_view(d / "host644")
        res.update(accel=vm.accel, boot_seconds=round(boot), host_user=f"{vm.host.uid}:{vm.host.gid}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    print(report(res))


def report(res: dict) -> str:
    out = [f"kernel {res['kernel']}, {res['accel']}, host user {res['host_user']}", ""]
    for kind, data in res["shares"].items():
        f = data["functional"]
        out += [f"### {kind}", "", f"idmapped mount: {f['idmap']}", ""]
        cases = {k: v for k, v in f.items() if isinstance(v, dict)}
        keys = [k for k in next(iter(cases.values())) if k not in ("dir", "exit")]
        out.append("| | " + " | ".join(cases) + " |")
        out.append("|---" * (len(cases) + 1) + "|")
        for key in keys:
            out.append(f"| {key} | " + " | ".join(str(c.get(key, "")) for c in cases.values()) + " |")
        out.append("")
        if "speed" in data:
            sp = data["speed"]
            ways = [w for w in ("userns", "bindfs") if w in sp]
            out += ["| operation | direct (s) |" + "".join(f" {w} (s) | {w} vs direct |" for w in ways),
                    "|---" * (2 + 2 * len(ways)) + "|"]
            for op, t in sp["direct"].items():
                out.append(f"| {op} | {t:.2f} |" + "".join(f" {sp[w][op]:.2f} | {t / sp[w][op]:.2f}x |" for w in ways))
            out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    main()
