"""The real-VM test image: a Debian bookworm rootfs from Debian's packages only, built once and cached.

``mmdebstrap`` makes the rootfs (with bookworm's 6.1 kernel and bookworm-backports' newer one, both in
``/boot``), ``mkfs.ext4 -d`` turns it into a sparse raw disk. The result lives under the machine's cache
(``/var/cache/llima-box-test/`` unless ``LLIMA_BOX_VM_CACHE`` says otherwise) in a directory named by a
hash of the recipe (package list, the files in ``tests/vm/guest/``, this module's build steps), so a CI run
after the first reuses it. A build happens in a temporary directory beside it and is renamed into place
when complete: a killed build leaves no cache entry, only a ``.build-*`` directory the next build removes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
GUEST_FILES = HERE / "guest"
SUITE = "bookworm"
PACKAGES = (
    "systemd", "systemd-sysv", "systemd-resolved", "udev", "dbus", "libpam-systemd", "openssh-server", "sudo",
    "util-linux", "passwd", "iproute2", "python3", "keyutils", "procps", "kmod", "e2fsprogs", "initramfs-tools",
    "linux-image-amd64", "ca-certificates",
    # for the measurements of docs/real-vm-measured.md
    "bindfs", "fuse3", "git",
    # isolated envs (tests/vm/test_vm_network.py)
    "passt", "tinyproxy-bin",
)  # fmt: skip
#: Bumped when the build steps below change in a way the hash of the inputs would not see.
RECIPE_VERSION = 1
DISK_SIZE = "8G"
BUILD_TIMEOUT = 1800


class ImageUnavailable(RuntimeError):
    """The image cannot be built (a missing tool, no mirror, a failed build)."""


@dataclass(frozen=True)
class Image:
    dir: Path
    manifest: dict

    @property
    def disk(self) -> Path:
        return self.dir / "disk.raw"

    def kernel(self, flavour: str = "stable") -> tuple[Path, Path, str]:
        """(vmlinuz, initrd, version) of ``stable`` (bookworm) or ``backports``."""
        k = self.manifest["kernels"][flavour]
        return self.dir / k["vmlinuz"], self.dir / k["initrd"], k["version"]


def cache_root() -> Path:
    return Path(os.environ.get("LLIMA_BOX_VM_CACHE", "/var/cache/llima-box-test"))


def recipe_hash() -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"suite": SUITE, "packages": PACKAGES, "version": RECIPE_VERSION, "size": DISK_SIZE}).encode())
    for path in sorted(GUEST_FILES.iterdir()):
        if path.is_file():
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def apt_sources() -> tuple[str, str | None]:
    """(Debian mirror, security mirror or None) as this machine's apt is configured (never a fixed host)."""
    main = security = None
    texts = []
    base = Path("/etc/apt")
    for path in [base / "sources.list", *sorted((base / "sources.list.d").glob("*"))]:
        if path.is_file() and path.suffix in (".list", ".sources"):
            texts.append((path.suffix, path.read_text(errors="replace")))
    entries: list[tuple[str, list[str]]] = []
    for suffix, text in texts:
        if suffix == ".list":
            for line in text.splitlines():
                m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m:
                    entries.append((m.group(1), [m.group(2)]))
        else:
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
                if "deb" in fields.get("Types", "").split() and "URIs" in fields:
                    for uri in fields["URIs"].split():
                        entries.append((uri, fields.get("Suites", "").split()))
    for uri, suites in entries:
        if main is None and SUITE in suites:
            main = uri
        if security is None and f"{SUITE}-security" in suites:
            security = uri
    if main is None:
        raise ImageUnavailable(f"no apt source for {SUITE} in /etc/apt/sources.list*: the image needs a Debian mirror")
    return main, security


