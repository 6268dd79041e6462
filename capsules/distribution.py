"""Capsule distribution over the mesh: publish a capsule by CID, fetch it from several providers.

A node that publishes a capsule packs it into its chunk store (deduplicated,
see :mod:`chunks`), keeps its chunk list under ``<chunk store>/lists/`` (so
it is served again after a restart) and announces the CID in the DHT. A node
that fetches a CID asks the DHT for providers, takes the chunk list from one
of them, checks it against the CID, pulls the chunks from all of them at once
and hands the reassembled directory to the runtime, whose admission decides
whether it may run. Nothing a provider sends is trusted: the chunk list must
describe the CID's signed receipt, every chunk must match its hash, and the
capsule must pass admission.

The wire format of ``/hm/capsule-chunks/1.0.0`` is in :mod:`chunk_wire`.
"""

from __future__ import annotations

import collections
import logging
import secrets
import shutil
from pathlib import Path
from typing import Awaitable, Callable, TypeVar

import trio

from hypermesh.transport.errors import TransportError
from hypermesh.transport.framing import BufferedReader, FramingError, write_frame
from hypermesh.transport.identity import PeerId

from .chunk_wire import (
    DAMAGED_ANSWER,
    KIND_CHUNK_LIST,
    MAX_CHUNK_LIST_BYTES,
    PROTOCOL_ID,
    REQUEST_BYTES,
    ProtocolViolation,
    ProviderStoreDamaged,
    Request,
    decode_answer,
    decode_request,
    encode_answer,
)
from .admission import Quarantined
from .chunks import DEFAULT_PARALLEL_FETCHES, ChunkList, ChunkStore, unpack, verify_chunk
from .cid import cid_from_digest, digest_from_cid
from .errors import CapsuleError, ChunkError, FormatError
from .layout import MAX_JSON_BYTES, RECEIPT_FILE, read_bounded
from .lifecycle import State
from .receipt import Receipt, parse_receipt, root_hash
from .storage import atomic_write, ensure_private_dir

logger = logging.getLogger("hypermesh.capsules.distribution")

# A client that opens a stream and goes quiet (or stops reading) would pin
# one of the host's inbound handler slots; it gets this long to send a
# request and take its answer.
EXCHANGE_TIMEOUT = 30.0
# How long a fetcher waits for one answer before trying another provider:
# a 256 KiB chunk takes milliseconds on a sane link, so a provider this slow
# is better skipped.
DEFAULT_REQUEST_TIMEOUT = 10.0
# After this many failed requests a provider is only asked as a last resort.
MAX_PROVIDER_FAILURES = 3

Progress = Callable[[int, int], None]
T = TypeVar("T")


# -- errors -----------------------------------------------------------------


class DistributionError(CapsuleError):
    """Fetching or publishing a capsule over the mesh failed."""


class NoProvidersError(DistributionError):
    """The DHT knows no provider (other than this node) for the CID."""


class ChunkListUnavailableError(DistributionError):
    """No provider gave a chunk list that matches the CID."""


class ChunkUnavailableError(DistributionError, ChunkError):
    """Every provider failed for one chunk; ``attempts`` says how each failed."""

    def __init__(self, digest: str, attempts: list[str]):
        super().__init__(f"all providers failed for chunk {digest}: " + "; ".join(attempts or ["no provider left"]))
        self.digest = digest
        self.attempts = attempts


class CapsuleQuarantinedError(DistributionError):
    """The fetched capsule failed admission; it is kept in quarantine with ``diagnostics``."""

    def __init__(self, cid: str, capsule):
        self.cid = cid
        self.capsule = capsule
        self.diagnostics = tuple(capsule.diagnostics)
        reasons = "; ".join(str(d) for d in self.diagnostics) or "no diagnostic"
        super().__init__(f"capsule {cid} was quarantined at admission ({capsule.directory}): {reasons}")


# -- what this node publishes ----------------------------------------------


