"""DHT requests in 0-RTT early data, over real QUIC on [::1].

Reads (FIND_NODE, GET_PROVIDERS, GET_VALUE, PING) ride in a resumed dial's
first flight and are answered at once; a write (ADD_PROVIDER, PUT_VALUE) that
comes in 0-RTT is applied only once the handshake has completed, dropped if
it never does, and a replayed flight has no effect.
"""

import contextlib
import socket

import pytest
import trio

from hypermesh.dht.discovery import open_discovery
from hypermesh.dht.driver import KademliaService
from hypermesh.dht.kademlia import Mode
from hypermesh.dht.keys import Cid
from hypermesh.dht.messages import (
    MAX_MESSAGE_SIZE,
    PROTOCOL_ID,
    KadMessage,
    MessageType,
    PeerInfo,
    decode_message,
    encode_message,
)
from hypermesh.dht.store import MemoryRecordStore
from hypermesh.transport.config import HostConfig
from hypermesh.transport.framing import BufferedReader, frame, write_frame
from hypermesh.transport.host import open_host
from hypermesh.transport.identity import Identity
from hypermesh.transport.multiaddrs import parse_quic_address, quic_address_bytes
from hypermesh.transport.multistream import Negotiator
from resumption_testkit import earn_session_ticket

V6 = "/ip6/::1/udp/0/quic-v1"
STEP = 10
# The server gives up a handshake after this: a held write is then dropped.
SERVER_HANDSHAKE_TIMEOUT = 1.0


class EarlyRequests:
    """What the server's DHT did with requests that came in 0-RTT, with an event per outcome."""

    def __init__(self, service: KademliaService):
        self.seen: list[tuple[MessageType, str]] = []
        self._events: dict[tuple[MessageType, str], trio.Event] = {}
        service.on_early_request(self._record)

    def _record(self, peer, kind, outcome) -> None:
        self.seen.append((kind, outcome))
        self._event(kind, outcome).set()

    def _event(self, kind, outcome) -> trio.Event:
        return self._events.setdefault((kind, outcome), trio.Event())

    async def wait_for(self, kind: MessageType, outcome: str) -> None:
        await self._event(kind, outcome).wait()


class ClientSends:
    """Holds back (or drops) the datagrams a client endpoint sends, and keeps a copy of all."""

    def __init__(self, endpoint):
        self._endpoint = endpoint
        self.sent: list[tuple[bytes, tuple]] = []
        self.held: list[tuple[bytes, tuple]] | None = None
        endpoint.send_datagram = self._send_datagram
        endpoint.send_datagrams = lambda datagrams, addr: all(self._send_datagram(d, addr) for d in datagrams)

    def _send_datagram(self, data, addr) -> bool:
        self.sent.append((data, addr))
        if self.held is not None:
            self.held.append((data, addr))
            return True
        return self._forward(data, addr)

    def _forward(self, data, addr) -> bool:
        return type(self._endpoint).send_datagram(self._endpoint, data, addr)

    def hold(self) -> None:
        self.held = []

    def release(self) -> None:
        held, self.held = self.held, None
        for data, addr in held:
            self._forward(data, addr)

    def restore(self) -> None:
        del self._endpoint.send_datagram, self._endpoint.send_datagrams


@pytest.fixture
async def resumable(tmp_path):
    """A DHT server, and a client host holding a fresh ticket for it but no connection."""
    config = HostConfig(handshake_timeout=SERVER_HANDSHAKE_TIMEOUT)
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(open_host(Identity.generate(), [V6], config))
        client = await stack.enter_async_context(open_host(Identity.generate()))
        store = MemoryRecordStore()
        service = KademliaService(server, store)
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        await nursery.start(service.run)
        yield server, client, service, store, await earn_session_ticket(client, server, STEP)


def handled(service: KademliaService, kind: MessageType) -> float:
    return service.metrics.value("hypermesh_dht_requests_total", {"type": kind.name}) or 0.0


def provider_record(client, key: bytes) -> KadMessage:
    me = PeerInfo(client.peer_id, (quic_address_bytes("::1", 4001),))
    return KadMessage(MessageType.ADD_PROVIDER, key=key, provider_peers=(me,))


def providers(service: KademliaService, store, key: bytes) -> list:
    return store.get_providers(key, service.now(), 20)


async def send_early(client, server, payload: bytes):
    """Open a stream in a resumed dial's 0-RTT and write ``payload`` at once
    (what a client that ignores the rule for writes would do)."""
    addresses = [parse_quic_address(text) for text in client.peerstore.addrs(server.peer_id)]
    driver = await client.dialer.dial(server.peer_id, addresses, early_data=True)
    stream = driver.open_stream()
    assert stream.early
    stream.negotiate_lazily(Negotiator.dialer([PROTOCOL_ID]))  # sent with the payload
    await stream.send_all(payload)
    return stream


async def a_read_is_answered(client, server) -> None:
    """A FIND_NODE to the server (not in 0-RTT), answered."""
    stream = await client.new_stream(server.peer_id, [PROTOCOL_ID], replay_safe=False)
    await write_frame(stream, encode_message(KadMessage(MessageType.FIND_NODE, key=b"anything")))
    answer = decode_message(await BufferedReader(stream).read_frame(MAX_MESSAGE_SIZE))
    assert answer.type is MessageType.FIND_NODE
    await stream.aclose()


