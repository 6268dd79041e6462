"""The Merkle tree kept level by level and updated in place of a rebuild: the same roots and proofs as the
full computation it replaced (RFC 6962's recursive split, every leaf hashed), for any entries and changes."""

import hashlib
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from hypermesh.consensus.merkle import EMPTY_ROOT, MerkleTree, verify_proof


# ------------------------------------------------ the full computation, as consensus/merkle.py had it

def reference_leaf(key, value):
    return hashlib.sha256(b"\x00" + struct.pack(">H", len(key)) + key + value).digest()


def reference_node(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def reference_root(hashes):
    if not hashes:
        return EMPTY_ROOT
    if len(hashes) == 1:
        return hashes[0]
    split = 1 << ((len(hashes) - 1).bit_length() - 1)
    return reference_node(reference_root(hashes[:split]), reference_root(hashes[split:]))


def reference_siblings(hashes, index):
    siblings = []
    low, count = 0, len(hashes)
    while count > 1:
        split = 1 << ((count - 1).bit_length() - 1)
        if index - low < split:
            siblings.append(reference_root(hashes[low + split:low + count]))
            count = split
        else:
            siblings.append(reference_root(hashes[low:low + split]))
            low += split
            count -= split
    siblings.reverse()
    return tuple(siblings)


def assert_matches_full_computation(tree, entries):
    keys = sorted(entries)
    leaves = [reference_leaf(k, entries[k]) for k in keys]
    assert tree.keys == keys and tree.values == [entries[k] for k in keys]
    assert tree.root == reference_root(leaves)
    for index, key in enumerate(keys):
        value, proof = tree.prove(key)
        assert (value, proof.index, proof.leaf_count) == (entries[key], index, len(keys))
        assert proof.siblings == reference_siblings(leaves, index)
        verify_proof(tree.root, key, value, proof)


keys = st.binary(min_size=0, max_size=3)
values = st.binary(min_size=0, max_size=3)
changes = st.dictionaries(keys, st.none() | values, max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, values, max_size=40), st.lists(changes, max_size=6))
def test_updated_trees_have_the_roots_and_proofs_of_the_full_computation(entries, batches):
    tree = MerkleTree(entries)
    assert_matches_full_computation(tree, entries)
    for batch in batches:
        before, before_root = dict(entries), tree.root
        updated = tree.updated(batch)
        for key, value in batch.items():
            if value is None:
                entries.pop(key, None)
            else:
                entries[key] = value
        assert_matches_full_computation(updated, entries)
        assert_matches_full_computation(tree, before)  # the old tree is left as it was
        assert tree.root == before_root
        tree = updated


def test_an_update_rehashes_only_the_leaf_that_changed(monkeypatch):
    import hypermesh.consensus.merkle as merkle
    tree = MerkleTree({b"k%04d" % i: b"v" for i in range(1000)})
    hashed = []
    leaf_hash = merkle.leaf_hash
    monkeypatch.setattr(merkle, "leaf_hash", lambda key, value: hashed.append(key) or leaf_hash(key, value))
    updated = tree.updated({b"k0500": b"w", b"k0501": b"v"})  # one change, one write of the same value
    assert hashed == [b"k0500"]
    assert updated.root == MerkleTree({**{b"k%04d" % i: b"v" for i in range(1000)}, b"k0500": b"w"}).root
    assert tree.updated({b"k0001": b"v", b"absent": None}) is tree
