"""Varint length-prefixed messages over a stream (identify, kad, …).

Every reader takes an explicit ``max_size`` so that a peer cannot make us
buffer an arbitrarily large message.
"""

from __future__ import annotations

from typing import Protocol

from .varint import MAX_VARINT_BYTES, VarintError, decode_uvarint, encode_uvarint


class FramingError(Exception):
    """The peer sent a malformed or oversized frame, or closed mid-frame."""


class ByteStream(Protocol):
    async def send_all(self, data: bytes) -> None: ...

    async def receive_some(self, max_bytes: int | None = None) -> bytes: ...


class BufferedReader:
    """Reads exact byte counts and varint frames from a :class:`ByteStream`."""

    def __init__(self, stream: ByteStream):
        self._stream = stream
        self._buffer = bytearray()

    async def _fill(self, minimum: int) -> None:
        while len(self._buffer) < minimum:
            chunk = await self._stream.receive_some(max(minimum - len(self._buffer), 65536))
            if not chunk:
                raise FramingError("stream closed in the middle of a message")
            self._buffer += chunk

    async def read_exactly(self, count: int) -> bytes:
        await self._fill(count)
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    async def read_uvarint(self) -> int | None:
        """Next varint, or None on a clean end of stream before its first byte."""
        while True:
            try:
                decoded = decode_uvarint(self._buffer)
            except VarintError as exc:
                raise FramingError(str(exc)) from None
            if decoded is not None:
                value, consumed = decoded
                del self._buffer[:consumed]
                return value
            if len(self._buffer) >= MAX_VARINT_BYTES:
                raise FramingError("varint too long")
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                if self._buffer:
                    raise FramingError("stream closed in the middle of a varint")
                return None
            self._buffer += chunk

    async def read_frame(self, max_size: int) -> bytes | None:
        """Next length-prefixed message, or None on a clean end of stream."""
        length = await self.read_uvarint()
        if length is None:
            return None
        if length > max_size:
            raise FramingError(f"message of {length} bytes exceeds the limit of {max_size}")
        return await self.read_exactly(length)


def frame(message: bytes) -> bytes:
    return encode_uvarint(len(message)) + message


async def write_frame(stream: ByteStream, message: bytes, *, eof: bool = False) -> None:
    """Send one message; with ``eof`` (a QUIC stream), finish sending in the same packet."""
    if eof:
        await stream.send_all(frame(message), eof=True)
    else:
        await stream.send_all(frame(message))
