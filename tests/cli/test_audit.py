"""``llima-box audit`` over a state database with rows (the server side is tests/test_serve.py)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from llimabox.cli import cli
from llimabox.store import Store


def test_audit_text_json_and_filters(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LLIMA_BOX_HOME", str(tmp_path))
    store = Store(tmp_path / "state.db")
    store.add_auth("alice+web", "alice", "10.0.0.1", "publickey", "success", "SHA256:x")
    store.add_auth("bob", "bob", "10.0.0.2", "password", "failure", None)
    store.end_session(store.start_session("alice", "10.0.0.1", "lb-web-x", "/home/alice/web", "exec", "make"),
                      0, 5, 7)
    store.close()
    runner = CliRunner()
    result = runner.invoke(cli, ["audit"])
    assert result.exit_code == 0, result.output
    assert "alice+web  10.0.0.1  publickey  success  SHA256:x" in result.output
    assert "alice  10.0.0.1  lb-web-x  exec  make  0  5  7" in result.output
    rows = json.loads(runner.invoke(cli, ["audit", "--json", "--user", "bob"]).output)
    assert [r["result"] for r in rows["auth"]] == ["failure"] and rows["sessions"] == []
    result = runner.invoke(cli, ["audit", "--since", "soon"])
    assert result.exit_code == 2 and result.output.startswith("Error: --since 'soon'")
