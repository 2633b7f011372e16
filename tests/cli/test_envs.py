from __future__ import annotations

import os

from llimabox import guest, names

PREFIX = "/usr/local/libexec/llima-box"


def test_create_prints_name_and_list_matches(lb, project) -> None:
    result = lb("create", str(project))
    assert result.exit_code == 0, result.stderr
    name = result.stdout.strip()
    assert name == names.env_name(str(project))
    assert lb.envs_in_guest()[name] == str(project)
    rows = {r["name"]: r for r in lb.json("list")}
    assert (rows[name]["project"], rows[name]["status"], rows[name]["backend"]) == (str(project), "running", "ssh")
    assert set(rows[name]) >= {"name", "project", "status", "backend", "created_at", "last_used_at"}
    assert name in lb("list").stdout


def test_list_reconciles_with_the_guest(lb, project, guest) -> None:
    assert lb("create", str(project)).exit_code == 0
    stray_project = guest.make_project("alice", "stray-" + project.name[-6:])
    stray = names.env_name(stray_project)
    guest.run([f"{PREFIX}/create", stray, stray_project]).check_returncode()
    gone = guest.make_shared_project("alice", "gone-" + project.name[-6:])
    gone_name = lb("create", str(gone)).stdout.strip()
    guest.run([f"{PREFIX}/delete", gone_name]).check_returncode()
    guest.run(["sh", "-c", f"kill $(cut -d' ' -f1 /run/llima-box/{names.env_name(str(project))}.holder)"])
    status = {r["name"]: r["status"] for r in lb.json("list")}
    assert status[stray] == "unknown-to-database"
    assert status[gone_name] == "missing-in-guest"
    assert status[names.env_name(str(project))] == "stopped"
    assert lb("shell", str(project), "--", "true").exit_code == 0
    assert {r["name"]: r["status"] for r in lb.json("list")}[names.env_name(str(project))] == "running"


def test_delete_by_path_and_by_name(lb, project, guest) -> None:
    name = lb("create", str(project)).stdout.strip()
    lb("shell", str(project), "--", "touch", "made-inside")
    result = lb("delete", str(project))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == name and name not in lb.envs_in_guest()
    assert (project / "made-inside").is_file()
    other = guest.make_shared_project("alice", "other-" + project.name[-6:])
    name2 = lb("create", str(other)).stdout.strip()
    assert lb("delete", name2).exit_code == 0
    assert {name, name2}.isdisjoint(r["name"] for r in lb.json("list"))


def test_delete_unknown_is_1(lb) -> None:
    result = lb("delete", "lb-nothing")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: no env 'lb-nothing'")


def test_delete_all_needs_yes_without_terminal(lb, project) -> None:
    name = lb("create", str(project)).stdout.strip()
    result = lb("delete-all")
    assert result.exit_code == 2 and "--yes" in result.stderr
    assert name in lb.envs_in_guest()
    result = lb("delete-all", "--yes")
    assert result.exit_code == 0, result.stderr
    assert lb.envs_in_guest() == {} and lb.json("list") == []


def test_create_bad_input_is_2_and_makes_nothing(lb, project, guest) -> None:
    before = lb.envs_in_guest()
    for bad, why in (
        (project / "missing", "not an existing directory"),
        ("/etc", "system directory"),
        (guest.shared / "bob" / "..", "allowed root itself"),
        ("", "project path is empty"),
    ):
        result = lb("create", str(bad))
        assert result.exit_code == 2, (bad, result.stderr)
        assert why in result.stderr and len(result.stderr.splitlines()) == 1
    assert lb.envs_in_guest() == before and lb.json("list") == [
        r for r in lb.json("list") if r["name"] in before
    ]


def test_status_json(lb) -> None:
    info = lb.json("status")
    assert info["backend"] == "ssh" and info["reachable"] and info["provisioned"]
    assert info["up_to_date"] and info["guest_version"] == guest.packaged_version()


