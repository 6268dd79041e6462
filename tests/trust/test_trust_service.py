"""The trust service over real QUIC on [::1]: attestations exchanged, bad input refused, shuns enforced."""

import pytest
import trio

from hypermesh.dht.driver import KademliaService
from hypermesh.dht.messages import PROTOCOL_ID as KAD_PROTOCOL_ID
from hypermesh.dht.store import MemoryRecordStore
from hypermesh.transport.errors import PeerRefused, StreamReset, TransportError
from hypermesh.transport.framing import BufferedReader, write_frame
from hypermesh.transport.host import open_host
from hypermesh.transport.identity import Identity
from hypermesh.transport.ping import ping
from hypermesh.trust.attestation import sign_attestation
from hypermesh.trust.engine import Proof, TrustEngine
from hypermesh.trust.score import Dimension
from hypermesh.trust.service import TrustService
from hypermesh.trust.store import TrustStore
from hypermesh.trust.wire import MAX_MESSAGE_BYTES, PROTOCOL_ID, Answer, decode_message, encode_push

V6 = "/ip6/::1/udp/0/quic-v1"
STEP = 10
SUBJECT = Identity.from_seed(b"subject").peer_id


async def read_until_reset(stream):
    """Read until the node resets the stream (what it does to a peer that broke the protocol)."""
    with pytest.raises((StreamReset, trio.BrokenResourceError, trio.ClosedResourceError)):
        while await stream.receive_some(1024):
            pass


@pytest.fixture
async def nodes(tmp_path):
    identities = [Identity.generate(), Identity.generate()]
    async with open_host(identities[0], [V6]) as host_a, open_host(identities[1], [V6]) as host_b:
        services = []
        for name, host, identity in (("a", host_a, identities[0]), ("b", host_b, identities[1])):
            (tmp_path / name).mkdir()
            service = TrustService(host, identity, TrustEngine(identity.peer_id), TrustStore.in_data_dir(tmp_path / name))
            service.install()
            services.append(service)
        with trio.fail_after(STEP):
            await host_b.connect(host_a.listen_addrs()[0])
        yield services


async def test_pushed_attestations_are_verified_and_kept(nodes):
    a, b = nodes
    genuine = b.attest(SUBJECT)
    forged = sign_attestation(Identity.generate(), SUBJECT, 9, 0, genuine.issued_at_ms, 1)
    forged_bytes = forged.body() + bytes(64)
    with trio.fail_after(STEP):
        answer = await b.push(a.host.peer_id, [genuine])
    assert (answer.accepted, answer.refused) == (1, 0)
    assert list(a.engine.attestations()) == [genuine]
    with trio.fail_after(STEP):
        stream = await b.host.new_stream(a.host.peer_id, [PROTOCOL_ID])
        await write_frame(stream, encode_push([forged_bytes]))
        await stream.send_eof()
        reply = decode_message(await BufferedReader(stream).read_frame(MAX_MESSAGE_BYTES))
    assert reply == Answer(accepted=0, refused=1)
    assert list(a.engine.attestations()) == [genuine]


async def test_ask_returns_the_reviews_a_peer_holds(nodes):
    a, b = nodes
    with trio.fail_after(STEP):
        await b.push(a.host.peer_id, [b.attest(SUBJECT)])
        admitted = await b.ask(a.host.peer_id, SUBJECT)
    assert admitted == 1


async def test_a_malformed_message_resets_the_stream_and_counts_against_the_sender(nodes):
    a, b = nodes
    with trio.fail_after(STEP):
        stream = await b.host.new_stream(a.host.peer_id, [PROTOCOL_ID])
        await write_frame(stream, b"\x09garbage")
        await stream.send_eof()
        await read_until_reset(stream)
    assert a.counters["violations"] == 1
    _, bad = a.engine.evidence(b.host.peer_id, 0).counts(Dimension.SECURITY, 0, 1)
    assert bad > 0
    with trio.fail_after(STEP):  # the node still serves the peer
        assert await ping(b.host, a.host.peer_id)


async def test_a_proven_cheat_is_disconnected_refused_and_not_dialled(nodes):
    a, b = nodes
    with trio.fail_after(STEP):
        connection = b.host.connections_to(a.host.peer_id)[0]
        a.prove(b.host.peer_id, Proof.FORGED_RECEIPT, "receipt signed by another key")
        await connection.closed_event.wait()
        try:
            refused = await b.host.connect(a.host.listen_addrs()[0])
            await refused.closed_event.wait()
            reason = refused.close_reason
        except PeerRefused as exc:
            reason = str(exc)
    assert "refused by policy" in reason
    with pytest.raises(TransportError, match="shunned: forged_receipt"):
        await a.host.connect(b.host.listen_addrs()[0])
    assert a.unshun(b.host.peer_id)
    with trio.fail_after(STEP):
        await b.host.connect(a.host.listen_addrs()[0])


async def test_transport_protocol_violations_count_against_the_peer(nodes):
    a, b = nodes
    with trio.fail_after(STEP):
        stream = b.host.connections_to(a.host.peer_id)[0].open_stream()
        # A multistream header, then a message that does not end with a newline.
        await stream.send_all(b"\x13/multistream/1.0.0\n\x04abcd")
        await read_until_reset(stream)
    assert a.counters["reports"] == 1
    _, bad = a.engine.evidence(b.host.peer_id, 0).counts(Dimension.SECURITY, 0, 1)
    assert bad > 0


async def test_malformed_dht_messages_count_against_their_sender(nodes):
    a, b = nodes
    async with trio.open_nursery() as nursery:
        dht = KademliaService(a.host, MemoryRecordStore())
        await nursery.start(dht.run)
        a.install(dht)
        with trio.fail_after(STEP):
            stream = await b.host.new_stream(a.host.peer_id, [KAD_PROTOCOL_ID])
            await write_frame(stream, b"\xff\xff\xff\xff")
            await read_until_reset(stream)
        nursery.cancel_scope.cancel()
    assert a.counters["reports"] == 1
    _, bad = a.engine.evidence(b.host.peer_id, 0).counts(Dimension.SECURITY, 0, 1)
    assert bad > 0


class FakeDht:
    """What TrustService.install needs of a running KademliaService."""

    def __init__(self, running=True):
        self.core = MemoryCore() if running else None
        self.misbehaviour, self.probes = [], []

    def on_misbehaviour(self, listener):
        self.misbehaviour.append(listener)

    def on_probe(self, listener):
        self.probes.append(listener)


class MemoryCore:
    def __init__(self):
        self.peer_filter = None
        self.excluded = []

    def exclude_peer(self, peer):
        self.excluded.append(peer)


async def test_one_install_makes_the_dht_obey_shuns_and_counts_its_probes(nodes):
    a, b = nodes
    dht = FakeDht()
    a.install(dht)
    peer = b.host.peer_id
    for listener in dht.probes:
        listener(peer, True)
        listener(peer, True)
        listener(peer, False)
    good, bad = a.engine.evidence(peer, 0).counts(Dimension.UPTIME, 0, 1)
    assert (good, bad) == (pytest.approx(2), pytest.approx(1))
    assert not dht.core.peer_filter(peer)
    a.shun(peer, "test")
    assert dht.core.peer_filter(peer) and dht.core.excluded == [peer]


def test_install_refuses_a_dht_that_is_not_running():
    service = TrustService(None, Identity.from_seed(b"me"), TrustEngine(Identity.from_seed(b"me").peer_id))
    with pytest.raises(RuntimeError, match="must be running"):
        service.install(FakeDht(running=False))
