"""Reusable request streams, one idle stream per peer.

Opening a QUIC stream, negotiating ``/ipfs/kad/1.0.0`` on it and closing it
costs about three times the CPU of the request and answer it carries, so the
driver keeps the stream after an answer and sends the next request to that
peer on it, as go-libp2p-kad-dht's message sender does. Servers may end a
stream whenever they like (ours after MAX_REQUESTS_PER_STREAM requests or 30 s
idle; some implementations after every answer), so a request that fails on
a reused stream is retried once on a new one: every request that expects an
answer is idempotent.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import trio

from hypermesh.transport.errors import TransportError
from hypermesh.transport.framing import BufferedReader
from hypermesh.transport.identity import PeerId

# Requests sent on one stream before it is retired: below the per-stream cap
# of our servers (MAX_REQUESTS_PER_STREAM = 100) and of go-libp2p-kad-dht.
MAX_REQUESTS_PER_REUSED_STREAM = 64
# A stream idle this long is closed rather than reused: well under our
# servers' 30 s inbound idle timeout, so we rarely reuse one being closed.
MAX_IDLE_SECONDS = 10.0
# Peers with an idle stream kept, least recently used dropped first. Each
# idle stream holds one of the peer's stream slots and ~1 KB here.
MAX_IDLE_STREAMS = 512


@dataclass(slots=True)
class PooledStream:
    stream: object
    reader: BufferedReader
    requests: int = 0
    idle_since: float = 0.0
    reused: bool = False


class StreamPool:
    """Idle request streams by peer. Not thread-safe; one trio task at a time."""

    def __init__(self, open_stream, *, max_idle: int = MAX_IDLE_STREAMS, max_idle_seconds: float = MAX_IDLE_SECONDS):
        self._open_stream = open_stream  # async (peer_id, replay_safe) -> stream
        self._idle: OrderedDict[PeerId, PooledStream] = OrderedDict()
        self.max_idle = max_idle
        self.max_idle_seconds = max_idle_seconds
        self.reused = 0
        self.opened = 0

    async def take(self, peer: PeerId, replay_safe: bool = False) -> PooledStream:
        """An idle stream to ``peer`` if a fresh one is kept, else a new one.

        ``replay_safe``: what will be sent on it is replay-safe, so it may go
        in 0-RTT; otherwise an idle stream still in 0-RTT stays idle and a new
        one (which waits for the handshake) is opened.
        """
        pooled = self._idle.get(peer)
        if pooled is not None and (replay_safe or not in_early_data(pooled.stream)):
            del self._idle[peer]
            if trio.current_time() - pooled.idle_since <= self.max_idle_seconds:
                pooled.reused = True
                self.reused += 1
                return pooled
            await close_quietly(pooled.stream)
        stream = await self._open_stream(peer, replay_safe)
        self.opened += 1
        return PooledStream(stream, BufferedReader(stream))

    async def give_back(self, peer: PeerId, pooled: PooledStream, requests: int = 1) -> None:
        """Keep ``pooled``, which carried ``requests`` more, for the next request to ``peer`` (or close it)."""
        pooled.requests += requests
        pooled.reused = False
        if pooled.requests >= MAX_REQUESTS_PER_REUSED_STREAM or peer in self._idle:
            await close_quietly(pooled.stream)
            return
        pooled.idle_since = trio.current_time()
        self._idle[peer] = pooled
        while len(self._idle) > self.max_idle:
            _, oldest = self._idle.popitem(last=False)
            await close_quietly(oldest.stream)

    async def close_stale(self) -> None:
        """Close the streams idle for longer than ``max_idle_seconds``."""
        now = trio.current_time()
        # Taken out of the pool before the first await: requests running
        # meanwhile must not be handed a stream that is being closed.
        stale = [p for p, pooled in self._idle.items() if now - pooled.idle_since > self.max_idle_seconds]
        for pooled in [self._idle.pop(peer) for peer in stale]:
            await close_quietly(pooled.stream)

    def __len__(self) -> int:
        return len(self._idle)


def in_early_data(stream) -> bool:
    """Whether ``stream`` is still in 0-RTT: opened in early data, its handshake not yet
    complete (what we write now goes early; what the peer sent may be a replay)."""
    return stream.early and not stream.handshake_confirmed


async def close_quietly(stream) -> None:
    await _quietly(stream.aclose)


async def reset_quietly(stream) -> None:
    await _quietly(stream.reset)


async def _quietly(end_stream) -> None:
    # Shielded and bounded: we may be here because our own deadline fired.
    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
        try:
            await end_stream()
        except TransportError:
            pass
