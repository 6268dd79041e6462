"""One test per hook in transport/quic_hooks.py, on the sans-IO connection.

Two Libp2pQuicConnection objects exchange datagrams in memory with a
virtual clock, so each aioquic internal we rely on is pinned by a test.
"""

import contextlib
import dataclasses
import itertools
import re
import ssl
from pathlib import Path

from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.recovery import QuicPacketPacer
from hypothesis import example, given
from hypothesis import strategies as st

import hypermesh.transport
from hypermesh.transport.errors import PeerIdMismatch
from hypermesh.transport.identity import Identity
from hypermesh.transport.quic_hooks import (
    ACK_HOLD,
    CONNECTION_RECEIVE_WINDOW,
    PACING_BURST_SECONDS,
    PACING_GAIN,
    PACING_MIN_BURST,
    STREAM_RECEIVE_WINDOW,
    BurstPacer,
    DatagramSizeReduced,
    Libp2pQuicConnection,
    is_refusal,
    parse_initial,
    refusal_datagram,
    retry_datagram,
)
from hypermesh.transport.tls import ALPN, make_certificate

CLIENT_ADDR = ("::1", 1111, 0, 0)
SERVER_ADDR = ("::1", 2222, 0, 0)


def configuration(identity, is_client, **changes):
    certificate, key = make_certificate(identity)
    config = QuicConfiguration(
        alpn_protocols=[ALPN], certificate=certificate, private_key=key, verify_mode=ssl.CERT_NONE, is_client=is_client
    )
    return dataclasses.replace(config, **changes)


class Pair:
    """A client and a server wired back to back; ``now`` is virtual time."""

    def __init__(self, client_identity, server_identity, expected=None, client_config=None, **server_kwargs):
        self.now = 0.0
        self.client = Libp2pQuicConnection(
            configuration=client_config or configuration(client_identity, True),
            expected_peer_id=expected,
            **server_kwargs.pop("client_kwargs", {}),
        )
        self.server_identity = server_identity
        self.server_setup = server_kwargs.pop("server_setup", lambda server: None)
        self.server_kwargs = server_kwargs
        self.server = None
        self.client.connect(SERVER_ADDR, now=self.now)
        self.client_events, self.server_events = [], []

    def pump(self, rounds=20, drop=lambda data: False, advance_by=0.0):
        """Exchange datagrams until quiet; fire timers due up to ``advance_by`` from now."""
        limit = self.now + advance_by
        for _ in range(rounds):
            moved = False
            for data, _ in self.client.datagrams_to_send(self.now):
                moved = True
                if drop(data):
                    continue
                if self.server is None:
                    self.server = Libp2pQuicConnection(
                        configuration=configuration(self.server_identity, False),
                        original_destination_connection_id=self.client.original_destination_connection_id,
                        **self.server_kwargs,
                    )
                    self.server_setup(self.server)
                self.server.receive_datagram(data, CLIENT_ADDR, self.now)
            if self.server is not None:
                for data, _ in self.server.datagrams_to_send(self.now):
                    moved = True
                    if not drop(data):
                        self.client.receive_datagram(data, SERVER_ADDR, self.now)
            self._drain()
            if not moved:
                connections = [c for c in (self.client, self.server) if c is not None]
                timers = [c.get_timer() for c in connections if c.get_timer() is not None]
                if not timers or min(timers) > limit:
                    return
                self.now = max(self.now, min(timers))
                for connection in connections:
                    timer = connection.get_timer()
                    if timer is not None and timer <= self.now:
                        connection.handle_timer(self.now)

    def _drain(self):
        for connection, sink in ((self.client, self.client_events), (self.server, self.server_events)):
            while connection is not None and (event := connection.next_event()) is not None:
                sink.append(event)

    def has(self, sink, kind):
        return [event for event in sink if isinstance(event, kind)]


def test_both_sides_learn_the_authenticated_peer_ids():
    alice, bob = Identity.generate(), Identity.generate()
    pair = Pair(alice, bob, expected=bob.peer_id)
    pair.pump()
    assert pair.has(pair.client_events, events.HandshakeCompleted)
    assert pair.client.remote_peer_id == bob.peer_id
    assert pair.server.remote_peer_id == alice.peer_id


