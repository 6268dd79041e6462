"""Wire codec of ``/hm/capsule-chunks/1.0.0``: requests and answers as bytes, bounded and validated.

Several requests may share a stream: the provider answers them one at a
time, in order, until the client finishes its side (FIN), then closes; a
client may send further requests before reading the answers (pipelining).
The fetcher in :mod:`distribution` keeps one request in flight per stream, runs concurrent
requests on separate streams and reuses a stream once its answer is read.
Every message is one varint-framed body (``uvarint(len) ‖ body``, as
:mod:`hypermesh.transport.framing` writes)::

    request = kind:u8 ‖ digest:32 bytes               (exactly 33 bytes)
        kind 0x01  chunk list of the capsule whose CID is CIDv1(raw, sha2-256 digest)
        kind 0x02  the chunk whose sha2-256 is digest
    answer  = 0x00 ‖ payload                          found
            | 0x01                                    not found (or not served by this node)
            | 0x02                                    held, but damaged in the provider's store
        payload of a chunk list: its canonical JSON (``ChunkList.to_bytes``), ≤ 4 MiB
        payload of a chunk: its bytes, ≤ 256 KiB (``chunks.MAX_CHUNK``)

A provider serves only the chunk lists it published, or fetched and
admitted (it then provides their CIDs too), and the chunks those lists name.
A request that is not exactly 33 bytes or has an unknown kind, or an
exchange (request in, answer out) that takes over
:data:`distribution.EXCHANGE_TIMEOUT` (30 s), resets that stream, and only it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .chunks import MAX_CHUNK
from .cid import cid_from_digest, digest_from_cid
from .errors import ChunkError

PROTOCOL_ID = "/hm/capsule-chunks/1.0.0"

KIND_CHUNK_LIST = 0x01
KIND_CHUNK = 0x02
STATUS_FOUND = 0x00
STATUS_NOT_FOUND = 0x01
STATUS_DAMAGED = 0x02

DIGEST_BYTES = 32
# A request is fixed-size, so anything longer is malformed: the provider
# never buffers more than this per stream before deciding.
REQUEST_BYTES = 1 + DIGEST_BYTES
# A chunk is at most MAX_CHUNK by format; one status byte more.
MAX_CHUNK_ANSWER = 1 + MAX_CHUNK
# The largest valid chunk list: 256 MiB of capsule in chunks of ≥ 16 KiB
# (plus one short tail chunk per file) is ~17,400 hashes of 67 JSON bytes
# each, ~1.2 MB, plus up to 1,025 paths of ≤ 1 KiB. 4 MiB covers it with
# margin and stops a hostile provider from making us buffer more.
MAX_CHUNK_LIST_BYTES = 4 * 1024 * 1024
MAX_CHUNK_LIST_ANSWER = 1 + MAX_CHUNK_LIST_BYTES


class ProtocolViolation(ValueError):
    """A peer sent a malformed request or answer."""


class ProviderStoreDamaged(Exception):
    """The provider holds what was asked for, but its copy failed its own hash check."""

    def __init__(self):
        super().__init__("chunk store damaged")


@dataclass(frozen=True, slots=True)
class Request:
    kind: int
    digest: bytes

    @classmethod
    def for_chunk_list(cls, cid: str) -> "Request":
        return cls(KIND_CHUNK_LIST, digest_from_cid(cid))

    @classmethod
    def for_chunk(cls, chunk_hash: str) -> "Request":
        return cls(KIND_CHUNK, _chunk_digest(chunk_hash))

    @property
    def max_answer(self) -> int:
        return MAX_CHUNK_LIST_ANSWER if self.kind == KIND_CHUNK_LIST else MAX_CHUNK_ANSWER

    def encode(self) -> bytes:
        return bytes([self.kind]) + self.digest

    def __str__(self) -> str:
        if self.kind == KIND_CHUNK_LIST:
            return f"chunk list of {cid_from_digest(self.digest)}"
        return f"chunk {self.digest.hex()}"


def _chunk_digest(chunk_hash: str) -> bytes:
    if len(chunk_hash) != 2 * DIGEST_BYTES or any(c not in "0123456789abcdef" for c in chunk_hash):
        raise ChunkError(f"not a chunk hash: {chunk_hash!r}")
    return bytes.fromhex(chunk_hash)


def decode_request(body: bytes) -> Request:
    """Parse one request body; raises :class:`ProtocolViolation` on anything but a valid request."""
    if len(body) != REQUEST_BYTES:
        raise ProtocolViolation(f"a request is {REQUEST_BYTES} bytes, got {len(body)}")
    if body[0] not in (KIND_CHUNK_LIST, KIND_CHUNK):
        raise ProtocolViolation(f"unknown request kind 0x{body[0]:02x}")
    return Request(body[0], bytes(body[1:]))


# Damage is told apart from absence so that the fetcher's error says which it was.
DAMAGED_ANSWER = bytes([STATUS_DAMAGED])


def encode_answer(payload: bytes | None) -> bytes:
    return bytes([STATUS_NOT_FOUND]) if payload is None else bytes([STATUS_FOUND]) + payload


def decode_answer(body: bytes, max_size: int) -> bytes | None:
    """The payload of a found answer, or None for not found.

    Raises :class:`ProviderStoreDamaged` for a damaged answer and
    :class:`ProtocolViolation` for anything malformed.
    """
    if not body or len(body) > max_size:
        raise ProtocolViolation(f"an answer is 1 to {max_size} bytes, got {len(body)}")
    if body[0] in (STATUS_NOT_FOUND, STATUS_DAMAGED):
        if len(body) != 1:
            raise ProtocolViolation("a not-found or damaged answer carries no payload")
        if body[0] == STATUS_DAMAGED:
            raise ProviderStoreDamaged()
        return None
    if body[0] != STATUS_FOUND:
        raise ProtocolViolation(f"unknown answer status 0x{body[0]:02x}")
    return bytes(body[1:])
