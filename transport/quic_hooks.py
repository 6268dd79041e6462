"""The one place where HyperMesh reaches into aioquic's internals.

aioquic has no public switches for what libp2p over QUIC needs, so
:class:`Libp2pQuicConnection` subclasses ``QuicConnection`` and hooks in at
these points (each has its own test in ``tests/transport/test_quic_hooks.py``,
hook 12 in ``tests/transport/test_misbehaviour.py``;
``pyproject.toml`` pins aioquic to the 1.7 series because of them):

1. Mutual TLS: the server requests a client certificate and refuses a client
   that sends none (unless the handshake resumes a session we issued).
2. libp2p certificate verification inside the handshake, on both sides, so a
   wrong peer ID aborts with a TLS alert before any stream opens.
3. Session tickets remember which peer they were issued to, so a resumed
   handshake (which carries no certificates) still authenticates the peer.
4. Receive windows follow what the application has *read*, not what has
   arrived, so a slow reader throttles its sender (aioquic grants credit as
   soon as data arrives, which would let a peer fill our memory). Bytes that
   are discarded instead of read give their credit back too (ReceiveCredit).
5. Datagram size probes (DPLPMTUD, RFC 8899): a PING padded to a candidate
   size; only its acknowledgement raises the datagram size. While raised,
   the congestion controller's acknowledged/lost callbacks feed a black-hole
   detector; on a black hole the size falls back to 1,200 and a
   ``DatagramSizeReduced`` event is emitted.
6. Speed: key shares for X25519 (preferred) and P-256 only, instead of
   aioquic's four groups (each costs a key generation per handshake, and a
   server would otherwise pick P-256 first); PADDING frames skipped in C
   rather than byte by byte (aioquic's loop costs 0.7 ms per 16 KB probe).
7. Stateless refusal: a server Initial carrying CONNECTION_CLOSE
   (CONNECTION_REFUSED) built from the client's Initial alone, so a full
   node answers at once without creating connection state; a client reports
   a refusal as soon as it arrives (aioquic reports a peer's close only after
   draining for three probe timeouts, about a second during a handshake).
8. Address validation: Initial header parsing, Retry and INVALID_TOKEN
   packets for the server's stateless Retry (tokens: ``transport/retry.py``).
9. Stream limits: ``max_streams_per_connection`` is advertised as QUIC's
   ``initial_max_streams_bidi`` (and no unidirectional streams), so a peer
   that opens more is paced by MAX_STREAMS instead of having streams reset.
10. Send buffers: what each stream holds unsent or unacknowledged, the
   credit the peer granted, so that writers wait on the peer's credit, and a
   running count over all streams (cheap enough to check on every write). A
   reset stream's buffer is freed at once (aioquic keeps it until the stream
   is discarded, which a hostile peer can put off for ever).
11. Early data (0-RTT): which streams the peer opened in 0-RTT packets, the
    client's peer ID as soon as its early data is accepted (the resumed
    ticket's PSK authenticates it), and whether a client can send early data.
12. Peer violations: when aioquic closes a connection because of something
    the peer sent (a frame over our flow-control or stream limits, a
    malformed frame, ...), the reason is kept (``peer_violation``) so the
    transport can report the peer; aioquic's close event does not say
    whether the error was the peer's or ours.
13. ACK timing (RFC 9000 §13.2): the ACK of a lone ack-eliciting 1-RTT
    packet waits up to ``ACK_HOLD`` for something of ours to ride on (a
    request's reply, the next request), and goes with the next stream data,
    reset or STOP_SENDING queued; a second such packet makes it due at once,
    as RFC 9000 recommends. aioquic acknowledges after a fixed delay only.
14. Pacing in bursts (:class:`BurstPacer`), as quinn paces: once the pacer's
    bucket is empty, aioquic lets the next datagram go one datagram's time
    later, so a bulk sender woke for one or two datagrams at a time.
15. Start: whether a connection has its Initial keys (``started``). A
    Ctrl-C can land inside a client's ``connect()`` before they exist, and
    aioquic then fails on any transmit (KeyError); such a connection sends
    nothing and its driver drops it at once.
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass
from typing import Callable

from aioquic import tls
from aioquic.buffer import Buffer
from aioquic.quic import events
from aioquic.quic.connection import END_STATES, QuicConnection, QuicConnectionState
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicFrameType,
    QuicHeader,
    QuicPacketType,
    encode_quic_retry,
    pull_quic_header,
    pull_quic_transport_parameters,
)
from aioquic.quic.packet_builder import QuicDeliveryState, QuicPacketBuilder
from aioquic.quic.recovery import K_MICRO_SECOND, K_SECOND, QuicPacketPacer

from .errors import CertificateError, HandshakeError, PeerIdMismatch
from .identity import PeerId
from .mtu import BASE_DATAGRAM_SIZE, BlackHoleDetector
from .tls import verify_certificate_chain

# Per-stream receive window: what a peer may send beyond what we have read.
# 1 MiB covers the bandwidth-delay product of a 100 MB/s path at 10 ms.
STREAM_RECEIVE_WINDOW = 1 << 20
# Connection-wide receive window, bounding buffered data per connection.
CONNECTION_RECEIVE_WINDOW = 8 << 20
# Hook 13: how long the ACK of a single ack-eliciting packet may wait for a
# packet of ours to ride on, well within the 25 ms max_ack_delay aioquic
# advertises (the peer's loss timers allow for that much). A reply sent
# within this carries the request's ACK, which then needs no datagram of its own.
ACK_HOLD = 0.005
# Hook 14: a paced burst holds this much of the pacing rate (quinn's 2 ms:
# timers that wake a millisecond late still meet it), from PACING_MIN_BURST to
# PACING_MAX_BURST datagrams and at most half the congestion window; an empty
# bucket waits until PACING_REFILL of a burst has refilled. aioquic's bursts
# (at most 16 datagrams, then one datagram per wake-up) cost a bulk sender at
# 1,452-byte datagrams a scheduling round and a transmit per one or two
# datagrams, and its receiver an ACK as often.
PACING_BURST_SECONDS = 0.002
# quinn's pacing rate: 5/4 of the congestion window per smoothed RTT, so that
# pacing never holds a sender below what its window allows.
PACING_GAIN = 1.25
PACING_MIN_BURST = 10
PACING_MAX_BURST = 256
PACING_REFILL = 0.8
# An ACK made due is dated this much before the packet it acknowledges
# arrived: strictly overdue, so the next transmit sends it even past pacing
# (aioquic bypasses pacing only for an ACK due before "now", and a clock that
# does not move, trio's mock clock, would keep one due exactly now waiting).
ACK_OVERDUE = 1e-6
# active_connection_id_limit we advertise (RFC 9000 §18.2: at least 2).
ACTIVE_CONNECTION_ID_LIMIT = 4
# Errors aioquic raises on what a peer sent (RFC 9000 §20.1), as opposed to
# our own failures (INTERNAL_ERROR), refusals and TLS alerts.
PEER_VIOLATION_CODES = frozenset({
    QuicErrorCode.FLOW_CONTROL_ERROR,
    QuicErrorCode.STREAM_LIMIT_ERROR,
    QuicErrorCode.STREAM_STATE_ERROR,
    QuicErrorCode.FINAL_SIZE_ERROR,
    QuicErrorCode.FRAME_ENCODING_ERROR,
    QuicErrorCode.TRANSPORT_PARAMETER_ERROR,
    QuicErrorCode.CONNECTION_ID_LIMIT_ERROR,
    QuicErrorCode.PROTOCOL_VIOLATION,
    QuicErrorCode.KEY_UPDATE_ERROR,
    QuicErrorCode.CRYPTO_BUFFER_EXCEEDED,
})


class ReceiveCredit:
    """Sans-IO ledger of the connection's receive credit (hook 4).

    QUIC charges our connection window with every byte a peer sends: the
    highest offset reached on each stream, or a reset stream's final size.
    The credit comes back only when a byte leaves our hands, either read by
    the application or discarded: left unread in a stream the application
    closed or reset, arriving for such a stream later, or never delivered
    because the peer reset the stream first. A byte in neither state is
    buffered (by us or by aioquic), so at all times::

        received == read + discarded + buffered

    and the window we grant is ``read + discarded + window``. Forgetting a
    discarded byte would shrink that window for good.
    """

    def __init__(self) -> None:
        self.received = 0
        self.read = 0
        self.discarded = 0
        # Per live stream: bytes received and read (MAX_STREAM_DATA follows reads).
        self._received_on: dict[int, int] = {}
        self._read_on: dict[int, int] = {}
        # Streams whose bytes are discarded on arrival.
        self.abandoned: set[int] = set()

    @property
    def released(self) -> int:
        """Bytes whose credit has come back."""
        return self.read + self.discarded

    @property
    def buffered(self) -> int:
        return self.received - self.released

    def read_on(self, stream_id: int) -> int:
        return self._read_on.get(stream_id, 0)

    def receive(self, stream_id: int, count: int) -> None:
        """``count`` more bytes of ``stream_id`` count against the window."""
        if not count:
            return
        self.received += count
        if stream_id in self.abandoned:
            self.discarded += count
        else:
            self._received_on[stream_id] = self._received_on.get(stream_id, 0) + count

    def read_from(self, stream_id: int, count: int) -> None:
        """The application read ``count`` bytes (negative: put them back)."""
        self.read += count
        self._read_on[stream_id] = self._read_on.get(stream_id, 0) + count

    def undeliverable(self, stream_id: int, count: int) -> None:
        """The peer reset the stream: ``count`` received bytes will never be delivered."""
        if stream_id not in self.abandoned:
            self.discarded += count
            self._received_on[stream_id] = self._received_on.get(stream_id, 0) - count

    def abandon(self, stream_id: int) -> bool:
        """The application reads no more: discard what it left, and all that
        comes later. False if it had abandoned the stream already."""
        if stream_id in self.abandoned:
            return False
        self.discarded += self._received_on.pop(stream_id, 0) - self._read_on.pop(stream_id, 0)
        self.abandoned.add(stream_id)
        return True

    def forget_all_but(self, live_stream_ids) -> None:
        """Drop abandoned streams the QUIC state has discarded (nothing more can arrive)."""
        self.abandoned.intersection_update(live_stream_ids)


def _peek_stream_id(buf: Buffer) -> int:
    """The stream ID a STREAM or RESET_STREAM frame starts with."""
    start = buf.tell()
    stream_id = buf.pull_uint_var()
    buf.seek(start)
    return stream_id

# Our connection IDs are 8 bytes (aioquic's default).
HOST_CID_LENGTH = 8
# Long enough for any refusal reason we send, short enough for any datagram.
MAX_REFUSAL_REASON = 100

# Every libp2p implementation offers X25519; P-256 is kept for TLS stacks that
# insist on a NIST curve.
HANDSHAKE_GROUPS = (tls.Group.X25519, tls.Group.SECP256R1)


class Libp2pTlsContext(tls.Context):
    """A TLS context that verifies libp2p certificates during the handshake."""

    expected_peer_id: PeerId | None
    remote_peer_id: PeerId | None
    verification_error: HandshakeError | None
    resumed_peer_id: PeerId | None

    def _verify_libp2p_peer(self) -> None:
        chain = [self._peer_certificate] + list(self._peer_certificate_chain)
        try:
            peer_id = verify_certificate_chain(chain)
        except CertificateError as exc:
            self.verification_error = exc
            raise tls.AlertBadCertificate(str(exc)) from None
        if self.expected_peer_id is not None and peer_id != self.expected_peer_id:
            self.verification_error = PeerIdMismatch(
                f"peer ID mismatch: dialled {self.expected_peer_id} but the remote is {peer_id}"
            )
            raise tls.AlertBadCertificate(str(self.verification_error))
        self.remote_peer_id = peer_id

    def _client_handle_certificate_verify(self, input_buf: Buffer) -> None:
        super()._client_handle_certificate_verify(input_buf)
        self._verify_libp2p_peer()

    def _server_handle_certificate(self, input_buf: Buffer) -> None:
        start = input_buf.tell()
        certificate = tls.pull_certificate(input_buf)
        input_buf.seek(start)
        if not certificate.certificates:
            self.verification_error = CertificateError("client sent no certificate (libp2p requires mutual TLS)")
            raise tls.AlertHandshakeFailure(str(self.verification_error))
        super()._server_handle_certificate(input_buf)

    def _server_handle_certificate_verify(self, input_buf: Buffer) -> None:
        super()._server_handle_certificate_verify(input_buf)
        self._verify_libp2p_peer()

    def _client_handle_finished(self, input_buf: Buffer, output_buf: Buffer) -> None:
        # A resumed handshake has no Certificate message: the server proved
        # the PSK from the ticket it issued to the peer we resumed with.
        if self.remote_peer_id is None and self.session_resumed:
            self.remote_peer_id = self.resumed_peer_id
        super()._client_handle_finished(input_buf, output_buf)

    def _server_handle_finished(self, input_buf: Buffer, output_buf: Buffer) -> None:
        if self.remote_peer_id is None:
            if self.session_resumed and self.resumed_peer_id is not None:
                self.remote_peer_id = self.resumed_peer_id
            else:
                self.verification_error = CertificateError("client did not authenticate")
                raise tls.AlertHandshakeFailure(str(self.verification_error))
        super()._server_handle_finished(input_buf, output_buf)


@dataclass
class DatagramSizeReduced(events.QuicEvent):
    """Large datagrams stopped getting through: the size fell back to ``size``."""

    size: int


TicketLookup = Callable[[bytes], "tuple[tls.SessionTicket, PeerId] | None"]


class BurstPacer(QuicPacketPacer):
    """aioquic's token bucket (its times are seconds of the pacing rate) with quinn's burst rule (hook 14)."""

    def next_send_time(self, now: float) -> float | None:
        if self.packet_time is not None:
            self.update_bucket(now=now)
            if self.bucket_time <= 0:
                return now + PACING_REFILL * self.bucket_max
        return None

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        rate = PACING_GAIN * congestion_window / max(smoothed_rtt, K_MICRO_SECOND)
        # One datagram's time at the pacing rate; aioquic's bounds.
        self.packet_time = datagram = max(K_MICRO_SECOND, min(self._max_datagram_size / rate, K_SECOND))
        burst = min(max(PACING_BURST_SECONDS, PACING_MIN_BURST * datagram), PACING_MAX_BURST * datagram)
        half_window = max(2 * self._max_datagram_size, congestion_window // 2) / rate
        self.bucket_max = min(burst, half_window)
        self.bucket_time = min(self.bucket_time, self.bucket_max)


class _DeliveryCounter:
    """A stream sender's ``on_data_delivery`` that also keeps the connection's
    count of buffered bytes (:meth:`Libp2pQuicConnection._count_deliveries`).

    It holds the sender and the connection weakly: held strongly, every
    stream would be a reference cycle (sender, handler, sender) that only the
    garbage collector frees, and a busy node's young collections would grow
    with its stream count. A packet in flight holds this handler; once the
    stream is gone, what it acknowledges concerns nobody.
    """

    __slots__ = ("_connection", "_sender")

    def __init__(self, connection: "Libp2pQuicConnection", sender) -> None:
        self._connection = weakref.ref(connection)
        self._sender = weakref.ref(sender)

    def __call__(self, delivery, start: int, stop: int, fin: bool) -> None:
        sender = self._sender()
        if sender is None:
            return
        freed_from = sender._buffer_start
        type(sender).on_data_delivery(sender, delivery, start, stop, fin)
        connection = self._connection()
        if connection is not None:
            connection._send_buffered -= sender._buffer_start - freed_from


class Libp2pQuicConnection(QuicConnection):
    """``QuicConnection`` with libp2p authentication, read-paced flow control
    and datagram-size probing. See the module docstring for each hook."""

    def __init__(
        self,
        *,
        expected_peer_id: PeerId | None = None,
        resumed_peer_id: PeerId | None = None,
        server_ticket_lookup: TicketLookup | None = None,
        **kwargs,
    ):
        self._expected_peer_id = expected_peer_id
        self._resumed_peer_id = resumed_peer_id
        self._server_ticket_lookup = server_ticket_lookup
        self._early_stream_ids: set[int] = set()
        self._credit = ReceiveCredit()
        # Hook 9: peer streams QUIC allows at once; of those it opened, how
        # many aioquic discarded and how many the application let go.
        self._streams_allowed = self._streams_granted = 128  # aioquic's default
        self._streams_discarded = 0
        self._streams_released = 0
        # Hook 10: bytes all streams hold to send (unsent or unacknowledged).
        self._send_buffered = 0
        self._probe_uid: int | None = None
        self._probe_size = 0
        self._probe_failed = False
        self._building_probe = False
        # The peer's transport parameters, parsed again only when asked for.
        self._remote_parameters_data: bytes | None = None
        # Hook 12: why we closed the connection on the peer's account, if we did.
        self.peer_violation: str | None = None
        self._receiving = False
        super().__init__(**kwargs)
        self._loss._pacer = BurstPacer(max_datagram_size=self._max_datagram_size)  # hook 14
        # Connection IDs the peer may issue us: spares for a migration, as
        # quic-go's 4 (aioquic asks for 8, and issues as many as the peer
        # allows: each costs both sides a frame, an event and a route).
        self._local_active_connection_id_limit = ACTIVE_CONNECTION_ID_LIMIT
        # Hook 13: aioquic's delay before a first ACK is due, and the
        # ack-eliciting 1-RTT packets received since our last ACK.
        self._ack_delay = ACK_HOLD
        self._unacknowledged_eliciting = 0
        # The 1-RTT packet space, once _initialize made it (looked up on every write).
        self._application_space = None
        self._local_max_data.value = CONNECTION_RECEIVE_WINDOW
        self._local_max_data.sent = CONNECTION_RECEIVE_WINDOW
        self._local_max_stream_data_bidi_local = STREAM_RECEIVE_WINDOW
        self._local_max_stream_data_bidi_remote = STREAM_RECEIVE_WINDOW
        self._local_max_stream_data_uni = STREAM_RECEIVE_WINDOW

    # -- hooks 1–3: authentication ------------------------------------------

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        self._application_space = self._spaces[tls.Epoch.ONE_RTT]  # hook 13
        context = self.tls
        context.__class__ = Libp2pTlsContext
        context.expected_peer_id = self._expected_peer_id
        context.remote_peer_id = None
        context.verification_error = None
        context.resumed_peer_id = self._resumed_peer_id
        context._supported_groups = list(HANDSHAKE_GROUPS)
        if not self._is_client:
            context._request_client_certificate = True
            if self._server_ticket_lookup is not None:
                context.get_session_ticket_cb = self._fetch_server_ticket

    def _fetch_server_ticket(self, label: bytes):
        found = self._server_ticket_lookup(label)
        if found is None:
            return None
        ticket, peer_id = found
        if not ticket.is_valid:
            return None
        self.tls.resumed_peer_id = peer_id
        # TLS 1.3 forbids a CertificateRequest in a PSK handshake, but aioquic
        # would still wait for the client's Certificate. If the PSK is then not
        # used after all, _server_handle_finished refuses the unauthenticated
        # client: this fails closed.
        self.tls._request_client_certificate = False
        return ticket

    # -- hook 10: early data (0-RTT) --------------------------------------------

    @property
    def is_ending(self) -> bool:
        """Closing, draining or closed: either side has ended the connection,
        though aioquic reports it only after the closing period."""
        return self._state in END_STATES or self._close_pending

    def opened_in_early_data(self, stream_id: int) -> bool:
        """Whether the peer's data for ``stream_id`` came (at least partly) in 0-RTT packets."""
        return stream_id in self._early_stream_ids

    @property
    def early_peer_id(self) -> PeerId | None:
        """Server: the client's peer ID once its 0-RTT data is accepted.

        The PSK binder of the resumed ticket, issued to that peer alone,
        authenticates the client before its Finished arrives.
        """
        context = getattr(self, "tls", None)
        if self._is_client or context is None or not context.early_data_accepted:
            return None
        return context.resumed_peer_id

    @property
    def can_send_early_data(self) -> bool:
        """Client: 0-RTT keys are ready (a resumed ticket that allows early data)."""
        return self._is_client and self._cryptos[tls.Epoch.ZERO_RTT].send.is_valid()

    # -- hook 12: peer violations --------------------------------------------

    def receive_datagram(self, data: bytes, addr, now: float) -> None:
        self._receiving = True
        try:
            super().receive_datagram(data, addr, now)
        finally:
            self._receiving = False
        if self._unacknowledged_eliciting >= 2:  # hook 13
            self._make_ack_due(now)

    # -- hook 13: ACK timing ---------------------------------------------------

    def _payload_received(self, context, plain: bytes, crypto_frame_required: bool = False):
        is_ack_eliciting, is_probing = super()._payload_received(
            context, plain, crypto_frame_required=crypto_frame_required
        )
        if is_ack_eliciting and context.epoch in (tls.Epoch.ZERO_RTT, tls.Epoch.ONE_RTT):
            self._unacknowledged_eliciting += 1
        return is_ack_eliciting, is_probing

    def _write_ack_frame(self, builder: QuicPacketBuilder, space, now: float) -> None:
        super()._write_ack_frame(builder=builder, space=space, now=now)
        if space is self._application_space:
            self._unacknowledged_eliciting = 0

    def _make_ack_due(self, received_at: float | None = None) -> None:
        """A pending 1-RTT ACK goes with the next packet (``received_at``:
        when the packet that needs it arrived; by default the latest one)."""
        space = self._application_space
        if space is not None and space.ack_at is not None:
            if received_at is None:
                received_at = space.largest_received_time
            space.ack_at = min(space.ack_at, received_at - ACK_OVERDUE)

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        super().stop_stream(stream_id, error_code)
        self._make_ack_due()

    def close(self, error_code: int = QuicErrorCode.NO_ERROR, frame_type: int | None = None,
              reason_phrase: str = "") -> None:
        # aioquic closes with the error it raised while parsing what the peer sent.
        if self._receiving and error_code in PEER_VIOLATION_CODES and self._close_event is None:
            self.peer_violation = f"{QuicErrorCode(error_code).name}: {reason_phrase}"
        super().close(error_code, frame_type, reason_phrase)

    def _handle_connection_close_frame(self, context, frame_type: int, buf: Buffer) -> None:
        already_closing = self._close_event is not None
        super()._handle_connection_close_frame(context, frame_type, buf)
        if not already_closing and self._close_event is not None and is_refusal(self._close_event):
            self._events.append(self._close_event)

    @property
    def remote_peer_id(self) -> PeerId | None:
        return getattr(self.tls, "remote_peer_id", None)

    @property
    def verification_error(self) -> HandshakeError | None:
        """Why the peer failed authentication: a CertificateError, or PeerIdMismatch."""
        return getattr(self.tls, "verification_error", None)

    def _handle_padding_frame(self, context, frame_type: int, buf: Buffer) -> None:
        position = buf.tell()
        rest = buf.data_slice(position, buf.capacity)
        buf.seek(position + len(rest) - len(rest.lstrip(b"\x00")))

    # -- hook 4: receive windows follow the reader --------------------------

    @property
    def receive_credit(self) -> "ReceiveCredit":
        return self._credit

    def consume(self, stream_id: int, count: int) -> None:
        """Record that the application read ``count`` bytes from a stream
        (negative: bytes it put back)."""
        self._credit.read_from(stream_id, count)

    def abandon_stream(self, stream_id: int) -> None:
        """The application will read no more from this stream: what it left
        unread, and whatever still arrives, is discarded and its credit given back."""
        # The low two bits of a stream ID: 0 client bidirectional, 1 server bidirectional.
        opened_by_peer_bidirectional = stream_id & 3 == (1 if self._is_client else 0)
        if self._credit.abandon(stream_id) and opened_by_peer_bidirectional:
            self._streams_released += 1
        if len(self._credit.abandoned) > 2 * len(self._streams) + 64:
            self._credit.forget_all_but(self._streams.keys())

    def sending_ended(self, stream_id: int) -> bool:
        """Whether our side of the stream is over (FIN queued, reset, or all acknowledged): a later reset
        would only abort the tail of a reply we finished writing."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return True
        sender = stream.sender
        return sender.is_finished or sender.reset_pending or sender._buffer_fin is not None

    def is_abandoned(self, stream_id: int) -> bool:
        return stream_id in self._credit.abandoned

    def window_update_due(self, stream_id: int) -> bool:
        """Whether reads since the last grant warrant a MAX_STREAM_DATA/MAX_DATA now."""
        stream = self._streams.get(stream_id)
        if stream is not None and stream.max_stream_data_local:
            consumed = self._credit.read_on(stream_id)
            if consumed + STREAM_RECEIVE_WINDOW - stream.max_stream_data_local >= STREAM_RECEIVE_WINDOW // 4:
                return True
        wanted = self._credit.released + CONNECTION_RECEIVE_WINDOW
        return wanted - self._local_max_data.value >= CONNECTION_RECEIVE_WINDOW // 4

    def _handle_stream_frame(self, context, frame_type: int, buf: Buffer) -> None:
        stream_id = _peek_stream_id(buf)
        if context.epoch == tls.Epoch.ZERO_RTT:
            self._early_stream_ids.add(stream_id)  # hook 10
        used = self._local_max_data.used
        super()._handle_stream_frame(context, frame_type, buf)
        self._credit.receive(stream_id, self._local_max_data.used - used)

    def _handle_reset_stream_frame(self, context, frame_type: int, buf: Buffer) -> None:
        stream_id = _peek_stream_id(buf)
        stream = self._streams.get(stream_id)
        was_finished = stream is not None and stream.receiver.is_finished
        used = self._local_max_data.used
        super()._handle_reset_stream_frame(context, frame_type, buf)
        self._credit.receive(stream_id, self._local_max_data.used - used)
        stream = self._streams[stream_id]
        receiver = stream.receiver
        if not was_finished and receiver.is_finished:
            # Up to the final size counts against our window, but what was
            # not delivered in order before the reset never will be.
            self._credit.undeliverable(stream_id, receiver.highest_offset - receiver.starting_offset())

    def _write_connection_limits(self, builder, space) -> None:
        streams_due = self._update_stream_grant()
        limit = self._local_max_data
        # Keep aioquic's doubling rule from firing: the window moves only as
        # the application reads.
        wanted = self._credit.released + CONNECTION_RECEIVE_WINDOW
        if wanted - limit.value >= CONNECTION_RECEIVE_WINDOW // 4:
            limit.value = wanted
        if limit.value == limit.sent and not streams_due:
            return  # nothing to send: spare aioquic's checks on every packet
        saved_used = limit.used
        limit.used = 0
        try:
            super()._write_connection_limits(builder, space)
        finally:
            limit.used = saved_used

    def _write_stream_limits(self, builder, space, stream) -> None:
        if not stream.max_stream_data_local:
            super()._write_stream_limits(builder, space, stream)
            return
        wanted = self._credit.read_on(stream.stream_id) + STREAM_RECEIVE_WINDOW
        # Update in quarter-window steps to batch MAX_STREAM_DATA frames.
        if wanted - stream.max_stream_data_local >= STREAM_RECEIVE_WINDOW // 4:
            stream.max_stream_data_local = wanted
        if stream.max_stream_data_local == stream.max_stream_data_local_sent:
            return  # nothing to send (aioquic's own doubling is defeated below)
        # Defeat aioquic's own doubling (it compares against arrivals).
        saved = stream.receiver.highest_offset
        stream.receiver.highest_offset = 0
        try:
            super()._write_stream_limits(builder, space, stream)
        finally:
            stream.receiver.highest_offset = saved

    # -- hook 9: stream limits ---------------------------------------------

    # aioquic holds back the data of a stream beyond the peer's stream limit,
    # but not its RESET_STREAM or STOP_SENDING, and a peer that enforces the
    # limit closes the connection for those. They wait for MAX_STREAMS too.

    def _write_reset_stream_frame(self, builder, stream) -> None:
        if not stream.is_blocked:
            super()._write_reset_stream_frame(builder, stream)

    def _write_stop_sending_frame(self, builder, stream) -> None:
        if not stream.is_blocked:
            super()._write_stop_sending_frame(builder, stream)

    def limit_incoming_streams(self, count: int) -> None:
        """Let the peer open at most ``count`` bidirectional streams at once,
        and no unidirectional ones (libp2p has none).

        Sent as ``initial_max_streams_bidi``/``_uni``: a peer opening more is
        held back by QUIC itself, and MAX_STREAMS returns a slot as each of
        its streams ends (``_update_stream_grant``). Call before the handshake
        starts.
        """
        for limit, value in ((self._local_max_streams_bidi, count), (self._local_max_streams_uni, 0)):
            limit.value = limit.sent = value
        self._streams_allowed = self._streams_granted = count

    def _update_stream_grant(self) -> bool:
        """Set the peer's stream limit; True if a MAX_STREAMS is due.

        aioquic adds one to the limit as each peer stream is discarded (both
        directions finished), which may come before the application lets go
        of the stream: a slot returns when both have.
        """
        streams = self._local_max_streams_bidi
        self._streams_discarded += streams.value - self._streams_granted
        streams.value = self._streams_granted = self._streams_allowed + min(
            self._streams_discarded, self._streams_released
        )
        # aioquic's batching rule: grant once the peer has fewer streams left
        # to open than the update would give it.
        return streams.value != streams.sent and streams.sent - streams.used < streams.value - streams.sent

    @property
    def started(self) -> bool:
        """Whether the connection has its Initial keys: a client's ``connect()``
        ran to its end (a Ctrl-C can land inside it) or a server parsed an Initial."""
        return tls.Epoch.INITIAL in self._cryptos

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple]]:
        if not self.started:
            return []  # aioquic would fail on the missing keys; there is nothing to send without them
        datagrams = super().datagrams_to_send(now)
        # aioquic discards finished streams after writing MAX_STREAMS: send
        # the slots that frees now, not with whatever goes out next.
        if self._handshake_complete and self._update_stream_grant():
            datagrams += super().datagrams_to_send(now)
        return datagrams

    # -- hook 10: what a writer may buffer ---------------------------------

    def send_buffer_state(self, stream_id: int) -> tuple[int, int, int, int]:
        """``(buffered, unsent, credit, connection_buffered)``: of one stream's
        send side, bytes held (unsent or unacknowledged), bytes not yet sent,
        and bytes the peer's stream and connection credit let us send now;
        and what all streams hold (:meth:`send_buffered_total`)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0, 0, 0, self._send_buffered  # aioquic creates the stream on the first write
        sender = stream.sender
        sent = sender.highest_offset
        if stream.is_blocked:  # over the peer's stream limit: nothing may go yet
            credit = 0
        else:
            credit = min(stream.max_stream_data_remote - sent, self._remote_max_data - self._remote_max_data_used)
        return sender._buffer_stop - sender._buffer_start, sender._buffer_stop - sent, max(credit, 0), self._send_buffered

    def send_buffered_total(self) -> int:
        """Bytes held in every stream's send buffer (unsent or unacknowledged).

        A running count, so that a writer can check the connection's ceiling
        on every write: up on each write, down as acknowledgements free the
        front of a buffer and when a stream is reset.
        """
        return self._send_buffered

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        super().send_stream_data(stream_id, data, end_stream)
        self._make_ack_due()  # hook 13
        sender = self._streams[stream_id].sender
        self._send_buffered += len(data)
        if "on_data_delivery" not in vars(sender):
            self._count_deliveries(sender)

    def _count_deliveries(self, sender) -> None:
        """Subtract what acknowledgements free from the running count.

        aioquic reads ``sender.on_data_delivery`` each time it builds a STREAM
        frame, so an instance attribute takes its place from then on.
        """
        sender.on_data_delivery = _DeliveryCounter(self, sender)

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        super().reset_stream(stream_id, error_code)
        self._make_ack_due()  # hook 13
        self._free_reset_send_buffer(stream_id)

    def _handle_stop_sending_frame(self, context, frame_type: int, buf: Buffer) -> None:
        stream_id = _peek_stream_id(buf)
        super()._handle_stop_sending_frame(context, frame_type, buf)
        self._free_reset_send_buffer(stream_id)

    def _free_reset_send_buffer(self, stream_id: int) -> None:
        """aioquic never sends or resends a reset stream's data again, but
        holds it until the stream is discarded (once the peer acknowledges the
        RESET_STREAM and finishes its own side, which a hostile peer never
        does): free it at once."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # discarded already: nothing held
        sender = stream.sender
        self._send_buffered -= sender._buffer_stop - sender._buffer_start
        sender._buffer_start = sender._buffer_stop
        sender._buffer.clear()

    # -- what the driver reads ----------------------------------------------

    @property
    def is_terminated(self) -> bool:
        """The connection has finished closing (or draining)."""
        return self._state == QuicConnectionState.TERMINATED

    @property
    def has_network_path(self) -> bool:
        """False for a server connection whose first packet never parsed."""
        return bool(self._network_paths)

    @property
    def effective_idle_timeout(self) -> float:
        """The idle timeout in force: the smaller of ours and the peer's
        (known once its transport parameters arrived), as aioquic applies it."""
        return self._idle_timeout()

    # -- hook 5: datagram size probes ---------------------------------------

    def _parse_transport_parameters(self, data: bytes, from_session_ticket: bool = False) -> None:
        super()._parse_transport_parameters(data, from_session_ticket)
        self._remote_parameters_data = data

    @property
    def remote_max_udp_payload_size(self) -> int | None:
        """The peer's max_udp_payload_size transport parameter, if it sent one.

        Parsed on demand (after the handshake, by the datagram size
        probes), not a second time on the handshake's critical path."""
        if self._remote_parameters_data is None:
            return None
        return pull_quic_transport_parameters(Buffer(data=self._remote_parameters_data)).max_udp_payload_size

    @property
    def max_datagram_size(self) -> int:
        return self._max_datagram_size

    def datagrams_for_probe(self, size: int, uid: int, now: float) -> list[tuple[bytes, tuple]]:
        """Build one ack-eliciting datagram padded to ``size`` bytes.

        Its acknowledgement arrives as a ``PingAcknowledged(uid)`` event; call
        :meth:`confirm_probe` then. A lost probe is not retransmitted.
        """
        self._probe_uid = uid
        self._probe_size = size
        self._probe_failed = False
        self._ping_pending.append(uid)
        # Lets the probe exceed the congestion window, as RFC 8899 §4.1 allows.
        self._probe_pending = True
        saved = self._max_datagram_size
        self._max_datagram_size = size
        self._building_probe = True
        pacer = self._loss._pacer
        # A probe is one datagram, sent now: pacing would only postpone it
        # into an ordinary-sized packet, whose ack would prove nothing.
        pacer.next_send_time = lambda now: None
        try:
            datagrams = self.datagrams_to_send(now)
        finally:
            del pacer.next_send_time
            self._building_probe = False
            self._max_datagram_size = saved
        if not any(len(data) == size for data, _ in datagrams):
            # Could not be built at full size (e.g. anti-amplification limit).
            if uid in self._ping_pending:
                self._ping_pending.remove(uid)
            self._probe_failed = True
        return datagrams

    def _write_ping_frame(self, builder, uids=(), comment: str = "") -> None:
        super()._write_ping_frame(builder, uids, comment)
        if self._building_probe and self._probe_uid in uids:
            builder._datagram_needs_padding = True

    def _on_ping_delivery(self, delivery: QuicDeliveryState, uids) -> None:
        if self._probe_uid is not None and self._probe_uid in uids and delivery == QuicDeliveryState.LOST:
            # Never resend a probe at a smaller size: its ack would prove nothing.
            self._probe_failed = True
            uids = tuple(uid for uid in uids if uid != self._probe_uid)
            if not uids:
                return
        super()._on_ping_delivery(delivery, uids)

    @property
    def probe_failed(self) -> bool:
        return self._probe_failed

    def confirm_probe(self, uid: int) -> bool:
        """Adopt the probed size if ``uid`` is the probe's. Returns True if adopted."""
        if uid != self._probe_uid or self._probe_failed:
            return False
        self.set_max_datagram_size(self._probe_size)
        self._probe_uid = None
        self._watch_for_black_hole()
        return True

    def _watch_for_black_hole(self) -> None:
        """Feed the sizes of acknowledged and lost packets to a detector, while
        the datagram size is raised (connections at the base size pay nothing)."""
        congestion = self._loss._cc
        if "on_packet_acked" in vars(congestion):
            return
        detector = BlackHoleDetector()
        acked, lost, expired = congestion.on_packet_acked, congestion.on_packets_lost, congestion.on_packets_expired

        def on_packet_acked(*, packet, now):
            detector.on_acked(packet.sent_bytes)
            acked(packet=packet, now=now)

        def after_loss(packets) -> None:
            if detector.on_loss_event(packet.sent_bytes for packet in packets):
                if self._max_datagram_size > BASE_DATAGRAM_SIZE:
                    self.reset_datagram_size()
                    self._events.append(DatagramSizeReduced(BASE_DATAGRAM_SIZE))

        def on_packets_lost(*, packets, now):
            packets = list(packets)
            lost(packets=packets, now=now)
            after_loss(packets)

        def on_packets_expired(*, packets):
            # A probe timeout: in a black hole no ACK comes back at all, so
            # this is how its losses show.
            packets = list(packets)
            expired(packets=packets)
            after_loss(packets)

        congestion.on_packet_acked = on_packet_acked
        congestion.on_packets_lost = on_packets_lost
        congestion.on_packets_expired = on_packets_expired

    def reset_datagram_size(self) -> None:
        """Back to QUIC's base datagram size (black hole, or a new path)."""
        congestion = self._loss._cc
        for name in ("on_packet_acked", "on_packets_lost", "on_packets_expired"):
            vars(congestion).pop(name, None)
        self.set_max_datagram_size(BASE_DATAGRAM_SIZE)

    def set_max_datagram_size(self, size: int) -> None:
        self._max_datagram_size = size
        self._loss._pacer._max_datagram_size = size
        congestion = self._loss._cc
        if hasattr(congestion, "_max_datagram_size"):
            congestion._max_datagram_size = size
        # Room for at least two full datagrams, or nothing of the new size fits.
        congestion.congestion_window = max(congestion.congestion_window, 2 * size)


