"""Check and use the same object: a project path swapped for a symlink while its env is being
built never gives the env what the symlink points to."""

from __future__ import annotations

import secrets
import subprocess

from tests.guest import Guest

#: Swaps two names atomically (renameat2 RENAME_EXCHANGE) as fast as it can, until killed or 60 s.
SWAPPER = """
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
a, b = (p.encode() for p in sys.argv[1:3])
end = time.monotonic() + 60
print("swapping", flush=True)
while time.monotonic() < end:
    for _ in range(1000):
        libc.renameat2(-100, a, -100, b, 2)
"""


def env_sees(guest: Guest, name: str, path: str) -> list[str]:
    holder = guest.run(["cat", f"/run/llima-box/{name}.holder"]).stdout.split()
    if not holder:
        return []
    return guest.run(["nsenter", "-t", holder[0], "-m", "ls", "-a", path]).stdout.split()


def test_a_swapped_symlink_never_becomes_the_project(guest: Guest, env_name: str) -> None:
    work = guest.make_project("alice", "work" + secrets.token_hex(3))
    svc, decoy = f"{work}/svc", f"{work}/decoy"
    guest.run(["sh", "-c", f"echo key > /Users/alice/home-marker && mkdir {svc} && touch {svc}/svc-marker && "
                           f"ln -s /Users/alice {decoy} && chown -h alice: /Users/alice/home-marker {svc} "
                           f"{svc}/svc-marker {decoy}"]).check_returncode()
    made = 0
    with subprocess.Popen(guest.argv(["python3", "-c", SWAPPER, svc, decoy], user="alice"),
                          stdout=subprocess.PIPE, text=True) as swapper:
        try:
            assert swapper.stdout.readline() == "swapping\n"
            for _ in range(40):
                if guest.guest_script("create", env_name, svc).returncode == 0:
                    made += 1
                    seen = env_sees(guest, env_name, svc)
                    assert "home-marker" not in seen, "the env got the home through the symlink"
                    assert seen and "svc-marker" in seen
                assert guest.guest_script("delete", env_name).returncode == 0
        finally:
            swapper.kill()
    assert made > 0  # the race was run, not refused every time
