"""The local chunk store: content-defined chunking, dedup, verified unpacking, pluggable fetch."""

from __future__ import annotations

import json
import os
import random

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from capsule_testkit import LIMITS_WAT, manifest, write_capsule
from hypermesh.capsules.chunks import MAX_CHUNK, MIN_CHUNK, ChunkList, ChunkStore, cut_points, split, unpack
from hypermesh.capsules.errors import ChunkError, FormatError
from hypermesh.capsules.lifecycle import State


def big_capsule(path, payload: bytes, version="1.0.0"):
    return write_capsule(path, manifest(version=version), LIMITS_WAT, spec={"spec/data.bin": payload, "spec/README.md": b"x"})


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=0, max_size=3 * MAX_CHUNK))
def test_chunks_reassemble_and_respect_bounds(data):
    chunks = split(data)
    assert b"".join(chunks) == data
    assert all(len(c) <= MAX_CHUNK for c in chunks)
    assert all(len(c) >= MIN_CHUNK for c in chunks[:-1])


def test_cut_points_depend_on_content_not_offset():
    rng = random.Random(7)
    data = rng.randbytes(2 * 1024 * 1024)
    edited = data[:5000] + b"inserted bytes" + data[5000:]
    shared = set(split(data)) & set(split(edited))
    assert len(shared) >= len(cut_points(data)) - 2


async def test_pack_unpack_round_trip_then_admission(runtime, tmp_path):
    source = big_capsule(tmp_path / "src", os.urandom(700_000))
    store = ChunkStore(tmp_path / "publisher")
    cid, chunk_list = store.pack(source)
    wire = chunk_list.to_bytes()  # what a peer would send

    receiver = ChunkStore(tmp_path / "receiver")
    fetched = []

    async def fetch(digest):
        fetched.append(digest)
        await trio.lowlevel.checkpoint()
        return store.get(digest)

    dest = await unpack(ChunkList.from_bytes(wire), fetch, tmp_path / "unpacked", receiver, parallel=4)
    assert sorted(fetched) == chunk_list.unique_chunks
    capsule = runtime.install(dest)
    assert capsule.state == State.VERIFIED and capsule.cid == cid


async def test_fetches_run_in_parallel_up_to_the_limit(tmp_path):
    source = big_capsule(tmp_path / "src", os.urandom(1_500_000))
    store = ChunkStore(tmp_path / "publisher")
    _, chunk_list = store.pack(source)
    active, peak = 0, 0
    everyone_waiting = trio.Event()

    async def fetch(digest):
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        if peak == 3:
            everyone_waiting.set()
        with trio.fail_after(10):
            await everyone_waiting.wait()
        active -= 1
        return store.get(digest)

    await unpack(chunk_list, fetch, tmp_path / "out", ChunkStore(tmp_path / "r"), parallel=3)
    assert peak == 3


def test_chunks_are_deduplicated_across_capsules(tmp_path):
    shared = os.urandom(1_000_000)
    store = ChunkStore(tmp_path / "store")
    _, first = store.pack(big_capsule(tmp_path / "a", shared))
    _, second = store.pack(big_capsule(tmp_path / "b", shared + b"tail", version="2.0.0"))
    common = set(first.unique_chunks) & set(second.unique_chunks)
    assert len(common) >= len(first.unique_chunks) - 3
    on_disk = sum(1 for path in (tmp_path / "store").rglob("*") if path.is_file())
    assert on_disk == len(set(first.unique_chunks) | set(second.unique_chunks))


async def test_corrupt_chunk_is_refused_and_nothing_is_written(tmp_path):
    source = big_capsule(tmp_path / "src", os.urandom(300_000))
    store = ChunkStore(tmp_path / "publisher")
    _, chunk_list = store.pack(source)
    victim = chunk_list.unique_chunks[0]

    async def lying_fetch(digest):
        data = store.get(digest)
        return data[:-1] + bytes([data[-1] ^ 1]) if digest == victim else data

    with pytest.raises(ChunkError, match=f"expected {victim}"):
        await unpack(chunk_list, lying_fetch, tmp_path / "out", ChunkStore(tmp_path / "r"))
    assert not (tmp_path / "out").exists()


async def test_oversized_chunk_is_refused(tmp_path):
    source = big_capsule(tmp_path / "src", b"small")
    _, chunk_list = ChunkStore(tmp_path / "p").pack(source)

    async def flooding_fetch(digest):
        return b"x" * (MAX_CHUNK + 1)

    with pytest.raises(ChunkError, match="over the"):
        await unpack(chunk_list, flooding_fetch, tmp_path / "out", ChunkStore(tmp_path / "r"))


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["files"][0].update(path="../../etc/passwd"), "unsafe component"),
    (lambda d: d["files"].append(dict(d["files"][0])), "twice"),
    (lambda d: d["files"][0].update(size=10**7), "maximum|bytes in"),
    (lambda d: d.update(format="other"), "format"),
    (lambda d: d["files"].pop(), "receipt.json"),
])
def test_malformed_chunk_lists_are_refused(tmp_path, mutate, message):
    _, chunk_list = ChunkStore(tmp_path / "p").pack(big_capsule(tmp_path / "src", b"data"))
    document = json.loads(chunk_list.to_bytes())
    mutate(document)
    with pytest.raises(FormatError, match=message):
        ChunkList.from_document(document)


def test_pack_refuses_a_capsule_that_does_not_match_its_receipt(tmp_path):
    source = big_capsule(tmp_path / "src", b"data")
    (source / "spec" / "README.md").write_text("changed after signing")
    with pytest.raises(FormatError, match="sign it again"):
        ChunkStore(tmp_path / "p").pack(source)
