"""The consensus wire codec, signatures and the validator set, attacked from the receiving side."""

import collections
import dataclasses
import struct

import brotli
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hypermesh.consensus.signing import MAX_SIGNATURE_SIZE, Signer, ml_dsa_key_from_seed
from hypermesh.consensus.validators import Validator, ValidatorSet, ValidatorSetError, public_key_of
from hypermesh.consensus.wire import (
    COMPRESS_VALUES_FROM,
    MAX_VALUE_SIZE,
    Commit,
    CommitCertificate,
    Evidence,
    ForgedSignature,
    InvalidCertificate,
    InvalidEvidence,
    Kind,
    NotProposer,
    Proposal,
    Status,
    UnknownValidator,
    Vote,
    WireError,
    block_id_of,
    decode_certificate,
    decode_message,
    encode_certificate,
    encode_message,
    make_certificate,
    make_evidence,
    pack_value,
    sign_proposal,
    sign_vote,
    verify_certificate,
    verify_commit,
    verify_evidence,
    verify_proposal,
    verify_vote,
)
from hypermesh.transport.identity import Identity

CHAIN = "test-chain"
IDENTITIES = [Identity.from_seed(b"validator-%d" % i) for i in range(4)]
VALIDATORS = ValidatorSet([Validator(public_key_of(identity), 1) for identity in IDENTITIES])
OUTSIDER = Identity.from_seed(b"outsider")
ML_DSA_SIGNER = Signer(Identity.from_seed(b"pq"), ml_dsa_key_from_seed(bytes(range(32))))
VALUE = b"block one"


def proposer_identity(height, round_):
    key = VALIDATORS.proposer(height, round_)
    return next(i for i in IDENTITIES if public_key_of(i) == key)


def certificate_for(value, signers, height=1, round_=0):
    precommits = [sign_vote(i, CHAIN, Kind.PRECOMMIT, height, round_, block_id_of(value)) for i in signers]
    return make_certificate(precommits, VALIDATORS)


def sample_messages():
    vote = sign_vote(IDENTITIES[0], CHAIN, Kind.PREVOTE, 5, 2, block_id_of(VALUE))
    nil_vote = sign_vote(IDENTITIES[0], CHAIN, Kind.PREVOTE, 5, 2, None)
    return [
        vote,
        nil_vote,
        sign_vote(IDENTITIES[1], CHAIN, Kind.PRECOMMIT, 1, 0, None),
        sign_proposal(proposer_identity(3, 1), CHAIN, 3, 1, 0, VALUE),
        Commit(certificate_for(VALUE, IDENTITIES[:3]), VALUE),
        make_evidence(sign_proposal(proposer_identity(3, 1), CHAIN, 3, 1, 0, VALUE),
                      sign_proposal(proposer_identity(3, 1), CHAIN, 3, 1, -1, b"other")),
        Status(7),
        make_evidence(vote, nil_vote),
    ]


def long_signature_messages():
    """Messages with ML-DSA-65 signatures (version 2: signatures length-prefixed), some mixed with Ed25519."""
    vote = sign_vote(ML_DSA_SIGNER, CHAIN, Kind.PRECOMMIT, 5, 2, block_id_of(VALUE))
    ed25519_vote = sign_vote(IDENTITIES[1], CHAIN, Kind.PRECOMMIT, 5, 2, block_id_of(VALUE))
    mixed = CommitCertificate(5, 2, block_id_of(VALUE), ((0, ed25519_vote.signature), (3, vote.signature)))
    return [
        vote,
        sign_proposal(ML_DSA_SIGNER, CHAIN, 3, 1, 0, VALUE),
        Commit(mixed, VALUE),
        make_evidence(vote, sign_vote(ML_DSA_SIGNER, CHAIN, Kind.PRECOMMIT, 5, 2, None)),
        make_evidence(sign_proposal(ML_DSA_SIGNER, CHAIN, 3, 1, 0, VALUE),
                      sign_proposal(ML_DSA_SIGNER, CHAIN, 3, 1, -1, b"other")),
    ]


# ------------------------------------------------------------------ codec


@pytest.mark.parametrize("message", sample_messages() + long_signature_messages(), ids=lambda m: type(m).__name__)
def test_every_message_round_trips_byte_for_byte(message):
    encoded = encode_message(message)
    assert decode_message(encoded) == message
    assert encode_message(decode_message(encoded)) == encoded


def test_certificate_round_trips_on_its_own():
    certificate = certificate_for(VALUE, IDENTITIES[:3])
    assert decode_certificate(encode_certificate(certificate)) == certificate


@given(st.binary(max_size=600))
def test_decoder_raises_only_wire_errors_on_arbitrary_bytes(data):
    try:
        message = decode_message(data)
    except WireError:
        return
    assert encode_message(message) == data  # anything accepted is canonical


