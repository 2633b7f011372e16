from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.guest import Guest, GuestUnavailable


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
