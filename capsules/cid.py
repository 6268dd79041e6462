"""Content identifiers: CIDv1, raw codec, sha2-256 multihash, base32 multibase.

A capsule's CID is computed over its root hash (see :mod:`receipt`), so two
nodes that hold the same signed files agree on the same CID without any
registry. The text form is ``b`` + lowercase RFC 4648 base32 without padding,
as IPFS prints CIDv1.
"""

from __future__ import annotations

import base64
import functools
import re

from .errors import FormatError

CID_VERSION = 1
CODEC_RAW = 0x55
MULTIHASH_SHA2_256 = 0x12
SHA256_LENGTH = 32
MULTIBASE_BASE32 = "b"

# version, codec and multihash header are each a single-byte varint here.
_PREFIX = bytes([CID_VERSION, CODEC_RAW, MULTIHASH_SHA2_256, SHA256_LENGTH])
_CID_TEXT = re.compile(r"^b[a-z2-7]{58}$")
# CIDs converted lately, both ways: base32 in pure Python (the standard
# library's) costs a remote run more than its receipt check's hashing.
MAX_CACHED_CIDS = 1024


def cid_from_digest(digest: bytes) -> str:
    """The CID text of a sha2-256 digest."""
    if len(digest) != SHA256_LENGTH:
        raise FormatError(f"a sha2-256 digest is 32 bytes, got {len(digest)}")
    return _cid_text(bytes(digest))


@functools.lru_cache(maxsize=MAX_CACHED_CIDS)
def _cid_text(digest: bytes) -> str:
    encoded = base64.b32encode(_PREFIX + digest).decode("ascii").lower().rstrip("=")
    return MULTIBASE_BASE32 + encoded


def digest_from_cid(text: str) -> bytes:
    """The sha2-256 digest inside a CID we issue; anything else is refused."""
    if not isinstance(text, str):  # unhashable values too: checked before the cache
        raise _not_a_cid(text)
    return _digest(text)


def _not_a_cid(text: object) -> FormatError:
    return FormatError(f"not a CIDv1 base32 sha2-256 identifier: {text!r}")


@functools.lru_cache(maxsize=MAX_CACHED_CIDS)
def _digest(text: str) -> bytes:
    if not _CID_TEXT.match(text):
        raise _not_a_cid(text)
    body = text[1:].upper()
    raw = base64.b32decode(body + "=" * (-len(body) % 8))
    if raw[: len(_PREFIX)] != _PREFIX:
        raise FormatError(f"CID {text} is not CIDv1 raw sha2-256")
    return raw[len(_PREFIX) :]


def is_cid(text: str) -> bool:
    try:
        digest_from_cid(text)
    except FormatError:
        return False
    return True