class PublishedLists:
    """The chunk lists this node published, kept as ``<chunk store>/lists/<cid>.json``.

    Also indexes the chunks they name: those are the only chunks served, so
    the chunks of a capsule packed but never published stay private.
    """

    def __init__(self, store: ChunkStore):
        self.directory = ensure_private_dir(store.root / "lists")
        self._lists: dict[str, ChunkList] = {}
        self._chunks: set[str] = set()
        for path in sorted(self.directory.glob("*.json")):
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            chunk_list = ChunkList.from_bytes(read_bounded(path, path.name, MAX_CHUNK_LIST_BYTES))
        except (FormatError, OSError) as exc:
            logger.warning("ignoring published chunk list %s: %s", path, exc)
            return
        if path.name != f"{chunk_list.cid}.json":
            logger.warning("ignoring %s: it holds the chunk list of %s", path, chunk_list.cid)
            return
        self._index(chunk_list)

    def _index(self, chunk_list: ChunkList) -> None:
        self._lists[chunk_list.cid] = chunk_list
        self._chunks.update(chunk_list.unique_chunks)

    def remember(self, chunk_list: ChunkList) -> None:
        atomic_write(self.directory / f"{chunk_list.cid}.json", chunk_list.to_bytes(), mode=0o600)
        self._index(chunk_list)

    def get(self, cid: str) -> ChunkList | None:
        return self._lists.get(cid)

    def serves_chunk(self, chunk_hash: str) -> bool:
        return chunk_hash in self._chunks

    @property
    def cids(self) -> list[str]:
        return sorted(self._lists)


# -- the client side: streams to providers ----------------------------------


class _ProviderStreams:
    """Request/answer exchanges with providers; a stream carries one exchange at a time and is reused.

    A stream whose exchange failed or was cancelled is reset and dropped: its
    next bytes could be the late answer to the abandoned request.
    """

    def __init__(self, host, timeout: float):
        self.host = host
        self.timeout = timeout
        self._idle: dict[PeerId, list[tuple[object, BufferedReader]]] = collections.defaultdict(list)

    async def request(self, peer: PeerId, request: Request) -> bytes | None:
        with trio.fail_after(self.timeout):
            if self._idle[peer]:
                stream, reader = self._idle[peer].pop()
            else:
                stream = await self.host.new_stream(peer, [PROTOCOL_ID])
                reader = BufferedReader(stream)
            try:
                await write_frame(stream, request.encode())
                body = await reader.read_frame(request.max_answer)
                if body is None:
                    raise ProtocolViolation("the provider closed the stream instead of answering")
                payload = decode_answer(body, request.max_answer)
            except BaseException:
                await _reset_quietly(stream)
                raise
        self._idle[peer].append((stream, reader))
        return payload

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            for streams in self._idle.values():
                for stream, _ in streams:
                    await _reset_or_close(stream)
        self._idle.clear()


async def _reset_quietly(stream) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(1):
        try:
            await stream.reset()
        except (TransportError, OSError):
            pass


async def _reset_or_close(stream) -> None:
    try:
        await stream.aclose()
    except (TransportError, OSError):
        await _reset_quietly(stream)


# Failures of one provider on one request: try another provider.
_PROVIDER_FAULTS = (TransportError, FramingError, ProtocolViolation, ChunkError, FormatError, trio.TooSlowError,
                    OSError)


class _Providers:
    """The providers of one fetch, asked round-robin, with failover.

    Each request starts one provider further along than the previous one, so
    concurrent chunk requests spread over all providers; a provider that
    failed :data:`MAX_PROVIDER_FAILURES` times is asked only after the others.
    """

    def __init__(self, streams: _ProviderStreams, peers: list[PeerId], counters: collections.Counter):
        self.streams = streams
        self.peers = peers
        self.counters = counters
        self.failures: collections.Counter[PeerId] = collections.Counter()
        self._next = 0

    def _order(self) -> list[PeerId]:
        start = self._next
        self._next = (self._next + 1) % len(self.peers)
        rotated = self.peers[start:] + self.peers[:start]
        return sorted(rotated, key=lambda peer: self.failures[peer] >= MAX_PROVIDER_FAILURES)

    async def first_accepted(self, request: Request,
                             accept: Callable[[bytes], Awaitable[T]]) -> tuple[T | None, list[str]]:
        """The first answer that ``accept`` turns into a result, or None and why each provider failed.

        ``accept`` raises (a :data:`_PROVIDER_FAULTS` error) to refuse an answer.
        """
        attempts = []
        for peer in self._order():
            try:
                payload = await self.streams.request(peer, request)
                if payload is None:
                    attempts.append(f"{peer}: not found")
                    continue
                return await accept(payload), attempts
            except ProviderStoreDamaged as exc:
                # An honest provider with a disk problem: say so, and ask the next one.
                attempts.append(f"{peer}: {exc}")
            except _PROVIDER_FAULTS as exc:
                self.failures[peer] += 1
                self.counters["bad_answers"] += 1
                attempts.append(f"{peer}: {_describe(exc)}")
                logger.warning("%s from %s failed: %s", request, peer, _describe(exc))
        return None, attempts