@given(
    st.sampled_from([encode_message(m) for m in sample_messages() + long_signature_messages()]),
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=0, max_value=255),
    st.sampled_from(["flip", "truncate", "append"]),
)
def test_decoder_accepts_mutations_only_as_canonical_messages(encoded, position, byte, how):
    position %= len(encoded)
    if how == "flip":
        mutated = encoded[:position] + bytes([byte]) + encoded[position + 1:]
    elif how == "truncate":
        mutated = encoded[:position]
    else:
        mutated = encoded + bytes([byte])
    try:
        message = decode_message(mutated)
    except WireError:
        return
    assert encode_message(message) == mutated


@given(
    kind=st.sampled_from([Kind.PREVOTE, Kind.PRECOMMIT]),
    height=st.integers(min_value=1, max_value=(1 << 63) - 1),
    round_=st.integers(min_value=0, max_value=(1 << 31) - 1),
    block_id=st.none() | st.binary(min_size=32, max_size=32),
    validator=st.binary(min_size=32, max_size=32),
    signature=st.binary(min_size=64, max_size=64),
)
def test_any_well_formed_vote_round_trips(kind, height, round_, block_id, validator, signature):
    vote = Vote(kind, height, round_, block_id, validator, signature)
    assert decode_message(encode_message(vote)) == vote


@given(
    signatures=st.lists(st.binary(min_size=1, max_size=MAX_SIGNATURE_SIZE), min_size=2, max_size=2),
    cut=st.integers(min_value=0, max_value=2 * MAX_SIGNATURE_SIZE + 200),
)
def test_long_signatures_round_trip_and_their_truncations_are_refused(signatures, cut):
    """Any signature length up to the largest scheme's travels (the decoder knows no schemes); a truncated
    message never decodes; a version-2 message is accepted only if it needs to be."""
    evidence = make_evidence(*(Vote(Kind.PREVOTE, 9, 1, block_id, b"\x07" * 32, signature)
                               for block_id, signature in zip((None, b"\x01" * 32), signatures)))
    encoded = encode_message(evidence)
    assert decode_message(encoded) == evidence
    assert encoded[0] == (1 if all(len(s) == 64 for s in signatures) else 2)
    with pytest.raises(WireError):
        decode_message(encoded[:cut % len(encoded)])
    with pytest.raises(WireError):
        decode_message(bytes([3 - encoded[0]]) + encoded[1:])  # the other version


def test_oversized_value_is_refused_before_it_is_read():
    header = struct.pack(">BBQIi", 1, Kind.PROPOSAL, 1, 0, -1) + bytes(96)
    with pytest.raises(WireError, match="exceeds"):
        decode_message(header + struct.pack(">I", MAX_VALUE_SIZE + 2048))


def proposal_carrying(packed: bytes) -> bytes:
    """A proposal's encoding with ``packed`` as its value field, whatever that holds."""
    proposal = sign_proposal(proposer_identity(3, 1), CHAIN, 3, 1, 0, VALUE)
    encoded = encode_message(proposal)
    head = encoded[:len(encoded) - 4 - len(pack_value(VALUE))]
    return head + struct.pack(">I", len(packed)) + packed


def test_a_large_block_travels_compressed_and_round_trips():
    value = b"".join(b"transfer %d to the same few keys;" % (i % 50) for i in range(3_000))
    proposal = sign_proposal(proposer_identity(3, 1), CHAIN, 3, 1, 0, value)
    encoded = encode_message(proposal)
    assert len(encoded) < len(value) // 4
    assert decode_message(encoded) == proposal


def test_a_compressed_value_that_would_exceed_the_limit_is_refused_without_inflating_it():
    bomb = pack_value(bytes(MAX_VALUE_SIZE))[:1] + brotli.compress(bytes(64 * MAX_VALUE_SIZE), quality=11)
    assert len(bomb) < 1_000
    with pytest.raises(WireError, match="more than"):
        decode_message(proposal_carrying(bomb))


