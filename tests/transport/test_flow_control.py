"""Flow control between hosts over real QUIC on [::1]: credit that streams
return, streams held back by QUIC's limits, and memory a peer can pin."""

import pytest
import trio

from hypermesh.transport import perf, ping
from hypermesh.transport.errors import StreamReset
from hypermesh.transport.host import open_host
from hypermesh.transport.identity import Identity

V6 = "/ip6/::1/udp/0/quic-v1"
# Generous bound for every network step: loopback answers in milliseconds.
STEP = 10
ONE_BYTE_PROTOCOL = "/test/one-byte/1.0.0"


@pytest.fixture
async def pair():
    async with open_host(Identity.generate(), [V6]) as server, open_host(Identity.generate(), [V6]) as client:
        yield server, client


async def read_one_byte(stream):
    await stream.receive_some(1)


async def cancelled_upload(client, peer_id, size: int) -> None:
    """Upload ``size`` bytes to a handler that stops after one, then give up."""
    stream = await client.new_stream(peer_id, [ONE_BYTE_PROTOCOL])
    await stream.send_all(bytes(size))
    try:
        # Ends with the server's FIN (or its STOP_SENDING seen as a reset).
        while await stream.receive_some():
            pass
    except StreamReset:
        pass
    await stream.reset()


async def test_cancelled_uploads_return_their_connection_credit(pair):
    server, client = pair
    server.set_stream_handler(ONE_BYTE_PROTOCOL, read_one_byte)
    with trio.fail_after(STEP):
        driver = await client.connect(server.listen_addrs()[0])
        # 16 MiB offered against an 8 MiB connection window: every byte the
        # server threw away must be given back as credit.
        for _ in range(16):
            await cancelled_upload(client, server.peer_id, 1 << 20)
        assert await ping.ping(client, server.peer_id)
        stream = await client.new_stream(server.peer_id, [perf.PROTOCOL])
        result = await perf.run_perf(stream, upload=4 << 20, download=0)
    assert result.upload_bytes == 4 << 20
    assert client.connections_to(server.peer_id) == [driver]
