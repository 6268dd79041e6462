"""Capsule distribution over real QUIC hosts and real DHTs: publish, fetch from several providers, admit, run."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from capsule_testkit import LIMITS_WAT, manifest, write_capsule
from mesh_testkit import STEP, Node, find_providers, open_mesh
from hypermesh.capsules.chunks import ChunkList, ChunkStore
from hypermesh.capsules.cid import cid_from_digest
from hypermesh.capsules.chunk_wire import (
    KIND_CHUNK,
    KIND_CHUNK_LIST,
    PROTOCOL_ID,
    DAMAGED_ANSWER,
    ProtocolViolation,
    ProviderStoreDamaged,
    Request,
    decode_answer,
    decode_request,
    encode_answer,
)
from hypermesh.capsules.distribution import (
    CapsuleDistribution,
    CapsuleQuarantinedError,
    ChunkListUnavailableError,
    ChunkUnavailableError,
    NoProvidersError,
)
from hypermesh.capsules.errors import CapsuleError
from hypermesh.capsules.execution import output_matches, verify_execution_receipt
from hypermesh.capsules.lifecycle import State
from hypermesh.capsules.receipt import Receipt, hash_capsule_files, parse_receipt, root_hash
from hypermesh.transport.errors import StreamReset
from hypermesh.transport.framing import BufferedReader, frame
from hypermesh.transport.varint import encode_uvarint

PAYLOAD = os.urandom(1_200_000)  # ~18 chunks of ~64 KiB


def limits_capsule(directory: Path) -> Path:
    spec = {"spec/data.bin": PAYLOAD, "spec/README.md": b"# data\n"}
    return write_capsule(directory, manifest(), LIMITS_WAT, spec=spec)


def forge(directory: Path) -> None:
    """Raise the capsule's fuel and rehash its receipt; the builder's signature cannot follow."""
    doc = json.loads((directory / "manifest.json").read_text())
    doc["resources"]["fuel"] *= 10
    (directory / "manifest.json").write_text(json.dumps(doc))
    genuine = parse_receipt((directory / "receipt.json").read_bytes())
    files = hash_capsule_files(directory)
    root = root_hash(files)
    forged = Receipt(files, root, cid_from_digest(root), genuine.signer_key, genuine.signer, genuine.signature)
    (directory / "receipt.json").write_bytes(forged.to_bytes())


async def test_published_capsule_runs_on_another_node_and_its_receipt_verifies(tmp_path, engine):
    source = limits_capsule(tmp_path / "src")
    async with open_mesh(tmp_path, engine, 2) as (a, b):
        with trio.fail_after(STEP):
            cid = await a.distribution.publish(source)
            await find_providers(b, cid, {a.peer_id})
            progress = []
            capsule = await b.distribution.fetch(cid, progress=lambda done, total: progress.append((done, total)))
            assert await b.distribution.fetch(cid) is capsule  # installed: no second download
        assert capsule.state == State.VERIFIED and capsule.cid == cid
        total = sum(item.size for item in a.distribution.published.get(cid).files)
        assert progress[-1] == (total, total)
        assert [done for done, _ in progress] == sorted(done for done, _ in progress)
        assert not any((b.store.root / "incoming").iterdir())

        b.runtime.activate(cid)
        result = await b.runtime.call_async("tests.limits", "echo", b"over the mesh")
        receipt = json.loads(json.dumps(result.receipt))  # as A would receive it
        # A knows B only by its peer ID, which inlines B's Ed25519 public key.
        assert receipt["node"] == str(b.peer_id) and receipt["capsule"] == cid
        assert verify_execution_receipt(receipt)
        assert verify_execution_receipt(receipt, b.identity.public_key_proto)
        assert not verify_execution_receipt(receipt, a.identity.public_key_proto)
        assert output_matches(receipt, b"over the mesh")

    # The chunk list survives a restart of A.
    restarted = CapsuleDistribution(None, None, ChunkStore(tmp_path / "n0" / "capsules" / "chunks"), None)
    assert restarted.published.cids == [cid]


async def test_a_fetched_capsule_is_served_on_by_its_fetcher(tmp_path, engine):
    source = limits_capsule(tmp_path / "src")
    async with open_mesh(tmp_path, engine, 3) as (a, b, c):
        with trio.fail_after(STEP):
            cid = await a.distribution.publish(source)
            await find_providers(b, cid, {a.peer_id})
            await b.distribution.fetch(cid)
            await find_providers(c, cid, {a.peer_id, b.peer_id})
            a.host.remove_stream_handler(PROTOCOL_ID)  # the publisher no longer serves
            capsule = await c.distribution.fetch(cid)
        assert capsule.state == State.VERIFIED and capsule.cid == cid
        assert b.distribution.counters["chunks_served"] == unique_chunks(a, cid)
        assert b.distribution.published.cids == [cid]  # kept on disk: served after a restart too


async def fetch_published_by_a_and_c(tmp_path: Path, a: Node, b: Node, c: Node):
    """A and C publish the same capsule (from their own copies); B fetches it. Returns (cid, capsule)."""
    source = limits_capsule(tmp_path / "src")
    copy = Path(shutil.copytree(source, tmp_path / "copy"))
    with trio.fail_after(STEP):
        cid = await a.distribution.publish(source)
        assert await c.distribution.publish(copy) == cid
        await find_providers(b, cid, {a.peer_id, c.peer_id})
        capsule = await b.distribution.fetch(cid, parallel=8)
    assert capsule.state == State.VERIFIED and capsule.cid == cid
    return cid, capsule


def unique_chunks(node: Node, cid: str) -> int:
    return len(node.distribution.published.get(cid).unique_chunks)


async def test_chunks_come_from_several_providers(tmp_path, engine):
    async with open_mesh(tmp_path, engine, 3) as (a, b, c):
        cid, _ = await fetch_published_by_a_and_c(tmp_path, a, b, c)
        served = a.distribution.counters["chunks_served"], c.distribution.counters["chunks_served"]
        assert all(count > 0 for count in served), served
        assert sum(served) == unique_chunks(a, cid)
        assert b.distribution.counters["bad_answers"] == 0


async def test_corrupted_chunk_is_detected_and_taken_from_another_provider(tmp_path, engine):
    async with open_mesh(tmp_path, engine, 3) as (a, b, c):
        honest = c.distribution.read_chunk

        async def flip_first_byte(chunk_hash):
            data = await honest(chunk_hash)
            return None if data is None else bytes([data[0] ^ 1]) + data[1:]

        c.distribution.read_chunk = flip_first_byte  # C now lies about every chunk
        cid, _ = await fetch_published_by_a_and_c(tmp_path, a, b, c)
        assert c.distribution.counters["chunks_served"] >= 1
        assert b.distribution.counters["bad_answers"] == c.distribution.counters["chunks_served"]
        assert a.distribution.counters["chunks_served"] == unique_chunks(a, cid)

        # With only the liar left, the fetch names the chunk and the mismatch.
        other = write_capsule(tmp_path / "other-src", manifest(version="2.0.0"), LIMITS_WAT)
        with trio.fail_after(STEP):
            other_cid = await c.distribution.publish(other)
            await find_providers(b, other_cid, {c.peer_id})
            with pytest.raises(ChunkListUnavailableError, match="all providers failed for chunk .*hash mismatch"):
                await b.distribution.fetch(other_cid)


async def test_a_chunk_damaged_in_the_providers_store_is_reported_as_damaged_not_missing(tmp_path, engine):
    source = limits_capsule(tmp_path / "src")
    async with open_mesh(tmp_path, engine, 2) as (a, b):
        with trio.fail_after(STEP):
            cid = await a.distribution.publish(source)
            data_file = next(item for item in a.distribution.published.get(cid).files if item.path == "spec/data.bin")
            damaged = data_file.chunks[0]
            a.store.path(damaged).write_bytes(b"bit rot")
            await find_providers(b, cid, {a.peer_id})
            with pytest.raises(ChunkUnavailableError, match=f"{damaged}: .*{a.peer_id}: chunk store damaged"):
                await b.distribution.fetch(cid)
        assert a.distribution.counters["damaged"] == 1
        assert b.distribution.counters["bad_answers"] == 0  # an honest provider, not a liar


async def test_slow_provider_is_skipped_after_the_request_timeout(tmp_path, engine):
    async with open_mesh(tmp_path, engine, 3) as (a, b, c):

        async def never_answer(chunk_hash):
            await trio.sleep_forever()

        c.distribution.read_chunk = never_answer
        b.distribution.request_timeout = 0.5
        cid, _ = await fetch_published_by_a_and_c(tmp_path, a, b, c)
        assert b.distribution.counters["bad_answers"] >= 1
        assert a.distribution.counters["chunks_served"] == unique_chunks(a, cid)


async def test_tampered_capsule_is_quarantined_with_its_diagnostic(tmp_path, engine):
    source = limits_capsule(tmp_path / "src")
    forge(source)
    async with open_mesh(tmp_path, engine, 2) as (a, b):
        with trio.fail_after(STEP):
            with pytest.raises(CapsuleError, match="bad_signature"):
                await a.distribution.publish(source)
            # A provider that skips publish's checks: fetchers must not rely on them.
            cid, chunk_list = a.store.pack(source)
            a.distribution.published.remember(chunk_list)
            a.discovery.provide(cid)
            await find_providers(b, cid, {a.peer_id})
            with pytest.raises(CapsuleQuarantinedError, match="bad_signature") as failure:
                await b.distribution.fetch(cid)
        assert [d.code for d in failure.value.diagnostics] == ["bad_signature"]
        assert b.runtime.get(cid).state == State.QUARANTINED
        report = json.loads((b.runtime.quarantine_dir / cid / "diagnostics.json").read_text())
        assert report["diagnostics"][0]["code"] == "bad_signature"
        assert not any((b.store.root / "incoming").iterdir())


async def expect_reset(stream) -> None:
    with pytest.raises(StreamReset):
        while await stream.receive_some():
            pass


async def test_bad_requests_reset_only_their_stream(tmp_path, engine):
    source = limits_capsule(tmp_path / "src")
    async with open_mesh(tmp_path, engine, 2) as (a, b):
        with trio.fail_after(STEP):
            cid = await a.distribution.publish(source)
            chunk_list = a.distribution.published.get(cid)
            bad_requests = [
                frame(bytes([0x07]) + bytes(32)),  # unknown kind
                frame(bytes([KIND_CHUNK]) + bytes(5)),  # short
                encode_uvarint(1 << 20) + bytes(100),  # oversized
                b"\xff" * 12,  # a varint that never ends
            ]
            for garbage in bad_requests:
                stream = await b.host.new_stream(a.peer_id, [PROTOCOL_ID])
                await stream.send_all(garbage)
                await expect_reset(stream)
            assert a.distribution.counters["streams_reset"] == len(bad_requests)

            # The provider still serves, several requests pipelined on one stream; after a
            # restart it serves from the chunk lists it persisted.
            restarted = CapsuleDistribution(a.host, a.discovery, ChunkStore(a.store.root), a.runtime)
            restarted.install_handler()
            stream = await b.host.new_stream(a.peer_id, [PROTOCOL_ID])
            reader = BufferedReader(stream)
            requests = [Request.for_chunk_list(cid), Request.for_chunk(chunk_list.unique_chunks[0]),
                        Request.for_chunk("00" * 32), Request(KIND_CHUNK_LIST, bytes(32))]
            for request in requests:
                await stream.send_all(frame(request.encode()))
            answers = [decode_answer(await reader.read_frame(r.max_answer), r.max_answer) for r in requests]
            await stream.send_eof()
            assert await reader.read_frame(1) is None  # the provider closes after our FIN
            assert ChunkList.from_bytes(answers[0]) == chunk_list
            assert answers[1] == a.store.get(chunk_list.unique_chunks[0])
            assert answers[2:] == [None, None]
            assert restarted.counters == {"lists_served": 1, "chunks_served": 1, "not_found": 2}

            with pytest.raises(NoProvidersError):
                await b.distribution.fetch(cid_from_digest(bytes(32)))


# -- decoders, fuzzed -------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80))
def test_request_decoder_accepts_exactly_the_wire_format(body):
    try:
        request = decode_request(body)
    except ProtocolViolation:
        assert len(body) != 33 or body[0] not in (KIND_CHUNK_LIST, KIND_CHUNK)
    else:
        assert request.encode() == body


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([1, 33, 64]))
def test_answer_decoder_bounds_and_round_trips(body, limit):
    try:
        payload = decode_answer(body, limit)
    except ProtocolViolation:
        return
    except ProviderStoreDamaged:
        assert body == DAMAGED_ANSWER
        return
    assert len(body) <= limit and encode_answer(payload) == body


class ScriptedStream:
    """A stream that delivers ``incoming`` in small pieces, then end of data."""

    def __init__(self, incoming: bytes):
        self.incoming = incoming
        self.sent = bytearray()
        self.was_reset = False

    async def receive_some(self, max_bytes=None):
        await trio.lowlevel.checkpoint()
        piece, self.incoming = self.incoming[:7], self.incoming[7:]
        return piece

    async def send_all(self, data):
        self.sent += data

    async def reset(self):
        self.was_reset = True


valid_request = st.builds(lambda kind, digest: frame(bytes([kind]) + digest),
                          st.sampled_from([KIND_CHUNK_LIST, KIND_CHUNK]), st.binary(min_size=32, max_size=32))


def test_provider_survives_any_bytes(tmp_path):
    distribution = CapsuleDistribution(None, None, ChunkStore(tmp_path / "chunks"), None)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.one_of(valid_request, valid_request, st.binary(max_size=40)), max_size=6))
    def serve(pieces):
        incoming = b"".join(pieces)
        stream = ScriptedStream(incoming)
        trio.run(distribution.serve, stream)  # never raises
        answered = len(stream.sent) // 2  # every answer is "not found": frame(b"\x01")
        assert stream.sent == b"\x01\x01" * answered
        if not stream.was_reset:
            assert len(incoming) == 34 * answered

    serve()
