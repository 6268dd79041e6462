"""Queries with Merkle proofs against the committed state root, checked with the root alone."""

import pytest

from hypermesh.consensus.ledger import (
    Ledger,
    account_entry_key,
    certified_root,
    decode_account_entry,
    verify_state_proof,
)
from hypermesh.consensus.ledger_tx import Transfer
from hypermesh.consensus.merkle import EMPTY_ROOT, MerkleProof, MerkleTree, ProofError, verify_proof
from hypermesh.consensus.validators import ValidatorSet
from ledger_testkit import BALANCE, LEDGER_CHAIN, USER_IDS, Chain, key, make_genesis


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 33])
def test_every_entry_of_trees_of_any_size_proves_against_the_root(size):
    entries = {b"k%03d" % i: b"v%d" % i for i in range(size)}
    tree = MerkleTree(entries)
    for k in entries:
        value, proof = tree.prove(k)
        verify_proof(tree.root, k, value, proof)
    assert tree.prove(b"absent") is None
    assert MerkleTree({}).root == EMPTY_ROOT


def test_a_proof_fails_for_another_value_key_position_or_root():
    tree = MerkleTree({b"a": b"1", b"b": b"2", b"c": b"3"})
    value, proof = tree.prove(b"b")
    bad = [
        (tree.root, b"b", b"9", proof),
        (tree.root, b"a", value, proof),
        (b"\x00" * 32, b"b", value, proof),
        (tree.root, b"b", value, MerkleProof(0, proof.leaf_count, proof.siblings)),
        (tree.root, b"b", value, MerkleProof(proof.index, 2, proof.siblings)),
        (tree.root, b"b", value, MerkleProof(proof.index, proof.leaf_count, proof.siblings[:-1])),
        (tree.root, b"b", value, MerkleProof(proof.index, proof.leaf_count, (b"\x00" * 31,) + proof.siblings[1:])),
    ]
    for root, k, v, p in bad:
        with pytest.raises(ProofError):
            verify_proof(root, k, v, p)


def test_an_account_query_carries_a_proof_that_a_header_only_client_checks_against_a_certified_root():
    chain = Chain(make_genesis())
    alice, bob = USER_IDS[0], USER_IDS[1]
    chain.run(chain.tx(alice, Transfer(key(bob), 42)))
    answer = chain.ledger.prove_account(key(bob))
    assert answer.height == 1 and decode_account_entry(answer.value) == (BALANCE + 42, 0)
    chain.commit_block()  # block 2 carries the root after block 1; its certificate certifies it
    # The client knows only the validator set and the certified commit, not the state.
    validators = ValidatorSet(list(chain.genesis_validators))
    height, root = certified_root(chain.commits[-1], LEDGER_CHAIN, validators)
    assert height == answer.height
    verify_state_proof(root, answer)
    forged = type(answer)(answer.height, answer.key, answer.value[:7] + b"\xff" + answer.value[8:], answer.proof)
    with pytest.raises(ProofError):
        verify_state_proof(root, forged)
    with pytest.raises(ProofError):  # a proof for another account's entry
        verify_state_proof(root, type(answer)(answer.height, account_entry_key(key(alice)), answer.value, answer.proof))
    assert chain.ledger.prove_account(b"\x00" * 32) is None


def test_a_root_from_a_commit_without_a_quorum_is_not_trusted():
    chain = Chain(make_genesis())
    chain.commit_block()
    commit = chain.commits[-1]
    weak = type(commit.certificate)(commit.certificate.height, commit.certificate.round, commit.certificate.block_id,
                                    commit.certificate.signatures[:2])
    with pytest.raises(ProofError):
        certified_root(type(commit)(weak, commit.value), LEDGER_CHAIN, ValidatorSet(list(chain.genesis_validators)))


@pytest.mark.parametrize("absent", [b"a", b"k0005", b"k0019x", b"zz"])
def test_absence_is_proven_by_adjacent_neighbours_and_a_present_key_cannot_be_proven_absent(absent):
    from hypermesh.consensus.merkle import AbsenceProof, verify_absence
    tree = MerkleTree({b"k%03d" % i: b"v" for i in range(20)})
    proof = tree.prove_absence(absent)
    verify_absence(tree.root, absent, proof)
    assert tree.prove_absence(b"k007") is None
    present_neighbours = tree.prove_absence(b"k0065")  # between k006 and k007
    with pytest.raises(ProofError):  # claiming k007 absent with the neighbours of another gap
        verify_absence(tree.root, b"k007", present_neighbours)
    if proof.below is not None and proof.above is not None:
        with pytest.raises(ProofError):  # dropping a neighbour opens no gap
            verify_absence(tree.root, absent, AbsenceProof(proof.below, None))
    verify_absence(EMPTY_ROOT, absent, AbsenceProof(None, None))
    with pytest.raises(ProofError):
        verify_absence(tree.root, absent, AbsenceProof(None, None))


def test_an_unknown_account_is_proven_absent_from_the_committed_state():
    from hypermesh.consensus.merkle import verify_absence
    chain = Chain(make_genesis())
    chain.commit_block()
    height, proof = chain.ledger.prove_absent(account_entry_key(b"\x01" * 32))
    verify_absence(chain.ledger.roots[height], account_entry_key(b"\x01" * 32), proof)
    assert chain.ledger.prove_absent(account_entry_key(key(USER_IDS[0]))) is None


def test_a_query_answer_verifies_with_the_trusted_validators_alone_and_any_changed_byte_is_caught():
    from hypermesh.consensus.ledger_query import QueryError, QueryService, verify_answer
    chain = Chain(make_genesis())
    alice, bob = USER_IDS[0], USER_IDS[1]
    service = QueryService(None, chain.ledger)
    assert service.answer(account_entry_key(key(bob)))[:1] == b"\x01"  # nothing decided yet
    chain.run(chain.tx(alice, Transfer(key(bob), 42)))
    chain.commit_block()
    trusted = ValidatorSet(list(chain.genesis_validators))
    entry = account_entry_key(key(bob))
    answer = service.answer(entry)
    height, value = verify_answer(answer, entry, LEDGER_CHAIN, trusted)
    assert height == 1 and decode_account_entry(value) == (BALANCE + 42, 0)
    unknown = account_entry_key(b"\x05" * 32)
    assert verify_answer(service.answer(unknown), unknown, LEDGER_CHAIN, trusted) == (1, None)
    # The value sits at the end of the answer, before the Merkle proof (17 + 32·depth bytes).
    proof_size = 17 + 32 * len(chain.ledger.certified[0].tree().prove(entry)[1].siblings)
    for offset in (len(answer) - proof_size - 9, len(answer) - 1, 40):  # the balance, a sibling, the commit
        changed = bytearray(answer)
        changed[offset] ^= 1
        with pytest.raises(QueryError):
            verify_answer(bytes(changed), entry, LEDGER_CHAIN, trusted)
    with pytest.raises(QueryError):  # an answer about another key
        verify_answer(answer, account_entry_key(key(alice)), LEDGER_CHAIN, trusted)
    with pytest.raises(QueryError):  # trusting another validator set
        verify_answer(answer, entry, LEDGER_CHAIN, Ledger(make_genesis(validators=7)).validators)
