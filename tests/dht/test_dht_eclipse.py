"""Eclipse defence: the per-prefix caps of the routing table count the address
we observed a peer's connection on, never the ones it advertises."""

import collections
import contextlib
import random

import pytest
import trio
from multiaddr import Multiaddr

from dht_fakehost import FakeHost, FakeNetwork
from hypermesh.dht.driver import CONNECTED_PEERS_SCAN_INTERVAL, KademliaService
from hypermesh.dht.kademlia import KadConfig, KademliaCore
from hypermesh.dht.keys import bucket_index, peer_key
from hypermesh.dht.messages import PROTOCOL_ID
from hypermesh.dht.store import MemoryRecordStore
from hypermesh.transport.host import open_host
from hypermesh.transport.identify import IdentifyRecord
from hypermesh.transport.identity import Identity, PeerId

NOW = 1_700_000_000.0
TABLE_CAP = KadConfig().routing.max_per_group_in_table
BUCKET_CAP = KadConfig().routing.max_per_group_per_bucket
# A private address is exempt from the caps: what a sybil would advertise to escape them.
ADVERTISED_PRIVATE = "/ip4/10.0.0.1/udp/4001/quic-v1"
LOOPBACK_ANY_PORT = "/ip4/127.0.0.1/udp/0/quic-v1"


def quic_addr(ip: str) -> str:
    return f"/ip4/{ip}/udp/4001/quic-v1"


def to_bytes(text: str) -> bytes:
    return Multiaddr(text).to_bytes()


def test_core_caps_peers_by_observed_prefix_whatever_they_advertise():
    rng = random.Random(7)
    core = KademliaCore(PeerId(b"\x12\x20" + rng.randbytes(32)), store=MemoryRecordStore(), now=NOW, rng=rng)
    sybils = [PeerId(b"\x12\x20" + rng.randbytes(32)) for _ in range(199)]
    for i, sybil in enumerate(sybils):
        core.peer_seen(sybil, (to_bytes(ADVERTISED_PRIVATE),), NOW, to_bytes(quic_addr(f"45.67.89.{i % 250}")))
    assert sum(s in core.routing for s in sybils) == TABLE_CAP

    honest = [PeerId(b"\x12\x20" + rng.randbytes(32)) for _ in range(30)]
    for i, peer in enumerate(honest):
        # All advertise one public address (say, a shared relay) but connect from their own.
        core.peer_seen(peer, (to_bytes(quic_addr("45.67.89.1")),), NOW, to_bytes(quic_addr(f"46.{i}.0.1")))
    assert sum(p in core.routing for p in honest) == 30


def test_a_dual_stack_peer_holds_one_place_under_the_prefix_it_was_admitted_from():
    # Seen again over IPv6, a peer admitted over IPv4 keeps its one place, counted under its IPv4
    # prefix; one the IPv4 cap refused may still enter under its IPv6 prefix's own cap.
    rng = random.Random(8)
    core = KademliaCore(PeerId(b"\x12\x20" + rng.randbytes(32)), store=MemoryRecordStore(), now=NOW, rng=rng)
    v4, v6 = to_bytes(quic_addr("45.67.89.1")), to_bytes("/ip6/2a02:1234:5678::1/udp/4001/quic-v1")
    dual = [PeerId(b"\x12\x20" + rng.randbytes(32)) for _ in range(3 * TABLE_CAP)]
    for peer in dual:
        core.peer_seen(peer, (v4, v6), NOW, v4)
    admitted_over_v4 = {peer for peer in dual if peer in core.routing}
    for peer in dual:
        core.peer_seen(peer, (v4, v6), NOW + 1, v6)
    groups = collections.Counter(core.routing.get(peer).ip_group for peer in dual if peer in core.routing)
    assert groups == {"45.67.89.0/24": len(admitted_over_v4), "2a02:1234:5678::/48": groups["2a02:1234:5678::/48"]}
    assert len(admitted_over_v4) <= TABLE_CAP and groups["2a02:1234:5678::/48"] <= TABLE_CAP
    assert all(core.routing.get(peer).ip_group == "45.67.89.0/24" for peer in admitted_over_v4)


