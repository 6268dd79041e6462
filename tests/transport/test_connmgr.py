"""The connection manager: the trimming policy, and a host trimming real connections."""

import contextlib

import pytest
import trio

from hypermesh.transport.connmgr import ConnectionManager, ConnectionManagerConfig, ConnectionState
from hypermesh.transport.host import HostConfig, open_host
from hypermesh.transport.identity import Identity

V6 = "/ip6/::1/udp/0/quic-v1"
STEP = 10
PEERS = [Identity.from_seed(bytes([i]) * 32).peer_id for i in range(6)]


def state(i, *, opened_at=0.0, streams=0, last_used=0.0):
    return ConnectionState(f"c{i}", PEERS[i], opened_at, streams, last_used)


def test_trims_least_recently_used_idle_connections_down_to_low_water():
    manager = ConnectionManager(ConnectionManagerConfig(low_water=2, high_water=4, grace_period=10, silence_period=5))
    connections = [state(i, last_used=float(10 - i)) for i in range(5)]
    assert manager.wants_trim(5, now=100)
    assert manager.select_for_trim(connections, now=100) == ["c4", "c3", "c2"]


def test_spares_streams_young_connections_and_protected_peers():
    manager = ConnectionManager(ConnectionManagerConfig(low_water=0, high_water=1, grace_period=10))
    manager.protect(PEERS[2], "dht")
    connections = [state(0, streams=1), state(1, opened_at=95.0), state(2), state(3)]
    assert manager.select_for_trim(connections, now=100) == ["c3"]
    manager.protect(PEERS[2], "consensus")
    assert manager.unprotect(PEERS[2], "dht")  # still protected by the other tag
    assert not manager.unprotect(PEERS[2], "consensus")
    assert manager.select_for_trim(connections, now=100) == ["c2", "c3"]


def test_trims_only_above_high_water_and_at_most_once_per_silence_period():
    manager = ConnectionManager(ConnectionManagerConfig(low_water=1, high_water=3, silence_period=5))
    assert not manager.wants_trim(3, now=0)
    assert manager.wants_trim(4, now=0)
    manager.select_for_trim([state(i) for i in range(4)], now=0)
    assert not manager.wants_trim(4, now=4.9)
    assert manager.wants_trim(4, now=5)


def test_rejects_low_water_above_high_water():
    with pytest.raises(ValueError):
        ConnectionManagerConfig(low_water=5, high_water=4)


async def test_host_closes_idle_connections_beyond_its_high_water_mark():
    # New connections are spared for a second; the periodic trim then finds them idle.
    limits = ConnectionManagerConfig(low_water=2, high_water=2, grace_period=1.0, silence_period=0)
    holding = trio.Event()
    release = trio.Event()

    async def hold(stream):
        holding.set()
        await release.wait()
        await stream.aclose()

    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(open_host(Identity.generate(), [V6], HostConfig(connection_manager=limits)))
        server.set_stream_handler("/test/hold/1", hold)
        clients = [await stack.enter_async_context(open_host(Identity.generate(), [V6])) for _ in range(4)]
        protected, busy, idle = clients[0], clients[1], clients[2:]
        server.connection_manager.protect(protected.peer_id, "test")
        accepted = {}
        all_accepted = trio.Event()

        def on_connection(driver):
            accepted[driver.remote_peer_id] = driver
            if len(accepted) == len(clients):
                all_accepted.set()

        server.on_connection.append(on_connection)
        with trio.fail_after(STEP):
            for client in (protected, busy):
                await client.connect(server.listen_addrs()[0])
            held = await busy.new_stream(server.peer_id, ["/test/hold/1"])
            await holding.wait()
            # Two more connections pass the high water mark: once their grace
            # period is over, the server closes them (idle and unprotected).
            for client in idle:
                await client.connect(server.listen_addrs()[0])
            await all_accepted.wait()
            for client in idle:
                await accepted[client.peer_id].closed_event.wait()
        assert set(server.connected_peers()) == {protected.peer_id, busy.peer_id}
        release.set()
        await held.aclose()
