"""A Merkle tree over sorted key/value entries, and proofs that need only its root.

The tree is RFC 6962's (Certificate Transparency): a leaf hashes
``0x00 ‖ len(key):u16 ‖ key ‖ value``, an inner node ``0x01 ‖ left ‖ right``,
and a list of n > 1 leaves splits at the largest power of two below n, so
every leaf count has exactly one tree. The prefixes keep a leaf from ever
passing for an inner node. Entries are sorted by key and keys are unique, so
one state has one root.

A proof names the leaf's index, the leaf count and the sibling hashes from
the leaf up; :func:`verify_proof` recomputes the root from them and the
claimed entry, so a client that knows only a root (from a certified block
header) can check one entry. Absence is proven by the two entries that
would surround the key, proven at adjacent positions (or the first or last
entry, at an end).
"""

from __future__ import annotations

import bisect
import hashlib
import struct
from dataclasses import dataclass

HASH_SIZE = 32
MAX_KEY_SIZE = 1024
EMPTY_ROOT = hashlib.sha256(b"").digest()
# Bounds a decoded proof: 2^64 leaves would need 64 siblings.
MAX_PROOF_DEPTH = 64


class ProofError(ValueError):
    """A proof that is malformed or does not lead to the root."""


def leaf_hash(key: bytes, value: bytes) -> bytes:
    if len(key) > MAX_KEY_SIZE:
        raise ValueError(f"a key of {len(key)} bytes exceeds {MAX_KEY_SIZE}")
    return hashlib.sha256(b"\x00" + struct.pack(">H", len(key)) + key + value).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(count: int) -> int:
    """The largest power of two strictly below ``count`` (count > 1)."""
    return 1 << ((count - 1).bit_length() - 1)


def _root_of(hashes: list[bytes]) -> bytes:
    # Level by level, pairing from the left: the same tree as the recursive
    # split (the left subtree is always complete), without recursion.
    level = hashes
    while len(level) > 1:
        paired = [_node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def ordered_root(items: list[bytes]) -> bytes:
    """The root over ``items`` in their given order (each a leaf keyed by the item, with an empty value):
    a block's transactions root, over its transaction IDs. EMPTY_ROOT if there are none."""
    return _root_of([leaf_hash(item, b"") for item in items]) if items else EMPTY_ROOT


@dataclass(frozen=True, slots=True)
class MerkleProof:
    index: int
    leaf_count: int
    siblings: tuple[bytes, ...]  # from the leaf's sibling up to the root's child


def _path_shape(index: int, count: int) -> list[bool]:
    """For each level from the leaf up, whether the leaf's subtree is the right child (None when it has no sibling)."""
    shape = []
    while count > 1:
        split = _split(count)
        if index < split:
            shape.append(False)
            count = split
        else:
            shape.append(True)
            index -= split
            count -= split
    shape.reverse()
    return shape


class MerkleTree:
    """Entries sorted by key; the root, the lookup and proofs of inclusion."""

    def __init__(self, entries: dict[bytes, bytes]):
        self.keys = sorted(entries)
        self.values = [entries[k] for k in self.keys]
        self._leaves = [leaf_hash(k, v) for k, v in zip(self.keys, self.values)]
        self._position = {k: i for i, k in enumerate(self.keys)}
        self.root = _root_of(self._leaves) if self._leaves else EMPTY_ROOT

    def prove(self, key: bytes) -> tuple[bytes, MerkleProof] | None:
        """The value stored under ``key`` and its proof, or None if absent."""
        index = self._position.get(key)
        if index is None:
            return None
        return self.values[index], MerkleProof(index, len(self._leaves), tuple(self._siblings(index)))

    def prove_absence(self, key: bytes) -> AbsenceProof | None:
        """Proof that ``key`` has no entry, or None if it has one."""
        return None if key in self._position else _prove_absence(self, key)

    def _siblings(self, index: int) -> list[bytes]:
        siblings = []
        low, count = 0, len(self._leaves)
        while count > 1:
            split = _split(count)
            if index - low < split:
                siblings.append(_root_of(self._leaves[low + split:low + count]))
                count = split
            else:
                siblings.append(_root_of(self._leaves[low:low + split]))
                low += split
                count -= split
        siblings.reverse()
        return siblings


@dataclass(frozen=True, slots=True)
class Neighbour:
    """An entry next to where an absent key would sit, with its proof."""

    key: bytes
    value: bytes
    proof: MerkleProof


@dataclass(frozen=True, slots=True)
class AbsenceProof:
    """The entries just below and just above an absent key (None at either end of the tree)."""

    below: Neighbour | None
    above: Neighbour | None


def _prove_absence(tree: "MerkleTree", key: bytes) -> AbsenceProof:
    position = bisect.bisect_left(tree.keys, key)

    def neighbour(index: int) -> Neighbour | None:
        if not 0 <= index < len(tree.keys):
            return None
        value, proof = tree.prove(tree.keys[index])
        return Neighbour(tree.keys[index], value, proof)
    return AbsenceProof(neighbour(position - 1), neighbour(position))


def verify_absence(root: bytes, key: bytes, proof: AbsenceProof) -> None:
    """Raise :class:`ProofError` unless the tree with ``root`` has no entry for ``key``.

    Entries are sorted, so the two neighbours proven at adjacent positions
    (or one at an end of the tree) leave no place for it."""
    below, above = proof.below, proof.above
    if below is None and above is None:
        if root != EMPTY_ROOT:
            raise ProofError("only the empty tree has no neighbours")
        return
    for neighbour in (below, above):
        if neighbour is not None:
            verify_proof(root, neighbour.key, neighbour.value, neighbour.proof)
    if below is not None and not below.key < key:
        raise ProofError("the lower neighbour is not below the key")
    if above is not None and not key < above.key:
        raise ProofError("the upper neighbour is not above the key")
    if below is None and above.proof.index != 0:
        raise ProofError("nothing below the key, but the upper neighbour is not the first entry")
    if above is None and below.proof.index != below.proof.leaf_count - 1:
        raise ProofError("nothing above the key, but the lower neighbour is not the last entry")
    if below is not None and above is not None and (
            above.proof.index != below.proof.index + 1 or above.proof.leaf_count != below.proof.leaf_count):
        raise ProofError("the neighbours are not adjacent")


def verify_proof(root: bytes, key: bytes, value: bytes, proof: MerkleProof) -> None:
    """Raise :class:`ProofError` unless ``key`` ↦ ``value`` is an entry of the tree with ``root``."""
    if not 0 <= proof.index < proof.leaf_count or len(proof.siblings) > MAX_PROOF_DEPTH:
        raise ProofError("the proof's index or depth is out of range")
    shape = _path_shape(proof.index, proof.leaf_count)
    if len(shape) != len(proof.siblings):
        raise ProofError("the proof has the wrong number of siblings for its position")
    try:
        current = leaf_hash(key, value)
    except ValueError as exc:
        raise ProofError(str(exc)) from None
    for is_right, sibling in zip(shape, proof.siblings):
        if len(sibling) != HASH_SIZE:
            raise ProofError("a sibling hash is not 32 bytes")
        current = _node_hash(sibling, current) if is_right else _node_hash(current, sibling)
    if current != root:
        raise ProofError("the entry does not lead to the root")


__all__ = ["AbsenceProof", "EMPTY_ROOT", "MerkleProof", "MerkleTree", "Neighbour", "ProofError", "leaf_hash",
           "verify_absence", "verify_proof"]
