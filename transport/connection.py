"""Trio driver for one QUIC connection and its streams.

:class:`QuicConnectionDriver` feeds a :class:`Libp2pQuicConnection` (the
sans-IO state machine) with datagrams from its endpoint and the time, turns
its events into stream data, and sends what it produces. It never reads the
clock itself except through ``trio.current_time()``, so tests can run it on
trio's mock clock.

:class:`QuicStream` is the application's view of one bidirectional stream:
``send_all`` waits for the peer's flow-control credit and a bounded local
buffer; ``receive_some`` returns what the peer sent, and only what has been
read counts towards the window we grant back (see quic_hooks).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Callable

import trio
from aioquic.quic import events

from . import metrics
from .errors import (
    ConnectionClosed,
    HandshakeError,
    NegotiationError,
    PeerIdMismatch,
    PeerRefused,
    ResourceLimitError,
    StreamReset,
    WriteStalled,
    fresh,
)
from .identity import PeerId
from .multiaddrs import sockaddr_to_multiaddr
from .quic_hooks import DatagramSizeReduced, Libp2pQuicConnection, is_refusal, refuse

if TYPE_CHECKING:
    from .endpoint import QuicEndpoint

log = logging.getLogger("hypermesh.transport")

# Bytes one stream may hold in aioquic's send buffer (unsent + unacknowledged)
# before send_all waits: enough to keep a fast path full.
STREAM_SEND_BUFFER = 2 << 20
# Bytes a writer may queue beyond the credit the peer granted (stream and
# connection): a peer that stops reading pins this much per stream, not more.
SEND_AHEAD_OF_CREDIT = 1 << 20
# What all streams of one connection may hold in their send buffers.
CONNECTION_SEND_BUFFER = 8 << 20
# A stream holding less than SMALL_WRITE may write into a reserve beyond that
# ceiling: bulk streams that fill it (a peer that reads slowly, or not at all)
# then do not hold up the small replies of request/response protocols
# (multistream-select, ping, identify, the DHT) on the same connection.
SMALL_WRITE = 16 << 10
CONNECTION_SEND_RESERVE = 1 << 20
# An inbound stream's handler whose write makes no progress this long (the
# peer grants no credit) has its stream reset (WriteStalled).
HANDLER_WRITE_STALL_TIMEOUT = 30.0
# Largest slice handed to aioquic per call, so one writer cannot monopolise a
# connection's packets.
WRITE_SLICE = 256 << 10
# Application error codes used on RESET_STREAM / STOP_SENDING.
STREAM_ERROR_RESET = 0
STREAM_ERROR_LIMIT = 1
STREAM_ERROR_PROTOCOL = 2
# The keepalive task sleeps until the connection may have been quiet long
# enough, and at least this long (it never spins). A longer floor would push
# a ping due just after a wake-up a whole floor later: with a floor equal to
# the interval, the peer's ACK of our last PING (a few ms after it) moved
# every next PING to twice the interval, the whole idle timeout.
MIN_KEEPALIVE_SLEEP = 0.01


class QuicStream:
    """One bidirectional QUIC stream, negotiated with multistream-select."""

    def __init__(self, connection: "QuicConnectionDriver", stream_id: int):
        self._connection = connection
        self.stream_id = stream_id
        # Opened in 0-RTT (early data): replayable, so only some protocols may use it.
        self.early = False
        self.protocol: str | None = None
        self._receive_buffer = bytearray()
        self._receive_eof = False
        self._data_arrived = trio.Event()
        self._send_eof = False
        self._reset_error: StreamReset | None = None
        # The peer's STOP_SENDING: our sending is over, but what it already
        # sent (and still sends, up to its FIN) stays readable.
        self._send_stopped: StreamReset | None = None
        self._closed = False
        self._lazy_negotiator = None
        # Bytes that go out with the application's first write or FIN (see hold_for_first_write).
        self._held = b""
        # None: writes wait as long as the peer withholds credit.
        self.write_stall_timeout: float | None = None

    # -- identity -----------------------------------------------------------

    @property
    def remote_peer(self) -> PeerId:
        return self._connection.remote_peer_id

    @property
    def remote_addr(self) -> str:
        return self._connection.remote_multiaddr

    @property
    def connection(self) -> "QuicConnectionDriver":
        return self._connection

    @property
    def handshake_confirmed(self) -> bool:
        """Whether the connection's handshake has completed: the peer then
        proved it holds the connection's keys, so what it sends is no replay
        (and what we send no longer goes in 0-RTT)."""
        return self._connection.handshake_complete.is_set()

    async def wait_for_handshake(self, timeout: float) -> bool:
        """True once the connection's handshake completed; False if it failed
        (the connection closed) or ``timeout`` seconds passed first."""
        return await self._connection.wait_for_handshake(timeout)

    def __repr__(self) -> str:
        return f"<QuicStream {self.stream_id} {self.protocol} with {self._connection.remote_peer_id}>"

    # -- receiving ----------------------------------------------------------

    def _on_data(self, data: bytes, end_stream: bool) -> None:
        if data:
            self._receive_buffer += data
            metrics.BYTES_RECEIVED.inc(len(data))
        if end_stream:
            self._receive_eof = True
        if not self._data_arrived.is_set():
            self._connection.readers_woken = True
            self._data_arrived.set()

    def _on_reset(self, error: StreamReset) -> None:
        self._reset_error = error
        self._data_arrived.set()
        self._connection._wake_writers()

    def _on_send_stopped(self, error: StreamReset) -> None:
        self._send_stopped = error
        self._connection._wake_writers()

    def unread(self, data: bytes) -> None:
        """Put bytes back at the front (used after multistream negotiation)."""
        if data:
            self._receive_buffer[:0] = data
            # They were counted as consumed when first read; uncount them.
            self._connection.quic.consume(self.stream_id, -len(data))

    def negotiate_lazily(self, negotiator) -> None:
        """Let the application use the stream before the listener confirms the
        protocol (as go-libp2p does for a single proposal): the first read
        consumes the confirmation, or raises if the protocol was refused.

        The header and proposal are queued now and sent at the next
        scheduling round, or with the application's first write if that
        comes first: then both share one packet."""
        self._lazy_negotiator = negotiator
        self._send_stream_data(negotiator.initial_bytes())
        self._connection.transmit_soon()

    def hold_for_first_write(self, data: bytes) -> None:
        """Send ``data`` with the application's first write, or with its FIN,
        not before: the listener's multistream answer to a dialer that sent
        its request without waiting for it then shares the reply's packet
        however long the handler takes. Dropped if the stream is reset."""
        self._held += data

    def _release_held(self) -> bytes:
        held, self._held = self._held, b""
        if held:
            metrics.BYTES_SENT.inc(len(held))
        return held

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Up to ``max_bytes`` bytes; ``b""`` once the peer has finished sending."""
        if self._lazy_negotiator is not None:
            await self._finish_lazy_negotiation()
        return await self._receive_buffered(max_bytes)

    async def _finish_lazy_negotiation(self) -> None:
        negotiator = self._lazy_negotiator
        while negotiator.result is None:
            data = await self._receive_buffered(None)
            if not data:
                raise NegotiationError(f"{self.remote_peer} closed the stream during protocol negotiation")
            # A single-proposal dialer never has anything to answer.
            negotiator.receive_data(data)
        self._lazy_negotiator = None
        self.unread(negotiator.result.leftover)

    async def _receive_buffered(self, max_bytes: int | None) -> bytes:
        while True:
            if self._receive_buffer:
                if max_bytes is None or max_bytes >= len(self._receive_buffer):
                    data = bytes(self._receive_buffer)
                    self._receive_buffer.clear()
                else:
                    data = bytes(self._receive_buffer[:max_bytes])
                    del self._receive_buffer[:max_bytes]
                self._connection._consumed(self.stream_id, len(data))
                return data
            if self._reset_error is not None:
                raise fresh(self._reset_error)
            if self._receive_eof:
                await trio.lowlevel.checkpoint()
                return b""
            if self._connection.closed:
                raise ConnectionClosed(self._connection.close_reason)
            self._data_arrived = trio.Event()
            await self._data_arrived.wait()

    # -- sending ------------------------------------------------------------

    async def send_all(self, data: bytes, *, eof: bool = False) -> None:
        """Queue ``data``, waiting while the peer's credit and our buffers are full.

        With ``eof``, finish sending as :meth:`send_eof` does, in the packet
        that carries the last of ``data``. Raises WriteStalled (after
        resetting the stream) if no byte could be queued for
        ``write_stall_timeout`` seconds.
        """
        view = memoryview(data)
        connection = self._connection
        # When a write last made progress; set once one has to wait.
        progress_at: float | None = None
        while True:
            if self._reset_error is not None or self._send_stopped is not None:
                raise fresh(self._reset_error or self._send_stopped)
            if self._send_eof:
                raise StreamReset("cannot send after send_eof")
            if connection.closed:
                raise ConnectionClosed(connection.close_reason)
            room = connection._send_room(self.stream_id)
            if room > 0:
                if self._held:
                    self._send_stream_data(self._release_held())
                chunk = view[: min(room, WRITE_SLICE)]
                view = view[len(chunk) :]
                finishing = eof and not view
                # No copy here: aioquic copies what it is given into its buffer.
                self._send_stream_data(chunk, end_stream=finishing)
                self._send_eof = self._send_eof or finishing
                metrics.BYTES_SENT.inc(len(chunk))
                if view or not connection.transmit_deferred:
                    connection.transmit()
                else:
                    # The endpoint transmits for this connection once woken
                    # readers have had their turn: what else they write then
                    # (negotiation and reply, reply and ACK) shares the packet.
                    connection.needs_transmit = connection.answered = True
                if not view:
                    # Not a full checkpoint: the data is already on the wire and
                    # yielding here would add a scheduling round to every reply.
                    await trio.lowlevel.checkpoint_if_cancelled()
                    return
                progress_at = None
            elif self.write_stall_timeout is None:
                await connection._wait_for_send_room()
            else:
                if progress_at is None:
                    progress_at = trio.current_time()
                with trio.move_on_at(progress_at + self.write_stall_timeout):
                    await connection._wait_for_send_room()
                if trio.current_time() >= progress_at + self.write_stall_timeout:
                    log.info(
                        "reset a stream whose writes stalled",
                        extra={"fields": {"peer_id": str(self.remote_peer), "protocol": self.protocol,
                                          "stream_id": self.stream_id, "stalled_s": self.write_stall_timeout}},
                    )
                    await self.reset(STREAM_ERROR_LIMIT)
                    raise WriteStalled(f"no write progress for {self.write_stall_timeout:g} s (peer grants no credit)")

    def _send_stream_data(self, data: bytes | memoryview, end_stream: bool = False) -> None:
        try:
            self._connection.quic.send_stream_data(self.stream_id, data, end_stream=end_stream)
        except RuntimeError as exc:
            # aioquic's sender is reset (a STOP_SENDING we have not seen as an
            # event yet): the peer stopped our sending.
            self._on_send_stopped(StreamReset(f"stream reset by peer ({exc})"))
            raise fresh(self._send_stopped) from None

    async def send_eof(self) -> None:
        """Finish our side of the stream (QUIC FIN); the peer sees end of data."""
        if self._send_eof or self._reset_error is not None or self._send_stopped is not None \
                or self._connection.closed:
            await trio.lowlevel.checkpoint()
            return
        self._send_eof = True
        self._send_stream_data(self._release_held(), end_stream=True)
        self._connection.transmit()
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        """Finish sending and stop reading: a graceful close of both halves."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        await self.send_eof()
        self._close_locally(stop_reading=not self._receive_eof)

    async def reset(self, error_code: int = STREAM_ERROR_RESET) -> None:
        """Abort both directions at once.

        Also after the peer reset the stream: only closing it here frees its
        slot in the connection's stream limit.
        """
        self.reset_now(error_code)
        await trio.lowlevel.checkpoint()

    def reset_now(self, error_code: int = STREAM_ERROR_RESET) -> None:
        """:meth:`reset` without yielding, for callers that cannot await."""
        if not self._closed and not self._connection.closed:
            if not self._send_eof:
                try:
                    self._connection.quic.reset_stream(self.stream_id, error_code)
                except ValueError:
                    pass  # aioquic refuses when the send side is already reset
            self._send_eof = True
            self._close_locally(stop_reading=not self._receive_eof, error_code=error_code)
        self._reset_error = self._reset_error or StreamReset("stream was reset locally")

    def _close_locally(self, stop_reading: bool, error_code: int = STREAM_ERROR_RESET) -> None:
        self._closed = True
        connection = self._connection
        if stop_reading and not connection.closed:
            try:
                connection.quic.stop_stream(self.stream_id, error_code)
            except ValueError:
                pass  # aioquic refuses when the stream is already gone
        self._receive_buffer.clear()
        self._held = b""
        connection._forget_stream(self.stream_id)
        connection.transmit()


NewStreamCallback = Callable[[QuicStream], None]


class QuicConnectionDriver:
    """Drives one :class:`Libp2pQuicConnection` over an endpoint."""

    def __init__(
        self,
        endpoint: "QuicEndpoint",
        quic: Libp2pQuicConnection,
        remote_addr: tuple,
        *,
        is_client: bool,
        on_new_stream: NewStreamCallback,
        on_closed: Callable[["QuicConnectionDriver"], None],
        max_streams: int,
    ):
        self.endpoint = endpoint
        self.quic = quic
        self.remote_addr = remote_addr
        self.is_client = is_client
        # Called after either side's address changed (migration, NAT
        # rebinding), and when large datagrams stopped getting through.
        self.on_path_changed: list[Callable[["QuicConnectionDriver"], None]] = []
        self.on_datagram_size_reduced: list[Callable[["QuicConnectionDriver"], None]] = []
        self.path_changes = 0
        self._on_new_stream = on_new_stream
        self._on_closed = on_closed
        # Per direction: the peer's by QUIC's stream limit (which we
        # advertise), ours by raising ResourceLimitError.
        self._max_streams = max_streams
        quic.limit_incoming_streams(max_streams)
        self._streams: dict[int, QuicStream] = {}
        self._inbound_streams = 0
        self.handler_write_stall_timeout: float | None = HANDLER_WRITE_STALL_TIMEOUT
        # Set by incoming datagrams, cleared by transmit(): lets the endpoint
        # skip connections whose reader already answered.
        self.needs_transmit = False
        # Whether the last datagrams woke a stream reader (which may answer).
        self.readers_woken = False
        # Whether the last datagrams opened streams (whose handlers may
        # answer twice: multistream, then the reply).
        self.new_streams = False
        # Set by the endpoint on such a connection while woken readers have
        # their turn: a write then leaves the transmit to the endpoint (and
        # sets ``answered``).
        self.transmit_deferred = False
        self.answered = False
        self.handshake_complete = trio.Event()
        # Client: set once the peer's session ticket arrived (after the
        # handshake), so that a later dial can resume and send early data.
        self.session_ticket_received = trio.Event()
        # Set once the datagram size has been settled (probed or not).
        self.probing_done = trio.Event()
        self.closed_event = trio.Event()
        # Set when the handshake completes or the connection closes first.
        self._handshake_settled = trio.Event()
        self.closed = False
        self.close_reason = "connection closed"
        self.handshake_error: Exception | None = None
        self._send_room_changed = trio.Event()
        self._writers_waiting = 0
        self._writer_began_waiting = trio.Event()
        self._timer_scope: trio.CancelScope | None = None
        self._timer_at = math.inf
        self._ping_uid = 0
        self._probe_callbacks: dict[int, Callable[[bool], None]] = {}
        self._last_activity = trio.current_time()
        self._last_stream_activity = self._last_activity
        self.opened_at = self._last_activity
        self.resumed = False
        self.remote_peer_id: PeerId | None = None
        self.early_data_accepted = False
        self.remote_multiaddr = ""
        self.user_data: dict = {}

    # -- time and transmission ----------------------------------------------

    def transmit(self) -> None:
        """Send whatever the state machine has ready and re-arm its timer."""
        self.needs_transmit = False
        quic = self.quic
        now = trio.current_time()
        datagrams = quic.datagrams_to_send(now)
        if datagrams:
            addr = datagrams[-1][1]
            if len(datagrams) == 1:
                self.endpoint.send_datagram(datagrams[0][0], addr)
            elif all(to == addr for _, to in datagrams):
                self.endpoint.send_datagrams([data for data, _ in datagrams], addr)
            else:
                for data, to in datagrams:
                    self.endpoint.send_datagram(data, to)
            if addr != self.remote_addr:
                self._on_path_changed(addr)
            # A reply usually follows what we send: poll for it a little while
            # (longer for handshake flights) rather than pay a wake-up.
            endpoint = self.endpoint
            spin = endpoint.spin_seconds if self.handshake_complete.is_set() else endpoint.handshake_spin_seconds
            endpoint.spin_until = max(endpoint.spin_until, now + spin)
        timer = quic.get_timer()
        self._timer_at = timer if timer is not None else math.inf
        scope = self._timer_scope
        if scope is not None and scope.deadline != self._timer_at:
            scope.deadline = self._timer_at
        if quic.is_terminated and not self.closed:
            self._mark_closed(self.close_reason)

    def transmit_soon(self) -> None:
        """Send what is queued at the next scheduling round (by the timer
        task), unless something transmits before: what the caller queues
        meanwhile goes in the same packets."""
        self.needs_transmit = True
        if self._timer_scope is not None and not self.transmit_deferred:
            self._timer_scope.deadline = -math.inf

    async def run_timers(self) -> None:
        """Fire the state machine's timers, send what :meth:`transmit_soon`
        left queued, and keep the connection alive."""
        while not self.closed:
            if self.needs_transmit and not self.transmit_deferred:
                self.transmit()
            with trio.CancelScope(deadline=self._timer_at) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._timer_scope = None
            if self.closed:
                return
            now = trio.current_time()
            if now >= self._timer_at:
                self.quic.handle_timer(now)
                self._process_events()
                self.transmit()

    async def run_keepalive(self, idle_timeout: float, idle_close_after: float) -> None:
        """PING when quiet for half the effective QUIC idle timeout, so that
        neither side's idle timeout ends a connection in use (quic-go does the
        same); close it once it has carried no stream for ``idle_close_after``.

        The effective timeout is the smaller of ours (``idle_timeout``) and
        the one the peer advertised (RFC 9000 §10.1): js-libp2p advertises
        10 s, and a peer may advertise less. Pinging more often than needed
        would cost every idle connection CPU: a node with thousands of them
        spent a good part of a core on keepalives at 5 s.
        """
        interval = min(idle_timeout, self.quic.effective_idle_timeout) / 2
        while not self.closed:
            # Wake when the connection has been quiet for ``interval`` (not
            # just every ``interval``, which could let it go silent for two),
            # or when it may have been without streams for long enough.
            # While streams are open, the earliest the connection can be
            # idle long enough is ``idle_close_after`` from now.
            since = self._last_stream_activity if not self._streams else trio.current_time()
            wake_at = min(self._last_activity + interval, since + idle_close_after)
            # Ends at once when the connection closes: asleep, this task would
            # hold the closed connection (all of its state) until wake_at.
            with trio.move_on_at(max(wake_at, trio.current_time() + MIN_KEEPALIVE_SLEEP)):
                await self.closed_event.wait()
            if self.closed:
                return
            now = trio.current_time()
            if not self._streams and now - self._last_stream_activity >= idle_close_after:
                await self.aclose("idle")
                return
            if now - self._last_activity >= interval:
                self._ping_uid += 1
                self.quic.send_ping(self._ping_uid)
                self.transmit()
                self._last_activity = now  # the next ping is due an interval after this one

    def _on_path_changed(self, addr: tuple) -> None:
        """Either side moved (QUIC migration): we now send to ``addr``.

        The new path's MTU is unknown, so the datagram size falls back to
        QUIC's base until probed again.
        """
        self.remote_addr = addr
        self.remote_multiaddr = sockaddr_to_multiaddr(addr)
        self.path_changes += 1
        self.quic.reset_datagram_size()
        for callback in self.on_path_changed:
            callback(self)

    def move_to(self, endpoint: "QuicEndpoint") -> None:
        """Carry on over ``endpoint`` (another local socket): QUIC connection migration.

        The peer routes by connection ID, sees the new address and validates
        the path; we switch to a fresh connection ID so the two paths cannot
        be linked by an observer, and PING so the peer learns the path now.
        """
        cids = list(self.user_data.get("cids", ()))
        self.endpoint.unregister_connection(self)
        for cid in cids:
            endpoint.register_cid(cid, self)
        self.endpoint = endpoint
        self.quic.change_connection_id()
        self._ping_uid += 1
        self.quic.send_ping(self._ping_uid)
        self._on_path_changed(self.remote_addr)
        self.transmit()

    # -- input ---------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple, now: float) -> None:
        self.needs_transmit = True
        self.readers_woken = self.answered = False
        self._last_activity = now
        self.quic.receive_datagram(data, addr, now)
        self._process_events()

    def _process_events(self) -> None:
        quic = self.quic
        while True:
            event = quic.next_event()
            if event is None:
                break
            kind = type(event)
            if kind is events.StreamDataReceived:
                self._last_stream_activity = self._last_activity
                stream = self._streams.get(event.stream_id)
                if stream is None:
                    stream = self._accept_stream(event.stream_id)
                    if stream is None:
                        continue
                stream._on_data(event.data, event.end_stream)
            elif kind is events.StreamReset or kind is events.StopSendingReceived:
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    error = StreamReset(f"stream reset by peer (code {event.error_code})")
                    if kind is events.StreamReset:
                        stream._on_reset(error)
                    else:
                        stream._on_send_stopped(error)
                else:
                    # Loss or reordering let this overtake the stream's first
                    # data: the peer has abandoned the stream, so that data is
                    # late and must not start a handler (whose first write
                    # aioquic would refuse).
                    self.quic.abandon_stream(event.stream_id)
                if kind is events.StopSendingReceived or (stream is None and not quic.sending_ended(event.stream_id)):
                    # Reset our side too: QUIC frees the stream (and the
                    # peer's slot) only once both directions have ended. Not
                    # a side we closed with a FIN: its reply may still be in
                    # flight, and the peer reads it to the end.
                    try:
                        quic.reset_stream(event.stream_id, event.error_code)
                    except ValueError:
                        pass
            elif kind is events.PingAcknowledged:
                callback = self._probe_callbacks.pop(event.uid, None)
                if callback is not None:
                    callback(True)
            elif kind is events.HandshakeCompleted:
                self._on_handshake_completed(event)
            elif kind is events.ConnectionIdIssued:
                self.endpoint.register_cid(event.connection_id, self)
            elif kind is events.ConnectionIdRetired:
                self.endpoint.unregister_cid(event.connection_id)
            elif kind is events.ConnectionTerminated:
                self._on_terminated(event)
            elif kind is DatagramSizeReduced:
                log.debug("datagrams to %s above %d bytes stopped arriving", self.remote_multiaddr, event.size)
                for callback in self.on_datagram_size_reduced:
                    callback(self)
        if self._writers_waiting:
            self._wake_writers()

    async def wait_for_handshake(self, timeout: float) -> bool:
        """True once the handshake completed; False if it failed or timed out."""
        with trio.move_on_after(timeout):
            await self._handshake_settled.wait()
        return self.handshake_complete.is_set()

    def _on_handshake_completed(self, event: events.HandshakeCompleted) -> None:
        peer_id = self.quic.remote_peer_id
        if peer_id is None:
            # Cannot happen with our TLS hooks; refuse rather than trust.
            self.quic.close(error_code=0x100 + 40, reason_phrase="peer not authenticated")
            self.handshake_error = HandshakeError("peer was not authenticated")
            return
        self.remote_peer_id = peer_id
        self.resumed = event.session_resumed
        self.early_data_accepted = event.early_data_accepted
        self.handshake_complete.set()
        self._handshake_settled.set()

    def _on_terminated(self, event: events.ConnectionTerminated) -> None:
        error = self.quic.verification_error
        if is_refusal(event):
            reason = f"peer refused: {event.reason_phrase or 'connection refused'}"
            if not self.handshake_complete.is_set():
                self.handshake_error = PeerRefused(reason)
            self._mark_closed(reason)
            return
        if not self.handshake_complete.is_set():
            if isinstance(error, PeerIdMismatch):
                self.handshake_error = error
            elif error is not None:
                self.handshake_error = HandshakeError(f"handshake failed: {error}")
            else:
                reason = event.reason_phrase or f"error 0x{event.error_code:x}"
                self.handshake_error = HandshakeError(f"handshake failed: {reason}")
        self._mark_closed(event.reason_phrase or "connection closed by peer")

    def _mark_closed(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        log.debug(
            "connection closed",
            extra={"fields": {"peer_id": str(self.remote_peer_id), "remote_addr": self.remote_multiaddr,
                              "reason": reason}},
        )
        for stream in list(self._streams.values()):
            stream._on_reset(StreamReset(f"connection closed: {reason}"))
        metrics.STREAMS_OPEN.dec(len(self._streams))
        self._streams.clear()
        self._inbound_streams = 0
        for callback in self._probe_callbacks.values():
            callback(False)
        self._probe_callbacks.clear()
        self._wake_writers()
        if self._timer_scope is not None:
            self._timer_scope.cancel()
        self.closed_event.set()
        self._handshake_settled.set()
        self._on_closed(self)

    # -- streams ---------------------------------------------------------------

    def _is_local(self, stream_id: int) -> bool:
        # Bit 0 of a stream ID is set on server-initiated streams.
        return bool(stream_id & 1) == (not self.is_client)

    def _accept_stream(self, stream_id: int) -> QuicStream | None:
        if self.quic.is_abandoned(stream_id):
            return None  # data on a stream we closed already is simply late
        if stream_id & 2 or self._is_local(stream_id):
            # libp2p uses bidirectional streams only.
            self.quic.abandon_stream(stream_id)
            return None
        if self._inbound_streams >= self._max_streams:
            # Only a peer that ignores QUIC's stream limit gets here (aioquic
            # counts streams until both sides finished them, we until closed).
            self.quic.reset_stream(stream_id, STREAM_ERROR_LIMIT)
            self.quic.stop_stream(stream_id, STREAM_ERROR_LIMIT)
            self.quic.abandon_stream(stream_id)
            return None
        stream = QuicStream(self, stream_id)
        stream.write_stall_timeout = self.handler_write_stall_timeout
        if not self.handshake_complete.is_set() and self.quic.opened_in_early_data(stream_id):
            stream.early = True
            # Authenticated by the resumed ticket's PSK before the handshake ends.
            self.remote_peer_id = self.remote_peer_id or self.quic.early_peer_id
        self._streams[stream_id] = stream
        self.new_streams = True
        metrics.STREAMS_OPEN.inc()
        self._inbound_streams += 1
        self._on_new_stream(stream)
        return stream

    def open_stream(self) -> QuicStream:
        if self.closed:
            raise ConnectionClosed(self.close_reason)
        if len(self._streams) - self._inbound_streams >= self._max_streams:
            raise ResourceLimitError(f"connection already has {self._max_streams} open streams")
        stream_id = self.quic.get_next_available_stream_id()
        self._last_stream_activity = trio.current_time()
        stream = QuicStream(self, stream_id)
        stream.early = not self.handshake_complete.is_set()
        self._streams[stream_id] = stream
        metrics.STREAMS_OPEN.inc()
        return stream

    def _forget_stream(self, stream_id: int) -> None:
        if self._streams.pop(stream_id, None) is not None:
            metrics.STREAMS_OPEN.dec()
            if not self._is_local(stream_id):
                self._inbound_streams -= 1
        # Data that still arrives on this stream is late (see _accept_stream).
        self.quic.abandon_stream(stream_id)

    @property
    def writers_waiting(self) -> int:
        """Writers waiting for the peer's credit or for buffer room."""
        return self._writers_waiting

    async def wait_for_writers(self, count: int) -> None:
        """Until ``count`` writers at once wait for credit or buffer room."""
        while self._writers_waiting < count:
            self._writer_began_waiting = trio.Event()
            await self._writer_began_waiting.wait()

    @property
    def send_buffered(self) -> int:
        """Bytes all streams hold to send (unsent or unacknowledged)."""
        return self.quic.send_buffered_total()

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    @property
    def last_stream_activity(self) -> float:
        """When a stream last opened or closed here (now, while any is open)."""
        return trio.current_time() if self._streams else self._last_stream_activity

    def _consumed(self, stream_id: int, count: int) -> None:
        quic = self.quic
        quic.consume(stream_id, count)
        # Transmit only when a window update is due (a quarter window read).
        if quic.window_update_due(stream_id):
            self.transmit()

    def _send_room(self, stream_id: int) -> int:
        """Bytes a writer may add to a stream's send buffer now."""
        buffered, unsent, credit, connection_buffered = self.quic.send_buffer_state(stream_id)
        ceiling = CONNECTION_SEND_BUFFER + (CONNECTION_SEND_RESERVE if buffered < SMALL_WRITE else 0)
        return min(STREAM_SEND_BUFFER - buffered, credit + SEND_AHEAD_OF_CREDIT - unsent, ceiling - connection_buffered)

    async def _wait_for_send_room(self) -> None:
        self._writers_waiting += 1
        self._writer_began_waiting.set()
        try:
            event = self._send_room_changed
            await event.wait()
        finally:
            self._writers_waiting -= 1

    def _wake_writers(self) -> None:
        self._send_room_changed.set()
        self._send_room_changed = trio.Event()

    # -- probes and close ------------------------------------------------------

    def send_probe(self, size: int, on_result: Callable[[bool], None]) -> None:
        """Send a padded datagram-size probe; ``on_result(acknowledged)`` later."""
        self._ping_uid += 1
        uid = self._ping_uid
        self._probe_callbacks[uid] = lambda acked: on_result(acked and self.quic.confirm_probe(uid))
        for data, addr in self.quic.datagrams_for_probe(size, uid, trio.current_time()):
            if not self.endpoint.send_datagram(data, addr):
                # The kernel refused the size outright (EMSGSIZE): not this path.
                self._probe_callbacks.pop(uid, None)
                on_result(False)
                return
        self.transmit()

    async def answers_ping(self, timeout: float) -> bool:
        """Whether the peer acknowledges a PING within ``timeout`` seconds (a peer that crashed never does)."""
        if self.closed:
            return False
        answered = trio.Event()
        results: list[bool] = []

        def on_result(acknowledged: bool) -> None:
            results.append(acknowledged)
            answered.set()

        self._ping_uid += 1
        uid = self._ping_uid
        self._probe_callbacks[uid] = on_result
        self.quic.send_ping(uid)
        self.transmit()
        with trio.move_on_after(timeout):
            await answered.wait()
        self._probe_callbacks.pop(uid, None)
        return results == [True]

    def is_viable(self) -> bool:
        """False for a server connection whose first packet never parsed."""
        return self.quic.has_network_path

    def abandon(self, reason: str) -> None:
        """Drop the connection without sending anything."""
        self._mark_closed(reason)

    def close(self, reason: str = "closed", error_code: int = 0) -> None:
        if self.closed:
            return
        if not self.quic.started:
            self.abandon(reason)  # it never sent anything: nobody to tell
            return
        if self.needs_transmit:
            # What is queued goes first (the client's Finished, a last
            # reply): a closing connection sends nothing but its close.
            self.transmit()
        self.quic.close(error_code=error_code, reason_phrase=reason)
        self.transmit()
        self.close_reason = reason

    def refuse(self, reason: str) -> None:
        """Close with CONNECTION_REFUSED: the peer reports "peer refused: <reason>"."""
        if self.closed:
            return
        refuse(self.quic, reason)
        self.transmit()
        self.close_reason = f"refused: {reason}"

    async def aclose(self, reason: str = "closed") -> None:
        self.close(reason)
        with trio.move_on_after(1):
            await self.closed_event.wait()
        if not self.closed:
            self._mark_closed(reason)