def test_dialer_aborts_with_a_tls_alert_on_peer_id_mismatch():
    alice, bob, carol = Identity.generate(), Identity.generate(), Identity.generate()
    pair = Pair(alice, bob, expected=carol.peer_id)
    pair.pump(advance_by=5)
    assert not pair.has(pair.client_events, events.HandshakeCompleted)
    terminated = pair.has(pair.client_events, events.ConnectionTerminated)
    assert terminated and terminated[0].error_code == 0x100 + 42  # bad_certificate alert
    assert isinstance(pair.client.verification_error, PeerIdMismatch)


def test_server_refuses_a_client_without_certificate():
    alice, bob = Identity.generate(), Identity.generate()
    anonymous = dataclasses.replace(configuration(alice, True), certificate=None, private_key=None)
    pair = Pair(alice, bob, client_config=anonymous)
    pair.pump(advance_by=5)
    assert not pair.has(pair.server_events, events.HandshakeCompleted)
    assert "no certificate" in str(pair.server.verification_error)


def first_connection_ticket(alice, bob):
    """Connect alice to bob once: alice's ticket, and bob's single-use ticket store."""
    issued = {}
    client_tickets = []
    first = Pair(
        alice, bob, expected=bob.peer_id,
        client_kwargs={"session_ticket_handler": client_tickets.append},
        server_ticket_lookup=lambda label: issued.pop(label, None),
        session_ticket_handler=lambda ticket: issued.__setitem__(ticket.ticket, (ticket, alice.peer_id)),
    )
    first.pump(advance_by=0.1)
    assert client_tickets and issued
    return client_tickets[-1], issued


def resumed_pair(alice, bob, ticket, issued):
    resumed_config = dataclasses.replace(configuration(alice, True), session_ticket=ticket)
    return Pair(
        alice, bob, expected=bob.peer_id, client_config=resumed_config,
        client_kwargs={"resumed_peer_id": bob.peer_id}, server_ticket_lookup=lambda label: issued.pop(label, None),
    )


def test_resumed_handshake_still_authenticates_both_peers():
    alice, bob = Identity.generate(), Identity.generate()
    ticket, issued = first_connection_ticket(alice, bob)
    second = resumed_pair(alice, bob, ticket, issued)
    second.pump()
    completed = second.has(second.client_events, events.HandshakeCompleted)
    assert completed and completed[0].session_resumed
    assert second.client.remote_peer_id == bob.peer_id
    assert second.server.remote_peer_id == alice.peer_id
    assert not issued, "tickets are single use"


def test_server_knows_which_streams_came_in_early_data_and_from_whom():
    alice, bob = Identity.generate(), Identity.generate()
    ticket, issued = first_connection_ticket(alice, bob)
    second = resumed_pair(alice, bob, ticket, issued)
    assert second.client.can_send_early_data
    early_stream = second.client.get_next_available_stream_id()
    second.client.send_stream_data(early_stream, b"early")
    second.pump(rounds=1)  # the first flight only: the handshake is not done
    assert second.server.opened_in_early_data(early_stream)
    assert second.server.early_peer_id == alice.peer_id
    second.pump()
    late_stream = second.client.get_next_available_stream_id()
    second.client.send_stream_data(late_stream, b"late")
    second.pump()
    assert not second.server.opened_in_early_data(late_stream)


def test_receive_window_follows_what_the_application_reads():
    alice, bob = Identity.generate(), Identity.generate()
    pair = Pair(alice, bob)
    pair.pump()
    stream_id = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(stream_id, b"x" * (4 * STREAM_RECEIVE_WINDOW))
    pair.pump(rounds=5000, advance_by=1)
    received = sum(len(e.data) for e in pair.server_events if isinstance(e, events.StreamDataReceived))
    # Nothing was read: the sender is held to one window.
    assert received == STREAM_RECEIVE_WINDOW
    pair.server.consume(stream_id, received)
    pair.pump(rounds=5000, advance_by=1)
    received = sum(len(e.data) for e in pair.server_events if isinstance(e, events.StreamDataReceived))
    assert received == 2 * STREAM_RECEIVE_WINDOW


