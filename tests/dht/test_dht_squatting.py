"""Name squatting: throwaway keys must not deny a service name to its real instances."""

import random

import trio
from multiaddr import Multiaddr

from dht_fakehost import FakeNetwork
from hypermesh.dht.discovery import Discovery
from hypermesh.dht.driver import KademliaService, parse_peer_addr
from hypermesh.dht.kademlia import KademliaCore
from hypermesh.dht.messages import DhtProtocolError, KadMessage, MessageType, Record
from hypermesh.dht.records import (
    MAX_SERVICE_INSTANCES,
    MAX_SERVICE_INSTANCES_PER_PREFIX,
    MAX_SERVICE_WEIGHT,
    decode_service_set,
    encode_service_set,
    rank_service_instances,
    service_key,
    sign_service_record,
    verify_service_entry,
)
from hypermesh.dht.store import MemoryRecordStore
from hypermesh.transport.identity import Identity

NOW = 1_700_000_000.0
KEY = service_key("relay")
SQUATTER_PREFIX = "45.67.89"


def addr(ip: str) -> bytes:
    return Multiaddr(f"/ip{6 if ':' in ip else 4}/{ip}/udp/4001/quic-v1").to_bytes()


def entry(identity: Identity, ip: str, weight: int = 1, seq: int = 1, also: tuple[str, ...] = ()) -> bytes:
    addrs = [addr(ip)] + [addr(other) for other in also]
    return sign_service_record(identity, "relay", "/hm/relay/1", addrs, weight=weight, seq=seq, now=NOW)


def put(core: KademliaCore, sender: Identity, observed_ip: str, *entries: bytes) -> bool:
    """A PUT_VALUE of ``entries`` from ``sender`` seen at ``observed_ip``; whether it changed the stored set."""
    before = core.store.get_value(KEY, NOW)
    message = KadMessage(MessageType.PUT_VALUE, key=KEY, record=Record(KEY, encode_service_set(list(entries))))
    try:
        core.handle_request(sender.peer_id, message, NOW, observed_addr=addr(observed_ip))
    except DhtProtocolError:
        return False
    return core.store.get_value(KEY, NOW) != before


def stored_peers(core: KademliaCore) -> set:
    value = core.store.get_value(KEY, NOW)
    return {r.peer_id for r in decode_service_set(KEY, value, NOW)} if value else set()


def server() -> KademliaCore:
    return KademliaCore(Identity.from_seed(b"server").peer_id, store=MemoryRecordStore(), now=NOW, rng=random.Random(1))


SQUATTERS = [Identity.from_seed(b"throwaway-%d" % i) for i in range(MAX_SERVICE_INSTANCES)]
REAL = [Identity.from_seed(b"real-%d" % i) for i in range(3)]


def test_throwaway_keys_from_one_prefix_leave_room_for_the_real_instances():
    core = server()
    for i, squatter in enumerate(SQUATTERS):
        ip = f"{SQUATTER_PREFIX}.{i + 1}"
        put(core, squatter, ip, entry(squatter, ip, weight=MAX_SERVICE_WEIGHT))
    assert len(stored_peers(core)) == MAX_SERVICE_INSTANCES_PER_PREFIX
    for i, real in enumerate(REAL):
        assert put(core, real, f"46.{i}.0.1", entry(real, f"46.{i}.0.1"))
    assert {r.peer_id for r in REAL} <= stored_peers(core)


def test_a_new_instance_is_admitted_only_on_its_own_word_from_a_prefix_it_declares():
    core = server()
    alice, bob = REAL[0], REAL[1]
    assert not put(core, bob, "46.1.0.1", entry(alice, "46.0.0.1"))  # relayed by another peer
    assert not put(core, alice, "47.0.0.1", entry(alice, "46.0.0.1"))  # declares a prefix it is not in
    assert put(core, alice, "46.0.0.1", entry(alice, "46.0.0.1"))
    # Once listed, an instance's renewal spreads through anyone (read repair).
    assert put(core, bob, "46.1.0.1", entry(alice, "46.0.0.1", seq=2))


def test_naming_another_operators_prefix_uses_none_of_its_room():
    core = server()
    for i, squatter in enumerate(SQUATTERS[:MAX_SERVICE_INSTANCES_PER_PREFIX]):
        ip = f"{SQUATTER_PREFIX}.{i + 1}"
        assert put(core, squatter, ip, entry(squatter, ip, also=("46.0.0.1",)))  # home: the squatter's prefix
    squatter = SQUATTERS[-1]
    assert not put(core, squatter, f"{SQUATTER_PREFIX}.99", entry(squatter, "46.0.0.99", also=(f"{SQUATTER_PREFIX}.99",)))
    for i, real in enumerate(REAL):
        assert put(core, real, f"46.0.0.{i + 1}", entry(real, f"46.0.0.{i + 1}"))


def test_a_dual_stack_instance_is_admitted_from_the_home_of_either_family():
    core = server()
    v6_first, v4_first, other = REAL
    # Reaching the server over the family it declares second, from that family's home.
    assert put(core, v6_first, "46.0.0.1", entry(v6_first, "2a01:4f8:1::1", also=("46.0.0.1",)))
    assert put(core, v4_first, "2a01:4f8:2::1", entry(v4_first, "46.1.0.1", also=("2a01:4f8:2::1",)))
    # A family's home is its first address: a later one of the same family is not.
    assert not put(core, other, "46.3.0.1", entry(other, "2a01:4f8:3::1", also=("46.2.0.1", "46.3.0.1")))
    assert stored_peers(core) == {v6_first.peer_id, v4_first.peer_id}


