"""Consensus signing keys: which scheme a validator signs votes with, and the checks.

A validator is named by its Ed25519 identity key (its index in the set, its
peer ID, its place in the proposer rotation, its account). It signs votes,
proposals (and so certificates and evidence) with its *consensus key*: by
default that same Ed25519 key (scheme ``ed25519``), or an ML-DSA-65 key
(FIPS 204, scheme ``ml-dsa-65``) it declared at genesis or when it bonded,
for validator signatures that stay unforgeable against a quantum computer.

Key material never leaves ``cryptography``: an ML-DSA-65 private key is its
32-byte seed (:meth:`MLDSA65PrivateKey.from_seed_bytes`), a public key its
1,952 raw bytes, a signature 3,309 bytes.

Ed25519 signatures on the chain (votes, transactions) are *verified* with
libsodium (PyNaCl), which does it in half the time OpenSSL takes here (54
against 106 µs), and every block's transactions are checked by every
validator. Its rule is the stricter one, and it is the chain's rule:
besides RFC 8032's checks it refuses public keys and R points of small
order and non-canonical public keys, so every node, whatever it runs, must
verify the same way (:func:`ed25519_verifies`).

A declared key comes with a *proof of possession*: the new key's signature
over ``POSSESSION_DOMAIN ‖ len:u8 ‖ chain ID ‖ owner``, so nobody registers a
key they do not hold (or another validator's key as theirs).
"""

from __future__ import annotations

import base64
import binascii
import collections
import enum
import functools
import hashlib
import threading
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from nacl.bindings import crypto_sign_open
from nacl.exceptions import CryptoError

from hypermesh.transport.identity import Identity

POSSESSION_DOMAIN = b"hypermesh/consensus-key-possession/v1\x00"
ML_DSA_SEED_SIZE = 32


class Scheme(enum.IntEnum):
    """A signature scheme for consensus messages (the number is its wire and on-disk code)."""

    ED25519 = 0
    ML_DSA_65 = 1

    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def public_key_size(self) -> int:
        return _PUBLIC_KEY_SIZES[self]

    @property
    def signature_size(self) -> int:
        return _SIGNATURE_SIZES[self]


_LABELS = {Scheme.ED25519: "ed25519", Scheme.ML_DSA_65: "ml-dsa-65"}
_PUBLIC_KEY_SIZES = {Scheme.ED25519: 32, Scheme.ML_DSA_65: 1952}
_SIGNATURE_SIZES = {Scheme.ED25519: 64, Scheme.ML_DSA_65: 3309}
# What a decoder admits for any one signature.
MAX_SIGNATURE_SIZE = max(_SIGNATURE_SIZES.values())
SCHEME_LABELS = tuple(_LABELS.values())


class ConsensusKeyError(ValueError):
    """A consensus key (or its text form) that is malformed."""


def scheme_named(label: object) -> Scheme:
    for scheme, name in _LABELS.items():
        if name == label:
            return scheme
    raise ConsensusKeyError(f"unknown signature scheme {label!r} (known: {', '.join(SCHEME_LABELS)})")


@dataclass(frozen=True, slots=True)
class ConsensusKey:
    """A public key a validator signs consensus messages with, other than its Ed25519 name key."""

    scheme: Scheme
    public_key: bytes

    def __post_init__(self):
        if self.scheme is not Scheme.ML_DSA_65:
            # One representation per validator: the Ed25519 scheme is the name key, declared by no key at all.
            raise ConsensusKeyError(f"a declared consensus key must be {Scheme.ML_DSA_65.label}")
        if len(self.public_key) != self.scheme.public_key_size:
            raise ConsensusKeyError(f"an {self.scheme.label} public key is {self.scheme.public_key_size} bytes, "
                                    f"not {len(self.public_key)}")

    def encode(self) -> bytes:
        """``scheme:u8 ‖ public key`` (the validator-set encoding and state entries)."""
        return bytes([self.scheme]) + self.public_key

    @classmethod
    def decode(cls, data: bytes) -> "ConsensusKey":
        if not data:
            raise ConsensusKeyError("an empty consensus key")
        try:
            scheme = Scheme(data[0])
        except ValueError:
            raise ConsensusKeyError(f"unknown signature scheme code {data[0]}") from None
        return cls(scheme, bytes(data[1:]))

    def to_json(self) -> dict:
        return {"scheme": self.scheme.label, "public_key": base64.b64encode(self.public_key).decode()}

    @classmethod
    def from_json(cls, entry: object) -> "ConsensusKey":
        """From ``{"scheme": "ml-dsa-65", "public_key": "<base64>"}``; ConsensusKeyError says what is wrong."""
        if not isinstance(entry, dict) or set(entry) != {"scheme", "public_key"}:
            raise ConsensusKeyError('a consensus key is {"scheme": ..., "public_key": "<base64>"}')
        return cls(scheme_named(entry["scheme"]), public_key_from_base64(entry["public_key"]))


