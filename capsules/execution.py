"""Execution receipts: a node's signed statement of one call it ran.

The receipt binds the capsule CID, the function, sha2-256 of the input and of
the output, the fuel used, the wall-clock duration and the node's peer ID.
The signature is Ed25519 over ``"hypermesh-execution-receipt/1" || 0x00 ||
canonical JSON of every other field``; for an Ed25519 node the peer ID
inlines the public key, so a receipt verifies with nothing else.

Signing costs about as much as a small call, so :class:`CallResult` signs on
first access to ``receipt``; Ed25519 is deterministic, so a receipt signed
later is the same receipt.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any

from hypermesh.transport.identity import Identity, IdentityError, PeerId, verify_signature

from . import schema
from .errors import FormatError

RECEIPT_FORMAT = "hypermesh-execution-receipt/1"
_DOMAIN = b"hypermesh-execution-receipt/1\x00"


@functools.lru_cache(maxsize=1024)
def peer_name(peer: PeerId) -> str:
    """A peer ID as receipts write it, base58. Cached: base58 in pure Python costs more than the signature."""
    return peer.to_base58()


@functools.lru_cache(maxsize=1024)
def _named_peer(text: str) -> PeerId:
    return PeerId.from_base58(text)


def _message(unsigned: dict[str, Any]) -> bytes:
    return _DOMAIN + schema.canonical_json(unsigned)


@dataclass(slots=True)
class CallResult:
    """A call's output, with the facts its execution receipt attests."""

    output: bytes
    capsule: str
    function: str
    input: bytes = field(repr=False)
    fuel_used: int
    duration_us: int
    identity: Identity = field(repr=False)
    _receipt: dict[str, Any] | None = field(default=None, repr=False)

    def unsigned_receipt(self) -> dict[str, Any]:
        return {
            "format": RECEIPT_FORMAT,
            "capsule": self.capsule,
            "function": self.function,
            "input_hash": hashlib.sha256(self.input).hexdigest(),
            "output_hash": hashlib.sha256(self.output).hexdigest(),
            "fuel_used": self.fuel_used,
            "duration_us": self.duration_us,
            "node": peer_name(self.identity.peer_id),
        }

    @property
    def receipt(self) -> dict[str, Any]:
        if self._receipt is None:
            unsigned = self.unsigned_receipt()
            self._receipt = {**unsigned, "signature": self.identity.sign(_message(unsigned)).hex()}
        return self._receipt


def verify_execution_receipt(receipt: dict[str, Any], public_key_proto: bytes | None = None) -> bool:
    """True when ``receipt`` is well formed and signed by its node.

    ``public_key_proto`` (libp2p protobuf encoding) is needed only for nodes
    whose peer ID does not inline the key (RSA, ECDSA); when given it must
    match the receipt's node. Raises :class:`FormatError` on a malformed receipt.
    """
    schema.validate(receipt, schema.EXECUTION_RECEIPT, "execution receipt")
    return signature_is_valid(receipt, public_key_proto)


def signature_is_valid(receipt: dict[str, Any], public_key_proto: bytes | None = None) -> bool:
    """:func:`verify_execution_receipt` for a receipt already checked against its schema."""
    try:
        node = _named_peer(receipt["node"])
    except IdentityError as exc:
        raise FormatError(f"execution receipt node: {exc}") from None
    key = public_key_proto if public_key_proto is not None else node.inlined_public_key()
    if key is None or not node.matches_public_key(key):
        return False
    unsigned = {name: value for name, value in receipt.items() if name != "signature"}
    try:
        return verify_signature(key, _message(unsigned), bytes.fromhex(receipt["signature"]))
    except IdentityError:
        return False


def output_matches(receipt: dict[str, Any], output: bytes) -> bool:
    return hashlib.sha256(output).hexdigest() == receipt.get("output_hash")
