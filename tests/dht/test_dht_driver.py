"""The trio driver and the discovery API over an in-memory host (virtual time)."""

import contextlib
import time

import pytest
import trio
from multiaddr import Multiaddr

from dht_fakehost import FakeNetwork
from hypermesh.dht import kad_pb2
from hypermesh.dht.discovery import RENEWAL_RETRY_DELAY, Discovery, ServiceOffer, open_discovery
from hypermesh.dht.driver import MAX_REQUESTS_PER_STREAM, KademliaService, parse_peer_addr
from hypermesh.dht.kademlia import KadConfig, Mode
from hypermesh.dht.keys import Cid, kad_key, peer_key
from hypermesh.dht.messages import (
    MAX_MESSAGE_SIZE,
    PROTOCOL_ID,
    REPLAY_SAFE_TYPES,
    KadMessage,
    MessageType,
    PeerInfo,
    decode_message,
    encode_message,
)
from hypermesh.dht.records import service_key
from hypermesh.dht.server import Misbehaviour
from hypermesh.dht.store import MemoryRecordStore
from hypermesh.transport.errors import TransportError
from hypermesh.transport.framing import BufferedReader, frame, write_frame
from hypermesh.transport.varint import decode_uvarint, encode_uvarint


def bootstrap_addr(host):
    return f"{host.addr}/p2p/{host.peer_id}"


def record_dials(host) -> list:
    """The peers ``host`` opens streams to, in order, from now on."""
    dialled = []
    real_new_stream = host.new_stream

    async def recording_new_stream(peer_id, protocols, **options):
        dialled.append(peer_id)
        return await real_new_stream(peer_id, protocols, **options)

    host.new_stream = recording_new_stream
    return dialled


@contextlib.asynccontextmanager
async def dht_network(count: int):
    """``count`` DHT servers on a fake network; yields (nursery, services)."""
    async with trio.open_nursery() as nursery:
        services = await start_services(nursery, FakeNetwork(nursery), count)
        yield nursery, services
        nursery.cancel_scope.cancel()


def discovery_on(service, **kwargs) -> Discovery:
    return Discovery(service, service.host.identity, **kwargs)


async def start_services(nursery, network, count, first_index=0, mode=Mode.SERVER, bootstrap_from=None):
    """``count`` DHT services; each bootstraps from ``bootstrap_from``, else the first of them."""
    services = []
    for i in range(first_index, first_index + count):
        host = network.add_host(i)
        seed = bootstrap_from or (services[0] if services else None)
        seeds = [parse_peer_addr(bootstrap_addr(seed.host))] if seed else []
        service = KademliaService(host, MemoryRecordStore(), mode=mode, bootstrap=seeds)
        await nursery.start(service.run)
        await service.bootstrap()
        services.append(service)
    return services


async def test_lookups_providers_and_values(autojump_clock):
    async with dht_network(12) as (_, services):
        for service in services:
            await service.bootstrap()
        target = services[7].host.peer_id
        result = await services[2].find_node(target.multihash)
        assert result.closest[0].peer_id == target

        cid = Cid.for_string("shared file")
        services[3].provide([cid.multihash])
        await services[3].wait_provided([cid.multihash])
        found = await services[9].get_providers(cid.multihash, wanted=1)
        assert [p.peer_id for p in found.providers] == [services[3].host.peer_id]


async def test_service_registration_resolution_and_cache(autojump_clock):
    async with dht_network(10) as (nursery, services):
        offering = discovery_on(services[4])
        nursery.start_soon(offering.run)
        asking = discovery_on(services[8], cache_ttl=30.0)
        stored = await offering.register_service("relay", "/hm/relay/1", weight=7)
        assert stored >= 5
        [instance] = await asking.resolve_service("relay")
        assert instance.peer_id == services[4].host.peer_id and instance.weight == 7
        assert instance.addrs  # defaults to the host's listen addresses

        started = time.perf_counter()
        for _ in range(100):
            assert (await asking.resolve_service("relay"))[0].weight == 7
        assert (time.perf_counter() - started) / 100 < 0.001  # sub-millisecond from the cache

        # With 10 nodes and k = 20 the asking node stores the key itself, so the
        # new registration's PUT_VALUE reaches it and invalidates its cache.
        await offering.register_service("relay", "/hm/relay/1", weight=9)
        assert (await asking.resolve_service("relay"))[0].weight == 9

        # Renewal keeps the record alive past its first lifetime.
        await offering.register_service("short", "/p", ttl=120.0)
        await trio.sleep(400)
        assert await asking.resolve_service("short")


