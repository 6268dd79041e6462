"""Consensus messages: a canonical binary encoding, signatures and their checks.

Every message is ``version:u8 ‖ kind:u8 ‖ body`` with fixed-width big-endian
integers and length-prefixed byte strings; one value has exactly one encoding
and the decoder refuses every other (unknown kinds, out-of-range fields,
non-canonical flags, unsorted or repeated certificate entries, trailing
bytes), so what is hashed or signed never depends on who encoded it.

The one exception is the value (block) inside a proposal or a commit: it
travels Brotli-compressed at quality 1 once it reaches
``COMPRESS_VALUES_FROM`` bytes (``codec:u8 ‖ data``, codec 0 raw, 1
Brotli; the codec follows from the value's length). The compressed bytes
themselves are not checked to be canonical (another Brotli version may
compress differently), and need not be: only the decompressed value is
hashed, and its block ID is what proposals and votes sign.

Evidence of equivocation is two conflicting votes, or two proposal headers
(:class:`ProposalHeader`: what a proposer signed, without the value) of one
round's proposer.

Signatures are over *sign-bytes*, a separate canonical string that
starts with a domain tag and names the chain, the message type, height,
round, proof-of-lock round and block ID; a signature for one chain, height,
round or type therefore verifies for no other. Proposals sign the block ID
(SHA-256 of the value), not the value itself. Each validator signs in its
scheme (signing.py): Ed25519 (64 bytes) by default, or ML-DSA-65 (3,309).
A message whose signatures are all 64 bytes is version 1, each signature
fixed-width, as before schemes; any other is version 2, where every
signature is ``len:u16 ‖ bytes`` (1..MAX_SIGNATURE_SIZE), and a version-2
message of 64-byte signatures only is refused (one encoding per value).
The decoder does not know schemes; verification checks a signature's exact
length for its validator's scheme.

Decoding (:func:`decode_message`) checks form only and raises
:class:`WireError`; checking a message against a validator set
(:func:`verify_vote` and friends) raises the :class:`RejectedMessage`
subclasses, whose ``misbehaviour`` says whether the sender is to blame.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass, field

import brotli

from hypermesh.transport.identity import Identity

from .signing import MAX_SIGNATURE_SIZE, Signer, as_signer
from .validators import MAX_ML_DSA_VALIDATORS, MAX_VALIDATORS, PUBLIC_KEY_SIZE, Validator, ValidatorSet

PROTOCOL_ID = "/hm/consensus/1.0.0"
VERSION = 1
# Messages with a signature other than 64 bytes (an ML-DSA-65 signer): signatures length-prefixed.
LONG_SIGNATURES_VERSION = 2
SIGN_DOMAIN = b"hypermesh/consensus/v1\x00"
BLOCK_ID_SIZE = 32
SIGNATURE_SIZE = 64
MAX_CHAIN_ID_SIZE = 50
# A value (block) travels whole inside its proposal; 1 MiB bounds what one
# message can make a node buffer, hash and keep per round.
MAX_VALUE_SIZE = 1 << 20
# Values this long or longer travel (and rest in the block store) Brotli-compressed at quality 1 (fast,
# and the gain is in the repeated keys and chain IDs of transactions); shorter ones do not pay for it.
COMPRESS_VALUES_FROM = 1024
_RAW_VALUE, _BROTLI_VALUE = 0, 1
# Brotli's worst case on incompressible input is a few bytes per 64 KiB block.
_MAX_PACKED_VALUE_SIZE = 1 + MAX_VALUE_SIZE + 1024
MAX_HEIGHT = (1 << 63) - 1
MAX_ROUND = (1 << 31) - 1
# The largest certificate: every validator in a version-2 entry (index, length, signature), at most
# MAX_ML_DSA_VALIDATORS of them with ML-DSA-65 signatures: ~0.5 MB, so a message stays under ~1.6 MB
# (the consensus stream's frame limit, and what a commit or state-sync answer may take).
MAX_CERTIFICATE_SIGNATURE_BYTES = (MAX_VALIDATORS * (2 + 2 + SIGNATURE_SIZE)
                                   + MAX_ML_DSA_VALIDATORS * (MAX_SIGNATURE_SIZE - SIGNATURE_SIZE))
MAX_MESSAGE_SIZE = 64 + _MAX_PACKED_VALUE_SIZE + MAX_CERTIFICATE_SIGNATURE_BYTES


class ConsensusError(Exception):
    """Base of every consensus error."""


class WireError(ConsensusError):
    """Bytes that are not a well-formed, canonical consensus message."""


class RejectedMessage(ConsensusError):
    """A well-formed message that is not accepted; ``misbehaviour`` blames its sender."""

    misbehaviour = False


class ForgedSignature(RejectedMessage):
    misbehaviour = True


class UnknownValidator(RejectedMessage):
    misbehaviour = True


class NotProposer(RejectedMessage):
    misbehaviour = True


class InvalidCertificate(RejectedMessage):
    misbehaviour = True


class InvalidEvidence(RejectedMessage):
    misbehaviour = True


class InvalidValue(RejectedMessage):
    """A proposal whose value the application refuses."""

    misbehaviour = True


class WrongHeight(RejectedMessage):
    """For a height this node is not at (past ones are answered with their decision)."""


class RoundOutOfRange(RejectedMessage):
    """For a round too far ahead of ours to keep."""


class DuplicateMessage(RejectedMessage):
    """Seen before (gossip re-sends are normal)."""


class Kind(enum.IntEnum):
    PREVOTE = 0x01
    PRECOMMIT = 0x02
    PROPOSAL = 0x20
    COMMIT = 0x30
    CERTIFICATE = 0x31
    EVIDENCE = 0x40
    STATUS = 0x50


VOTE_KINDS = (Kind.PREVOTE, Kind.PRECOMMIT)


def block_id_of(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def sign_bytes(chain_id: str, kind: Kind, height: int, round_: int, block_id: bytes | None, pol_round: int = -1) -> bytes:
    chain = chain_id.encode()
    if not 0 < len(chain) <= MAX_CHAIN_ID_SIZE:
        raise ValueError(f"chain ID must be 1..{MAX_CHAIN_ID_SIZE} bytes")
    return b"".join((
        SIGN_DOMAIN,
        bytes([len(chain)]), chain,
        struct.pack(">BQIi", kind, height, round_, pol_round),
        _block_id_field(block_id),
    ))


def _block_id_field(block_id: bytes | None) -> bytes:
    return b"\x00" if block_id is None else b"\x01" + block_id


# ------------------------------------------------------------------ messages


@dataclass(frozen=True, slots=True)
class Vote:
    kind: Kind  # PREVOTE or PRECOMMIT
    height: int
    round: int
    block_id: bytes | None  # None: a vote for nil
    validator: bytes
    signature: bytes

    def sign_bytes(self, chain_id: str) -> bytes:
        return sign_bytes(chain_id, self.kind, self.height, self.round, self.block_id)


@dataclass(frozen=True)
class Proposal:
    height: int
    round: int
    pol_round: int  # -1, or the round of the polka the proposer re-proposes from
    value: bytes
    proposer: bytes
    signature: bytes
    block_id: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "block_id", block_id_of(self.value))

    def sign_bytes(self, chain_id: str) -> bytes:
        return sign_bytes(chain_id, Kind.PROPOSAL, self.height, self.round, self.block_id, self.pol_round)


@dataclass(frozen=True, slots=True)
class CommitCertificate:
    """Precommits of more than two thirds of the power for one block: the proof of a decision."""

    height: int
    round: int
    block_id: bytes
    # (validator index in the set, signature), indices strictly increasing
    signatures: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True, slots=True)
class Commit:
    """A decided value with its certificate; what a node behind is sent."""

    certificate: CommitCertificate
    value: bytes


@dataclass(frozen=True, slots=True)
class ProposalHeader:
    """What a proposer signed, without the value: one half of the evidence of two proposals."""

    height: int
    round: int
    pol_round: int
    block_id: bytes
    validator: bytes  # the proposer (named as a vote's signer is, for what reads evidence)
    signature: bytes

    kind = Kind.PROPOSAL

    def sign_bytes(self, chain_id: str) -> bytes:
        return sign_bytes(chain_id, Kind.PROPOSAL, self.height, self.round, self.block_id, self.pol_round)


def proposal_header(proposal: Proposal) -> ProposalHeader:
    return ProposalHeader(proposal.height, proposal.round, proposal.pol_round, proposal.block_id,
                          proposal.proposer, proposal.signature)


@dataclass(frozen=True, slots=True)
class Evidence:
    """Two votes of one validator for different blocks at one height, round and type, or two different
    proposals of one proposer for one height and round (as :class:`ProposalHeader`s)."""

    first: Vote | ProposalHeader
    second: Vote | ProposalHeader


@dataclass(frozen=True, slots=True)
class Status:
    """Unsigned: "I have decided every height below ``height``" (a node that signs nothing asks for commits)."""

    height: int


Message = Vote | Proposal | Commit | Evidence | Status


def signer_of(message: Message) -> bytes | None:
    """The key that signed a vote or proposal (None for commits, evidence and status)."""
    if isinstance(message, Vote):
        return message.validator
    if isinstance(message, Proposal):
        return message.proposer
    return None


def sign_vote(signer: Identity | Signer, chain_id: str, kind: Kind, height: int, round_: int,
              block_id: bytes | None) -> Vote:
    """A vote signed in the signer's scheme (an identity alone: Ed25519)."""
    signer = as_signer(signer)
    signature = signer.sign(sign_bytes(chain_id, kind, height, round_, block_id))
    return Vote(kind, height, round_, block_id, signer.name, signature)


