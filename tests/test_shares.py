"""Shares (``create --share``): the owner's host paths in an env, and the attacks on them, in the test guest."""

from __future__ import annotations

import json
import secrets
import typing as t

import pytest

from tests.test_e2e_local import _out, _run


@pytest.fixture
def tag() -> str:
    return secrets.token_hex(3)


@pytest.fixture
def made(guest: t.Any) -> t.Iterator[list[str]]:
    """Paths and env names to remove after the test."""
    paths: list[str] = []
    yield paths
    for p in paths:
        if p.startswith("lb-"):
            guest.guest_script("delete", p)
        else:
            guest.run(["rm", "-rf", p])


def _as_alice(guest: t.Any, script: str) -> None:
    guest.run(["sh", "-c", script], user="alice").check_returncode()


def _env(guest: t.Any, made: list[str], tag: str) -> tuple[str, str]:
    name, project = f"lb-shr-{tag}", guest.make_project("alice", f"shr-{tag}")
    made += [name, project]
    return name, project


def _in(guest: t.Any, name: str, project: str, script: str) -> str:
    return guest.enter(name, project, "sh", "-c", script).stdout


def _shares(guest: t.Any, name: str) -> list[dict[str, t.Any]]:
    for line in guest.guest_script("list").stdout.splitlines():
        env = json.loads(line)
        if env["name"] == name:
            return env["shares"]
    raise AssertionError(f"{name} not listed")


def test_shares_show_read_only_or_writable_and_survive_a_restart(guest: t.Any, made: list[str], tag: str) -> None:
    name, project = _env(guest, made, tag)
    data, cfg, out = f"/Users/alice/shr-data-{tag}", f"/Users/alice/shr-cfg-{tag}", f"/Users/alice/shr-out-{tag}"
    made += [data, cfg, out]
    _as_alice(guest, f"mkdir {data} {out} && echo data >{data}/f && printf '[user]\\n\\tname = Alice\\n' >{cfg}")
    r = guest.guest_script("create", name, project, "--share", f"{data}:{data}:ro", "--share", f"{cfg}:~/.gitconfig:ro",
                           "--share", f"{out}:~/out:rw")
    assert r.returncode == 0, r.stderr
    script = (f"cat {data}/f; git config user.name; echo x >{data}/g 2>/dev/null || echo refused; "
              "echo new >~/out/made && echo wrote; ls /Users/alice | grep -c shr-cfg || true")
    assert _in(guest, name, project, script).split() == ["data", "Alice", "refused", "wrote", "0"]
    assert guest.run(["stat", "-c", "%U", f"{out}/made"]).stdout.strip() == "alice"  # the owner's on the host
    listed = {s["dst"]: (s["src"], s["mode"], s["error"]) for s in _shares(guest, name)}
    assert listed == {data: (data, "ro", None), "~/.gitconfig": (cfg, "ro", None), "~/out": (out, "rw", None)}
    assert guest.guest_script("stop", name).returncode == 0
    assert _in(guest, name, project, f"cat {data}/f ~/out/made").split() == ["data", "new"]


def test_a_share_comes_and_goes_in_a_running_env(guest: t.Any, made: list[str], tag: str) -> None:
    name, project = _env(guest, made, tag)
    data = f"/Users/alice/shr-live-{tag}"
    made.append(data)
    _as_alice(guest, f"mkdir {data} && echo live >{data}/f")
    assert guest.guest_script("create", name, project).returncode == 0
    guest.enter(name, project, "sh", "-c", "sleep 300 >/dev/null 2>&1 &").check_returncode()  # the env runs on
    assert guest.guest_script("create", name, project, "--share", f"{data}:~/live:ro").returncode == 0
    assert _in(guest, name, project, "cat ~/live/f; pgrep -c sleep").split() == ["live", "1"]  # same env, no restart
    assert guest.guest_script("create", name, project, "--unshare", "~/live").returncode == 0
    assert _in(guest, name, project, "cat ~/live/f 2>/dev/null || echo gone").split() == ["gone"]
    assert _shares(guest, name) == []