def test_core_adds_no_peer_without_an_observed_address():
    rng = random.Random(8)
    core = KademliaCore(PeerId(b"\x12\x20" + rng.randbytes(32)), store=MemoryRecordStore(), now=NOW, rng=rng)
    peer = PeerId(b"\x12\x20" + rng.randbytes(32))
    core.peer_seen(peer, (to_bytes(quic_addr("46.1.0.1")),), NOW, None)
    assert peer not in core.routing


def sybil_host(network: FakeNetwork, index: int, advertised: str, source: str) -> FakeHost:
    host = FakeHost(network, b"sybil-%d" % index, "0.0.0.0")
    host.addr, host.source_addr = advertised, source
    host.set_stream_handler(PROTOCOL_ID, lambda stream: stream.aclose())
    return host


async def identify_to(victim: KademliaService, remote: FakeHost, *, via_identify: bool) -> None:
    """``remote`` connects to ``victim``, which learns its protocols and advertised addresses."""
    victim.host.connect_from(remote)
    victim.host.peerstore.add_addrs(remote.peer_id, [remote.addr])
    if via_identify:
        record = IdentifyRecord(remote.peer_id, "ipfs/0.1.0", "sybil", [PROTOCOL_ID], [remote.addr], None)
        for callback in victim.host.on_identified:
            callback(record)


@pytest.mark.parametrize("via_identify", [True, False], ids=["identify", "connected-peer-scan"])
async def test_driver_caps_sybils_by_their_observed_prefix(autojump_clock, via_identify):
    async with trio.open_nursery() as nursery:
        network = FakeNetwork(nursery)
        victim = KademliaService(network.add_host(0), MemoryRecordStore())
        await nursery.start(victim.run)
        sybils = [sybil_host(network, i, ADVERTISED_PRIVATE, quic_addr(f"45.67.89.{i % 250}")) for i in range(199)]
        honest = [sybil_host(network, 1000 + i, quic_addr("45.67.89.1"), quic_addr(f"46.{i}.0.1")) for i in range(30)]
        for host in sybils + honest:
            await identify_to(victim, host, via_identify=via_identify)
        if not via_identify:
            await trio.sleep(CONNECTED_PEERS_SCAN_INTERVAL + 1)  # virtual time: one scan
        assert sum(h.peer_id in victim.core.routing for h in sybils) == TABLE_CAP
        assert sum(h.peer_id in victim.core.routing for h in honest) == 30
        nursery.cancel_scope.cancel()


async def test_real_identify_cannot_lift_the_cap_by_advertising_other_prefixes(tmp_path):
    """Over QUIC on 127.0.0.1 (caps applied to loopback here): sybils that
    advertise a different /24 each still share the one they connect from."""
    config = KadConfig(exempt_private_addresses=False)
    sybil_count = TABLE_CAP + 4
    async with contextlib.AsyncExitStack() as stack:
        victim_host = await stack.enter_async_context(open_host(Identity.generate(), [LOOPBACK_ANY_PORT]))
        victim = KademliaService(victim_host, MemoryRecordStore(), config=config)
        nursery = await stack.enter_async_context(trio.open_nursery())
        await nursery.start(victim.run)
        victim_addr = victim_host.listen_addrs()[0]
        victim_addr = victim_addr if "/p2p/" in victim_addr else f"{victim_addr}/p2p/{victim_host.peer_id}"
        identified: set[PeerId] = set()
        all_identified = trio.Event()

        def on_identified(record):
            identified.add(record.peer_id)
            if len(identified) == sybil_count:
                all_identified.set()

        victim_host.on_identified.append(on_identified)
        sybils = []
        for i in range(sybil_count):
            host = await stack.enter_async_context(open_host(Identity.generate(), [LOOPBACK_ANY_PORT]))
            host.set_stream_handler(PROTOCOL_ID, lambda stream: stream.reset())
            # What identify advertises: a /24 of its own for each sybil.
            host.listen_addrs = lambda i=i: [quic_addr(f"127.0.{i + 1}.1")]
            sybils.append(host)
        with trio.fail_after(30):
            for host in sybils:
                await host.connect(victim_addr)
            await all_identified.wait()
        admitted = [s.peer_id for s in sybils if s.peer_id in victim.core.routing]
        assert 0 < len(admitted) <= TABLE_CAP
        buckets = [bucket_index(victim.core.local_key, peer_key(p)) for p in admitted]
        assert max(buckets.count(b) for b in buckets) <= BUCKET_CAP
        nursery.cancel_scope.cancel()
