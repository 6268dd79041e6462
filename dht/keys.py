"""Keys of the Kademlia keyspace, XOR distance, and CIDs for provider records.

Every key lives in the keyspace as the SHA-256 of its bytes, read as a
256-bit big-endian integer (libp2p kad-dht spec): peer IDs are hashed from
their multihash bytes, provider keys from the CID's multihash bytes, value
keys from the record key. Distances are plain ``int`` XORs so that the hot
paths of the routing table and the simulator stay cheap.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import random
from dataclasses import dataclass

import base58

from hypermesh.transport.identity import PeerId
from hypermesh.transport.varint import VarintError, decode_uvarint, encode_uvarint

KEY_BITS = 256

CID_VERSION_1 = 0x01
CODEC_RAW = 0x55
CODEC_DAG_PB = 0x70
MULTIHASH_SHA2_256 = 0x12
SHA2_256_LENGTH = 32
# Longest multihash digest we accept in a CID: sha2-512 and blake2b-512 are 64.
MAX_DIGEST_LENGTH = 64


class CidError(ValueError):
    """A CID or multihash is malformed or uses an encoding we do not read."""


def kad_key(raw: bytes) -> int:
    """Position of ``raw`` (peer ID bytes, multihash, record key) in the keyspace."""
    return int.from_bytes(hashlib.sha256(raw).digest(), "big")


@functools.lru_cache(maxsize=1 << 16)
def peer_key(peer_id: PeerId) -> int:
    return kad_key(peer_id.multihash)


def distance(a: int, b: int) -> int:
    return a ^ b


def bucket_index(local: int, other: int) -> int:
    """Index of the k-bucket that ``other`` falls in, seen from ``local``.

    Bucket ``i`` holds keys at distance [2**i, 2**(i+1)): 255 is the far half
    of the keyspace, 0 the single closest key. Returns -1 for ``local`` itself.
    """
    return (local ^ other).bit_length() - 1


# Grinding a key into bucket i takes about 2**(256 - i) hashes, so only the
# far buckets are refreshed by random lookups (go-libp2p-kad-dht stops at a
# common prefix of 15 bits too); the self-lookup covers the near ones.
MAX_REFRESH_COMMON_PREFIX = 15


def grind_key_in_bucket(local: int, index: int, rng: random.Random, max_attempts: int = 1 << 20) -> bytes | None:
    """Random key bytes whose keyspace position falls in bucket ``index`` of ``local``.

    FIND_NODE needs the bytes, not the position, since the server hashes
    them; so we hash random bytes until one lands in the bucket.
    """
    for _ in range(max_attempts):
        candidate = rng.getrandbits(64).to_bytes(8, "big")
        if bucket_index(local, kad_key(candidate)) == index:
            return candidate
    return None


def _read_uvarint(raw: bytes, offset: int, what: str) -> tuple[int, int]:
    """(value, length) of the varint at ``offset``; CidError if bad or truncated."""
    try:
        decoded = decode_uvarint(raw, offset)
    except VarintError as exc:
        raise CidError(f"{what}: {exc}") from None
    if decoded is None:
        raise CidError(f"{what} is truncated")
    return decoded


def validate_multihash(raw: bytes) -> None:
    """Check that ``raw`` is exactly one multihash with a known-length digest."""
    _, code_len = _read_uvarint(raw, 0, "multihash")
    length, length_len = _read_uvarint(raw, code_len, "multihash")
    if length > MAX_DIGEST_LENGTH:
        raise CidError(f"multihash digest of {length} bytes is too long")
    if code_len + length_len + length != len(raw):
        raise CidError("multihash length does not match its digest")


@dataclass(frozen=True, slots=True)
class Cid:
    """A content identifier; provider records are keyed by its multihash."""

    version: int
    codec: int
    multihash: bytes

    @classmethod
    def for_bytes(cls, data: bytes, codec: int = CODEC_RAW) -> "Cid":
        digest = hashlib.sha256(data).digest()
        return cls(CID_VERSION_1, codec, bytes([MULTIHASH_SHA2_256, SHA2_256_LENGTH]) + digest)

    @classmethod
    def for_string(cls, text: str) -> "Cid":
        """CIDv1 (raw, sha2-256) of the UTF-8 bytes of ``text``.

        The same CID that ``ipfs add --raw-leaves --cid-version 1`` gives a file
        holding those bytes, so other libp2p tools find the same provider records.
        """
        return cls.for_bytes(text.encode("utf-8"))

    def to_bytes(self) -> bytes:
        if self.version == 0:
            return self.multihash
        return encode_uvarint(self.version) + encode_uvarint(self.codec) + self.multihash

    def __str__(self) -> str:
        if self.version == 0:
            return base58.b58encode(self.multihash).decode("ascii")
        text = base64.b32encode(self.to_bytes()).decode("ascii").lower().rstrip("=")
        return "b" + text

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Cid":
        if len(raw) == 34 and raw[0] == MULTIHASH_SHA2_256 and raw[1] == SHA2_256_LENGTH:
            return cls(0, CODEC_DAG_PB, bytes(raw))
        version, version_len = _read_uvarint(raw, 0, "CID")
        if version != CID_VERSION_1:
            raise CidError(f"unsupported CID version {version}")
        codec, codec_len = _read_uvarint(raw, version_len, "CID")
        multihash = bytes(raw[version_len + codec_len :])
        validate_multihash(multihash)
        return cls(version, codec, multihash)

    @classmethod
    def parse(cls, text: str) -> "Cid":
        """Read a CID in its usual text forms: ``Qm…`` (v0), ``b…`` (base32), ``z…`` (base58btc)."""
        try:
            if text.startswith("Qm") and len(text) == 46:
                return cls.from_bytes(base58.b58decode(text))
            if text.startswith("b"):
                body = text[1:].upper()
                return cls.from_bytes(base64.b32decode(body + "=" * (-len(body) % 8)))
            if text.startswith("z"):
                return cls.from_bytes(base58.b58decode(text[1:]))
        except ValueError as exc:  # binascii.Error is a ValueError
            if isinstance(exc, CidError):
                raise
            raise CidError(f"CID {text!r} does not decode: {exc}") from None
        raise CidError(f"CID {text!r} uses an unsupported multibase")


def provider_key(raw: bytes) -> bytes:
    """The multihash that keys provider records, given a multihash or a binary CID.

    go-libp2p-kad-dht and rust-libp2p send the CID's multihash; the spec text
    says "a CID", and older js-libp2p sent whole CIDs. Both name the same
    content, so both land on the same record.
    """
    try:
        validate_multihash(raw)
        return bytes(raw)
    except CidError:
        return Cid.from_bytes(raw).multihash
