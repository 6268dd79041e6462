"""Node identity: Ed25519 host keys, libp2p public-key encoding and peer IDs.

A peer ID is the multihash of the protobuf-encoded public key (libp2p
peer-ids spec): the identity multihash when that encoding is at most 42 bytes
(Ed25519, secp256k1: ``12D3KooW…``, ``16Uiu2…``), SHA-256 otherwise (RSA,
ECDSA: ``Qm…``). We create Ed25519 keys only, but verify every key type the
spec lists, since other libp2p implementations may use them.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import base58
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from .varint import VarintError, decode_uvarint, encode_uvarint

# libp2p crypto.proto KeyType values.
KEY_TYPE_RSA = 0
KEY_TYPE_ED25519 = 1
KEY_TYPE_SECP256K1 = 2
KEY_TYPE_ECDSA = 3

MULTIHASH_IDENTITY = 0x00
MULTIHASH_SHA2_256 = 0x12
# Keys whose protobuf encoding is at most this long are inlined in the peer ID.
MAX_INLINE_KEY_LENGTH = 42
# Bounds a hostile peer's key: RSA-8192 in DER is about 1.1 KB.
MAX_PUBLIC_KEY_PROTO_LENGTH = 2048

KEY_FILE_NAME = "identity.key"


class IdentityError(ValueError):
    """A key, signature or peer ID is malformed or does not verify."""


def _protobuf_field(tag: int, payload: bytes) -> bytes:
    return bytes([tag]) + encode_uvarint(len(payload)) + payload


def encode_public_key(key_type: int, data: bytes) -> bytes:
    """Deterministic protobuf encoding of libp2p's ``PublicKey{Type, Data}``."""
    return bytes([0x08, key_type]) + _protobuf_field(0x12, data)


def decode_public_key(encoded: bytes) -> tuple[int, bytes]:
    """Strict decoder for ``PublicKey``: exactly the two required fields, in order."""
    if len(encoded) > MAX_PUBLIC_KEY_PROTO_LENGTH:
        raise IdentityError(f"public key of {len(encoded)} bytes exceeds {MAX_PUBLIC_KEY_PROTO_LENGTH}")
    if len(encoded) < 4 or encoded[0] != 0x08 or encoded[2] != 0x12:
        raise IdentityError("public key is not a libp2p PublicKey protobuf")
    key_type = encoded[1]
    try:
        decoded = decode_uvarint(encoded, 3)
    except VarintError as exc:
        raise IdentityError(f"public key length: {exc}") from None
    if decoded is None:
        raise IdentityError("truncated public key")
    length, consumed = decoded
    start = 3 + consumed
    if start + length != len(encoded):
        raise IdentityError("public key length does not match its encoding")
    return key_type, bytes(encoded[start:])


def verify_signature(public_key_proto: bytes, message: bytes, signature: bytes) -> bool:
    """Verify ``signature`` over ``message`` by a libp2p-encoded public key.

    Returns False on a bad signature; raises :class:`IdentityError` on a key
    that cannot be decoded.
    """
    key_type, data = decode_public_key(public_key_proto)
    try:
        if key_type == KEY_TYPE_ED25519:
            if len(data) != 32:
                raise IdentityError("Ed25519 public key must be 32 bytes")
            ed25519.Ed25519PublicKey.from_public_bytes(data).verify(signature, message)
        elif key_type == KEY_TYPE_SECP256K1:
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), data)
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif key_type == KEY_TYPE_ECDSA:
            key = serialization.load_der_public_key(data)
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise IdentityError("ECDSA key is not an elliptic-curve key")
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif key_type == KEY_TYPE_RSA:
            key = serialization.load_der_public_key(data)
            if not isinstance(key, rsa.RSAPublicKey) or key.key_size < 2048:
                raise IdentityError("RSA key must be at least 2048 bits")
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise IdentityError(f"unknown key type {key_type}")
    except InvalidSignature:
        return False
    except (ValueError, TypeError) as exc:
        if isinstance(exc, IdentityError):
            raise
        raise IdentityError(f"invalid public key: {exc}") from None
    return True


