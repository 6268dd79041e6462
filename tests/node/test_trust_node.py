"""Trust in a running node: hypermesh trust show | top | shun | unshun, on real processes over [::1]."""

import json

import pytest

from hypermesh.node.processes import run_cli, start_node


def cli_json(*args):
    result = run_cli(*args, "--json")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1
    return json.loads(result.stdout)


# Four node starts and a dozen CLI processes: on two cores shared with other suites this outgrew 120 s.
@pytest.mark.timeout(300)
def test_an_operator_shun_refuses_the_peer_and_survives_a_restart(tmp_path):
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    with start_node(a_dir) as a, start_node(b_dir) as b:
        assert run_cli("ping", a.addr(), "--data-dir", str(b_dir)).returncode == 0
        shown = cli_json("trust", "shun", b.peer_id, "--reason", "spam", "--data-dir", str(a_dir))
        assert shown["shunned"]["reason"] == "spam" and shown["score"] == 0
        refused = run_cli("ping", a.addr(), "--data-dir", str(b_dir))
        assert refused.returncode == 1 and "refused by policy" in refused.stderr
        top = cli_json("trust", "top", "--data-dir", str(a_dir))
        assert top == {"peers": []}  # nothing observed of b: a shun is not evidence
    with start_node(a_dir) as a, start_node(b_dir) as b:
        assert cli_json("trust", "show", b.peer_id, "--data-dir", str(a_dir))["shunned"]["reason"] == "spam"
        assert run_cli("ping", a.addr(), "--data-dir", str(b_dir)).returncode == 1
        assert cli_json("trust", "unshun", b.peer_id, "--data-dir", str(a_dir)) == {"peer_id": b.peer_id, "lifted": True}
        assert run_cli("ping", a.addr(), "--data-dir", str(b_dir)).returncode == 0


def test_trust_commands_need_a_running_node_and_a_peer_id(tmp_path):
    result = run_cli("trust", "top", "--data-dir", str(tmp_path))
    assert result.returncode == 1 and "hypermesh run" in result.stderr
    with start_node(tmp_path / "a") as a:
        bad = run_cli("trust", "show", "not-a-peer", "--data-dir", str(tmp_path / "a"))
        assert bad.returncode == 1 and bad.stderr.startswith("error:") and "not a peer ID" in bad.stderr
        assert bad.stderr.count("\n") == 1
        assert a.peer_id