def check_tools() -> None:
    missing = [t for t in ("mmdebstrap", "mkfs.ext4") if shutil.which(t) is None]
    if missing:
        raise ImageUnavailable(
            f"{', '.join(missing)} missing: apt-get install mmdebstrap e2fsprogs (.ci/run installs them)"
        )
    if os.geteuid() != 0:
        raise ImageUnavailable("building the real-VM image needs root (mmdebstrap --mode=root)")


def get_image(log=None) -> Image:
    """The cached image for the current recipe, built first if needed (serialised by a lock file)."""
    root = cache_root()
    key = recipe_hash()
    final = root / key
    if (final / "manifest.json").is_file():
        return Image(final, json.loads((final / "manifest.json").read_text()))
    check_tools()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".lock-{key}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (final / "manifest.json").is_file():
            for stale in root.glob(f".build-{key}-*"):
                shutil.rmtree(stale, ignore_errors=True)
            _build(root / f".build-{key}-{os.getpid()}", final, log)
    return Image(final, json.loads((final / "manifest.json").read_text()))


def _build(work: Path, final: Path, log) -> None:
    t0 = time.monotonic()
    work.mkdir()
    rootfs = work / "rootfs"
    main, security = apt_sources()
    sources = [f"deb {main} {SUITE} main", f"deb {main} {SUITE}-updates main", f"deb {main} {SUITE}-backports main"]
    if security:
        sources.append(f"deb {security} {SUITE}-security main")
    backports_kernel = f"apt-get install -y -q -t {SUITE}-backports linux-image-amd64"
    argv = [
        "mmdebstrap", "--mode=root", "--format=directory", "--variant=apt", "--components=main",
        f"--include={','.join(PACKAGES)}",
        # systemd-resolved made /etc/resolv.conf the stub's link, dead in a chroot: resolve as this machine does
        "--customize-hook=cp --remove-destination /etc/resolv.conf \"$1/etc/resolv.conf\"",
        f"--chrooted-customize-hook=env DEBIAN_FRONTEND=noninteractive {backports_kernel}",
        f"--customize-hook=bash {GUEST_FILES / 'customize.sh'} \"$1\"",
        SUITE, str(rootfs), *sources,
    ]  # fmt: skip
    try:
        _run(argv, log, "mmdebstrap")
        boot = rootfs / "boot"
        kernels = sorted((p.name[len("vmlinuz-") :] for p in boot.glob("vmlinuz-*")), key=_version_key)
        if len(kernels) < 2:
            raise ImageUnavailable(f"expected bookworm's and bookworm-backports' kernels in /boot, found {kernels}")
        manifest: dict = {"recipe": recipe_hash(), "kernels": {}}
        for flavour, version in (("stable", kernels[0]), ("backports", kernels[-1])):
            shutil.copy2(boot / f"vmlinuz-{version}", work / f"vmlinuz-{version}")
            shutil.copy2(boot / f"initrd.img-{version}", work / f"initrd.img-{version}")
            manifest["kernels"][flavour] = {
                "version": version, "vmlinuz": f"vmlinuz-{version}", "initrd": f"initrd.img-{version}",
            }  # fmt: skip
        _run(["mkfs.ext4", "-q", "-L", "lbvm-root", "-d", str(rootfs), str(work / "disk.raw"), DISK_SIZE], log, "mkfs")
        shutil.rmtree(rootfs)
        manifest["build_seconds"] = round(time.monotonic() - t0)
        (work / "manifest.json").write_text(json.dumps(manifest, indent=1))
        os.chmod(work, 0o755)
        os.rename(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _version_key(version: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", version)]


def _run(argv: list[str], log, what: str) -> None:
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log or subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=BUILD_TIMEOUT, check=False)
    if r.returncode != 0:
        tail = (r.stdout or b"").decode(errors="replace")[-3000:] if log is None else "(see the build log)"
        raise ImageUnavailable(f"{what} failed (exit {r.returncode}):\n{tail}")


if __name__ == "__main__":
    import sys

    img = get_image(log=sys.stderr)
    print(img.dir, json.dumps(img.manifest))