@dataclass(frozen=True, slots=True)
class PeerId:
    """A libp2p peer ID: the multihash bytes, printed as base58btc."""

    multihash: bytes

    @classmethod
    def from_public_key(cls, public_key_proto: bytes) -> "PeerId":
        if len(public_key_proto) <= MAX_INLINE_KEY_LENGTH:
            prefix = bytes([MULTIHASH_IDENTITY]) + encode_uvarint(len(public_key_proto))
            return cls(prefix + public_key_proto)
        digest = hashlib.sha256(public_key_proto).digest()
        return cls(bytes([MULTIHASH_SHA2_256, len(digest)]) + digest)

    @classmethod
    def from_base58(cls, text: str) -> "PeerId":
        try:
            raw = base58.b58decode(text.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as exc:
            raise IdentityError(f"peer ID {text!r} is not base58: {exc}") from None
        return cls.from_bytes(raw)

    @classmethod
    def from_bytes(cls, raw: bytes) -> "PeerId":
        if len(raw) < 2:
            raise IdentityError("peer ID is too short")
        code = raw[0]
        try:
            decoded = decode_uvarint(raw, 1)
        except VarintError as exc:
            raise IdentityError(f"peer ID multihash: {exc}") from None
        if decoded is None:
            raise IdentityError("peer ID multihash is truncated")
        length, consumed = decoded
        if len(raw) != 1 + consumed + length:
            raise IdentityError("peer ID multihash length does not match")
        if code == MULTIHASH_IDENTITY:
            if length > MAX_INLINE_KEY_LENGTH:
                raise IdentityError("identity multihash is longer than 42 bytes")
            decode_public_key(raw[1 + consumed :])
        elif code == MULTIHASH_SHA2_256:
            if length != 32:
                raise IdentityError("sha2-256 multihash must be 32 bytes")
        else:
            raise IdentityError(f"unsupported peer ID multihash code 0x{code:02x}")
        return cls(bytes(raw))

    def to_base58(self) -> str:
        return base58.b58encode(self.multihash).decode("ascii")

    def inlined_public_key(self) -> bytes | None:
        """The protobuf public key when the ID inlines it (identity multihash)."""
        if self.multihash[0] != MULTIHASH_IDENTITY:
            return None
        _, consumed = decode_uvarint(self.multihash, 1)  # validated at construction
        return self.multihash[1 + consumed :]

    def matches_public_key(self, public_key_proto: bytes) -> bool:
        return PeerId.from_public_key(public_key_proto) == self

    def __str__(self) -> str:
        return self.to_base58()

    def __repr__(self) -> str:
        return f"PeerId({self.to_base58()})"

    def short(self) -> str:
        """Last six characters, for logs."""
        return "*" + self.to_base58()[-6:]


class Identity:
    """An Ed25519 host key and the peer ID derived from it."""

    def __init__(self, private_key: ed25519.Ed25519PrivateKey):
        self.private_key = private_key
        raw_public = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public_key_proto = encode_public_key(KEY_TYPE_ED25519, raw_public)
        self.peer_id = PeerId.from_public_key(self.public_key_proto)

    @classmethod
    def generate(cls) -> "Identity":
        return cls(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> "Identity":
        """Deterministic identity, for tests and the simulator."""
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed).digest()))

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    def private_key_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_pem(cls, pem: bytes) -> "Identity":
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise IdentityError(f"cannot read private key: {exc}") from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise IdentityError("host key must be Ed25519")
        return cls(key)


def key_path(data_dir: Path) -> Path:
    return Path(data_dir) / KEY_FILE_NAME


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` atomically with mode 0600, surviving a crash at any point."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_private_file(path: Path) -> bytes:
    """The bytes of a private key file, refusing (IdentityError) one that other users can read."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise IdentityError(
            f"refusing to use {path}: it is readable by other users (mode {mode:04o}); "
            f"fix it with `chmod 600 {path}`"
        )
    return path.read_bytes()


def load_identity(data_dir: Path) -> Identity:
    """Load the host key, refusing one that other users can read."""
    path = key_path(data_dir)
    if not path.exists():
        raise IdentityError(f"no identity at {path}: run `hypermesh init --data-dir {data_dir}` first")
    return Identity.from_pem(read_private_file(path))


def init_identity(data_dir: Path) -> tuple[Identity, bool]:
    """Load the identity in ``data_dir`` or create one. Returns (identity, created)."""
    path = key_path(data_dir)
    if path.exists():
        return load_identity(data_dir), False
    identity = Identity.generate()
    write_private_file(path, identity.private_key_pem())
    return identity, True
