"""ML-DSA-65 validator keys: signatures in the signer's scheme, their checks, and the chain on the simulator."""

import dataclasses
import hashlib
import random
import struct
import sys

import pytest

from hypermesh.consensus.signing import (
    MAX_SIGNATURE_SIZE,
    ConsensusKey,
    ConsensusKeyError,
    Scheme,
    VERIFIED_CACHE_SIZE,
    Signer,
    ml_dsa_key_from_seed,
    verify_signature,
)
from hypermesh.consensus.sim import SIM_CHAIN, Behaviour, ConsensusSim
from hypermesh.consensus.store import MemoryConsensusStore
from hypermesh.consensus.tendermint import TendermintCore
from hypermesh.consensus.validators import (
    MAX_ML_DSA_VALIDATORS,
    Validator,
    ValidatorSet,
    ValidatorSetError,
    public_key_of,
)
from hypermesh.consensus.wire import (
    CommitCertificate,
    ForgedSignature,
    InvalidCertificate,
    InvalidEvidence,
    Kind,
    WireError,
    block_id_of,
    decode_certificate,
    decode_message,
    encode_certificate,
    encode_message,
    make_certificate,
    make_evidence,
    sign_proposal,
    Vote,
    sign_vote,
    signer_of,
    verify_certificate,
    verify_evidence,
    verify_proposal,
    verify_vote,
)
from hypermesh.transport.identity import Identity

from .consensus_testkit import CONFIG, CountingApp

CHAIN = "pq-chain"
VALUE = b"a post-quantum block"
BLOCK = block_id_of(VALUE)
IDENTITIES = [Identity.from_seed(b"pq-validator-%d" % i) for i in range(4)]
# Validators 0 and 1 sign with Ed25519, 2 and 3 with ML-DSA-65.
SIGNERS = [Signer(identity, ml_dsa_key_from_seed(hashlib.sha256(b"ml-dsa-%d" % i).digest()) if i >= 2 else None)
           for i, identity in enumerate(IDENTITIES)]
MIXED = ValidatorSet([Validator(s.name, 1, s.consensus_key) for s in SIGNERS])
ML_DSA = SIGNERS[2]
ML_DSA_SIGNATURE_SIZE = Scheme.ML_DSA_65.signature_size


def precommits(block_id=BLOCK, signers=SIGNERS, height=1, round_=0):
    return [sign_vote(s, CHAIN, Kind.PRECOMMIT, height, round_, block_id) for s in signers]


def proposer_signer(height, round_):
    key = MIXED.proposer(height, round_)
    return next(s for s in SIGNERS if s.name == key)


def flipped(signature: bytes, at: int = -1) -> bytes:
    data = bytearray(signature)
    data[at] ^= 0x01
    return bytes(data)


# ------------------------------------------------------------------ votes


def test_an_ml_dsa_vote_is_signed_in_its_scheme_travels_as_version_2_and_verifies():
    vote = sign_vote(ML_DSA, CHAIN, Kind.PREVOTE, 4, 1, BLOCK)
    assert len(vote.signature) == ML_DSA_SIGNATURE_SIZE
    encoded = encode_message(vote)
    assert encoded[0] == 2 and decode_message(encoded) == vote
    verify_vote(decode_message(encoded), CHAIN, MIXED)
    ed25519_vote = sign_vote(SIGNERS[0], CHAIN, Kind.PREVOTE, 4, 1, BLOCK)
    assert encode_message(ed25519_vote)[0] == 1 and len(ed25519_vote.signature) == 64  # unchanged
    verify_vote(ed25519_vote, CHAIN, MIXED)


