"""Flow control between hosts over real QUIC on [::1]: credit that streams
return, streams held back by QUIC's limits, and memory a peer can pin."""

import pytest
import trio

from hypermesh.transport import perf, ping
from hypermesh.transport.connection import CONNECTION_SEND_BUFFER, CONNECTION_SEND_RESERVE, STREAM_SEND_BUFFER
from hypermesh.transport.errors import StreamReset, WriteStalled
from hypermesh.transport.host import HostConfig, open_host
from hypermesh.transport.identity import Identity
from hypermesh.transport.quic_hooks import STREAM_RECEIVE_WINDOW

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


ECHO_ONCE_PROTOCOL = "/test/echo-once/1.0.0"


class HandlerGauge:
    """How many handlers run at once, and the most that ever did."""

    def __init__(self):
        self.running = 0
        self.peak = 0

    def wrap(self, handler):
        async def counted(stream):
            self.running += 1
            self.peak = max(self.peak, self.running)
            try:
                await handler(stream)
            finally:
                self.running -= 1

        return counted


async def echo_once(stream):
    """Echo everything until the peer's FIN (the host then closes the stream)."""
    while data := await stream.receive_some():
        await stream.send_all(data)


async def exchange_once(client, driver, payload: bytes) -> bytes:
    stream = await client.open_stream_on(driver, [ECHO_ONCE_PROTOCOL])
    await stream.send_all(payload)
    await stream.send_eof()
    answer = b""
    while data := await stream.receive_some():
        answer += data
    await stream.aclose()
    return answer


async def test_a_thousand_streams_at_once_from_one_peer_are_paced_by_the_servers_stream_limit():
    # The client lifts its own bound and keeps 1,000 streams open at once (of
    # 2,000 exchanges): only the server's advertised QUIC stream limit, 64,
    # holds it back. No stream is reset, and another peer is served meanwhile.
    # (bench/hostile/many_streams.py runs 10,000 against a node process: here
    # both sides share one process, and aioquic visits every open stream for
    # every packet, so ten times as many would cost the client minutes.)
    server_limits = HostConfig(max_streams_per_connection=64)
    greedy = HostConfig(max_streams_per_connection=20_000)
    async with open_host(Identity.generate(), [V6], server_limits) as server, open_host(
        Identity.generate(), [V6], greedy
    ) as client, open_host(Identity.generate(), [V6]) as bystander:
        gauge = HandlerGauge()
        limit_reached, release = trio.Event(), trio.Event()

        async def held_until_released(stream):
            if gauge.running == server_limits.max_streams_per_connection:
                limit_reached.set()
            await release.wait()
            await echo_once(stream)

        server.set_stream_handler(ECHO_ONCE_PROTOCOL, gauge.wrap(held_until_released))
        answered = 0
        with trio.fail_after(100):
            driver = await client.connect(server.listen_addrs()[0])
            await bystander.connect(server.listen_addrs()[0])
            in_flight = trio.Semaphore(1_000)

            async def one(index):
                nonlocal answered
                async with in_flight:
                    payload = index.to_bytes(4, "big")
                    assert await exchange_once(client, driver, payload) == payload
                    answered += 1

            async with trio.open_nursery() as nursery:
                for index in range(2_000):
                    nursery.start_soon(one, index)
                await limit_reached.wait()
                assert await ping.ping(bystander, server.peer_id)
                release.set()
    assert answered == 2_000
    assert gauge.peak == server_limits.max_streams_per_connection


async def test_a_client_that_ignores_the_stream_limit_loses_only_its_own_connection():
    server_limits = HostConfig(max_streams_per_connection=16)
    async with open_host(Identity.generate(), [V6], server_limits) as server, open_host(
        Identity.generate(), [V6], HostConfig(max_streams_per_connection=1_000)
    ) as client, open_host(Identity.generate(), [V6]) as bystander:
        server.set_stream_handler(ECHO_ONCE_PROTOCOL, echo_once)
        with trio.fail_after(STEP):
            driver = await client.connect(server.listen_addrs()[0])
            await bystander.connect(server.listen_addrs()[0])
            # Impersonate a peer that ignores MAX_STREAMS: pretend it granted plenty.
            driver.quic._remote_max_streams_bidi = 1_000
            for _ in range(4 * server_limits.max_streams_per_connection):
                stream = driver.open_stream()
                await stream.send_all(b"\x13/multistream/1.0.0\n")
            await driver.closed_event.wait()
            assert await ping.ping(bystander, server.peer_id)
        assert driver.close_reason == "Too many streams open"  # the server's STREAM_LIMIT_ERROR


async def request_download_and_never_read(client, peer_id, size: int):
    stream = await client.new_stream(peer_id, [perf.PROTOCOL])
    await stream.send_all(size.to_bytes(8, "big"))
    await stream.send_eof()
    return stream


