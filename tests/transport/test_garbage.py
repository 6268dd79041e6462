"""Streams are freed by reference counting, not left to the garbage
collector: a node opens thousands of streams a minute, and every object only
the collector frees makes its collections more frequent and its pauses longer
(bench/dht.py counts them; a lookup that meets a paused node waits for it).

A connection is not yet: aioquic's QuicConnection holds bound methods of
itself (its frame-handler table, its key callbacks), so each one ends as a
cycle of a few hundred objects for the collector."""

import contextlib
import gc
import weakref

import pytest
import trio
import trio.testing

from hypermesh.transport import ping
from hypermesh.transport.errors import StreamReset
from hypermesh.transport.host import open_host
from hypermesh.transport.identity import Identity

V6 = "/ip6/::1/udp/0/quic-v1"
STEP = 10  # seconds: a generous bound for every network step on loopback
RESET_PROTOCOL = "/test/reset/1.0.0"


def _ours(obj) -> bool:
    """Whether ``obj`` belongs to the transport or to aioquic (a frame: runs their code)."""
    if type(obj).__name__ == "frame":
        filename = obj.f_code.co_filename
        return "/transport/" in filename or "/aioquic/" in filename
    module = getattr(type(obj), "__module__", "") or ""
    return module.startswith(("hypermesh", "aioquic"))


@contextlib.contextmanager
def cyclic_garbage():
    """Yields a list that, at the end of the block, holds the transport's and
    aioquic's objects that became garbage only the collector could free."""
    found: list = []
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield found
    finally:
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            found.extend(sorted({type(o).__qualname__ for o in gc.garbage if _ours(o)}))
        finally:
            gc.garbage.clear()
            gc.set_debug(0)
            if was_enabled:
                gc.enable()


@pytest.fixture
async def pair():
    async with open_host(Identity.generate(), [V6]) as server, open_host(Identity.generate(), [V6]) as client:
        client.peerstore.add_addrs(server.peer_id, server.listen_addrs())
        with trio.fail_after(STEP):
            await client.connect(server.listen_addrs()[0])
        yield server, client


async def test_streams_that_end_leave_no_reference_cycles(pair):
    server, client = pair
    with cyclic_garbage() as garbage:
        with trio.fail_after(STEP):
            for _ in range(20):
                stream = await client.new_stream(server.peer_id, [ping.PROTOCOL])
                await ping.Pinger(stream).ping()
                await stream.aclose()
            assert await ping.ping(client, server.peer_id)  # the last closes are acknowledged
    assert garbage == []


async def reset_at_once(stream):
    await stream.reset()


async def test_reset_streams_leave_no_reference_cycles(pair):
    server, client = pair
    server.set_stream_handler(RESET_PROTOCOL, reset_at_once)
    with cyclic_garbage() as garbage:
        with trio.fail_after(STEP):
            for _ in range(20):
                stream = await client.new_stream(server.peer_id, [RESET_PROTOCOL])
                await stream.send_all(b"request")
                for _ in range(2):  # the stored reset, raised twice
                    with pytest.raises(StreamReset):
                        await stream.receive_some()
                await stream.aclose()
            assert await ping.ping(client, server.peer_id)
    assert garbage == []


async def close_connections(host, peer_id) -> list[weakref.ref]:
    """Close every connection to ``peer_id``; weak references to them (we hold none)."""
    closed = []
    for driver in host.connections_to(peer_id):
        closed.append(weakref.ref(driver))
        await driver.aclose()
    return closed


async def test_closed_connections_are_not_held_by_their_keepalive(pair):
    """A closed connection's tasks end with it: its keepalive task, asleep
    until the next PING was due, held all of its state for half an idle
    timeout after it closed."""
    server, client = pair
    closed = []
    with trio.fail_after(STEP):
        for _ in range(5):
            closed += await close_connections(client, server.peer_id)
            assert await ping.ping(client, server.peer_id)  # dials anew
        await trio.testing.wait_all_tasks_blocked()
    gc.collect()
    assert [ref for ref in closed if ref() is not None] == []