async def test_many_services_registered_and_renewed_in_region_batches(autojump_clock):
    async with dht_network(30) as (nursery, services):
        offering = discovery_on(services[4])
        nursery.start_soon(offering.run)
        asking = discovery_on(services[20])
        names = [f"svc-{i}" for i in range(40)]
        stored = await offering.register_services([ServiceOffer(n, "/hm/x/1", weight=i, ttl=300.0) for i, n in enumerate(names)])
        assert set(stored) == set(names) and min(stored.values()) >= 10
        operations = services[4].core.stats.operations
        batches_at_first_publication = operations["put_value_batch"]
        # Fewer lookups than services: one per keyspace region (plus keys no region could place).
        assert operations["put_value_batch"] + operations.get("put_value", 0) < len(names) / 2
        for i, name in enumerate(names):
            [instance] = await asking.resolve_service(name)
            assert instance.weight == i

        # Renewals (at half the 300 s lifetime) fall due together and are batched
        # too; the records outlive their first lifetime.
        await trio.sleep(400)
        assert operations["put_value_batch"] > batches_at_first_publication
        assert operations.get("put_value", 0) < len(names) / 2
        fresh = discovery_on(services[25])
        assert all([await fresh.resolve_service(name) for name in names])


async def test_a_registration_no_peer_stored_is_retried_soon(autojump_clock):
    async with trio.open_nursery() as nursery:
        network = FakeNetwork(nursery)
        [alone] = await start_services(nursery, network, 1)
        offering = discovery_on(alone)
        nursery.start_soon(offering.run)
        assert await offering.register_service("early", "/p", ttl=3600.0) == 0  # nobody to store it
        later = await start_services(nursery, network, 6, first_index=1, bootstrap_from=alone)
        # Well before half the TTL, the renewal has placed the record at the new peers.
        await trio.sleep(RENEWAL_RETRY_DELAY + 30)
        assert any(s.store.get_value(b"/hm/service/early", s.now()) for s in later)
        nursery.cancel_scope.cancel()


async def test_one_invalid_offer_registers_none(autojump_clock):
    async with dht_network(4) as (_, services):
        offering = discovery_on(services[1])
        with pytest.raises(ValueError):
            await offering.register_services([ServiceOffer("good", "/p"), ServiceOffer("bad", "/p", weight=-1)])
        assert services[1].store.get_value(b"/hm/service/good", services[1].now()) is None
        assert await discovery_on(services[3]).resolve_service("good") == []


async def test_cache_entries_expire_with_their_records(autojump_clock):
    async with dht_network(6) as (_, services):
        offering = discovery_on(services[1])  # no run(): no renewal
        asking = discovery_on(services[5], cache_ttl=3600.0)
        await offering.register_service("ephemeral", "/p", ttl=60.0)
        assert await asking.resolve_service("ephemeral")
        await trio.sleep(61)
        assert await asking.resolve_service("ephemeral") == []


# How stale a resolution may be on a node that holds no copy of the set,
# and how long "no such service" may be repeated from the cache.
RESOLVE_STALENESS_BOUND = 10.0
EMPTY_ANSWER_STALENESS_BOUND = 2.0


def farthest_from(services, name):
    """The service farthest from ``name``'s key: never one of the k closest that store its set."""
    target = kad_key(service_key(name))
    return max(services, key=lambda s: peer_key(s.host.peer_id) ^ target)


def holds_copy(service, name) -> bool:
    return service.store.get_value(service_key(name), service.now()) is not None


async def test_node_without_a_copy_sees_a_new_instance_within_the_staleness_bound(autojump_clock):
    async with dht_network(30) as (_, services):
        first, second = discovery_on(services[1]), discovery_on(services[2])
        asking = discovery_on(farthest_from(services, "relay"))
        await first.register_service("relay", "/hm/relay/1", weight=1)
        assert [r.weight for r in await asking.resolve_service("relay")] == [1]
        await second.register_service("relay", "/hm/relay/1", weight=2)
        assert not holds_copy(asking.service, "relay")  # so no PUT_VALUE told it
        await trio.sleep(RESOLVE_STALENESS_BOUND)
        assert [r.weight for r in await asking.resolve_service("relay")] == [2, 1]


