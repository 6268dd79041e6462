"""A local content-defined chunk store, for moving capsules between nodes.

``pack`` cuts every file of a signed capsule into content-defined chunks
(FastCDC: a gear rolling hash with normalised chunking), stores each chunk
once under ``<data_dir>/capsules/chunks/<aa>/<sha256>`` and returns the
capsule's CID with its :class:`ChunkList`. Because cut points depend on
content, not offsets, two versions of a capsule share most of their chunks,
and so do capsules built on the same runtime (every componentize-py guest
embeds the same CPython).

``unpack`` rebuilds a capsule directory from a chunk list and an async
``fetch(chunk_hash) -> bytes``, fetching up to ``parallel`` chunks at a
time, checking every chunk's size and hash before it is stored or used.
The result still has to pass admission: chunks prove integrity against the
list, the receipt's signature proves who built it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

import trio

from . import schema
from .errors import ChunkError, FormatError
from .layout import MAX_FILE_BYTES, MAX_FILES, MAX_JSON_BYTES, MAX_TOTAL_BYTES, RECEIPT_FILE, check_relative_path, list_capsule_files, read_bounded
from .receipt import hash_capsule_files, parse_receipt
from .storage import atomic_write, ensure_private_dir, fsync_directory

MIN_CHUNK = 16 * 1024
AVG_CHUNK = 64 * 1024
MAX_CHUNK = 256 * 1024
# Normalised chunking (FastCDC level 2): harder to cut before the average
# size, easier after it, which narrows the spread of chunk sizes.
_MASK_HARD = (1 << 18) - 1  # two more bits than log2(AVG_CHUNK)
_MASK_EASY = (1 << 14) - 1  # two fewer
_M64 = (1 << 64) - 1
# The gear table is part of the format: changing it changes every cut point.
GEAR = tuple(int.from_bytes(hashlib.sha256(b"hypermesh-gear" + bytes([i])).digest()[:8], "little") for i in range(256))
CHUNK_LIST_FORMAT = "hypermesh-chunk-list/1"
DEFAULT_PARALLEL_FETCHES = 8

Fetch = Callable[[str], Awaitable[bytes]]


def _scan(data: bytes, index: int, stop: int, mask: int, digest: int) -> tuple[int, int]:
    """Roll the gear hash from ``index`` to ``stop``; returns (cut offset or -1, digest)."""
    gear = GEAR
    while index < stop:
        digest = ((digest << 1) + gear[data[index]]) & _M64
        index += 1
        if not digest & mask:
            return index, digest
    return -1, digest


def cut_points(data: bytes) -> list[int]:
    """End offsets of the chunks of ``data`` (the last is ``len(data)``)."""
    cuts = []
    start, size = 0, len(data)
    while start < size:
        if size - start <= MIN_CHUNK:
            cuts.append(size)
            break
        end = min(start + MAX_CHUNK, size)
        normal = min(start + AVG_CHUNK, end)
        cut, digest = _scan(data, start + MIN_CHUNK, normal, _MASK_HARD, 0)
        if cut < 0:
            cut, _ = _scan(data, normal, end, _MASK_EASY, digest)
        if cut < 0:
            cut = end
        cuts.append(cut)
        start = cut
    return cuts


def split(data: bytes) -> list[bytes]:
    chunks, start = [], 0
    for end in cut_points(data):
        chunks.append(data[start:end])
        start = end
    return chunks


@dataclass(frozen=True, slots=True)
class ChunkedFile:
    path: str
    size: int
    chunks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ChunkList:
    """A capsule as an ordered list of files, each an ordered list of chunk hashes."""

    cid: str
    files: tuple[ChunkedFile, ...]

    @property
    def unique_chunks(self) -> list[str]:
        return sorted({chunk for item in self.files for chunk in item.chunks})

    def to_document(self) -> dict:
        return {"format": CHUNK_LIST_FORMAT, "cid": self.cid,
                "files": [{"path": f.path, "size": f.size, "chunks": list(f.chunks)} for f in self.files]}

    def to_bytes(self) -> bytes:
        return schema.canonical_json(self.to_document())

    @classmethod
    def from_document(cls, doc: dict) -> "ChunkList":
        """Validate a chunk list from a peer: schema, safe paths, sizes that add up."""
        schema.validate(doc, schema.CHUNK_LIST, "chunk list")
        files, seen, total = [], set(), 0
        for entry in doc["files"]:
            path = entry["path"]
            if path != RECEIPT_FILE:
                check_relative_path(path)
            if path in seen:
                raise FormatError(f"chunk list names {path} twice")
            seen.add(path)
            size, chunks = entry["size"], tuple(entry["chunks"])
            if size > len(chunks) * MAX_CHUNK or (size > 0) != bool(chunks):
                raise FormatError(f"chunk list: {path} has {size} bytes in {len(chunks)} chunks")
            total += size
            files.append(ChunkedFile(path, size, chunks))
        if RECEIPT_FILE not in seen or "manifest.json" not in seen:
            raise FormatError("chunk list must include manifest.json and receipt.json")
        if len(files) > MAX_FILES + 1 or total > MAX_TOTAL_BYTES:
            raise FormatError(f"chunk list describes {len(files)} files, {total} bytes: over the capsule limits")
        return cls(doc["cid"], tuple(files))

    @classmethod
    def from_bytes(cls, data: bytes) -> "ChunkList":
        return cls.from_document(schema.parse_json(data, "chunk list", 16 * 1024 * 1024))


class ChunkStore:
    """Chunks on disk, named by their sha2-256, written atomically."""

    def __init__(self, root: Path):
        self.root = ensure_private_dir(Path(root))

    def path(self, digest: str) -> Path:
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise ChunkError(f"not a chunk hash: {digest!r}")
        return self.root / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return self.path(digest).exists()

    def put(self, data: bytes) -> str:
        if len(data) > MAX_CHUNK:
            raise ChunkError(f"chunk of {len(data)} bytes is over the {MAX_CHUNK}-byte limit")
        digest = hashlib.sha256(data).hexdigest()
        path = self.path(digest)
        if not path.exists():
            atomic_write(path, data, mode=0o600)
        return digest

    def get(self, digest: str) -> bytes:
        path = self.path(digest)
        try:
            data = read_bounded(path, f"chunk {digest}", MAX_CHUNK)
        except FormatError as exc:
            raise ChunkError(str(exc)) from None
        verify_chunk(digest, data)
        return data

    async def fetch(self, digest: str) -> bytes:
        """A ``fetch`` for :func:`unpack` that reads this store only."""
        return self.get(digest)

    def pack(self, capsule_dir: Path) -> tuple[str, ChunkList]:
        """Chunk a signed capsule into the store; returns (CID, chunk list)."""
        capsule_dir = Path(capsule_dir)
        receipt_bytes = read_bounded(capsule_dir / RECEIPT_FILE, RECEIPT_FILE, MAX_JSON_BYTES)
        receipt = parse_receipt(receipt_bytes)
        if hash_capsule_files(capsule_dir) != receipt.files:
            raise FormatError(f"{capsule_dir} does not match its receipt.json: sign it again before packing")
        files = []
        for item in list_capsule_files(capsule_dir):
            data = read_bounded(capsule_dir / item.path, item.path, MAX_FILE_BYTES)
            files.append(ChunkedFile(item.path, len(data), tuple(self.put(chunk) for chunk in split(data))))
        files.append(ChunkedFile(RECEIPT_FILE, len(receipt_bytes), tuple(self.put(c) for c in split(receipt_bytes))))
        return receipt.cid, ChunkList(receipt.cid, tuple(files))


def verify_chunk(digest: str, data: bytes) -> None:
    if len(data) > MAX_CHUNK:
        raise ChunkError(f"chunk {digest} is {len(data)} bytes, over the {MAX_CHUNK}-byte limit")
    found = hashlib.sha256(data).hexdigest()
    if found != digest:
        raise ChunkError(f"chunk hash mismatch: expected {digest}, found {found}")


async def unpack(chunk_list: ChunkList, fetch: Fetch, dest: Path, store: ChunkStore,
                 parallel: int = DEFAULT_PARALLEL_FETCHES) -> Path:
    """Fetch every chunk not already in ``store``, verify it, and assemble the capsule at ``dest``.

    ``fetch`` may be called concurrently (at most ``parallel`` at once); it
    should raise on failure. Nothing is written at ``dest`` unless every
    chunk arrived intact: files are assembled in a staging directory that is
    renamed into place last. Every disk write (fsync'd) runs on a worker
    thread, never on the event loop.
    """
    dest = Path(dest)
    if dest.exists():
        raise ChunkError(f"{dest} already exists")
    missing = [digest for digest in chunk_list.unique_chunks if not store.has(digest)]
    limiter = trio.CapacityLimiter(max(1, parallel))

    failures: list[Exception] = []

    async def fetch_one(digest: str, cancel_scope: trio.CancelScope) -> None:
        try:
            async with limiter:
                data = await fetch(digest)
            if not isinstance(data, (bytes, bytearray)):
                raise ChunkError(f"fetch returned {type(data).__name__} for chunk {digest}, not bytes")
            await trio.to_thread.run_sync(_verify_and_put, store, digest, bytes(data))
        except Exception as exc:
            # The first failure stops the other fetches: the capsule is unusable anyway.
            failures.append(exc)
            cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        for digest in missing:
            nursery.start_soon(fetch_one, digest, nursery.cancel_scope)
    if failures:
        first = failures[0]
        if isinstance(first, ChunkError):
            raise first
        raise ChunkError(f"fetching a chunk failed: {type(first).__name__}: {first}") from first

    await trio.to_thread.run_sync(_assemble, chunk_list, store, dest)
    return dest


def _verify_and_put(store: ChunkStore, digest: str, data: bytes) -> None:
    verify_chunk(digest, data)
    store.put(data)


def _assemble(chunk_list: ChunkList, store: ChunkStore, dest: Path) -> None:
    """Write the capsule's files from the store's chunks into a staging directory, then rename it to ``dest``."""
    staging = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for item in chunk_list.files:
            data = b"".join(store.get(digest) for digest in item.chunks)
            if len(data) != item.size:
                raise ChunkError(f"{item.path}: chunks add up to {len(data)} bytes, the list says {item.size}")
            atomic_write(staging / item.path, data)
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_directory(dest.parent)
