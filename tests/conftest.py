from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.guest import Guest, GuestUnavailable


@pytest.fixture(scope="session", autouse=True)
def _short_lived_mux() -> Iterator[None]:
    """Background connections started by tests end a few seconds after their last command."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLIMA_BOX_MUX_IDLE", "3")
        yield


@pytest.fixture(scope="session")
def guest() -> Iterator[Guest]:
    """One provisioned copy-on-write guest for the whole session."""
    try:
        g = Guest()
    except GuestUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    with g:
        yield g


@pytest.fixture
def env_name() -> str:
    return "lb-t" + secrets.token_hex(6)


@pytest.fixture
def project(guest: Guest) -> str:
    return guest.make_project("alice", "p" + secrets.token_hex(4))