async def test_an_empty_answer_is_cached_only_briefly(autojump_clock):
    async with dht_network(30) as (_, services):
        offering = discovery_on(services[1])
        asking = discovery_on(farthest_from(services, "late"))
        assert await asking.resolve_service("late") == []
        lookups = asking.service.core.stats.operations["get_value"]
        assert await asking.resolve_service("late") == []  # at once: from the cache
        assert asking.service.core.stats.operations["get_value"] == lookups
        await offering.register_service("late", "/p")
        assert not holds_copy(asking.service, "late")
        await trio.sleep(EMPTY_ANSWER_STALENESS_BOUND)
        assert [r.peer_id for r in await asking.resolve_service("late")] == [services[1].host.peer_id]


async def test_server_resets_garbage_reports_the_sender_and_keeps_serving(autojump_clock):
    async with trio.open_nursery() as nursery:
        network = FakeNetwork(nursery)
        services = await start_services(nursery, network, 3)
        victim = services[0].host
        attacker = network.add_host(99)
        attacker.peerstore.add_addrs(victim.peer_id, [victim.addr])
        reported = []
        services[0].on_misbehaviour(lambda peer, kind: reported.append((peer, kind)))

        for payload in (frame(b"\xff\xff\xff\xff"), encode_uvarint(MAX_MESSAGE_SIZE + 1) + b"x" * 100, frame(b"\x08\x2a")):
            stream = await attacker.new_stream(victim.peer_id, [PROTOCOL_ID])
            await stream.send_all(payload)
            with trio.fail_after(60):
                assert await BufferedReader(stream).read_frame(MAX_MESSAGE_SIZE) is None  # no answer
            await stream.aclose()
        await trio.sleep(1)
        assert victim.reset_streams == 3
        assert reported == [(attacker.peer_id, Misbehaviour.MALFORMED)] * 3  # for the trust engine

        stream = await attacker.new_stream(victim.peer_id, [PROTOCOL_ID])
        await write_frame(stream, encode_message(KadMessage(MessageType.FIND_NODE, key=b"anything")))
        answer = decode_message(await BufferedReader(stream).read_frame(MAX_MESSAGE_SIZE))
        assert answer.type is MessageType.FIND_NODE and answer.closer_peers
        nursery.cancel_scope.cancel()


async def test_peer_answering_ten_thousand_closer_peers_does_not_hurt(autojump_clock):
    async with trio.open_nursery() as nursery:
        network = FakeNetwork(nursery)
        services = await start_services(nursery, network, 8)
        liar = network.add_host(50)
        liar.source_addr = "/ip4/30.0.0.1/udp/4001/quic-v1"  # a /24 with room in the honest table

        async def flood(stream):
            await BufferedReader(stream).read_frame(MAX_MESSAGE_SIZE)
            pb = kad_pb2.Message(type=kad_pb2.Message.FIND_NODE)
            for i in range(10_000):
                pb.closerPeers.add(id=b"\x12\x20" + i.to_bytes(32, "big"))
            await write_frame(stream, pb.SerializeToString())

        liar.set_stream_handler(PROTOCOL_ID, flood)
        honest = services[5]
        honest.core.peer_seen(liar.peer_id, (), honest.now(), Multiaddr(liar.source_addr).to_bytes())
        honest.host.peerstore.add_addrs(liar.peer_id, [liar.addr])
        target = services[2].host.peer_id
        result = await honest.find_node(target.multihash)
        assert result.closest[0].peer_id == target
        assert liar.peer_id not in [p.peer_id for p in result.closest]
        # None of the 10,000 made-up peers (sha2-256 IDs; real hosts here use Ed25519) got in.
        assert not [e for e in honest.core.routing.entries() if e.peer_id.multihash[0] == 0x12]
        assert honest.core.routing.get(liar.peer_id).failures == 1
        nursery.cancel_scope.cancel()