def test_acknowledged_probe_raises_the_datagram_size():
    alice, bob = Identity.generate(), Identity.generate()
    pair = Pair(alice, bob)
    pair.pump()
    probe = pair.client.datagrams_for_probe(8000, uid=99, now=pair.now)
    assert max(len(data) for data, _ in probe) == 8000
    for data, _ in probe:
        pair.server.receive_datagram(data, CLIENT_ADDR, pair.now)
    pair.pump(advance_by=0.1)  # the server delays its ACK
    assert any(e.uid == 99 for e in pair.has(pair.client_events, events.PingAcknowledged))
    assert pair.client.confirm_probe(99)
    assert pair.client.max_datagram_size == 8000


def test_lost_probe_is_not_resent_small_and_not_adopted():
    alice, bob = Identity.generate(), Identity.generate()
    pair = Pair(alice, bob)
    pair.pump()
    pair.client.datagrams_for_probe(8000, uid=7, now=pair.now)  # never delivered
    # Keep the connection busy so loss detection runs.
    stream_id = pair.client.get_next_available_stream_id()
    for _ in range(5):
        pair.client.send_stream_data(stream_id, b"y" * 100)
        pair.pump(rounds=5)
    pair.pump(advance_by=5)
    assert pair.client.probe_failed
    assert not any(e.uid == 7 for e in pair.has(pair.client_events, events.PingAcknowledged))
    assert pair.client.max_datagram_size == 1200


# -- hook 4: connection credit over random interleavings ---------------------

STREAMS = 2
stream_index = st.integers(0, STREAMS - 1)
credit_operations = st.lists(
    st.one_of(
        st.tuples(st.just("data"), stream_index, st.integers(1, 48 << 10)),
        st.tuples(st.just("fin"), stream_index),
        st.tuples(st.just("peer_reset"), stream_index),
        st.tuples(st.just("read"), stream_index, st.integers(1, 64 << 10)),
        st.tuples(st.just("close"), stream_index),  # FIN ours, STOP_SENDING theirs
        st.tuples(st.just("reset"), stream_index),  # RESET_STREAM + STOP_SENDING
        # Drop every n-th datagram; without time passing, lost data stays lost.
        st.tuples(st.just("pump"), st.sampled_from([0, 2, 3]), st.sampled_from([0.0, 1.0])),
    ),
    max_size=24,
)


class CreditModel:
    """The server application's side, as the trio driver plays it: buffers
    what arrives on streams it has not closed, reads, closes and resets."""

    def __init__(self, pair):
        self.pair = pair
        self.buffers: dict[int, bytearray] = {}
        self.closed: set[int] = set()
        self.reset_by_peer: set[int] = set()
        self.read = 0
        self.seen_events = 0

    def take_events(self):
        server = self.pair.server
        for event in self.pair.server_events[self.seen_events :]:
            if isinstance(event, events.StreamDataReceived) and event.stream_id not in self.closed:
                self.buffers.setdefault(event.stream_id, bytearray()).extend(event.data)
            elif isinstance(event, events.StreamReset):
                self.reset_by_peer.add(event.stream_id)
            elif isinstance(event, events.StopSendingReceived):
                with contextlib.suppress(ValueError):
                    server.reset_stream(event.stream_id, 0)
        self.seen_events = len(self.pair.server_events)

    def read_from(self, stream_id, count):
        data = self.buffers.get(stream_id, bytearray())
        count = min(count, len(data))
        del data[:count]
        self.read += count
        self.pair.server.consume(stream_id, count)

    def close(self, stream_id, reset):
        server = self.pair.server
        if stream_id in self.closed or stream_id not in server._streams:
            return
        with contextlib.suppress(ValueError):
            if reset:
                server.reset_stream(stream_id, 0)
            else:
                server.send_stream_data(stream_id, b"", end_stream=True)
        with contextlib.suppress(ValueError):
            server.stop_stream(stream_id, 0)
        server.abandon_stream(stream_id)
        self.closed.add(stream_id)
        self.buffers.pop(stream_id, None)

    def undelivered_in_quic(self):
        """Bytes aioquic holds (received, not yet delivered in order)."""
        return sum(
            stream.receiver.highest_offset - stream.receiver.starting_offset()
            for stream_id, stream in self.pair.server._streams.items()
            if stream_id not in self.closed and stream_id not in self.reset_by_peer
        )

    def check_invariant(self):
        credit = self.pair.server.receive_credit
        buffered = sum(len(data) for data in self.buffers.values()) + self.undelivered_in_quic()
        assert credit.read == self.read
        assert credit.received == self.pair.server._local_max_data.used
        assert credit.received == credit.read + credit.discarded + buffered
        # Both sides' running count of send-buffered bytes is the buffers' sum.
        for connection in (self.pair.client, self.pair.server):
            held = sum(s.sender._buffer_stop - s.sender._buffer_start for s in connection._streams.values())
            assert connection.send_buffered_total() == held


