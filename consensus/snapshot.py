"""State sync: a snapshot of the ledger state, chunked and hashed, verified against a certified state root.

A node that joins late takes the state root after height h from a verified
commit of block h + 1 (:func:`~hypermesh.consensus.ledger.certified_root`),
fetches the snapshot of height h from any peer and checks it: each chunk
against the manifest's hash as it arrives (a bad chunk is refused at once,
and its sender is known), and the whole, rebuilt into the Merkle tree,
against the certified root. The manifest itself needs no trust: a manifest
that lies makes the root check fail. The node then executes block h + 1 from
the same commit and follows the chain from there, instead of replaying every
block from genesis.

Snapshot stream: the state's entries in key order, each ``len:u16 ‖ key ‖
len:u32 ‖ value``, cut into chunks of ``chunk_size`` bytes. Manifest:
``version:u8 ‖ height:u64 ‖ root:32 ‖ count:u32 ‖ count × sha256(chunk)``.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from .genesis import Genesis
from .ledger import LedgerState
from .merkle import MAX_KEY_SIZE, MerkleTree

SNAPSHOT_VERSION = 1
DEFAULT_CHUNK_SIZE = 256 * 1024
MAX_CHUNK_SIZE = 1 << 20
MAX_CHUNKS = 1 << 16
MAX_ENTRY_VALUE = 1 << 16


class SnapshotError(ValueError):
    """A manifest or chunk that is malformed, or a snapshot that does not match the certified root."""


class ChunkMismatch(SnapshotError):
    pass


class RootMismatch(SnapshotError):
    pass


@dataclass(frozen=True, slots=True)
class Manifest:
    height: int
    root: bytes
    chunk_hashes: tuple[bytes, ...]

    def encode(self) -> bytes:
        return (struct.pack(">BQ", SNAPSHOT_VERSION, self.height) + self.root
                + struct.pack(">I", len(self.chunk_hashes)) + b"".join(self.chunk_hashes))

    @classmethod
    def decode(cls, data: bytes) -> "Manifest":
        if len(data) < 45 or data[0] != SNAPSHOT_VERSION:
            raise SnapshotError("unknown manifest version or truncated")
        (height,) = struct.unpack(">Q", data[1:9])
        root = data[9:41]
        (count,) = struct.unpack(">I", data[41:45])
        if not 0 < count <= MAX_CHUNKS or len(data) != 45 + 32 * count:
            raise SnapshotError("chunk count out of range or does not match")
        return cls(height, root, tuple(data[45 + 32 * i:77 + 32 * i] for i in range(count)))


def _entry_stream(tree: MerkleTree) -> bytes:
    return b"".join(struct.pack(">H", len(k)) + k + struct.pack(">I", len(v)) + v for k, v in zip(tree.keys, tree.values))


def make_snapshot(state: LedgerState, chunk_size: int = DEFAULT_CHUNK_SIZE) -> tuple[Manifest, list[bytes]]:
    tree = state.tree()
    stream = _entry_stream(tree)
    chunks = [stream[i:i + chunk_size] for i in range(0, len(stream), chunk_size)] or [b""]
    if len(chunks) > MAX_CHUNKS:
        raise SnapshotError("the state needs more chunks than a manifest may name: use larger chunks")
    return Manifest(state.height, tree.root, tuple(hashlib.sha256(c).digest() for c in chunks)), chunks


class SnapshotRestorer:
    """Takes chunks in any order, each checked on arrival; :meth:`finish` checks the root and builds the state."""

    def __init__(self, genesis: Genesis, height: int, certified_root: bytes, manifest: Manifest):
        if manifest.height != height or manifest.root != certified_root:
            raise RootMismatch("the manifest is not for the certified height and root")
        self.genesis = genesis
        self.manifest = manifest
        self._chunks: dict[int, bytes] = {}

    def missing(self) -> list[int]:
        return [i for i in range(len(self.manifest.chunk_hashes)) if i not in self._chunks]

    def add_chunk(self, index: int, data: bytes) -> None:
        if not 0 <= index < len(self.manifest.chunk_hashes) or len(data) > MAX_CHUNK_SIZE:
            raise ChunkMismatch("chunk index or size out of range")
        if hashlib.sha256(data).digest() != self.manifest.chunk_hashes[index]:
            raise ChunkMismatch(f"chunk {index} does not match its hash")
        self._chunks[index] = data

    def finish(self) -> LedgerState:
        if self.missing():
            raise SnapshotError(f"chunks {self.missing()[:8]} are missing")
        stream = b"".join(self._chunks[i] for i in range(len(self.manifest.chunk_hashes)))
        return _state_from_stream(self.genesis, stream, self.manifest.height, self.manifest.root)


def _state_from_stream(genesis: Genesis, stream: bytes, height: int, root: bytes) -> LedgerState:
    entries = _parse_entries(stream)
    if MerkleTree(entries).root != root:
        raise RootMismatch("the snapshot's entries do not give the certified root")
    try:
        state = LedgerState.from_entries(genesis, entries)
    except (ValueError, KeyError, struct.error) as exc:
        raise SnapshotError(f"a certified state this node cannot read: {exc}") from None
    if state.height != height or state.root() != root:
        raise RootMismatch("the rebuilt state does not give the certified root")
    return state


def write_base_state(path: Path, state: LedgerState) -> None:
    """Keep a state-synced node's starting state on disk (written whole, then renamed: never torn)."""
    tree = state.tree()
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        file.write(struct.pack(">BQ", SNAPSHOT_VERSION, state.height) + tree.root + _entry_stream(tree))
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def read_base_state(path: Path, genesis: Genesis) -> LedgerState:
    """The state :func:`write_base_state` kept; SnapshotError if it is damaged."""
    data = path.read_bytes()
    if len(data) < 41 or data[0] != SNAPSHOT_VERSION:
        raise SnapshotError(f"{path} is not a ledger base state")
    (height,) = struct.unpack(">Q", data[1:9])
    return _state_from_stream(genesis, data[41:], height, data[9:41])


def _parse_entries(stream: bytes) -> dict[bytes, bytes]:
    entries: dict[bytes, bytes] = {}
    offset, previous = 0, None
    while offset < len(stream):
        if offset + 2 > len(stream):
            raise SnapshotError("truncated entry")
        (key_size,) = struct.unpack(">H", stream[offset:offset + 2])
        key = stream[offset + 2:offset + 2 + key_size]
        offset += 2 + key_size
        if len(key) != key_size or key_size > MAX_KEY_SIZE or offset + 4 > len(stream):
            raise SnapshotError("truncated or oversized entry key")
        (value_size,) = struct.unpack(">I", stream[offset:offset + 4])
        value = stream[offset + 4:offset + 4 + value_size]
        offset += 4 + value_size
        if len(value) != value_size or value_size > MAX_ENTRY_VALUE:
            raise SnapshotError("truncated or oversized entry value")
        if previous is not None and key <= previous:
            raise SnapshotError("entries out of order or repeated")
        entries[key] = value
        previous = key
    return entries


__all__ = ["ChunkMismatch", "Manifest", "RootMismatch", "SnapshotError", "SnapshotRestorer", "make_snapshot",
           "read_base_state", "write_base_state"]
