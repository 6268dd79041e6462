"""Signed attestations: one peer's review of another, exchanged over ``/hm/trust/1.0.0``.

Wire format (all integers big-endian), at most :data:`MAX_ATTESTATION_SIZE` bytes::

    magic     4   b"hmA1"
    issuer    1+n peer ID multihash (Ed25519 peer IDs inline the public key)
    subject   1+n peer ID multihash
    good      4   u32, satisfactory interactions the issuer had with the subject
    bad       4   u32, unsatisfactory ones
    issued_at 8   u64, milliseconds since the Unix epoch
    sequence  8   u64, strictly increasing per (issuer, subject): a newer review replaces an older one
    signature 64  Ed25519 over SIGNING_DOMAIN + everything above

The issuer's key comes from its own peer ID, so an attestation is
self-contained; only peer IDs that inline an Ed25519 key can issue one.
Acceptance rules beyond the signature (age, future time, replay, self-review,
rate) live in :class:`AttestationGate`, which is sans-IO: it is given ``now``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hypermesh.transport.identity import (
    KEY_TYPE_ED25519,
    Identity,
    IdentityError,
    PeerId,
    decode_public_key,
    verify_signature,
)

MAGIC = b"hmA1"
SIGNING_DOMAIN = b"hypermesh/trust/attestation/v1\x00"
# Two inlined-key peer IDs (~38 bytes each), counts, times and a signature fit
# in about 170 bytes; the bound leaves room for sha2-256 IDs and nothing more.
MAX_ATTESTATION_SIZE = 256
MAX_PEER_ID_SIZE = 64
SIGNATURE_SIZE = 64
# Counts are decayed tallies rounded; no honest node reports more interactions than this.
MAX_INTERACTIONS = 1_000_000
_TAIL = struct.Struct(">IIQQ")


class AttestationError(ValueError):
    """An attestation that must be refused; the message says why."""


@dataclass(frozen=True, slots=True)
class Attestation:
    issuer: PeerId
    subject: PeerId
    good: int
    bad: int
    issued_at_ms: int
    sequence: int
    signature: bytes = b""

    @property
    def satisfaction(self) -> float:
        """The issuer's view of the subject, 0..1 (Beta mean with a uniform prior)."""
        return (self.good + 1) / (self.good + self.bad + 2)

    def body(self) -> bytes:
        issuer, subject = self.issuer.multihash, self.subject.multihash
        return (
            MAGIC
            + bytes([len(issuer)])
            + issuer
            + bytes([len(subject)])
            + subject
            + _TAIL.pack(self.good, self.bad, self.issued_at_ms, self.sequence)
        )

    def encode(self) -> bytes:
        if len(self.signature) != SIGNATURE_SIZE:
            raise AttestationError("attestation is not signed")
        return self.body() + self.signature


def sign_attestation(
    identity: Identity, subject: PeerId, good: int, bad: int, issued_at_ms: int, sequence: int
) -> Attestation:
    unsigned = Attestation(identity.peer_id, subject, good, bad, issued_at_ms, sequence)
    _check_fields(unsigned)
    return Attestation(
        identity.peer_id, subject, good, bad, issued_at_ms, sequence,
        identity.sign(SIGNING_DOMAIN + unsigned.body()),
    )


def _check_fields(attestation: Attestation) -> None:
    if attestation.issuer == attestation.subject:
        raise AttestationError("an attestation about its own issuer carries no information")
    for name in ("good", "bad"):
        value = getattr(attestation, name)
        if not 0 <= value <= MAX_INTERACTIONS:
            raise AttestationError(f"{name} count {value} is outside 0..{MAX_INTERACTIONS}")
    if not 0 <= attestation.issued_at_ms < 2**63 or not 0 <= attestation.sequence < 2**64:
        raise AttestationError("issued_at or sequence out of range")


def _take_peer_id(data: bytes, offset: int, role: str) -> tuple[PeerId, int]:
    if offset >= len(data):
        raise AttestationError(f"attestation is truncated before its {role}")
    length = data[offset]
    end = offset + 1 + length
    if length == 0 or length > MAX_PEER_ID_SIZE or end > len(data):
        raise AttestationError(f"attestation {role} has a bad length {length}")
    try:
        return PeerId.from_bytes(data[offset + 1 : end]), end
    except IdentityError as exc:
        raise AttestationError(f"attestation {role}: {exc}") from None


