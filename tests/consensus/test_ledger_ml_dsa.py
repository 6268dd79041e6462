"""ML-DSA-65 validator keys in the ledger: declared at genesis or in a bond (with a proof of possession),
carried by the validator set (and so its digest), signing certificates, slashed for double signing."""

import dataclasses
import hashlib
import json

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from hypermesh.consensus.genesis import Genesis, GenesisBond, GenesisError, LedgerParams, genesis_to_json, parse_genesis
from hypermesh.consensus.ledger import (
    Ledger,
    LedgerState,
    decode_block,
    decode_validator_set,
    encode_validator_set,
)
from hypermesh.consensus.ledger_tx import (
    Bond,
    ForgedPossession,
    LedgerError,
    MalformedTransaction,
    Role,
    TxKind,
    declaring_bond,
    decode_transaction,
    sign_transaction,
)
from hypermesh.consensus.signing import Scheme, Signer, ml_dsa_key_from_seed, ml_dsa_public_key, prove_possession
from hypermesh.consensus.wire import Kind, encode_certificate, make_evidence, sign_vote, verify_certificate
from ledger_testkit import BALANCE, LEDGER_CHAIN, STAKE, STEP, USER_IDS, VALIDATOR_IDS, Chain, key, ledger_network

EPOCH = LedgerParams(epoch_length=3, unbonding_period=600, max_evidence_age=500)
ML_DSA_KEYS = [ml_dsa_key_from_seed(hashlib.sha256(b"ledger-ml-dsa-%d" % i).digest()) for i in range(7)]
# Validators 0 and 1 declared ML-DSA-65 keys at genesis; 2 and 3 sign with Ed25519.
SIGNERS = [Signer(VALIDATOR_IDS[i], ML_DSA_KEYS[i]) for i in range(2)]


def pq_genesis(params=EPOCH):
    everyone = VALIDATOR_IDS + USER_IDS
    bonds = tuple(GenesisBond(key(v), Role.VALIDATOR, STAKE, ml_dsa_public_key(ML_DSA_KEYS[i]) if i < 2 else None)
                  for i, v in enumerate(VALIDATOR_IDS[:4]))
    return Genesis(LEDGER_CHAIN, params, {key(i): BALANCE for i in everyone}, bonds)


# ------------------------------------------------------------------ genesis


def test_a_genesis_consensus_key_round_trips_and_is_in_the_validator_set_and_its_digest():
    genesis = pq_genesis()
    text = genesis_to_json(genesis)
    assert json.loads(text)["bonds"][0]["consensus_key"]["scheme"] == "ml-dsa-65"
    assert parse_genesis(text) == genesis
    validators = Ledger(genesis).validators
    schemes = {v.public_key: v.scheme for v in validators.validators}
    assert schemes[key(VALIDATOR_IDS[0])] is Scheme.ML_DSA_65 and schemes[key(VALIDATOR_IDS[2])] is Scheme.ED25519
    plain = dataclasses.replace(genesis, bonds=tuple(dataclasses.replace(b, consensus_key=None) for b in genesis.bonds))
    assert Ledger(plain).validators.digest() != validators.digest()


def _genesis_with_key(consensus_key, role="validator"):
    data = json.loads(genesis_to_json(pq_genesis()))
    data["bonds"][0]["consensus_key"] = consensus_key
    data["bonds"][0]["role"] = role
    return json.dumps(data)


@pytest.mark.parametrize("consensus_key, role, message", [
    ({"scheme": "ml-dsa-65", "public_key": "not base64!"}, "validator", "not valid base64"),
    ({"scheme": "ml-dsa-65", "public_key": "AAAA"}, "validator", "1952 bytes, not 3"),
    ({"scheme": "ml-dsa-87", "public_key": "AAAA"}, "validator", "unknown signature scheme 'ml-dsa-87'"),
    ({"scheme": "ed25519", "public_key": "AAAA"}, "validator", "must be ml-dsa-65"),
    ({"scheme": "ml-dsa-65"}, "validator", '"public_key"'),
    ("AAAA", "validator", '"scheme"'),
    (None, "provider", "only a validator bond has a consensus_key"),
])
def test_a_bad_genesis_consensus_key_is_refused_with_a_clear_message(consensus_key, role, message):
    if consensus_key is None:
        consensus_key = ml_dsa_public_key(ML_DSA_KEYS[0]).to_json()
    with pytest.raises(GenesisError, match="bond of 12D3Koo") as refused:
        parse_genesis(_genesis_with_key(consensus_key, role))
    assert message in str(refused.value)


# ----------------------------------------------------------------- the chain


