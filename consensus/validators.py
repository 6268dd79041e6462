"""The validator set: voting power, the quorum rule and the proposer rotation."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from .signing import ConsensusKey, Scheme, public_key_of, verify_signature  # noqa: F401 (public_key_of: re-exported)

PUBLIC_KEY_SIZE = 32
# Bounds every list indexed by validator (commit certificates, vote tables).
MAX_VALIDATORS = 1024
# Validators that sign with ML-DSA-65 (3,309-byte signatures): at most this
# many in a set, so that a commit certificate (which every block carries, for
# its parent) stays under half of a block's 1 MiB (128 × 3.3 KB + the rest in
# Ed25519 ≈ 0.5 MB) and a consensus message under ~1.5 MB.
MAX_ML_DSA_VALIDATORS = 128
# Keeps the total power (and so every sum of powers) a u64.
MAX_POWER = 1 << 48


class ValidatorSetError(ValueError):
    """A validator set that breaks the rules (duplicates, zero power, too many)."""


@dataclass(frozen=True, slots=True)
class Validator:
    """``public_key``: the Ed25519 key that names it; ``consensus_key``: what it signs votes with, if not that."""

    public_key: bytes
    power: int
    consensus_key: ConsensusKey | None = None

    @property
    def scheme(self) -> Scheme:
        return Scheme.ED25519 if self.consensus_key is None else self.consensus_key.scheme

    def verifies(self, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` is this validator's, in its scheme (exact length), over ``message``."""
        key = self.consensus_key
        if key is None:
            return verify_signature(Scheme.ED25519, self.public_key, signature, message)
        return verify_signature(key.scheme, key.public_key, signature, message)


class ValidatorSet:
    """Validators ordered by public key; powers, quorums and proposers.

    A quorum is more than two thirds of the total voting power; any two
    quorums share more than a third, so more than the Byzantine power f < N/3.
    """

    def __init__(self, validators: list[Validator]):
        if not validators:
            raise ValidatorSetError("a validator set needs at least one validator")
        if len(validators) > MAX_VALIDATORS:
            raise ValidatorSetError(f"{len(validators)} validators exceed {MAX_VALIDATORS}")
        ordered = sorted(validators, key=lambda v: v.public_key)
        for validator in ordered:
            if len(validator.public_key) != PUBLIC_KEY_SIZE:
                raise ValidatorSetError("a validator's public key must be 32 bytes")
            if not 0 < validator.power <= MAX_POWER:
                raise ValidatorSetError(f"voting power must be in 1..{MAX_POWER}")
        keys = [v.public_key for v in ordered]
        if len(set(keys)) != len(keys):
            raise ValidatorSetError("a validator appears twice")
        if sum(v.consensus_key is not None for v in ordered) > MAX_ML_DSA_VALIDATORS:
            raise ValidatorSetError(f"more than {MAX_ML_DSA_VALIDATORS} validators sign with ML-DSA-65")
        self.validators: tuple[Validator, ...] = tuple(ordered)
        self.total_power = sum(v.power for v in ordered)
        self._index = {key: i for i, key in enumerate(keys)}
        # The rotation runs on powers divided by their common divisor (the
        # same sequence) and repeats every _period elections; proposers of
        # elections 0, 1, ... are remembered, so this list never grows past that.
        common = math.gcd(*(v.power for v in ordered))
        self._weights = [v.power // common for v in ordered]
        self._period = sum(self._weights)
        self._elections: list[int] = []
        self._priorities = [0] * len(ordered)

    def __len__(self) -> int:
        return len(self.validators)

    def index_of(self, public_key: bytes) -> int | None:
        return self._index.get(public_key)

    def power_of(self, public_key: bytes) -> int:
        index = self._index.get(public_key)
        return 0 if index is None else self.validators[index].power

    def is_quorum(self, power: int) -> bool:
        """More than two thirds of the voting power."""
        return 3 * power > 2 * self.total_power

    def exceeds_faulty(self, power: int) -> bool:
        """More than a third: at least one honest validator is among them."""
        return 3 * power > self.total_power

    def digest(self) -> bytes:
        """SHA-256 over the canonical encoding: key ‖ power:u64 per validator in key order (v1, a set of
        Ed25519 signers only, as before schemes existed), or, once any validator declared a consensus key,
        key ‖ power:u64 ‖ len:u16 ‖ (scheme:u8 ‖ consensus key) (v2; len 0 for the name key), so a client that
        checks the digest checks the keys it verifies signatures with too."""
        declared = any(v.consensus_key is not None for v in self.validators)
        h = hashlib.sha256(b"hypermesh-validator-set-v2\x00" if declared else b"hypermesh-validator-set-v1\x00")
        for validator in self.validators:
            h.update(validator.public_key + validator.power.to_bytes(8, "big"))
            if declared:
                key = b"" if validator.consensus_key is None else validator.consensus_key.encode()
                h.update(len(key).to_bytes(2, "big") + key)
        return h.digest()

    def proposer(self, height: int, round_: int) -> bytes:
        """The public key of the proposer of (height, round): election height + round."""
        election = (height + round_) % self._period
        while len(self._elections) <= election:
            self._elections.append(self._elect())
        return self.validators[self._elections[election]].public_key

    def _elect(self) -> int:
        """One step of smooth weighted round robin; ties go to the lower index."""
        priorities = self._priorities
        best = 0
        for i, weight in enumerate(self._weights):
            priorities[i] += weight
            if priorities[i] > priorities[best]:
                best = i
        priorities[best] -= self._period
        return best
