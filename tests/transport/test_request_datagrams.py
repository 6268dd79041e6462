"""A small request and its reply take one datagram each way (real QUIC on [::1]).

The dialer's multistream proposal, its request and its FIN leave together;
the listener's multistream header and echo, the reply, its FIN and the ACK
of the request leave together. Virtual time (trio's autojump clock) stands
still while the exchange runs, so no timer can split it.
"""

import trio

from hypermesh.transport.framing import BufferedReader, write_frame
from hypermesh.transport.host import HostConfig, open_host
from hypermesh.transport.identity import Identity

V6 = "/ip6/::1/udp/0/quic-v1"
ECHO_ONCE = "/test/echo-once/1.0.0"
STEP = 10


async def echo_once(stream) -> None:
    request = await BufferedReader(stream).read_frame(1024)
    await write_frame(stream, request, eof=True)


def record_sends(endpoint, sent: list) -> None:
    real_send, real_send_many = endpoint.send_datagram, endpoint.send_datagrams
    endpoint.send_datagram = lambda data, addr: sent.append(data) or real_send(data, addr)
    endpoint.send_datagrams = lambda datagrams, addr: sent.extend(datagrams) or real_send_many(datagrams, addr)


async def test_a_request_and_its_reply_take_one_datagram_each_way(autojump_clock):
    config = HostConfig(probe_datagram_size=False, busy_poll_seconds=0.0)
    async with open_host(Identity.generate(), [V6], config) as server, \
            open_host(Identity.generate(), config=config) as client:
        server.set_stream_handler(ECHO_ONCE, echo_once)
        server_sides = []
        server.on_connection.append(server_sides.append)
        with trio.fail_after(STEP):
            driver = await client.connect(server.listen_addrs()[0])
            # Virtual time: identify runs both ways and every held ACK leaves.
            await trio.sleep(1)
        client_sent, server_sent = [], []
        record_sends(driver.endpoint, client_sent)
        record_sends(server_sides[0].endpoint, server_sent)
        with trio.fail_after(STEP):
            stream = await client.new_stream(server.peer_id, [ECHO_ONCE])
            await write_frame(stream, b"request", eof=True)
            reply = await BufferedReader(stream).read_frame(1024)
        assert reply == b"request"
        assert len(client_sent) == 1 and len(server_sent) == 1
        assert driver.send_buffered == 0  # the reply acknowledged the request


async def test_a_handler_that_answers_nothing_still_confirms_the_protocol_with_its_fin():
    async def read_and_close(stream) -> None:
        await BufferedReader(stream).read_frame(1024)  # the dispatcher closes the stream after

    async with open_host(Identity.generate(), [V6]) as server, open_host(Identity.generate()) as client:
        server.set_stream_handler(ECHO_ONCE, read_and_close)
        with trio.fail_after(STEP):
            await client.connect(server.listen_addrs()[0])
            stream = await client.new_stream(server.peer_id, [ECHO_ONCE])
            await write_frame(stream, b"request", eof=True)
            # The held multistream answer left with the FIN: a clean end, not a failed negotiation.
            assert await stream.receive_some() == b""
