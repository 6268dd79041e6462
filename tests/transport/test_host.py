"""Hosts talking over real QUIC sockets on [::1] and 127.0.0.1."""

import contextlib
import os
import socket

import pytest
import trio

from hypermesh.transport import identify, perf, ping
from hypermesh.transport.connection import STREAM_SEND_BUFFER
from hypermesh.transport.errors import (
    HandshakeError,
    NegotiationError,
    PeerIdMismatch,
    PeerRefused,
    ResourceLimitError,
    StreamReset,
    TransportError,
)
from hypermesh.transport.host import HostConfig, open_host
from hypermesh.transport.identity import Identity
from hypermesh.transport.multiaddrs import format_quic_address
from hypermesh.transport.multistream import HEADER, encode_message
from hypermesh.transport.quic_hooks import STREAM_RECEIVE_WINDOW
from hypermesh.transport.varint import encode_uvarint

V6 = "/ip6/::1/udp/0/quic-v1"
V4 = "/ip4/127.0.0.1/udp/0/quic-v1"
# Generous bound for every network step: loopback answers in milliseconds.
STEP = 10


@pytest.fixture
async def pair():
    async with open_host(Identity.generate(), [V6, V4]) as server, open_host(Identity.generate(), [V6, V4]) as client:
        yield server, client


@pytest.mark.parametrize("family", ["/ip6/", "/ip4/"])
async def test_ping_and_identify_over_both_families(pair, family):
    server, client = pair
    addr = next(a for a in server.listen_addrs() if a.startswith(family))
    with trio.fail_after(STEP):
        driver = await client.connect(addr)
        rtts = await ping.ping(client, server.peer_id, count=3)
        record = await identify.identify(client, driver)
    assert len(rtts) == 3 and all(0 < rtt < 1 for rtt in rtts)
    assert record.peer_id == server.peer_id
    assert set(record.protocols) >= {ping.PROTOCOL, identify.PROTOCOL, perf.PROTOCOL}
    assert record.observed_addr.startswith(family)
    assert client.peerstore.protocols(server.peer_id) >= {ping.PROTOCOL}


async def test_second_dial_reuses_the_connection(pair):
    server, client = pair
    with trio.fail_after(STEP):
        first = await client.connect(server.listen_addrs()[0])
        second = await client.connect(server.listen_addrs()[1])
    assert first is second
    assert client.connection_count == 1


async def test_dialling_the_wrong_peer_id_is_refused_clearly(pair):
    server, client = pair
    wrong = Identity.generate().peer_id
    addr = server.listen_addrs()[0].rsplit("/p2p/", 1)[0] + f"/p2p/{wrong}"
    with trio.fail_after(STEP), pytest.raises(PeerIdMismatch, match="mismatch"):
        await client.connect(addr)
    assert not client.connections_to(wrong)
    # The server keeps serving the right peer ID.
    with trio.fail_after(STEP):
        await client.connect(server.listen_addrs()[0])
        assert await ping.ping(client, server.peer_id)


async def test_redial_after_close_resumes_the_session(pair):
    server, client = pair
    addr = server.listen_addrs()[0]
    with trio.fail_after(STEP):
        first = await client.connect(addr)
        await ping.ping(client, server.peer_id)  # lets the session ticket arrive
        await first.aclose()
        second = await client.connect(addr)
        rtts = await ping.ping(client, server.peer_id)
    assert not first.resumed and second.resumed
    assert second.remote_peer_id == server.peer_id and rtts


async def test_perf_moves_data_both_ways(pair):
    server, client = pair
    with trio.fail_after(STEP):
        await client.connect(server.listen_addrs()[0])
        stream = await client.new_stream(server.peer_id, [perf.PROTOCOL])
        result = await perf.run_perf(stream, upload=3 << 20, download=5 << 20)
    assert (result.upload_bytes, result.download_bytes) == (3 << 20, 5 << 20)


async def test_connection_survives_the_client_changing_address(pair):
    server, client = pair
    with trio.fail_after(STEP):
        driver = await client.connect(server.listen_addrs()[0])
        await ping.ping(client, server.peer_id)
        await driver.probing_done.wait()
        old_port = driver.endpoint.local_port
        new_endpoint = client.migrate(driver)
        # The new path's MTU is unknown: back to 1,200 bytes until probed.
        assert driver.quic.max_datagram_size == 1200
        rtts = await ping.ping(client, server.peer_id, count=3)
        await driver.probing_done.wait()
    assert rtts and new_endpoint.local_port != old_port
    server_side = server.connections_to(client.peer_id)
    assert len(server_side) == 1 and server_side[0].remote_addr[1] == new_endpoint.local_port
    assert driver.path_changes == 1 and driver.quic.max_datagram_size > 1200  # probed again