@given(operations=credit_operations)
# The peer resets a stream whose data was partly lost: the final size counts,
# the missing bytes will never be delivered.
@example(operations=[("data", 0, 40_000), ("pump", 2, 0.0), ("peer_reset", 0), ("pump", 0, 1.0)])
# Data already in flight when we close the stream arrives late.
@example(operations=[("data", 0, 1), ("pump", 0, 0.0), ("data", 0, 40_000), ("close", 0), ("pump", 0, 1.0)])
def test_connection_credit_is_received_equals_read_plus_discarded_plus_buffered(operations):
    alice, bob = Identity.generate(), Identity.generate()
    pair = Pair(alice, bob)
    pair.pump()
    model = CreditModel(pair)
    client = pair.client
    stream_ids = []
    for _ in range(STREAMS):  # opened in order, as QUIC requires
        stream_ids.append(client.get_next_available_stream_id())
        client.send_stream_data(stream_ids[-1], b"")
    finished: set[int] = set()

    def pump(drop_every=0, advance_by=1.0):
        sent = itertools.count(1)
        pair.pump(rounds=400, advance_by=advance_by, drop=lambda data: drop_every and next(sent) % drop_every == 0)
        model.take_events()
        model.check_invariant()

    for operation in operations:
        kind, *arguments = operation
        stream_id = stream_ids[arguments[0]] if kind != "pump" else None
        if kind in ("data", "fin", "peer_reset") and stream_id not in finished:
            try:
                if kind == "data":
                    client.send_stream_data(stream_id, bytes(arguments[1]))
                elif kind == "fin":
                    client.send_stream_data(stream_id, b"", end_stream=True)
                else:
                    client.reset_stream(stream_id, 0)
            except (ValueError, RuntimeError):  # the server made us stop sending
                finished.add(stream_id)
            if kind != "data":
                finished.add(stream_id)
        elif kind == "read":
            model.read_from(stream_id, arguments[1])
        elif kind in ("close", "reset"):
            model.close(stream_id, reset=kind == "reset")
        if kind == "pump":
            pump(*arguments)
        else:
            model.take_events()
            model.check_invariant()
    # Whatever happened, once every stream is closed all credit is back.
    pump()
    for stream_id in stream_ids:
        model.close(stream_id, reset=True)
    pump()
    credit = pair.server.receive_credit
    assert credit.buffered == 0
    assert pair.server._local_max_data.sent >= credit.received + CONNECTION_RECEIVE_WINDOW * 3 // 4


def test_a_client_whose_connect_never_ran_closes_without_sending_or_failing():
    # What a Ctrl-C inside connect() leaves behind: a connection without its Initial keys.
    client = Libp2pQuicConnection(configuration=configuration(Identity.generate(), True))
    assert not client.started
    client.close(reason_phrase="interrupted")
    assert client.datagrams_to_send(0.0) == []
    client.connect(SERVER_ADDR, now=0.0)
    assert client.started


def test_stateless_refusal_closes_the_clients_handshake_with_connection_refused():
    client = Libp2pQuicConnection(configuration=configuration(Identity.generate(), True))
    client.connect(SERVER_ADDR, now=0.0)
    (initial, _), *_ = client.datagrams_to_send(0.0)
    refusal = refusal_datagram(initial, "connection limit")
    assert refusal is not None and len(refusal) < len(initial)
    client.receive_datagram(refusal, SERVER_ADDR, now=0.01)
    terminated = [e for e in iter(client.next_event, None) if isinstance(e, events.ConnectionTerminated)]
    assert terminated and is_refusal(terminated[0]) and terminated[0].reason_phrase == "connection limit"
    assert refusal_datagram(b"\x00" * 1200, "connection limit") is None