def parse_initial(datagram: bytes) -> QuicHeader | None:
    """The header of the QUIC Initial packet ``datagram`` starts with, or None."""
    try:
        header = pull_quic_header(Buffer(data=datagram), host_cid_length=HOST_CID_LENGTH)
    except ValueError:
        return None
    if header.packet_type != QuicPacketType.INITIAL or header.version is None:
        return None
    return header


def _initial_close(header: QuicHeader, error_code: int, reason: str) -> bytes:
    crypto = CryptoPair()
    crypto.setup_initial(cid=header.destination_cid, is_client=False, version=header.version)
    builder = QuicPacketBuilder(
        host_cid=os.urandom(HOST_CID_LENGTH),
        peer_cid=header.source_cid,
        version=header.version,
        is_client=False,
        max_datagram_size=1200,
    )
    builder.start_packet(QuicPacketType.INITIAL, crypto)
    reason_bytes = reason.encode()[:MAX_REFUSAL_REASON]
    buf = builder.start_frame(QuicFrameType.TRANSPORT_CLOSE, capacity=16 + len(reason_bytes))
    buf.push_uint_var(error_code)
    buf.push_uint_var(QuicFrameType.PADDING)  # no frame caused it
    buf.push_uint_var(len(reason_bytes))
    buf.push_bytes(reason_bytes)
    datagrams, _ = builder.flush()
    return datagrams[0]


