"""The lock client: acquire, renew and release over any validator, retried idempotently; proven reads.

:class:`LockClient` signs each request once with a fresh request ID (or the
caller's, to retry across restarts) and sends it over
``/hm/ledger-tx/1.0.0`` to the proposer of the height after next when it
knows the chain's height (the next one is usually proposed already, the one
after it soonest includes what its proposer holds), else to its peers in
order. It then asks the same node to wait for the request's outcome
(``/hm/ledger-outcome/1.0.0``). A node that cannot be reached, refuses for
room or does not see the request decided in time is left for the next; the
same transaction goes there, so a retry has one effect. When a node says the
nonce is used or the request decided, the client asks it for the outcome and,
if the request is still undecided, signs it again with the node's next nonce
and the same request ID, which the chain decides at most once. The answer is
the decided :class:`~hypermesh.consensus.locks.LockOutcome`: granted with its
fencing token and expiry, released, or refused with the live lease's holder
and expiry. A request the chain refuses as malformed raises
:class:`LockRequestRefused` at once; :class:`LockUnavailable` after
``attempts`` nodes gave no decision.

:meth:`LockClient.read` returns a lock's lease proven against the validator
set the client trusts; :func:`verify_lock_answer` checks a kept answer
offline.

One client sends one request at a time (its nonces stay in order); use one
client per identity.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import trio

from hypermesh.transport.errors import TransportError
from hypermesh.transport.identity import Identity, PeerId

from .genesis import peer_id_of
from .ledger_outcome import OutcomeError, Undecided, await_outcome
from .ledger_query import QueryError, fetch_answer, verify_answer
from .ledger_service import TransactionRefused, send_transaction
from .ledger_tx import (
    REQUEST_ID_SIZE,
    LockAcquire,
    LockBody,
    LockRelease,
    LockRenew,
    check_body_ranges,
    sign_transaction,
)
from .linearizability import ACQUIRE, RELEASE, RENEW, LockResult, Operation
from .locks import Lease, LockDecodeError, LockOutcome, lock_entry_key, request_entry_key
from .validators import ValidatorSet, public_key_of

# Refusals that no other node and no retry would change.
_FINAL_REFUSALS = {"MalformedTransaction", "TtlOutOfRange", "LockNameOutOfRange", "ForgedSignature", "WrongChain",
                   "AmountOutOfRange"}
# Refusals after which the node is asked what became of the request and what nonce to use.
_NONCE_REFUSALS = {"WrongNonce", "DuplicateRequest"}
_KIND_OF_BODY = {LockAcquire: ACQUIRE, LockRenew: RENEW, LockRelease: RELEASE}
_NETWORK_ERRORS = (TransportError, TransactionRefused, OutcomeError, trio.BrokenResourceError,
                   trio.ClosedResourceError)


class LockError(Exception):
    pass


class LockRequestRefused(LockError):
    """The request itself is refused (malformed, forged, another chain): sending it again would not help."""


class LockUnavailable(LockError):
    """No node gave a decided outcome within the client's attempts."""


@dataclass(frozen=True, slots=True)
class ProvenLock:
    """A lock in the state after ``height``, proven against a certified header; ``lease`` None: free."""

    name: bytes
    height: int
    lease: Lease | None


def lock_result(outcome: LockOutcome) -> LockResult:
    """An outcome as the linearizability checker's result (the holder is an account key, b"" none)."""
    return LockResult(outcome.ok, outcome.time, outcome.token, outcome.expiry, outcome.holder or None)


def _holder_text(holder: bytes) -> str | None:
    return str(peer_id_of(holder)) if holder else None


def describe_outcome(outcome: LockOutcome) -> dict:
    """An outcome as one JSON-ready object (what ``hypermesh lock ... --json`` prints); holder as a peer ID."""
    return {"ok": outcome.ok, "outcome": outcome.code.name.lower(), "reason": outcome.reason or None,
            "token": outcome.token, "expiry_ms": outcome.expiry, "holder": _holder_text(outcome.holder),
            "height": outcome.height, "time_ms": outcome.time}


