"""Ledger transactions: a canonical, bounded encoding and domain-separated signatures.

A transaction is ``version:u8 ‖ kind:u8 ‖ len:u8 ‖ chain_id ‖ sender:32 ‖
nonce:u64 ‖ body ‖ signature:64``. The sender is the raw Ed25519 public key
that the sender's peer ID inlines (the node's identity key is its account
key). The signature is Ed25519 over ``"hypermesh/ledger/tx/v1\\0" ‖`` the
encoding without the signature, so it verifies for no consensus message, no
other chain and no other transaction. Amounts are ``u64`` on the wire but
must lie in ``1..MAX_AMOUNT`` (2^62): every sum of amounts the ledger forms
stays far from any integer width another implementation might use.

The decoder refuses unknown versions and kinds, out-of-range fields,
truncation and trailing bytes with :class:`MalformedTransaction`; one
transaction has exactly one encoding, so its ID (SHA-256 of the encoding)
names it.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass, field

from hypermesh.transport.identity import Identity

from .sealed import MAX_SEALED_SIZE, SealedPayloadError, decode_sealed
from .signing import (
    ConsensusKey,
    ConsensusKeyError,
    Scheme,
    ed25519_verifies,
    holds_key,
    ml_dsa_public_key,
    prove_possession,
)
from .validators import PUBLIC_KEY_SIZE, public_key_of

TX_VERSION = 1
TX_SIGN_DOMAIN = b"hypermesh/ledger/tx/v1\x00"
SIGNATURE_SIZE = 64
HASH_SIZE = 32
MAX_CHAIN_ID_SIZE = 50
MAX_AMOUNT = 1 << 62
MAX_NONCE = (1 << 64) - 1
MAX_HEIGHT = (1 << 63) - 1
# A sealed payload (consensus/sealed.py) travels inside a transaction; this
# bounds the whole transaction.
MAX_TX_SIZE = 64 * 1024
# Locks: a request ID makes a retry idempotent; names and leases are bounded.
REQUEST_ID_SIZE = 16
MAX_LOCK_NAME_SIZE = 64
MAX_LOCK_TTL_MS = 24 * 3600 * 1000
MAX_TOKEN = (1 << 63) - 1


class LedgerError(Exception):
    """Base of every refusal of the ledger; the subclass is the reason."""


class MalformedTransaction(LedgerError):
    pass


class ForgedSignature(LedgerError):
    pass


class WrongChain(LedgerError):
    pass


class WrongNonce(LedgerError):
    pass


class AmountOutOfRange(LedgerError):
    pass


class InsufficientFunds(LedgerError):
    pass


class BelowMinimumStake(LedgerError):
    pass


class InsufficientBond(LedgerError):
    pass


class NotAProvider(LedgerError):
    pass


class UnknownEscrow(LedgerError):
    pass


class NotEscrowClient(LedgerError):
    pass


class EscrowNotExpired(LedgerError):
    pass


class EscrowExpired(LedgerError):
    pass


class BadDeadline(LedgerError):
    pass


class NotJailed(LedgerError):
    pass


class StillJailed(LedgerError):
    pass


class InvalidSlashingEvidence(LedgerError):
    pass


class TtlOutOfRange(MalformedTransaction):
    pass


class LockNameOutOfRange(MalformedTransaction):
    pass


class ForgedPossession(LedgerError):
    """A validator bond declaring a consensus key whose proof of possession does not verify."""


class DuplicateRequest(LedgerError):
    """A lock request whose ID this sender used already: it is decided; ask for its outcome."""


class TxKind(enum.IntEnum):
    TRANSFER = 0x01
    BOND = 0x02
    UNBOND = 0x03
    UNJAIL = 0x04
    SEALED_NOTE = 0x05
    BOND_WITH_KEY = 0x06  # a validator bond that declares its consensus (ML-DSA-65) key
    ESCROW_OPEN = 0x10
    ESCROW_RELEASE = 0x11
    ESCROW_REFUND = 0x12
    LOCK_ACQUIRE = 0x20
    LOCK_RENEW = 0x21
    LOCK_RELEASE = 0x22


class Role(enum.IntEnum):
    VALIDATOR = 1
    PROVIDER = 2


@dataclass(frozen=True, slots=True)
class Transfer:
    to: bytes
    amount: int


@dataclass(frozen=True, slots=True)
class Bond:
    """``consensus_key`` (validators only): the key it signs consensus messages with from the next set on,
    with ``possession``, that key's signature of (chain ID, sender) (signing.py)."""

    role: Role
    amount: int
    consensus_key: ConsensusKey | None = None
    possession: bytes = b""


