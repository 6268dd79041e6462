"""The trust layer's shun list keeps peers out of the routing table."""

import random

from multiaddr import Multiaddr

from hypermesh.dht.kademlia import KademliaCore
from hypermesh.dht.store import MemoryRecordStore
from hypermesh.transport.identity import PeerId

NOW = 1_700_000_000.0


def addr(index: int) -> bytes:
    return Multiaddr(f"/ip4/46.{index}.0.1/udp/4001/quic-v1").to_bytes()


def test_a_filtered_peer_stays_out_of_the_table_and_can_be_dropped_from_it():
    rng = random.Random(3)
    core = KademliaCore(PeerId(b"\x12\x20" + rng.randbytes(32)), store=MemoryRecordStore(), now=NOW, rng=rng)
    honest, shunned = (PeerId(b"\x12\x20" + rng.randbytes(32)) for _ in range(2))
    core.peer_seen(shunned, (addr(1),), NOW, addr(1))
    assert shunned in core.routing
    shun_list = {shunned}
    core.peer_filter = shun_list.__contains__
    assert core.exclude_peer(shunned)
    core.peer_seen(shunned, (addr(1),), NOW, addr(1))
    core.peer_seen(honest, (addr(2),), NOW, addr(2))
    assert shunned not in core.routing and honest in core.routing
