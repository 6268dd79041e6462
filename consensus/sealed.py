"""Confidential payloads: bytes sealed to chosen recipients with hybrid X25519 + ML-KEM-768.

Validators order a transaction carrying a sealed payload without being able
to read it; only the recipients named in it can. The construction follows
HPKE's shape (RFC 9180: KEM, then a key schedule, then an AEAD) with a
hybrid KEM in the X-Wing style: the payload is encrypted once with
ChaCha20-Poly1305 under a fresh random content key, and the content key is
wrapped for each recipient under

    wrap_key = HKDF-SHA256(salt = "hypermesh/sealed/v1",
                           ikm  = mlkem_shared ‖ x25519_shared,
                           info = "wrap" ‖ sha256(ephemeral ‖ recipient x25519 ‖
                                                   sha256(recipient ML-KEM key) ‖ kem ciphertext))

so the content key stays secret while either X25519 or ML-KEM-768 holds
(the classical half against today's attackers, the post-quantum half
against a future quantum computer recording now), and binding the
ciphertexts and keys into the info keeps a KEM output from being reused
under another context. The payload's AEAD covers everything before it (the
recipient list included) and the caller's associated data, so changing any
byte fails authentication.

Encoding: ``version:u8 (1) ‖ ephemeral_x25519:32 ‖ count:u8 ‖ count ×
(recipient_id:32 ‖ kem_ciphertext:1088 ‖ wrapped_key:48) ‖ len:u32 ‖
ciphertext``; a recipient ID is ``sha256("hypermesh/sealing-key\\0" ‖
x25519 ‖ mlkem)`` of its public sealing key. The sealing key is separate from
the Ed25519 identity key (Ed25519 keys do not do key agreement); a node
publishes its public sealing key.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SEALED_VERSION = 1
X25519_SIZE = 32
MLKEM_PUBLIC_SIZE = 1184
MLKEM_CIPHERTEXT_SIZE = 1088
RECIPIENT_ID_SIZE = 32
WRAPPED_KEY_SIZE = 32 + 16
MAX_RECIPIENTS = 16
MAX_PLAINTEXT = 32 * 1024
_ENTRY_SIZE = RECIPIENT_ID_SIZE + MLKEM_CIPHERTEXT_SIZE + WRAPPED_KEY_SIZE
MAX_SEALED_SIZE = 1 + X25519_SIZE + 1 + MAX_RECIPIENTS * _ENTRY_SIZE + 4 + MAX_PLAINTEXT + 16
_ZERO_NONCE = bytes(12)  # every key (content or wrap) encrypts exactly one message


class SealedPayloadError(ValueError):
    """Base of the refusals of a sealed payload."""


class MalformedSealedPayload(SealedPayloadError):
    pass


class NotARecipient(SealedPayloadError):
    pass


class TamperedPayload(SealedPayloadError):
    """Authentication failed: the payload, its recipient entry or the associated data changed."""


@dataclass(frozen=True, slots=True)
class SealingPublicKey:
    x25519: bytes
    mlkem: bytes

    def encode(self) -> bytes:
        return self.x25519 + self.mlkem

    @classmethod
    def decode(cls, data: bytes) -> "SealingPublicKey":
        if len(data) != X25519_SIZE + MLKEM_PUBLIC_SIZE:
            raise MalformedSealedPayload("a sealing public key is 32 + 1184 bytes")
        return cls(data[:X25519_SIZE], data[X25519_SIZE:])

    def recipient_id(self) -> bytes:
        return hashlib.sha256(b"hypermesh/sealing-key\x00" + self.encode()).digest()


class SealingKey:
    """A recipient's private half: an X25519 key and an ML-KEM-768 decapsulation key."""

    def __init__(self, x25519_key: x25519.X25519PrivateKey, mlkem_key: mlkem.MLKEM768PrivateKey):
        self._x25519 = x25519_key
        self._mlkem = mlkem_key
        self.public = SealingPublicKey(x25519_key.public_key().public_bytes_raw(),
                                       mlkem_key.public_key().public_bytes_raw())

    @classmethod
    def generate(cls) -> "SealingKey":
        return cls.from_seed(os.urandom(32))

    @classmethod
    def from_seed(cls, seed: bytes) -> "SealingKey":
        """Deterministic from a secret seed (store the seed, not the keys)."""
        material = HKDF(hashes.SHA256(), 96, b"hypermesh/sealing-key", b"").derive(seed)
        return cls(x25519.X25519PrivateKey.from_private_bytes(material[:32]),
                   mlkem.MLKEM768PrivateKey.from_seed_bytes(material[32:]))

    def agree(self, ephemeral: bytes, kem_ciphertext: bytes) -> tuple[bytes, bytes]:
        """The ML-KEM and X25519 shared secrets for one recipient entry."""
        try:
            dh = self._x25519.exchange(x25519.X25519PublicKey.from_public_bytes(ephemeral))
        except ValueError:
            raise TamperedPayload("the ephemeral key gives no shared secret") from None
        return self._mlkem.decapsulate(kem_ciphertext), dh


@dataclass(frozen=True, slots=True)
class RecipientEntry:
    recipient_id: bytes
    kem_ciphertext: bytes
    wrapped_key: bytes


