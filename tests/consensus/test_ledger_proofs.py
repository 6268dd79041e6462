"""Queries with Merkle proofs against the committed state root, checked with the root alone."""

import pytest

from hypermesh.consensus.ledger import (
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
