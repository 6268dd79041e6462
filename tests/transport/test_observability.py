"""Transport metrics read what happens: stream bytes and open streams, over
real QUIC on [::1]."""

import trio

from hypermesh.transport import metrics
from hypermesh.transport.host import open_host
from hypermesh.transport.identity import Identity

V6 = "/ip6/::1/udp/0/quic-v1"
ECHO_PROTOCOL = "/test/echo/1.0.0"


def value(metric) -> float:
    return metric._value.get()


async def echo(stream):
    while data := await stream.receive_some():
        await stream.send_all(data)


async def test_stream_byte_counters_and_the_open_streams_gauge_follow_the_traffic():
    async with open_host(Identity.generate(), [V6]) as server, open_host(Identity.generate(), [V6]) as client:
        server.set_stream_handler(ECHO_PROTOCOL, echo)
        with trio.fail_after(10):
            client_side = await client.connect(server.listen_addrs()[0])
            sent, received, streams_open = value(metrics.BYTES_SENT), value(metrics.BYTES_RECEIVED), value(
                metrics.STREAMS_OPEN
            )
            stream = await client.new_stream(server.peer_id, [ECHO_PROTOCOL])
            await stream.send_all(bytes(10_000))
            echoed = 0
            while echoed < 10_000:
                echoed += len(await stream.receive_some())
            server_side = server.connections_to(client.peer_id)[0]
            # Both ends of the stream are open, in one process and one registry.
            assert value(metrics.STREAMS_OPEN) - streams_open == 2
            assert value(metrics.STREAMS_OPEN) - streams_open == client_side.stream_count + server_side.stream_count
            await stream.aclose()
            assert value(metrics.STREAMS_OPEN) - streams_open == server_side.stream_count
        # 10,000 bytes each way, and multistream-select's few dozen.
        assert 20_000 <= value(metrics.BYTES_SENT) - sent < 20_200
        assert 20_000 <= value(metrics.BYTES_RECEIVED) - received < 20_200