def sign_proposal(signer: Identity | Signer, chain_id: str, height: int, round_: int, pol_round: int,
                  value: bytes) -> Proposal:
    signer = as_signer(signer)
    signature = signer.sign(sign_bytes(chain_id, Kind.PROPOSAL, height, round_, block_id_of(value), pol_round))
    return Proposal(height, round_, pol_round, value, signer.name, signature)


def make_evidence(a: Vote | Proposal, b: Vote | Proposal) -> Evidence:
    """The evidence of two conflicting votes or proposals, in canonical order (by encoding)."""
    if isinstance(a, Proposal):
        a, b = proposal_header(a), proposal_header(b)
    long = _any_long((a.signature, b.signature))
    first, second = sorted((a, b), key=lambda half: _encode_evidence_half(half, long))
    return Evidence(first, second)


def make_certificate(precommits: list[Vote], validators: ValidatorSet) -> CommitCertificate:
    """A certificate from precommits (already verified) for one block, height and round."""
    first = precommits[0]
    entries = sorted((validators.index_of(v.validator), v.signature) for v in precommits)
    return CommitCertificate(first.height, first.round, first.block_id, tuple(entries))


# ------------------------------------------------------------ verification


def _member(validators: ValidatorSet, key: bytes) -> Validator | None:
    index = validators.index_of(key)
    return None if index is None else validators.validators[index]


