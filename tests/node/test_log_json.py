"""`--log-json`: one JSON object per stderr line, with structured fields, on
real node processes over [::1]."""

import json

from hypermesh.node.processes import run_cli, start_node


def test_log_json_writes_one_object_per_line_with_structured_fields(tmp_path):
    with start_node(tmp_path / "server") as server:
        result = run_cli(
            "--log-json", "--log-level", "debug", "ping", server.addr(), "--json", "--data-dir", str(tmp_path / "client")
        )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["peer_id"] == server.peer_id  # stdout stays the one result object
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    assert entries and all({"ts", "level", "logger", "msg"} <= set(entry) for entry in entries)
    closed = [entry for entry in entries if entry["msg"] == "connection closed"]
    assert closed and closed[0]["peer_id"] == server.peer_id and closed[0]["reason"]