def test_a_chain_of_ml_dsa_and_ed25519_validators_certifies_blocks_with_both():
    chain = Chain(pq_genesis(), nodes=2, signers=SIGNERS)
    for _ in range(4):
        chain.commit_block()
    validators = chain.ledger.validators
    for commit in chain.commits:
        verify_certificate(commit.certificate, LEDGER_CHAIN, validators)
    sizes = {len(signature) for _, signature in decode_block(chain.commits[-1].value).last_certificate.signatures}
    assert sizes == {64, Scheme.ML_DSA_65.signature_size}
    assert chain.ledgers[1].state.root() == chain.ledger.state.root()


async def test_ml_dsa_and_ed25519_validators_on_real_hosts_commit_the_same_blocks(tmp_path):
    async with ledger_network(tmp_path, pq_genesis(), signers=SIGNERS) as (services, _):
        with trio.fail_after(STEP):
            for service in services:
                await service.wait_for_height(3)
        ledgers = [service.core.app for service in services]
        assert len({ledger.roots[3] for ledger in ledgers}) == 1
        certificate = decode_block(services[0].core.store.load_commit(3).value).last_certificate
        verify_certificate(certificate, LEDGER_CHAIN, ledgers[0].validators)
        assert Scheme.ML_DSA_65.signature_size in {len(signature) for _, signature in certificate.signatures}


def test_the_state_with_consensus_keys_restores_from_its_entries_and_sets_round_trip():
    chain = Chain(pq_genesis(), signers=SIGNERS)
    chain.commit_block()
    state = chain.ledger.state
    restored = LedgerState.from_entries(chain.genesis, state.entries())
    assert restored.consensus_keys == state.consensus_keys and restored.root() == state.root()
    assert restored.validators.digest() == state.validators.digest()
    encoded = encode_validator_set(state.validators)
    assert encode_validator_set(decode_validator_set(encoded)) == encoded
    key_entry = 2 + 40 * len(state.validators)
    for broken in (encoded[:-1], encoded + b"\x00",
                   encoded[:key_entry] + b"\x00\x09" + encoded[key_entry + 2:]):  # a key for validator 9 of 4
        with pytest.raises(ValueError):
            decode_validator_set(broken)


def test_ml_dsa_double_signing_is_slashed_as_ed25519_double_signing_is():
    chain = Chain(pq_genesis(), nodes=2, signers=SIGNERS)
    chain.commit_block()
    cheat = SIGNERS[0]
    evidence = make_evidence(*(sign_vote(cheat, LEDGER_CHAIN, Kind.PRECOMMIT, 1, 0, block) for block in
                               (b"\x01" * 32, b"\x02" * 32)))
    for ledger in chain.ledgers:
        ledger.add_evidence(evidence)
    changed = chain.commit_block()
    assert decode_block(chain.commits[-1].value).evidence == (evidence,)
    state = chain.ledger.state
    assert state.bonded(cheat.name, Role.VALIDATOR) == STAKE - STAKE * 500 // 10_000
    assert cheat.name in state.tombstoned
    assert changed is not None and changed.index_of(cheat.name) is None


def test_a_full_block_with_an_ml_dsa_certificate_and_evidence_stays_within_the_value_limit():
    from hypermesh.consensus.ledger_tx import SealedNote
    from hypermesh.consensus.sealed import MAX_PLAINTEXT, SealingKey, seal
    from hypermesh.consensus.wire import MAX_VALUE_SIZE

    chain = Chain(pq_genesis(), signers=SIGNERS)
    chain.commit_block()  # the next block carries a certificate with ML-DSA-65 signatures
    cheat = SIGNERS[1]
    evidence = make_evidence(*(sign_vote(cheat, LEDGER_CHAIN, Kind.PRECOMMIT, 1, 0, block) for block in
                               (b"\x01" * 32, b"\x02" * 32)))
    chain.ledger.add_evidence(evidence)
    recipient = SealingKey.from_seed(b"big-notes").public
    notes = [chain.tx(USER_IDS[0], SealedNote(seal(b"\x00" * MAX_PLAINTEXT, [recipient]))) for _ in range(40)]
    chain.run(*notes)
    block = decode_block(chain.commits[-1].value)
    assert len(chain.commits[-1].value) <= MAX_VALUE_SIZE
    assert 0 < len(block.transactions) < 40 and block.evidence == (evidence,)
    assert len(encode_certificate(block.last_certificate)) > 2 * Scheme.ML_DSA_65.signature_size


# --------------------------------------------------------- bond transactions


NEWCOMER = VALIDATOR_IDS[4]