def _why_not(validator: Validator, signature: bytes) -> str:
    """What is wrong with a signature that does not verify, for the error."""
    scheme = validator.scheme
    if len(signature) != scheme.signature_size:
        return f"a {len(signature)}-byte signature, the validator signs {scheme.label} ({scheme.signature_size} bytes)"
    return f"the {scheme.label} signature does not verify"


def verify_vote(vote: Vote, chain_id: str, validators: ValidatorSet) -> None:
    validator = _member(validators, vote.validator)
    if validator is None:
        raise UnknownValidator("vote from a key outside the validator set")
    if not validator.verifies(vote.signature, vote.sign_bytes(chain_id)):
        raise ForgedSignature(f"vote: {_why_not(validator, vote.signature)}")


def verify_proposal(proposal: Proposal, chain_id: str, validators: ValidatorSet) -> None:
    validator = _member(validators, proposal.proposer)
    if validator is None:
        raise UnknownValidator("proposal from a key outside the validator set")
    if validators.proposer(proposal.height, proposal.round) != proposal.proposer:
        raise NotProposer(f"not the proposer of height {proposal.height} round {proposal.round}")
    if not validator.verifies(proposal.signature, proposal.sign_bytes(chain_id)):
        raise ForgedSignature(f"proposal: {_why_not(validator, proposal.signature)}")


