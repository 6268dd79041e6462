"""State sync over the network: ``/hm/state-sync/1.0.0``, snapshots served by a node, fetched by a late one.

One request per stream, each a varint-framed message, answered with one
frame:

- ``0x01`` *offer* → ``len:u32 ‖ manifest ‖ commit`` (the snapshot's
  manifest, :mod:`snapshot`, and the encoded commit of the next block, whose
  certificate certifies the snapshot's root), or an empty frame: no snapshot.
- ``0x02 ‖ height:u64 ‖ index:u32`` *chunk* → ``0x00 ‖ chunk``, or ``0x01``:
  not held (the server moved on to a newer snapshot).

The server (:class:`SnapshotServer`) snapshots its ledger every
``interval`` heights and offers it once the next block is decided (the
commit that certifies it is then known); it offers the latest and keeps the
one before for fetches under way. The client
(:func:`fetch_snapshot`) trusts nothing the server says: the commit must
verify against the validator set the client trusts, every chunk must match
the manifest, and the rebuilt state must give the certified root.
"""

from __future__ import annotations

import struct

from hypermesh.transport.identity import PeerId

from .genesis import Genesis
from .ledger import InvalidBlock, Ledger, certified_root
from .merkle import ProofError
from .one_shot import OneShotError, ask, serve_one_request
from .snapshot import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MAX_CHUNKS, Manifest, SnapshotError, SnapshotRestorer, make_snapshot
from .tendermint import Committed
from .validators import ValidatorSet
from .wire import MAX_MESSAGE_SIZE, Commit, WireError, decode_message, encode_message

STATE_SYNC_PROTOCOL = "/hm/state-sync/1.0.0"
_OFFER, _CHUNK = 0x01, 0x02
_MAX_OFFER_SIZE = 4 + 45 + 32 * MAX_CHUNKS + MAX_MESSAGE_SIZE
_MAX_REQUEST_SIZE = 16
KEPT_SNAPSHOTS = 2
# A fetch that loses its snapshot to a newer one starts again from the newer offer, this often at most.
OFFER_ATTEMPTS = 3


class StateSyncError(SnapshotError):
    """The peer has no snapshot, broke the protocol, or served one that does not verify."""


class SnapshotGone(StateSyncError):
    """The snapshot being fetched was replaced by a newer one (a fast chain)."""


class SnapshotServer:
    """Serves the latest certified snapshot of ``ledger``; feed it the node's decisions (:meth:`on_commit`)."""

    def __init__(self, host, ledger: Ledger, interval: int = 1_000, chunk_size: int = DEFAULT_CHUNK_SIZE):
        self.host = host
        self.ledger = ledger
        self.interval = interval
        self.chunk_size = chunk_size
        self._pending: tuple[Manifest, list[bytes]] | None = None
        # height -> (manifest, chunks, certifying commit); the latest two, so
        # that a fetch under way survives the next snapshot.
        self._offers: dict[int, tuple[Manifest, list[bytes], Commit]] = {}

    def start(self) -> None:
        self.host.set_stream_handler(STATE_SYNC_PROTOCOL, self._handle_stream)

    def stop(self) -> None:
        self.host.remove_stream_handler(STATE_SYNC_PROTOCOL)

    def on_commit(self, event: Committed) -> None:
        """A decision of the node (``ConsensusService.on_commit``), after the ledger executed it."""
        if self._pending is not None and self._pending[0].height == event.height - 1:
            manifest, chunks = self._pending
            self._offer(manifest, chunks, Commit(event.certificate, event.value))
            self._pending = None
        state = self.ledger.state
        if state.height == event.height and state.height % self.interval == 0:
            self._pending = make_snapshot(state, self.chunk_size)

    def offer_certified(self) -> None:
        """Offer the ledger's latest certified state now (a restarted server, say), not only at the next interval."""
        if self.ledger.certified is None:
            return
        state, commit = self.ledger.certified
        self._offer(*make_snapshot(state, self.chunk_size), commit)

    def _offer(self, manifest: Manifest, chunks: list[bytes], commit: Commit) -> None:
        self._offers[manifest.height] = (manifest, chunks, commit)
        self._offers = dict(sorted(self._offers.items())[-KEPT_SNAPSHOTS:])

    def _answer(self, request: bytes) -> bytes | None:
        if request == bytes([_OFFER]):
            if not self._offers:
                return b""
            manifest, _, commit = self._offers[max(self._offers)]
            encoded = manifest.encode()
            return struct.pack(">I", len(encoded)) + encoded + encode_message(commit)
        if len(request) == 13 and request[0] == _CHUNK:
            height, index = struct.unpack(">QI", request[1:])
            offer = self._offers.get(height)
            if offer is not None and index < len(offer[1]):
                return b"\x00" + offer[1][index]
            return b"\x01"
        return None  # unknown request: the stream is reset

    async def _handle_stream(self, stream) -> None:
        await serve_one_request(stream, _MAX_REQUEST_SIZE, self._answer)