async def test_answer_with_unknown_multiaddr_protocols_still_yields_its_providers(autojump_clock):
    async with trio.open_nursery() as nursery:
        network = FakeNetwork(nursery)
        [asker] = await start_services(nursery, network, 1)
        answerer, provider = network.add_host(1), network.add_host(2)
        good = Multiaddr(provider.addr).to_bytes()
        unknown_protocol = good + b"\xff\x7f\x00"  # a code newer than our multiaddr table

        async def answer_with_odd_addresses(stream):
            request = decode_message(await BufferedReader(stream).read_frame(MAX_MESSAGE_SIZE))
            pb = kad_pb2.Message(type=kad_pb2.Message.GET_PROVIDERS, key=request.key)
            pb.providerPeers.add(id=provider.peer_id.multihash, addrs=[unknown_protocol, good])
            pb.closerPeers.add(id=network.add_host(3).peer_id.multihash, addrs=[unknown_protocol])
            await write_frame(stream, pb.SerializeToString())

        answerer.set_stream_handler(PROTOCOL_ID, answer_with_odd_addresses)
        asker.host.peerstore.add_addrs(answerer.peer_id, [answerer.addr])
        asker.core.peer_seen(answerer.peer_id, (), asker.now(), Multiaddr(answerer.addr).to_bytes())
        result = await asker.get_providers(Cid.for_string("odd").multihash, wanted=1)
        assert result.providers == [PeerInfo(provider.peer_id, (good,))]
        nursery.cancel_scope.cancel()


async def test_client_mode_asks_but_is_never_added(autojump_clock):
    async with trio.open_nursery() as nursery:
        network = FakeNetwork(nursery)
        servers = await start_services(nursery, network, 5)
        client_host = network.add_host(40)
        client = KademliaService(client_host, MemoryRecordStore(), mode=Mode.CLIENT,
                                 bootstrap=[parse_peer_addr(bootstrap_addr(servers[0].host))])
        await nursery.start(client.run)
        await client.bootstrap()
        assert PROTOCOL_ID not in client_host.handlers
        assert len(client.core.routing) >= 4
        assert all(client_host.peer_id not in s.core.routing for s in servers)
        nursery.cancel_scope.cancel()


async def test_open_discovery_persists_provides(autojump_clock, tmp_path):
    async with trio.open_nursery() as nursery:
        network = FakeNetwork(nursery)
        servers = await start_services(nursery, network, 4)
        host = network.add_host(30)
        config = KadConfig(republish_interval=600.0, provider_ttl=1200.0)
        async with open_discovery(host, tmp_path, bootstrap=[bootstrap_addr(servers[0].host)], config=config) as discovery:
            discovery.provide(str(Cid.for_string("kept")))
            await discovery.wait_provided(Cid.for_string("kept"))
            assert await discovery.find_providers(Cid.for_string("kept"))
        async with open_discovery(host, tmp_path, bootstrap=[bootstrap_addr(servers[0].host)], config=config) as discovery:
            published = discovery.service.store.local_provides()[Cid.for_string("kept").multihash]
            assert published > 0
            # Republished when due after the restart, without being provided again.
            await trio.sleep(discovery.service.config.republish_interval + 120)
            assert discovery.service.store.local_provides()[Cid.for_string("kept").multihash] > published
            discovery.stop_providing(Cid.for_string("kept"))
            assert not discovery.service.store.local_provides()
        nursery.cancel_scope.cancel()


async def test_add_provider_flood_over_streams_is_limited_and_node_keeps_serving(autojump_clock):
    async with trio.open_nursery() as nursery:
        network = FakeNetwork(nursery)
        services = await start_services(nursery, network, 3)
        victim = services[0]
        attacker = network.add_host(77)
        attacker.peerstore.add_addrs(victim.host.peer_id, [victim.host.addr])
        provider = PeerInfo(attacker.peer_id, ())
        sent = 0
        started = trio.current_time()
        for _ in range(30):  # each stream carries at most MAX_REQUESTS_PER_STREAM requests
            stream = await attacker.new_stream(victim.host.peer_id, [PROTOCOL_ID])
            with contextlib.suppress(TransportError):
                for _ in range(MAX_REQUESTS_PER_STREAM):
                    key = Cid.for_string(f"flood-{sent}").multihash
                    await write_frame(stream, encode_message(KadMessage(MessageType.ADD_PROVIDER, key=key, provider_peers=(provider,))))
                    sent += 1
            await stream.aclose()
        await trio.sleep(1)
        limit = victim.config.add_provider_limit
        accepted = sent - victim.core.stats.rate_limited
        assert accepted <= limit.burst + limit.rate * (trio.current_time() - started)
        answer = await services[1].get_providers(Cid.for_string("flood-0").multihash)
        assert answer.closest  # still serving
        nursery.cancel_scope.cancel()