@pytest.mark.parametrize("spec, message", [
    ("{link}:~/x:ro", "symlinked component"),
    ("/Users/bob/shr-bob-{tag}:~/x:ro", "does not belong to the env's owner"),
    ("/etc:~/x:ro", "system directory"),
    ("/Users/alice:~/x:ro", "not under an allowed root"),
    ("{data}:{project}/x:ro", "the project, in it or above it"),
    ("{data}:/Users:ro", "system directory"),
    ("{data}:/Users/alice:ro", "the project, in it or above it"),
    ("{data}:~/../x:ro", "not normalised"),
    ("{data}:/etc/x:ro", "system directory"),
    ("{data}:~/x:rwx", "--share takes SRC:DST:ro|rw"),
])  # fmt: skip
def test_a_share_the_owner_may_not_grant_is_refused(guest: t.Any, made: list[str], tag: str, spec: str,
                                                    message: str) -> None:
    name, project = _env(guest, made, tag)
    data, link, bob = f"/Users/alice/shr-src-{tag}", f"/Users/alice/shr-link-{tag}", f"/Users/bob/shr-bob-{tag}"
    made += [data, link, bob]
    _as_alice(guest, f"mkdir {data} && ln -s {data} {link}")
    guest.run(["sh", "-c", f"mkdir {bob} && chown bob: {bob}"]).check_returncode()
    r = guest.guest_script("create", name, project, "--share", spec.format(link=link, tag=tag, data=data,
                                                                          project=project))
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) == 1
    assert guest.run(["test", "-e", f"/var/lib/llima-box/envs/{name}"]).returncode != 0  # nothing half-made


def test_two_shares_may_not_nest(guest: t.Any, made: list[str], tag: str) -> None:
    name, project = _env(guest, made, tag)
    data = f"/Users/alice/shr-nest-{tag}"
    made.append(data)
    _as_alice(guest, f"mkdir {data}")
    r = guest.guest_script("create", name, project, "--share", f"{data}:~/a:ro", "--share", f"{data}:~/a/b:ro")
    assert r.returncode == 2 and "may not nest" in r.stderr, r.stderr


def test_a_symlink_the_env_plants_at_a_share_target_is_not_followed(guest: t.Any, made: list[str], tag: str) -> None:
    """The env controls its home: links at (or above) a share's target into its project must not carry the
    mount (or the directories made for it) into the project, at a restart or in a running env."""
    name, project = _env(guest, made, tag)
    data = f"/Users/alice/shr-plant-{tag}"
    made.append(data)
    _as_alice(guest, f"mkdir {data} {project}/victim && echo share >{data}/f")
    _in(guest, name, project, f"ln -s {project}/victim ~/at && ln -s {project} ~/above")
    r = guest.guest_script("create", name, project, "--share", f"{data}:~/above/sub:ro")
    assert r.returncode == 1 and "cannot mount share ~/above/sub" in r.stderr, r.stderr  # live: refused
    assert guest.guest_script("create", name, project, "--share", f"{data}:~/at:ro").returncode == 1
    assert _shares(guest, name) == []  # not recorded either
    _in(guest, name, project, "rm ~/at ~/above && mkdir ~/above")
    assert guest.guest_script("create", name, project, "--share", f"{data}:~/above/sub:ro").returncode == 0
    _in(guest, name, project, f"mv ~/above ~/moved && ln -s {project} ~/above")  # under the mount, swapped
    assert guest.guest_script("stop", name).returncode == 0
    assert _in(guest, name, project, "test -e sub && echo leaked; echo ok").split() == ["ok"]
    assert guest.run(["ls", "-A", f"{project}/victim"]).stdout == ""  # nothing mounted or made in the project
    assert guest.run(["test", "-e", f"{project}/sub"]).returncode != 0
    assert "symbolic links" in _shares(guest, name)[0]["error"]


def test_the_cli_shares_the_git_identity_and_a_worktrees_repository(guest: t.Any, made: list[str], tag: str) -> None:
    """A new env commits as the user, and git works in a worktree; git_identity = false turns the first off."""
    home, repo, tree = f"/Users/alice/shr-home-{tag}", f"/Users/alice/shr-repo-{tag}", f"/Users/alice/shr-wt-{tag}"
    made += [home, repo, tree]
    guest.install_cli()
    env = f"HOME={home} GIT_CONFIG_NOSYSTEM=1"
    _as_alice(guest, f"mkdir {home} {repo} && printf '[user]\\n\\tname = Alice A\\n\\temail = a@example.org\\n' "
                     f">{home}/.gitconfig && cd {repo} && {env} git init -q && "
                     f"{env} git commit -q --allow-empty -m one "
                     f"&& {env} git worktree add -q {tree}")
    r = guest.run(["sh", "-c", f"{env} llima-box --backend local shell {tree} -- sh -c "
                               "'git commit -q --allow-empty -m two && git log --format=%an%n%s'"], user="alice")
    assert r.returncode == 0, r.stderr
    assert _out(r).decode().split("\n")[:3] == ["Alice A", "two", "Alice A"]
    assert "two" in guest.run(["sh", "-c", f"cd {repo} && git log --all --format=%s"], user="alice").stdout
    r = guest.run(["sh", "-c", f"{env} LLIMA_BOX_GIT_IDENTITY=0 llima-box --backend local shell {home} -- "
                               "git config user.name || echo none"], user="alice")
    assert _out(r).decode().split() == ["none"], r.stderr
    for where in (tree, home):
        _run(guest, "delete", where, "--yes")