async def _request(host, peer: PeerId, request: bytes, max_size: int) -> bytes:
    try:
        return await ask(host, peer, STATE_SYNC_PROTOCOL, request, max_size)
    except OneShotError as exc:
        raise StateSyncError(str(exc)) from None


async def fetch_snapshot(host, peer: PeerId, genesis: Genesis, validators: ValidatorSet) -> tuple[Ledger, Commit]:
    """A ledger at height h + 1, restored from ``peer``'s snapshot of h and the certified block h + 1.

    ``validators`` is the set the client trusts to have signed block h + 1
    (the genesis set, while no set change needs following). The returned
    commit goes into the node's consensus store, so its core starts at h + 2.
    Raises :class:`StateSyncError` (no snapshot, protocol broken, not
    certified by ``validators``), ``ChunkMismatch`` or ``RootMismatch``. A
    snapshot the peer drops mid-fetch is fetched again from its newest offer,
    up to ``OFFER_ATTEMPTS`` offers in all.
    """
    for _ in range(OFFER_ATTEMPTS - 1):
        try:
            return await _fetch_offered(host, peer, genesis, validators)
        except SnapshotGone:
            continue  # the server moved on while we fetched: its newer snapshot
    return await _fetch_offered(host, peer, genesis, validators)


async def _fetch_offered(host, peer: PeerId, genesis: Genesis, validators: ValidatorSet) -> tuple[Ledger, Commit]:
    offer = await _request(host, peer, bytes([_OFFER]), _MAX_OFFER_SIZE)
    if not offer:
        raise StateSyncError("the peer has no snapshot to offer")
    try:
        (size,) = struct.unpack(">I", offer[:4])
        manifest = Manifest.decode(offer[4:4 + size])
        commit = decode_message(offer[4 + size:])
    except (struct.error, WireError) as exc:
        raise StateSyncError(f"malformed offer: {exc}") from None
    if not isinstance(commit, Commit):
        raise StateSyncError("the offer's certificate is not a commit")
    try:
        height, root = certified_root(commit, genesis.chain_id, validators)
    except ProofError as exc:
        raise StateSyncError(str(exc)) from None
    restorer = SnapshotRestorer(genesis, height, root, manifest)
    for index in restorer.missing():
        answer = await _request(host, peer, struct.pack(">BQI", _CHUNK, height, index), MAX_CHUNK_SIZE + 1)
        if answer[:1] != b"\x00":
            raise SnapshotGone(f"the peer no longer holds chunk {index} of height {height}")
        restorer.add_chunk(index, answer[1:])
    ledger = Ledger(genesis, state=restorer.finish())
    try:
        ledger.finalize(commit)
    except InvalidBlock as exc:
        raise StateSyncError(f"the certified block does not apply to the snapshot: {exc}") from None
    return ledger, commit


__all__ = ["STATE_SYNC_PROTOCOL", "SnapshotGone", "SnapshotServer", "StateSyncError", "fetch_snapshot"]
