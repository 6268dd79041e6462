"""The DHT over real hosts: QUIC on 127.0.0.1, identify, multistream (the transport contract)."""

import contextlib

import trio

from hypermesh.dht.discovery import open_discovery
from hypermesh.dht.keys import Cid
from hypermesh.dht.messages import PROTOCOL_ID
from hypermesh.transport.host import open_host
from hypermesh.transport.identity import Identity

V4 = "/ip4/127.0.0.1/udp/0/quic-v1"
# Loopback answers in milliseconds; this only bounds a hung test.
STEP = 30


async def identified(host, peer_id) -> None:
    """Return once ``host`` holds ``peer_id``'s identify record."""
    arrived = trio.Event()
    host.on_identified.append(lambda record: record.peer_id == peer_id and arrived.set())
    if not host.peerstore.protocols(peer_id):
        await arrived.wait()


async def test_dht_over_real_hosts(tmp_path):
    async with contextlib.AsyncExitStack() as stack:
        hosts = [await stack.enter_async_context(open_host(Identity.generate(), [V4])) for _ in range(4)]
        first = hosts[0].listen_addrs()[0]
        first = first if "/p2p/" in first else f"{first}/p2p/{hosts[0].peer_id}"
        nodes = []
        for i, host in enumerate(hosts):
            bootstrap = [first] if i else []
            nodes.append(await stack.enter_async_context(open_discovery(host, tmp_path / f"n{i}", bootstrap=bootstrap)))
        with trio.fail_after(STEP):
            for node in nodes[1:]:
                await node.service.bootstrap()
            await identified(hosts[1], hosts[0].peer_id)
            assert PROTOCOL_ID in hosts[1].peerstore.protocols(hosts[0].peer_id)
            # The first node learns the others as they bootstrap through it: their
            # requests beat identify, so it asks them back (a probe) and adds them.
            assert await nodes[0].service.wait_for_routing_peers(3) == 3
            found = await nodes[3].service.find_node(hosts[1].peer_id.multihash)
            assert hosts[1].peer_id in [p.peer_id for p in found.closest]

            cid = Cid.for_string("real hosts")
            nodes[1].provide(cid)
            await nodes[1].wait_provided(cid)
            providers = await nodes[2].find_providers(cid)
            assert [p.peer_id for p in providers] == [hosts[1].peer_id]

            assert await nodes[2].register_service("echo", "/echo/1", weight=5) >= 2
            [instance] = await nodes[0].resolve_service("echo")
            assert instance.peer_id == hosts[2].peer_id and instance.weight == 5


@contextlib.asynccontextmanager
async def two_nodes(tmp_path):
    async with contextlib.AsyncExitStack() as stack:
        hosts = [await stack.enter_async_context(open_host(Identity.generate(), [V4])) for _ in range(2)]
        first = hosts[0].listen_addrs()[0]
        first = first if "/p2p/" in first else f"{first}/p2p/{hosts[0].peer_id}"
        server = await stack.enter_async_context(open_discovery(hosts[0], tmp_path / "server"))
        client = await stack.enter_async_context(open_discovery(hosts[1], tmp_path / "client", bootstrap=[first]))
        with trio.fail_after(STEP):
            await client.service.bootstrap()
        yield server, client


async def test_requests_to_one_peer_share_one_stream(tmp_path):
    async with two_nodes(tmp_path) as (server, client):
        pool = client.service._request_streams
        opened = pool.opened
        with trio.fail_after(STEP):
            for i in range(10):
                await client.service.find_node(Cid.for_string(f"key {i}").multihash)
        assert pool.opened == opened
        assert pool.reused >= 10


async def test_a_stream_the_server_ended_is_replaced_without_failing_the_request(tmp_path, monkeypatch):
    from hypermesh.dht import driver

    # The server ends every stream after one answer (py-libp2p does the like).
    monkeypatch.setattr(driver, "MAX_REQUESTS_PER_STREAM", 1)
    async with two_nodes(tmp_path) as (server, client):
        pool = client.service._request_streams
        with trio.fail_after(STEP):
            for i in range(5):
                result = await client.service.find_node(Cid.for_string(f"key {i}").multihash)
                assert server.service.host.peer_id in [p.peer_id for p in result.closest]
        assert pool.reused >= 5 and pool.opened >= 5