def decode_attestation(data: bytes) -> Attestation:
    """Parse and verify the signature; raise :class:`AttestationError` otherwise."""
    if len(data) > MAX_ATTESTATION_SIZE:
        raise AttestationError(f"attestation is {len(data)} bytes, more than {MAX_ATTESTATION_SIZE}")
    if not data.startswith(MAGIC):
        raise AttestationError("not an attestation (bad magic)")
    issuer, offset = _take_peer_id(data, len(MAGIC), "issuer")
    subject, offset = _take_peer_id(data, offset, "subject")
    if len(data) != offset + _TAIL.size + SIGNATURE_SIZE:
        raise AttestationError("attestation has the wrong length for its fields")
    good, bad, issued_at_ms, sequence = _TAIL.unpack_from(data, offset)
    signature = data[offset + _TAIL.size :]
    attestation = Attestation(issuer, subject, good, bad, issued_at_ms, sequence, bytes(signature))
    _check_fields(attestation)
    public_key = issuer.inlined_public_key()
    if public_key is None or decode_public_key(public_key)[0] != KEY_TYPE_ED25519:
        raise AttestationError("issuer's peer ID does not carry an Ed25519 key")
    if not verify_signature(public_key, SIGNING_DOMAIN + data[: offset + _TAIL.size], signature):
        raise AttestationError("attestation signature does not verify (forged or altered)")
    return attestation


@dataclass(frozen=True, slots=True)
class GateConfig:
    # Reviews older than this say little about the subject today.
    max_age: float = 7 * 24 * 3600.0
    # Clocks differ; more than this ahead is a lie or a broken clock.
    max_clock_skew: float = 60.0
    # Per sender: a burst, then a steady rate (attestations/s).
    burst: int = 64
    rate: float = 1.0
    # Bound on remembered (issuer, subject) sequence numbers.
    max_tracked_pairs: int = 1_000_000


class AttestationGate:
    """Decides whether a verified attestation is admitted, given ``now`` (seconds).

    Refuses, each with its own message: reviews from the future, too old,
    replayed or superseded (sequence not above the last one admitted for
    that issuer and subject), and senders over their rate.
    """

    def __init__(self, config: GateConfig = GateConfig()):
        self.config = config
        self._last_sequence: dict[tuple[PeerId, PeerId], int] = {}
        self._buckets: dict[PeerId, tuple[float, float]] = {}

    def last_sequence(self, issuer: PeerId, subject: PeerId) -> int | None:
        return self._last_sequence.get((issuer, subject))

    def _take_token(self, sender: PeerId, now: float) -> bool:
        tokens, at = self._buckets.get(sender, (float(self.config.burst), now))
        tokens = min(float(self.config.burst), tokens + max(0.0, now - at) * self.config.rate)
        if tokens < 1.0:
            self._buckets[sender] = (tokens, now)
            return False
        self._buckets[sender] = (tokens - 1.0, now)
        return True

    def admit(self, attestation: Attestation, sender: PeerId, now: float) -> None:
        """Raise :class:`AttestationError` unless the attestation is to be used."""
        if not self._take_token(sender, now):
            raise AttestationError(f"sender {sender.short()} is over its attestation rate")
        issued_at = attestation.issued_at_ms / 1000.0
        if issued_at > now + self.config.max_clock_skew:
            raise AttestationError(f"attestation is dated {issued_at - now:.0f} s in the future")
        if now - issued_at > self.config.max_age:
            raise AttestationError(f"attestation is {now - issued_at:.0f} s old, older than {self.config.max_age:.0f} s")
        key = (attestation.issuer, attestation.subject)
        last = self._last_sequence.get(key)
        if last is not None and attestation.sequence <= last:
            raise AttestationError(
                f"attestation sequence {attestation.sequence} is not above {last}: replayed or superseded"
            )
        if last is None and len(self._last_sequence) >= self.config.max_tracked_pairs:
            raise AttestationError("too many attestations tracked; refusing new pairs")
        self._last_sequence[key] = attestation.sequence

    def restore(self, issuer: PeerId, subject: PeerId, sequence: int) -> None:
        """Remember a sequence number admitted before a restart."""
        key = (issuer, subject)
        self._last_sequence[key] = max(sequence, self._last_sequence.get(key, -1))