@pytest.mark.parametrize("how", ["forged", "truncated", "ed25519 by the name key", "another validator's"])
def test_a_bad_ml_dsa_vote_signature_is_refused_as_misbehaviour(how):
    vote = sign_vote(ML_DSA, CHAIN, Kind.PREVOTE, 4, 1, BLOCK)
    signature = {
        "forged": flipped(vote.signature, 100),
        "truncated": vote.signature[:-1],
        "ed25519 by the name key": ML_DSA.identity.sign(vote.sign_bytes(CHAIN)),
        "another validator's": sign_vote(SIGNERS[3], CHAIN, Kind.PREVOTE, 4, 1, BLOCK).signature,
    }[how]
    bad = decode_message(encode_message(dataclasses.replace(vote, signature=signature)))  # it travels: form is fine
    with pytest.raises(ForgedSignature) as refused:
        verify_vote(bad, CHAIN, MIXED)
    assert refused.value.misbehaviour
    if how in ("truncated", "ed25519 by the name key"):
        assert f"signs ml-dsa-65 ({ML_DSA_SIGNATURE_SIZE} bytes)" in str(refused.value)


def test_an_ed25519_validator_cannot_sign_with_an_ml_dsa_key_it_did_not_declare():
    undeclared = Signer(IDENTITIES[0], ml_dsa_key_from_seed(bytes(32)))
    with pytest.raises(ForgedSignature, match="signs ed25519"):
        verify_vote(sign_vote(undeclared, CHAIN, Kind.PREVOTE, 4, 1, BLOCK), CHAIN, MIXED)


def test_an_ml_dsa_proposal_verifies_and_a_forged_one_is_refused():
    proposer = proposer_signer(3, 0)
    proposal = sign_proposal(proposer, CHAIN, 3, 0, -1, VALUE)
    verify_proposal(decode_message(encode_message(proposal)), CHAIN, MIXED)
    forged = dataclasses.replace(proposal, signature=flipped(proposal.signature))
    with pytest.raises(ForgedSignature):
        verify_proposal(forged, CHAIN, MIXED)


# ------------------------------------------------------------ certificates


def test_a_certificate_of_mixed_signatures_verifies_and_round_trips():
    certificate = make_certificate(precommits(), MIXED)
    sizes = sorted(len(signature) for _, signature in certificate.signatures)
    assert sizes == [64, 64, ML_DSA_SIGNATURE_SIZE, ML_DSA_SIGNATURE_SIZE]
    encoded = encode_certificate(certificate)
    assert encoded[0] == 2 and decode_certificate(encoded) == certificate
    verify_certificate(decode_certificate(encoded), CHAIN, MIXED)


@pytest.mark.parametrize("tamper", ["flip a byte", "truncate", "swap two signatures"])
def test_a_certificate_with_a_tampered_ml_dsa_signature_is_refused(tamper):
    certificate = make_certificate(precommits(), MIXED)
    entries = list(certificate.signatures)
    ml_dsa_at = next(i for i, (_, signature) in enumerate(entries) if len(signature) == ML_DSA_SIGNATURE_SIZE)
    index, signature = entries[ml_dsa_at]
    if tamper == "flip a byte":
        entries[ml_dsa_at] = (index, flipped(signature, 7))
    elif tamper == "truncate":
        entries[ml_dsa_at] = (index, signature[:64])
    else:  # each ML-DSA validator's signature under the other's index
        other = next(i for i, (_, s) in enumerate(entries) if len(s) == ML_DSA_SIGNATURE_SIZE and i != ml_dsa_at)
        entries[ml_dsa_at], entries[other] = (index, entries[other][1]), (entries[other][0], signature)
    tampered = dataclasses.replace(certificate, signatures=tuple(entries))
    with pytest.raises(InvalidCertificate, match=f"validator {index}"):
        verify_certificate(decode_certificate(encode_certificate(tampered)), CHAIN, MIXED)


def test_the_largest_allowed_certificate_fits_the_message_limit():
    from hypermesh.consensus.wire import MAX_MESSAGE_SIZE, MAX_VALUE_SIZE, Commit

    signature = bytes(ML_DSA_SIGNATURE_SIZE)
    certificate = CommitCertificate(1, 0, BLOCK, tuple((i, signature if i < MAX_ML_DSA_VALIDATORS else bytes(64))
                                                       for i in range(1024)))
    incompressible = random.Random(1).randbytes(MAX_VALUE_SIZE)
    encoded = encode_message(Commit(certificate, incompressible))
    assert MAX_MESSAGE_SIZE - 4096 < len(encoded) <= MAX_MESSAGE_SIZE  # the limit is what this takes
    assert decode_message(encoded).certificate == certificate


