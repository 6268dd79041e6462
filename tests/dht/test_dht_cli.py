"""DHT command-line options (on ``hypermesh run``) and output helpers."""

from multiaddr import Multiaddr
import pytest

from hypermesh.dht.cli import peer_to_dict
from hypermesh.dht.messages import PeerInfo
from hypermesh.node.cli import apply_config, parse_command_line
from hypermesh.node.cli.common import BadValue
from hypermesh.transport.identity import Identity


def effective(argv, data_dir):
    args = parse_command_line([*argv, "--data-dir", str(data_dir)])
    apply_config(args, environ={})
    return args


def test_run_takes_the_dht_options(tmp_path):
    defaults = effective(["run"], tmp_path)
    assert (defaults.dht_mode, defaults.dht_disjoint_paths) == ("server", 1)
    args = effective(["run", "--dht-mode", "client", "--dht-disjoint-paths", "3"], tmp_path)
    assert (args.dht_mode, args.dht_disjoint_paths) == ("client", 3)
    with pytest.raises(BadValue, match="--dht-disjoint-paths: must be between 1 and 16"):
        parse_command_line(["run", "--dht-disjoint-paths", "0"])


def test_peer_to_dict():
    peer = Identity.from_seed(b"x").peer_id
    info = PeerInfo(peer, (Multiaddr("/ip4/1.2.3.4/udp/1/quic-v1").to_bytes(),))
    assert peer_to_dict(info) == {"peer_id": str(peer), "addrs": ["/ip4/1.2.3.4/udp/1/quic-v1"]}