@dataclass(frozen=True, slots=True)
class Unbond:
    role: Role
    amount: int


@dataclass(frozen=True, slots=True)
class Unjail:
    pass


@dataclass(frozen=True, slots=True)
class SealedNote:
    """A payload sealed to chosen recipients (consensus/sealed.py): ordered, unreadable to validators."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class EscrowOpen:
    provider: bytes
    amount: int
    deadline: int  # the last height at which the escrow can be released; refundable after it
    task: bytes  # 32-byte reference of the task (e.g. a capsule or job digest)


@dataclass(frozen=True, slots=True)
class EscrowRelease:
    escrow_id: bytes
    result: bytes  # 32-byte reference of the result the client accepts


@dataclass(frozen=True, slots=True)
class EscrowRefund:
    escrow_id: bytes


@dataclass(frozen=True, slots=True)
class LockAcquire:
    """Take the lock ``name`` for ``ttl_ms`` of block time if nobody holds a live lease on it."""

    request_id: bytes
    name: bytes
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class LockRenew:
    """Extend the sender's live lease (the one with fencing ``token``) to ``ttl_ms`` from this block."""

    request_id: bytes
    name: bytes
    token: int
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class LockRelease:
    request_id: bytes
    name: bytes
    token: int


LockBody = LockAcquire | LockRenew | LockRelease
Body = (Transfer | Bond | Unbond | Unjail | SealedNote | EscrowOpen | EscrowRelease | EscrowRefund
        | LockAcquire | LockRenew | LockRelease)
LOCK_BODIES = (LockAcquire, LockRenew, LockRelease)

_KIND_OF = {Transfer: TxKind.TRANSFER, Bond: TxKind.BOND, Unbond: TxKind.UNBOND, Unjail: TxKind.UNJAIL,
            SealedNote: TxKind.SEALED_NOTE,
            EscrowOpen: TxKind.ESCROW_OPEN, EscrowRelease: TxKind.ESCROW_RELEASE,
            EscrowRefund: TxKind.ESCROW_REFUND,
            LockAcquire: TxKind.LOCK_ACQUIRE, LockRenew: TxKind.LOCK_RENEW, LockRelease: TxKind.LOCK_RELEASE}


@dataclass(frozen=True, slots=True)
class Transaction:
    chain_id: str
    sender: bytes
    nonce: int
    body: Body
    signature: bytes
    # The encoding and ID, made once: a transaction is encoded, hashed and checked at every node it
    # passes, in every proposal and block it is part of.
    _encoded: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _tx_id: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def unsigned_bytes(self) -> bytes:
        encoded = self.encode()
        return encoded[:len(encoded) - len(self.signature)]

    def encode(self) -> bytes:
        if self._encoded is None:
            encoded = _encode_unsigned(self.chain_id, self.sender, self.nonce, self.body) + self.signature
            object.__setattr__(self, "_encoded", encoded)
        return self._encoded

    def tx_id(self) -> bytes:
        if self._tx_id is None:
            object.__setattr__(self, "_tx_id", hashlib.sha256(self.encode()).digest())
        return self._tx_id