def test_retry_packet_makes_the_client_resend_its_initial_with_the_token():
    client = Libp2pQuicConnection(configuration=configuration(Identity.generate(), True))
    client.connect(SERVER_ADDR, now=0.0)
    (initial, _), *_ = client.datagrams_to_send(0.0)
    header = parse_initial(initial)
    assert header is not None and not header.token
    client.receive_datagram(retry_datagram(header, b"R" * 8, b"token-bytes"), SERVER_ADDR, now=0.01)
    (second, _), *_ = client.datagrams_to_send(0.01)
    resent = parse_initial(second)
    assert resent.token == b"token-bytes" and resent.destination_cid == b"R" * 8
    assert parse_initial(b"\x40" + bytes(1199)) is None  # a short-header packet


# -- hook 9: stream limits ----------------------------------------------------


def test_peer_streams_beyond_the_advertised_limit_wait_until_the_application_lets_one_go():
    alice, bob = Identity.generate(), Identity.generate()
    pair = Pair(alice, bob, server_setup=lambda server: server.limit_incoming_streams(2))
    pair.pump()
    stream_ids = []
    for _ in range(3):
        stream_ids.append(pair.client.get_next_available_stream_id())
        pair.client.send_stream_data(stream_ids[-1], b"hello", end_stream=True)
    pair.pump(advance_by=0.1)

    def streams_seen():
        return {e.stream_id for e in pair.has(pair.server_events, events.StreamDataReceived)}

    assert streams_seen() == set(stream_ids[:2])  # the third is held back, not refused
    # Both directions of the first stream finish in QUIC, but the application
    # still holds it: its slot does not come back yet.
    pair.server.send_stream_data(stream_ids[0], b"", end_stream=True)
    pair.pump(advance_by=0.1)
    assert streams_seen() == set(stream_ids[:2])
    pair.server.abandon_stream(stream_ids[0])
    pair.pump(advance_by=0.1)
    assert streams_seen() == set(stream_ids)
    assert not pair.has(pair.client_events, events.ConnectionTerminated)


def test_large_datagrams_that_stop_arriving_drop_the_size_back_to_1200():
    alice, bob = Identity.generate(), Identity.generate()
    pair = Pair(alice, bob)
    pair.pump()
    for data, _ in pair.client.datagrams_for_probe(8000, uid=99, now=pair.now):
        pair.server.receive_datagram(data, CLIENT_ADDR, pair.now)
    pair.pump(advance_by=0.1)
    assert pair.client.confirm_probe(99) and pair.client.max_datagram_size == 8000
    # A black hole opens: datagrams above 1,200 bytes vanish from now on.
    stream_id = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(stream_id, b"z" * 200_000, end_stream=True)
    for _ in range(10):
        pair.pump(rounds=200, drop=lambda data: len(data) > 1200, advance_by=3)
    assert pair.has(pair.client_events, DatagramSizeReduced)
    assert pair.client.max_datagram_size == 1200
    received = b"".join(e.data for e in pair.has(pair.server_events, events.StreamDataReceived))
    assert received == b"z" * 200_000  # everything still arrives, in small datagrams


def settled_pair():
    """A connected pair with nothing left to send or acknowledge, quiet for a moment (its pacers' buckets full)."""
    pair = Pair(Identity.generate(), Identity.generate())
    pair.pump(advance_by=1)
    pair.now += 0.01
    return pair


def request(pair, stream_id, data=b"request"):
    """The client sends ``data`` with its FIN; the server receives the one datagram it makes."""
    pair.client.send_stream_data(stream_id, data, end_stream=True)
    ((datagram, _),) = pair.client.datagrams_to_send(pair.now)
    pair.server.receive_datagram(datagram, CLIENT_ADDR, pair.now)
    pair._drain()


def test_the_ack_of_a_request_rides_on_the_reply():
    pair = settled_pair()
    stream_id = pair.client.get_next_available_stream_id()
    request(pair, stream_id)
    pair.now += ACK_HOLD / 2
    assert pair.server.datagrams_to_send(pair.now) == []  # no ACK on its own yet
    pair.server.send_stream_data(stream_id, b"reply", end_stream=True)
    ((reply, _),) = pair.server.datagrams_to_send(pair.now)
    pair.client.receive_datagram(reply, SERVER_ADDR, pair.now)
    # The reply acknowledged the request: the client holds nothing to resend.
    assert pair.client.send_buffered_total() == 0


