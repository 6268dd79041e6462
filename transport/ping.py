"""libp2p ping, ``/ipfs/ping/1.0.0``: 32 random bytes, echoed back, repeatedly."""

from __future__ import annotations

import os

import trio

from .errors import ProtocolError, TransportError
from .framing import BufferedReader, FramingError

PROTOCOL = "/ipfs/ping/1.0.0"
PAYLOAD_SIZE = 32
# A ping stream is cheap, but an idle one still holds a slot.
IDLE_TIMEOUT = 60.0


async def handle_ping(stream) -> None:
    reader = BufferedReader(stream)
    # One cancel scope for the whole stream, its deadline pushed forward only
    # now and then: a scope per ping costs more than the echo itself.
    with trio.CancelScope(deadline=trio.current_time() + IDLE_TIMEOUT) as idle:
        while True:
            try:
                payload = await reader.read_exactly(PAYLOAD_SIZE)
            except (TransportError, FramingError):
                return  # peer finished (or broke off) mid-ping: nothing to echo
            await stream.send_all(payload)
            now = trio.current_time()
            if idle.deadline - now < IDLE_TIMEOUT / 2:
                idle.deadline = now + IDLE_TIMEOUT


class Pinger:
    """Pings over one stream; each :meth:`ping` returns the round trip in seconds."""

    def __init__(self, stream):
        self.stream = stream
        self._reader = BufferedReader(stream)

    async def ping(self) -> float:
        payload = os.urandom(PAYLOAD_SIZE)
        started = trio.current_time()
        await self.stream.send_all(payload)
        echoed = await self._reader.read_exactly(PAYLOAD_SIZE)
        elapsed = trio.current_time() - started
        if echoed != payload:
            raise ProtocolError("ping reply does not match the payload")
        return elapsed

    async def aclose(self) -> None:
        await self.stream.aclose()


async def ping(host, peer_id, count: int = 1) -> list[float]:
    stream = await host.new_stream(peer_id, [PROTOCOL])
    pinger = Pinger(stream)
    try:
        return [await pinger.ping() for _ in range(count)]
    finally:
        await pinger.aclose()


def install(host) -> None:
    host.set_stream_handler(PROTOCOL, handle_ping, early_data=True)  # an echo: replaying it changes nothing