def verify_certificate(certificate: CommitCertificate, chain_id: str, validators: ValidatorSet) -> None:
    """Raises :class:`InvalidCertificate` unless it carries valid precommits of a quorum."""
    message = sign_bytes(chain_id, Kind.PRECOMMIT, certificate.height, certificate.round, certificate.block_id)
    power = 0
    for index, signature in certificate.signatures:
        if index >= len(validators):
            raise InvalidCertificate(f"validator index {index} outside the set")
        validator = validators.validators[index]
        if not validator.verifies(signature, message):
            raise InvalidCertificate(f"validator {index}: {_why_not(validator, signature)}")
        power += validator.power
    if not validators.is_quorum(power):
        raise InvalidCertificate(f"signatures of {power} of {validators.total_power} power are not a quorum")


def verify_commit(commit: Commit, chain_id: str, validators: ValidatorSet) -> None:
    if block_id_of(commit.value) != commit.certificate.block_id:
        raise InvalidCertificate("value does not match the certificate's block ID")
    verify_certificate(commit.certificate, chain_id, validators)


def verify_evidence(evidence: Evidence, chain_id: str, validators: ValidatorSet) -> None:
    """Raises :class:`InvalidEvidence` unless it proves an equivocation."""
    a, b = evidence.first, evidence.second
    if (a.kind, a.height, a.round, a.validator) != (b.kind, b.height, b.round, b.validator):
        raise InvalidEvidence("votes are not by one validator for one height, round and type")
    if isinstance(a, ProposalHeader):
        if (a.block_id, a.pol_round) == (b.block_id, b.pol_round):
            raise InvalidEvidence("the proposals are the same")
        if validators.proposer(a.height, a.round) != a.validator:
            raise InvalidEvidence(f"not the proposer of height {a.height} round {a.round}")
        proposer = _member(validators, a.validator)
        if not all(proposer.verifies(p.signature, p.sign_bytes(chain_id)) for p in (a, b)):
            raise InvalidEvidence("a proposal signature does not verify")
        return
    if a.block_id == b.block_id:
        raise InvalidEvidence("votes are for the same block")
    try:
        verify_vote(a, chain_id, validators)
        verify_vote(b, chain_id, validators)
    except RejectedMessage as exc:
        raise InvalidEvidence(f"a vote does not verify: {exc}") from None


# ---------------------------------------------------------------- encoding


def pack_value(value: bytes) -> bytes:
    """A value as it travels and rests: ``codec:u8 ‖ data`` (Brotli from ``COMPRESS_VALUES_FROM`` bytes on)."""
    if len(value) >= COMPRESS_VALUES_FROM:
        return bytes([_BROTLI_VALUE]) + brotli.compress(value, quality=1)
    return bytes([_RAW_VALUE]) + value


def unpack_value(packed: bytes) -> bytes:
    """The value of :func:`pack_value`'s output; WireError if it is malformed or would exceed MAX_VALUE_SIZE
    (decompression stops there: a small message cannot make us allocate more)."""
    if not packed or len(packed) > _MAX_PACKED_VALUE_SIZE:
        raise WireError(f"a packed value of {len(packed)} bytes")
    if packed[0] == _RAW_VALUE:
        value = packed[1:]
        if len(value) >= COMPRESS_VALUES_FROM:
            raise WireError(f"a value of {len(value)} bytes travels compressed")
    elif packed[0] == _BROTLI_VALUE:
        decompressor = brotli.Decompressor()
        try:
            value = decompressor.process(packed[1:], output_buffer_limit=MAX_VALUE_SIZE + 1)
        except brotli.error as exc:
            raise WireError(f"the value does not decompress: {exc}") from None
        if len(value) <= MAX_VALUE_SIZE and not decompressor.is_finished():
            raise WireError("the compressed value is truncated")
        if len(value) < COMPRESS_VALUES_FROM:
            raise WireError(f"a value of {len(value)} bytes travels raw")
    else:
        raise WireError(f"unknown value codec {packed[0]}")
    if len(value) > MAX_VALUE_SIZE:
        raise WireError(f"a value of more than {MAX_VALUE_SIZE} bytes")
    return value


def _any_long(signatures) -> bool:
    """Whether these signatures need version 2 (one of them is not 64 bytes)."""
    return any(len(signature) != SIGNATURE_SIZE for signature in signatures)


def _signatures_of(message: Message) -> list[bytes]:
    if isinstance(message, (Vote, Proposal)):
        return [message.signature]
    if isinstance(message, Commit):
        return [signature for _, signature in message.certificate.signatures]
    if isinstance(message, Evidence):
        return [message.first.signature, message.second.signature]
    return []


