"""DHT options and output helpers for the node's command line (node/cli.py).

    parser = argparse.ArgumentParser()
    hypermesh.dht.cli.add_arguments(parser)
    args = parser.parse_args()
    async with open_discovery(host, data_dir, **options_from_args(args)) as discovery:
        ...
"""

from __future__ import annotations

import argparse
import os

from multiaddr import Multiaddr

from .kademlia import KadConfig, Mode
from .messages import PeerInfo
from .records import ServiceRecord

BOOTSTRAP_ENV = "HYPERMESH_BOOTSTRAP"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("DHT")
    group.add_argument(
        "--bootstrap",
        action="append",
        default=[a for a in os.environ.get(BOOTSTRAP_ENV, "").split(",") if a],
        metavar="MULTIADDR",
        help=f"a peer to join the DHT through, ending in /p2p/<peer id>; repeatable (default: ${BOOTSTRAP_ENV}, comma-separated)",
    )
    group.add_argument(
        "--dht-mode",
        choices=[m.value for m in Mode],
        default=Mode.SERVER.value,
        help="server: answer DHT queries (publicly reachable nodes); client: only ask (behind NAT)",
    )
    group.add_argument(
        "--dht-disjoint-paths",
        type=int,
        default=1,
        metavar="D",
        help="S/Kademlia disjoint paths for provider and value lookups (1 = off; 3 resists eclipse attacks at ~3x the messages)",
    )


def options_from_args(args: argparse.Namespace) -> dict:
    """Keyword arguments for :func:`hypermesh.dht.discovery.open_discovery`."""
    if args.dht_disjoint_paths < 1:
        raise SystemExit("--dht-disjoint-paths must be at least 1")
    return {
        "bootstrap": list(args.bootstrap),
        "mode": Mode(args.dht_mode),
        "config": KadConfig(disjoint_paths=args.dht_disjoint_paths),
    }


def _addr_text(raw: bytes) -> str:
    return str(Multiaddr(raw))


def peer_to_dict(info: PeerInfo) -> dict:
    return {"peer_id": str(info.peer_id), "addrs": [_addr_text(a) for a in info.addrs]}


def service_record_to_dict(record: ServiceRecord) -> dict:
    return {
        "name": record.name,
        "peer_id": str(record.peer_id),
        "protocol": record.protocol,
        "weight": record.weight,
        "addrs": [_addr_text(a) for a in record.addrs],
        "seq": record.seq,
        "expires_at": record.expires_at,
    }