def escrow_id_of(client: bytes, nonce: int) -> bytes:
    """An escrow is named by the transaction that opened it (sender and nonce are unique)."""
    return hashlib.sha256(b"hypermesh/escrow\x00" + client + struct.pack(">Q", nonce)).digest()


def _check_amount(amount: int) -> None:
    if not 0 < amount <= MAX_AMOUNT:
        raise AmountOutOfRange(f"amount {amount} is outside 1..{MAX_AMOUNT}")


def _check_lock_body(body: LockBody) -> None:
    if len(body.request_id) != REQUEST_ID_SIZE:
        raise MalformedTransaction(f"a request ID is {REQUEST_ID_SIZE} bytes")
    if not 0 < len(body.name) <= MAX_LOCK_NAME_SIZE:
        raise LockNameOutOfRange(f"a lock name of {len(body.name)} bytes is outside 1..{MAX_LOCK_NAME_SIZE}")
    if isinstance(body, (LockAcquire, LockRenew)) and not 0 < body.ttl_ms <= MAX_LOCK_TTL_MS:
        raise TtlOutOfRange(f"a TTL of {body.ttl_ms} ms is outside 1..{MAX_LOCK_TTL_MS}")
    if isinstance(body, (LockRenew, LockRelease)) and not 0 < body.token <= MAX_TOKEN:
        raise MalformedTransaction(f"fencing token {body.token} out of range")


def declaring_bond(amount: int, private_key, chain_id: str, owner: bytes) -> Bond:
    """A validator bond of ``amount`` that declares ``private_key``'s (ML-DSA-65) public key for ``owner``."""
    return Bond(Role.VALIDATOR, amount, ml_dsa_public_key(private_key), prove_possession(private_key, chain_id, owner))


def check_possession(tx: Transaction) -> None:
    """ForgedPossession unless a bond's declared key signed its proof for this chain and sender."""
    body = tx.body
    if isinstance(body, Bond) and body.consensus_key is not None \
            and not holds_key(body.consensus_key, tx.chain_id, tx.sender, body.possession):
        raise ForgedPossession("the proof of possession of the declared consensus key does not verify")


def _kind_of(body: Body) -> TxKind:
    if isinstance(body, Bond) and body.consensus_key is not None:
        return TxKind.BOND_WITH_KEY
    return _KIND_OF[type(body)]


def _encode_body(body: Body) -> bytes:
    if isinstance(body, LOCK_BODIES):
        _check_lock_body(body)
        encoded = body.request_id + bytes([len(body.name)]) + body.name
        if isinstance(body, (LockRenew, LockRelease)):
            encoded += struct.pack(">Q", body.token)
        if isinstance(body, (LockAcquire, LockRenew)):
            encoded += struct.pack(">Q", body.ttl_ms)
        return encoded
    if isinstance(body, Transfer):
        return body.to + struct.pack(">Q", body.amount)
    if isinstance(body, Bond) and body.consensus_key is not None:
        # role ‖ amount ‖ scheme:u8 ‖ public key ‖ proof (both of the scheme's fixed sizes)
        return struct.pack(">BQ", body.role, body.amount) + body.consensus_key.encode() + body.possession
    if isinstance(body, (Bond, Unbond)):
        return struct.pack(">BQ", body.role, body.amount)
    if isinstance(body, Unjail):
        return b""
    if isinstance(body, SealedNote):
        return struct.pack(">I", len(body.payload)) + body.payload
    if isinstance(body, EscrowOpen):
        return body.provider + struct.pack(">QQ", body.amount, body.deadline) + body.task
    if isinstance(body, EscrowRelease):
        return body.escrow_id + body.result
    return body.escrow_id


def _encode_unsigned(chain_id: str, sender: bytes, nonce: int, body: Body) -> bytes:
    chain = chain_id.encode()
    if not 0 < len(chain) <= MAX_CHAIN_ID_SIZE:
        raise MalformedTransaction(f"chain ID must be 1..{MAX_CHAIN_ID_SIZE} bytes")
    if not 0 <= nonce <= MAX_NONCE:
        raise MalformedTransaction("nonce out of range")
    return (struct.pack(">BBB", TX_VERSION, _kind_of(body), len(chain)) + chain + sender
            + struct.pack(">Q", nonce) + _encode_body(body))


