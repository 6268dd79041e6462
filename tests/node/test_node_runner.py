"""What a node runner meets first: a busy data directory, a busy port, a
silent peer, an unreachable bootstrap peer, an identity made on the side."""

import json
import socket
import subprocess
import time

import pytest

from hypermesh.node.processes import read_line, run_cli, start_node

PEER_ID = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"


@pytest.fixture
def silent_port():
    """A UDP port on [::1] that is bound (so nothing else takes it) and never answers."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as silent:
        silent.bind(("::1", 0))
        yield silent.getsockname()[1]


def snapshot(directory):
    return {path.name: (path.stat().st_mtime_ns, path.stat().st_size) for path in directory.iterdir()}


def only_line(result):
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_a_second_run_on_a_busy_data_dir_refuses_before_listening(tmp_path):
    with start_node(tmp_path) as first:
        before = snapshot(tmp_path)
        second = run_cli("run", "--data-dir", str(tmp_path), "--listen", "/ip6/::1/udp/0/quic-v1",
                         "--log-level", "info")
        assert second.stdout == ""
        assert only_line(second) == (f"error: another node is already running in {tmp_path}; "
                                     "stop it first, or give this one another --data-dir")
        assert snapshot(tmp_path) == before
        assert run_cli("peers", "--data-dir", str(tmp_path)).returncode == 0  # the first one is untouched
    assert first.process.returncode == 0


def test_a_port_in_use_is_one_line_naming_it_and_changes_nothing(tmp_path, silent_port):
    assert run_cli("init", "--data-dir", str(tmp_path)).returncode == 0
    before = snapshot(tmp_path)
    addr = f"/ip6/::1/udp/{silent_port}/quic-v1"
    line = only_line(run_cli("run", "--data-dir", str(tmp_path), "--listen", addr))
    assert addr in line and "in use" in line
    assert snapshot(tmp_path) == before


def test_a_new_run_that_cannot_listen_leaves_no_identity(tmp_path, silent_port):
    only_line(run_cli("run", "--data-dir", str(tmp_path), "--listen", f"/ip6/::1/udp/{silent_port}/quic-v1"))
    assert list(tmp_path.iterdir()) == []


def test_a_dial_to_a_silent_address_gives_up_after_the_timeout(tmp_path, silent_port):
    target = f"/ip6/::1/udp/{silent_port}/quic-v1/p2p/{PEER_ID}"
    assert only_line(run_cli("ping", target, "--data-dir", str(tmp_path))) == (
        f"error: no answer from {target} within 3 s (--timeout to wait longer)")
    line = only_line(run_cli("id", target, "--timeout", "0.5", "--data-dir", str(tmp_path)))
    assert "within 0.5 s" in line


def test_a_short_lived_lookup_through_a_silent_bootstrap_peer_gives_up_after_the_timeout(tmp_path, silent_port):
    unreachable = f"/ip6/::1/udp/{silent_port}/quic-v1/p2p/{PEER_ID}"
    result = run_cli("service", "resolve", "echo", "--bootstrap", unreachable, "--data-dir", str(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: bootstrap peer {unreachable} did not answer within 3 s"]  # (the DHT may warn too)
    assert not (tmp_path / "identity.key").exists()  # a lookup makes no identity


def test_ping_at_a_wrong_address_says_which_connection_it_used(tmp_path, silent_port):
    with start_node(tmp_path / "alice") as alice, \
            start_node(tmp_path / "bob", extra=["--bootstrap", alice.addr()]) as bob:
        assert run_cli("dht", "wait", "--data-dir", str(bob.data_dir)).returncode == 0  # bob is connected
        wrong = f"/ip6/::1/udp/{silent_port}/quic-v1/p2p/{alice.peer_id}"
        result = run_cli("ping", wrong, "--json", "--data-dir", str(bob.data_dir))
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["new_connection"] is False and report["addr"] == alice.addr()
        text = run_cli("ping", wrong, "--data-dir", str(bob.data_dir)).stdout
        assert text.splitlines()[0] == f"used the open connection to {alice.addr()}"


def test_an_unreachable_bootstrap_peer_is_a_warning_at_the_default_log_level(tmp_path, silent_port):
    unreachable = f"/ip6/::1/udp/{silent_port}/quic-v1/p2p/{PEER_ID}"
    with start_node(tmp_path, extra=["--bootstrap", unreachable], stderr=subprocess.PIPE) as node:
        line = read_line_containing(node.process.stderr, "bootstrap peer", deadline=time.monotonic() + 60)
    assert "WARNING" in line and unreachable in line and "not reachable" in line


def read_line_containing(stream, text, deadline):
    while True:  # bounded by the deadline
        line = read_line(stream, deadline).decode(errors="replace")
        if text in line:
            return line


def test_an_identity_made_outside_init_and_run_is_announced_once(tmp_path):
    assert run_cli("capsule", "new", "demo.echo", "--dir", str(tmp_path)).returncode == 0
    assert run_cli("capsule", "build", str(tmp_path / "echo")).returncode == 0
    signed = run_cli("capsule", "sign", str(tmp_path / "echo"), "--data-dir", str(tmp_path / "signer"))
    assert signed.returncode == 0, signed.stderr
    assert signed.stderr.count("created a new") == 1 and str(tmp_path / "signer") in signed.stderr
    again = run_cli("capsule", "sign", str(tmp_path / "echo"), "--data-dir", str(tmp_path / "signer"))
    assert "created" not in again.stderr
    # A command with no announcement of its own (a runtime that needs a key to sign receipts).
    ran = run_cli("capsule", "run", str(tmp_path / "echo"), "reverse", "--input", "hi",
                  "--data-dir", str(tmp_path / "runner"))
    assert f"note: created a new node identity 12D3KooW" in ran.stderr
    assert str(tmp_path / "runner" / "identity.key") in ran.stderr
