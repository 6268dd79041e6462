"""DHT command-line options and output helpers."""

import argparse

from multiaddr import Multiaddr
import pytest

from hypermesh.dht.cli import add_arguments, options_from_args, peer_to_dict
from hypermesh.dht.kademlia import Mode
from hypermesh.dht.messages import PeerInfo
from hypermesh.transport.identity import Identity


def parse(argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return options_from_args(parser.parse_args(argv))


def test_defaults_and_flags(monkeypatch):
    monkeypatch.delenv("HYPERMESH_BOOTSTRAP", raising=False)
    assert parse([])["mode"] is Mode.SERVER and parse([])["bootstrap"] == []
    options = parse(["--dht-mode", "client", "--bootstrap", "/ip4/1.2.3.4/udp/1/quic-v1/p2p/x", "--dht-disjoint-paths", "3"])
    assert options["mode"] is Mode.CLIENT and options["config"].disjoint_paths == 3
    assert options["bootstrap"] == ["/ip4/1.2.3.4/udp/1/quic-v1/p2p/x"]
    with pytest.raises(SystemExit):
        parse(["--dht-disjoint-paths", "0"])


def test_peer_to_dict():
    peer = Identity.from_seed(b"x").peer_id
    info = PeerInfo(peer, (Multiaddr("/ip4/1.2.3.4/udp/1/quic-v1").to_bytes(),))
    assert peer_to_dict(info) == {"peer_id": str(peer), "addrs": ["/ip4/1.2.3.4/udp/1/quic-v1"]}
