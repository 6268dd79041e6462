"""Transaction submission and gossip: ``/hm/ledger-tx/1.0.0`` and ``/hm/ledger-txs/1.0.0``.

A client sends one varint-framed transaction per stream to any node with a
ledger; the node checks it (:meth:`Ledger.submit`: form, chain, signature,
nonce window, mempool bound) and answers with one frame: ``0x00 ‖ tx_id:32``
or ``0x01 ‖ reason`` (UTF-8, the refusal's type and message).

A batch (``/hm/ledger-txs/1.0.0``) is one frame ``count:u16 ‖ count ×
(len:u32 ‖ transaction)`` (at most ``MAX_BATCH`` transactions and
``MAX_BATCH_BYTES``), answered by
one frame of ``count`` answers, each ``len:u16 ‖`` an answer as above: one
stream for many transactions, which is what a busy node relays with and a
client sending many may use.

A transaction new to the node's mempool is relayed to every validator of
the current set, so it reaches whoever proposes next; one already held is
not relayed again, which ends the flood. Relaying is best effort: a bounded
queue (a full queue drops the relay; the client may send again) and one
task, which sends what queued meanwhile as one batch to every validator at
once, so a slow validator delays the relay, never the node.
"""

from __future__ import annotations

import logging
import struct
from typing import Callable

import trio

from hypermesh.transport.errors import TransportError
from hypermesh.transport.identity import PeerId

from .driver import peer_id_of
from .ledger import Ledger
from .ledger_tx import MAX_TX_SIZE, LedgerError, Transaction
from .one_shot import OneShotError, ask, serve_one_request

log = logging.getLogger(__name__)

LEDGER_TX_PROTOCOL = "/hm/ledger-tx/1.0.0"
LEDGER_TX_BATCH_PROTOCOL = "/hm/ledger-txs/1.0.0"
RELAY_QUEUE_SIZE = 4096
# Transactions in one batch, and the bytes of its frame (what a node buffers per batch stream).
MAX_BATCH = 256
MAX_BATCH_BYTES = 1 << 20
_MAX_ANSWER_SIZE = 1024
_MAX_BATCH_ANSWER_SIZE = MAX_BATCH * (2 + _MAX_ANSWER_SIZE)


class MalformedBatch(ValueError):
    pass


def encode_batch(items: list[bytes], width: int = 4) -> bytes:
    """``count:u16 ‖ count × (len ‖ item)``, ``len`` ``width`` bytes."""
    return struct.pack(">H", len(items)) + b"".join(len(item).to_bytes(width, "big") + item for item in items)


def decode_batch(data: bytes, width: int = 4, limit: int = MAX_BATCH) -> list[bytes]:
    if len(data) < 2:
        raise MalformedBatch("truncated batch")
    (count,) = struct.unpack_from(">H", data)
    if count > limit:
        raise MalformedBatch(f"{count} items in a batch, at most {limit}")
    items, offset = [], 2
    for _ in range(count):
        size = int.from_bytes(data[offset:offset + width], "big")
        offset += width
        if offset + size > len(data):
            raise MalformedBatch("truncated batch")
        items.append(data[offset:offset + size])
        offset += size
    if offset != len(data):
        raise MalformedBatch("trailing bytes after the batch")
    return items


