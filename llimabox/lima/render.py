"""Render the embedded ``provision/lima.yaml``: its provision step and probe come from ``guest-scripts/``.

The guest side travels inside the yaml as a deterministic gzipped tar (base64), so the instance holds
exactly the scripts of the llima-box that wrote it, and a re-render tells whether it is outdated.
"""

from __future__ import annotations

import base64
import gzip
import io
import os
import re
import shlex
import tarfile
import textwrap
import typing as t
from pathlib import Path

import yaml

from llimabox import guest

__all__ = ["MARKER", "payload", "render", "rendered_version", "top_level", "with_top_level"]

#: The first line of a rendered yaml; followed by the guest-scripts version.
MARKER = "# llima-box embedded lima.yaml, guest scripts version "


def payload(ide_attach: bool = False) -> bytes:
    """``guest-scripts/`` and ``provision/`` (minus the yaml) as a reproducible tar.gz; with ``ide_attach``
    also, under ``serve/``, this llima-box's Python package, its migrations and its requirements (what
    ``provision/steps/62-serve-python.sh`` installs: the VM's own serve)."""
    tops = [("guest-scripts", guest.data_dir("guest-scripts")), ("provision", guest.data_dir("provision"))]
    if ide_attach:
        tops += [("serve/llimabox", Path(guest.__file__).resolve().parent),
                 ("serve/migrations", guest.data_dir("migrations"))]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for top, root in tops:
            for path in sorted(root.rglob("*")):
                rel = path.relative_to(root)
                if (path.is_dir() or rel.name == "lima.yaml" or "__pycache__" in rel.parts or rel.name.startswith(".")
                        or (top == "serve/llimabox" and rel.parts[0] == "_data")):
                    continue
                _add(tar, f"{top}/{rel.as_posix()}", path.read_bytes(), os.access(path, os.X_OK))
        if ide_attach:
            _add(tar, "serve/requirements.txt", _requirements().encode(), False)
    return gzip.compress(raw.getvalue(), mtime=0)


def _add(tar: tarfile.TarFile, name: str, data: bytes, executable: bool) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.uname, info.gname = len(data), 0, "root", "root"
    info.mode = 0o755 if executable else 0o644
    tar.addfile(info, io.BytesIO(data))


def _requirements() -> str:
    """llima-box's own dependencies (not the extras), one a line, as pip reads them."""
    from importlib import metadata

    reqs = metadata.requires("llima-box") or []
    return "".join(f"{r}\n" for r in sorted(reqs) if "extra ==" not in r)


def _provision_script(roots: str, ide_attach: bool) -> str:
    blob = "\n".join(textwrap.wrap(base64.b64encode(payload(ide_attach)).decode("ascii"), 76))
    return (
        "#!/bin/bash\n"
        "# llima-box: install the guest side (idempotent; runs as root at every boot)\n"
        "set -euo pipefail\n"
        "tmp=$(mktemp -d /tmp/llima-box-provision.XXXXXXXX)\n"
        "trap 'rm -rf -- \"$tmp\"' EXIT\n"
        "base64 -d >\"$tmp/payload.tar.gz\" <<'LLIMA_BOX_PAYLOAD'\n"
        f"{blob}\n"
        "LLIMA_BOX_PAYLOAD\n"
        "tar -xzf \"$tmp/payload.tar.gz\" -C \"$tmp\" --no-same-owner\n"
        "# bindfs: where a host share (9p, virtiofs) refuses idmapped mounts and the guest decides ownership, envs\n"
        "# keep their own uid through it; passt: pasta gives isolated envs their network; tinyproxy-bin: the\n"
        "# filtering proxy of an env with an allow-list\n"
        "command -v bindfs >/dev/null && command -v pasta >/dev/null && command -v tinyproxy >/dev/null || "
        "{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bindfs passt tinyproxy-bin "
        ">/dev/null; } || echo 'llima-box: installing bindfs passt tinyproxy-bin failed; some envs cannot start' >&2\n"
        f"bash \"$tmp/provision/install.sh\" --user \"{{{{.User}}}}\" --roots {shlex.quote(roots)}\n"
    )


def _probe_script(version: int) -> str:
    return (
        "#!/bin/bash\n"
        "# llima-box: the guest scripts are installed at the expected version\n"
        "set -euo pipefail\n"
        f"test \"$({guest.GUEST_PREFIX}/version)\" = {version}\n"
    )


def render(host_home: str | None = None, ide_attach: bool = False) -> str:
    """The embedded lima.yaml, ready for ``limactl create``.

    :param host_home: the host home (mounted at the same path; where projects may live).
    :param ide_attach: provisioning installs llima-box in the VM and runs serve on its loopback.
    """
    roots = host_home or os.path.expanduser("~")
    version = guest.packaged_version()
    doc: dict[str, t.Any] = yaml.safe_load((guest.data_dir("provision") / "lima.yaml").read_text(encoding="utf-8"))
    doc["provision"] = [{"mode": "system", "script": _provision_script(roots, ide_attach)}]
    doc["probes"] = [
        {
            "mode": "readiness",
            "description": f"llima-box guest scripts version {version} installed",
            "script": _probe_script(version),
            "hint": "the llima-box guest side did not install: see `llima-box vm logs`, then `llima-box vm provision`",
        }
    ]
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000)
    return f"{MARKER}{version}\n{body}"


def rendered_version(text: str) -> int | None:
    """The guest-scripts version of a yaml this module rendered; ``None`` for any other file."""
    first = text.split("\n", 1)[0]
    if not first.startswith(MARKER):
        return None
    try:
        return int(first[len(MARKER) :])
    except ValueError:
        return None


def top_level(text: str, keys: t.Iterable[str]) -> dict[str, t.Any]:
    """The values of the top-level ``keys`` a lima.yaml sets (absent keys are left out)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    return {k: doc[k] for k in keys if isinstance(doc, dict) and doc.get(k) is not None}


def with_top_level(text: str, values: t.Mapping[str, t.Any]) -> str:
    """``text`` with each top-level ``key: value`` of ``values`` set, its comments and layout kept.

    A top-level key starts a line (block scalars are indented), so a line edit is enough.
    """
    for key, value in values.items():
        line = f"{key}: {yaml.safe_dump(value, default_flow_style=True).splitlines()[0]}"
        pattern = re.compile(rf"^{re.escape(key)}:.*$", re.MULTILINE)
        text, found = pattern.subn(lambda _m, line=line: line, text, count=1)
        if not found:
            text = text.rstrip("\n") + f"\n{line}\n"
    return text


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (scripts) as literal blocks."""


def _literal(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _literal)