async def test_a_resumed_dials_lookup_is_answered_in_early_data(resumable, tmp_path):
    server, client, service, _, _ = resumable
    early = EarlyRequests(service)
    bootstrap = server.listen_addrs()[:1]
    with trio.fail_after(STEP):
        # A DHT client's bootstrap: a FIND_NODE to a peer it has no connection to.
        async with open_discovery(client, tmp_path / "client", bootstrap=bootstrap, mode=Mode.CLIENT) as node:
            await node.service.bootstrap()
            [connection] = client.connections_to(server.peer_id)
    assert connection.resumed and connection.early_data_accepted
    # Served while the server's side of the handshake had not completed.
    assert (MessageType.FIND_NODE, "answered") in early.seen
    assert service.metrics.value(
        "hypermesh_dht_early_data_requests_total", {"type": "FIND_NODE", "outcome": "answered"}
    ) >= 1


async def test_a_provide_sends_its_lookup_early_and_its_add_provider_after_the_handshake(resumable, tmp_path):
    server, client, service, store, _ = resumable
    early = EarlyRequests(service)
    cid = Cid.for_string("early provide")
    bootstrap = server.listen_addrs()[:1]
    with trio.fail_after(STEP):
        async with open_discovery(client, tmp_path / "client", bootstrap=bootstrap, mode=Mode.CLIENT) as node:
            node.provide(cid)
            await node.wait_provided(cid)
    assert [p.peer_id for p in providers(service, store, cid.multihash)] == [client.peer_id]
    assert early.seen and all(kind is not MessageType.ADD_PROVIDER for kind, _ in early.seen)


@contextlib.asynccontextmanager
async def early_provide_then_client_held(resumable, key: bytes):
    """An ADD_PROVIDER of ``key`` sent in a resumed dial's 0-RTT, after which the client's datagrams
    (its Finished and all after) are held back, so the handshake cannot complete until released.
    Yields (early requests seen by the server, the stream, the held sends)."""
    server, client, service, _, endpoint = resumable
    early = EarlyRequests(service)
    sends = ClientSends(endpoint)
    try:
        with trio.fail_after(STEP):
            stream = await send_early(client, server, frame(encode_message(provider_record(client, key))))
            sends.hold()
            yield early, stream, sends
    finally:
        sends.restore()


async def test_a_write_in_early_data_is_stored_only_once_the_handshake_completes(resumable):
    server, client, service, store, _ = resumable
    key = Cid.for_string("held write").multihash
    async with early_provide_then_client_held(resumable, key) as (early, _, sends):
        await early.wait_for(MessageType.ADD_PROVIDER, "held")
        assert providers(service, store, key) == []
        sends.release()
        await early.wait_for(MessageType.ADD_PROVIDER, "applied")
    assert [p.peer_id for p in providers(service, store, key)] == [client.peer_id]
    assert handled(service, MessageType.ADD_PROVIDER) == 1


async def test_a_write_whose_handshake_never_completes_is_dropped(resumable):
    _, _, service, store, _ = resumable
    key = Cid.for_string("dropped write").multihash
    async with early_provide_then_client_held(resumable, key) as (early, stream, _):
        # Never released: the server gives up the handshake.
        await early.wait_for(MessageType.ADD_PROVIDER, "dropped")
        await stream.connection.closed_event.wait()
    assert providers(service, store, key) == [] and handled(service, MessageType.ADD_PROVIDER) == 0
    assert service.metrics.value(
        "hypermesh_dht_early_data_requests_total", {"type": "ADD_PROVIDER", "outcome": "dropped"}
    ) == 1


async def test_a_replayed_early_flight_stores_nothing_a_second_time(resumable):
    server, client, service, store, endpoint = resumable
    early = EarlyRequests(service)
    key = Cid.for_string("replayed write").multihash
    server_sides = []
    server_established = trio.Event()
    server.on_connection.append(lambda driver: server_sides.append(driver) or server_established.set())
    sends = ClientSends(endpoint)
    try:
        with trio.fail_after(STEP):
            # A read and a write in the first flight: the read is answered, the write applied.
            payload = frame(encode_message(KadMessage(MessageType.FIND_NODE, key=key)))
            stream = await send_early(client, server, payload + frame(encode_message(provider_record(client, key))))
            answer = decode_message(await BufferedReader(stream).read_frame(MAX_MESSAGE_SIZE))
            assert answer.type is MessageType.FIND_NODE
            await early.wait_for(MessageType.ADD_PROVIDER, "applied")
    finally:
        sends.restore()
    assert early.seen == [(MessageType.FIND_NODE, "answered"), (MessageType.ADD_PROVIDER, "held"),
                          (MessageType.ADD_PROVIDER, "applied")]
    with trio.fail_after(STEP):
        await stream.aclose()
        await stream.connection.aclose()
        await server_established.wait()
        await server_sides[0].closed_event.wait()
    # An attacker replays everything the client sent, once the connection is gone.
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as attacker:
        for data, addr in sends.sent:
            attacker.sendto(data, addr)
        with trio.fail_after(STEP):
            await a_read_is_answered(client, server)  # datagrams are handled in arrival order
    assert handled(service, MessageType.ADD_PROVIDER) == 1
    assert handled(service, MessageType.FIND_NODE) == 2  # the early one and the one just made
    assert len(early.seen) == 3
    assert [p.peer_id for p in providers(service, store, key)] == [client.peer_id]