def sign_transaction(identity: Identity, chain_id: str, nonce: int, body: Body) -> Transaction:
    sender = public_key_of(identity)
    unsigned = _encode_unsigned(chain_id, sender, nonce, body)
    return Transaction(chain_id, sender, nonce, body, identity.private_key.sign(TX_SIGN_DOMAIN + unsigned))


def verify_signature(tx: Transaction) -> None:
    if not ed25519_verifies(tx.sender, tx.signature, TX_SIGN_DOMAIN + tx.unsigned_bytes()):
        raise ForgedSignature("the signature does not verify for the sender's key")


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.offset = 0

    def take(self, size: int) -> bytes:
        end = self.offset + size
        if end > len(self.data):
            raise MalformedTransaction("truncated transaction")
        chunk = self.data[self.offset:end]
        self.offset = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u64(self) -> int:
        return struct.unpack(">Q", self.take(8))[0]

    def amount(self) -> int:
        value = self.u64()
        if not 0 < value <= MAX_AMOUNT:
            raise AmountOutOfRange(f"amount {value} is outside 1..{MAX_AMOUNT}")
        return value

    def role(self) -> Role:
        value = self.u8()
        try:
            return Role(value)
        except ValueError:
            raise MalformedTransaction(f"unknown role {value}") from None


def _decode_body(kind: TxKind, reader: _Reader) -> Body:
    if kind is TxKind.TRANSFER:
        return Transfer(reader.take(PUBLIC_KEY_SIZE), reader.amount())
    if kind is TxKind.BOND:
        return Bond(reader.role(), reader.amount())
    if kind is TxKind.BOND_WITH_KEY:
        role, amount = reader.role(), reader.amount()
        code = reader.u8()
        try:
            scheme = Scheme(code)
            key = ConsensusKey(scheme, reader.take(scheme.public_key_size))
        except (ValueError, ConsensusKeyError) as exc:  # an unknown scheme code, or one that needs no key
            raise MalformedTransaction(f"declared consensus key: {exc}") from None
        body = Bond(role, amount, key, reader.take(scheme.signature_size))
        _check_declared_key(body)
        return body
    if kind is TxKind.UNBOND:
        return Unbond(reader.role(), reader.amount())
    if kind is TxKind.UNJAIL:
        return Unjail()
    if kind is TxKind.SEALED_NOTE:
        (length,) = struct.unpack(">I", reader.take(4))
        if length > MAX_SEALED_SIZE:
            raise MalformedTransaction("sealed payload too large")
        payload = reader.take(length)
        try:
            decode_sealed(payload)
        except SealedPayloadError as exc:
            raise MalformedTransaction(f"sealed payload: {exc}") from None
        return SealedNote(payload)
    if kind is TxKind.ESCROW_OPEN:
        provider, amount = reader.take(PUBLIC_KEY_SIZE), reader.amount()
        deadline = reader.u64()
        if deadline > MAX_HEIGHT:
            raise MalformedTransaction("deadline out of range")
        return EscrowOpen(provider, amount, deadline, reader.take(HASH_SIZE))
    if kind is TxKind.ESCROW_RELEASE:
        return EscrowRelease(reader.take(HASH_SIZE), reader.take(HASH_SIZE))
    if kind in (TxKind.LOCK_ACQUIRE, TxKind.LOCK_RENEW, TxKind.LOCK_RELEASE):
        return _decode_lock_body(kind, reader)
    return EscrowRefund(reader.take(HASH_SIZE))