def describe_lock(proven: ProvenLock) -> dict:
    """A proven read as one JSON-ready object (``held`` False: the lock is free at that height)."""
    lease = proven.lease
    return {"name": proven.name.decode(errors="replace"), "height": proven.height, "held": lease is not None,
            "holder": _holder_text(lease.holder) if lease else None, "token": lease.token if lease else None,
            "expiry_ms": lease.expiry if lease else None}


def verify_lock_answer(answer: bytes, name: bytes, chain_id: str, validators: ValidatorSet) -> ProvenLock:
    """A ``/hm/ledger-query`` answer for ``name``, checked offline against ``validators`` (QueryError if not)."""
    height, value = verify_answer(answer, lock_entry_key(name), chain_id, validators)
    try:
        return ProvenLock(name, height, None if value is None else Lease.decode(value))
    except LockDecodeError as exc:
        raise QueryError(f"malformed lease: {exc}") from None


def verify_outcome_answer(answer: bytes, sender: bytes, request_id: bytes, chain_id: str,
                          validators: ValidatorSet) -> tuple[int, LockOutcome | None]:
    """(height, the request's outcome or None) from a ``/hm/ledger-query`` answer, checked offline."""
    height, value = verify_answer(answer, request_entry_key(sender, request_id), chain_id, validators)
    try:
        return height, None if value is None else LockOutcome.decode(value)
    except LockDecodeError as exc:
        raise QueryError(f"malformed outcome: {exc}") from None


def _name_bytes(name: str | bytes) -> bytes:
    return name.encode() if isinstance(name, str) else name


