"""A real QEMU VM for tests, set up the way Lima sets up its VM (see docs/real-vm.md of the shared notes and
docs/real-vm-measured.md).

- the image of ``tests/vm/image.py`` under a fresh qcow2 overlay per boot (a ``reboot`` keeps the overlay);
- KVM where it is real, else TCG (``-cpu max``): ``/dev/kvm`` backed by PVM cannot run a stock kernel;
- SSH forwarded on ``127.0.0.1:<free port>`` only;
- a Lima-like login user: the host user's name and uid, home ``/home/NAME.guest``, ``NOPASSWD: ALL``
  sudo, an ed25519 key generated here;
- host directories owned by the host user shared at the same path: over 9p with Lima's options
  (``security_model=none``, ``9p2000.L``, ``msize=131072``, ``cache=mmap``; QEMU runs as the host user
  with ``-runas``, so the host decides ownership) and over virtiofs (``/usr/lib/qemu/virtiofsd`` as root);
- at every boot the rendered embedded lima.yaml's ``system`` provision scripts run as root (a boot unit in
  the image, fed by a read-only "seed" 9p share: Lima's cidata), and :meth:`VM.wait_ready` runs its
  readiness probes over SSH as the login user, as ``limactl start`` does.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.vm.image import Image, ImageUnavailable, get_image

VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
#: The test account that plays the host user (macOS's first user: uid 501, group staff = 20).
HOST_USER, HOST_UID, HOST_GID = "lbvmhost", 501, 20


class VMUnavailable(RuntimeError):
    """A prerequisite of the real VM is missing, or the VM did not come up."""


@dataclass(frozen=True)
class Share:
    kind: str  # "9p" or "virtiofs"
    tag: str
    path: Path  # on this machine, and at the same path in the guest


@dataclass
class HostUser:
    name: str
    uid: int
    gid: int


def ensure_host_user() -> HostUser:
    """The account that owns the shares on this machine (made on first use and kept: other runs use it)."""
    try:
        pw = pwd.getpwuid(HOST_UID)
        return HostUser(pw.pw_name, pw.pw_uid, pw.pw_gid)
    except KeyError:
        pass
    grp.getgrgid(HOST_GID)
    r = subprocess.run(["useradd", "--uid", str(HOST_UID), "--gid", str(HOST_GID), "--no-create-home",
                        "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", HOST_USER],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0 and "already exists" not in r.stderr:
        raise VMUnavailable(f"cannot create the host test user {HOST_USER} ({HOST_UID}): {r.stderr.strip()}")
    pw = pwd.getpwuid(HOST_UID)
    return HostUser(pw.pw_name, pw.pw_uid, pw.pw_gid)


def accel() -> tuple[str, str]:
    """(accel, cpu): KVM only when it can run a stock kernel; PVM's /dev/kvm cannot (docs/real-vm.md)."""
    forced = os.environ.get("LLIMA_BOX_VM_ACCEL")
    if forced == "tcg":
        return "tcg", "max"
    pvm = Path("/sys/module/kvm_pvm").exists()
    flags = Path("/proc/cpuinfo").read_text(errors="replace")
    hw = " vmx " in flags.replace("\t", " ").replace("\n", " ") or " svm " in flags.replace("\n", " ")
    if forced == "kvm" or (not pvm and hw and os.access("/dev/kvm", os.R_OK | os.W_OK)):
        return "kvm", "host"
    return "tcg", "max"


def check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise VMUnavailable("the real-VM tests must run as root (QEMU -runas, virtiofsd, the image build)")
    for tool in ("qemu-system-x86_64", "qemu-img", "ssh", "ssh-keygen", VIRTIOFSD):
        if shutil.which(tool) is None:
            raise VMUnavailable(
                f"{tool} is missing: apt-get install qemu-system-x86 qemu-utils openssh-client (.ci/run does)"
            )


