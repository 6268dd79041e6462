"""DHT output helpers for the node's command line. The DHT options
(``--dht-mode``, ``--dht-disjoint-paths``) are options of ``hypermesh run``
(node/cli/node_commands.py)."""

from __future__ import annotations

from multiaddr import Multiaddr

from .messages import PeerInfo
from .records import ServiceRecord


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