# ----------------------------------------------------------------- evidence


def test_evidence_of_ml_dsa_double_votes_and_double_proposals_verifies():
    first, second = (sign_vote(ML_DSA, CHAIN, Kind.PRECOMMIT, 9, 0, b) for b in (BLOCK, block_id_of(b"other")))
    evidence = decode_message(encode_message(make_evidence(first, second)))
    verify_evidence(evidence, CHAIN, MIXED)
    proposer = proposer_signer(3, 1)
    proposals = (sign_proposal(proposer, CHAIN, 3, 1, -1, v) for v in (VALUE, b"other"))
    verify_evidence(decode_message(encode_message(make_evidence(*proposals))), CHAIN, MIXED)


def test_evidence_with_a_forged_ml_dsa_vote_is_refused():
    first, second = (sign_vote(ML_DSA, CHAIN, Kind.PRECOMMIT, 9, 0, b) for b in (BLOCK, block_id_of(b"other")))
    forged = dataclasses.replace(second, signature=flipped(second.signature))
    with pytest.raises(InvalidEvidence, match="does not verify"):
        verify_evidence(make_evidence(first, forged), CHAIN, MIXED)


# --------------------------------------------------------------- the codec


def test_the_verified_signature_cache_keeps_no_ml_dsa_key_or_signature_and_stays_bounded():
    vote = sign_vote(ML_DSA, CHAIN, Kind.PRECOMMIT, 1, 0, BLOCK)
    key, message = ML_DSA.consensus_key.public_key, vote.sign_bytes(CHAIN)
    signature = bytes(bytearray(vote.signature))  # an object of this test's alone
    held = sys.getrefcount(signature)
    assert verify_signature(Scheme.ML_DSA_65, key, signature, message)
    assert sys.getrefcount(signature) == held  # functools.lru_cache would hold it (5 KB an entry with the key)
    assert verify_signature(Scheme.ML_DSA_65, key, signature, message)  # answered from the cache, the same
    assert not verify_signature(Scheme.ML_DSA_65, key, flipped(signature), message)
    assert not verify_signature(Scheme.ML_DSA_65, key, signature, message + b"!")
    for height in range(VERIFIED_CACHE_SIZE + 10):  # cheap entries: Ed25519 votes that do not verify
        verify_signature(Scheme.ED25519, SIGNERS[0].name, bytes(64), b"%d" % height)
    assert verify_signature.cache_len() == VERIFIED_CACHE_SIZE


def test_version_2_is_refused_for_64_byte_signatures_only_and_signatures_are_bounded():
    vote = sign_vote(ML_DSA, CHAIN, Kind.PREVOTE, 4, 1, BLOCK)
    encoded = encode_message(vote)
    head = encoded[:-2 - ML_DSA_SIGNATURE_SIZE]
    short = sign_vote(SIGNERS[0], CHAIN, Kind.PREVOTE, 4, 1, BLOCK).signature
    with pytest.raises(WireError, match="that is version 1"):
        decode_message(head + struct.pack(">H", 64) + short)
    with pytest.raises(WireError, match="at most"):
        decode_message(head + struct.pack(">H", MAX_SIGNATURE_SIZE + 1) + bytes(MAX_SIGNATURE_SIZE + 1))
    with pytest.raises(WireError, match="0 bytes"):
        decode_message(head + struct.pack(">H", 0))


# ----------------------------------------------------------- the validator set


def test_the_set_digest_covers_the_consensus_key_and_is_unchanged_without_one():
    plain = ValidatorSet([Validator(s.name, 1) for s in SIGNERS])
    expected = hashlib.sha256(b"hypermesh-validator-set-v1\x00" + b"".join(
        v.public_key + (1).to_bytes(8, "big") for v in plain.validators)).digest()
    assert plain.digest() == expected
    other_key = ConsensusKey(Scheme.ML_DSA_65, ml_dsa_key_from_seed(bytes(32)).public_key().public_bytes_raw())
    swapped = ValidatorSet([Validator(s.name, 1, other_key if s is ML_DSA else s.consensus_key) for s in SIGNERS])
    assert len({plain.digest(), MIXED.digest(), swapped.digest()}) == 3


