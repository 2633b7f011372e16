"""Configuration precedence and errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llimabox.config import FIELDS, Config, load_config
from llimabox.errors import InvalidInput


def test_defaults_file_env_flags(tmp_path):
    env = {"LLIMA_BOX_HOME": str(tmp_path)}
    assert load_config(env) == Config()
    (tmp_path / "config.toml").write_text('backend = "ssh"\nhost = "a@b"\nforward_agent = true\n')
    assert load_config(env).host == "a@b"
    env["LLIMA_BOX_HOST"] = "c@d"
    env["LLIMA_BOX_FORWARD_AGENT"] = "no"
    cfg = load_config(env, {"host": None, "connect_timeout": 3})
    assert (cfg.backend, cfg.host, cfg.forward_agent, cfg.connect_timeout) == ("ssh", "c@d", False, 3.0)
    assert load_config(env, {"host": "e@f"}).host == "e@f"


@pytest.mark.parametrize("text, message", [
    ("nope = 1\n", "unknown key 'nope'"),
    ("forward_agent = 'maybe'\n", "forward_agent must be a bool"),
    ("backend = \n", "config.toml"),
])
def test_bad_file(tmp_path, text, message):
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(InvalidInput, match=message):
        load_config({"LLIMA_BOX_HOME": str(tmp_path)})


def test_xdg_locations(tmp_path):
    from llimabox import paths

    env = {"XDG_STATE_HOME": "/s", "XDG_CONFIG_HOME": "/c"}
    assert str(paths.db_path(env)) == "/s/llima-box/state.db"
    assert str(paths.config_path(env)) == "/c/llima-box/config.toml"


def test_every_key_is_documented_in_the_readme():
    """README's configuration table names each key with its variable, type and default."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    for key, typ, _default, _help in FIELDS:
        row = f"| `{key}` | `LLIMA_BOX_{key.upper()}` | {typ.__name__} |"
        assert row in readme, key


@pytest.mark.parametrize("var, value, message", [
    ("LLIMA_BOX_CONNECT_TIMEOUT", "-1", "connect_timeout must be above 0"),
    ("LLIMA_BOX_CONNECT_TIMEOUT", "0", "connect_timeout must be above 0"),
    ("LLIMA_BOX_CONNECT_TIMEOUT", "nan", "connect_timeout must be a finite number"),
    ("LLIMA_BOX_SERVE_IDLE_TIMEOUT", "-5", "serve_idle_timeout must be at least 0"),
])  # fmt: skip
def test_numbers_out_of_range_are_refused_with_one_line(tmp_path, var, value, message):
    with pytest.raises(InvalidInput, match=message):
        load_config({"LLIMA_BOX_HOME": str(tmp_path), var: value})


def test_a_negative_timeout_is_a_clear_error_not_a_traceback(tmp_path):
    env = {**os.environ, "LLIMA_BOX_HOME": str(tmp_path), "LLIMA_BOX_CONNECT_TIMEOUT": "-1"}
    r = subprocess.run([sys.executable, "-m", "llimabox", "status"], capture_output=True, text=True, env=env,
                       timeout=60, check=False)  # fmt: skip
    assert r.returncode == 2 and r.stderr.startswith("Error: ") and len(r.stderr.splitlines()) == 1, r.stderr
    assert "connect_timeout must be above 0" in r.stderr


def test_lists_and_project_tables(tmp_path):
    from llimabox.config import project_shares

    (tmp_path / "config.toml").write_text(
        'shares = ["~/.claude:rw"]\nvm_packages = ["nodejs", "npm"]\n'
        '[projects."~/code/app"]\nshares = ["~/data:/srv/data"]\n')
    env = {"LLIMA_BOX_HOME": str(tmp_path), "HOME": str(tmp_path)}
    cfg = load_config(env)
    assert cfg.vm_packages == ("nodejs", "npm")
    app = os.path.expanduser("~/code/app")
    assert project_shares(cfg, app) == ("~/.claude:rw", "~/data:/srv/data")
    assert project_shares(cfg, app + "x") == ("~/.claude:rw",)
    assert load_config({**env, "LLIMA_BOX_VM_PACKAGES": "jq, tree"}).vm_packages == ("jq", "tree")


@pytest.mark.parametrize("text, message", [
    ("shares = '~/.claude'\n", "shares must be a list of strings"),
    ("shares = [1]\n", "shares must be a list of strings"),
    ('[projects."/p"]\nenv_memory = "1G"\n', "may hold only shares"),
])  # fmt: skip
def test_bad_lists_and_project_tables(tmp_path, text, message):
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(InvalidInput, match=message):
        load_config({"LLIMA_BOX_HOME": str(tmp_path)})