def refusal_datagram(initial: bytes, reason: str) -> bytes | None:
    """A server Initial closing the connection ``initial`` opens, with CONNECTION_REFUSED.

    Needs no connection state: Initial keys derive from the client's
    destination connection ID. The answer is far smaller than the 1,200-byte
    Initial it answers, so it cannot amplify a spoofed flood. None when
    ``initial`` is not a QUIC Initial.
    """
    header = parse_initial(initial)
    return None if header is None else _initial_close(header, QuicErrorCode.CONNECTION_REFUSED, reason)


def invalid_token_datagram(header: QuicHeader) -> bytes:
    """A server Initial closing with INVALID_TOKEN (RFC 9000 §8.1.3), statelessly."""
    return _initial_close(header, QuicErrorCode.INVALID_TOKEN, "invalid address validation token")


def retry_datagram(header: QuicHeader, retry_cid: bytes, token: bytes) -> bytes:
    """A Retry answering the Initial ``header``: come back to ``retry_cid`` with ``token``."""
    return encode_quic_retry(
        version=header.version,
        source_cid=retry_cid,
        destination_cid=header.source_cid,
        original_destination_cid=header.destination_cid,
        retry_token=token,
    )


def is_refusal(event) -> bool:
    """Whether a ConnectionTerminated event is the peer's CONNECTION_REFUSED."""
    return event.frame_type is not None and event.error_code == QuicErrorCode.CONNECTION_REFUSED


def refuse(quic: QuicConnection, reason: str) -> None:
    """Close ``quic`` with a transport CONNECTION_REFUSED, which the peer can tell from other closes."""
    quic.close(error_code=QuicErrorCode.CONNECTION_REFUSED, frame_type=QuicFrameType.PADDING, reason_phrase=reason)