async def test_garbage_datagrams_are_dropped_and_service_continues(pair):
    server, client = pair
    host, port = server.listen_addrs()[0].split("/")[2], int(server.listen_addrs()[0].split("/")[4])
    with trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as attacker:
        for size in (0, 1, 20, 1200, 1500, 9000):
            await attacker.sendto(os.urandom(size), (host, port))
        # A long header claiming QUIC v1 Initial with random bytes.
        await attacker.sendto(b"\xc0\x00\x00\x00\x01\x08" + os.urandom(1300), (host, port))
        # An unknown version gets a Version Negotiation reply, not a crash.
        await attacker.sendto(b"\xc0\x0a\x0a\x0a\x0a\x08" + b"\x01" * 8 + b"\x08" + b"\x02" * 8 + bytes(1200), (host, port))
        with trio.fail_after(STEP):
            reply, _ = await attacker.recvfrom(2048)
        assert reply[1:5] == b"\x00\x00\x00\x00"  # version negotiation packet
    with trio.fail_after(STEP):
        await client.connect(server.listen_addrs()[0])
        assert await ping.ping(client, server.peer_id)


async def test_certificate_whose_key_does_not_match_its_peer_id_is_refused(pair):
    server, client = pair
    impostor_identity = Identity.generate()
    async with open_host(impostor_identity, [V6]) as impostor:
        # The impostor presents a certificate signed for someone else's key.
        from hypermesh.transport.tls import make_certificate

        certificate, key = make_certificate(Identity.generate())
        impostor.acceptor.configuration.certificate = certificate
        impostor.acceptor.configuration.private_key = key
        with trio.fail_after(STEP), pytest.raises(PeerIdMismatch):
            await client.connect(impostor.listen_addrs()[0])
    with trio.fail_after(STEP):
        await client.connect(server.listen_addrs()[0])
        assert await ping.ping(client, server.peer_id)


async def test_one_megabyte_protocol_name_resets_only_that_stream(pair):
    server, client = pair
    with trio.fail_after(STEP):
        driver = await client.connect(server.listen_addrs()[0])
        stream = driver.open_stream()
        await stream.send_all(encode_message(HEADER) + encode_uvarint(1 << 20) + b"/" * (1 << 20))
        # The server refuses: the stream ends in a reset, never an echo.
        with pytest.raises(StreamReset):
            while await stream.receive_some():
                pass
        assert await ping.ping(client, server.peer_id)


async def test_unknown_protocol_is_refused_with_a_negotiation_error(pair):
    server, client = pair
    with trio.fail_after(STEP):
        await client.connect(server.listen_addrs()[0])
        with pytest.raises(NegotiationError, match="supports none"):
            await client.new_stream(server.peer_id, ["/not/served/2.0.0", "/not/served/1.0.0"])
        # A single proposal is negotiated lazily: the refusal arrives on first read.
        stream = await client.new_stream(server.peer_id, ["/not/served/1.0.0"])
        with pytest.raises(NegotiationError, match="supports none"):
            await stream.receive_some()


async def test_streams_the_client_closes_before_the_server_finishes_free_their_slots():
    """The client closes right after the answer, before the server's FIN: the
    server's handler then meets STOP_SENDING. Each such stream must give its
    slot back, or the connection refuses every stream once the limit fills."""
    limits = HostConfig(max_streams_per_connection=8)
    async with open_host(Identity.generate(), [V6], limits) as server, open_host(
        Identity.generate(), [V6], limits
    ) as client:

        async def answer_then_wait_for_eof(stream):
            await stream.receive_some()
            await stream.send_all(b"answer")
            while await stream.receive_some():
                pass

        server.set_stream_handler("/answer/1.0.0", answer_then_wait_for_eof)
        with trio.fail_after(STEP):
            await client.connect(server.listen_addrs()[0])
            for _ in range(5 * limits.max_streams_per_connection):
                stream = await client.new_stream(server.peer_id, ["/answer/1.0.0"])
                await stream.send_all(b"question")
                assert await stream.receive_some() == b"answer"
                await stream.aclose()
        assert server.connections_to(client.peer_id)[0].stream_count <= 1


