"""A running node applies its remote-run limits from config.toml, the environment and flags."""

from __future__ import annotations

import hashlib

from hypermesh.capsules.cid import cid_from_digest
from hypermesh.node.processes import run_cli, start_node

UNKNOWN_CID = cid_from_digest(hashlib.sha256(b"no such capsule").digest())


def run_on(node, data_dir, data: str):
    return run_cli("capsule", "run", "--on", node.addr(), UNKNOWN_CID, "echo", "--input", data, "--data-dir", str(data_dir))


def test_the_configured_input_limit_refuses_a_larger_request(tmp_path):
    node_dir, asker = tmp_path / "node", tmp_path / "asker"
    node_dir.mkdir()
    (node_dir / "config.toml").write_text("[capsules]\nremote_max_input_bytes = 100\n")
    with start_node(node_dir, extra=["--remote-per-peer-running", "1"]) as node:
        over = run_on(node, asker, "x" * 101)
    assert over.returncode == 1 and "the node refused (over_limit)" in over.stderr, over.stderr
    assert "input at most 100 bytes" in over.stderr
