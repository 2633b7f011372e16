"""README's own install-and-run command, run as a newcomer runs it: an ordinary account of the test guest
with only the distribution's Python, a checkout in its home and sudo rights."""

from __future__ import annotations

import subprocess

from tests.guest import REPO

NEWCOMER = "carol"
HOME = f"/home/{NEWCOMER}.guest"  # where the harness looks for a guest account's home


def readme_install_command() -> str:
    """The first ``sh`` block under README's "Install and run": what a newcomer pastes."""
    section = (REPO / "README.md").read_text(encoding="utf-8").split("\n## Install and run\n", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def checkout_tar() -> bytes:
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"],
                           capture_output=True, check=True).stdout
    return subprocess.run(["tar", "-C", str(REPO), "--null", "-T", "-", "-cf", "-"], input=files,
                          capture_output=True, check=True).stdout


def test_readme_install_command_works_on_a_fresh_account(guest):
    command = readme_install_command()
    assert "pip install" in command and "llima-box shell -- id" in command
    assert guest.run(["useradd", "-m", "-d", HOME, "-s", "/bin/bash", NEWCOMER]).returncode == 0
    try:
        guest.sh(f"echo '{NEWCOMER} ALL=(ALL) NOPASSWD: ALL' >/etc/sudoers.d/zz-newcomer && "
                 "chmod 0440 /etc/sudoers.d/zz-newcomer").check_returncode()
        guest.run(["install", "-d", "-o", NEWCOMER, "-g", NEWCOMER, f"{HOME}/llima-box"]).check_returncode()
        guest.run(["tar", "-x", "-C", f"{HOME}/llima-box"], user=NEWCOMER,
                  input=checkout_tar()).check_returncode()
        r = guest.run(["su", "-", NEWCOMER, "-c", f"command -v python3; cd llima-box && {command}"], timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        python, _, id_line = r.stdout.partition("\n")
        assert python == "/usr/bin/python3"
        assert "uid=" in id_line and "(lb-" in id_line and NEWCOMER not in id_line.split()[0], r.stdout
    finally:
        guest.run(["su", "-", NEWCOMER, "-c", "llima-box --backend local delete-all --yes"], timeout=120)
        # its mux lives on after the command: end it, or userdel refuses (and the account, a member of the
        # group llima-box since it was provisioned, would log in to serve in later tests)
        guest.sh(f"rm -f /etc/sudoers.d/zz-newcomer; pkill -KILL -u {NEWCOMER}; sleep 0.2; "
                 f"userdel -r {NEWCOMER}").check_returncode()
        guest.reprovision().check_returncode()