def test_a_bond_declaring_a_key_round_trips_and_the_key_signs_from_the_next_epoch():
    chain = Chain(pq_genesis(), signers=SIGNERS + [Signer(NEWCOMER, ML_DSA_KEYS[4])])
    tx = chain.tx(NEWCOMER, declaring_bond(STAKE, ML_DSA_KEYS[4], LEDGER_CHAIN, key(NEWCOMER)))
    assert tx.encode()[1] == TxKind.BOND_WITH_KEY and decode_transaction(tx.encode()) == tx
    plain = sign_transaction(NEWCOMER, LEDGER_CHAIN, 0, Bond(Role.VALIDATOR, STAKE))
    assert plain.encode()[1] == TxKind.BOND  # a bond without a key is encoded as before
    chain.run(tx)
    assert chain.ledger.state.consensus_keys[key(NEWCOMER)] == ml_dsa_public_key(ML_DSA_KEYS[4])
    while chain.ledger.validators.index_of(key(NEWCOMER)) is None:
        chain.commit_block()
    joined = chain.ledger.validators
    assert joined.validators[joined.index_of(key(NEWCOMER))].scheme is Scheme.ML_DSA_65
    chain.commit_block()  # certified with the newcomer's ML-DSA-65 precommit
    signers = {joined.validators[i].public_key for i, _ in chain.commits[-1].certificate.signatures}
    assert key(NEWCOMER) in signers


@pytest.mark.parametrize("forgery", ["someone else's key", "for another owner", "for another chain", "flipped"])
def test_a_bond_with_a_forged_proof_of_possession_is_refused_at_submit_and_in_a_block(forgery):
    chain = Chain(pq_genesis())
    own = ML_DSA_KEYS[4]
    good = prove_possession(own, LEDGER_CHAIN, key(NEWCOMER))  # one signature: ML-DSA's are randomised
    proof = {
        "someone else's key": prove_possession(ML_DSA_KEYS[5], LEDGER_CHAIN, key(NEWCOMER)),
        "for another owner": prove_possession(own, LEDGER_CHAIN, key(VALIDATOR_IDS[5])),
        "for another chain": prove_possession(own, "another-chain", key(NEWCOMER)),
        "flipped": bytes([good[0] ^ 1]) + good[1:],
    }[forgery]
    body = Bond(Role.VALIDATOR, STAKE, ml_dsa_public_key(own), proof)
    tx = chain.attempt(NEWCOMER, body)
    with pytest.raises(ForgedPossession):
        chain.ledger.submit(tx)
    with pytest.raises(ForgedPossession):
        chain.ledger.state.copy().apply_transaction(tx)
    assert key(NEWCOMER) not in chain.ledger.state.consensus_keys


def test_a_validator_cannot_register_another_validators_key_as_its_own():
    """The proof binds the key to its owner: copying validator 0's key and proof into one's own bond fails."""
    chain = Chain(pq_genesis())
    theirs = declaring_bond(STAKE, ML_DSA_KEYS[0], LEDGER_CHAIN, key(VALIDATOR_IDS[0]))
    with pytest.raises(ForgedPossession):
        chain.ledger.submit(chain.attempt(NEWCOMER, theirs))


def test_a_malformed_declaring_bond_is_refused_by_the_decoder():
    good = sign_transaction(NEWCOMER, LEDGER_CHAIN, 0, declaring_bond(STAKE, ML_DSA_KEYS[4], LEDGER_CHAIN,
                                                                      key(NEWCOMER))).encode()
    body_at = 3 + len(LEDGER_CHAIN) + 32 + 8
    provider = good[:body_at] + bytes([Role.PROVIDER]) + good[body_at + 1:]
    ed25519 = good[:body_at + 9] + bytes([Scheme.ED25519]) + good[body_at + 10:]
    for bad, reason in ((provider, "only a validator"), (ed25519, "consensus key"), (good[:-70], "truncated|trailing|bytes")):
        with pytest.raises(MalformedTransaction, match=reason):
            decode_transaction(bad)
    provider_bond = dataclasses.replace(declaring_bond(STAKE, ML_DSA_KEYS[4], LEDGER_CHAIN, key(NEWCOMER)),
                                        role=Role.PROVIDER)
    with pytest.raises(MalformedTransaction, match="only a validator bond"):
        Chain(pq_genesis()).ledger.state.copy().apply_transaction(sign_transaction(NEWCOMER, LEDGER_CHAIN, 0,
                                                                                    provider_bond))


DECLARING_BOND = sign_transaction(NEWCOMER, LEDGER_CHAIN, 0, declaring_bond(STAKE, ML_DSA_KEYS[4], LEDGER_CHAIN,
                                                                            key(NEWCOMER))).encode()


@settings(max_examples=200, deadline=None)
@given(position=st.integers(0, len(DECLARING_BOND) - 1), byte=st.integers(0, 255),
       how=st.sampled_from(["flip", "truncate", "insert"]))
def test_a_mutated_declaring_bond_decodes_only_canonically_or_is_refused_with_a_typed_reason(position, byte, how):
    if how == "flip":
        mutated = DECLARING_BOND[:position] + bytes([byte]) + DECLARING_BOND[position + 1:]
    elif how == "truncate":
        mutated = DECLARING_BOND[:position]
    else:
        mutated = DECLARING_BOND[:position] + bytes([byte]) + DECLARING_BOND[position:]
    try:
        tx = decode_transaction(mutated)
    except LedgerError:
        return
    assert tx.encode() == mutated