async def test_a_stream_the_peer_reset_frees_its_slot_once_reset_locally(pair):
    server, client = pair

    async def refuse(stream):
        await stream.reset()

    server.set_stream_handler("/refuse/1.0.0", refuse)
    with trio.fail_after(STEP):
        driver = await client.connect(server.listen_addrs()[0])
        for _ in range(client.config.max_streams_per_connection + 10):
            stream = await client.new_stream(server.peer_id, ["/refuse/1.0.0"])
            with pytest.raises(StreamReset):
                while await stream.receive_some():
                    pass
            await stream.reset()
    assert driver.stream_count == 0


async def test_stop_sending_that_overtakes_a_new_streams_data_closes_only_that_stream(pair):
    # Loss or reordering can deliver a peer's STOP_SENDING for a stream before
    # the stream's first data; answering that stream used to crash the host.
    server, client = pair
    with trio.fail_after(STEP):
        driver = await client.connect(server.listen_addrs()[0])
        stream = driver.open_stream()
        driver.quic._get_or_create_stream_for_send(stream.stream_id)  # aioquic knows a stream once it sends
        driver.quic.stop_stream(stream.stream_id, 0)
        driver.transmit()  # the STOP_SENDING leaves alone, ahead of the data
        await stream.send_all(encode_message(HEADER) + encode_message(ping.PROTOCOL))
        assert len(await ping.ping(client, server.peer_id, count=2)) == 2
        await stream.reset()


async def test_peer_that_stops_reading_holds_the_writer_not_the_node(pair):
    server, client = pair
    stalled = trio.Event()

    async def sink_that_never_reads(stream):
        stalled.set()
        await trio.sleep_forever()

    server.set_stream_handler("/stall/1.0.0", sink_that_never_reads)
    with trio.fail_after(STEP):
        await client.connect(server.listen_addrs()[0])
        stream = await client.new_stream(server.peer_id, ["/stall/1.0.0"])
        await stalled.wait()
    written = 0
    with trio.move_on_after(1.5):
        while True:
            await stream.send_all(bytes(64 << 10))
            written += 64 << 10
    # Bounded by the receiver's window plus our own send buffer.
    assert written <= STREAM_RECEIVE_WINDOW + STREAM_SEND_BUFFER + (64 << 10)
    with trio.fail_after(STEP):
        assert await ping.ping(client, server.peer_id)
    await stream.reset()


async def test_connection_limit_refuses_extra_peers_at_once():
    config = HostConfig(max_connections=2)
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(open_host(Identity.generate(), [V6], config))
        clients = [
            await stack.enter_async_context(open_host(Identity.generate(), [V6], HostConfig(handshake_timeout=STEP)))
            for _ in range(3)
        ]
        with trio.fail_after(STEP):
            await clients[0].connect(server.listen_addrs()[0])
            await clients[1].connect(server.listen_addrs()[0])
        # Refused by a CONNECTION_CLOSE, well before the handshake timeout.
        with trio.fail_after(STEP / 2), pytest.raises(PeerRefused, match="peer refused: connection limit"):
            await clients[2].connect(server.listen_addrs()[0])
        assert server.connection_count == 2


async def test_a_dial_only_host_refuses_connections_to_its_ephemeral_socket():
    """A dial-only host (a CLI command, a bench client) serves nobody: a dial to the address its
    connection came from (what a server's reachability probe does) is refused at once."""
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(open_host(Identity.generate(), [V6]))
        dial_only = await stack.enter_async_context(open_host(Identity.generate()))
        with trio.fail_after(STEP):
            await dial_only.connect(server.listen_addrs()[0])
            assert await ping.ping(dial_only, server.peer_id)  # the server has its connection by now
        host, port = server.connections_to(dial_only.peer_id)[0].remote_addr[:2]
        prober = await stack.enter_async_context(open_host(Identity.generate(), config=HostConfig(handshake_timeout=STEP)))
        with trio.fail_after(STEP / 2), pytest.raises(PeerRefused, match="peer refused: not accepting connections"):
            await prober.connect(format_quic_address(host, port, dial_only.peer_id))
        assert dial_only.connection_count == 1
        with trio.fail_after(STEP):
            assert await ping.ping(dial_only, server.peer_id)