def _version(long: bool) -> int:
    return LONG_SIGNATURES_VERSION if long else VERSION


def _signature_field(signature: bytes, long: bool) -> bytes:
    return struct.pack(">H", len(signature)) + signature if long else signature


def encode_message(message: Message) -> bytes:
    long = _any_long(_signatures_of(message))
    if isinstance(message, Vote):
        return bytes([_version(long)]) + _encode_vote_body(message, long)
    if isinstance(message, Proposal):
        return b"".join((
            bytes([_version(long), Kind.PROPOSAL]),
            struct.pack(">QIi", message.height, message.round, message.pol_round),
            message.proposer, _signature_field(message.signature, long), _length_prefixed(pack_value(message.value)),
        ))
    if isinstance(message, Commit):
        return b"".join((
            bytes([_version(long), Kind.COMMIT]), _encode_certificate_body(message.certificate, long),
            _length_prefixed(pack_value(message.value)),
        ))
    if isinstance(message, Evidence):
        return bytes([_version(long), Kind.EVIDENCE]) + _encode_evidence_half(message.first, long) \
            + _encode_evidence_half(message.second, long)
    if isinstance(message, Status):
        return bytes([VERSION, Kind.STATUS]) + struct.pack(">Q", message.height)
    raise TypeError(f"not a consensus message: {type(message).__name__}")


