from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llimabox import names
from llimabox.errors import InvalidInput


@given(st.text(min_size=1, max_size=300).filter(lambda s: "\x00" not in s))
def test_env_name_always_valid(base: str) -> None:
    project = "/home/alice/" + base.replace("/", "_")
    name = names.env_name(project)
    assert names.NAME_RE.fullmatch(name)
    assert len(name) <= 32
    assert names.env_name(project) == name


def test_env_name_slug_and_hash() -> None:
    name = names.env_name("/home/alice/My Project!!")
    assert name.startswith("lb-my-project-")
    assert len(name) == len("lb-my-project-") + 14
    assert names.env_name("/home/bob/My Project!!") != name


def test_env_name_empty_slug() -> None:
    name = names.env_name("/home/alice/___")
    assert names.NAME_RE.fullmatch(name) and len(name) == 3 + 14


def test_env_name_long_base_is_trimmed() -> None:
    name = names.env_name("/home/alice/" + "abcdefghijk-" * 5)
    assert name.startswith("lb-abcdefghijk-") and "--" not in name


def test_resolve_project_follows_symlinks(tmp_path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    assert names.resolve_project(tmp_path / "link") == os.path.realpath(real)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: (p / "f").write_text("x") and p / "f", "not a directory"),
        (lambda p: p / "bad\nname", "control character"),
        (lambda p: p / ("x" * 200) / ("y" * 200) / ("z" * 200) / ("w" * 200) / ("v" * 200), "1024 bytes"),
    ],
)
def test_resolve_project_rejects(tmp_path, make, message) -> None:
    with pytest.raises(InvalidInput, match=message) as info:
        names.resolve_project(make(tmp_path))
    assert "\n" not in str(info.value).replace("\\n", "")


def test_normalise_project() -> None:
    assert names.normalise_project("/Users/alice//p/./q/") == "/Users/alice/p/q"
    with pytest.raises(InvalidInput):
        names.normalise_project("relative/p")
    with pytest.raises(InvalidInput):
        names.normalise_project("/")


@pytest.mark.parametrize("bad", ["lb-", "lb-A", "xx-abc", "lb-abc\n", "lb-" + "a" * 30, "lb--x"])
def test_validate_name_rejects(bad: str) -> None:
    with pytest.raises(InvalidInput):
        names.validate_name(bad)


def test_validate_name_accepts() -> None:
    assert names.validate_name("lb-app-abc") == "lb-app-abc"