def test_dual_stack_throwaway_keys_get_the_room_of_the_prefixes_they_send_from_and_no_more():
    # Each instance takes one place, against the prefix it was admitted from: a squatter with an
    # IPv4 /24 and an IPv6 /48 gets what one with two IPv4 /24s gets, and the real instances get in.
    core = server()
    squatter_v6 = "2a02:1234:5678"
    for i, squatter in enumerate(SQUATTERS):
        v4, v6 = f"{SQUATTER_PREFIX}.{i + 1}", f"{squatter_v6}::{i + 1:x}"
        put(core, squatter, v4 if i % 2 else v6, entry(squatter, v4, weight=MAX_SERVICE_WEIGHT, also=(v6,)))
    assert len(stored_peers(core)) == 2 * MAX_SERVICE_INSTANCES_PER_PREFIX
    for i, real in enumerate(REAL):
        assert put(core, real, f"2a03:{i}::1", entry(real, f"46.{i}.0.1", also=(f"2a03:{i}::1",)))
    assert {r.peer_id for r in REAL} <= stored_peers(core)


def test_instances_listed_before_the_server_remembered_them_fill_every_home_they_declare():
    # A restarted server holds the set but not where each instance came from: it stays strict.
    first = server()
    for i, squatter in enumerate(SQUATTERS[:MAX_SERVICE_INSTANCES_PER_PREFIX]):
        ip = f"{SQUATTER_PREFIX}.{i + 1}"
        assert put(first, squatter, ip, entry(squatter, ip, also=(f"2a01:4f8:9::{i + 1:x}",)))
    restarted = server()
    restarted.store.put_value(KEY, first.store.get_value(KEY, NOW), NOW + 3600, NOW)
    assert not put(restarted, REAL[0], "2a01:4f8:9::100", entry(REAL[0], "2a01:4f8:9::100"))


def test_ranking_lets_no_prefix_take_the_top_by_declaring_high_weight():
    squatters = [verify_service_entry(entry(s, f"{SQUATTER_PREFIX}.{i + 1}", MAX_SERVICE_WEIGHT), "relay", NOW)
                 for i, s in enumerate(SQUATTERS[:MAX_SERVICE_INSTANCES_PER_PREFIX])]
    real = [verify_service_entry(entry(r, f"46.{i}.0.1", weight=1), "relay", NOW) for i, r in enumerate(REAL)]
    for seed in range(50):
        ranked = rank_service_instances(squatters + real, random.Random(seed))
        assert sorted(ranked, key=id) == sorted(squatters + real, key=id)
        assert set(ranked[:2]) & set(real)
    # Within one prefix, weight still decides.
    same_prefix = [verify_service_entry(entry(r, f"46.0.0.{i + 1}", weight=i), "relay", NOW) for i, r in enumerate(REAL)]
    assert [r.weight for r in rank_service_instances(same_prefix, random.Random(0))] == [2, 1, 0]


async def test_sixty_four_throwaway_keys_cannot_deny_a_name_over_the_network(autojump_clock):
    async with trio.open_nursery() as nursery:
        network = FakeNetwork(nursery)

        async def start(host):
            seed = [parse_peer_addr(f"{honest[0].host.addr}/p2p/{honest[0].host.peer_id}")] if honest else []
            service = KademliaService(host, MemoryRecordStore(), bootstrap=seed)
            await nursery.start(service.run)
            await service.bootstrap()
            return service

        honest = []
        for i in range(20):
            honest.append(await start(network.add_host(i)))
        squatters = []
        for i in range(MAX_SERVICE_INSTANCES):
            host = network.add_host(1000 + i)
            host.addr = host.source_addr = f"/ip4/{SQUATTER_PREFIX}.{i + 1}/udp/4001/quic-v1"
            squatters.append(await start(host))
        for service in squatters:
            await Discovery(service, service.host.identity).register_service("relay", "/hm/relay/1", weight=MAX_SERVICE_WEIGHT)
        real = []
        for i in range(3):
            host = network.add_host(2000 + i)
            host.addr = host.source_addr = f"/ip4/46.{i}.0.1/udp/4001/quic-v1"
            service = await start(host)
            assert await Discovery(service, service.host.identity).register_service("relay", "/hm/relay/1") > 0
            real.append(service.host.peer_id)

        asking = Discovery(honest[-1], honest[-1].host.identity, rng=random.Random(3))
        instances = [r.peer_id for r in await asking.resolve_service("relay")]
        assert set(real) <= set(instances)
        assert set(instances[:2]) & set(real)
        nursery.cancel_scope.cancel()


def test_throwaway_keys_naming_a_victims_ipv6_prefix_use_none_of_its_room():
    # Admitted over IPv4 from their own prefix, squatters declare the victim's /48 as their IPv6 home.
    # A server counts a listed instance against the prefix it was admitted from, so the victim,
    # reaching it over IPv6 alone, still gets in.
    core = server()
    victim_v6 = "2a01:4f8:9"
    for i, squatter in enumerate(SQUATTERS[:MAX_SERVICE_INSTANCES_PER_PREFIX]):
        ip = f"{SQUATTER_PREFIX}.{i + 1}"
        assert put(core, squatter, ip, entry(squatter, ip, also=(f"{victim_v6}::{i + 1:x}",)))
    for i, real in enumerate(REAL):
        ip = f"{victim_v6}::{0x100 + i:x}"
        assert put(core, real, ip, entry(real, ip))
    assert {r.peer_id for r in REAL} <= stored_peers(core)
