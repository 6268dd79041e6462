"""The CLI contract, exercised on real node processes over [::1]."""

import json
import os
import stat

import pytest

from hypermesh.node.processes import run_cli, start_node


@pytest.fixture(scope="module")
def alice(tmp_path_factory):
    with start_node(tmp_path_factory.mktemp("alice"), extra=["--perf"]) as node:
        yield node


def test_init_creates_a_private_identity_once(tmp_path):
    first = run_cli("init", "--data-dir", str(tmp_path), "--json")
    assert first.returncode == 0, first.stderr
    created = json.loads(first.stdout)
    assert created["created"] and created["peer_id"].startswith("12D3KooW")
    assert stat.S_IMODE((tmp_path / "identity.key").stat().st_mode) == 0o600
    again = json.loads(run_cli("init", "--data-dir", str(tmp_path), "--json").stdout)
    assert again == {**created, "created": False}


def test_run_refuses_a_world_readable_key(tmp_path):
    assert run_cli("init", "--data-dir", str(tmp_path)).returncode == 0
    os.chmod(tmp_path / "identity.key", 0o644)
    result = run_cli("run", "--data-dir", str(tmp_path), "--listen", "/ip6/::1/udp/0/quic-v1")
    assert result.returncode == 1
    assert "readable by other users" in result.stderr and "chmod 600" in result.stderr


def test_run_refuses_connection_limits_upside_down(tmp_path):
    result = run_cli("run", "--data-dir", str(tmp_path), "--connections-low", "50", "--connections-high", "10")
    assert result.returncode == 1
    assert result.stderr == ("error: network.connections_low 50 (flag --connections-low) must not exceed "
                             "network.connections_high 10 (flag --connections-high)\n")


def test_run_prints_its_addresses_first(alice):
    assert alice.peer_id.startswith("12D3KooW")
    assert alice.addrs and all(addr.endswith(f"/p2p/{alice.peer_id}") for addr in alice.addrs)
    assert alice.addr().startswith("/ip6/::1/udp/")


def test_ping_json_contract(alice, tmp_path):
    result = run_cli("ping", alice.addr(), "--count", "4", "--json", "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {"peer_id", "addr", "new_connection", "connect_ms", "rtts_ms"}
    assert report["peer_id"] == alice.peer_id and len(report["rtts_ms"]) == 4
    assert report["new_connection"] and report["addr"] == alice.addr() and report["connect_ms"] > 0


def test_ping_of_a_wrong_peer_id_fails_with_one_clear_line(alice, tmp_path):
    impostor = json.loads(run_cli("init", "--data-dir", str(tmp_path / "x"), "--json").stdout)["peer_id"]
    wrong = alice.addr().rsplit("/p2p/", 1)[0] + f"/p2p/{impostor}"
    result = run_cli("ping", wrong, "--data-dir", str(tmp_path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: peer ID mismatch")
    assert impostor in lines[0] and alice.peer_id in lines[0]


def test_ping_without_peer_id_is_a_usage_error(alice, tmp_path):
    result = run_cli("ping", alice.addr().rsplit("/p2p/", 1)[0], "--data-dir", str(tmp_path))
    assert result.returncode == 1 and "lacks /p2p/" in result.stderr


def test_id_json_contract(alice, tmp_path):
    result = run_cli("id", alice.addr(), "--json", "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["peer_id"] == alice.peer_id
    assert record["agent_version"].startswith("hypermesh/")
    assert "/ipfs/ping/1.0.0" in record["protocols"] and record["listen_addrs"]


def test_perf_json_contract(alice, tmp_path):
    result = run_cli("perf", alice.addr(), "--upload", "1M", "--download", "2M", "--json", "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["upload_bytes"] == 1 << 20 and report["download_bytes"] == 2 << 20


def test_commands_go_through_the_running_node_of_their_data_dir(alice, tmp_path):
    with start_node(tmp_path / "bob") as bob:
        result = run_cli("ping", alice.addr(), "--json", "--data-dir", str(bob.data_dir))
        assert result.returncode == 0, result.stderr
        peers = json.loads(run_cli("peers", "--json", "--data-dir", str(bob.data_dir)).stdout)["peers"]
        assert alice.peer_id in {peer["peer_id"] for peer in peers}
        assert bob.stop() == 0  # SIGTERM is a clean shutdown
    assert not (tmp_path / "bob" / "control.sock").exists()


def test_node_restarts_after_kill_9_with_the_same_identity(tmp_path):
    node = start_node(tmp_path)
    first_id = node.peer_id
    node.process.kill()
    node.process.wait()
    with start_node(tmp_path) as again:  # stale control socket is cleaned up
        assert again.peer_id == first_id


def test_metrics_endpoint_reports_connections_and_handshakes(alice, tmp_path):
    import socket
    import urllib.request

    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    with start_node(tmp_path / "metered", extra=["--metrics", f"[::1]:{port}"]) as node:
        assert run_cli("ping", alice.addr(), "--data-dir", str(node.data_dir)).returncode == 0
        body = urllib.request.urlopen(f"http://[::1]:{port}/metrics", timeout=10).read().decode()
    for name in ("hypermesh_connections_open", "hypermesh_handshake_seconds_bucket", "hypermesh_streams_total",
                 "hypermesh_datagrams_received_total", "hypermesh_dht_routing_table_peers",
                 "hypermesh_dht_reprovide_overdue_keys"):
        assert name in body
    assert 'hypermesh_connections_total{direction="outbound",outcome="established"} 1.0' in body


def test_an_expired_dht_wait_says_what_it_waited_for(tmp_path):
    with start_node(tmp_path) as lonely:
        result = run_cli("dht", "wait", "--peers", "1", "--timeout", "0.2", "--data-dir", str(lonely.data_dir))
    assert result.returncode == 1
    assert result.stderr.strip() == "error: the DHT routing table has 0 of 1 peers after 0.2 s"


def test_run_takes_the_dht_mode_and_disjoint_paths(alice, tmp_path):
    with start_node(tmp_path / "client", extra=["--dht-mode", "client", "--dht-disjoint-paths", "3"]) as client:
        record = json.loads(run_cli("id", client.addr(), "--json", "--data-dir", str(tmp_path)).stdout)
    assert record["peer_id"] == client.peer_id
    assert "/ipfs/kad/1.0.0" not in record["protocols"]  # a DHT client only asks
    assert "/ipfs/kad/1.0.0" in json.loads(run_cli("id", alice.addr(), "--json", "--data-dir", str(tmp_path)).stdout)["protocols"]
