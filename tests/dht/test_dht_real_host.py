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


async def wait_for(condition, poll=0.05):
    """Wait for an observable condition of real network I/O (bounded by the caller's fail_after)."""
    while not condition():
        await trio.sleep(poll)


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
            assert PROTOCOL_ID in hosts[1].peerstore.protocols(hosts[0].peer_id)
            # The first node learns the others as they bootstrap through it: their
            # requests beat identify, so it asks them back (a probe) and adds them.
            await wait_for(lambda: len(nodes[0].service.core.routing) == 3)
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