def test_shell_share_and_config_shares_reach_the_env(guest: t.Any, made: list[str], tag: str) -> None:
    home, project, a, b = (f"/Users/alice/shr-{x}-{tag}" for x in ("chome", "cproj", "a", "b"))
    made += [home, project, a, b]
    guest.install_cli()
    _as_alice(guest, f"mkdir -p {home}/.config/llima-box {project} {a} {b} && echo A >{a}/f && echo B >{b}/f && "
                     f"printf 'shares = [\"{a}:~/a\"]\\n[projects.\"{project}\"]\\nshares = [\"{b}:rw\"]\\n' "
                     f">{home}/.config/llima-box/config.toml")
    env = f"HOME={home} XDG_CONFIG_HOME={home}/.config"
    r = guest.run(["sh", "-c", f"{env} llima-box --backend local shell {project} -- sh -c 'cat ~/a/f {b}/f'"],
                  user="alice")
    assert _out(r).decode().split() == ["A", "B"], r.stderr
    r = guest.run(["sh", "-c", f"{env} llima-box --backend local shell --share '~/.config:~/c' {project} -- "
                               "sh -c 'ls ~/c'"], user="alice")
    assert _out(r).decode().split() == ["llima-box"], r.stderr
    rows = json.loads(_out(_run(guest, "list", "--json")))
    listed = {s["dst"]: s["mode"] for row in rows if row["project"] == project for s in row["shares"]}
    assert listed == {"~/a": "ro", b: "rw", "~/c": "ro"}, rows
    r = guest.run(["sh", "-c", f"{env} llima-box --backend local create {project} --share {a}:x"], user="alice")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "absolute or ~/" in r.stderr, r.stderr
    _run(guest, "delete", project, "--yes")


def _overlay(guest: t.Any, path: str, base: str) -> None:
    """An overlayfs of alice's at ``path`` (it refuses idmapped mounts, as Lima's virtiofs does)."""
    guest.sh(f"mkdir -p {base} {path} && mount -t tmpfs t {base} && mkdir {base}/l {base}/u {base}/w && "
             f"mount -t overlay ov -o lowerdir={base}/l,upperdir={base}/u,workdir={base}/w {path} && "
             f"chown alice: {path}").check_returncode()


def test_a_directory_share_goes_through_bindfs_in_mapped_mode(guest: t.Any, made: list[str], tag: str) -> None:
    """Where the filesystem refuses idmapped mounts and the caller's uid would own new files: bindfs, from the
    env's next start (it lives in the env's PID namespace); what the env writes is the owner's."""
    name, project, data = f"lb-shrm-{tag}", f"/Users/alice/shrm-{tag}", f"/Users/alice/shrm-data-{tag}"
    try:
        _overlay(guest, project, f"/var/tmp/ovp{tag}")
        _overlay(guest, data, f"/var/tmp/ovd{tag}")
        assert guest.guest_script("create", name, project).returncode == 0
        r = guest.guest_script("create", name, project, "--share", f"{data}:~/data:rw")
        assert r.returncode == 0 and "from its next start" in r.stderr, r.stderr
        assert guest.guest_script("stop", name).returncode == 0
        out = _in(guest, name, project, "echo w >~/data/f && stat -c %U ~/data/f && id -un")
        assert out.split() == [name, name], out  # bindfs shows the owner's files as the env's own
        assert guest.run(["stat", "-c", "%U", f"{data}/f"]).stdout.strip() == "alice"
        assert [s["error"] for s in _shares(guest, name)] == [None]
    finally:
        guest.guest_script("delete", name)
        for path, base in ((project, f"/var/tmp/ovp{tag}"), (data, f"/var/tmp/ovd{tag}")):
            guest.sh(f"umount -l {path}; umount -l {base}; rmdir {path} {base}")
