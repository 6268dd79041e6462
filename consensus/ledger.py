"""The ledger: a deterministic application behind the consensus core.

:class:`LedgerState` is the replicated state (accounts, stakes, escrows,
jail, the validator sets, and the Merkle root that commits to all of it) and
the pure rules that change it: a block applied to a state
gives the same next state on every node. :class:`Ledger` is the consensus
application (``propose``, ``is_valid``, ``finalize``) around it: a mempool of
signed transactions, the committed state and the state root of every height.

A block (the value consensus orders) is::

    version:u8 ‖ height:u64 ‖ time:u64 ‖ parent_root:32 ‖ len:u32 ‖ last_certificate
    ‖ count:u32 ‖ count × (len:u32 ‖ transaction)
    ‖ count:u16 ‖ count × (len:u32 ‖ evidence)

``time`` is the block time (milliseconds since the Unix epoch) the proposer
read from its clock, never earlier than the previous block's; lock leases
(consensus/locks.py) expire by it. A validator with a clock refuses a block
more than ``MAX_BLOCK_TIME_AHEAD_MS`` ahead of its own: a proposer cannot run
the chain's time far forward (and so expire every lease).

``parent_root`` is the state root after the previous block, so the commit
certificate of block h + 1 certifies the state after h; ``last_certificate``
is the commit certificate of block h − 1 (empty in block 1), which makes the
set of validators that signed it part of the replicated state. A block is
valid only if every transaction in it applies: the proposer leaves out what
would fail, so a refused transaction never reaches a block and changes
nothing. (A lock request the lock's state refuses is not a failing
transaction: it applies, and its refusal is its recorded outcome.)

Evidence is the consensus layer's proof of double signing (an encoded
:class:`~hypermesh.consensus.wire.Evidence`), gathered by the node from
``EquivocationDetected`` events and :meth:`Ledger.add_evidence`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Container, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Callable

from hypermesh.transport.identity import PeerId

from .genesis import Genesis, peer_id_of
from .ledger_tx import (
    LOCK_BODIES,
    BadDeadline,
    BelowMinimumStake,
    DuplicateRequest,
    Bond,
    EscrowExpired,
    EscrowNotExpired,
    EscrowOpen,
    EscrowRefund,
    EscrowRelease,
    InsufficientBond,
    InsufficientFunds,
    InvalidSlashingEvidence,
    LedgerError,
    MalformedTransaction,
    NotAProvider,
    NotEscrowClient,
    NotJailed,
    Role,
    SealedNote,
    StillJailed,
    Transaction,
    Transfer,
    Unbond,
    Unjail,
    UnknownEscrow,
    WrongChain,
    WrongNonce,
    check_body_ranges,
    check_possession,
    decode_transaction,
    escrow_id_of,
    verify_signature,
)
from .locks import LockOutcome, LockTable, lock_entry_key
from .merkle import AbsenceProof, MerkleProof, MerkleTree, ProofError, ordered_root, verify_proof
from .store import ConsensusStore
from .signing import ConsensusKey, Scheme
from .validators import MAX_POWER, Validator, ValidatorSet
from .wire import (
    MAX_VALUE_SIZE,
    Commit,
    CommitCertificate,
    Evidence,
    RejectedMessage,
    WireError,
    block_id_of,
    decode_certificate,
    decode_message,
    encode_certificate,
    encode_message,
    verify_certificate,
    verify_commit,
    verify_evidence,
)

BLOCK_VERSION = 3
# Block time: how far ahead of a validator's own clock it accepts; the largest value (far from u64 overflow).
MAX_BLOCK_TIME_AHEAD_MS = 10_000
MAX_BLOCK_TIME = 1 << 62
MAX_BLOCK_EVIDENCE = 64
# Bounds what submitted transactions can make a node hold.
MAX_MEMPOOL_TRANSACTIONS = 10_000
MAX_PENDING_PER_SENDER = 64
# What a proposal may spend on transactions and evidence: the consensus value limit less the header and
# the block's certificate (its size varies with the signers' schemes: up to ~0.5 MB with ML-DSA-65 keys).
_BLOCK_HEADER_SIZE = 256
# Room kept for evidence: MAX_BLOCK_EVIDENCE items of Ed25519 votes (4 + their encoding); ML-DSA-65
# evidence (~6.7 KB) takes this room and what transactions leave.
_MAX_EVIDENCE_SIZE = 4 + 2 + 2 * (1 + 8 + 4 + 33 + 32 + 64)
_META_KEYS = (b"meta/burned", b"meta/minted", b"meta/height", b"meta/time", b"meta/last_block", b"meta/validators",
              b"meta/last_validators")


class InvalidBlock(LedgerError):
    pass


class MempoolFull(LedgerError):
    pass


class SenderQueueFull(MempoolFull):
    """The sender holds its share of the mempool (MAX_PENDING_PER_SENDER) already."""


class BlockFull(LedgerError):
    """A transaction that would take the proposal over the consensus value limit (it waits for the next)."""


@dataclass(frozen=True, slots=True)
class Block:
    height: int
    parent_root: bytes
    last_certificate: CommitCertificate | None
    transactions: tuple[Transaction, ...]
    evidence: tuple[Evidence, ...] = ()
    time: int = 0  # block time, ms since the Unix epoch
    # The digest of the set that signs the next height (after this block's
    # epoch change or jailing): what lets a client that follows only certified
    # blocks take a new set from the old one's signatures.
    next_validators: bytes = b"\x00" * 32
    chain_id: str = ""
    # The digest of the set that signs this block.
    validators: bytes = b"\x00" * 32

    @property
    def transactions_root(self) -> bytes:
        return ordered_root([tx.tx_id() for tx in self.transactions])

    def encode(self, transactions_root: bytes | None = None) -> bytes:
        """The canonical encoding (``transactions_root``: this block's, if the caller computed it already)."""
        certificate = encode_certificate(self.last_certificate) if self.last_certificate is not None else b""
        chain_id = self.chain_id.encode()
        parts = [struct.pack(">BB", BLOCK_VERSION, len(chain_id)), chain_id, struct.pack(">QQ", self.height, self.time),
                 self.parent_root, transactions_root or self.transactions_root, self.validators, self.next_validators,
                 struct.pack(">I", len(certificate)), certificate, struct.pack(">I", len(self.transactions))]
        for tx in self.transactions:
            encoded = tx.encode()
            parts += [struct.pack(">I", len(encoded)), encoded]
        parts.append(struct.pack(">H", len(self.evidence)))
        for item in self.evidence:
            encoded = encode_message(item)
            parts += [struct.pack(">I", len(encoded)), encoded]
        return b"".join(parts)


def decode_block(data: bytes, known: Mapping[bytes, Transaction] = MappingProxyType({})) -> Block:
    """Strictly decode a block. ``known``: transactions by ID (a mempool) whose decoding is reused for the
    same bytes, rather than parsed again."""
    if len(data) > MAX_VALUE_SIZE:
        raise InvalidBlock("block too large")
    offset = 0

    def take(size: int) -> bytes:
        nonlocal offset
        if offset + size > len(data):
            raise InvalidBlock("truncated block")
        chunk = data[offset:offset + size]
        offset += size
        return chunk

    version, chain_id_size = struct.unpack(">BB", take(2))
    if version != BLOCK_VERSION:
        raise InvalidBlock(f"unknown block version {version}")
    try:
        chain_id = take(chain_id_size).decode()
    except UnicodeDecodeError:
        raise InvalidBlock("the chain ID is not UTF-8") from None
    height, time = struct.unpack(">QQ", take(16))
    if height == 0:
        raise InvalidBlock("height 0")
    if time > MAX_BLOCK_TIME:
        raise InvalidBlock("block time out of range")
    parent_root, transactions_root, validators, next_validators = take(32), take(32), take(32), take(32)
    certificate_bytes = take(struct.unpack(">I", take(4))[0])
    try:
        certificate = decode_certificate(certificate_bytes) if certificate_bytes else None
    except WireError as exc:
        raise InvalidBlock(f"last certificate: {exc}") from None
    count = struct.unpack(">I", take(4))[0]
    transactions = []
    for _ in range(min(count, len(data))):  # each transaction takes at least 4 bytes: bounded by the size
        encoded = take(struct.unpack(">I", take(4))[0])
        held = known.get(hashlib.sha256(encoded).digest()) if known else None
        if held is not None and held.encode() == encoded:
            transactions.append(held)
            continue
        try:
            transactions.append(decode_transaction(encoded))
        except MalformedTransaction as exc:
            raise InvalidBlock(f"transaction: {exc}") from None
    if len(transactions) != count:
        raise InvalidBlock("transaction count does not match")
    evidence = []
    for _ in range(struct.unpack(">H", take(2))[0]):
        try:
            item = decode_message(take(struct.unpack(">I", take(4))[0]))
        except WireError as exc:
            raise InvalidBlock(f"evidence: {exc}") from None
        if not isinstance(item, Evidence):
            raise InvalidBlock("an evidence entry is not evidence")
        evidence.append(item)
    if offset != len(data):
        raise InvalidBlock("trailing bytes after the block")
    block = Block(height, parent_root, certificate, tuple(transactions), tuple(evidence), time, next_validators,
                  chain_id, validators)
    if block.transactions_root != transactions_root:
        raise InvalidBlock("the transactions root does not match the transactions")
    if block.encode(transactions_root) != data:
        raise InvalidBlock("not the canonical encoding")
    return block


def _u64(value: int) -> bytes:
    return struct.pack(">Q", value)


def encode_validator_set(validators: ValidatorSet) -> bytes:
    """``count:u16 ‖ (key ‖ power:u64) × count``, then per validator that declared a consensus key, in
    index order, ``index:u16 ‖ scheme:u8 ‖ public key`` (nothing for an Ed25519-only set, as before)."""
    members = validators.validators
    return b"".join((struct.pack(">H", len(members)), *(v.public_key + _u64(v.power) for v in members),
                     *(struct.pack(">H", i) + v.consensus_key.encode()
                       for i, v in enumerate(members) if v.consensus_key is not None)))


def decode_validator_set(data: bytes) -> ValidatorSet:
    """ValueError (ValidatorSetError, ConsensusKeyError) unless ``data`` is one canonical encoding."""
    if len(data) < 2 or len(data) < 2 + 40 * struct.unpack(">H", data[:2])[0]:
        raise ValueError("a validator set entry has the wrong length")
    count = struct.unpack(">H", data[:2])[0]
    end = 2 + 40 * count
    members = [(data[i:i + 32], struct.unpack(">Q", data[i + 32:i + 40])[0]) for i in range(2, end, 40)]
    keys: dict[int, ConsensusKey] = {}
    offset = end
    while offset < len(data):
        if offset + 3 > len(data):
            raise ValueError("a truncated consensus key in a validator set entry")
        index, code = struct.unpack(">HB", data[offset:offset + 3])
        if index >= count or (keys and index <= max(keys)):
            raise ValueError("consensus keys of a validator set entry are not in validator order")
        size = Scheme(code).public_key_size
        keys[index] = ConsensusKey.decode(data[offset + 2:offset + 3 + size])
        offset += 3 + size
    return ValidatorSet([Validator(key, power, keys.get(i)) for i, (key, power) in enumerate(members)])


@dataclass(frozen=True, slots=True)
class Escrow:
    client: bytes
    provider: bytes
    amount: int
    deadline: int
    task: bytes

    def encode(self) -> bytes:
        return self.client + self.provider + _u64(self.amount) + _u64(self.deadline) + self.task

    @classmethod
    def decode(cls, data: bytes) -> "Escrow":
        if len(data) != 32 + 32 + 8 + 8 + 32:
            raise ValueError("an escrow entry has the wrong length")
        amount, deadline = struct.unpack(">QQ", data[64:80])
        return cls(data[:32], data[32:64], amount, deadline, data[80:])


@dataclass(slots=True)
class LedgerState:
    """Everything replicated; copied (shallowly: values are immutable) to try a block."""

    genesis: Genesis
    height: int = 0
    # account key -> (balance, next nonce)
    accounts: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    # (owner, role) -> bonded amount
    bonds: dict[tuple[bytes, Role], int] = field(default_factory=dict)
    # (release height, owner, role) -> amount leaving the bond, still slashable until released
    unbonding: dict[tuple[int, bytes, Role], int] = field(default_factory=dict)
    escrows: dict[bytes, "Escrow"] = field(default_factory=dict)
    # validator -> height from which it may unjail; tombstoned ones (double signers) never may
    jailed: dict[bytes, int] = field(default_factory=dict)
    tombstoned: frozenset[bytes] = frozenset()
    # validator -> consecutive commit certificates it is missing from
    missed: dict[bytes, int] = field(default_factory=dict)
    # validator -> the consensus key it declared (at genesis or in a bond); absent: it signs with Ed25519
    consensus_keys: dict[bytes, ConsensusKey] = field(default_factory=dict)
    # (first height, set) of recent validator sets, to check evidence of past heights
    set_history: tuple[tuple[int, ValidatorSet], ...] = ()
    burned: int = 0
    minted: int = 0
    # Block time of the last block (while a block applies: of that block).
    time: int = 0
    locks: LockTable = field(default_factory=LockTable)
    last_block_id: bytes = b""
    # The set that signs the next block, and the one that signed the last.
    validators: ValidatorSet | None = None
    last_validators: ValidatorSet | None = None
    # The tree of the entries as last built, and the maps it was built from (a copy shares it: never changed).
    tree_cache: "_TreeCache | None" = field(default=None, repr=False, compare=False)

    @classmethod
    def from_genesis(cls, genesis: Genesis) -> "LedgerState":
        genesis.check()
        state = cls(genesis, accounts={key: (balance, 0) for key, balance in genesis.balances.items()},
                    bonds={(b.owner, b.role): b.amount for b in genesis.bonds},
                    consensus_keys={b.owner: b.consensus_key for b in genesis.bonds if b.consensus_key is not None})
        state.validators = state.last_validators = state.compute_validator_set()
        state.set_history = ((1, state.validators),)
        return state

    def copy(self) -> "LedgerState":
        return replace(self, accounts=dict(self.accounts), bonds=dict(self.bonds), unbonding=dict(self.unbonding),
                       jailed=dict(self.jailed), missed=dict(self.missed), escrows=dict(self.escrows),
                       consensus_keys=dict(self.consensus_keys),
                       locks=self.locks.copy())

    # ----------------------------------------------------------- queries

    @property
    def params(self):
        return self.genesis.params

    def balance(self, account: bytes) -> int:
        return self.accounts.get(account, (0, 0))[0]

    def nonce(self, account: bytes) -> int:
        return self.accounts.get(account, (0, 0))[1]

    def bonded(self, owner: bytes, role: Role) -> int:
        return self.bonds.get((owner, role), 0)

    def total_units(self) -> int:
        """Every unit that exists, wherever it is: must equal genesis supply + minted."""
        return (sum(b for b, _ in self.accounts.values()) + sum(self.bonds.values())
                + sum(self.unbonding.values()) + sum(e.amount for e in self.escrows.values()) + self.burned)

    def unbonding_of(self, owner: bytes) -> int:
        return sum(amount for (_, who, _), amount in self.unbonding.items() if who == owner)

    def compute_validator_set(self) -> ValidatorSet:
        """Unjailed validators bonded at or above the minimum, by stake (ties by key), at most max_validators.

        Voting power is the bonded stake, capped at the core's MAX_POWER (2^48):
        a larger stake would otherwise make a set the core refuses, and halt the chain."""
        candidates = sorted(self._candidates(), key=lambda c: (-c[0], c[1]))
        return ValidatorSet([Validator(owner, min(amount, MAX_POWER), self.consensus_keys.get(owner))
                             for amount, owner in candidates[:self.params.max_validators]])

    def _candidates(self) -> list[tuple[int, bytes]]:
        minimum = self.params.min_validator_stake
        return [(amount, owner) for (owner, role), amount in self.bonds.items()
                if role is Role.VALIDATOR and amount >= minimum and owner not in self.jailed]

    def entries(self) -> dict[bytes, bytes]:
        """The state as sorted key/value entries: what the state root commits to."""
        entries = self._small_entries()
        for source, entry in self._sections():
            entries.update(entry(key, value) for key, value in source.items())
        return entries

    def _sections(self) -> list[tuple[dict, Callable]]:
        """The maps that grow with use (accounts, escrows, locks), each with what makes one item's entry."""
        return [(self.accounts, _account_entry), (self.escrows, _escrow_entry), *self.locks.sections()]

    def _small_entries(self) -> dict[bytes, bytes]:
        """Every entry that is not an item of :meth:`_sections` (few: made anew each time)."""
        entries = {}
        for (owner, role), amount in self.bonds.items():
            entries[b"bond" + owner + bytes([role])] = _u64(amount)
        for (release, owner, role), amount in self.unbonding.items():
            entries[b"unbd" + _u64(release) + owner + bytes([role])] = _u64(amount)
        for owner, until in self.jailed.items():
            entries[b"jail" + owner] = _u64(until) + bytes([owner in self.tombstoned])
        for owner, count in self.missed.items():
            entries[b"miss" + owner] = _u64(count)
        for owner, key in self.consensus_keys.items():
            entries[b"ckey" + owner] = key.encode()
        entries[b"meta/burned"] = _u64(self.burned)
        entries[b"meta/minted"] = _u64(self.minted)
        entries[b"meta/height"] = _u64(self.height)
        entries[b"meta/time"] = _u64(self.time)
        entries.update(self.locks.small_entries())
        entries[b"meta/last_block"] = self.last_block_id
        entries[b"meta/validators"] = encode_validator_set(self.validators)
        entries[b"meta/last_validators"] = encode_validator_set(self.last_validators)
        for first, validators in self.set_history:
            entries[b"hist" + _u64(first)] = encode_validator_set(validators)
        return entries

    @classmethod
    def from_entries(cls, genesis: Genesis, entries: dict[bytes, bytes]) -> "LedgerState":
        """The state whose :meth:`entries` these are (what a snapshot restores); ValueError if malformed."""
        state = cls(genesis)
        tombstoned = set()
        for entry_key, value in entries.items():
            prefix, rest = entry_key[:4], entry_key[4:]
            if prefix == b"acct" and len(rest) == 32:
                state.accounts[rest] = struct.unpack(">QQ", value)
            elif prefix == b"bond" and len(rest) == 33:
                state.bonds[(rest[:32], Role(rest[32]))] = struct.unpack(">Q", value)[0]
            elif prefix == b"unbd" and len(rest) == 41:
                release = struct.unpack(">Q", rest[:8])[0]
                state.unbonding[(release, rest[8:40], Role(rest[40]))] = struct.unpack(">Q", value)[0]
            elif prefix == b"escr" and len(rest) == 32:
                state.escrows[rest] = Escrow.decode(value)
            elif prefix == b"jail" and len(rest) == 32 and len(value) == 9:
                state.jailed[rest] = struct.unpack(">Q", value[:8])[0]
                if value[8]:
                    tombstoned.add(rest)
            elif prefix == b"miss" and len(rest) == 32:
                state.missed[rest] = struct.unpack(">Q", value)[0]
            elif prefix == b"ckey" and len(rest) == 32:
                state.consensus_keys[rest] = ConsensusKey.decode(value)
            elif prefix == b"hist" and len(rest) == 8:
                state.set_history += ((struct.unpack(">Q", rest)[0], decode_validator_set(value)),)
            elif state.locks.load_entry(entry_key, value):
                pass
            elif entry_key not in _META_KEYS:
                raise ValueError(f"unknown state entry {entry_key[:8]!r}")
        try:
            state.burned, state.minted, state.height, state.time = (struct.unpack(">Q", entries[k])[0]
                                                                    for k in _META_KEYS[:4])
            state.last_block_id = entries[b"meta/last_block"]
            state.validators = decode_validator_set(entries[b"meta/validators"])
            state.last_validators = decode_validator_set(entries[b"meta/last_validators"])
        except KeyError as exc:
            raise ValueError(f"missing state entry {exc}") from None
        state.tombstoned = frozenset(tombstoned)
        state.set_history = tuple(sorted(state.set_history, key=lambda entry: entry[0]))
        return state

    def tree(self) -> MerkleTree:
        """The Merkle tree of :meth:`entries`: the last one built (by this state or the one it was copied from),
        updated with the entries that changed since; only those are hashed again."""
        sections, small = self._sections(), self._small_entries()
        cache = self.tree_cache
        if cache is None:
            tree = MerkleTree(self.entries())
        else:
            changes: dict[bytes, bytes | None] = {}
            for (source, entry), before in zip(sections, cache.sources):
                for key in before.keys() - source.keys():
                    changes[entry(key, before[key])[0]] = None
                changes.update(entry(key, value) for key, value in source.items() - before.items())
            changes.update(dict.fromkeys(cache.small.keys() - small.keys()))
            changes.update(small.items() - cache.small.items())
            tree = cache.tree.updated(changes)
        if cache is None or tree is not cache.tree:
            self.tree_cache = _TreeCache(tree, tuple(dict(source) for source, _ in sections), small)
        return tree

    def root(self) -> bytes:
        return self.tree().root

    # ----------------------------------------------------------- transactions

    def apply_transaction(self, tx: Transaction, signature_checked: bool = False) -> None:
        """Apply one transaction, or raise the reason it is refused and change nothing.

        ``signature_checked``: the caller verified this very transaction's signature already."""
        if tx.chain_id != self.genesis.chain_id:
            raise WrongChain(f"transaction for chain {tx.chain_id!r}, this is {self.genesis.chain_id!r}")
        check_body_ranges(tx.body)
        if not signature_checked:
            verify_signature(tx)
        balance, nonce = self.accounts.get(tx.sender, (0, 0))
        if tx.nonce != nonce:
            raise WrongNonce(f"nonce {tx.nonce}, the account's next is {nonce}")
        handler = _HANDLERS.get(type(tx.body))
        if handler is None:
            raise MalformedTransaction(f"{type(tx.body).__name__} is not supported")
        handler(self, tx, balance)
        balance, _ = self.accounts.get(tx.sender, (0, 0))
        self.accounts[tx.sender] = (balance, nonce + 1)

    def _debit(self, account: bytes, balance: int, amount: int) -> None:
        if amount > balance:
            raise InsufficientFunds(f"needs {amount}, the balance is {balance}")
        self.accounts[account] = (balance - amount, self.nonce(account))

    def _credit(self, account: bytes, amount: int) -> None:
        balance, nonce = self.accounts.get(account, (0, 0))
        self.accounts[account] = (balance + amount, nonce)

    def _transfer(self, tx: Transaction, balance: int) -> None:
        body: Transfer = tx.body
        self._debit(tx.sender, balance, body.amount)
        self._credit(body.to, body.amount)

    def _bond(self, tx: Transaction, balance: int) -> None:
        body: Bond = tx.body
        bonded = self.bonded(tx.sender, body.role) + body.amount
        minimum = self.params.min_stake(body.role)
        if bonded < minimum:
            raise BelowMinimumStake(f"a {body.role.name.lower()} bond of {bonded} is below the minimum {minimum}")
        check_possession(tx)
        self._debit(tx.sender, balance, body.amount)
        self.bonds[(tx.sender, body.role)] = bonded
        if body.consensus_key is not None:
            # Signs with it from the next validator set computed (an epoch boundary) on.
            self.consensus_keys[tx.sender] = body.consensus_key

    def _unbond(self, tx: Transaction, balance: int) -> None:
        body: Unbond = tx.body
        bonded = self.bonded(tx.sender, body.role)
        if body.amount > bonded:
            raise InsufficientBond(f"unbonding {body.amount}, bonded {bonded}")
        remaining = bonded - body.amount
        minimum = self.params.min_stake(body.role)
        if 0 < remaining < minimum:
            raise BelowMinimumStake(f"{remaining} would stay bonded, below the minimum {minimum}; unbond all or less")
        self._set_bond(tx.sender, body.role, remaining)
        release = (self.height + 1 + self.params.unbonding_period, tx.sender, body.role)
        self.unbonding[release] = self.unbonding.get(release, 0) + body.amount

    def _unjail(self, tx: Transaction, balance: int) -> None:
        until = self.jailed.get(tx.sender)
        if until is None:
            raise NotJailed("the sender is not jailed")
        if tx.sender in self.tombstoned:
            raise StillJailed("a validator slashed for double signing stays jailed")
        if self.height + 1 < until:
            raise StillJailed(f"jailed until height {until}")
        del self.jailed[tx.sender]  # back in the set at the next epoch boundary, if still bonded

    def _sealed_note(self, tx: Transaction, balance: int) -> None:
        """Ordered and kept in the block, unread: only the nonce moves (the decoder checked its form)."""

    def _escrow_open(self, tx: Transaction, balance: int) -> None:
        body: EscrowOpen = tx.body
        if self.bonded(body.provider, Role.PROVIDER) < self.params.min_provider_stake or body.provider in self.jailed:
            raise NotAProvider("the provider has no provider bond at the minimum")
        if body.deadline <= self.height + 1:
            raise BadDeadline(f"the deadline {body.deadline} has passed (this is block {self.height + 1})")
        self._debit(tx.sender, balance, body.amount)
        self.escrows[escrow_id_of(tx.sender, tx.nonce)] = Escrow(
            tx.sender, body.provider, body.amount, body.deadline, body.task)

    def _client_escrow(self, tx: Transaction, escrow_id: bytes) -> Escrow:
        escrow = self.escrows.get(escrow_id)
        if escrow is None:
            raise UnknownEscrow("no open escrow has this ID")
        if escrow.client != tx.sender:
            raise NotEscrowClient("only the client that opened an escrow may release or refund it")
        return escrow

    def _escrow_release(self, tx: Transaction, balance: int) -> None:
        """The client accepts the result (``tx.body.result``, kept in the block): the provider is paid."""
        escrow = self._client_escrow(tx, tx.body.escrow_id)
        if self.height + 1 > escrow.deadline:
            raise EscrowExpired(f"the deadline {escrow.deadline} has passed: refund instead")
        del self.escrows[tx.body.escrow_id]
        self._credit(escrow.provider, escrow.amount)

    def _escrow_refund(self, tx: Transaction, balance: int) -> None:
        escrow = self._client_escrow(tx, tx.body.escrow_id)
        if self.height + 1 <= escrow.deadline:
            raise EscrowNotExpired(f"refundable after height {escrow.deadline}")
        del self.escrows[tx.body.escrow_id]
        self._credit(escrow.client, escrow.amount)

    def _lock(self, tx: Transaction, balance: int) -> None:
        """Decided whatever the lock's state (a refusal is an outcome, kept for the request's retries)."""
        self.locks.apply(tx.sender, tx.body, self.height + 1, self.time)

    def _set_bond(self, owner: bytes, role: Role, amount: int) -> None:
        if amount:
            self.bonds[(owner, role)] = amount
        else:
            self.bonds.pop((owner, role), None)

    # ----------------------------------------------------------- blocks

    def apply_block(self, block: Block, root: bytes | None = None, verified: Container[bytes] = (),
                    block_id: bytes | None = None) -> None:
        """Apply a whole block (on a copy: a refused block leaves a torn state).

        ``root``: this state's root, if the caller knows it (building the tree is the costliest check).
        ``verified``: IDs of transactions whose signatures the caller checked (its mempool's).
        ``block_id``: the block's ID, if the caller holds its encoding."""
        if block.height != self.height + 1:
            raise InvalidBlock(f"block for height {block.height}, the state is at {self.height}")
        if block.chain_id != self.genesis.chain_id:
            raise InvalidBlock(f"a block of chain {block.chain_id!r}")
        if block.validators != self.validators.digest():
            raise InvalidBlock("the block names another validator set for its height")
        if block.parent_root != (root if root is not None else self.root()):
            raise InvalidBlock("the parent state root does not match")
        if block.time < self.time:
            raise InvalidBlock(f"block time {block.time} is before the previous block's, {self.time}")
        self._check_last_certificate(block)
        self.time = block.time
        if len(block.transactions) > self.params.max_block_transactions:
            raise InvalidBlock("too many transactions")
        for tx in block.transactions:
            self.apply_transaction(tx, signature_checked=bool(verified) and tx.tx_id() in verified)
        if len(block.evidence) > MAX_BLOCK_EVIDENCE:
            raise InvalidBlock("too much evidence")
        for item in block.evidence:
            self.apply_evidence(item, block.height)
        self.end_block(block.height, block.last_certificate)
        if block.next_validators != self.validators.digest():
            raise InvalidBlock("the block names another validator set for the next height")
        self.last_block_id = block_id or block_id_of(block.encode())

    def end_block(self, height: int, last_certificate: CommitCertificate | None) -> None:
        """What every block does after its transactions and evidence: missed votes, expiries, releases,
        and the validator set of the next height."""
        self._count_missed(last_certificate, height)
        self.height = height
        self.last_validators = self.validators
        self.locks.expire(self.time)
        self._release_unbonded()
        if self.height % self.params.epoch_length == 0:
            self._change_validators()
        else:
            self._remove_jailed_validators()
        if self.validators.digest() != self.last_validators.digest():
            self._remember_set(self.height + 1, self.validators)

    # ----------------------------------------------------------- slashing

    def apply_evidence(self, evidence: Evidence, height: int) -> None:
        """Double signing: burn a fixed share of the validator's bonded and unbonding stake; jail it for good."""
        vote = evidence.first
        if not height - self.params.max_evidence_age <= vote.height < height:
            raise InvalidSlashingEvidence(f"evidence of height {vote.height} is outside the evidence window")
        if vote.validator in self.tombstoned:
            raise InvalidSlashingEvidence("this validator was slashed for double signing already")
        try:
            verify_evidence(evidence, self.genesis.chain_id, self._set_at(vote.height))
        except RejectedMessage as exc:
            raise InvalidSlashingEvidence(str(exc)) from None
        self._slash(vote.validator, self.params.double_sign_slash_bps)
        self.tombstoned = self.tombstoned | {vote.validator}
        self.jailed[vote.validator] = height

    def _slash(self, owner: bytes, share_bps: int) -> None:
        """Burn ``share_bps``/10,000 (rounded down) of each validator-role stake entry of ``owner``."""
        bonded = self.bonded(owner, Role.VALIDATOR)
        cut = bonded * share_bps // 10_000
        self._set_bond(owner, Role.VALIDATOR, bonded - cut)
        self.burned += cut
        for entry in [e for e in self.unbonding if e[1] == owner and e[2] is Role.VALIDATOR]:
            cut = self.unbonding[entry] * share_bps // 10_000
            self.unbonding[entry] -= cut
            self.burned += cut

    def _count_missed(self, certificate: CommitCertificate | None, height: int) -> None:
        """Downtime: a validator missing from ``downtime_window`` consecutive certificates is jailed (not slashed)."""
        if certificate is None:
            return
        signers = {self.last_validators.validators[index].public_key for index, _ in certificate.signatures}
        for validator in self.last_validators.validators:
            owner = validator.public_key
            if owner in signers:
                self.missed.pop(owner, None)
                continue
            count = self.missed.get(owner, 0) + 1
            if count >= self.params.downtime_window:
                self.missed.pop(owner, None)
                self.jailed.setdefault(owner, height + self.params.jail_period)
            else:
                self.missed[owner] = count

    def _remove_jailed_validators(self) -> None:
        """A jailed validator leaves the set at once (the next height), not at the epoch boundary."""
        remaining = [v for v in self.validators.validators if v.public_key not in self.jailed]
        if remaining and len(remaining) < len(self.validators):
            self.validators = ValidatorSet(remaining)

    def _set_at(self, height: int) -> ValidatorSet:
        for first, validators in reversed(self.set_history):
            if first <= height:
                return validators
        raise InvalidSlashingEvidence(f"no validator set is known for height {height}")

    def _remember_set(self, first: int, validators: ValidatorSet) -> None:
        horizon = first - self.params.max_evidence_age
        history = [entry for entry in self.set_history if entry[0] >= horizon]
        older = [entry for entry in self.set_history if entry[0] < horizon]
        if older:
            history.insert(0, older[-1])  # still in force at the horizon
        self.set_history = tuple(history) + ((first, validators),)

    def _release_unbonded(self) -> None:
        for entry in [e for e in self.unbonding if e[0] <= self.height]:
            self._credit(entry[1], self.unbonding.pop(entry))

    def _change_validators(self) -> None:
        """At an epoch boundary: the next set from bonded stake (the old one stays if none qualifies)."""
        if self._candidates():
            self.validators = self.compute_validator_set()

    def _check_last_certificate(self, block: Block) -> None:
        certificate = block.last_certificate
        if self.height == 0:
            if certificate is not None:
                raise InvalidBlock("block 1 carries no certificate")
            return
        if certificate is None or certificate.height != self.height or certificate.block_id != self.last_block_id:
            raise InvalidBlock("the last certificate is not for the previous block")
        try:
            verify_certificate(certificate, self.genesis.chain_id, self.last_validators)
        except RejectedMessage as exc:
            raise InvalidBlock(f"last certificate: {exc}") from None


# What applies each kind of transaction (made once, not per transaction).
_HANDLERS = {Transfer: LedgerState._transfer, Bond: LedgerState._bond, Unbond: LedgerState._unbond,
             Unjail: LedgerState._unjail, SealedNote: LedgerState._sealed_note, EscrowOpen: LedgerState._escrow_open,
             EscrowRelease: LedgerState._escrow_release, EscrowRefund: LedgerState._escrow_refund,
             **{body: LedgerState._lock for body in LOCK_BODIES}}


@dataclass(frozen=True, slots=True)
class _TreeCache:
    tree: MerkleTree
    sources: tuple[dict, ...]  # copies of LedgerState._sections()'s maps, as the tree has them
    small: dict[bytes, bytes]  # LedgerState._small_entries(), as the tree has them


def account_entry_key(account: bytes) -> bytes:
    return b"acct" + account


def _account_entry(account: bytes, value: tuple[int, int]) -> tuple[bytes, bytes]:
    return account_entry_key(account), _u64(value[0]) + _u64(value[1])


def _escrow_entry(escrow_id: bytes, escrow: Escrow) -> tuple[bytes, bytes]:
    return b"escr" + escrow_id, escrow.encode()


def decode_account_entry(value: bytes) -> tuple[int, int]:
    """(balance, nonce) from an account entry's value."""
    if len(value) != 16:
        raise ProofError("an account entry is 16 bytes")
    return struct.unpack(">QQ", value)


@dataclass(frozen=True, slots=True)
class StateProof:
    """One entry of the state after ``height`` and its Merkle proof against that state root."""

    height: int
    key: bytes
    value: bytes
    proof: MerkleProof


def verify_state_proof(root: bytes, proof: StateProof) -> None:
    """Raise :class:`ProofError` unless the entry is in the state with ``root``; needs nothing else."""
    verify_proof(root, proof.key, proof.value, proof.proof)


def certified_root(commit: Commit, chain_id: str, validators: ValidatorSet) -> tuple[int, bytes]:
    """(height h, state root after h) from a verified commit of block h + 1: what a header-only client trusts.

    ``validators`` is the set that signed block h + 1 (a light client follows
    the set changes the certified blocks announce)."""
    try:
        verify_commit(commit, chain_id, validators)
    except RejectedMessage as exc:
        raise ProofError(f"the commit does not verify: {exc}") from None
    try:
        block = decode_block(commit.value)
    except InvalidBlock as exc:
        raise ProofError(f"the certified block is malformed: {exc}") from None
    return block.height - 1, block.parent_root


def _applicable(items: list, apply, limit: int | None = None) -> list:
    """The items ``apply`` accepts, in order, up to ``limit``."""
    accepted = []
    for item in items:
        if limit is not None and len(accepted) >= limit:
            break
        try:
            apply(item)
        except LedgerError:
            continue
        accepted.append(item)
    return accepted


def _senders_in_turn(transactions, height: int) -> list[Transaction]:
    """Every sender's first transaction (by nonce), then every sender's second, …: a full block
    serves senders alike. The senders' order rotates with ``height``, so no key is always first."""
    by_sender: dict[bytes, list[Transaction]] = {}
    for tx in transactions:
        by_sender.setdefault(tx.sender, []).append(tx)
    senders = sorted(by_sender)
    if senders:
        start = height % len(senders)
        senders = senders[start:] + senders[:start]
    queues = [sorted(by_sender[sender], key=lambda t: t.nonce) for sender in senders]
    return [queue[i] for i in range(max(map(len, queues), default=0)) for queue in queues if i < len(queue)]


class Ledger:
    """The consensus application: mempool, proposals, validity and execution of decided blocks."""

    def __init__(self, genesis: Genesis, max_cached_blocks: int = 16, state: LedgerState | None = None,
                 max_mempool: int = MAX_MEMPOOL_TRANSACTIONS, clock: Callable[[], float] | None = None):
        """From genesis, or from ``state`` (restored by state sync: consensus/snapshot.py).

        ``clock`` (seconds since the Unix epoch; a node passes ``time.time``, a
        simulator its virtual time) stamps proposals and bounds the block time
        of others'; without one, block time stays at the last block's."""
        self.genesis = genesis
        self.clock = clock
        self.max_mempool = max_mempool
        self.state = state if state is not None else LedgerState.from_genesis(genesis)
        self.roots: dict[int, bytes] = {self.state.height: self.state.root()}
        self.mempool: dict[bytes, Transaction] = {}
        self._pending_by_sender: dict[bytes, int] = {}
        self.evidence_pool: dict[tuple, Evidence] = {}
        self.last_certificate: CommitCertificate | None = None
        # The state before the last decided block, whose root that block's
        # commit certifies (parent_root): what proven queries answer from.
        self.certified: tuple[LedgerState, Commit] | None = None
        # Blocks tried by ID: the state each leads to and the block decoded (None: it does not apply).
        self._tried: dict[bytes, tuple[LedgerState, Block] | None] = {}
        self._max_cached_blocks = max_cached_blocks
        # The last decided block, decoded (listeners of a decision read its transactions without parsing them).
        self.last_block: Block | None = None

    @property
    def chain_id(self) -> str:
        return self.genesis.chain_id

    @property
    def validators(self) -> ValidatorSet:
        return self.state.validators

    # ----------------------------------------------------------- queries

    def bonded_stake(self) -> dict[PeerId, int]:
        """Bonded units (every role, unbonding excluded) by peer: what ``TrustEngine.set_stake`` takes."""
        stake: dict[PeerId, int] = {}
        for (owner, _), amount in self.state.bonds.items():
            peer = peer_id_of(owner)
            stake[peer] = stake.get(peer, 0) + amount
        return stake

    def prove(self, key: bytes) -> StateProof | None:
        """An entry of the committed state with its proof against ``roots[height]``; None if absent."""
        found = self.state.tree().prove(key)
        if found is None:
            return None
        value, proof = found
        return StateProof(self.state.height, key, value, proof)

    def prove_account(self, account: bytes) -> StateProof | None:
        return self.prove(account_entry_key(account))

    def prove_lock(self, name: bytes) -> StateProof | None:
        """The live lease on ``name`` in the committed state (None: the lock is free)."""
        return self.prove(lock_entry_key(name))

    def lock_outcome(self, sender: bytes, request_id: bytes) -> LockOutcome | None:
        """The committed outcome of a lock request (None while undecided, or once past its retention)."""
        return self.state.locks.outcome_of(sender, request_id)

    def prove_absent(self, key: bytes) -> tuple[int, AbsenceProof] | None:
        """(height, proof that the committed state has no entry for ``key``), or None if it has one."""
        proof = self.state.tree().prove_absence(key)
        return None if proof is None else (self.state.height, proof)

    # ----------------------------------------------------------- mempool

    def check(self, tx: Transaction) -> None:
        """Raise the reason ``tx`` would be refused now (applied to a copy of the committed state)."""
        self.state.copy().apply_transaction(tx)

    def submit(self, tx: Transaction | bytes) -> bytes:
        """Queue a transaction for proposals; refused at once if it is malformed, forged or for another chain."""
        if isinstance(tx, bytes):
            tx = decode_transaction(tx)
        if tx.chain_id != self.chain_id:
            raise WrongChain(f"transaction for chain {tx.chain_id!r}")
        check_body_ranges(tx.body)
        tx_id = tx.tx_id()
        if tx_id in self.mempool:
            return tx_id  # these very bytes were checked when they came first (relays bring them again)
        verify_signature(tx)
        check_possession(tx)
        nonce = self.state.nonce(tx.sender)
        if tx.nonce < nonce:
            raise WrongNonce(f"nonce {tx.nonce} is used already")
        if tx.nonce >= nonce + MAX_PENDING_PER_SENDER:
            raise WrongNonce(f"nonce {tx.nonce} is too far ahead of the account's next, {nonce}")
        if isinstance(tx.body, LOCK_BODIES):
            decided = self.lock_outcome(tx.sender, tx.body.request_id)
            if decided is not None:
                raise DuplicateRequest(f"request {tx.body.request_id.hex()} was decided at height {decided.height}")
        if len(self.mempool) >= self.max_mempool:
            raise MempoolFull(f"{len(self.mempool)} transactions are waiting")
        # Counted per sender, not per nonce: variants of one nonce would otherwise let one sender fill the pool.
        pending = self._pending_by_sender.get(tx.sender, 0)
        if pending >= MAX_PENDING_PER_SENDER:
            raise SenderQueueFull(f"the sender has {pending} transactions waiting already")
        self.mempool[tx_id] = tx
        self._pending_by_sender[tx.sender] = pending + 1
        return tx_id

    def add_evidence(self, evidence: Evidence, max_pool: int = 256) -> None:
        """Keep evidence of double signing (from ``EquivocationDetected``) for the next proposals."""
        vote = evidence.first
        if len(self.evidence_pool) < max_pool:
            self.evidence_pool.setdefault((vote.validator, vote.kind, vote.height, vote.round), evidence)

    # ----------------------------------------------------------- Application

    def propose(self, height: int) -> bytes:
        # A refused transaction or evidence changes nothing (every rule checks
        # before it writes), so one scratch state serves the whole block.
        scratch = self.state.copy()
        scratch.time = max(self.state.time, self._clock_ms() or 0)
        limit = self.genesis.params.max_block_transactions
        pending = _senders_in_turn(self.mempool.values(), height)
        certificate = encode_certificate(self.last_certificate) if self.last_certificate is not None else b""
        budget = MAX_VALUE_SIZE - _BLOCK_HEADER_SIZE - len(certificate)

        def fitting(size_of, apply):
            """``apply`` an item if it fits what is left of the block (BlockFull otherwise)."""
            def attempt(item) -> None:
                nonlocal budget
                size = size_of(item)
                if size > budget:
                    raise BlockFull("no room left in this block")
                apply(item)
                budget -= size
            return attempt

        # Transactions leave room for evidence (a block applies its transactions first: only the bytes are ahead).
        evidence_room = min(budget, MAX_BLOCK_EVIDENCE * _MAX_EVIDENCE_SIZE)
        budget -= evidence_room
        chosen = _applicable(pending, fitting(lambda tx: 4 + len(tx.encode()),
                                              lambda tx: scratch.apply_transaction(tx, signature_checked=True)),
                             limit)  # signatures were checked at submit
        budget += evidence_room
        evidence = _applicable(list(self.evidence_pool.values()),
                               fitting(lambda item: 4 + len(encode_message(item)),
                                       lambda item: scratch.apply_evidence(item, height)),
                               MAX_BLOCK_EVIDENCE)
        scratch.end_block(height, self.last_certificate)
        block = Block(height, self.roots[self.state.height], self.last_certificate, tuple(chosen), tuple(evidence),
                      scratch.time, scratch.validators.digest(), self.chain_id, self.state.validators.digest())
        return block.encode()

    def has_pending(self) -> bool:
        """Whether a proposal now would carry anything: evidence, or a transaction next in its sender's turn
        (the consensus core makes no empty blocks back to back while this is False)."""
        return bool(self.evidence_pool) or any(tx.nonce == self.state.nonce(tx.sender)
                                               for tx in self.mempool.values())

    def is_valid(self, height: int, value: bytes) -> bool:
        tried = self._tried_block(value)
        if tried is None or height != self.state.height + 1:
            return False
        now = self._clock_ms()
        return now is None or tried[0].time <= now + MAX_BLOCK_TIME_AHEAD_MS

    def _clock_ms(self) -> int | None:
        return None if self.clock is None else int(self.clock() * 1000)

    def finalize(self, commit: Commit) -> ValidatorSet | None:
        """Execute a decided block; the validator set of the next height if it changed."""
        tried = self._tried_block(commit.value)
        if tried is None:
            raise InvalidBlock("a decided block does not apply: this node's state has diverged")
        state, self.last_block = tried
        previous = self.state.validators
        self.certified = (self.state, commit)  # _try applied the block to a copy: this state is unchanged
        self.state = state
        self.last_certificate = commit.certificate
        self.roots[state.height] = state.root()
        self._tried.clear()
        self._prune_mempool()
        return None if state.validators.digest() == previous.digest() else state.validators

    def apply_decided(self, value: bytes, certificate: CommitCertificate) -> ValidatorSet | None:
        """Replay: execute a decided block read from a store."""
        return self.finalize(Commit(certificate, value))

    def catch_up(self, store: ConsensusStore) -> int:
        """Execute the decisions ``store`` holds beyond our height (a restart: the ledger lives in memory,
        the decisions on disk); the height reached. Call before starting the core on that store."""
        for height in range(self.state.height + 1, store.last_commit_height() + 1):
            commit = store.load_commit(height)
            if commit is None:
                raise InvalidBlock(f"the store lacks the decision of height {height}")
            self.finalize(commit)
        return self.state.height

    def _tried_block(self, value: bytes) -> tuple[LedgerState, Block] | None:
        """The state ``value`` leads to and the block decoded, or None if it does not apply (remembered)."""
        block_id = block_id_of(value)
        if block_id not in self._tried:
            if len(self._tried) >= self._max_cached_blocks:
                self._tried.clear()
            attempt = self.state.copy()
            try:
                block = decode_block(value, self.mempool)
                attempt.apply_block(block, self.roots[self.state.height], self.mempool, block_id)
                self._tried[block_id] = (attempt, block)
            except LedgerError:
                self._tried[block_id] = None
        return self._tried[block_id]

    def _prune_mempool(self) -> None:
        self.mempool = {tx_id: tx for tx_id, tx in self.mempool.items()
                        if tx.nonce >= self.state.nonce(tx.sender)}
        self._pending_by_sender = {}
        for tx in self.mempool.values():
            self._pending_by_sender[tx.sender] = self._pending_by_sender.get(tx.sender, 0) + 1
        self.evidence_pool = {key: item for key, item in self.evidence_pool.items()
                              if key[0] not in self.state.tombstoned
                              and key[2] >= self.state.height - self.genesis.params.max_evidence_age}


__all__ = ["Block", "Escrow", "InvalidBlock", "Ledger", "LedgerState", "MAX_BLOCK_TIME_AHEAD_MS", "MempoolFull",
           "SenderQueueFull", "StateProof", "account_entry_key", "certified_root", "decode_account_entry",
           "decode_block", "verify_state_proof"]
