"""Transport metrics read what happens: stream bytes and open streams, over
real QUIC on [::1]."""

import trio
from prometheus_client import REGISTRY

from hypermesh.transport import metrics
from hypermesh.transport.host import open_host
from hypermesh.transport.identity import Identity

V6 = "/ip6/::1/udp/0/quic-v1"
ECHO_PROTOCOL = "/test/echo/1.0.0"
SENT, RECEIVED = "hypermesh_stream_bytes_sent_total", "hypermesh_stream_bytes_received_total"


def value(metric) -> float:
    return metric._value.get()


def scraped(name: str) -> float:
    """A metric's value as a Prometheus scrape of the process's registry reads it."""
    return REGISTRY.get_sample_value(name)


async def echo(stream):
    while data := await stream.receive_some():
        await stream.send_all(data)


async def test_stream_byte_counters_and_the_open_streams_gauge_follow_the_traffic():
    async with open_host(Identity.generate(), [V6]) as server, open_host(Identity.generate(), [V6]) as client:
        server.set_stream_handler(ECHO_PROTOCOL, echo)
        with trio.fail_after(10):
            # Hosts of this test only, and the process's registry: the gauge
            # moves with the streams of this one connection (identify's too).
            others = value(metrics.STREAMS_OPEN)
            client_side = await client.connect(server.listen_addrs()[0])
            sent, received = scraped(SENT), scraped(RECEIVED)
            stream = await client.new_stream(server.peer_id, [ECHO_PROTOCOL])
            await stream.send_all(bytes(10_000))
            echoed = 0
            while echoed < 10_000:
                echoed += len(await stream.receive_some())
            server_side = server.connections_to(client.peer_id)[0]
            assert client_side.stream_count >= 1 and server_side.stream_count >= 1
            assert value(metrics.STREAMS_OPEN) - others == client_side.stream_count + server_side.stream_count
            await stream.aclose()
            assert value(metrics.STREAMS_OPEN) - others == client_side.stream_count + server_side.stream_count
        # 10,000 bytes each way, plus multistream-select and identify records.
        assert 20_000 <= scraped(SENT) - sent < 28_000
        assert 20_000 <= scraped(RECEIVED) - received < 28_000