def test_status_not_provisioned_is_1(lb, monkeypatch, tmp_path) -> None:
    import json

    monkeypatch.setattr(guest, "GUEST_PREFIX", str(tmp_path / "none"))
    result = lb("--backend", "local", "status", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["provisioned"] is False


def test_create_publish_home_and_ports(lb, project, guest) -> None:
    from tests.guest import free_port

    outside = free_port()
    result = lb("create", str(project), "--publish", f"3000:{outside}", "--publish", "5173", "--home", "96M")
    assert result.exit_code == 0, result.stderr
    name = result.stdout.strip()
    want = [{"name": name, "project": str(project), "inside": 3000, "published": outside},
            {"name": name, "project": str(project), "inside": 5173, "published": 5173}]
    assert lb.json("ports", str(project)) == want
    assert [r for r in lb.json("ports") if r["name"] == name] == want
    rows = {r["name"]: r for r in lb.json("list")}
    assert rows[name]["network"] == "isolated" and rows[name]["ports"] == [{k: w[k] for k in ("inside", "published")}
                                                                          for w in want]
    assert rows[name]["limits"]["home"] == 96 << 20
    table = lb("ports", str(project)).stdout.splitlines()
    assert table[0].split() == ["ENV", "PROJECT", "INSIDE", "PUBLISHED"]
    assert table[1].split()[-2:] == ["3000", str(outside)]
    result = lb("create", str(project), "--publish", "70000")
    assert result.exit_code == 2 and "--publish takes" in result.stderr and len(result.stderr.splitlines()) == 1
    result = lb("ports", str(project / ".." / "nothing-here"))
    assert result.exit_code == 2 and "no env for" in result.stderr


def test_stop_then_shell_starts_it_again(lb, project) -> None:
    name = lb("create", str(project)).stdout.strip()
    assert lb("shell", str(project), "--", "sh", "-c", "echo kept > ~/note").exit_code == 0
    result = lb("stop", str(project))
    assert result.exit_code == 0 and result.stdout.strip() == name, result.stderr
    assert {r["name"]: r["status"] for r in lb.json("list")}[name] == "stopped"
    assert lb("shell", str(project), "--", "cat", f"/home/{name}/note").stdout == "kept\n"
    result = lb("stop", "lb-nothing")
    assert result.exit_code == 1 and "no env" in result.stderr


def test_allow_list_and_audit_egress(lb, project) -> None:
    from tests.test_isolated import package_index_host

    index = package_index_host()
    result = lb("create", str(project), "--allow", index)
    assert result.exit_code == 0, result.stderr
    name = result.stdout.strip()
    fetch = ("import urllib.request as u\ntry:\n    u.urlopen('https://refused.invalid/', timeout=10)\n"
             "except OSError as e:\n    print(e)")
    assert "403" in lb("shell", str(project), "--", "python3", "-c", fetch).stdout
    rows = {r["name"]: r for r in lb.json("list")}
    assert rows[name]["allow"] == [index]
    refused = lb.json("audit", "--egress")
    assert [(r["name"], r["host"]) for r in refused] == [(name, "refused.invalid")]
    result = lb("create", str(project.parent / "nope"), "--allow", "not a host")
    assert result.exit_code == 2


def test_list_prune_settles_drift_and_deletes_envs_whose_project_is_gone(lb, project, guest) -> None:
    kept = lb("create", str(project)).stdout.strip()
    doomed_project = guest.make_shared_project("alice", "doomed-" + project.name[-6:])
    doomed = lb("create", str(doomed_project)).stdout.strip()
    doomed_project.rmdir()
    stray_project = guest.make_project("alice", "stray-" + project.name[-6:])
    stray = names.env_name(stray_project)
    guest.run([f"{PREFIX}/create", stray, stray_project]).check_returncode()
    vanished = lb("create", str(guest.make_shared_project("alice", "vanished-" + project.name[-6:]))).stdout.strip()
    guest.run([f"{PREFIX}/delete", vanished]).check_returncode()
    try:
        refused = lb("list", "--prune")
        assert refused.exit_code == 2 and "--yes" in refused.stderr  # no terminal here
        assert doomed in lb.envs_in_guest()
        result = lb("list", "--prune", "--yes")
        assert result.exit_code == 0, result.stderr
        actions = {line.split()[1]: line.split()[0] for line in result.stdout.splitlines()}
        mine = {name: actions.get(name) for name in (doomed, stray, vanished, kept)}  # others': other tests' drift
        assert mine == {doomed: "delete", stray: "adopt", vanished: "forget", kept: None}
        status = {r["name"]: r["status"] for r in lb.json("list")}
        assert (status.get(kept), status.get(stray), doomed in status, vanished in status) == (
            "running", "running", False, False)
        assert doomed not in lb.envs_in_guest() and kept in lb.envs_in_guest()
        assert lb("list", "--prune").stderr == "nothing to prune\n"
    finally:
        guest.run([f"{PREFIX}/delete", stray])


def test_overlapping_projects_use_the_innermost_env(lb, project, guest) -> None:
    for sub in ("sub", "sub/x", "y"):
        (project / sub).mkdir()
        os.chown(project / sub, project.stat().st_uid, project.stat().st_gid)
    outer = lb("create", str(project)).stdout.strip()
    made = lb("create", str(project / "sub"))
    inner = made.stdout.strip()
    assert made.exit_code == 0, made.stderr
    assert outer != inner
    for where, env in ((project / "sub" / "x", inner), (project / "y", outer), (project / "sub", inner)):
        result = lb("shell", str(where), "--", "sh", "-c", "id -un; pwd")
        assert result.stdout.splitlines() == [env, str(where)], result.stderr
    assert lb("delete", str(project / "sub")).stdout.strip() == inner  # exactly PATH's env
    assert outer in lb.envs_in_guest() and inner not in lb.envs_in_guest()
