"""The core as a server: answers, validation, rate limits, hostile requests."""

import random

from multiaddr import Multiaddr
import pytest

from hypermesh.dht.kademlia import KadConfig, KademliaCore, Mode, RecordChanged
from hypermesh.dht.keys import Cid
from hypermesh.dht.messages import DhtProtocolError, KadMessage, MessageType, PeerInfo, Record
from hypermesh.dht.ratelimit import RateLimit, TokenBuckets
from hypermesh.dht.records import encode_service_set, service_key, sign_service_record
from hypermesh.dht.server import Misbehaviour, PeerMisbehaved
from hypermesh.dht.store import MemoryRecordStore, StoreLimits
from hypermesh.transport.identity import Identity, PeerId

NOW = 1_700_000_000.0
ADDR = Multiaddr("/ip4/8.8.8.8/udp/4001/quic-v1").to_bytes()


def peer(i):
    return PeerId(b"\x12\x20" + i.to_bytes(32, "big"))


def server(config=KadConfig(), limits=StoreLimits()):
    return KademliaCore(peer(0), store=MemoryRecordStore(limits), now=NOW, rng=random.Random(1), config=config)


def add_provider(cid_text, sender):
    key = Cid.for_string(cid_text).multihash
    return KadMessage(MessageType.ADD_PROVIDER, key=key, provider_peers=(PeerInfo(sender, (ADDR,)),))


def test_token_buckets_refill_and_stay_bounded():
    buckets = TokenBuckets(RateLimit(rate=1.0, burst=2.0), max_tracked=3)
    assert buckets.allow("a", 0.0) and buckets.allow("a", 0.0) and not buckets.allow("a", 0.0)
    assert buckets.allow("a", 1.0)
    for who in "bcdef":
        buckets.allow(who, 1.0)
    assert len(buckets._buckets) == 3


def test_find_node_answers_k_closest_and_learns_servers():
    core = server()
    for i in range(1, 60):
        observed = Multiaddr(f"/ip4/8.8.{i}.1/udp/4001/quic-v1").to_bytes()
        core.handle_request(peer(i), KadMessage(MessageType.PING), NOW, observed_addr=observed, sender_is_server=True)
    assert len(core.routing) >= 20
    # One /24 gets at most max_per_group_in_table entries, however many peers it hosts.
    crowded = server()
    for i in range(1, 60):
        crowded.handle_request(peer(i), KadMessage(MessageType.PING), NOW, observed_addr=ADDR, sender_is_server=True)
    assert len(crowded.routing) == crowded.config.routing.max_per_group_in_table
    core.handle_request(peer(999), KadMessage(MessageType.PING), NOW, sender_is_server=False)
    assert peer(999) not in core.routing  # clients stay out of routing tables
    answer = core.handle_request(peer(1), KadMessage(MessageType.FIND_NODE, key=b"target"), NOW)
    assert len(answer.closer_peers) == 20 and peer(1) not in [p.peer_id for p in answer.closer_peers]


def test_provider_records_round_trip():
    core = server()
    core.handle_request(peer(5), add_provider("content", peer(5)), NOW)
    answer = core.handle_request(peer(6), KadMessage(MessageType.GET_PROVIDERS, key=Cid.for_string("content").multihash), NOW)
    assert [p.peer_id for p in answer.provider_peers] == [peer(5)]
    assert answer.provider_peers[0].addrs == (ADDR,)


def test_add_provider_for_another_peer_is_ignored():
    core = server()
    core.handle_request(peer(5), add_provider("content", peer(7)), NOW)
    assert core.store.get_providers(Cid.for_string("content").multihash, NOW, 10) == []


def test_add_provider_flood_is_rate_limited_reported_and_node_keeps_serving():
    core = server(KadConfig(add_provider_limit=RateLimit(rate=10.0, burst=100.0)))
    for i in range(5_000):
        core.handle_request(peer(5), add_provider(f"flood-{i}", peer(5)), NOW)
    assert core.stats.rate_limited == 4_900
    reports = [e for e in core.take_events() if isinstance(e, PeerMisbehaved)]
    assert len(reports) == 4_900 and set(reports) == {PeerMisbehaved(peer(5), Misbehaviour.RATE_LIMITED)}
    stored = sum(bool(core.store.get_providers(Cid.for_string(f"flood-{i}").multihash, NOW, 1)) for i in range(5_000))
    assert stored == 100
    # Another peer is unaffected, and the flooder gets tokens back with time.
    core.handle_request(peer(6), add_provider("honest", peer(6)), NOW)
    assert core.store.get_providers(Cid.for_string("honest").multihash, NOW, 1)
    assert core.handle_request(peer(6), KadMessage(MessageType.FIND_NODE, key=b"x"), NOW) is not None
    core.handle_request(peer(5), add_provider("later", peer(5)), NOW + 1)
    assert core.store.get_providers(Cid.for_string("later").multihash, NOW + 1, 1)


def test_providers_per_key_are_capped():
    core = server(limits=StoreLimits(max_providers_per_key=10))
    for i in range(1, 50):
        core.handle_request(peer(i), add_provider("popular", peer(i)), NOW)
    assert len(core.store.get_providers(Cid.for_string("popular").multihash, NOW, 100)) == 10


