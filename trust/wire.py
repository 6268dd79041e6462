"""Wire codec of ``/hm/trust/1.0.0``: peers hand each other signed attestations.

One exchange per stream; each side sends one varint-framed message
(:mod:`hypermesh.transport.framing`)::

    push     = 0x01 ‖ count:u8 ‖ (length:u16be ‖ attestation)*count
    ask      = 0x02 ‖ subject peer ID multihash        "what do you know of this peer?"
    answer   = 0x03 ‖ accepted:u8 ‖ refused:u8         to a push
    reviews  = 0x01-shaped push                          to an ask

At most MAX_ATTESTATIONS per message, each at most MAX_ATTESTATION_SIZE,
so no message exceeds MAX_MESSAGE_BYTES. The codec checks shape and bounds
only; each attestation's signature and acceptability are checked by the
engine's side (:func:`decode_attestation`, :class:`AttestationGate`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hypermesh.transport.identity import IdentityError, PeerId

from .attestation import MAX_ATTESTATION_SIZE, MAX_PEER_ID_SIZE

PROTOCOL_ID = "/hm/trust/1.0.0"

KIND_PUSH = 0x01
KIND_ASK = 0x02
KIND_ANSWER = 0x03
# A node gossips its freshest reviews a few dozen at a time; more per stream
# would only let one peer queue more verification work at once.
MAX_ATTESTATIONS = 64
MAX_MESSAGE_BYTES = 2 + MAX_ATTESTATIONS * (2 + MAX_ATTESTATION_SIZE)
_LENGTH = struct.Struct(">H")


class TrustProtocolViolation(ValueError):
    """A peer sent a malformed trust message."""


@dataclass(frozen=True, slots=True)
class Push:
    attestations: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Ask:
    subject: PeerId


@dataclass(frozen=True, slots=True)
class Answer:
    accepted: int
    refused: int


def encode_push(attestations: list[bytes]) -> bytes:
    if len(attestations) > MAX_ATTESTATIONS:
        raise ValueError(f"at most {MAX_ATTESTATIONS} attestations per message")
    body = bytearray([KIND_PUSH, len(attestations)])
    for encoded in attestations:
        if len(encoded) > MAX_ATTESTATION_SIZE:
            raise ValueError("attestation too large")
        body += _LENGTH.pack(len(encoded)) + encoded
    return bytes(body)


def encode_ask(subject: PeerId) -> bytes:
    return bytes([KIND_ASK]) + subject.multihash


def encode_answer(accepted: int, refused: int) -> bytes:
    return bytes([KIND_ANSWER, min(accepted, 255), min(refused, 255)])


def decode_message(data: bytes) -> Push | Ask | Answer:
    if not data:
        raise TrustProtocolViolation("empty message")
    if len(data) > MAX_MESSAGE_BYTES:
        raise TrustProtocolViolation(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    kind = data[0]
    if kind == KIND_PUSH:
        return _decode_push(data)
    if kind == KIND_ASK:
        if not 2 <= len(data) <= 1 + MAX_PEER_ID_SIZE:
            raise TrustProtocolViolation("ask carries no valid peer ID")
        try:
            return Ask(PeerId.from_bytes(data[1:]))
        except IdentityError as exc:
            raise TrustProtocolViolation(f"ask: {exc}") from None
    if kind == KIND_ANSWER:
        if len(data) != 3:
            raise TrustProtocolViolation("answer must be 3 bytes")
        return Answer(data[1], data[2])
    raise TrustProtocolViolation(f"unknown message kind 0x{kind:02x}")


def _decode_push(data: bytes) -> Push:
    if len(data) < 2:
        raise TrustProtocolViolation("push without a count")
    count = data[1]
    if count > MAX_ATTESTATIONS:
        raise TrustProtocolViolation(f"push of {count} attestations exceeds {MAX_ATTESTATIONS}")
    offset, items = 2, []
    for _ in range(count):
        if offset + _LENGTH.size > len(data):
            raise TrustProtocolViolation("push is truncated")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        if length == 0 or length > MAX_ATTESTATION_SIZE or offset + length > len(data):
            raise TrustProtocolViolation(f"attestation length {length} is out of bounds")
        items.append(bytes(data[offset : offset + length]))
        offset += length
    if offset != len(data):
        raise TrustProtocolViolation("push has trailing bytes")
    return Push(tuple(items))