def test_a_set_with_too_many_ml_dsa_validators_or_a_malformed_key_is_refused():
    key = ML_DSA.consensus_key
    too_many = [Validator(i.to_bytes(32, "big"), 1, key) for i in range(1, MAX_ML_DSA_VALIDATORS + 2)]
    with pytest.raises(ValidatorSetError, match=f"more than {MAX_ML_DSA_VALIDATORS}"):
        ValidatorSet(too_many)
    with pytest.raises(ConsensusKeyError, match="1952 bytes"):
        ConsensusKey(Scheme.ML_DSA_65, key.public_key[:-1])
    with pytest.raises(ConsensusKeyError, match="must be ml-dsa-65"):
        ConsensusKey(Scheme.ED25519, public_key_of(IDENTITIES[0]))


def test_a_validator_without_the_key_its_set_declares_follows_instead_of_signing():
    app = CountingApp()
    without_key = TendermintCore(CHAIN, MIXED, IDENTITIES[2], app, MemoryConsensusStore(), CONFIG)
    assert not without_key.is_validator
    with_key = TendermintCore(CHAIN, MIXED, ML_DSA, CountingApp(), MemoryConsensusStore(), CONFIG)
    assert with_key.is_validator


def test_a_validator_holding_an_ml_dsa_key_the_set_does_not_declare_signs_with_ed25519():
    """A node made its key before the chain took it (the bond declaring it takes effect at the next epoch)."""
    plain = ValidatorSet([Validator(s.name, 1) for s in SIGNERS])
    core = TendermintCore(CHAIN, plain, ML_DSA, CountingApp(), MemoryConsensusStore(), CONFIG)
    assert core.is_validator
    core.start(0.0)
    core.handle_timer(core.get_timer())  # the proposal (if ours) times out: we prevote nil
    own = [m.message for m in core.take_outbound() if signer_of(m.message) == ML_DSA.name]
    assert own and all(len(message.signature) == 64 for message in own)
    for message in own:
        (verify_vote if isinstance(message, Vote) else verify_proposal)(message, CHAIN, plain)


# ------------------------------------------------------------- on the simulator


def test_a_mixed_ed25519_and_ml_dsa_set_commits_certified_blocks():
    sim = ConsensusSim(3, [1, 2, 1, 3], ml_dsa=frozenset({1, 3}))
    assert sorted(v.scheme for v in sim.validator_set.validators) == [0, 0, 1, 1]
    sim.start()
    assert sim.run_until_height(8, 20.0), sim.describe()
    assert not sim.conflicts() and not sim.equivocators()
    signature_sizes = set()
    for node in sim.nodes:
        for height in range(1, 9):
            commit = node.store.load_commit(height)
            verify_certificate(commit.certificate, SIM_CHAIN, sim.validator_set)
            signature_sizes |= {len(signature) for _, signature in commit.certificate.signatures}
    assert signature_sizes == {64, ML_DSA_SIGNATURE_SIZE}


@pytest.mark.parametrize("behaviour, seed", [(Behaviour.EQUIVOCATE, 5), (Behaviour.FORGE, 0)])
def test_an_ml_dsa_set_with_one_byzantine_validator_stays_safe_and_live(behaviour, seed):
    sim = ConsensusSim(seed, [1, 1, 1, 1], byzantine={2: behaviour}, ml_dsa=frozenset(range(4)))
    sim.start()
    assert sim.run_until_height(8, 30.0), sim.describe()
    assert not sim.conflicts(), sim.describe()
    assert not any(n.reverted for n in sim.nodes)
    if behaviour is Behaviour.EQUIVOCATE:
        assert sim.equivocators() == {2}  # its ML-DSA double votes became evidence
        for evidence in sim.evidence:
            assert len(evidence.first.signature) == ML_DSA_SIGNATURE_SIZE
            verify_evidence(evidence, SIM_CHAIN, sim.validator_set)
    else:
        assert not sim.equivocators()
        assert sim.rejected["ForgedSignature"] > 0, sim.rejected
