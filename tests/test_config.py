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


SECRET = """[secrets.anthropic]
hosts = ["api.anthropic.com"]
header = "x-api-key"
from_env = "MY_KEY"
env = "ANTHROPIC_API_KEY"
projects = ["~/src/app"]
"""


def test_a_secret_table_and_what_create_gets_on_stdin(tmp_path):
    import json

    from llimabox import api

    (tmp_path / "config.toml").write_text(SECRET + """
[secrets.openai]
hosts = ["api.openai.com"]
header = "Authorization: Bearer"
from_file = "~/openai-key"
env = "OPENAI_API_KEY"
projects = ["*"]
""")
    (tmp_path / "openai-key").write_text("sk-file\nsecond line\n")
    env = {"LLIMA_BOX_HOME": str(tmp_path), "HOME": str(tmp_path), "MY_KEY": "sk-env"}
    config = load_config(env)
    app = os.path.expanduser("~/src/app")
    assert [s.name for s in config.secrets] == ["anthropic", "openai"]
    assert config.secrets[0].projects == (app,)
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(tmp_path)
    try:
        flag, data = api.secret_input(config, app, env)
        assert flag == ["--secrets-from-stdin"]
        lines = [json.loads(line) for line in data.decode().splitlines()]
        assert lines[0] == {"name": "anthropic", "hosts": ["api.anthropic.com"], "header": "x-api-key", "prefix": "",
                            "value": "sk-env", "env": "ANTHROPIC_API_KEY"}
        assert (lines[1]["header"], lines[1]["prefix"], lines[1]["value"]) == ("Authorization", "Bearer ", "sk-file")
        flag, data = api.secret_input(config, "/elsewhere", env)
        assert [json.loads(line)["name"] for line in data.decode().splitlines()] == ["openai"]
    finally:
        if old is not None:
            os.environ["HOME"] = old
    assert api.secret_input(Config(), "/x", env) == ([], None)  # no secrets: no flag, no stdin
    assert api.secret_input(Config(), "/x", env, always=True) == (["--secrets-from-stdin"], b"")


@pytest.mark.parametrize("change, message", [
    ('value = "sk"\n', "a value never goes in the config file"),
    ('hosts = ["API.example.com"]\n', "hosts takes host names"),
    ('hosts = []\n', "hosts must be a non-empty list"),
    ('header = "Host"\n', "header is a header name"),
    ('header = "x api key"\n', "header is a header name"),
    ('env = "PATH"\n', "env is the variable the env gets"),
    ('from_file = "~/k"\n', "exactly one of from_env"),
    ('nope = 1\n', "unknown key 'nope'"),
    ('projects = "*"\n', "projects must be a non-empty list"),
])
def test_a_bad_secret_table_is_one_line(tmp_path, change, message):
    key = change.split(" ")[0]
    text = "".join(line + "\n" for line in SECRET.splitlines() if not line.startswith(key + " ")) + change
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(InvalidInput, match=message) as e:
        load_config({"LLIMA_BOX_HOME": str(tmp_path)})
    assert "\n" not in str(e.value)


def test_a_secret_value_that_is_missing_or_not_one_line_is_refused(tmp_path):
    from llimabox import api

    (tmp_path / "config.toml").write_text(SECRET.replace('["~/src/app"]', '["*"]'))
    config = load_config({"LLIMA_BOX_HOME": str(tmp_path)})
    with pytest.raises(InvalidInput, match="the variable MY_KEY is not set"):
        api.secret_input(config, "/x", {})
    with pytest.raises(InvalidInput, match="printable ASCII on one line") as e:
        api.secret_input(config, "/x", {"MY_KEY": "sk\x1bsecret"})
    assert "secret" not in str(e.value).replace("secret anthropic", "")
