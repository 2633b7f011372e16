"""Shell completion: env names for PATH|NAME, directories for projects (click's protocol, as bash runs it)."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys

from llimabox.store import EnvRecord, Store


def complete(home: str, words: str) -> list[str]:
    env = {**os.environ, "LLIMA_BOX_HOME": home, "_LLIMA_BOX_COMPLETE": "bash_complete", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split(" ")) - 1)}
    r = subprocess.run([sys.executable, "-m", "llimabox"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and not r.stderr, r.stderr
    return r.stdout.splitlines()


def test_env_names_and_directories(tmp_path) -> None:
    store = Store(tmp_path / "state.db")
    now = datetime.datetime.now(datetime.UTC)
    for name in ("lb-app-aaaa", "lb-api-bbbb", "lb-web-cccc"):
        store.upsert(EnvRecord(name, f"/p/{name}", "local", "local", now, None, None))
    store.close()
    home = str(tmp_path)
    for verb in ("delete", "stop", "export"):
        assert complete(home, f"llima-box {verb} lb-ap") == ["plain,lb-api-bbbb", "plain,lb-app-aaaa", "dir,lb-ap"]
    assert complete(home, "llima-box shell ~/sr") == ["dir,~/sr"]
    assert complete(home, "llima-box create ") == ["dir,"]
    assert "plain,export" in complete(home, "llima-box ex")