def test_bootstrap_addresses_need_a_peer_id():
    with pytest.raises(ValueError):
        parse_peer_addr("/ip4/1.2.3.4/udp/4001/quic-v1")
    with pytest.raises(ValueError):
        parse_peer_addr("/ip4/1.2.3.4/udp/4001/quic-v1/p2p/notapeerid")


async def test_batched_registration_sends_each_peer_its_put_values_on_one_stream(autojump_clock):
    async with dht_network(6) as (_, services):
        registering = services[2]
        opened = record_dials(registering.host)
        offers = [ServiceOffer(f"many-{i}", "/hm/many/1") for i in range(40)]
        stored = await discovery_on(registering).register_services(offers)
        assert all(count == 5 for count in stored.values())
        # 40 names x 5 peers = 200 PUT_VALUEs, plus the region lookup: each peer's
        # PUT_VALUEs are pipelined on one stream, not one new stream apiece.
        assert len(opened) <= 2 * 5


async def test_pipelined_requests_survive_a_server_that_ends_each_stream_after_one_answer(autojump_clock):
    async with trio.open_nursery() as nursery:
        network = FakeNetwork(nursery)
        [asker] = await start_services(nursery, network, 1)
        terse = network.add_host(1)
        answered = []

        async def answer_one_then_close(stream):
            request = decode_message(await BufferedReader(stream).read_frame(MAX_MESSAGE_SIZE))
            answered.append(request.type)
            await write_frame(stream, encode_message(KadMessage(request.type, key=request.key, record=request.record)))
            await stream.aclose()

        terse.set_stream_handler(PROTOCOL_ID, answer_one_then_close)
        asker.host.peerstore.add_addrs(terse.peer_id, [terse.addr])
        asker.core.peer_seen(terse.peer_id, (), asker.now(), Multiaddr(terse.addr).to_bytes())
        offers = [ServiceOffer(f"terse-{i}", "/hm/terse/1") for i in range(5)]
        stored = await discovery_on(asker).register_services(offers)
        assert stored == {offer.name: 1 for offer in offers}  # our only peer took every PUT_VALUE
        assert answered.count(MessageType.PUT_VALUE) == 5
        nursery.cancel_scope.cancel()


async def test_provide_batch_sends_each_peer_one_stream(autojump_clock):
    async with dht_network(6) as (_, services):
        publisher = services[2]
        opened = record_dials(publisher.host)
        keys = [Cid.for_string(f"many-{i}").multihash for i in range(150)]
        publisher.provide(keys)
        await publisher.wait_provided(keys)
        # 150 keys x 5 peers = 750 ADD_PROVIDERs on a few streams per peer (64 messages each).
        assert len(opened) < 60
        found = await services[4].get_providers(keys[17], wanted=1)
        assert [p.peer_id for p in found.providers] == [publisher.host.peer_id]


async def test_peers_querying_before_identify_are_probed_and_added(autojump_clock):
    async with trio.open_nursery() as nursery:
        network = FakeNetwork(nursery)
        network.identify_never_finishes = True
        services = await start_services(nursery, network, 4)
        await trio.sleep(1)  # virtual: lets the probes' answers arrive
        first = services[0].core.routing
        assert {s.host.peer_id for s in services[1:]} <= {e.peer_id for e in first.entries()}
        nursery.cancel_scope.cancel()