async def test_connections_beyond_the_per_peer_limit_are_refused():
    config = HostConfig(max_connections_per_peer=1)
    twin = Identity.generate()  # two hosts sharing one identity: two connections from one peer
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(open_host(Identity.generate(), [V6], config))
        first, second = [await stack.enter_async_context(open_host(twin, [V6])) for _ in range(2)]
        with trio.fail_after(STEP):
            kept = await first.connect(server.listen_addrs()[0])
            # The server learns the client's identity only from its last
            # handshake flight, so the refusal may come just after the
            # client considers the connection open.
            try:
                refused = await second.connect(server.listen_addrs()[0])
                await refused.closed_event.wait()
                reason = refused.close_reason
            except PeerRefused as exc:
                reason = str(exc)
        assert reason.startswith("peer refused: connection limit per peer")
        assert len(server.connections_to(twin.peer_id)) == 1 and not kept.closed
        with trio.fail_after(STEP):
            assert await ping.ping(first, server.peer_id)


async def test_a_peer_that_restarted_is_not_refused_for_the_connections_its_old_process_left():
    """A peer killed with SIGKILL sends no CONNECTION_CLOSE: we hold its dead connections until their idle
    timeout. When it comes back (same identity) at the per-peer limit, the dead ones, which answer no PING,
    make room for it instead of the new one being refused."""
    config = HostConfig(max_connections_per_peer=1)
    twin = Identity.generate()
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(open_host(Identity.generate(), [V6], config))
        accepted = trio.Event()
        server.on_connection.append(lambda driver: accepted.set())
        async with open_host(twin, [V6]) as old:
            with trio.fail_after(STEP):
                await old.connect(server.listen_addrs()[0])
                await accepted.wait()
                [dead] = server.connections_to(twin.peer_id)
                for connection in old.connections_to(server.peer_id):
                    connection.abandon("killed")  # gone without a word, as a killed process
        accepted = trio.Event()
        restarted = await stack.enter_async_context(open_host(twin, [V6]))
        # Well before the QUIC idle timeout (30 s) would end the dead connection.
        with trio.fail_after(STEP / 2):
            await restarted.connect(server.listen_addrs()[0])
            await accepted.wait()
            assert await ping.ping(server, twin.peer_id)
        assert dead.closed or dead.quic.is_ending
        assert len(server.connections_to(twin.peer_id)) == 1


async def test_a_peer_that_restarted_is_reached_on_its_new_connection_not_the_dead_one():
    """Under the per-peer limit the dead connections a killed peer left are not in the way of a new one, but
    streams to that peer must not go down them: after it comes back, what we send reaches its new process at
    once, and the dead connection is closed well before the QUIC idle timeout (30 s)."""
    twin = Identity.generate()
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(open_host(Identity.generate(), [V6]))
        accepted = trio.Event()
        server.on_connection.append(lambda driver: accepted.set())
        async with open_host(twin, [V6]) as old:
            with trio.fail_after(STEP):
                await old.connect(server.listen_addrs()[0])
                await accepted.wait()
                [dead] = server.connections_to(twin.peer_id)
                for connection in old.connections_to(server.peer_id):
                    connection.abandon("killed")  # gone without a word, as a killed process
        accepted = trio.Event()
        restarted = await stack.enter_async_context(open_host(twin, [V6]))
        with trio.fail_after(STEP / 2):
            await restarted.connect(server.listen_addrs()[0])
            await accepted.wait()
            assert await ping.ping(server, twin.peer_id)
            await dead.closed_event.wait()
        assert len(server.connections_to(twin.peer_id)) == 1

async def test_a_dead_ipv6_address_does_not_delay_a_live_ipv4_one(pair):
    server, client = pair
    live_v4 = next(a for a in server.listen_addrs() if a.startswith("/ip4/"))
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as black_hole:  # bound, never read
        black_hole.bind(("::1", 0))
        dead_v6 = format_quic_address("::1", black_hole.getsockname()[1], server.peer_id)
        client.peerstore.add_addrs(server.peer_id, [live_v4, dead_v6])
        # Dialled one after another, the dead address would take the whole
        # handshake timeout (10 s) before the live one is tried.
        with trio.fail_after(STEP / 2):
            driver = await client.connection_to(server.peer_id)
    assert driver.remote_multiaddr.startswith("/ip4/127.0.0.1/")
    assert client.connections_to(server.peer_id) == [driver]
    with trio.fail_after(STEP):
        assert await ping.ping(client, server.peer_id)