def _length_prefixed(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def encode_certificate(certificate: CommitCertificate) -> bytes:
    long = _any_long(signature for _, signature in certificate.signatures)
    return bytes([_version(long), Kind.CERTIFICATE]) + _encode_certificate_body(certificate, long)


def _encode_vote_body(vote: Vote, long: bool) -> bytes:
    return b"".join((
        struct.pack(">BQI", vote.kind, vote.height, vote.round),
        _block_id_field(vote.block_id), vote.validator, _signature_field(vote.signature, long),
    ))


def _encode_evidence_half(half: Vote | ProposalHeader, long: bool) -> bytes:
    """A vote's body, or a proposal header: kind ‖ height ‖ round ‖ pol_round:i32 ‖ block ID ‖ proposer ‖ signature."""
    if isinstance(half, Vote):
        return _encode_vote_body(half, long)
    return b"".join((struct.pack(">BQIi", Kind.PROPOSAL, half.height, half.round, half.pol_round), half.block_id,
                     half.validator, _signature_field(half.signature, long)))


def _encode_certificate_body(certificate: CommitCertificate, long: bool) -> bytes:
    return b"".join((
        struct.pack(">QI", certificate.height, certificate.round), certificate.block_id,
        struct.pack(">H", len(certificate.signatures)),
        *(struct.pack(">H", index) + _signature_field(signature, long) for index, signature in certificate.signatures),
    ))


class _Reader:
    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.offset = 0
        self.long = False  # version 2: signatures length-prefixed
        self.saw_long = False

    def version(self) -> None:
        (version,) = self.unpack(">B")
        if version not in (VERSION, LONG_SIGNATURES_VERSION):
            raise WireError(f"unknown version {version}")
        self.long = version == LONG_SIGNATURES_VERSION

    def signature(self) -> bytes:
        if not self.long:
            return self.take(SIGNATURE_SIZE)
        (size,) = self.unpack(">H")
        if not 0 < size <= MAX_SIGNATURE_SIZE:
            raise WireError(f"a signature of {size} bytes (at most {MAX_SIGNATURE_SIZE})")
        self.saw_long = self.saw_long or size != SIGNATURE_SIZE
        return self.take(size)

    def take(self, size: int) -> bytes:
        end = self.offset + size
        if end > len(self.data):
            raise WireError("message is truncated")
        chunk = bytes(self.data[self.offset:end])
        self.offset = end
        return chunk

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def height_and_round(self) -> tuple[int, int]:
        height, round_ = self.unpack(">QI")
        if not 0 < height <= MAX_HEIGHT:
            raise WireError(f"height {height} out of range")
        if round_ > MAX_ROUND:
            raise WireError(f"round {round_} out of range")
        return height, round_

    def block_id(self) -> bytes | None:
        flag = self.take(1)[0]
        if flag == 0:
            return None
        if flag != 1:
            raise WireError(f"block ID flag {flag} is neither 0 nor 1")
        return self.take(BLOCK_ID_SIZE)

    def value(self) -> bytes:
        (size,) = self.unpack(">I")
        if size > _MAX_PACKED_VALUE_SIZE:
            raise WireError(f"value of {size} bytes exceeds {MAX_VALUE_SIZE}")
        return unpack_value(self.take(size))

    def vote(self) -> Vote:
        try:
            kind = Kind(self.take(1)[0])
        except ValueError:
            raise WireError("unknown vote type") from None
        if kind not in VOTE_KINDS:
            raise WireError(f"{kind.name} is not a vote")
        height, round_ = self.height_and_round()
        block_id = self.block_id()
        return Vote(kind, height, round_, block_id, self.take(PUBLIC_KEY_SIZE), self.signature())

    def evidence_half(self) -> Vote | ProposalHeader:
        if self.data[self.offset:self.offset + 1] != bytes([Kind.PROPOSAL]):
            return self.vote()
        self.offset += 1
        height, round_ = self.height_and_round()
        (pol_round,) = self.unpack(">i")
        if not -1 <= pol_round < round_:
            raise WireError(f"proof-of-lock round {pol_round} not in -1..{round_ - 1}")
        return ProposalHeader(height, round_, pol_round, self.take(BLOCK_ID_SIZE), self.take(PUBLIC_KEY_SIZE),
                              self.signature())

    def certificate(self) -> CommitCertificate:
        height, round_ = self.height_and_round()
        block_id = self.take(BLOCK_ID_SIZE)
        (count,) = self.unpack(">H")
        if not 0 < count <= MAX_VALIDATORS:
            raise WireError(f"certificate with {count} signatures")
        entries = []
        previous = -1
        for _ in range(count):
            (index,) = self.unpack(">H")
            if index <= previous:
                raise WireError("certificate entries are not in strictly increasing validator order")
            previous = index
            entries.append((index, self.signature()))
        return CommitCertificate(height, round_, block_id, tuple(entries))

    def finish(self) -> None:
        if self.offset != len(self.data):
            raise WireError(f"{len(self.data) - self.offset} trailing bytes")
        if self.long and not self.saw_long:
            raise WireError("a version-2 message whose signatures are all 64 bytes (that is version 1)")


def decode_message(data: bytes) -> Message:
    """Strictly decode one message; raises :class:`WireError` on anything else."""
    if len(data) > MAX_MESSAGE_SIZE:
        raise WireError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    reader = _Reader(data)
    reader.version()
    (kind,) = reader.unpack(">B")
    if kind in VOTE_KINDS:
        reader.offset -= 1
        message: Message = reader.vote()
    elif kind == Kind.PROPOSAL:
        height, round_ = reader.height_and_round()
        (pol_round,) = reader.unpack(">i")
        if not -1 <= pol_round < round_:
            raise WireError(f"proof-of-lock round {pol_round} not in -1..{round_ - 1}")
        proposer, signature = reader.take(PUBLIC_KEY_SIZE), reader.signature()
        message = Proposal(height, round_, pol_round, reader.value(), proposer, signature)
    elif kind == Kind.COMMIT:
        certificate = reader.certificate()
        message = Commit(certificate, reader.value())
    elif kind == Kind.EVIDENCE:
        first, second = reader.evidence_half(), reader.evidence_half()
        if _encode_evidence_half(first, reader.long) >= _encode_evidence_half(second, reader.long):
            raise WireError("evidence votes are not in canonical order")
        message = Evidence(first, second)
    elif kind == Kind.STATUS:
        (height,) = reader.unpack(">Q")
        if not 1 <= height <= MAX_HEIGHT:
            raise WireError(f"height {height} out of range")
        message = Status(height)
    else:
        raise WireError(f"unknown message kind {kind}")
    reader.finish()
    return message


def decode_certificate(data: bytes) -> CommitCertificate:
    if len(data) > MAX_MESSAGE_SIZE:
        raise WireError("certificate too large")
    reader = _Reader(data)
    reader.version()
    if reader.unpack(">B")[0] != Kind.CERTIFICATE:
        raise WireError("not a commit certificate")
    certificate = reader.certificate()
    reader.finish()
    return certificate