def _raise_nofile() -> None:
    """A high RLIMIT_NOFILE, as Lima's QEMU gets on macOS (its Go host agent raises the soft limit to the
    hard one): 9p with cache=mmap keeps a host fd open per file the guest wrote until the guest evicts the
    inode, so an untar of 20,000 files fails with EMFILE at a limit of 20,000 (measured). Raising the hard
    limit needs CAP_SYS_RESOURCE, which the CI machines' root lacks."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1 << 20, 1 << 20))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rendered_lima(roots: str) -> dict:
    """The embedded lima.yaml exactly as llima-box renders it for ``limactl create``."""
    from llimabox.lima.render import render

    return yaml.safe_load(render(host_home=roots))


@dataclass
class VM:
    """One booted VM; a context manager. ``shares`` are made fresh (owned by the host user) at boot."""

    kernel: str = "stable"
    memory_mib: int = 2048
    cpus: int = 1
    share_kinds: tuple[str, ...] = ("9p", "virtiofs")
    image: Image | None = None
    shares: list[Share] = field(default_factory=list)
    boot_timeout: float = 300

    def __post_init__(self) -> None:
        check_prerequisites()
        try:
            self.image = self.image or get_image()
        except ImageUnavailable as e:
            raise VMUnavailable(str(e)) from e
        self.host = ensure_host_user()
        self.user, self.uid = self.host.name, self.host.uid
        self.home = f"/home/{self.user}.guest"
        self.dir = Path(tempfile.mkdtemp(prefix="lbvm.", dir="/var/tmp"))
        os.chmod(self.dir, 0o711)
        self.procs: list[subprocess.Popen] = []
        self.qemu: subprocess.Popen | None = None
        self.timings: dict[str, float] = {}
        self.port = free_port()
        self.key = self.dir / "id_ed25519"
        try:
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lbvm-test", "-f", str(self.key)],
                           check=True, timeout=30)
            for i, kind in enumerate(self.share_kinds):
                path = Path(tempfile.mkdtemp(prefix=f"lbvm-{kind}.", dir="/mnt"))  # not a system dir
                os.chown(path, self.host.uid, self.host.gid)
                os.chmod(path, 0o755)
                self.shares.append(Share(kind, f"share{i}", path))
            self.lima = rendered_lima(":".join(str(s.path) for s in self.shares))
            self._write_seed()
            self._start()
            self.wait_ready(self.boot_timeout)
        except BaseException:
            self.stop()
            raise

    # -- boot ------------------------------------------------------------------------------------------------
    def _write_seed(self) -> None:
        seed = self.dir / "seed"
        seed.mkdir(mode=0o755)
        (seed / "user").write_text(self.user + "\n")
        (seed / "uid").write_text(f"{self.uid}\n")
        shutil.copy(self.key.with_suffix(".pub"), seed / "authorized_keys")
        (seed / "mounts").write_text("".join(f"{s.kind} {s.tag} {s.path}\n" for s in self.shares))
        system = [p["script"] for p in self.lima["provision"] if p.get("mode", "system") == "system"]
        if not system:
            raise VMUnavailable("the rendered lima.yaml has no provision script of mode system")
        for i, script in enumerate(system):
            (seed / f"provision-{i:02d}.sh").write_text(script)
        for path in seed.iterdir():
            path.chmod(0o644)

    def _start(self) -> None:
        assert self.image is not None
        vmlinuz, initrd, self.kernel_version = self.image.kernel(self.kernel)
        overlay = self.dir / "overlay.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(self.image.disk),
                        str(overlay)], check=True, timeout=60)
        mode, cpu = accel()
        self.accel = mode
        argv = [
            "qemu-system-x86_64", "-name", "lbvm", "-nodefaults", "-display", "none", "-no-user-config",
            "-machine", f"q35,accel={mode}", "-cpu", cpu, "-smp", str(self.cpus), "-m", f"{self.memory_mib}M",
            "-kernel", str(vmlinuz), "-initrd", str(initrd),
            "-append", "root=/dev/vda rw console=ttyS0 systemd.show_status=1 quiet",
            "-drive", f"file={overlay},if=virtio,format=qcow2,cache=unsafe,discard=unmap",
            "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{self.port}-:22",
            "-device", "virtio-net-pci,netdev=net0", "-device", "virtio-rng-pci",
            "-serial", f"file:{self.dir / 'console.log'}",
            "-fsdev", f"local,id=seed,path={self.dir / 'seed'},security_model=none,readonly=on",
            "-device", "virtio-9p-pci,fsdev=seed,mount_tag=lbseed",
            "-runas", self.host.name,
        ]  # fmt: skip
        vfs = [s for s in self.shares if s.kind == "virtiofs"]
        if vfs:
            argv += ["-object", f"memory-backend-memfd,id=mem,size={self.memory_mib}M,share=on",
                     "-numa", "node,memdev=mem"]
        for s in self.shares:
            if s.kind == "9p":
                argv += ["-fsdev", f"local,id={s.tag},path={s.path},security_model=none",
                         "-device", f"virtio-9p-pci,fsdev={s.tag},mount_tag={s.tag}"]
            else:
                sock = self.dir / f"{s.tag}.sock"
                self._spawn([VIRTIOFSD, f"--socket-path={sock}", "-o", f"source={s.path}",
                             "-o", "sandbox=namespace", "-o", "cache=auto"], f"virtiofsd-{s.tag}.log")
                self._wait_for(lambda sock=sock: sock.exists(), 30, f"virtiofsd socket {sock.name}")
                argv += ["-chardev", f"socket,id={s.tag},path={sock}",
                         "-device", f"vhost-user-fs-pci,chardev={s.tag},tag={s.tag}"]
        self.t_start = time.monotonic()
        self.qemu = self._spawn(argv, "qemu.log")

    def _spawn(self, argv: list[str], log: str) -> subprocess.Popen:
        with open(self.dir / log, "wb") as out:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True, preexec_fn=_raise_nofile)
        self.procs.append(p)
        return p

    def _wait_for(self, ok, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ok():
            dead = [p for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = f"exited ({dead[0].args[0]})" if dead else f"not within {timeout:.0f} s"
                raise VMUnavailable(f"VM: {what}: {why}\n{self.diagnostics()}")
            time.sleep(0.5)

    def diagnostics(self) -> str:
        out = []
        for name in ("qemu.log", "console.log", *(f"virtiofsd-{s.tag}.log" for s in self.shares)):
            p = self.dir / name
            if p.exists():
                text = p.read_text(errors="replace")
                out.append(f"--- {name} (tail) ---\n{text[-2500:]}")
        return "\n".join(out)

    def boot_id(self) -> str | None:
        r = self.ssh("cat /proc/sys/kernel/random/boot_id", timeout=20, connect_timeout=5)
        return r.stdout.strip() if r.returncode == 0 else None

    def wait_ready(self, timeout: float, not_boot: str | None = None) -> None:
        """SSH answers (from a boot other than ``not_boot``), then every readiness probe passes."""
        t0 = time.monotonic()
        self._wait_for(lambda: (b := self.boot_id()) is not None and b != not_boot, timeout, "SSH login")
        self.timings["ssh"] = time.monotonic() - t0
        probes = [p for p in self.lima["probes"] if p.get("mode", "readiness") == "readiness"]
        for probe in probes:
            last = [None]

            def passes(probe=probe, last=last) -> bool:
                r = self.ssh("bash -s", input=probe["script"], timeout=30)
                last[0] = r
                return r.returncode == 0

            try:
                self._wait_for(passes, max(30.0, timeout - (time.monotonic() - t0)), f"probe {probe['description']}")
            except VMUnavailable as e:
                prov = self.ssh("sudo -n cat /var/log/lbvm-provision.log", timeout=30).stdout[-3000:]
                raise VMUnavailable(f"{e}\n--- provision log ---\n{prov}") from None
        self.timings["ready"] = time.monotonic() - t0

    # -- use -------------------------------------------------------------------------------------------------
    def ssh_argv(self, *cmd: str, connect_timeout: int = 10) -> list[str]:
        return ["ssh", "-p", str(self.port), "-i", str(self.key), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                "-o", f"ConnectTimeout={connect_timeout}", "-o", "ServerAliveInterval=10",
                f"{self.user}@127.0.0.1", *cmd]  # fmt: skip

    def ssh(self, command: str, input: str | bytes | None = None, timeout: float = 120,
            connect_timeout: int = 10) -> subprocess.CompletedProcess:
        """Run a shell command line as the login user (text unless ``input`` is bytes)."""
        text = not isinstance(input, bytes)
        try:
            return subprocess.run(self.ssh_argv(command, connect_timeout=connect_timeout), input=input,
                                  capture_output=True, text=text, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as e:
            out = e.stdout or b""
            return subprocess.CompletedProcess(e.cmd, 124, out.decode(errors="replace") if text else out,
                                               f"timed out after {timeout} s" if text else b"timed out")

    def root(self, script: str, timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess:
        """Run a bash script as root in the guest (through the login user's sudo, as Lima's users do)."""
        cmd = shlex.join(["sudo", "-n", "bash", "-c", script]) if input is None else "sudo -n bash -s"
        return self.ssh(cmd, input=script if input is None else input, timeout=timeout)

    def reboot(self, timeout: float = 300) -> None:
        """A real ``reboot`` of the guest; returns when it is back and its readiness probes pass."""
        before = self.boot_id()
        assert before, "the VM is not reachable before the reboot"
        self.ssh("sudo -n systemctl reboot", timeout=30)
        self.wait_ready(timeout, not_boot=before)

    # -- end -------------------------------------------------------------------------------------------------
    def __enter__(self) -> VM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=30)
        self.procs.clear()
        if os.environ.get("LLIMA_BOX_VM_KEEP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)
        for s in self.shares:
            shutil.rmtree(s.path, ignore_errors=True)

    def host_project(self, share: Share, name: str) -> Path:
        """A project directory on ``share``, made on the host side by the host user (as on a Mac)."""
        path = share.path / name
        path.mkdir(mode=0o755)
        os.chown(path, self.host.uid, self.host.gid)
        return path

    def share(self, kind: str) -> Share:
        return next(s for s in self.shares if s.kind == kind)