class _ChunkFetcher:
    """The ``fetch`` given to :func:`unpack`: verified chunks from any provider, with progress."""

    def __init__(self, providers: _Providers, chunk_list: ChunkList, store: ChunkStore, progress: Progress | None):
        self.providers = providers
        self.store = store
        self.progress = progress
        # A chunk repeated in the capsule counts once per occurrence, so that
        # progress ends at the capsule's size.
        self.occurrences = collections.Counter(chunk for item in chunk_list.files for chunk in item.chunks)
        self.total = sum(item.size for item in chunk_list.files)
        self.done = sum(self.store.path(chunk).stat().st_size * count
                        for chunk, count in self.occurrences.items() if self.store.has(chunk))
        self._report()

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)

    async def __call__(self, chunk_hash: str) -> bytes:
        async def verified(data: bytes) -> bytes:
            verify_chunk(chunk_hash, data)
            return data

        data, attempts = await self.providers.first_accepted(Request.for_chunk(chunk_hash), verified)
        if data is None:
            raise ChunkUnavailableError(chunk_hash, attempts)
        self.providers.counters["chunks_fetched"] += 1
        self.done += len(data) * self.occurrences[chunk_hash]
        self._report()
        return data

    async def into_store(self, chunk_hash: str) -> bytes:
        """Fetch one chunk outside :func:`unpack` (the receipt, checked first) and keep it."""
        if self.store.has(chunk_hash):
            return self.store.get(chunk_hash)
        data = await self(chunk_hash)
        self.store.put(data)
        return data


