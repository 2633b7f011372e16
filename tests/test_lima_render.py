"""The embedded lima.yaml renders to YAML that Lima accepts, with the guest side from guest-scripts/."""

from __future__ import annotations

import base64
import gzip
import io
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from llimabox import guest
from llimabox.lima import render

REPO = Path(__file__).resolve().parent.parent


def _doc() -> dict:
    return yaml.safe_load(render.render("/Users/me"))


def test_keys_and_types() -> None:
    doc = _doc()
    archs = {img["arch"]: img["location"] for img in doc["images"]}
    assert set(archs) == {"x86_64", "aarch64"}
    assert all("24.04" in loc and loc.startswith("https://") for loc in archs.values())
    assert (doc["cpus"], doc["memory"], doc["disk"]) == (4, "8GiB", "100GiB")
    assert isinstance(doc["cpus"], int)
    assert doc["mounts"] == [{"location": "~", "writable": True}]
    assert doc["ssh"]["localPort"] == 0 and doc["ssh"]["forwardAgent"] is True
    assert doc["containerd"] == {"system": False, "user": False}
    (step,) = doc["provision"]
    assert step["mode"] == "system" and step["script"].startswith("#!/bin/bash\n")
    (probe,) = doc["probes"]
    assert probe["mode"] == "readiness" and probe["script"].startswith("#!")
    assert set(probe) <= {"mode", "description", "script", "hint"}
    assert f"= {guest.packaged_version()}\n" in probe["script"]


def test_payload_is_the_guest_scripts() -> None:
    script = _doc()["provision"][0]["script"]
    blob = re.search(r"<<'LLIMA_BOX_PAYLOAD'\n(.*?)\nLLIMA_BOX_PAYLOAD\n", script, re.DOTALL)
    assert blob
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(base64.b64decode(blob.group(1))))) as tar:
        names = set(tar.getnames())
        for src in (REPO / "guest-scripts").iterdir():
            assert f"guest-scripts/{src.name}" in names
            assert tar.extractfile(f"guest-scripts/{src.name}").read() == src.read_bytes()  # type: ignore[union-attr]
        assert "provision/install.sh" in names and "provision/lima.yaml" not in names
    assert '--user "{{.User}}" --roots /Users/me\n' in script


def test_render_is_reproducible_and_marked() -> None:
    a, b = render.render("/h/x y"), render.render("/h/x y")
    assert a == b
    assert render.rendered_version(a) == guest.packaged_version()
    assert render.rendered_version("images: []\n") is None
    assert "--roots '/h/x y'" in a


def test_scripts_are_shellcheck_clean(tmp_path: Path) -> None:
    doc = _doc()
    for i, script in enumerate([doc["provision"][0]["script"], doc["probes"][0]["script"]]):
        f = tmp_path / f"s{i}.sh"
        f.write_text(script.replace("{{.User}}", "me"))
        r = subprocess.run(["shellcheck", str(f)], capture_output=True, text=True, check=False)
        assert r.returncode == 0, r.stdout


def test_default_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    from llimabox.backends import choose_kind
    from llimabox.config import Config
    from llimabox.errors import InvalidInput

    monkeypatch.setattr("shutil.which", lambda name: "/opt/bin/limactl" if name == "limactl" else None)
    assert choose_kind(Config()) == "lima"
    assert choose_kind(Config(backend="local")) == "local"
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr("sys.platform", "linux")
    assert choose_kind(Config()) == "local"
    monkeypatch.setattr("sys.platform", "darwin")
    with pytest.raises(InvalidInput, match="brew install lima"):
        choose_kind(Config())


def test_top_level_keys_are_set_in_place() -> None:
    text = render.render("/h")
    out = render.with_top_level(text, {"cpus": 2, "memory": "3GiB", "vmType": "vz"})
    assert render.rendered_version(out) == guest.packaged_version()  # the marker line stays
    assert render.top_level(out, ["cpus", "memory", "disk", "vmType"]) == {
        "cpus": 2, "memory": "3GiB", "disk": "100GiB", "vmType": "vz"}
    assert yaml.safe_load(out)["provision"] == yaml.safe_load(text)["provision"]
    mine = "# mine\nimages: []\ncpus: 4  # four\n"
    assert render.with_top_level(mine, {"cpus": 1, "disk": "9GiB"}) == "# mine\nimages: []\ncpus: 1\ndisk: 9GiB\n"
    assert render.top_level("images: [\n", ["cpus"]) == {}


def test_ide_attach_ships_the_python_package() -> None:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(render.payload(ide_attach=True)))) as tar:
        names = set(tar.getnames())
        reqs = tar.extractfile("serve/requirements.txt").read().decode()  # type: ignore[union-attr]
    assert {"serve/llimabox/serve/server.py", "serve/llimabox/guest.py", "serve/migrations/env.py"} <= names
    assert not any("__pycache__" in n or "/_data/" in n for n in names)
    assert "paramiko>=3.4\n" in reqs and "pytest" not in reqs
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(render.payload()))) as tar:
        assert not any(n.startswith("serve/") for n in tar.getnames())