async def test_a_hundred_unread_perf_downloads_pin_at_most_16_mib_on_the_server(pair):
    server, client = pair
    # Unlimited, to test the transport's bounds (perf.install limits requests per peer).
    server.set_stream_handler(perf.PROTOCOL, perf.handle_perf)
    async with open_host(Identity.generate(), [V6]) as bystander:
        with trio.fail_after(3 * STEP):
            await client.connect(server.listen_addrs()[0])
            assert await ping.ping(client, server.peer_id)
            server_side = server.connections_to(client.peer_id)[0]
            for _ in range(100):
                await request_download_and_never_read(client, server.peer_id, 1 << 30)
            # Every handler has sent what the client's credit allows and waits.
            await server_side.wait_for_writers(100)
            assert server_side.send_buffered <= 16 << 20
            # (The client's own connection is stuck: it read nothing of the 8 MiB
            # it allowed. Other peers are served.)
            await bystander.connect(server.listen_addrs()[0])
            assert await ping.ping(bystander, server.peer_id)


async def test_small_replies_pass_while_bulk_streams_fill_the_connections_send_buffers(pair):
    server, client = pair
    server.set_stream_handler(perf.PROTOCOL, perf.handle_perf)
    with trio.fail_after(STEP):
        driver = await client.connect(server.listen_addrs()[0])
        assert await ping.ping(client, server.peer_id)  # the server has finished its handshake too
        server_side = server.connections_to(client.peer_id)[0]
        for _ in range(12):
            await request_download_and_never_read(client, server.peer_id, 1 << 30)
        await server_side.wait_for_writers(12)
        assert server_side.send_buffered >= CONNECTION_SEND_BUFFER - STREAM_SEND_BUFFER
        # The negotiation reply and the echo use the reserve beyond the ceiling.
        assert await ping.ping(client, server.peer_id)
        assert client.connections_to(server.peer_id) == [driver]
        assert server_side.send_buffered <= CONNECTION_SEND_BUFFER + CONNECTION_SEND_RESERVE


async def test_a_handler_whose_writes_stall_has_its_stream_reset(pair):
    server, client = pair
    stalled = trio.Event()

    async def perf_noting_stalls(stream):
        try:
            await perf.handle_perf(stream)
        except WriteStalled:
            stalled.set()
            raise

    server.set_stream_handler(perf.PROTOCOL, perf_noting_stalls)
    with trio.fail_after(STEP):
        await client.connect(server.listen_addrs()[0])
        assert await ping.ping(client, server.peer_id)
        server.connections_to(client.peer_id)[0].handler_write_stall_timeout = 0.5
        stream = await request_download_and_never_read(client, server.peer_id, 1 << 30)
        await stalled.wait()
        with pytest.raises(StreamReset):
            while await stream.receive_some(1 << 20):
                pass


async def test_perf_serves_a_peer_at_most_eight_requests_at_once(pair):
    server, client = pair
    with trio.fail_after(STEP):
        await client.connect(server.listen_addrs()[0])
        held = [await request_download_and_never_read(client, server.peer_id, 1 << 30) for _ in range(8)]
        await server.connections_to(client.peer_id)[0].wait_for_writers(8)
        refused = await request_download_and_never_read(client, server.peer_id, 1)
        with pytest.raises(StreamReset):
            await refused.receive_some()
        for stream in held:
            await stream.reset()
        # A slot is free again once a request ends.
        stream = await client.new_stream(server.peer_id, [perf.PROTOCOL])
        assert (await perf.run_perf(stream, upload=1000, download=1000)).download_bytes == 1000


@pytest.mark.parametrize("both_directions", [True, False])
async def test_streams_the_peer_resets_before_sending_anything_give_their_slots_back(both_directions):
    async with open_host(Identity.generate(), [V6], HostConfig(max_streams_per_connection=2)) as server, open_host(
        Identity.generate(), [V6]
    ) as client:
        with trio.fail_after(STEP):
            driver = await client.connect(server.listen_addrs()[0])
            for _ in range(10):
                stream = driver.open_stream()
                if both_directions:
                    await stream.reset()  # RESET_STREAM and STOP_SENDING are all the server sees
                else:
                    driver.quic.reset_stream(stream.stream_id, 0)  # only our sending side ends
                    driver.transmit()
            assert await ping.ping(client, server.peer_id)


LONG_REPLY_PROTOCOL = "/test/long-reply/1.0.0"


async def test_a_reply_the_server_closes_before_its_peer_finished_sending_is_read_to_the_end(pair):
    """STOP_SENDING stops only our sending: the server's reply, still arriving behind it, stays readable.

    The server answers more than the client's stream window and closes at once
    (FIN, and STOP_SENDING since the client never finished its request side),
    so STOP_SENDING reaches the client before the reply's tail — as with every
    one-shot request/answer protocol whose answer spans several packets.
    """
    server, client = pair
    reply = bytes(range(256)) * ((STREAM_RECEIVE_WINDOW + (512 << 10)) // 256)
    closed = trio.Event()

    async def answer_and_close(stream):
        await stream.receive_some(1)
        await stream.send_all(reply)
        await stream.aclose()
        closed.set()

    server.set_stream_handler(LONG_REPLY_PROTOCOL, answer_and_close)
    with trio.fail_after(STEP):
        await client.connect(server.listen_addrs()[0])
        stream = await client.new_stream(server.peer_id, [LONG_REPLY_PROTOCOL])
        await stream.send_all(b"?")
        await closed.wait()
        received = bytearray()
        while chunk := await stream.receive_some():
            received += chunk
        with pytest.raises(StreamReset):
            await stream.send_all(b"more")  # our sending, though, was stopped
    assert bytes(received) == reply