def test_truncated_corrupt_or_miscoded_values_are_refused():
    packed = pack_value(bytes(range(256)) * 20)
    with pytest.raises(WireError, match="truncated"):
        decode_message(proposal_carrying(packed[:len(packed) // 2]))
    with pytest.raises(WireError):
        decode_message(proposal_carrying(packed[:1] + bytes(50)))
    with pytest.raises(WireError, match="codec"):
        decode_message(proposal_carrying(b"\x07" + VALUE))
    with pytest.raises(WireError, match="travels compressed"):
        decode_message(proposal_carrying(b"\x00" + bytes(COMPRESS_VALUES_FROM)))
    with pytest.raises(WireError, match="travels raw"):
        decode_message(proposal_carrying(b"\x01" + brotli.compress(VALUE)))


def test_non_canonical_forms_are_refused():
    vote = encode_message(sample_messages()[0])
    with pytest.raises(WireError, match="flag"):
        decode_message(vote[:14] + b"\x02" + vote[15:])  # block-ID flag other than 0/1
    with pytest.raises(WireError, match="height"):
        decode_message(vote[:2] + bytes(8) + vote[10:])  # height 0
    with pytest.raises(WireError, match="version"):
        decode_message(b"\x03" + vote[1:])  # version 2 is length-prefixed signatures
    with pytest.raises(WireError, match="trailing"):
        decode_message(vote + b"\x00")
    with pytest.raises(WireError, match="height"):
        decode_message(bytes([1, Kind.STATUS]) + bytes(8))  # a status for height 0
    evidence = sample_messages()[-1]
    swapped = encode_message(evidence)[:2] + encode_message(evidence.second)[1:] + encode_message(evidence.first)[1:]
    with pytest.raises(WireError, match="canonical order"):
        decode_message(swapped)


def test_certificate_with_a_repeated_validator_is_refused():
    certificate = certificate_for(VALUE, IDENTITIES[:2])
    repeated = CommitCertificate(1, 0, certificate.block_id, (certificate.signatures[0], certificate.signatures[0]))
    with pytest.raises(WireError, match="increasing"):
        decode_certificate(encode_certificate(repeated))


def test_proposal_claiming_a_lock_round_not_below_its_round_is_refused():
    proposal = sign_proposal(proposer_identity(3, 1), CHAIN, 3, 1, 0, VALUE)
    encoded = bytearray(encode_message(proposal))
    encoded[14:18] = struct.pack(">i", 1)
    with pytest.raises(WireError, match="proof-of-lock"):
        decode_message(bytes(encoded))


# ------------------------------------------------------------ signatures


def test_vote_signature_binds_chain_height_round_type_and_block():
    vote = sign_vote(IDENTITIES[0], CHAIN, Kind.PREVOTE, 5, 2, block_id_of(VALUE))
    verify_vote(vote, CHAIN, VALIDATORS)
    with pytest.raises(ForgedSignature):
        verify_vote(vote, "other-chain", VALIDATORS)
    for changed in (
        Vote(Kind.PRECOMMIT, 5, 2, vote.block_id, vote.validator, vote.signature),
        Vote(Kind.PREVOTE, 6, 2, vote.block_id, vote.validator, vote.signature),
        Vote(Kind.PREVOTE, 5, 3, vote.block_id, vote.validator, vote.signature),
        Vote(Kind.PREVOTE, 5, 2, None, vote.validator, vote.signature),
        Vote(Kind.PREVOTE, 5, 2, vote.block_id, public_key_of(IDENTITIES[1]), vote.signature),
    ):
        with pytest.raises(ForgedSignature):
            verify_vote(changed, CHAIN, VALIDATORS)


def test_vote_from_a_non_validator_is_refused():
    with pytest.raises(UnknownValidator):
        verify_vote(sign_vote(OUTSIDER, CHAIN, Kind.PREVOTE, 1, 0, None), CHAIN, VALIDATORS)


def test_proposal_from_a_validator_that_is_not_the_proposer_is_refused():
    wrong = next(i for i in IDENTITIES if i is not proposer_identity(2, 0))
    with pytest.raises(NotProposer):
        verify_proposal(sign_proposal(wrong, CHAIN, 2, 0, -1, VALUE), CHAIN, VALIDATORS)


def test_proposal_with_a_swapped_value_is_refused():
    proposal = sign_proposal(proposer_identity(2, 0), CHAIN, 2, 0, -1, VALUE)
    verify_proposal(proposal, CHAIN, VALIDATORS)
    swapped = Proposal(2, 0, -1, b"another block", proposal.proposer, proposal.signature)
    with pytest.raises(ForgedSignature):
        verify_proposal(swapped, CHAIN, VALIDATORS)


def test_certificate_needs_more_than_two_thirds_of_the_power():
    verify_certificate(certificate_for(VALUE, IDENTITIES[:3]), CHAIN, VALIDATORS)
    with pytest.raises(InvalidCertificate, match="quorum"):
        verify_certificate(certificate_for(VALUE, IDENTITIES[:2]), CHAIN, VALIDATORS)


def test_certificate_with_a_forged_signature_or_foreign_index_is_refused():
    good = certificate_for(VALUE, IDENTITIES[:3])
    missing = ({0, 1, 2, 3} - {index for index, _ in good.signatures}).pop()
    stolen = tuple(sorted(good.signatures[:2] + ((missing, good.signatures[2][1]),)))
    forged = CommitCertificate(1, 0, good.block_id, stolen)
    with pytest.raises(InvalidCertificate, match="does not verify"):
        verify_certificate(forged, CHAIN, VALIDATORS)
    foreign = CommitCertificate(1, 0, good.block_id, good.signatures + ((9, bytes(64)),))
    with pytest.raises(InvalidCertificate, match="outside"):
        verify_certificate(foreign, CHAIN, VALIDATORS)


def test_commit_whose_value_is_not_the_certified_block_is_refused():
    certificate = certificate_for(VALUE, IDENTITIES[:3])
    verify_commit(Commit(certificate, VALUE), CHAIN, VALIDATORS)
    with pytest.raises(InvalidCertificate, match="does not match"):
        verify_commit(Commit(certificate, b"forged block"), CHAIN, VALIDATORS)


def test_evidence_must_prove_a_real_equivocation():
    a = sign_vote(IDENTITIES[0], CHAIN, Kind.PREVOTE, 5, 2, block_id_of(VALUE))
    b = sign_vote(IDENTITIES[0], CHAIN, Kind.PREVOTE, 5, 2, block_id_of(b"other"))
    verify_evidence(make_evidence(a, b), CHAIN, VALIDATORS)
    other_round = sign_vote(IDENTITIES[0], CHAIN, Kind.PREVOTE, 5, 3, block_id_of(b"other"))
    other_validator = sign_vote(IDENTITIES[1], CHAIN, Kind.PREVOTE, 5, 2, block_id_of(b"other"))
    forged = Vote(b.kind, b.height, b.round, b.block_id, b.validator, bytes(64))
    for second, reason in ((other_round, "one height"), (other_validator, "one height"),
                           (a, "same block"), (forged, "does not verify")):
        with pytest.raises(InvalidEvidence, match=reason):
            verify_evidence(make_evidence(a, second), CHAIN, VALIDATORS)


def test_proposal_evidence_must_prove_two_different_proposals_of_the_proposer():
    proposer = proposer_identity(3, 1)
    a, b = (sign_proposal(proposer, CHAIN, 3, 1, -1, value) for value in (VALUE, b"other"))
    evidence = make_evidence(a, b)
    verify_evidence(evidence, CHAIN, VALIDATORS)
    assert decode_message(encode_message(evidence)) == evidence
    assert {evidence.first.validator, evidence.second.validator} == {a.proposer}
    not_proposer = next(i for i in IDENTITIES if i is not proposer)
    forged = dataclasses.replace(make_evidence(a, b).second, signature=bytes(64))
    cases = ((make_evidence(a, a), "the same"),
             (make_evidence(*(sign_proposal(not_proposer, CHAIN, 3, 1, -1, v) for v in (VALUE, b"other"))),
              "not the proposer"),
             (Evidence(evidence.first, forged), "does not verify"),
             (Evidence(evidence.first, sign_vote(proposer, CHAIN, Kind.PREVOTE, 3, 1, None)), "one height"))
    for bad, reason in cases:
        with pytest.raises(InvalidEvidence, match=reason):
            verify_evidence(bad, CHAIN, VALIDATORS)


# ---------------------------------------------------------- validator set


def test_quorum_is_strictly_more_than_two_thirds():
    validators = ValidatorSet([Validator(bytes([i]) * 32, 1) for i in range(3)])
    assert not validators.is_quorum(2)
    assert validators.is_quorum(3)
    assert VALIDATORS.is_quorum(3) and not VALIDATORS.is_quorum(2)
    assert VALIDATORS.exceeds_faulty(2) and not VALIDATORS.exceeds_faulty(1)


def test_bad_validator_sets_are_refused():
    with pytest.raises(ValidatorSetError):
        ValidatorSet([])
    with pytest.raises(ValidatorSetError):
        ValidatorSet([Validator(bytes(32), 1), Validator(bytes(32), 2)])
    with pytest.raises(ValidatorSetError):
        ValidatorSet([Validator(bytes(32), 0)])


@given(st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=6), st.integers(min_value=1, max_value=500))
def test_proposer_rotation_elects_each_validator_as_often_as_its_power(powers, start):
    validators = ValidatorSet([Validator(bytes([i + 1]) * 32, p) for i, p in enumerate(powers)])
    total = sum(powers)
    window = [validators.proposer(start + k, 0) for k in range(total)]
    counts = collections.Counter(window)
    assert {v.public_key: v.power for v in validators.validators} == dict(counts)
    assert validators.proposer(start, 3) == validators.proposer(start + 3, 0)
    assert validators.proposer(start, 0) == validators.proposer(start + total, 0)


def test_proposer_rotation_is_the_same_on_every_node():
    keys = [Validator(bytes([i + 1]) * 32, p) for i, p in enumerate((5, 1, 3, 1))]
    first = ValidatorSet(keys)
    second = ValidatorSet(list(reversed(keys)))
    assert [first.proposer(h, r) for h in range(1, 30) for r in range(3)] == \
        [second.proposer(h, r) for h in range(1, 30) for r in range(3)]
    assert first.digest() == second.digest()
