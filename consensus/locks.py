"""Atomic locks: the lock part of the chain's replicated state, and its pure rules.

A lock is a name (1..64 bytes) with at most one live lease: a holder (the
sender's account key), a fencing token and an expiry in block time
(milliseconds, the header time of the block that decided it, never a wall
clock of the node applying it). A lease is live while ``expiry > time``.
Tokens come from one counter for the whole chain, so a lock's tokens only
ever increase, across releases and expiries, while the state keeps no entry
for a free lock.

Every lock transaction that applies is decided: its :class:`LockOutcome`
(granted, released, or refused with the reason and the live lease) is kept
under the sender and request ID, so a retry of the same request, however it
is signed, has no further effect and gets the same answer. Outcomes are kept
for ``REQUEST_RETENTION_MS`` of block time.

State entries: ``lock ‖ name`` → ``token:u64 ‖ expiry:u64 ‖ holder:32``;
``lreq ‖ sender:32 ‖ request_id:16`` → an encoded :class:`LockOutcome`;
``meta/lock_token`` → the last token granted (u64).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Callable

from .ledger_tx import REQUEST_ID_SIZE, LockAcquire, LockBody, LockRelease, LockRenew

LOCK_PREFIX = b"lock"
REQUEST_PREFIX = b"lreq"
LOCK_TOKEN_KEY = b"meta/lock_token"
REQUEST_RETENTION_MS = 10 * 60 * 1000
_HOLDER_SIZE = 32
_NO_HOLDER = bytes(_HOLDER_SIZE)


class LockDecodeError(ValueError):
    pass


class OutcomeCode(enum.IntEnum):
    GRANTED = 0  # acquire or renew: the sender's token and expiry
    RELEASED = 1
    HELD = 2  # acquire refused: someone's lease is live (holder, token, expiry)
    NOT_HOLDER = 3  # renew/release refused: the sender holds no live lease (the live one, if any)
    WRONG_TOKEN = 4  # renew/release refused: the sender's live lease has another token


_REASONS = {
    OutcomeCode.HELD: "held by another lease",
    OutcomeCode.NOT_HOLDER: "the sender holds no live lease on this lock",
    OutcomeCode.WRONG_TOKEN: "the sender's lease has another fencing token",
}


@dataclass(frozen=True, slots=True)
class Lease:
    holder: bytes
    token: int
    expiry: int

    def encode(self) -> bytes:
        return struct.pack(">QQ", self.token, self.expiry) + self.holder

    @classmethod
    def decode(cls, data: bytes) -> "Lease":
        if len(data) != 16 + _HOLDER_SIZE:
            raise LockDecodeError("a lease entry is 48 bytes")
        token, expiry = struct.unpack(">QQ", data[:16])
        return cls(data[16:], token, expiry)


@dataclass(frozen=True, slots=True)
class LockOutcome:
    """What a lock request decided, at block ``height`` with block time ``time``.

    ``token``/``expiry``/``holder`` describe the sender's lease when granted,
    the released token when released, and the live lease (holder b"" if none)
    when refused. Encoded ``code:u8 ‖ height:u64 ‖ time:u64 ‖ token:u64 ‖
    expiry:u64 ‖ holder:32`` (zeros: no holder)."""

    code: OutcomeCode
    height: int
    time: int
    token: int = 0
    expiry: int = 0
    holder: bytes = b""

    SIZE = 1 + 4 * 8 + _HOLDER_SIZE

    @property
    def ok(self) -> bool:
        return self.code in (OutcomeCode.GRANTED, OutcomeCode.RELEASED)

    @property
    def reason(self) -> str:
        """Why it was refused ('' when it was not)."""
        return _REASONS.get(self.code, "")

    def encode(self) -> bytes:
        return (struct.pack(">BQQQQ", self.code, self.height, self.time, self.token, self.expiry)
                + (self.holder or _NO_HOLDER))

    @classmethod
    def decode(cls, data: bytes) -> "LockOutcome":
        if len(data) != cls.SIZE:
            raise LockDecodeError(f"an outcome is {cls.SIZE} bytes")
        code, height, time, token, expiry = struct.unpack(">BQQQQ", data[:33])
        try:
            code = OutcomeCode(code)
        except ValueError:
            raise LockDecodeError(f"unknown outcome code {code}") from None
        holder = data[33:]
        return cls(code, height, time, token, expiry, b"" if holder == _NO_HOLDER else holder)


def lock_entry_key(name: bytes) -> bytes:
    return LOCK_PREFIX + name


def request_entry_key(sender: bytes, request_id: bytes) -> bytes:
    return REQUEST_PREFIX + sender + request_id


def _lease_entry(name: bytes, lease: Lease) -> tuple[bytes, bytes]:
    return lock_entry_key(name), lease.encode()


def _request_entry(key: bytes, outcome: LockOutcome) -> tuple[bytes, bytes]:
    return REQUEST_PREFIX + key, outcome.encode()


@dataclass(slots=True)
class LockTable:
    """Live leases by name, decided requests by sender ‖ request ID, and the last token granted."""

    leases: dict[bytes, Lease] = field(default_factory=dict)
    requests: dict[bytes, LockOutcome] = field(default_factory=dict)
    last_token: int = 0

    def copy(self) -> "LockTable":
        return LockTable(dict(self.leases), dict(self.requests), self.last_token)

    def live_lease(self, name: bytes, time: int) -> Lease | None:
        lease = self.leases.get(name)
        return lease if lease is not None and lease.expiry > time else None

    def outcome_of(self, sender: bytes, request_id: bytes) -> LockOutcome | None:
        return self.requests.get(sender + request_id)

    def apply(self, sender: bytes, body: LockBody, height: int, time: int) -> LockOutcome:
        """Decide ``body`` from ``sender`` in block ``height`` at block time ``time``; a known request changes
        nothing and gets its first outcome."""
        key = sender + body.request_id
        decided = self.requests.get(key)
        if decided is not None:
            return decided
        outcome = self._decide(sender, body, height, time)
        self.requests[key] = outcome
        return outcome

    def _decide(self, sender: bytes, body: LockBody, height: int, time: int) -> LockOutcome:
        lease = self.live_lease(body.name, time)
        if isinstance(body, LockAcquire):
            if lease is not None:
                return LockOutcome(OutcomeCode.HELD, height, time, lease.token, lease.expiry, lease.holder)
            self.last_token += 1
            granted = Lease(sender, self.last_token, time + body.ttl_ms)
            self.leases[body.name] = granted
            return LockOutcome(OutcomeCode.GRANTED, height, time, granted.token, granted.expiry, sender)
        if lease is None or lease.holder != sender:
            return (LockOutcome(OutcomeCode.NOT_HOLDER, height, time) if lease is None else
                    LockOutcome(OutcomeCode.NOT_HOLDER, height, time, lease.token, lease.expiry, lease.holder))
        if lease.token != body.token:
            return LockOutcome(OutcomeCode.WRONG_TOKEN, height, time, lease.token, lease.expiry, lease.holder)
        if isinstance(body, LockRenew):
            renewed = Lease(sender, lease.token, time + body.ttl_ms)
            self.leases[body.name] = renewed
            return LockOutcome(OutcomeCode.GRANTED, height, time, renewed.token, renewed.expiry, sender)
        assert isinstance(body, LockRelease)
        del self.leases[body.name]
        return LockOutcome(OutcomeCode.RELEASED, height, time, lease.token, lease.expiry, sender)

    def expire(self, time: int) -> None:
        """At the end of a block: drop leases no longer live and outcomes past their retention."""
        self.leases = {name: lease for name, lease in self.leases.items() if lease.expiry > time}
        self.requests = {key: outcome for key, outcome in self.requests.items()
                         if outcome.time + REQUEST_RETENTION_MS > time}

    def entries(self) -> dict[bytes, bytes]:
        entries = self.small_entries()
        for source, entry in self.sections():
            entries.update(entry(key, value) for key, value in source.items())
        return entries

    def sections(self) -> list[tuple[dict, Callable[[bytes, object], tuple[bytes, bytes]]]]:
        """The table's maps (which may grow large), each with what makes one item's state entry."""
        return [(self.leases, _lease_entry), (self.requests, _request_entry)]

    def small_entries(self) -> dict[bytes, bytes]:
        """The entries that are not items of :meth:`sections`."""
        return {LOCK_TOKEN_KEY: struct.pack(">Q", self.last_token)}

    def load_entry(self, key: bytes, value: bytes) -> bool:
        """Take one state entry if it is a lock entry (True); LockDecodeError if it is one but malformed."""
        if key == LOCK_TOKEN_KEY:
            if len(value) != 8:
                raise LockDecodeError("the last lock token is a u64")
            self.last_token = struct.unpack(">Q", value)[0]
        elif key.startswith(LOCK_PREFIX):
            self.leases[key[len(LOCK_PREFIX):]] = Lease.decode(value)
        elif key.startswith(REQUEST_PREFIX):
            if len(key) != len(REQUEST_PREFIX) + _HOLDER_SIZE + REQUEST_ID_SIZE:
                raise LockDecodeError("a request entry key has the wrong length")
            self.requests[key[len(REQUEST_PREFIX):]] = LockOutcome.decode(value)
        else:
            return False
        return True


__all__ = ["Lease", "LockDecodeError", "LockOutcome", "LockTable", "OutcomeCode", "REQUEST_RETENTION_MS",
           "lock_entry_key", "request_entry_key"]
