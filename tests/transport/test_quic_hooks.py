"""One test per hook in transport/quic_hooks.py, on the sans-IO connection.

Two Libp2pQuicConnection objects exchange datagrams in memory with a
virtual clock, so each aioquic internal we rely on is pinned by a test.
"""

import dataclasses
import ssl

from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration

from hypermesh.transport.identity import Identity
from hypermesh.transport.quic_hooks import (
    STREAM_RECEIVE_WINDOW,
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
    assert "mismatch" in str(pair.client.verification_error)


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