def test_an_ack_with_no_reply_to_ride_on_leaves_when_the_hold_expires():
    pair = settled_pair()
    received_at = pair.now
    request(pair, pair.client.get_next_available_stream_id())
    assert pair.server.get_timer() <= received_at + ACK_HOLD
    pair.now = pair.server.get_timer()
    pair.server.handle_timer(pair.now)
    ((ack, _),) = pair.server.datagrams_to_send(pair.now)
    pair.client.receive_datagram(ack, SERVER_ADDR, pair.now)
    assert pair.client.send_buffered_total() == 0


def test_a_second_ack_eliciting_packet_is_acknowledged_at_once():
    pair = settled_pair()
    request(pair, pair.client.get_next_available_stream_id())
    request(pair, pair.client.get_next_available_stream_id())
    ((ack, _),) = pair.server.datagrams_to_send(pair.now + 1e-5)
    pair.client.receive_datagram(ack, SERVER_ADDR, pair.now + 1e-5)
    assert pair.client.send_buffered_total() == 0


# -- hook 14: pacing in bursts ----------------------------------------------------


def paced(pacer, congestion_window: int, smoothed_rtt: float, duration: float) -> tuple[int, int]:
    """A sender that always has data, woken when the pacer says: (datagrams sent, wake-ups) in ``duration``."""
    pacer.update_rate(congestion_window=congestion_window, smoothed_rtt=smoothed_rtt)
    now, sent, wakes = 0.0, 0, 0
    while now < duration:
        wakes += 1
        while pacer.next_send_time(now) is None:
            pacer.update_after_send(now)
            sent += 1
        now = pacer.next_send_time(now)
    return sent, wakes


def test_a_bulk_sender_is_paced_in_bursts_of_two_milliseconds_at_the_same_rate():
    datagram, window, rtt, duration = 1452, 400_000, 0.004, 0.2  # 100 MB/s
    sent, wakes = paced(BurstPacer(max_datagram_size=datagram), window, rtt, duration)
    stock_sent, stock_wakes = paced(QuicPacketPacer(max_datagram_size=datagram), window, rtt, duration)
    assert stock_sent / stock_wakes < 1.5  # aioquic: a wake-up per datagram
    # After the first wake-up (an empty bucket): 4/5 of 2 ms of the rate each, ~110 datagrams.
    assert sent / (wakes - 1) >= PACING_BURST_SECONDS * 0.8 * (window / rtt) / datagram
    # The pacing rate holds: quinn's 5/4 of the window per RTT, give or take one burst.
    rate = PACING_GAIN * window / rtt
    assert duration * rate * 0.95 <= sent * datagram <= (duration + PACING_BURST_SECONDS) * rate


def test_a_small_window_is_paced_in_small_bursts_and_never_waits_half_an_rtt():
    datagram, rtt = 1200, 0.1
    pacer = BurstPacer(max_datagram_size=datagram)
    pacer.update_rate(congestion_window=4 * datagram, smoothed_rtt=rtt)
    assert pacer.bucket_max <= 2 * pacer.packet_time + 1e-9  # half the window, not 10 datagrams
    assert pacer.next_send_time(0.0) - 0.0 <= rtt / 2
    pacer.update_rate(congestion_window=400 * datagram, smoothed_rtt=rtt)
    assert PACING_MIN_BURST * pacer.packet_time <= pacer.bucket_max


def test_connections_pace_with_the_burst_pacer():
    pair = settled_pair()
    assert isinstance(pair.client._loss._pacer, BurstPacer) and isinstance(pair.server._loss._pacer, BurstPacer)


# -- the boundary: no other transport module touches aioquic's internals -----


def test_only_quic_hooks_reaches_into_aioquic_private_state():
    transport = Path(hypermesh.transport.__file__).parent
    private_access = re.compile(r"\bquic\._[a-z]|\bquic_stream\b|from aioquic\.quic\.(connection|stream) import")
    offenders = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(transport.glob("*.py"))
        if path.name != "quic_hooks.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if private_access.search(line)
    ]
    assert not offenders
