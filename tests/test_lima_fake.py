"""The fake limactl behaves like Lima's (docs: messages, exit codes, JSON Lines, $LIMA_HOME layout),
and llimabox.lima.limactl drives it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from llimabox.lima import limactl, render
from tests.lima_env import FakeLima, fake_lima


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLima]:
    yield from fake_lima()


@pytest.fixture(scope="module")
def yaml_file(fake: FakeLima) -> str:
    path = fake.dir / "vm.yaml"
    path.write_text(render.render(str(fake.home)))
    return str(path)


def test_version_and_no_instances(fake: FakeLima) -> None:
    assert fake.limactl("--version").stdout == "limactl version 2.2.0\n"
    r = fake.limactl("list", "--json")
    assert (r.returncode, r.stdout) == (0, "")
    assert "level=warning" in r.stderr
    assert fake.limactl("list", "--json", "--format", "json").returncode == 1


def test_unknown_instance(fake: FakeLima) -> None:
    r = fake.limactl("list", "nope", "--json")
    assert (r.returncode, r.stdout) == (1, "")
    assert "No instance matching nope found." in r.stderr
    r = fake.limactl("delete", "nope")
    assert r.returncode == 0 and "level=warning" in r.stderr
    assert limactl.Limactl(environ=fake.env).get("nope") is None


def test_lifecycle_json_and_layout(fake: FakeLima, yaml_file: str) -> None:
    lc = limactl.Limactl(environ=fake.env)
    lc.create("t1", yaml_file)
    r = fake.limactl("create", "--tty=false", "--name", "t1", yaml_file)
    assert r.returncode == 1 and "instance `t1` already exists" in r.stderr
    (line,) = fake.limactl("list", "--json").stdout.splitlines()
    obj = json.loads(line)
    assert list(obj)[:6] == ["name", "hostname", "status", "dir", "vmType", "arch"]
    assert (obj["name"], obj["hostname"], obj["status"]) == ("t1", "lima-t1", "Stopped")
    assert "sshLocalPort" not in obj and isinstance(obj["protected"], bool)
    r = fake.limactl("stop", "t1")
    assert r.returncode == 1 and 'expected status \\"Running\\", got \\"Stopped\\"' in r.stderr
    assert fake.limactl("stop", "-f", "t1").returncode == 0

    r = fake.limactl("start", "--tty=false", "t1")
    assert r.returncode == 0, r.stderr
    assert "READY. Run `limactl shell t1` to open the shell." in r.stderr
    r = fake.limactl("start", "--tty=false", "t1")
    assert r.returncode == 0 and "already running" in r.stderr
    inst = lc.get("t1")
    assert inst is not None and inst.status == "Running" and inst.user == "alice"
    assert isinstance(json.loads(fake.limactl("list", "--json", "t1").stdout)["sshLocalPort"], int)
    home = fake.lima_home
    assert (home / "_config" / "user").exists() and (home / "_config" / "user.pub").exists()
    cfg = limactl.read_ssh_config(inst.ssh_config_file or "")
    assert cfg["host"] == "lima-t1" and cfg["hostname"] == "127.0.0.1" and int(cfg["port"]) == inst.ssh_local_port
    assert cfg["identityfile"] == str(home / "_config" / "user") and cfg["user"] == "alice"
    assert cfg["stricthostkeychecking"] == "no" and cfg["userknownhostsfile"] == "/dev/null"
    assert cfg["forwardagent"] == "yes"
    r = fake.limactl("shell", "t1", "/usr/local/libexec/llima-box/version")
    assert r.returncode == 0
    assert r.stdout.strip() == str(render.rendered_version(Path(yaml_file).read_text()))
    assert fake.limactl("shell", "t1", "sh", "-c", "exit 7").returncode == 7
    r = fake.limactl("shell", "--workdir", "/tmp", "t1", "sh", "-c", 'pwd; echo "$0"', "a b")
    assert r.stdout == "/tmp\na b\n"

    r = fake.limactl("delete", "t1")
    assert r.returncode == 1 and "running" in r.stderr
    with pytest.raises(limactl.LimactlError, match="running"):
        lc.delete("t1")
    lc.stop("t1")
    assert (home / "t1" / "ssh.config").exists()  # kept after stop
    assert lc.get("t1").status == "Stopped"  # type: ignore[union-attr]
    lc.delete("t1")
    assert lc.get("t1") is None


def test_failing_probe_is_degraded(fake: FakeLima) -> None:
    path = fake.dir / "bad.yaml"
    path.write_text("images: []\nprobes:\n- mode: readiness\n  script: |\n    #!/bin/sh\n    exit 1\n  hint: fix it\n")
    r = fake.limactl("start", "--tty=false", "--name", "t2", str(path))
    assert r.returncode == 1 and "degraded" in r.stderr
    assert limactl.last_error(r.stderr, "").startswith("degraded")
    assert limactl.Limactl(environ=fake.env).get("t2").status == "Running"  # type: ignore[union-attr]
    assert fake.limactl("delete", "-f", "t2").returncode == 0


def test_broken_instance(fake: FakeLima, yaml_file: str) -> None:
    limactl.Limactl(environ=fake.env).create("t3", yaml_file)
    (fake.lima_home / "t3" / "lima.yaml").write_text("images: [\n")
    inst = limactl.Limactl(environ=fake.env).get("t3")
    assert inst is not None and inst.status == "Broken" and inst.message
    assert fake.limactl("delete", "-f", "t3").returncode == 0


def test_parse_list_ignores_unknown_keys() -> None:
    (inst,) = limactl.parse_list('{"name":"a","status":"Running","dir":"/d","newKey":[1],"sshLocalPort":0}\n')
    assert (inst.name, inst.status, inst.ssh_local_port) == ("a", "Running", None)
    with pytest.raises(limactl.LimactlError):
        limactl.parse_list("[1]\n")


def test_log_lines_and_ssh_config_parsing(tmp_path: Path) -> None:
    line = 'time="2026-01-01T00:00:00Z" level=fatal msg="instance \\"x\\" already exists"'
    assert limactl.log_message(line) == 'instance "x" already exists'
    assert limactl.log_message("level=info msg=READY.") == "READY."
    assert limactl.log_message("plain text ") == "plain text"
    assert limactl.last_error("level=info msg=a\nlevel=error msg=b\nlevel=info msg=c\n", "d") == "b"
    cfg = tmp_path / "ssh.config"
    cfg.write_text('# comment\nHost lima-x\n  IdentityFile "/a b/user"\n  Port=2222\n  User me\n'
                   'Host other\n  User no\n')
    assert limactl.read_ssh_config(cfg) == {"host": "lima-x", "identityfile": "/a b/user", "port": "2222", "user": "me"}


def test_bad_instance_names_are_refused() -> None:
    for bad in ("", "-x", "a/b", "a..b", "x;rm"):
        with pytest.raises(limactl.InvalidInput):
            limactl.check_name(bad)
    assert limactl.check_name("llima-box.2") == "llima-box.2"