class LockClient:
    """Lock requests from ``identity`` to the validators of ``validators`` (or ``peers``, tried in order)."""

    def __init__(self, host, identity: Identity, chain_id: str, validators: ValidatorSet, *,
                 peers: Sequence[PeerId] | None = None, attempts: int = 8, wait: float = 5.0,
                 history: list[Operation] | None = None):
        """``wait``: how long one node may take to see a request decided before the next is tried.
        ``history``: where to record each operation for the linearizability checker (None: not recorded)."""
        self.host = host
        self.identity = identity
        self.sender = public_key_of(identity)
        self.chain_id = chain_id
        self.validators = validators
        self.peers = list(peers) if peers is not None else [peer_id_of(v.public_key) for v in validators.validators]
        if not self.peers:
            raise ValueError("a lock client needs at least one node to send to")
        self.attempts = attempts
        self.wait = wait
        self.history = history
        self._next_nonce: int | None = None
        self._height: int | None = None  # the latest height a node reported
        self._serial = trio.Lock()

    async def acquire(self, name: str | bytes, ttl_ms: int, request_id: bytes | None = None) -> LockOutcome:
        return await self.request(LockAcquire(request_id or os.urandom(REQUEST_ID_SIZE), _name_bytes(name), ttl_ms))

    async def renew(self, name: str | bytes, token: int, ttl_ms: int, request_id: bytes | None = None
                    ) -> LockOutcome:
        return await self.request(LockRenew(request_id or os.urandom(REQUEST_ID_SIZE), _name_bytes(name), token,
                                            ttl_ms))

    async def release(self, name: str | bytes, token: int, request_id: bytes | None = None) -> LockOutcome:
        return await self.request(LockRelease(request_id or os.urandom(REQUEST_ID_SIZE), _name_bytes(name), token))

    async def read(self, name: str | bytes, peer: PeerId | None = None) -> ProvenLock:
        """The lock as the last certified state has it (one block behind the newest decision), proven; from
        ``peer``, or the first of the peers that answers with a proof that verifies."""
        name = _name_bytes(name)
        return await self._proven(lock_entry_key(name), peer,
                                  lambda answer: verify_lock_answer(answer, name, self.chain_id, self.validators))

    async def proven_outcome(self, request_id: bytes, peer: PeerId | None = None) -> tuple[int, LockOutcome | None]:
        """(height, outcome) of one of this client's requests in the last certified state, proven: the answer
        not to take on one node's word (None: not decided by that height, or past its retention)."""
        return await self._proven(request_entry_key(self.sender, request_id), peer,
                                  lambda answer: verify_outcome_answer(answer, self.sender, request_id,
                                                                       self.chain_id, self.validators))

    async def _proven(self, key: bytes, peer: PeerId | None, verify):
        failures = []
        for candidate in [peer] if peer is not None else self.peers[:self.attempts]:
            try:
                return verify(await fetch_answer(self.host, candidate, key))
            except (QueryError, TransportError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                failures.append(f"{candidate.short()}: {exc}")
        raise LockUnavailable("no proven answer: " + "; ".join(failures))

    async def request(self, body: LockBody) -> LockOutcome:
        """Send one lock request until some node reports its decided outcome."""
        check_body_ranges(body)  # a malformed request is refused before anything is sent
        async with self._serial:
            invoked = trio.current_time()
            outcome = await self._decide(body)
            self._record(body, invoked, outcome)
            return outcome

    async def _decide(self, body: LockBody) -> LockOutcome:
        tx = None
        for attempt in range(self.attempts):
            peer = self._peer_for(attempt)
            try:
                if self._next_nonce is None:
                    decided = await self._status(peer, body)
                    if decided is not None:
                        return decided
                if tx is None or tx.nonce != self._next_nonce:
                    tx = sign_transaction(self.identity, self.chain_id, self._next_nonce, body)
                try:
                    await send_transaction(self.host, peer, tx)
                except TransactionRefused as refusal:
                    if refusal.kind in _FINAL_REFUSALS:
                        raise LockRequestRefused(refusal.reason) from None
                    if refusal.kind not in _NONCE_REFUSALS:
                        continue  # no room there, or no answer: another node
                    decided = await self._status(peer, body)  # the nonce it reports is signed next time
                    if decided is not None:
                        return decided
                    continue
                decided = await self._status(peer, body, tx.nonce, self.wait)
                if decided is not None:
                    self._next_nonce = max(self._next_nonce or 0, tx.nonce + 1)
                    return decided
            except _NETWORK_ERRORS:
                continue
        raise LockUnavailable(f"no node decided the request within {self.attempts} attempts")

    async def _status(self, peer: PeerId, body: LockBody, nonce: int = 0, wait: float = 0.0) -> LockOutcome | None:
        """The decided outcome from ``peer`` (waiting up to ``wait`` while ``nonce`` is unused), or None; the nonce
        and height it reports are remembered."""
        answer = await await_outcome(self.host, peer, self.sender, body.request_id, nonce, wait)
        if isinstance(answer, Undecided):
            self._height = answer.height
            self._next_nonce = answer.next_nonce
            return None
        self._height = answer.height
        return answer

    def _peer_for(self, attempt: int) -> PeerId:
        """The proposer (round 0) of the height after next first, when known and among the peers; then the others."""
        order = self.peers
        if self._height is not None:
            proposer = peer_id_of(self.validators.proposer(self._height + 2, 0))
            if proposer in order:
                order = [proposer] + [peer for peer in order if peer != proposer]
        return order[attempt % len(order)]

    def _record(self, body: LockBody, invoked: float, outcome: LockOutcome) -> None:
        if self.history is None:
            return
        kind = _KIND_OF_BODY[type(body)]
        self.history.append(Operation(self.sender, kind, body.name, invoked, trio.current_time(),
                                      lock_result(outcome), getattr(body, "ttl_ms", None),
                                      getattr(body, "token", 0)))


__all__ = ["LockClient", "LockError", "LockRequestRefused", "LockUnavailable", "ProvenLock", "describe_lock",
           "describe_outcome", "lock_result", "verify_lock_answer", "verify_outcome_answer"]