async def test_connection_without_streams_is_closed_when_idle():
    async with open_host(Identity.generate(), [V6]) as server, open_host(
        Identity.generate(), [V6], HostConfig(idle_connection_timeout=0.3)
    ) as client:
        with trio.fail_after(STEP):
            driver = await client.connect(server.listen_addrs()[0])
            await ping.ping(client, server.peer_id)
            await driver.closed_event.wait()
        assert driver.close_reason == "idle"
        assert not client.connected_peers()


async def test_quiet_connection_with_an_open_stream_outlives_the_quic_idle_timeout():
    # Short enough to keep the test quick, long enough (pings every 0.75 s)
    # that a loaded CI machine does not stall a keepalive past it.
    quick_idle = HostConfig(idle_timeout=1.5)
    async with open_host(Identity.generate(), [V6], quick_idle) as server, open_host(
        Identity.generate(), [V6], quick_idle
    ) as client:
        server.set_stream_handler("/quiet/1.0.0", lambda stream: trio.sleep_forever())
        with trio.fail_after(STEP):
            driver = await client.connect(server.listen_addrs()[0])
            await client.new_stream(server.peer_id, ["/quiet/1.0.0"])
        # Keepalive PINGs are what keep it open: nothing else is sent meanwhile.
        await trio.sleep(3 * quick_idle.idle_timeout)
        assert not driver.closed
        with trio.fail_after(STEP):
            assert await ping.ping(client, server.peer_id)


async def test_concurrent_dials_to_one_peer_share_one_attempt_and_its_failure(pair):
    server, client = pair
    wrong = Identity.generate().peer_id
    addr = server.listen_addrs()[0].rsplit("/p2p/", 1)[0] + f"/p2p/{wrong}"
    errors = []

    async def dial():
        try:
            await client.connect(addr)
        except HandshakeError as exc:
            errors.append(exc)

    with trio.fail_after(STEP):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(dial)
    assert len(errors) == 3 and all(isinstance(exc, PeerIdMismatch) for exc in errors)
    assert client.dialer.dials_in_progress == 0
    with trio.fail_after(STEP):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(client.connect, server.listen_addrs()[0])
    assert len(client.connections_to(server.peer_id)) == 1


async def test_a_connection_being_closed_is_not_reused_or_counted(pair):
    server, client = pair
    with trio.fail_after(STEP):
        await client.connect(server.listen_addrs()[0])
        await ping.ping(client, server.peer_id)
    server_side = server.connections_to(client.peer_id)[0]
    server_side.close("going away")
    # QUIC reports the end only after its closing period; until then the
    # connection must not count against the per-peer limit or be handed out.
    assert not server_side.closed and server.connections_to(client.peer_id) == []
    with trio.fail_after(STEP):
        await server_side.closed_event.wait()
        again = await client.connect(server.listen_addrs()[0])
        assert not again.closed and await ping.ping(client, server.peer_id)


async def test_a_filtered_peer_is_refused_inbound_and_not_dialled(pair):
    server, client = pair
    shunned = {client.peer_id: "shunned: forged receipt"}
    server.set_peer_filter(shunned.get)
    with trio.fail_after(STEP):
        try:
            refused = await client.connect(server.listen_addrs()[0])
            await refused.closed_event.wait()
            reason = refused.close_reason
        except PeerRefused as exc:
            reason = str(exc)
    assert reason.startswith("peer refused: refused by policy")
    assert server.connections_to(client.peer_id) == []
    # The other way round: the server will not dial the peer it shuns.
    with pytest.raises(TransportError, match="shunned: forged receipt"):
        await server.connect(client.listen_addrs()[0])
    server.set_peer_filter(None)
    with trio.fail_after(STEP):
        await client.connect(server.listen_addrs()[0])
        assert await ping.ping(client, server.peer_id)


async def test_disconnect_closes_every_connection_to_a_peer(pair):
    server, client = pair
    with trio.fail_after(STEP):
        driver = await client.connect(server.listen_addrs()[0])
        assert await ping.ping(client, server.peer_id)
    assert server.disconnect(client.peer_id, "shunned") == 1
    with trio.fail_after(STEP):
        await driver.closed_event.wait()
