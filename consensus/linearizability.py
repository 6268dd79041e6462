"""A linearizability checker for lock histories, and a lease-overlap check.

A history is a list of :class:`Operation`: who asked (``process``), what
(``kind``: acquire, renew, release or read of the lock ``name``), when the
call was made and when its answer came (``invoke``/``complete``, any clock
the clients share; ``complete`` None for an answer never heard), and the
decided :class:`LockResult`, which carries the block time ``at`` of the
decision. An operation with no known result is left out by the caller (it is
taken to have had no effect).

The history is linearizable if some total order of its operations respects
real time (an operation that completed before another was invoked comes
first) and replays on the sequential lock specification (:func:`step`) with
exactly the results observed. The search is Wing and Gong's with Lowe's
memoisation, as Porcupine does it: calls and returns in time order in a
linked list, linearize the first call whose result the specification accepts,
backtrack at a return whose call is not linearized yet, and never revisit a
(set of linearized operations, state) pair. Locks are independent objects, so
each name is checked on its own (P-compositionality), which keeps each search
small.

The sequential specification, per lock, in block time: a lease is live at
``at`` while ``expiry > at``; block time never goes back along the order;
``acquire`` is granted iff no lease is live, with a token greater than every
earlier token of the lock and ``expiry = at + ttl``, and refused otherwise with
the live lease's holder and expiry; ``renew`` and ``release`` succeed iff the
caller holds the live lease with the token it presents (a renewal keeps the
token and sets ``expiry = at + ttl``); ``read`` returns the live lease or
none.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Hashable, Iterable, Sequence

ACQUIRE, RENEW, RELEASE, READ = "acquire", "renew", "release", "read"
KINDS = (ACQUIRE, RENEW, RELEASE, READ)
# Bounds one search: a history that needs more steps is reported as undecided, not looped on.
MAX_SEARCH_STEPS = 2_000_000


@dataclass(frozen=True, slots=True)
class LockResult:
    """The decided answer: ``ok`` (granted / released); ``at`` the block time it took effect.

    Granted acquire/renew: ``token`` and ``expiry``. Refused acquire: ``holder``
    and ``expiry`` of the live lease. Read: the live lease (``holder`` None: free)."""

    ok: bool
    at: int
    token: int = 0
    expiry: int = 0
    holder: Hashable | None = None


@dataclass(frozen=True, slots=True)
class Operation:
    process: Hashable
    kind: str
    name: Hashable
    invoke: float
    complete: float | None
    result: LockResult
    ttl: int | None = None  # acquire/renew; None: the expiry is not checked against it
    token: int = 0  # renew/release: the token presented


@dataclass(frozen=True, slots=True)
class LockState:
    """One lock in the sequential specification; ``max_token`` is the largest token ever granted."""

    holder: Hashable | None = None
    token: int = 0
    expiry: int = 0
    max_token: int = 0
    clock: int = 0

    def live(self, at: int) -> bool:
        return self.holder is not None and self.expiry > at


def step(state: LockState, op: Operation) -> LockState | None:
    """The state after ``op`` with its observed result, or None if the specification forbids that result."""
    result, at = op.result, op.result.at
    if at < state.clock:
        return None
    live = state.live(at)
    free = LockState(None, 0, 0, state.max_token, at)
    current = LockState(state.holder, state.token, state.expiry, state.max_token, at) if live else free
    holds = live and state.holder == op.process and op.token == state.token
    if op.kind == ACQUIRE:
        if not result.ok:
            return current if live and (result.holder, result.expiry) == (state.holder, state.expiry) else None
        if live or result.token <= state.max_token or not _expiry_matches(op, at):
            return None
        return LockState(op.process, result.token, result.expiry, result.token, at)
    if op.kind == RENEW:
        if not result.ok:
            return None if holds else current
        if not holds or result.token != state.token or not _expiry_matches(op, at):
            return None
        return LockState(state.holder, state.token, result.expiry, state.max_token, at)
    if op.kind == RELEASE:
        if not result.ok:
            return None if holds else current
        return free if holds else None
    if op.kind == READ:
        if result.holder is None:
            return None if live else current
        matches = live and (result.holder, result.token, result.expiry) == (state.holder, state.token, state.expiry)
        return current if matches else None
    raise ValueError(f"unknown operation kind {op.kind!r}")


def _expiry_matches(op: Operation, at: int) -> bool:
    return op.ttl is None or op.result.expiry == at + op.ttl


@dataclass(frozen=True, slots=True)
class CheckResult:
    """``ok`` True/False, or None if the search ran out of steps; ``name`` is the first lock that failed."""

    ok: bool | None
    name: Hashable | None = None
    operations: tuple[Operation, ...] = ()

    def __bool__(self) -> bool:
        return self.ok is True


def check_lock_history(history: Iterable[Operation], max_steps: int = MAX_SEARCH_STEPS) -> CheckResult:
    """Whether ``history`` is linearizable with respect to the lock specification (each lock on its own)."""
    by_name: dict[Hashable, list[Operation]] = defaultdict(list)
    for op in history:
        if op.kind not in KINDS:
            raise ValueError(f"unknown operation kind {op.kind!r}")
        by_name[op.name].append(op)
    undecided = None
    for name, ops in by_name.items():
        ok = is_linearizable(ops, LockState(), step, max_steps)
        if ok is False:
            return CheckResult(False, name, tuple(ops))
        if ok is None and undecided is None:
            undecided = CheckResult(None, name, tuple(ops))
    return undecided or CheckResult(True)


class _Entry:
    """A call or return in the doubly linked list the search lifts entries out of."""

    __slots__ = ("index", "is_call", "match", "prev", "next")

    def __init__(self, index: int, is_call: bool):
        self.index, self.is_call = index, is_call
        self.match: _Entry | None = None
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


def _entry_list(ops: Sequence[Operation]) -> _Entry:
    """The calls and returns in time order (a call before a return at the same instant: they overlap)."""
    events = []
    for index, op in enumerate(ops):
        complete = float("inf") if op.complete is None else op.complete
        if complete < op.invoke:
            raise ValueError(f"operation {index} completes before it is invoked")
        call, ret = _Entry(index, True), _Entry(index, False)
        call.match = ret
        events += [(op.invoke, 0, index, call), (complete, 1, index, ret)]
    events.sort(key=lambda event: event[:3])
    head = _Entry(-1, False)
    previous = head
    for *_, entry in events:
        previous.next, entry.prev = entry, previous
        previous = entry
    return head


def _lift(call: _Entry) -> None:
    for entry in (call, call.match):
        entry.prev.next = entry.next
        if entry.next is not None:
            entry.next.prev = entry.prev


def _unlift(call: _Entry) -> None:
    for entry in (call.match, call):
        entry.prev.next = entry
        if entry.next is not None:
            entry.next.prev = entry


def is_linearizable(ops: Sequence[Operation], initial, step_fn: Callable, max_steps: int = MAX_SEARCH_STEPS
                    ) -> bool | None:
    """Wing–Gong search with memoisation over any sequential model: ``step_fn(state, op)`` returns the next
    (hashable) state or None if the op's result is impossible there. None: undecided within ``max_steps``."""
    head = _entry_list(ops)
    seen: set[tuple[int, object]] = set()
    linearized = 0
    state = initial
    stack: list[tuple[_Entry, object]] = []
    entry = head.next
    for _ in range(max_steps):
        if head.next is None:
            return True
        if entry.is_call:
            following = step_fn(state, ops[entry.index])
            if following is not None:
                key = (linearized | (1 << entry.index), following)
                if key not in seen:
                    seen.add(key)
                    stack.append((entry, state))
                    state, linearized = following, key[0]
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            # A return whose call is still in the list: nothing linearized so far can precede it. Backtrack.
            if not stack:
                return False
            entry, state = stack.pop()
            linearized &= ~(1 << entry.index)
            _unlift(entry)
            entry = entry.next
    return None