@dataclass(frozen=True, slots=True)
class SealedPayload:
    ephemeral: bytes
    recipients: tuple[RecipientEntry, ...]
    ciphertext: bytes

    def header(self) -> bytes:
        parts = [struct.pack(">B", SEALED_VERSION), self.ephemeral, struct.pack(">B", len(self.recipients))]
        for entry in self.recipients:
            parts += [entry.recipient_id, entry.kem_ciphertext, entry.wrapped_key]
        return b"".join(parts)

    def encode(self) -> bytes:
        return self.header() + struct.pack(">I", len(self.ciphertext)) + self.ciphertext


def _wrap_key(mlkem_shared: bytes, dh: bytes, ephemeral: bytes, recipient: SealingPublicKey, kem_ct: bytes) -> bytes:
    context = hashlib.sha256(ephemeral + recipient.x25519 + hashlib.sha256(recipient.mlkem).digest() + kem_ct).digest()
    return HKDF(hashes.SHA256(), 32, b"hypermesh/sealed/v1", b"wrap" + context).derive(mlkem_shared + dh)


def seal(plaintext: bytes, recipients: list[SealingPublicKey], associated_data: bytes = b"") -> bytes:
    if not 0 < len(recipients) <= MAX_RECIPIENTS:
        raise MalformedSealedPayload(f"1..{MAX_RECIPIENTS} recipients")
    if len(plaintext) > MAX_PLAINTEXT:
        raise MalformedSealedPayload(f"a plaintext over {MAX_PLAINTEXT} bytes")
    ephemeral_key = x25519.X25519PrivateKey.generate()
    ephemeral = ephemeral_key.public_key().public_bytes_raw()
    content_key = ChaCha20Poly1305.generate_key()
    entries = []
    for recipient in recipients:
        dh = ephemeral_key.exchange(x25519.X25519PublicKey.from_public_bytes(recipient.x25519))
        mlkem_shared, kem_ct = mlkem.MLKEM768PublicKey.from_public_bytes(recipient.mlkem).encapsulate()
        wrap = ChaCha20Poly1305(_wrap_key(mlkem_shared, dh, ephemeral, recipient, kem_ct))
        recipient_id = recipient.recipient_id()
        entries.append(RecipientEntry(recipient_id, kem_ct, wrap.encrypt(_ZERO_NONCE, content_key, recipient_id)))
    header = SealedPayload(ephemeral, tuple(entries), b"").header()
    ciphertext = ChaCha20Poly1305(content_key).encrypt(_ZERO_NONCE, plaintext, header + associated_data)
    return SealedPayload(ephemeral, tuple(entries), ciphertext).encode()


def decode_sealed(data: bytes) -> SealedPayload:
    """Parse and bound a sealed payload (form only: anyone, validators included, can check this)."""
    if len(data) > MAX_SEALED_SIZE:
        raise MalformedSealedPayload(f"a sealed payload over {MAX_SEALED_SIZE} bytes")
    if len(data) < 2 + X25519_SIZE or data[0] != SEALED_VERSION:
        raise MalformedSealedPayload("unknown version or truncated")
    ephemeral, count = data[1:1 + X25519_SIZE], data[1 + X25519_SIZE]
    if not 0 < count <= MAX_RECIPIENTS:
        raise MalformedSealedPayload(f"1..{MAX_RECIPIENTS} recipients")
    offset = 2 + X25519_SIZE
    entries = []
    for _ in range(count):
        chunk = data[offset:offset + _ENTRY_SIZE]
        if len(chunk) != _ENTRY_SIZE:
            raise MalformedSealedPayload("truncated recipient entry")
        entries.append(RecipientEntry(chunk[:32], chunk[32:32 + MLKEM_CIPHERTEXT_SIZE], chunk[32 + MLKEM_CIPHERTEXT_SIZE:]))
        offset += _ENTRY_SIZE
    if len({e.recipient_id for e in entries}) != count:
        raise MalformedSealedPayload("a recipient appears twice")
    if offset + 4 > len(data):
        raise MalformedSealedPayload("truncated ciphertext length")
    (length,) = struct.unpack(">I", data[offset:offset + 4])
    ciphertext = data[offset + 4:]
    if len(ciphertext) != length or not 16 <= length <= MAX_PLAINTEXT + 16:
        raise MalformedSealedPayload("ciphertext length does not match or is out of range")
    return SealedPayload(ephemeral, tuple(entries), ciphertext)


def open_sealed(data: bytes, key: SealingKey, associated_data: bytes = b"") -> bytes:
    """The plaintext, for one of the recipients; :class:`SealedPayloadError` says why not."""
    payload = decode_sealed(data)
    recipient_id = key.public.recipient_id()
    entry = next((e for e in payload.recipients if e.recipient_id == recipient_id), None)
    if entry is None:
        raise NotARecipient("this key is not among the payload's recipients")
    mlkem_shared, dh = key.agree(payload.ephemeral, entry.kem_ciphertext)
    wrap = ChaCha20Poly1305(_wrap_key(mlkem_shared, dh, payload.ephemeral, key.public, entry.kem_ciphertext))
    try:
        content_key = wrap.decrypt(_ZERO_NONCE, entry.wrapped_key, recipient_id)
        return ChaCha20Poly1305(content_key).decrypt(_ZERO_NONCE, payload.ciphertext,
                                                     payload.header() + associated_data)
    except InvalidTag:
        raise TamperedPayload("authentication failed: the payload or its recipient entry was changed") from None


__all__ = ["MalformedSealedPayload", "NotARecipient", "SealedPayload", "SealedPayloadError", "SealingKey",
           "SealingPublicKey", "TamperedPayload", "decode_sealed", "open_sealed", "seal"]
