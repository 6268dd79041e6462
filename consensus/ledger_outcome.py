"""Waiting for a request's outcome: ``/hm/ledger-outcome/1.0.0``.

A client that submitted a lock transaction (``/hm/ledger-tx/1.0.0`` answers
only that it was taken) asks any node for the decided outcome of its request,
named by sender and request ID, and may ask the node to wait for it. One
varint-framed request per stream, ``sender:32 ‖ request_id:16 ‖ nonce:u64 ‖
wait_ms:u32``: the node waits (at most ``MAX_WAIT_MS``) until the request is
decided or the sender's next nonce passes ``nonce`` (the client's transaction
carrying that nonce can then never apply: it signs again), and sends one
framed answer:

- ``0x00 ‖ outcome`` — decided (consensus/locks.py ``LockOutcome``, which
  names its height);
- ``0x02 ‖ height:u64 ‖ next_nonce:u64`` — not decided in the node's
  committed state at ``height`` when the wait ended; ``next_nonce`` is the
  sender's next nonce there (what a client signs its next transaction with).

A request of the wrong size resets the stream.

The answer is the node's word, not a proof: a client that must not trust one
node reads the lock with a proof (``ledger_query``) once the block after the
decision is certified.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import trio

from hypermesh.transport.identity import PeerId

from .ledger import Ledger
from .ledger_tx import REQUEST_ID_SIZE
from .locks import LockDecodeError, LockOutcome
from .one_shot import OneShotError, ask, serve_one_request

LEDGER_OUTCOME_PROTOCOL = "/hm/ledger-outcome/1.0.0"
MAX_WAIT_MS = 10_000
_REQUEST_SIZE = 32 + REQUEST_ID_SIZE + 8 + 4
_MAX_ANSWER_SIZE = 1024


class OutcomeError(Exception):
    """No answer, or a malformed one."""


@dataclass(frozen=True, slots=True)
class Undecided:
    """The request is not decided in the node's state at ``height``; the sender's ``next_nonce`` there."""

    height: int
    next_nonce: int


class OutcomeService:
    """Answers outcome requests from ``ledger``'s committed state, waiting for commits (feed :meth:`on_commit`)."""

    def __init__(self, host, ledger: Ledger):
        self.host = host
        self.ledger = ledger
        self._committed = trio.Event()

    def start(self) -> None:
        self.host.set_stream_handler(LEDGER_OUTCOME_PROTOCOL, self._handle_stream)

    def stop(self) -> None:
        self.host.remove_stream_handler(LEDGER_OUTCOME_PROTOCOL)

    def on_commit(self, _committed=None) -> None:
        """Wake the waiters: the ledger has executed another block."""
        self._committed.set()
        self._committed = trio.Event()

    async def answer(self, sender: bytes, request_id: bytes, nonce: int, wait_ms: int) -> bytes:
        with trio.move_on_after(min(wait_ms, MAX_WAIT_MS) / 1000):
            # Bounded by the wait: each pass waits for the next commit.
            while (self.ledger.lock_outcome(sender, request_id) is None
                   and self.ledger.state.nonce(sender) <= nonce):
                await self._committed.wait()
        outcome = self.ledger.lock_outcome(sender, request_id)
        if outcome is not None:
            return b"\x00" + outcome.encode()
        state = self.ledger.state
        return b"\x02" + struct.pack(">QQ", state.height, state.nonce(sender))

    async def _handle_stream(self, stream) -> None:
        await serve_one_request(stream, _REQUEST_SIZE, self._answer_request)

    async def _answer_request(self, request: bytes) -> bytes | None:
        if len(request) != _REQUEST_SIZE:
            return None
        nonce, wait_ms = struct.unpack(">QI", request[48:])
        return await self.answer(request[:32], request[32:48], nonce, wait_ms)


def decode_outcome_answer(answer: bytes) -> LockOutcome | Undecided:
    if not answer:
        raise OutcomeError("empty answer")
    if answer[0] == 0:
        try:
            return LockOutcome.decode(answer[1:])
        except LockDecodeError as exc:
            raise OutcomeError(f"malformed outcome: {exc}") from None
    if answer[0] == 2 and len(answer) == 17:
        return Undecided(*struct.unpack(">QQ", answer[1:]))
    raise OutcomeError("malformed answer")


async def await_outcome(host, peer: PeerId, sender: bytes, request_id: bytes, nonce: int = 0,
                        wait: float = 0.0) -> LockOutcome | Undecided:
    """Ask ``peer`` for the outcome of ``sender``'s request, letting it wait up to ``wait`` seconds for it, or
    until the sender's next nonce passes ``nonce`` (that of the transaction sent)."""
    if len(sender) != 32 or len(request_id) != REQUEST_ID_SIZE:
        raise ValueError("a sender is 32 bytes and a request ID 16")
    wait_ms = max(0, min(int(wait * 1000), MAX_WAIT_MS))
    try:
        answer = await ask(host, peer, LEDGER_OUTCOME_PROTOCOL,
                           sender + request_id + struct.pack(">QI", nonce, wait_ms), _MAX_ANSWER_SIZE)
    except OneShotError as exc:
        raise OutcomeError(str(exc)) from None
    return decode_outcome_answer(answer)


__all__ = ["LEDGER_OUTCOME_PROTOCOL", "MAX_WAIT_MS", "OutcomeError", "OutcomeService", "Undecided", "await_outcome",
           "decode_outcome_answer"]
