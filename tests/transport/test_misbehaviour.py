"""Protocol violations by authenticated peers are reported (Host.on_misbehaviour), over real QUIC on [::1];
a peer that merely closes, or blames us, is not."""

import pytest
import trio

from hypermesh.transport import ping
from hypermesh.transport.errors import NegotiationError
from hypermesh.transport.host import HostConfig, open_host
from hypermesh.transport.identity import Identity

V6 = "/ip6/::1/udp/0/quic-v1"
# Generous bound for every network step: loopback answers in milliseconds.
STEP = 10
ECHO_PROTOCOL = "/test/echo/1.0.0"
PROTOCOL_VIOLATION = 0xA


class Reports:
    """Collects what a host reports, with an event for the first report."""

    def __init__(self, host):
        self.items: list[tuple] = []
        self.first = trio.Event()
        host.on_misbehaviour(self.add)

    def add(self, peer, reason: str) -> None:
        self.items.append((peer, reason))
        self.first.set()


async def echo(stream):
    await stream.send_all(await stream.receive_some())


@pytest.fixture
async def pair():
    async with open_host(Identity.generate(), [V6]) as server, open_host(Identity.generate(), [V6]) as client:
        server.set_stream_handler(ECHO_PROTOCOL, echo)
        yield server, client


async def test_a_malformed_multistream_negotiation_is_reported_against_its_peer(pair):
    server, client = pair
    reports = Reports(server)
    with trio.fail_after(STEP):
        driver = await client.connect(server.listen_addrs()[0])
        stream = driver.open_stream()
        # A header, then a message that does not end with a newline.
        await stream.send_all(b"\x13/multistream/1.0.0\n\x04abcd")
        await reports.first.wait()
    assert len(reports.items) == 1
    peer, reason = reports.items[0]
    assert peer == client.peer_id
    assert "newline" in reason
    with trio.fail_after(STEP):  # only the stream was dropped: the peer is still served
        assert await ping.ping(client, server.peer_id)


async def test_a_peer_that_opens_streams_beyond_the_advertised_limit_is_reported():
    server_limits = HostConfig(max_streams_per_connection=4)
    async with open_host(Identity.generate(), [V6], server_limits) as server, open_host(
        Identity.generate(), [V6], HostConfig(max_streams_per_connection=100)
    ) as client:
        server.set_stream_handler(ECHO_PROTOCOL, echo)
        reports = Reports(server)
        with trio.fail_after(STEP):
            driver = await client.connect(server.listen_addrs()[0])
            # Impersonate a peer that ignores MAX_STREAMS: pretend it granted plenty.
            driver.quic._remote_max_streams_bidi = 100
            for _ in range(4 * server_limits.max_streams_per_connection):
                await driver.open_stream().send_all(b"\x13/multistream/1.0.0\n")
            await reports.first.wait()
    assert reports.items == [(client.peer_id, "STREAM_LIMIT_ERROR: Too many streams open")]


async def test_a_peer_that_closes_its_connection_with_an_error_is_not_reported(pair):
    server, client = pair
    reports = Reports(server)
    with trio.fail_after(STEP):
        driver = await client.connect(server.listen_addrs()[0])
        assert await ping.ping(client, server.peer_id)  # the server holds the connection by now
        server_side = server.connections_to(client.peer_id)[0]
        # The peer blames us: that is its claim, not evidence against it.
        driver.close("you broke the protocol", error_code=PROTOCOL_VIOLATION)
        await server_side.closed_event.wait()
    assert reports.items == []


async def test_a_protocol_the_server_does_not_speak_is_not_a_violation(pair):
    server, client = pair
    reports = Reports(server)
    with trio.fail_after(STEP):
        await client.connect(server.listen_addrs()[0])
        stream = await client.new_stream(server.peer_id, ["/test/unknown/1.0.0"])
        with pytest.raises(NegotiationError, match="supports none"):
            await stream.receive_some()
        assert await ping.ping(client, server.peer_id)
    assert reports.items == []