def _describe(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def check_receipt_matches(cid: str, chunk_list: ChunkList, receipt_bytes: bytes) -> Receipt:
    """Check that a chunk list describes the capsule named by ``cid``, before fetching the rest.

    The receipt's root must be the CID's digest and hash its own file list,
    and the chunk list must name exactly those files plus the receipt. File
    contents are checked by their chunk hashes and, last, by admission.
    """
    if chunk_list.cid != cid:
        raise FormatError(f"chunk list is for {chunk_list.cid}, not {cid}")
    receipt = parse_receipt(receipt_bytes)
    expected_root = digest_from_cid(cid)
    if receipt.cid != cid or receipt.root != expected_root or root_hash(receipt.files) != expected_root:
        raise FormatError(f"the chunk list's receipt.json does not have root {expected_root.hex()} of {cid}")
    listed = {item.path for item in chunk_list.files}
    if listed != set(receipt.files) | {RECEIPT_FILE}:
        differing = sorted(listed ^ (set(receipt.files) | {RECEIPT_FILE}))
        raise FormatError(f"chunk list files differ from the receipt's: {differing}")
    return receipt


# -- the service ------------------------------------------------------------


class CapsuleDistribution:
    """Publishes capsules from, and fetches capsules into, one node.

    ``counters`` (a :class:`collections.Counter`) counts what happened, for
    metrics and tests: ``lists_served``, ``chunks_served``, ``not_found``,
    ``damaged``, ``streams_reset`` on the provider side; ``chunks_fetched`` and
    ``bad_answers`` (a provider failed, answered late, or sent bytes that do
    not match) on the fetching side.
    """

    def __init__(self, host, discovery, chunk_store: ChunkStore, runtime, *,
                 request_timeout: float = DEFAULT_REQUEST_TIMEOUT, provide_fetched: bool = True):
        self.host = host
        # A node that fetched and admitted a capsule serves it on, as IPFS
        # nodes do: popular capsules gain providers as they spread.
        self.provide_fetched = provide_fetched
        self.discovery = discovery
        self.store = chunk_store
        self.runtime = runtime
        self.request_timeout = request_timeout
        self.published = PublishedLists(chunk_store)
        self.counters: collections.Counter[str] = collections.Counter()
        self.incoming_dir = ensure_private_dir(chunk_store.root / "incoming")
        # What a fetch interrupted by a crash left behind: never admitted, useless now.
        for leftover in self.incoming_dir.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)

    def install_handler(self) -> None:
        self.host.set_stream_handler(PROTOCOL_ID, self.serve)

    # -- provider side -------------------------------------------------------

    async def publish(self, capsule_dir: Path) -> str:
        """Pack a signed capsule into the chunk store, remember its chunk list and announce its CID.

        Only a capsule this node would run: admitted, compiling and linking.
        """
        checked = await trio.to_thread.run_sync(self.runtime.preflight, Path(capsule_dir))
        if isinstance(checked, Quarantined):
            raise CapsuleError(f"not publishing {capsule_dir}: {checked.reason}")
        cid, chunk_list = await trio.to_thread.run_sync(self.store.pack, Path(capsule_dir))
        self.published.remember(chunk_list)
        self.discovery.provide(cid)
        logger.info("published capsule %s (%d files, %d chunks)", cid, len(chunk_list.files),
                    len(chunk_list.unique_chunks))
        return cid

    async def serve(self, stream) -> None:
        """Answer pipelined requests until the client finishes; reset the stream on a bad request."""
        reader = BufferedReader(stream)
        while True:
            # One deadline per exchange: a client that goes quiet, or stops
            # reading our answers, cannot pin this handler.
            with trio.move_on_after(EXCHANGE_TIMEOUT) as exchange:
                try:
                    body = await reader.read_frame(REQUEST_BYTES)
                    if body is None:
                        return
                    request = decode_request(body)
                except (FramingError, ProtocolViolation) as exc:
                    return await self._refuse(stream, str(exc))
                await write_frame(stream, await self._answer(request))
            if exchange.cancelled_caught:
                return await self._refuse(stream, f"exchange not finished in {EXCHANGE_TIMEOUT:g} s")

    async def _refuse(self, stream, reason: str) -> None:
        self.counters["streams_reset"] += 1
        logger.info("resetting %s stream from %s: %s", PROTOCOL_ID, getattr(stream, "remote_peer", "?"), reason)
        await stream.reset()

    async def _answer(self, request: Request) -> bytes:
        """The encoded answer to one request."""
        if request.kind == KIND_CHUNK_LIST:
            chunk_list = self.published.get(cid_from_digest(request.digest))
            found = None if chunk_list is None else chunk_list.to_bytes()
            self.counters["lists_served" if found is not None else "not_found"] += 1
            return encode_answer(found)
        chunk_hash = request.digest.hex()
        try:
            found = await self.read_chunk(chunk_hash)
        except ChunkError as exc:
            # Damaged at rest: never send wrong bytes; the fetcher learns why and goes elsewhere.
            logger.error("chunk store damaged, not serving %s: %s", chunk_hash, exc)
            self.counters["damaged"] += 1
            return DAMAGED_ANSWER
        self.counters["chunks_served" if found is not None else "not_found"] += 1
        return encode_answer(found)

    async def read_chunk(self, chunk_hash: str) -> bytes | None:
        """A published chunk from the store (read off the event loop), or None; ChunkError if damaged."""
        if not self.published.serves_chunk(chunk_hash) or not self.store.has(chunk_hash):
            return None
        return await trio.to_thread.run_sync(self.store.get, chunk_hash)

    # -- fetching side -------------------------------------------------------

    async def fetch(self, cid: str, progress: Progress | None = None, parallel: int = DEFAULT_PARALLEL_FETCHES):
        """Fetch the capsule ``cid`` from its providers and install it; returns the runtime's capsule.

        A capsule this node published itself is installed from its own chunk store.

        ``progress(done_bytes, total_bytes)`` is called as chunks arrive
        (chunks already in the local store count as done from the start).
        Raises :class:`FormatError` for a malformed CID, then
        :class:`NoProvidersError`, :class:`ChunkListUnavailableError`,
        :class:`ChunkUnavailableError` or :class:`CapsuleQuarantinedError`.
        """
        digest_from_cid(cid)  # refuse a malformed CID before any network traffic
        known = self._already_installed(cid)
        if known is not None:
            return known
        own = self.published.get(cid)
        if own is not None and all(self.store.has(chunk) for chunk in own.unique_chunks):
            # A capsule this node publishes: assembled from its own chunks, no network.
            return await self._assemble_and_install(cid, own, self.store.fetch, parallel)
        streams = _ProviderStreams(self.host, self.request_timeout)
        providers = _Providers(streams, await self._find_providers(cid), self.counters)
        try:
            chunk_list, fetcher = await self._fetch_chunk_list(cid, providers, progress)
            capsule = await self._assemble_and_install(cid, chunk_list, fetcher, parallel)
        finally:
            await streams.aclose()
        if self.provide_fetched:
            # Every chunk it names is in our store now, checked against the receipt.
            self.published.remember(chunk_list)
            self.discovery.provide(cid)
        return capsule

    async def _assemble_and_install(self, cid: str, chunk_list: ChunkList, fetch, parallel: int):
        """Unpack the chunks (``fetch``ed as needed) into a directory, install it, then remove the directory."""
        dest = self.incoming_dir / f"{cid}.{secrets.token_hex(6)}"
        try:
            await unpack(chunk_list, fetch, dest, self.store, parallel=parallel)
            capsule = await trio.to_thread.run_sync(self.runtime.install, dest)
        finally:
            shutil.rmtree(dest, ignore_errors=True)
        if capsule.state == State.QUARANTINED:
            raise CapsuleQuarantinedError(cid, capsule)
        return capsule

    def publishes(self, cid: str) -> bool:
        """Whether this node serves ``cid``'s chunks (it published, or fetched and admitted, it)."""
        return self.published.get(cid) is not None

    def _already_installed(self, cid: str):
        try:
            capsule = self.runtime.get(cid)
        except CapsuleError:
            return None
        return None if capsule.state == State.QUARANTINED else capsule

    async def _find_providers(self, cid: str) -> list[PeerId]:
        """Providers other than this node, with their addresses added to the peerstore."""
        providers = []
        for info in await self.discovery.find_providers(cid):
            if info.peer_id == self.host.peer_id or info.peer_id in providers:
                continue
            if info.addrs:
                self.host.peerstore.add_addrs(info.peer_id, info.addrs)
            providers.append(info.peer_id)
        if not providers:
            raise NoProvidersError(f"no provider of capsule {cid} found in the DHT")
        return providers

    async def _fetch_chunk_list(self, cid: str, providers: _Providers,
                                progress: Progress | None) -> tuple[ChunkList, _ChunkFetcher]:
        """The first chunk list, from any provider, that describes ``cid``'s signed receipt."""

        async def matching(payload: bytes) -> tuple[ChunkList, _ChunkFetcher]:
            # Validating ~17,000 entries takes a while: off the event loop.
            chunk_list = await trio.to_thread.run_sync(ChunkList.from_bytes, payload)
            fetcher = _ChunkFetcher(providers, chunk_list, self.store, progress)
            receipt_file = next(item for item in chunk_list.files if item.path == RECEIPT_FILE)
            if receipt_file.size > MAX_JSON_BYTES:
                raise FormatError(f"receipt.json of {receipt_file.size} bytes is over {MAX_JSON_BYTES}")
            receipt_bytes = b"".join([await fetcher.into_store(chunk) for chunk in receipt_file.chunks])
            check_receipt_matches(cid, chunk_list, receipt_bytes)
            return chunk_list, fetcher

        found, attempts = await providers.first_accepted(Request.for_chunk_list(cid), matching)
        if found is None:
            raise ChunkListUnavailableError(f"no provider gave a chunk list matching {cid}: " + "; ".join(attempts))
        return found
