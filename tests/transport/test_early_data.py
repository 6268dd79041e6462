"""0-RTT early data: replay-safe requests only, refused otherwise, replays without effect.

Real QUIC on [::1]. A first connection earns the client a session ticket;
the next dial resumes it and may carry early data.
"""

import socket
import struct

import pytest
import trio

from hypermesh.transport import metrics, perf, ping
from hypermesh.transport.errors import StreamReset
from hypermesh.transport.host import open_host
from hypermesh.transport.identity import Identity
from hypermesh.transport.multistream import Negotiator
from resumption_testkit import earn_session_ticket

V6 = "/ip6/::1/udp/0/quic-v1"
STEP = 10


def refused_early() -> float:
    return metrics.STREAMS_REFUSED.labels("early_data")._value.get()


@pytest.fixture
async def resumable():
    """A server, a client holding a fresh ticket for it but no connection, and
    the client's socket (its next dial to the server uses it again)."""
    async with open_host(Identity.generate(), [V6]) as server, open_host(Identity.generate()) as client:
        yield server, client, await earn_session_ticket(client, server, STEP)


async def test_a_resumed_ping_rides_in_early_data(resumable):
    server, client, _ = resumable
    with trio.fail_after(STEP):
        stream = await client.new_stream(server.peer_id, [ping.PROTOCOL])
        driver = stream.connection
        assert stream.early  # opened before the handshake completed
        assert await ping.Pinger(stream).ping()
        await driver.handshake_complete.wait()
    assert driver.resumed and driver.early_data_accepted


def packet_types(datagram: bytes) -> list[int]:
    """The long-header packet types coalesced in ``datagram`` (0 Initial, 1 0-RTT, 2 Handshake)."""
    from aioquic.buffer import Buffer
    from aioquic.quic.packet import pull_quic_header

    types, offset = [], 0
    while offset < len(datagram) and datagram[offset] & 0x80:
        header = pull_quic_header(Buffer(data=datagram[offset:]), host_cid_length=8)
        types.append((datagram[offset] & 0x30) >> 4)
        offset += header.packet_length
    return types


async def test_the_early_ping_shares_the_first_datagram_with_the_client_hello(resumable):
    server, client, endpoint = resumable
    flight = []
    real_send = endpoint.send_datagram
    endpoint.send_datagram = lambda data, addr: flight.append(data) or real_send(data, addr)
    try:
        with trio.fail_after(STEP):
            stream = await client.new_stream(server.peer_id, [ping.PROTOCOL])
            assert await ping.Pinger(stream).ping()
    finally:
        del endpoint.send_datagram
    # Initial (ClientHello) and 0-RTT (multistream proposal and ping) in one datagram.
    assert packet_types(flight[0]) == [0, 1]
    assert stream.connection.early_data_accepted


async def test_a_resumed_dial_that_sends_nothing_still_completes(resumable):
    server, client, _ = resumable
    with trio.fail_after(STEP):
        driver = await client.dialer.dial(server.peer_id, client_addresses(client, server), early_data=True)
        assert not driver.handshake_complete.is_set()
        await driver.handshake_complete.wait()
        await driver.session_ticket_received.wait()
    assert driver.resumed


async def test_other_protocols_wait_for_the_handshake(resumable):
    server, client, _ = resumable
    with trio.fail_after(STEP):
        stream = await client.new_stream(server.peer_id, [perf.PROTOCOL])
    assert not stream.early and stream.connection.handshake_complete.is_set()


async def test_server_refuses_early_data_for_a_protocol_that_is_not_replay_safe(resumable):
    server, client, _ = resumable
    served = []
    server.set_stream_handler(perf.PROTOCOL, lambda stream: served.append(stream) or trio.sleep(0))
    before = refused_early()
    with trio.fail_after(STEP):
        # A client that ignores the rule: perf (which has effects) in 0-RTT.
        driver = await client.dialer.dial(server.peer_id, client_addresses(client, server), early_data=True)
        stream = driver.open_stream()
        assert stream.early
        await stream.send_all(Negotiator.dialer([perf.PROTOCOL]).initial_bytes() + struct.pack(">Q", 1000))
        with pytest.raises(StreamReset):
            for _ in range(100):
                if not await stream.receive_some():
                    break
    assert refused_early() == before + 1 and served == []


async def test_a_replayed_early_flight_causes_no_second_effect(resumable):
    server, client, endpoint = resumable
    served = []

    async def counting_ping(stream):
        served.append(stream)
        await ping.handle_ping(stream)

    server.set_stream_handler(ping.PROTOCOL, counting_ping, early_data=True)
    server_sides = []
    server_established = trio.Event()
    server.on_connection.append(lambda driver: server_sides.append(driver) or server_established.set())
    # Record what the client sends while its early request is answered.
    flight = []
    real_send = endpoint.send_datagram
    endpoint.send_datagram = lambda data, addr: flight.append((data, addr)) or real_send(data, addr)
    with trio.fail_after(STEP):
        stream = await client.new_stream(server.peer_id, [ping.PROTOCOL])
        pinger = ping.Pinger(stream)
        assert await pinger.ping()
    del endpoint.send_datagram
    assert stream.connection.early_data_accepted and len(served) == 1
    with trio.fail_after(STEP):
        await stream.connection.handshake_complete.wait()
        await stream.connection.aclose()
        await server_established.wait()  # the server's side of the handshake ends a moment later
        await server_sides[0].closed_event.wait()
    # An attacker replays the whole flight from another address, once the
    # connection is gone (while it lives, the flight reaches it as duplicates).
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as attacker:
        for data, addr in flight:
            attacker.sendto(data, addr)
        with trio.fail_after(STEP):
            # Datagrams are handled in arrival order: this dial follows the replay.
            assert await ping.ping(client, server.peer_id)
    assert len(served) == 2  # the first request and the one just made; none from the replay


async def test_a_protocol_that_also_carries_writes_goes_early_only_when_the_caller_says_so(resumable):
    server, client, _ = resumable
    reads_and_writes = "/test/reads-and-writes/1.0.0"

    async def echo(stream):
        await stream.send_all(await stream.receive_some())

    for host in (server, client):
        host.set_stream_handler(reads_and_writes, echo, early_data=True, replay_safe=False)
    with trio.fail_after(STEP):
        by_default = await client.new_stream(server.peer_id, [reads_and_writes])
        assert not by_default.early and by_default.connection.handshake_complete.is_set()
        await by_default.connection.session_ticket_received.wait()
        await by_default.connection.aclose()
        vouched = await client.new_stream(server.peer_id, [reads_and_writes], replay_safe=True)
        assert vouched.early
        await vouched.send_all(b"a read")
        assert await vouched.receive_some() == b"a read"
    assert vouched.connection.early_data_accepted


async def test_a_replay_safe_protocol_is_not_sent_early_when_the_caller_says_not_to(resumable):
    server, client, _ = resumable
    with trio.fail_after(STEP):
        stream = await client.new_stream(server.peer_id, [ping.PROTOCOL], replay_safe=False)
    assert not stream.early and stream.connection.handshake_complete.is_set()


def client_addresses(client, server):
    from hypermesh.transport.multiaddrs import parse_quic_address

    return [parse_quic_address(text) for text in client.peerstore.addrs(server.peer_id)]
