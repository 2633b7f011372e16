"""The mux's wire format: whatever a command line, a directory and an environment hold arrives unchanged."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llimabox.mux import wire

# what a POSIX argv, path or environment can hold: any byte but NUL (as str, through surrogateescape)
no_nul = st.binary(max_size=40).map(lambda b: os.fsdecode(b.replace(b"\0", b"")))
keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)


@given(op=st.sampled_from(["shell", "create", "list"]), cwd=no_nul, path=st.none() | no_nul,
       overrides=st.dictionaries(keys, no_nul, max_size=3), env=st.dictionaries(keys, no_nul, max_size=5),
       cmd=st.lists(no_nul, max_size=6))  # fmt: skip
def test_request_round_trip(op, cwd, path, overrides, env, cmd) -> None:
    message = wire.encode_request(wire.Request("1.0", op, cwd, path, overrides, env, cmd))
    assert wire.unpack_size(message) == len(message) - 4
    got = wire.decode_request(message[4:])
    assert (got.version, got.op, got.cwd, got.path, got.overrides, got.env, got.cmd) == (
        "1.0", op, cwd, path, overrides, env, cmd)


@given(code=st.none() | st.integers(0, 255), text=st.text(max_size=50))
def test_reply_round_trip(code, text) -> None:
    message = wire.encode_reply(wire.Reply(code, fallback=text if code is None else "", out=text, error=text))
    got = wire.decode_reply(message[4:])
    clean = text.replace("\0", "")
    assert (got.exit, got.out, got.error) == (code, clean, clean)


@pytest.mark.parametrize("body", [b"", b"1\0shell", b"1\0shell\0/\0x\x000\x000", b"1\0shell\0/\0-\x003\0a=b\x000",
                                  b"1\0shell\0/\0-\0z\x000", b"1\0shell\0/\0-\x001\0novalue\x000"])
def test_malformed_requests_are_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        wire.decode_request(body)


def test_oversized_message_is_refused() -> None:
    with pytest.raises(ValueError):
        wire.unpack_size((wire.MAX_MESSAGE + 1).to_bytes(4, "big"))


def test_the_client_imports_only_what_it_needs() -> None:
    """On a bare interpreter (no site hooks) the hot path loads none of the costly standard modules."""
    import subprocess
    import sys

    import llimabox

    where = os.path.dirname(os.path.dirname(os.path.abspath(llimabox.__file__)))
    code = (
        f"import sys; sys.path.insert(0, {where!r})\n"
        "import llimabox.launcher, llimabox.mux.client\n"
        "print(sorted(m for m in ('typing', 'pathlib', 'json', 'socket', 're', 'enum') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
