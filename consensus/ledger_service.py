"""Transaction submission and gossip: ``/hm/ledger-tx/1.0.0``.

A client sends one varint-framed transaction per stream to any node with a
ledger; the node checks it (:meth:`Ledger.submit`: form, chain, signature,
nonce window, mempool bound) and answers with one frame: ``0x00 ‖ tx_id:32``
or ``0x01 ‖ reason`` (UTF-8, the refusal's type and message). A transaction
new to the node's mempool is relayed, the same way, to every validator of
the current set, so it reaches whoever proposes next; one already held is
not relayed again, which ends the flood. Relaying is best effort: a bounded
queue (a full queue drops the relay; the client may send again) and one
task, so a slow validator delays the relay, never the node.
"""

from __future__ import annotations

import logging

import trio

from hypermesh.transport.errors import TransportError
from hypermesh.transport.identity import PeerId

from .driver import peer_id_of
from .ledger import Ledger
from .ledger_tx import MAX_TX_SIZE, LedgerError, Transaction
from .one_shot import OneShotError, ask, serve_one_request

log = logging.getLogger(__name__)

LEDGER_TX_PROTOCOL = "/hm/ledger-tx/1.0.0"
RELAY_QUEUE_SIZE = 1024
_MAX_ANSWER_SIZE = 1024


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

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self.host.set_stream_handler(LEDGER_TX_PROTOCOL, self._handle_stream)
        try:
            task_status.started()
            async for data in self._relay_receive:
                await self._relay(data)
        finally:
            self.host.remove_stream_handler(LEDGER_TX_PROTOCOL)

    def accept(self, data: bytes) -> bytes:
        """Submit encoded ``data``; its ID. Raises the ledger's refusal; a new transaction is queued for relay."""
        held = len(self.ledger.mempool)
        tx_id = self.ledger.submit(data)
        if len(self.ledger.mempool) > held:  # new here (submit adds at most one)
            try:
                self._relay_send.send_nowait(data)
            except trio.WouldBlock:
                log.debug("relay queue full: a transaction is not relayed")
        return tx_id

    async def _relay(self, data: bytes) -> None:
        for validator in self.ledger.validators.validators:
            peer = peer_id_of(validator.public_key)
            if peer == self.host.peer_id:
                continue
            try:
                await send_transaction(self.host, peer, data)
            except (TransactionRefused, TransportError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.debug("relay to %s: %s", peer.short(), exc)

    async def _handle_stream(self, stream) -> None:
        await serve_one_request(stream, MAX_TX_SIZE, self._answer)

    def _answer(self, data: bytes) -> bytes:
        try:
            return b"\x00" + self.accept(data)
        except LedgerError as exc:
            return b"\x01" + f"{type(exc).__name__}: {exc}".encode()[:_MAX_ANSWER_SIZE - 1]


async def send_transaction(host, peer: PeerId, tx: Transaction | bytes) -> bytes:
    """Submit a transaction to ``peer``; its ID, or :class:`TransactionRefused` with the peer's reason."""
    data = tx.encode() if isinstance(tx, Transaction) else tx
    try:
        answer = await ask(host, peer, LEDGER_TX_PROTOCOL, data, _MAX_ANSWER_SIZE)
    except OneShotError as exc:
        raise TransactionRefused(str(exc)) from None
    if not answer:
        raise TransactionRefused("no answer")
    if answer[0] == 0 and len(answer) == 33:
        return answer[1:]
    raise TransactionRefused(answer[1:].decode(errors="replace"))


__all__ = ["LEDGER_TX_PROTOCOL", "TransactionRefused", "TransactionService", "send_transaction"]