class TransactionRefused(Exception):
    """The node refused the transaction; ``reason`` is its answer."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason

    @property
    def kind(self) -> str:
        """The refusal's type name (``WrongNonce``, ``MempoolFull`` …) from a node's ``Type: message`` answer."""
        return self.reason.split(":", 1)[0] if ":" in self.reason else ""


class TransactionService:
    """Takes transactions for ``ledger``'s mempool and relays new ones to the validators.

    Start with ``await nursery.start(service.run)``."""

    def __init__(self, host, ledger: Ledger):
        self.host = host
        self.ledger = ledger
        self._relay_send, self._relay_receive = trio.open_memory_channel(RELAY_QUEUE_SIZE)
        # Called when a new transaction enters the mempool (the consensus driver's txs_available).
        self.on_new: list[Callable[[], None]] = []

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self.host.set_stream_handler(LEDGER_TX_PROTOCOL, self._handle_stream)
        self.host.set_stream_handler(LEDGER_TX_BATCH_PROTOCOL, self._handle_batch_stream)
        try:
            task_status.started()
            async for data in self._relay_receive:
                batch, size = [data], 2 + 4 + len(data)
                # A transaction is at most MAX_TX_SIZE: one more always fits below this.
                while len(batch) < MAX_BATCH and size <= MAX_BATCH_BYTES - 4 - MAX_TX_SIZE:
                    try:
                        data = self._relay_receive.receive_nowait()
                    except trio.WouldBlock:
                        break
                    batch.append(data)
                    size += 4 + len(data)
                await self._relay(batch)
        finally:
            self.host.remove_stream_handler(LEDGER_TX_PROTOCOL)
            self.host.remove_stream_handler(LEDGER_TX_BATCH_PROTOCOL)

    def accept(self, data: bytes) -> bytes:
        """Submit encoded ``data``; its ID. Raises the ledger's refusal; a new transaction is queued for relay."""
        held = len(self.ledger.mempool)
        tx_id = self.ledger.submit(data)
        if len(self.ledger.mempool) > held:  # new here (submit adds at most one)
            for listener in self.on_new:
                listener()
            try:
                self._relay_send.send_nowait(data)
            except trio.WouldBlock:
                log.debug("relay queue full: a transaction is not relayed")
        return tx_id

    async def _relay(self, batch: list[bytes]) -> None:
        async def relay_to(peer: PeerId) -> None:
            try:
                await send_transactions(self.host, peer, batch)
            except (TransactionRefused, TransportError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.debug("relay to %s: %s", peer.short(), exc)
        async with trio.open_nursery() as nursery:
            for validator in self.ledger.validators.validators:
                peer = peer_id_of(validator.public_key)
                if peer != self.host.peer_id:
                    nursery.start_soon(relay_to, peer)

    async def _handle_stream(self, stream) -> None:
        await serve_one_request(stream, MAX_TX_SIZE, self._answer)

    async def _handle_batch_stream(self, stream) -> None:
        await serve_one_request(stream, MAX_BATCH_BYTES, self._answer_batch)

    def _answer(self, data: bytes) -> bytes:
        try:
            return b"\x00" + self.accept(data)
        except LedgerError as exc:
            return b"\x01" + f"{type(exc).__name__}: {exc}".encode()[:_MAX_ANSWER_SIZE - 1]

    def _answer_batch(self, data: bytes) -> bytes | None:
        try:
            items = decode_batch(data)
        except MalformedBatch:
            return None  # resets the stream
        return encode_batch([self._answer(item) for item in items], width=2)


def _outcome(answer: bytes) -> bytes | TransactionRefused:
    """A transaction's ID from an answer, or the refusal it carries."""
    if not answer:
        return TransactionRefused("no answer")
    if answer[0] == 0 and len(answer) == 33:
        return answer[1:]
    return TransactionRefused(answer[1:].decode(errors="replace"))


async def send_transaction(host, peer: PeerId, tx: Transaction | bytes) -> bytes:
    """Submit a transaction to ``peer``; its ID, or :class:`TransactionRefused` with the peer's reason."""
    data = tx.encode() if isinstance(tx, Transaction) else tx
    try:
        answer = await ask(host, peer, LEDGER_TX_PROTOCOL, data, _MAX_ANSWER_SIZE)
    except OneShotError as exc:
        raise TransactionRefused(str(exc)) from None
    outcome = _outcome(answer)
    if isinstance(outcome, TransactionRefused):
        raise outcome
    return outcome


async def send_transactions(host, peer: PeerId, txs: list[Transaction | bytes]) -> list[bytes | TransactionRefused]:
    """Submit up to MAX_BATCH transactions to ``peer`` on one stream; per transaction its ID or the refusal.

    :class:`TransactionRefused` if the peer answers the batch with nothing usable."""
    request = encode_batch([tx.encode() if isinstance(tx, Transaction) else tx for tx in txs])
    if len(txs) > MAX_BATCH or len(request) > MAX_BATCH_BYTES:
        raise ValueError(f"a batch of {len(txs)} transactions, {len(request)} bytes: at most {MAX_BATCH}, "
                         f"{MAX_BATCH_BYTES} bytes")
    try:
        answer = await ask(host, peer, LEDGER_TX_BATCH_PROTOCOL, request, _MAX_BATCH_ANSWER_SIZE)
        answers = decode_batch(answer, width=2)
    except (OneShotError, MalformedBatch) as exc:
        raise TransactionRefused(str(exc)) from None
    if len(answers) != len(txs):
        raise TransactionRefused(f"{len(answers)} answers to {len(txs)} transactions")
    return [_outcome(item) for item in answers]


__all__ = ["LEDGER_TX_BATCH_PROTOCOL", "LEDGER_TX_PROTOCOL", "MAX_BATCH", "TransactionRefused", "TransactionService",
           "send_transaction", "send_transactions"]