def test_provider_requests_need_a_multihash_key():
    core = server()
    with pytest.raises(DhtProtocolError):
        core.handle_request(peer(1), KadMessage(MessageType.GET_PROVIDERS, key=b"not a multihash"), NOW)
    with pytest.raises(DhtProtocolError):
        core.handle_request(peer(1), KadMessage(MessageType.ADD_PROVIDER, key=b"\x12\x20short"), NOW)


def test_put_value_validates_signatures_and_emits_changes():
    core = server()
    alice = Identity.from_seed(b"alice")
    key = service_key("relay")
    good = encode_service_set([sign_service_record(alice, "relay", "/p", [ADDR], weight=1, seq=1, now=NOW)])
    echo = core.handle_request(alice.peer_id, KadMessage(MessageType.PUT_VALUE, key=key, record=Record(key, good)), NOW)
    assert echo.record.value == good
    assert RecordChanged(key) in core.take_events()
    forged = bytearray(good)
    forged[-1] ^= 1
    with pytest.raises(DhtProtocolError):
        core.handle_request(alice.peer_id, KadMessage(MessageType.PUT_VALUE, key=key, record=Record(key, bytes(forged))), NOW)
    future = encode_service_set([sign_service_record(alice, "relay", "/p", [ADDR], weight=1, seq=2, now=NOW + 3600)])
    with pytest.raises(DhtProtocolError):
        core.handle_request(alice.peer_id, KadMessage(MessageType.PUT_VALUE, key=key, record=Record(key, future)), NOW)
    answer = core.handle_request(peer(3), KadMessage(MessageType.GET_VALUE, key=key), NOW)
    assert answer.record.value == good


def test_put_value_flood_is_rate_limited():
    core = server(KadConfig(put_value_limit=RateLimit(rate=1.0, burst=5.0)))
    alice = Identity.from_seed(b"alice")
    key = service_key("svc")
    rejected = 0
    for seq in range(1, 30):
        value = encode_service_set([sign_service_record(alice, "svc", "/p", [], weight=1, seq=seq, now=NOW)])
        try:
            core.handle_request(alice.peer_id, KadMessage(MessageType.PUT_VALUE, key=key, record=Record(key, value)), NOW)
        except DhtProtocolError:
            rejected += 1
    assert rejected == 24 and core.stats.rate_limited == 24


def test_client_mode_serves_nothing():
    core = KademliaCore(peer(0), store=MemoryRecordStore(), now=NOW, rng=random.Random(1), mode=Mode.CLIENT)
    with pytest.raises(DhtProtocolError):
        core.handle_request(peer(1), KadMessage(MessageType.FIND_NODE, key=b"x"), NOW)


def test_response_with_too_many_closer_peers_only_feeds_k_to_the_lookup():
    core = server()
    core.peer_seen(peer(1), (ADDR,), NOW, ADDR)
    op_id = core.find_node(b"target", NOW)
    request = core.take_outbound()[0]
    flood = tuple(PeerInfo(peer(i)) for i in range(100, 132))
    core.handle_response(request.request_id, KadMessage(MessageType.FIND_NODE, closer_peers=flood), NOW)
    lookup = core._ops[op_id].lookup
    assert len(lookup._candidates) == 1 + core.config.k
    assert len(core.take_outbound()) == core.config.alpha


def test_mismatched_response_type_counts_as_failure():
    core = server()
    core.peer_seen(peer(1), (ADDR,), NOW, ADDR)
    core.find_node(b"target", NOW)
    request = core.take_outbound()[0]
    core.handle_response(request.request_id, KadMessage(MessageType.PING), NOW)
    assert core.routing.get(peer(1)) is None or core.routing.get(peer(1)).failures == 1


def test_sybil_flood_from_one_ip_prefix_shares_a_bucket():
    core = server(KadConfig(add_provider_limit=RateLimit(rate=1.0, burst=100.0), ip_group_rate_multiplier=4.0))
    for sybil in range(1, 51):
        for i in range(100):
            message = add_provider(f"sybil-{sybil}-{i}", peer(sybil))
            core.handle_request(peer(sybil), message, NOW, observed_addr=ADDR)
    assert 5_000 - core.stats.rate_limited == 400  # 4 x the per-peer burst for the whole /24
    other = Multiaddr("/ip4/9.9.9.9/udp/4001/quic-v1").to_bytes()
    core.handle_request(peer(99), add_provider("elsewhere", peer(99)), NOW, observed_addr=other)
    assert core.store.get_providers(Cid.for_string("elsewhere").multihash, NOW, 1)


def test_provider_keys_may_be_sent_as_whole_cids():
    core = server()
    cid = Cid.for_string("as a cid")
    message = KadMessage(MessageType.ADD_PROVIDER, key=cid.to_bytes(), provider_peers=(PeerInfo(peer(5), (ADDR,)),))
    core.handle_request(peer(5), message, NOW)
    answer = core.handle_request(peer(6), KadMessage(MessageType.GET_PROVIDERS, key=cid.multihash), NOW)
    assert [p.peer_id for p in answer.provider_peers] == [peer(5)]
