#!/usr/bin/env python3
"""A fake ``limactl`` that behaves like Lima's in everything llima-box relies on.

Its VMs are copy-on-write test guests (tests/guest_boot.sh) that outlive the command, with their
disk (the overlay's upper layer) kept under ``$LIMA_HOME/NAME/vm`` so that stop/start keeps data.
``start`` runs the instance's lima.yaml ``provision`` scripts (mode ``system``) as root and its
readiness ``probes`` as the guest user, as Lima does. JSON Lines, log lines (``time=… level=… msg=…``),
messages and exit codes follow Lima v2. What it does not do: images, real networking, ``limactl``'s
refusal to run as root (the test guests need root).
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml

from tests.guest import boot_argv, free_port, guest_argv

VERSION = "2.2.0"
GUEST_USER, GUEST_UID, GUEST_HOME = "alice", 1501, "/home/alice.guest"


def log(level: str, msg: str) -> None:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"time={json.dumps(now)} level={level} msg={json.dumps(msg)}", file=sys.stderr, flush=True)


def fatal(msg: str) -> None:
    log("fatal", msg)
    sys.exit(1)


def lima_home() -> Path:
    return Path(os.environ.get("LIMA_HOME") or os.path.expanduser("~/.lima"))


def inst_dir(name: str) -> Path:
    return lima_home() / name


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def ha_pid(name: str) -> int | None:
    try:
        pid = int((inst_dir(name) / "ha.pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def load_yaml(name: str) -> tuple[dict | None, str | None]:
    try:
        doc = yaml.safe_load((inst_dir(name) / "lima.yaml").read_text())
    except (OSError, yaml.YAMLError) as exc:
        return None, f"failed to load YAML file: {exc}"
    if not isinstance(doc, dict):
        return None, "failed to load YAML file: not a mapping"
    return doc, None


def status(name: str) -> tuple[str, str | None]:
    doc, err = load_yaml(name)
    if doc is None:
        return "Broken", err
    if ha_pid(name) is None:
        return "Stopped", None
    return "Running", None


def instance_json(name: str) -> str:
    d = inst_dir(name)
    st, message = status(name)
    doc = load_yaml(name)[0] or {}
    obj: dict = {"name": name, "hostname": f"lima-{name}", "status": st, "dir": str(d),
                 "vmType": doc.get("vmType") or "qemu", "arch": os.uname().machine}
    if doc.get("cpus"):
        obj["cpus"] = int(doc["cpus"])
    if message:
        obj["message"] = message
    port = (d / "ssh.port").read_text().strip() if (d / "ssh.port").exists() else ""
    if st == "Running" and port:
        obj["sshLocalPort"] = int(port)
    if (d / "ssh.config").exists():
        obj["sshConfigFile"] = str(d / "ssh.config")
    if st == "Running":
        obj["hostAgentPID"] = ha_pid(name)
    config = dict(doc)
    config["user"] = {"name": GUEST_USER, "comment": "Lima", "home": GUEST_HOME, "shell": "/bin/bash",
                      "uid": GUEST_UID}
    config.setdefault("ssh", {})
    obj["config"] = config
    obj["sshAddress"] = "127.0.0.1"
    obj["protected"] = False
    obj["limaVersion"] = VERSION
    obj["HostOS"], obj["HostArch"], obj["LimaHome"] = "linux", os.uname().machine, str(lima_home())
    obj["IdentityFile"] = str(lima_home() / "_config" / "user")
    return json.dumps(obj, separators=(",", ":"))


def names() -> list[str]:
    home = lima_home()
    if not home.is_dir():
        return []
    return sorted(p.name for p in home.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def cmd_list(args: list[str]) -> None:
    want_json = "--json" in args
    if want_json and "--format" in args:
        fatal("option --json conflicts with --format")
    if "--format" in args:
        want_json = args[args.index("--format") + 1] == "json"
    wanted = [a for a in args if not a.startswith("-") and a != "json"]
    have = names()
    for n in wanted:
        if n not in have:
            fatal(f"No instance matching {n} found.")
    todo = [n for n in have if not wanted or n in wanted]
    if not todo:
        log("warning", "No instance found. Run `limactl create` to create an instance.")
        return
    if want_json:
        for n in todo:
            print(instance_json(n))
    else:
        print("NAME        STATUS     SSH                VMTYPE    ARCH      CPUS    MEMORY    DISK      DIR")
        for n in todo:
            arch = os.uname().machine
            print(f"{n:<12}{status(n)[0]:<11}127.0.0.1:0        qemu      {arch:<10}4       8GiB      100GiB    "
                  f"{inst_dir(n)}")


def ensure_key() -> Path:
    cfg = lima_home() / "_config"
    cfg.mkdir(parents=True, exist_ok=True)
    key = cfg / "user"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lima", "-f", str(key)], check=True)
    return key


def do_create(name: str, file: str) -> None:
    d = inst_dir(name)
    if d.exists():
        fatal(f"instance `{name}` already exists")
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text()
        doc = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        fatal(f"failed to load YAML file {file!r}: {exc}")
    if not isinstance(doc, dict):
        fatal(f"failed to load YAML file {file!r}: not a mapping")
    ensure_key()
    d.mkdir(parents=True)
    (d / "lima.yaml").write_text(text)
    log("info", f"Run `limactl start {name}` to start the instance.")


def parse_opts(args: list[str], with_value: set[str], flags: set[str]) -> tuple[dict, list[str]]:
    opts: dict = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        key, eq, val = a.partition("=")
        if key in with_value:
            if not eq:
                i += 1
                val = args[i] if i < len(args) else fatal(f"flag needs an argument: {key}")  # type: ignore[func-returns-value]
            opts[key] = val
        elif key in flags:
            opts[key] = val if eq else "true"
        elif a.startswith("-") and a != "-":
            fatal(f"unknown flag: {a}")
        else:
            rest.append(a)
        i += 1
    return opts, rest


def cmd_create(args: list[str]) -> None:
    opts, rest = parse_opts(args, {"--name", "--cpus", "--memory", "--disk"}, {"--tty", "-y", "--yes"})
    if len(rest) != 1:
        fatal("requires exactly 1 arg (FILE.yaml)")
    name = opts.get("--name") or Path(rest[0]).stem
    do_create(name, rest[0])


def expand(script: str) -> str:
    for key, value in (("User", GUEST_USER), ("Home", GUEST_HOME), ("UID", str(GUEST_UID))):
        script = script.replace("{{." + key + "}}", value)
    return script


def run_script(pid: int, script: str, user: str, logf: Path) -> int:
    runner = 'f=$(mktemp); cat >"$f"; chmod 755 "$f"; rc=0; "$f" || rc=$?; rm -f "$f"; exit "$rc"'
    with open(logf, "ab") as out:
        return subprocess.run(guest_argv(pid, ["sh", "-c", runner], user), input=expand(script).encode(),
                              stdout=out, stderr=out, check=False, timeout=600).returncode


def mount_paths(doc: dict) -> list[str]:
    paths = []
    for m in doc.get("mounts") or []:
        loc = os.path.expanduser(str(m.get("location", "")))
        if os.path.isabs(loc) and os.path.isdir(loc):
            paths.append(loc)
    return paths


def write_ssh_config(name: str, port: int, doc: dict) -> None:
    d, key = inst_dir(name), lima_home() / "_config" / "user"
    lines = [
        f"Host lima-{name}", f'  IdentityFile "{key}"', "  StrictHostKeyChecking no",
        "  UserKnownHostsFile /dev/null", "  NoHostAuthenticationForLocalhost yes",
        "  PreferredAuthentications publickey",
        "  BatchMode yes", "  IdentitiesOnly yes", f"  User {GUEST_USER}", "  ControlMaster auto",
        f'  ControlPath "{d / "ssh.sock"}"', "  ControlPersist yes", "  Hostname 127.0.0.1", f"  Port {port}",
    ]
    if (doc.get("ssh") or {}).get("forwardAgent"):
        lines.append("  ForwardAgent yes")
    (d / "ssh.config").write_text("\n".join(lines) + "\n")
    (d / "ssh.port").write_text(f"{port}\n")


def boot(name: str, doc: dict) -> int:
    d = inst_dir(name)
    key = ensure_key()
    vm = d / "vm"
    (vm / "out").mkdir(parents=True, exist_ok=True)
    shutil.copy(f"{key}.pub", vm / "key.pub")
    for stale in (vm / "out" / "ready", vm / "pid"):
        stale.unlink(missing_ok=True)
    port = free_port()
    mounts = mount_paths(doc)
    shared = mounts[0] if mounts else str(vm / "out")
    options = ["--no-provision"] + [x for p in mounts[1:] for x in ("--bind", p)]
    with open(d / "ha.stderr.log", "ab") as errlog:
        proc = subprocess.Popen(boot_argv(vm, port, shared, *options), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=errlog, start_new_session=True)
    (d / "ha.pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 120
    while not (vm / "out" / "ready").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            kill(name)
            fatal("exiting, status={Running:false Degraded:false Exiting:true "
                  f"Errors:[the host agent process exited; see {d / 'ha.stderr.log'}]}}")
        time.sleep(0.05)
    write_ssh_config(name, port, doc)
    pid = int((vm / "pid").read_text())
    # what Lima's cloud-init does for its user: passwordless sudo for everything
    rule = f"{GUEST_USER} ALL=(ALL) NOPASSWD:ALL\n"
    subprocess.run(guest_argv(pid, ["sh", "-c", "cat > /etc/sudoers.d/90-lima-user"]), input=rule.encode(),
                   check=True, timeout=60)
    return pid


def cmd_start(args: list[str]) -> None:
    opts, rest = parse_opts(args, {"--name", "--cpus", "--memory", "--disk", "--timeout", "--set"},
                            {"--tty", "-y", "--yes", "--foreground"})
    if "--name" in opts:
        if len(rest) != 1:
            fatal("requires exactly 1 arg (FILE.yaml) with --name")
        do_create(opts["--name"], rest[0])
        name = opts["--name"]
    else:
        if len(rest) != 1:
            fatal("requires exactly 1 arg (NAME)")
        name = rest[0]
    if not inst_dir(name).is_dir():
        fatal(f'instance "{name}" does not exist, run `limactl create --name={name}` to create a new instance')
    st, message = status(name)
    if st == "Broken":
        fatal(f"errors inspecting instance: [{message}]")
    if st == "Running":
        log("info", f"The instance {name!r} is already running. Run `limactl shell {name}` to open the shell.")
        return
    doc = load_yaml(name)[0] or {}
    log("info", f'Starting the instance "{name}" with VM driver "{doc.get("vmType") or "qemu"}"')
    pid = boot(name, doc)
    log("info", "[hostagent] SSH Local Port: " + (inst_dir(name) / "ssh.port").read_text().strip())
    log("info", "[hostagent] Waiting for the essential requirement 1 of 2: \"ssh\"")
    serial = inst_dir(name) / "serial.log"
    for i, step in enumerate(doc.get("provision") or []):
        if step.get("mode", "system") != "system":
            continue
        log("info", f"[hostagent] Running provisioning script {i} (system)")
        if run_script(pid, str(step.get("script", "")), "root", serial) != 0:
            log("error", f"[hostagent] provisioning script {i} failed; see {serial}")
            fatal("degraded, status={Running:true Degraded:true Exiting:false Errors:[] SSHLocalPort:0}")
    for i, probe in enumerate(doc.get("probes") or []):
        log("info", f"Waiting for the optional requirement {i + 1}: {probe.get('description', 'user probe')!r}")
        if run_script(pid, str(probe.get("script", "")), GUEST_USER, serial) != 0:
            log("warning", f"[hostagent] user probe {i + 1}/{len(doc['probes'])} failed: {probe.get('hint', '')}")
            fatal("degraded, status={Running:true Degraded:true Exiting:false Errors:[] SSHLocalPort:0}")
    log("info", f"READY. Run `limactl shell {name}` to open the shell.")


def kill(name: str) -> None:
    d = inst_dir(name)
    pid = ha_pid(name)
    guest = None
    try:
        guest = int((d / "vm" / "pid").read_text())
    except (OSError, ValueError):
        pass
    if pid is not None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and ((pid and alive(pid)) or (guest and alive(guest))):
        time.sleep(0.05)
    for f in ("ha.pid", "ha.sock", "ssh.sock", "ssh.port"):
        (d / f).unlink(missing_ok=True)


def cmd_stop(args: list[str]) -> None:
    opts, rest = parse_opts(args, set(), {"-f", "--force", "--tty"})
    if len(rest) != 1:
        fatal("requires exactly 1 arg (NAME)")
    name, force = rest[0], "-f" in opts or "--force" in opts
    if not inst_dir(name).is_dir():
        fatal(f'unable to stop instance: instance "{name}" does not exist')
    st = status(name)[0]
    if st != "Running" and not force:
        fatal(f'expected status "Running", got "{st}"')
    log("info", "Sending SIGINT to hostagent process")
    kill(name)
    log("info", "[hostagent] Shutting down the host agent")


def cmd_delete(args: list[str]) -> None:
    opts, rest = parse_opts(args, set(), {"-f", "--force", "--tty"})
    force = "-f" in opts or "--force" in opts
    for name in rest:
        if not inst_dir(name).is_dir():
            log("warning", f"Ignoring non-existent instance {name!r}")
            continue
        if status(name)[0] == "Running" and not force:
            fatal(f"failed to delete instance {name!r}: instance is running "
                  f"(Hint: use `limactl stop {name}` to stop the instance)")
        kill(name)
        shutil.rmtree(inst_dir(name))
        log("info", f"Deleted {name!r} ({inst_dir(name)})")


def cmd_shell(args: list[str]) -> None:
    workdir = None
    if args and args[0].startswith("--workdir"):
        _, eq, value = args[0].partition("=")
        workdir, args = (value, args[1:]) if eq else (args[1] if len(args) > 1 else "", args[2:])
    if not args:
        fatal("requires at least 1 arg(s)")
    name, cmd = args[0], args[1:]
    if status(name)[0] != "Running":
        fatal(f"instance {name!r} status is not \"Running\"")
    script = shlex.join(cmd) if cmd else "exec bash -l"  # each argument quoted, as limactl does
    if workdir:
        script = f"cd {shlex.quote(workdir)} && {script}"
    cfg = inst_dir(name) / "ssh.config"
    os.execvp("ssh", ["ssh", "-F", str(cfg), "-o", "LogLevel=ERROR", f"lima-{name}", "--", script])


def main(argv: list[str]) -> None:
    args = [a for a in argv if a not in ("--tty=false", "-y", "--yes", "--debug")]
    if not args or args[0] in ("-h", "--help"):
        print("Usage: limactl [command]")
        return
    if args[0] in ("--version", "-v"):
        print(f"limactl version {VERSION}")
        return
    cmds = {"list": cmd_list, "ls": cmd_list, "create": cmd_create, "start": cmd_start, "stop": cmd_stop,
            "delete": cmd_delete, "rm": cmd_delete, "remove": cmd_delete, "shell": cmd_shell}
    if args[0] not in cmds:
        fatal(f'unknown command "{args[0]}" for "limactl"')
    cmds[args[0]](args[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
