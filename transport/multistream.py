"""multistream-select 1.0 (libp2p/specs connections/README.md#multistream-select).

Sans-IO: :class:`Negotiator` is fed the bytes that arrive and returns the
bytes to send; once it reports the agreed protocol, any bytes that came after
the negotiation belong to that protocol and are handed back as ``leftover``.

Each message is ``uvarint(len) || text || "\\n"``. The dialer sends the
header and its first proposal together (it may also pipeline data, as js-
and go-libp2p do); the listener answers with the header and the echo of a
protocol it supports, or ``na``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import NegotiationError, ProtocolError
from .varint import VarintError, decode_uvarint, encode_uvarint

HEADER = "/multistream/1.0.0"
NOT_AVAILABLE = "na"
LIST = "ls"
# Protocol IDs are short paths; go-multistream also caps messages at 1 KiB.
# A larger length prefix is a misbehaving peer and ends the stream at once.
MAX_MESSAGE_LENGTH = 1024
# A dialer that keeps proposing unsupported protocols is cut off.
MAX_PROPOSALS = 32


def encode_message(text: str) -> bytes:
    payload = text.encode("utf-8") + b"\n"
    if len(payload) > MAX_MESSAGE_LENGTH:
        raise ValueError(f"multistream message longer than {MAX_MESSAGE_LENGTH} bytes")
    return encode_uvarint(len(payload)) + payload


@dataclass
class NegotiationResult:
    protocol: str
    # Bytes after the negotiation, belonging to the agreed protocol.
    leftover: bytes = b""


@dataclass
class Negotiator:
    """One side of a multistream-select exchange.

    Dialer: ``Negotiator.dialer([...])``, send :meth:`initial_bytes`, then feed
    replies to :meth:`receive_data`. Listener: ``Negotiator.listener({...})``,
    send :meth:`initial_bytes` (the header) and feed proposals.
    """

    is_dialer: bool
    protocols: list[str]
    _buffer: bytearray = field(default_factory=bytearray)
    _header_seen: bool = False
    _proposal_index: int = 0
    _proposals_seen: int = 0
    result: NegotiationResult | None = None

    @classmethod
    def dialer(cls, protocols: list[str]) -> "Negotiator":
        if not protocols:
            raise ValueError("no protocols to propose")
        for protocol in protocols:
            encode_message(protocol)  # validates the length
        return cls(is_dialer=True, protocols=list(protocols))

    @classmethod
    def listener(cls, protocols) -> "Negotiator":
        return cls(is_dialer=False, protocols=list(protocols))

    def initial_bytes(self) -> bytes:
        if self.is_dialer:
            return encode_message(HEADER) + encode_message(self.protocols[0])
        return encode_message(HEADER)

    def receive_data(self, data: bytes) -> bytes:
        """Feed received bytes; returns bytes to send. Check :attr:`result` after."""
        if self.result is not None:
            raise ProtocolError("negotiation already finished")
        self._buffer += data
        out = bytearray()
        while self.result is None:
            messages = self._take_one_message()
            if messages is None:
                break
            out += self._handle(messages)
        if self.result is not None:
            self.result.leftover = bytes(self._buffer)
            self._buffer.clear()
        return bytes(out)

    def _take_one_message(self) -> str | None:
        # Decode one message at a time: bytes after the agreed protocol's
        # echo are application data and must not be parsed as multistream.
        try:
            decoded = decode_uvarint(self._buffer)
        except VarintError as exc:
            raise ProtocolError(f"multistream: {exc}") from None
        if decoded is None:
            return None
        length, consumed = decoded
        if length > MAX_MESSAGE_LENGTH:
            raise ProtocolError(f"multistream message of {length} bytes exceeds {MAX_MESSAGE_LENGTH}")
        if length == 0:
            raise ProtocolError("empty multistream message")
        if len(self._buffer) < consumed + length:
            return None
        payload = bytes(self._buffer[consumed : consumed + length])
        del self._buffer[: consumed + length]
        if not payload.endswith(b"\n"):
            raise ProtocolError("multistream message does not end with a newline")
        try:
            return payload[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("multistream message is not UTF-8") from None

    def _handle(self, message: str) -> bytes:
        if not self._header_seen:
            if message != HEADER:
                raise ProtocolError(f"expected multistream header, got {message[:64]!r}")
            self._header_seen = True
            return b""
        if self.is_dialer:
            return self._dialer_handle(message)
        return self._listener_handle(message)

    def _dialer_handle(self, message: str) -> bytes:
        proposed = self.protocols[self._proposal_index]
        if message == proposed:
            self.result = NegotiationResult(proposed)
            return b""
        if message != NOT_AVAILABLE:
            raise ProtocolError(f"unexpected multistream reply {message[:64]!r} to {proposed!r}")
        self._proposal_index += 1
        if self._proposal_index >= len(self.protocols):
            raise NegotiationError(f"remote supports none of {', '.join(self.protocols)}")
        return encode_message(self.protocols[self._proposal_index])

    def _listener_handle(self, message: str) -> bytes:
        self._proposals_seen += 1
        if self._proposals_seen > MAX_PROPOSALS:
            raise NegotiationError(f"dialer made more than {MAX_PROPOSALS} proposals")
        if message in self.protocols:
            self.result = NegotiationResult(message)
            return encode_message(message)
        if message == LIST:
            listing = b"".join(encode_message(protocol) for protocol in self.protocols)
            return encode_uvarint(len(listing) + 1) + listing + b"\n"
        return encode_message(NOT_AVAILABLE)
