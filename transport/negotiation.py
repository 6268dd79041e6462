"""Stream negotiation: multistream-select on every new stream, both ways.

Outbound, :func:`open_negotiated_stream` agrees on one of the caller's
protocols. Inbound, :class:`StreamDispatcher` holds the protocol handlers,
bounds how many run at once, negotiates each stream and runs its handler.
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

import trio

from . import metrics
from .connection import STREAM_ERROR_LIMIT, STREAM_ERROR_PROTOCOL, QuicConnectionDriver, QuicStream
from .errors import ConnectionClosed, HandshakeError, NegotiationError, ProtocolError, StreamReset, TransportError, fresh
from .identity import PeerId
from .multistream import Negotiator

log = logging.getLogger("hypermesh.transport")

StreamHandler = Callable[[QuicStream], Awaitable[None]]


def peer_label(driver: QuicConnectionDriver) -> str:
    return f"{driver.remote_peer_id or '?'} at {driver.remote_multiaddr}"


async def open_negotiated_stream(
    driver: QuicConnectionDriver, protocols: list[str], timeout: float, early: bool = False
) -> QuicStream:
    """Open a stream on ``driver`` and agree on one of ``protocols``.

    Before the handshake completes (a dial that sends early data), the
    stream goes out in 0-RTT only if ``early`` (what it will carry is
    replay-safe); otherwise it waits for the handshake.
    """
    if not driver.handshake_complete.is_set() and not early:
        if not await driver.wait_for_handshake(timeout):
            if driver.handshake_error is not None:
                raise fresh(driver.handshake_error)
            raise HandshakeError(f"handshake with {peer_label(driver)} did not complete")
    stream = driver.open_stream()
    negotiator = Negotiator.dialer(protocols)
    if len(protocols) == 1:
        # One proposal: nothing to choose, so skip the round trip (the
        # proposal shares a packet with the first write, if it comes at
        # once) and let the first read take the listener's confirmation.
        stream.protocol = protocols[0]
        stream.negotiate_lazily(negotiator)
        await trio.lowlevel.checkpoint_if_cancelled()
        metrics.STREAMS_TOTAL.labels("outbound", stream.protocol).inc()
        return stream
    try:
        with trio.fail_after(timeout):
            await stream.send_all(negotiator.initial_bytes())
            while negotiator.result is None:
                data = await stream.receive_some()
                if not data:
                    raise NegotiationError(f"{peer_label(driver)} closed the stream during negotiation")
                reply = negotiator.receive_data(data)
                if reply:
                    await stream.send_all(reply)
    except trio.TooSlowError:
        await stream.reset(STREAM_ERROR_PROTOCOL)
        raise NegotiationError(f"protocol negotiation with {peer_label(driver)} timed out") from None
    except (ProtocolError, StreamReset, ConnectionClosed):
        await stream.reset(STREAM_ERROR_PROTOCOL)
        raise
    stream.protocol = negotiator.result.protocol
    stream.unread(negotiator.result.leftover)
    metrics.STREAMS_TOTAL.labels("outbound", stream.protocol).inc()
    return stream


class StreamDispatcher:
    """Serves inbound streams: negotiation, then the agreed protocol's handler."""

    def __init__(
        self, max_handlers: int, negotiation_timeout: float, spawn: Callable[..., None]
    ) -> None:
        self._handlers: dict[str, StreamHandler] = {}
        # Protocols whose streams may come in 0-RTT: their handlers act on
        # replay-safe requests only until the handshake completes.
        self._early_data_protocols: set[str] = set()
        # Those of them whose every request is replay-safe (sent early by default).
        self._replay_safe_protocols: set[str] = set()
        self._max_handlers = max_handlers
        self._negotiation_timeout = negotiation_timeout
        self._spawn = spawn
        self._running = 0
        # Called with (peer, reason) when a peer's stream breaks the protocol
        # (malformed negotiation, or a handler raising ProtocolError).
        self.on_misbehaviour: list[Callable[[PeerId, str], None]] = []

    def set_handler(
        self, protocol: str, handler: StreamHandler, early_data: bool = False, replay_safe: bool = True
    ) -> None:
        self._handlers[protocol] = handler
        self._early_data_protocols.discard(protocol)
        self._replay_safe_protocols.discard(protocol)
        if early_data:
            self._early_data_protocols.add(protocol)
            if replay_safe:
                self._replay_safe_protocols.add(protocol)

    def remove_handler(self, protocol: str) -> None:
        self._handlers.pop(protocol, None)
        self._early_data_protocols.discard(protocol)
        self._replay_safe_protocols.discard(protocol)

    @property
    def protocols(self) -> list[str]:
        return sorted(self._handlers)

    @property
    def early_data_protocols(self) -> frozenset[str]:
        """Protocols served on streams opened in 0-RTT."""
        return frozenset(self._early_data_protocols)

    @property
    def replay_safe_protocols(self) -> frozenset[str]:
        """Early-data protocols whose every request is replay-safe."""
        return frozenset(self._replay_safe_protocols)

    def on_new_stream(self, stream: QuicStream) -> None:
        if self._running >= self._max_handlers:
            metrics.STREAMS_REFUSED.labels("handler_limit").inc()
            stream.reset_now(STREAM_ERROR_LIMIT)
            return
        self._running += 1
        self._spawn(self._serve, stream)

    async def _serve(self, stream: QuicStream) -> None:
        try:
            negotiator = Negotiator.listener(self._handlers)
            try:
                with trio.fail_after(self._negotiation_timeout):
                    # Streams may arrive with the client's Finished: serve them
                    # once the peer is authenticated. Streams opened in 0-RTT
                    # are authenticated by the resumed ticket; their protocol
                    # is checked below, before any handler runs.
                    if not stream.early and not stream.connection.handshake_complete.is_set():
                        await stream.connection.handshake_complete.wait()
                    # Our header goes out with our first answer, in one
                    # packet: every dialer sends its header without waiting
                    # for ours, so there is nothing to wait for.
                    header = negotiator.initial_bytes()
                    while negotiator.result is None:
                        data = await stream.receive_some()
                        if not data:
                            await stream.aclose()
                            return
                        reply = header + negotiator.receive_data(data)
                        if reply:
                            header = b""
                            if negotiator.result is not None and negotiator.result.leftover:
                                # The dialer sent its request after the proposal, so it
                                # is not waiting for our answer: that goes in one packet
                                # with the handler's reply, however long it takes.
                                stream.hold_for_first_write(reply)
                            else:
                                await stream.send_all(reply)
            except (trio.TooSlowError, ProtocolError) as exc:
                metrics.STREAMS_REFUSED.labels("negotiation").inc()
                log.debug("stream from %s refused: %s", stream.remote_peer, exc)
                if isinstance(exc, ProtocolError):
                    self._report(stream, f"negotiation: {exc}")
                await stream.reset(STREAM_ERROR_PROTOCOL)
                return
            stream.protocol = negotiator.result.protocol
            stream.unread(negotiator.result.leftover)
            if stream.early and stream.protocol not in self._early_data_protocols:
                # 0-RTT data can be replayed: only protocols whose handlers
                # act on nothing but replay-safe requests there may use it.
                metrics.STREAMS_REFUSED.labels("early_data").inc()
                log.debug("%s in early data from %s refused", stream.protocol, stream.remote_peer)
                await stream.reset(STREAM_ERROR_PROTOCOL)
                return
            metrics.STREAMS_TOTAL.labels("inbound", stream.protocol).inc()
            handler = self._handlers.get(stream.protocol)
            if handler is None:
                await stream.reset(STREAM_ERROR_PROTOCOL)
                return
            try:
                await handler(stream)
            except (TransportError, ConnectionClosed) as exc:
                log.debug("%s handler for %s ended: %s", stream.protocol, stream.remote_peer, exc)
                if isinstance(exc, ProtocolError):
                    self._report(stream, f"{stream.protocol}: {exc}")
                await stream.reset(STREAM_ERROR_PROTOCOL)
                return
            except Exception:
                log.exception("%s handler failed for %s", stream.protocol, stream.remote_peer)
                await stream.reset(STREAM_ERROR_PROTOCOL)
                return
            await stream.aclose()
        except (StreamReset, ConnectionClosed):
            await stream.reset()  # frees the stream's slot; a no-op once closed
        finally:
            self._running -= 1

    def _report(self, stream: QuicStream, reason: str) -> None:
        metrics.PEER_VIOLATIONS.labels("stream").inc()
        for listener in self.on_misbehaviour:
            listener(stream.remote_peer, reason)