def _decode_lock_body(kind: TxKind, reader: _Reader) -> LockBody:
    request_id = reader.take(REQUEST_ID_SIZE)
    name = reader.take(reader.u8())
    if kind is TxKind.LOCK_ACQUIRE:
        body = LockAcquire(request_id, name, reader.u64())
    elif kind is TxKind.LOCK_RENEW:
        body = LockRenew(request_id, name, reader.u64(), reader.u64())
    else:
        body = LockRelease(request_id, name, reader.u64())
    _check_lock_body(body)
    return body


def decode_transaction(data: bytes) -> Transaction:
    """Parse one transaction (form only: signature, nonce and funds are the ledger's checks)."""
    if len(data) > MAX_TX_SIZE:
        raise MalformedTransaction(f"a transaction of {len(data)} bytes exceeds {MAX_TX_SIZE}")
    reader = _Reader(data)
    version, kind_code, chain_size = reader.u8(), reader.u8(), reader.u8()
    if version != TX_VERSION:
        raise MalformedTransaction(f"unknown transaction version {version}")
    try:
        kind = TxKind(kind_code)
    except ValueError:
        raise MalformedTransaction(f"unknown transaction kind {kind_code}") from None
    if not 0 < chain_size <= MAX_CHAIN_ID_SIZE:
        raise MalformedTransaction("chain ID length out of range")
    try:
        chain_id = reader.take(chain_size).decode()
    except UnicodeDecodeError:
        raise MalformedTransaction("chain ID is not UTF-8") from None
    sender, nonce = reader.take(PUBLIC_KEY_SIZE), reader.u64()
    body = _decode_body(kind, reader)
    signature = reader.take(SIGNATURE_SIZE)
    if reader.offset != len(data):
        raise MalformedTransaction("trailing bytes after the transaction")
    tx = Transaction(chain_id, sender, nonce, body, signature)
    if tx.encode() != data:
        raise MalformedTransaction("not the canonical encoding")
    return tx


def _check_declared_key(body: Bond) -> None:
    if body.consensus_key is None:
        if body.possession:
            raise MalformedTransaction("a proof of possession without a declared key")
        return
    if body.role is not Role.VALIDATOR:
        raise MalformedTransaction("only a validator bond declares a consensus key")
    if len(body.possession) != body.consensus_key.scheme.signature_size:
        raise MalformedTransaction("the proof of possession is not a signature of the key's scheme")


def check_body_ranges(body: Body) -> None:
    """The range and form rules the decoder applies, for transactions built in memory."""
    if isinstance(body, (Transfer, Bond, Unbond, EscrowOpen)):
        _check_amount(body.amount)
    if isinstance(body, Bond):
        _check_declared_key(body)
    if isinstance(body, SealedNote):
        try:
            decode_sealed(body.payload)
        except SealedPayloadError as exc:
            raise MalformedTransaction(f"sealed payload: {exc}") from None
    if isinstance(body, LOCK_BODIES):
        _check_lock_body(body)


__all__ = [
    "AmountOutOfRange", "BadDeadline", "DuplicateRequest", "LOCK_BODIES", "LockAcquire", "LockBody",
    "LockNameOutOfRange", "LockRelease", "LockRenew", "MAX_LOCK_NAME_SIZE", "MAX_LOCK_TTL_MS", "REQUEST_ID_SIZE",
    "TtlOutOfRange", "BelowMinimumStake", "Bond", "EscrowExpired", "EscrowNotExpired",
    "EscrowOpen", "EscrowRefund", "EscrowRelease", "ForgedPossession", "ForgedSignature", "InsufficientBond", "InsufficientFunds",
    "LedgerError", "MAX_AMOUNT", "MalformedTransaction", "NotAProvider", "NotEscrowClient", "NotJailed", "Role",
    "SealedNote", "StillJailed", "InvalidSlashingEvidence", "Transaction", "Transfer", "TxKind", "Unbond",
    "Unjail", "UnknownEscrow", "WrongChain",
    "WrongNonce", "check_possession", "declaring_bond", "decode_transaction", "escrow_id_of", "sign_transaction",
    "verify_signature",
]
