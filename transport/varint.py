"""Unsigned varints as multiformats defines them (LEB128, minimal, at most 9 bytes).

Used by multistream-select, length-prefixed protobuf messages and multihashes.
"""

from __future__ import annotations

# multiformats/unsigned-varint caps varints at 9 bytes (63 bits) so that a
# hostile peer cannot make us read an unbounded run of continuation bytes.
MAX_VARINT_BYTES = 9


class VarintError(ValueError):
    """A varint is malformed: too long, not minimal, or over a caller's bound."""


def encode_uvarint(value: int) -> bytes:
    if value < 0 or value >= 1 << 63:
        raise VarintError(f"varint out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_uvarint(buf: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int] | None:
    """Decode one varint at ``offset``.

    Returns ``(value, bytes_consumed)``, or ``None`` when ``buf`` ends before the
    varint does. Raises :class:`VarintError` on a malformed varint.
    """
    value = 0
    shift = 0
    end = min(len(buf), offset + MAX_VARINT_BYTES)
    for index in range(offset, end):
        byte = buf[index]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            consumed = index - offset + 1
            if byte == 0 and consumed > 1:
                raise VarintError("varint is not minimally encoded")
            return value, consumed
        shift += 7
    if end - offset >= MAX_VARINT_BYTES:
        raise VarintError(f"varint longer than {MAX_VARINT_BYTES} bytes")
    return None