@dataclass(frozen=True, slots=True)
class LeaseInterval:
    name: Hashable
    holder: Hashable
    token: int
    start: int
    end: int


def leases_of(history: Iterable[Operation]) -> list[LeaseInterval]:
    """Each granted lease from its acquire to its release or last expiry (block time)."""
    granted: dict[tuple[Hashable, int], LeaseInterval] = {}
    updates = []
    for op in history:
        if op.result.ok and op.kind == ACQUIRE:
            granted[(op.name, op.result.token)] = LeaseInterval(op.name, op.process, op.result.token, op.result.at,
                                                                op.result.expiry)
        elif op.result.ok and op.kind in (RENEW, RELEASE):
            updates.append(op)
    for op in sorted(updates, key=lambda o: o.result.at):
        lease = granted.get((op.name, op.token))
        if lease is None:
            continue
        end = op.result.expiry if op.kind == RENEW else min(lease.end, op.result.at)
        granted[(op.name, op.token)] = LeaseInterval(lease.name, lease.holder, lease.token, lease.start, end)
    return list(granted.values())


def lease_overlaps(history: Iterable[Operation]) -> list[tuple[LeaseInterval, LeaseInterval]]:
    """Pairs of leases of one lock whose block-time intervals [start, end) overlap; empty when none do."""
    by_name: dict[Hashable, list[LeaseInterval]] = defaultdict(list)
    for lease in leases_of(history):
        by_name[lease.name].append(lease)
    overlaps = []
    for leases in by_name.values():
        leases.sort(key=lambda lease: (lease.start, lease.token))
        latest: LeaseInterval | None = None  # the lease reaching furthest so far
        for lease in leases:
            if latest is not None and lease.start < latest.end and lease.end > lease.start:
                overlaps.append((latest, lease))
            if latest is None or lease.end > latest.end:
                latest = lease
    return overlaps


__all__ = ["ACQUIRE", "READ", "RELEASE", "RENEW", "CheckResult", "LeaseInterval", "LockResult", "LockState",
           "Operation", "check_lock_history", "is_linearizable", "lease_overlaps", "leases_of", "step"]