def public_key_from_base64(text: object) -> bytes:
    if not isinstance(text, str):
        raise ConsensusKeyError("a public key is a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConsensusKeyError("the public key is not valid base64") from None


# The same vote is checked again inside the certificate it ends up in (and,
# in the simulator, by every validator of one process): remembered, since
# verifying is deterministic.
VERIFIED_CACHE_SIZE = 8192


def _cached_by_digest(maxsize: int):
    """An LRU cache of a signature check's answers, keyed by a SHA-256 digest of its arguments.

    Not ``functools.lru_cache``: that keeps the arguments themselves, and an
    ML-DSA-65 key and signature are 5 KB, so 8,192 entries would pin ~43 MB
    (here ~0.1 KB each). Exposes ``cache_clear`` and ``__wrapped__`` as lru_cache does."""
    def decorate(check):
        answers: collections.OrderedDict[bytes, bool] = collections.OrderedDict()
        lock = threading.Lock()  # ledgers verify on worker threads too

        @functools.wraps(check)
        def cached(scheme: Scheme, public_key: bytes, signature: bytes, message: bytes) -> bool:
            digest = hashlib.sha256()
            for part in (public_key, signature):  # length-prefixed: no two argument lists hash alike
                digest.update(len(part).to_bytes(4, "big"))
                digest.update(part)
            digest.update(bytes([scheme]))
            digest.update(message)
            key = digest.digest()
            with lock:
                answer = answers.get(key)
                if answer is not None:
                    answers.move_to_end(key)
                    return answer
            answer = check(scheme, public_key, signature, message)
            with lock:
                answers[key] = answer
                if len(answers) > maxsize:
                    answers.popitem(last=False)
            return answer

        def cache_clear() -> None:
            with lock:
                answers.clear()

        cached.cache_clear = cache_clear
        cached.cache_len = lambda: len(answers)
        return cached
    return decorate


@_cached_by_digest(VERIFIED_CACHE_SIZE)
def verify_signature(scheme: Scheme, public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is ``scheme``'s valid signature of ``message`` by ``public_key`` (exact length)."""
    if len(signature) != scheme.signature_size:
        return False
    if scheme is Scheme.ED25519:
        return ed25519_verifies(public_key, signature, message)
    try:
        MLDSA65PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def ed25519_verifies(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``message`` by the raw 32-byte ``public_key``,
    by libsodium's rule (the chain's: see the module's notes)."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        crypto_sign_open(signature + message, public_key)
    except CryptoError:
        return False
    return True


def public_key_of(identity: Identity) -> bytes:
    """The raw 32-byte Ed25519 public key that names a validator."""
    return identity.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def ml_dsa_key_from_seed(seed: bytes) -> MLDSA65PrivateKey:
    if len(seed) != ML_DSA_SEED_SIZE:
        raise ConsensusKeyError(f"an {Scheme.ML_DSA_65.label} seed is {ML_DSA_SEED_SIZE} bytes, not {len(seed)}")
    return MLDSA65PrivateKey.from_seed_bytes(seed)


def ml_dsa_public_key(private_key: MLDSA65PrivateKey) -> ConsensusKey:
    return ConsensusKey(Scheme.ML_DSA_65, private_key.public_key().public_bytes_raw())


class Signer:
    """What signs a validator's consensus messages: its identity (the name) and, if declared, an ML-DSA-65 key.

    Without ``ml_dsa`` it signs with the identity's Ed25519 key, as every validator did before schemes."""

    def __init__(self, identity: Identity, ml_dsa: MLDSA65PrivateKey | None = None):
        self.identity = identity
        self.name = public_key_of(identity)
        self._ml_dsa = ml_dsa
        self.consensus_key = None if ml_dsa is None else ml_dsa_public_key(ml_dsa)

    @property
    def scheme(self) -> Scheme:
        return Scheme.ED25519 if self._ml_dsa is None else Scheme.ML_DSA_65

    def sign(self, message: bytes) -> bytes:
        return self.identity.sign(message) if self._ml_dsa is None else self._ml_dsa.sign(message)

    def for_key(self, declared: ConsensusKey | None) -> "Signer | None":
        """What signs for a validator whose set declares ``declared``: the identity alone when it declares
        none (a node that made its ML-DSA key before the chain took it), this signer when it is our key,
        None when it is a key we do not hold."""
        if declared is None:
            return self if self._ml_dsa is None else Signer(self.identity)
        return self if declared == self.consensus_key else None


def as_signer(who: Identity | Signer) -> Signer:
    return who if isinstance(who, Signer) else Signer(who)


def possession_bytes(chain_id: str, owner: bytes) -> bytes:
    chain = chain_id.encode()
    return POSSESSION_DOMAIN + bytes([len(chain)]) + chain + owner


def prove_possession(private_key: MLDSA65PrivateKey, chain_id: str, owner: bytes) -> bytes:
    """The new key's signature binding it to ``owner`` on ``chain_id`` (see the module docstring)."""
    return private_key.sign(possession_bytes(chain_id, owner))


def holds_key(key: ConsensusKey, chain_id: str, owner: bytes, proof: bytes) -> bool:
    return verify_signature(key.scheme, key.public_key, proof, possession_bytes(chain_id, owner))


__all__ = [
    "ConsensusKey", "ConsensusKeyError", "MAX_SIGNATURE_SIZE", "ML_DSA_SEED_SIZE", "SCHEME_LABELS", "Scheme", "VERIFIED_CACHE_SIZE",
    "Signer", "as_signer", "holds_key", "ml_dsa_key_from_seed", "ml_dsa_public_key", "possession_bytes",
    "prove_possession", "public_key_from_base64", "public_key_of", "scheme_named", "verify_signature",
]
