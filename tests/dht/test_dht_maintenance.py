"""The core's own upkeep: bucket refresh, liveness checks, saved peers, size estimate."""

import dataclasses
import random

from multiaddr import Multiaddr

from hypermesh.dht.kademlia import KadConfig, KademliaCore, PeerProbed
from hypermesh.dht.keys import bucket_index, kad_key, peer_key
from hypermesh.dht.messages import KadMessage, MessageType
from hypermesh.dht.routing import RoutingConfig
from hypermesh.dht.sim import PROTOCOL_KAD_CONFIG, build_network
from hypermesh.dht.store import MemoryRecordStore
from hypermesh.transport.identity import PeerId

NOW = 1_700_000_000.0
# Exempt from the per-prefix caps, so any number of peers fit.
LAN_ADDR = Multiaddr("/ip4/10.0.0.1/udp/4001/quic-v1").to_bytes()


def core_with_peers(count, config=KadConfig(), seed=1):
    rng = random.Random(seed)
    core = KademliaCore(PeerId(b"\x12\x20" + rng.randbytes(32)), store=MemoryRecordStore(), now=NOW, rng=rng, config=config)
    peers = [PeerId(b"\x12\x20" + rng.randbytes(32)) for _ in range(count)]
    for peer in peers:
        core.peer_seen(peer, (), NOW, LAN_ADDR)
    return core, peers


def test_bucket_refresh_looks_up_keys_in_due_buckets():
    core, _ = core_with_peers(50, KadConfig(refresh_interval=600.0, max_parallel_refreshes=3))
    core.handle_timer(NOW)
    requests = core.take_outbound()
    refresh_keys = {r.message.key for r in requests} - {core.local_peer.multihash}
    assert len(refresh_keys) == 3
    assert {bucket_index(core.local_key, kad_key(k)) for k in refresh_keys} <= set(range(240, 256))
    # Nothing more until those finish or the interval passes.
    core.handle_timer(NOW + 1)
    assert not [r for r in core.take_outbound() if r.message.key not in refresh_keys]


def test_stale_peers_get_liveness_checks_and_failures_evict():
    config = KadConfig(liveness_max_age=100.0, liveness_checks_per_tick=5, refresh_interval=float("inf"),
                       routing=RoutingConfig(max_failures=1))
    core, peers = core_with_peers(10, config)
    core.handle_timer(NOW + 200)
    checks = [r for r in core.take_outbound() if r.message.key == core.local_peer.multihash]
    assert len(checks) == 5
    core.handle_response(checks[0].request_id, KadMessage(MessageType.FIND_NODE), NOW + 201)
    assert core.routing.get(checks[0].peer.peer_id).last_seen == NOW + 201
    core.handle_failure(checks[1].request_id, NOW + 201)
    assert checks[1].peer.peer_id not in core.routing


def test_each_settled_liveness_check_is_reported_as_a_probe():
    config = KadConfig(liveness_max_age=100.0, liveness_checks_per_tick=3, refresh_interval=float("inf"))
    core, _ = core_with_peers(10, config)
    core.handle_timer(NOW + 200)
    checks = [r for r in core.take_outbound() if r.message.key == core.local_peer.multihash]
    core.take_events()
    core.handle_response(checks[0].request_id, KadMessage(MessageType.FIND_NODE), NOW + 201)
    core.handle_failure(checks[1].request_id, NOW + 201)
    core.handle_response(checks[2].request_id, KadMessage(MessageType.PING), NOW + 201)  # the wrong answer fails it
    probes = [e for e in core.take_events() if isinstance(e, PeerProbed)]
    assert probes == [PeerProbed(checks[0].peer.peer_id, True), PeerProbed(checks[1].peer.peer_id, False),
                      PeerProbed(checks[2].peer.peer_id, False)]
    # Lookups are not probes.
    core.find_node(b"some key", NOW + 202)
    lookup = core.take_outbound()[0]
    core.handle_failure(lookup.request_id, NOW + 203)
    assert not [e for e in core.take_events() if isinstance(e, PeerProbed)]


def test_known_peers_are_saved_for_the_next_start():
    core, peers = core_with_peers(30, KadConfig(save_peers_interval=60.0))
    core.handle_timer(NOW + 61)
    core.handle_timer(NOW + 121)
    saved = {p.peer_id for p in core.store.load_peers()}
    assert saved and saved <= set(peers)
    restarted = KademliaCore(core.local_peer, store=core.store, now=NOW + 200, rng=random.Random(2))
    assert set(restarted._bootstrap_peers) == saved


def test_network_size_estimate_is_close():
    sim = build_network(11, 2000)
    estimates = [sim.nodes[i].core.network_size_estimate() for i in range(0, 2000, 100)]
    mean = sum(estimates) / len(estimates)
    assert 1000 < mean < 4000
    lonely, _ = core_with_peers(5)
    assert lonely.network_size_estimate() == 6


def test_peer_keys_are_sha256_of_the_peer_id_bytes():
    peer = PeerId(b"\x12\x20" + bytes(32))
    assert peer_key(peer) == kad_key(peer.multihash)


def test_a_node_that_joined_refreshes_only_the_buckets_its_self_lookup_did_not_cover():
    # Kademlia's join refreshes the buckets beyond the closest neighbour; the
    # self-lookup has already heard from every peer nearer than its k-th
    # closest, so the buckets inside that ball need no lookup of their own.
    # Each was refreshed all the same (15 lookups here in 9 minutes; at 200
    # nodes tens of thousands of FIND_NODEs with nobody asking anything).
    config = dataclasses.replace(PROTOCOL_KAD_CONFIG, maintenance_interval=60.0)
    sim = build_network(31, 200, kad=config)
    newcomer = sim.add_node()
    joined = sim.run_operation(newcomer, lambda core, now: sim.join(newcomer, sim.nodes[:3]))
    kth_closest = bucket_index(newcomer.key, peer_key(joined.closest[-1].peer_id))
    sim.run_until(sim.now + 9 * config.maintenance_interval)  # before the periodic self-lookup
    refreshed = [bucket_index(newcomer.key, kad_key(r.key)) for r in newcomer.results.values() if r.kind == "find_node"]
    assert refreshed and min(refreshed) >= kth_closest