async def test_idle_inbound_streams_are_capped_and_time_out(autojump_clock, monkeypatch):
    monkeypatch.setattr("hypermesh.dht.driver.MAX_INBOUND_STREAMS_PER_PEER", 5)
    async with trio.open_nursery() as nursery:
        network = FakeNetwork(nursery)
        services = await start_services(nursery, network, 2)
        victim = services[0].host
        attacker = network.add_host(66)
        attacker.peerstore.add_addrs(victim.peer_id, [victim.addr])
        idle = [await attacker.new_stream(victim.peer_id, [PROTOCOL_ID]) for _ in range(8)]
        await trio.sleep(1)
        assert victim.reset_streams == 3  # over the per-peer cap: reset at once
        # Other peers are unaffected.
        result = await services[1].find_node(services[0].host.peer_id.multihash)
        assert result.closest and result.closest[0].peer_id == victim.peer_id
        # Idle streams are dropped after INBOUND_IDLE_TIMEOUT, freeing the attacker's slots.
        await trio.sleep(31)
        stream = await attacker.new_stream(victim.peer_id, [PROTOCOL_ID])
        await write_frame(stream, encode_message(KadMessage(MessageType.PING)))
        assert decode_message(await BufferedReader(stream).read_frame(MAX_MESSAGE_SIZE)).type is MessageType.PING
        for s in idle:
            await s.aclose()
        nursery.cancel_scope.cancel()


async def test_a_request_that_timed_out_waiting_for_a_stream_is_never_sent(autojump_clock, monkeypatch):
    from hypermesh.dht import driver

    monkeypatch.setattr(driver, "MAX_OUTBOUND_STREAMS", 1)
    async with trio.open_nursery() as nursery:
        network = FakeNetwork(nursery)
        stallers = await start_services(nursery, network, 2)
        for staller in stallers:
            staller.host.handlers[PROTOCOL_ID] = lambda stream: trio.sleep_forever()
        asker = KademliaService(network.add_host(9), MemoryRecordStore())
        await nursery.start(asker.run)
        dialled = record_dials(asker.host)
        now = asker.now()
        for staller in stallers:
            asker.host.peerstore.add_addrs(staller.host.peer_id, [staller.host.addr])
            peer = staller.host.peer_id
            asker.core.peer_seen(peer, asker._peer_addrs(peer), now, Multiaddr(staller.host.addr).to_bytes())
        # Both are queried at once; whichever gets the only stream holds it
        # until the query timeout, when the core has given up on both.
        await asker.find_node(Cid.for_string("anything").multihash)
        await trio.sleep(2 * asker.config.query_timeout)  # virtual: time for a late send to happen
        assert len(dialled) == 1
        nursery.cancel_scope.cancel()


def record_writes(host) -> list:
    """(whether it went in 0-RTT, message type) for every message ``host`` sends on the streams it opens."""
    sent = []
    real_new_stream = host.new_stream

    async def recording_new_stream(peer_id, protocols, *, replay_safe=None):
        assert replay_safe is not None  # every DHT stream says whether what it carries is replay-safe
        stream = await real_new_stream(peer_id, protocols, replay_safe=replay_safe)
        real_send_all = stream.send_all

        async def send_all(data):
            in_early_data = stream.early and not stream.handshake_confirmed
            offset = 0
            while offset < len(data):
                length, offset = decode_uvarint(data, offset)
                sent.append((in_early_data, decode_message(bytes(data[offset : offset + length])).type))
                offset += length
            await real_send_all(data)

        stream.send_all = send_all
        return stream

    host.new_stream = recording_new_stream
    return sent


async def test_only_reads_go_in_early_data(autojump_clock):
    async with dht_network(8) as (nursery, services):
        writer = services[3]
        sent = record_writes(writer.host)
        # No stream is kept: every round of requests, writes too, opens a new one.
        writer._request_streams.max_idle = 0
        cid = Cid.for_string("early or not")
        writer.provide([cid.multihash])
        await writer.wait_provided([cid.multihash])
        offering = discovery_on(writer)
        nursery.start_soon(offering.run)
        assert await offering.register_service("early", "/hm/early/1") >= 1
        await writer.get_value(service_key("early"))
    early = {kind for in_early_data, kind in sent if in_early_data}
    assert MessageType.FIND_NODE in early
    assert early <= REPLAY_SAFE_TYPES
    assert {MessageType.ADD_PROVIDER, MessageType.PUT_VALUE} <= {kind for _, kind in sent}
