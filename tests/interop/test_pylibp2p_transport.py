"""Interop with py-libp2p 0.8.1 (pinned in the Makefile) over QUIC v1.

Both directions: our node pings and identifies a py-libp2p host, and a
py-libp2p host pings and identifies our node. py-libp2p's QUIC transport is
broken over IPv6 (docs/INTEROP.md); there we also run it with the harness's
workaround for its bugs, to show that our side of IPv6 interoperates.
"""

import json
import os
import sys
from pathlib import Path

import pytest

from hypermesh.node.processes import run_cli, start_node

sys.path.insert(0, str(Path(__file__).parent))
from peerctl import INTEROP_PY, PyPeer, py_dial  # noqa: E402

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not os.path.exists(INTEROP_PY), reason="py-libp2p venv missing: run `make interop-setup`"),
]
FIX_IPV6 = ["--fix-quic-ipv6"]


@pytest.fixture(scope="module")
def our_node(tmp_path_factory):
    listen = ["/ip6/::1/udp/0/quic-v1", "/ip4/127.0.0.1/udp/0/quic-v1"]
    with start_node(tmp_path_factory.mktemp("node"), listen) as node:
        yield node


def assert_we_reached(peer, family_prefix, data_dir):
    addr = next(a for a in peer.addrs if a.startswith(family_prefix))
    ping = run_cli("ping", addr, "--count", "3", "--json", "--data-dir", str(data_dir))
    assert ping.returncode == 0, ping.stderr
    report = json.loads(ping.stdout)
    assert report["peer_id"] == peer.peer_id and len(report["rtts_ms"]) == 3
    ident = run_cli("id", addr, "--json", "--data-dir", str(data_dir))
    assert ident.returncode == 0, ident.stderr
    record = json.loads(ident.stdout)
    assert record["peer_id"] == peer.peer_id
    assert "/ipfs/ping/1.0.0" in record["protocols"]
    assert "py-libp2p" in record["agent_version"] or record["agent_version"]


def assert_they_reached(our_node, family_prefix, global_opts=None):
    result = py_dial(our_node.addr(family_prefix), count=3, timeout=20, global_opts=global_opts)
    assert result["rc"] == 0, result
    assert result["peer_id"] == our_node.peer_id and len(result["rtts_ms"]) == 3
    identify = result["identify"]
    assert identify["agent_version"].startswith("hypermesh/")
    assert "/ipfs/ping/1.0.0" in identify["protocols"]
    assert identify["public_key_type"] == "Ed25519"


def test_we_ping_and_identify_pylibp2p_over_ipv4(tmp_path):
    with PyPeer(transport="quic", ip="127.0.0.1") as peer:
        assert_we_reached(peer, "/ip4/", tmp_path)


def test_pylibp2p_pings_and_identifies_us_over_ipv4(our_node):
    assert_they_reached(our_node, "/ip4/")


def test_we_ping_and_identify_pylibp2p_over_ipv6_with_its_bugs_worked_around(tmp_path):
    with PyPeer(transport="quic", ip="::1", global_opts=FIX_IPV6) as peer:
        assert_we_reached(peer, "/ip6/", tmp_path)


def test_pylibp2p_pings_and_identifies_us_over_ipv6_with_its_bugs_worked_around(our_node):
    assert_they_reached(our_node, "/ip6/", global_opts=FIX_IPV6)


@pytest.mark.xfail(reason="py-libp2p 0.8.1 QUIC cannot dial over IPv6 (docs/INTEROP.md)", strict=True)
def test_unpatched_pylibp2p_dials_us_over_ipv6(our_node):
    assert_they_reached(our_node, "/ip6/")
