"""``hypermesh devnet``: N real nodes come up joined and go down leaving only their data directories."""

import json
import os
import signal
import subprocess
import time

import pytest

from hypermesh.node.processes import hypermesh_command, read_line, run_cli, start_node


def start_devnet(*args):
    process = subprocess.Popen(hypermesh_command("devnet", "--json", *args), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    return process, json.loads(read_line(process.stdout, deadline=time.monotonic() + 120))


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_eight_nodes_come_up_joined_and_go_down_cleanly(tmp_path):
    process, devnet = start_devnet("--nodes", "8", "--dir", str(tmp_path))
    try:
        nodes = devnet["nodes"]
        assert len(nodes) == 8 and len({node["peer_id"] for node in nodes}) == 8
        assert all(node["addr"].startswith("/ip6/::1/udp/") for node in nodes)
        first = nodes[0]["peer_id"]
        for node in nodes[1:]:  # each bootstrapped from the first
            result = run_cli("peers", "--json", "--data-dir", node["data_dir"])
            assert first in {peer["peer_id"] for peer in json.loads(result.stdout)["peers"]}
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
    finally:
        process.kill()
        process.wait()
    assert not any(is_running(node["pid"]) for node in nodes)
    assert sorted(path.name for path in tmp_path.iterdir()) == [f"node-{index}" for index in range(8)]
    assert not any((tmp_path / f"node-{index}" / "control.sock").exists() for index in range(8))


def test_a_devnet_without_dir_removes_its_temporary_directory():
    process, devnet = start_devnet("--nodes", "2")
    try:
        assert os.path.isdir(devnet["dir"])
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        process.kill()
        process.wait()
    assert not os.path.exists(devnet["dir"])
    assert not any(is_running(node["pid"]) for node in devnet["nodes"])


def test_a_devnet_on_a_busy_directory_says_which_node_and_why(tmp_path):
    with start_node(tmp_path / "node-1"):  # someone else's node in the devnet's second directory
        result = run_cli("devnet", "--nodes", "2", "--dir", str(tmp_path), timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"error: the node in {tmp_path / 'node-1'} did not start: another node is "
                                     f"already running in {tmp_path / 'node-1'}; stop it first, or give this one "
                                     "another --data-dir")
