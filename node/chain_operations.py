"""What a running node tells and does about its chain (control socket verbs ``chain.*``).

``hypermesh chain | account | transfer | stake | escrow | validators`` need a
running node with a chain (``hypermesh run --genesis FILE``): the ledger
lives in it. Reads answer from the node's own ledger, which verified every
block it executed. Transactions are signed with the node's identity key,
checked against the committed state and this node's own pending ones (so a
refusal is reported at once, with the ledger's reason, instead of the
transaction silently never making a block), submitted to the node's mempool
(which relays them to the validators) and waited for until a block holds them.
"""

from __future__ import annotations

import hashlib
import os

import trio

from hypermesh.consensus.genesis import GenesisError, account_of, peer_id_of
from hypermesh.consensus.ledger import Block, InvalidBlock, decode_block
from hypermesh.consensus.ledger_query import QueryError, QueryService
from hypermesh.consensus.lock_client import describe_lock, describe_outcome, verify_lock_answer
from hypermesh.consensus.ledger_tx import (
    MAX_LOCK_NAME_SIZE,
    MAX_LOCK_TTL_MS,
    REQUEST_ID_SIZE,
    Bond,
    EscrowOpen,
    EscrowRefund,
    EscrowRelease,
    LedgerError,
    LockAcquire,
    LockBody,
    LockRelease,
    LockRenew,
    Role,
    Transaction,
    Transfer,
    Unbond,
    check_body_ranges,
    declaring_bond,
    escrow_id_of,
    sign_transaction,
)
from hypermesh.consensus.locks import LockOutcome, lock_entry_key
from hypermesh.consensus.validators import public_key_of
from hypermesh.consensus.wire import block_id_of

from .validator_key import ValidatorKeyError, load_ml_dsa_key

# How long a transaction command waits for a block to hold its transaction, unless told otherwise.
COMMIT_TIMEOUT = 30.0
ROLES = {"validator": Role.VALIDATOR, "provider": Role.PROVIDER}


class ChainRefusal(ValueError):
    """The ledger refuses a transaction; the message is its reason."""


def _chain(node):
    """The node's running chain (a LedgerNode), or why there is none."""
    if node.chain is None:
        raise ValueError("this node runs no chain: start it with `hypermesh run --genesis FILE` "
                         "(`hypermesh genesis new` makes one)")
    if node.chain.running is None:
        raise ValueError("the chain is still starting (state sync); `hypermesh chain wait` waits for it")
    return node.chain.running


def _account(text: str) -> bytes:
    try:
        return account_of(text)
    except GenesisError as exc:
        raise ValueError(f"not an account: {text!r} ({exc})") from None


def _peer(account: bytes) -> str:
    return peer_id_of(account).to_base58()


# -- reading -------------------------------------------------------------------------


async def status(node) -> dict:
    running = _chain(node)
    ledger, core = running.ledger, running.consensus.core
    state = ledger.state
    return {
        "chain_id": ledger.chain_id,
        "height": state.height,
        "state_root": ledger.roots[state.height].hex(),
        "last_block_id": state.last_block_id.hex(),
        "round": core.round,
        "validator": core.is_validator,
        "signing": core.signer is not None,
        "validators": len(ledger.validators),
        "total_power": ledger.validators.total_power,
        "mempool": len(ledger.mempool),
        "origin": node.chain.origin,
    }


async def wait(node, height: int = 1, timeout: float = COMMIT_TIMEOUT) -> dict:
    """Until the chain has started and executed ``height`` (TimeoutError after ``timeout``)."""
    with trio.move_on_after(timeout):
        if node.chain is not None:
            await node.chain.started.wait()
            running = node.chain.running
            while running.ledger.state.height < height:
                await running.consensus.wait_for_height(running.ledger.state.height + 1)
            return await status(node)
    if node.chain is None:
        _chain(node)
    reached = node.chain.running.ledger.state.height if node.chain.running else "none (still starting)"
    raise TimeoutError(f"height {height} not reached within {timeout:g} s (the chain is at {reached})")


def _transaction_json(tx: Transaction) -> dict:
    body = tx.body
    document = {"tx_id": tx.tx_id().hex(), "kind": type(body).__name__, "sender": _peer(tx.sender),
                "nonce": tx.nonce}
    for name in getattr(body, "__slots__", ()):
        value = getattr(body, name)
        if name in ("to", "provider"):
            value = _peer(value)
        elif isinstance(value, Role):
            value = value.name.lower()
        elif isinstance(value, bytes):
            value = value.hex() if len(value) <= 64 else f"{len(value)} bytes"
        document[name] = value
    return document


async def block(node, height: int) -> dict:
    running = _chain(node)
    commit = running.consensus.core.store.load_commit(height) if height > 0 else None
    if commit is None:
        raise ValueError(f"this node holds no block {height} (its chain is at {running.ledger.state.height}; "
                         "a node that joined by state sync holds only the blocks after its snapshot)")
    try:
        decoded: Block = decode_block(commit.value)
    except InvalidBlock as exc:
        raise ValueError(f"block {height} does not decode: {exc}") from None
    certificate = commit.certificate
    return {
        "height": height,
        "block_id": block_id_of(commit.value).hex(),
        "parent_root": decoded.parent_root.hex(),
        "transactions": [_transaction_json(tx) for tx in decoded.transactions],
        "evidence": len(decoded.evidence),
        "certificate": {"round": certificate.round, "signatures": len(certificate.signatures)},
        "size": len(commit.value),
    }


async def account(node, peer: str | None = None) -> dict:
    running = _chain(node)
    key = _account(peer) if peer else public_key_of(node.identity)
    state = running.ledger.state
    return {
        "peer_id": _peer(key),
        "height": state.height,
        "balance": state.balance(key),
        "nonce": state.nonce(key),
        "bonded": {name: state.bonded(key, role) for name, role in ROLES.items()},
        "unbonding": state.unbonding_of(key),
        "jailed": key in state.jailed,
        "validator_power": running.ledger.validators.power_of(key),
    }


async def validators(node) -> dict:
    running = _chain(node)
    state = running.ledger.state
    current = running.ledger.validators
    return {
        "height": state.height,
        "total_power": current.total_power,
        "validators": [{"peer_id": _peer(v.public_key), "power": v.power, "scheme": v.scheme.label,
                        "bonded": state.bonded(v.public_key, Role.VALIDATOR),
                        "connected": bool(node.host.connections_to(peer_id_of(v.public_key)))
                        if v.public_key != public_key_of(node.identity) else None}
                       for v in current.validators],
    }


# -- transactions --------------------------------------------------------------------


def _next_nonce(ledger, sender: bytes) -> int:
    """After the committed nonce and this sender's transactions waiting in the mempool."""
    nonce = ledger.state.nonce(sender)
    pending = {tx.nonce for tx in ledger.mempool.values() if tx.sender == sender}
    while nonce in pending:
        nonce += 1
    return nonce


def _check_against_pending(ledger, tx: Transaction) -> None:
    """Raise the ledger's reason if ``tx`` would not apply after its sender's pending transactions."""
    scratch = ledger.state.copy()
    for pending in sorted((t for t in ledger.mempool.values() if t.sender == tx.sender), key=lambda t: t.nonce):
        try:
            scratch.apply_transaction(pending)
        except LedgerError:
            break
    scratch.apply_transaction(tx)


def _sign_and_submit(node, running, body) -> Transaction:
    """``body`` signed with the node's key at its next nonce, tried and queued (ChainRefusal: the ledger's reason)."""
    ledger = running.ledger
    sender = public_key_of(node.identity)
    try:
        check_body_ranges(body)
        tx = sign_transaction(node.identity, ledger.chain_id, _next_nonce(ledger, sender), body)
        _check_against_pending(ledger, tx)
        running.transactions.accept(tx.encode())
    except LedgerError as exc:
        raise ChainRefusal(f"refused: {_reason(exc)}") from None
    return tx


async def _until_nonce_used(running, tx: Transaction) -> None:
    """Until the chain has executed a transaction of ``tx``'s sender at ``tx``'s nonce (maybe another one)."""
    ledger = running.ledger
    while ledger.state.nonce(tx.sender) <= tx.nonce:
        await running.consensus.wait_for_height(ledger.state.height + 1)


def _not_in_time(tx: Transaction, timeout: float) -> TimeoutError:
    return TimeoutError(f"transaction {tx.tx_id().hex()[:16]}… is not in a block after {timeout:g} s "
                        f"(it waits in the mempool; is a quorum of validators up?)")


async def _submit(node, body, timeout: float) -> tuple[Transaction, int]:
    """Sign ``body`` with the node's key, submit it, and wait for the block that holds it: (tx, height)."""
    running = _chain(node)
    tx = _sign_and_submit(node, running, body)
    with trio.move_on_after(timeout):
        await _until_nonce_used(running, tx)
        return tx, _height_holding(running, tx)
    raise _not_in_time(tx, timeout)


def _height_holding(running, tx: Transaction) -> int:
    """The height of the recent block holding ``tx``; ChainRefusal if another transaction took its nonce."""
    tx_id = tx.tx_id()
    for decision in reversed(running.consensus.committed):
        if any(held.tx_id() == tx_id for held in decode_block(decision.value).transactions):
            return decision.height
    raise ChainRefusal("refused: another transaction of this account took the same nonce")


def _reason(exc: LedgerError) -> str:
    """``WrongNonce: nonce 3 is used already`` → ``wrong nonce: nonce 3 is used already``."""
    words = "".join(f" {c.lower()}" if c.isupper() else c for c in type(exc).__name__).strip()
    return f"{words}: {exc}" if str(exc) else words


def _tx_result(tx: Transaction, height: int, **extra) -> dict:
    return {"tx_id": tx.tx_id().hex(), "height": height, "sender": _peer(tx.sender), "nonce": tx.nonce, **extra}


def _role(name: str) -> Role:
    if name not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {name!r}")
    return ROLES[name]


def reference(text: str) -> bytes:
    """A 32-byte reference (a task, a result): 64 hex digits as given, else SHA-256 of the text."""
    try:
        raw = bytes.fromhex(text)
        if len(raw) == 32:
            return raw
    except ValueError:
        pass
    return hashlib.sha256(text.encode()).digest()


async def transfer(node, to: str, amount: int, timeout: float = COMMIT_TIMEOUT) -> dict:
    tx, height = await _submit(node, Transfer(_account(to), amount), timeout)
    return _tx_result(tx, height, to=_peer(tx.body.to), amount=amount)


async def bond(node, amount: int, role: str = "validator", consensus_key: bool = False,
               timeout: float = COMMIT_TIMEOUT) -> dict:
    """``consensus_key``: the bond declares the node's ML-DSA-65 key (with its proof of possession); the
    validator signs with it from the next validator set on."""
    body = Bond(_role(role), amount)
    if consensus_key:
        if body.role is not Role.VALIDATOR:
            raise ChainRefusal("refused: only a validator bond declares a consensus key")
        try:
            key = load_ml_dsa_key(node.data_dir)
        except ValidatorKeyError as exc:
            raise ChainRefusal(f"refused: {exc}") from None
        if key is None:
            raise ChainRefusal("refused: this node has no ML-DSA-65 key; make one with "
                               "`hypermesh validator key --scheme ml-dsa-65` first")
        body = declaring_bond(amount, key, _chain(node).ledger.chain_id, public_key_of(node.identity))
    tx, height = await _submit(node, body, timeout)
    return _tx_result(tx, height, role=role, amount=amount, consensus_key=consensus_key)


async def unbond(node, amount: int, role: str = "validator", timeout: float = COMMIT_TIMEOUT) -> dict:
    tx, height = await _submit(node, Unbond(_role(role), amount), timeout)
    return _tx_result(tx, height, role=role, amount=amount)


async def escrow_open(node, provider: str, amount: int, deadline: int, task: str,
                      timeout: float = COMMIT_TIMEOUT) -> dict:
    """``deadline``: the last height the escrow can be released at (refundable after it)."""
    tx, height = await _submit(node, EscrowOpen(_account(provider), amount, deadline, reference(task)), timeout)
    return _tx_result(tx, height, escrow_id=escrow_id_of(tx.sender, tx.nonce).hex(), provider=provider,
                      amount=amount, deadline=deadline)


def _escrow_id(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"an escrow ID is 64 hex digits (as `escrow open` prints), not {text!r}")
    return raw


async def escrow_release(node, escrow_id: str, result: str = "", timeout: float = COMMIT_TIMEOUT) -> dict:
    tx, height = await _submit(node, EscrowRelease(_escrow_id(escrow_id), reference(result)), timeout)
    return _tx_result(tx, height, escrow_id=escrow_id)


async def escrow_refund(node, escrow_id: str, timeout: float = COMMIT_TIMEOUT) -> dict:
    tx, height = await _submit(node, EscrowRefund(_escrow_id(escrow_id)), timeout)
    return _tx_result(tx, height, escrow_id=escrow_id)


# -- locks ---------------------------------------------------------------------------


def _lock_name(name: str) -> bytes:
    raw = name.encode()
    if not 0 < len(raw) <= MAX_LOCK_NAME_SIZE:
        raise ValueError(f"a lock name is 1 to {MAX_LOCK_NAME_SIZE} bytes, not {len(raw)}")
    return raw


def _ttl_ms(ttl: float) -> int:
    if not 0 < ttl * 1000 <= MAX_LOCK_TTL_MS:
        raise ValueError(f"a lease lasts more than 0 and at most {MAX_LOCK_TTL_MS // 1000} s, not {ttl:g}")
    return max(1, round(ttl * 1000))


def _outcome_json(name: bytes, outcome: LockOutcome) -> dict:
    return {"name": name.decode(), **describe_outcome(outcome)}


async def _lock_request(node, body: LockBody, timeout: float) -> dict:
    """Submit a lock request until the chain decides it (once, by its request ID, however often it is signed);
    its outcome, or ChainRefusal with the reason and the live lease."""
    running = _chain(node)
    ledger = running.ledger
    sender = public_key_of(node.identity)
    tx = None
    with trio.move_on_after(timeout):
        while (outcome := ledger.lock_outcome(sender, body.request_id)) is None:
            # Signed again only if another transaction of this account took the nonce (it can then never apply).
            tx = _sign_and_submit(node, running, body)
            await _until_nonce_used(running, tx)
        if not outcome.ok:
            lease = "" if not outcome.holder else (f": held by {_peer(outcome.holder)} with token {outcome.token} "
                                                   f"until block time {outcome.expiry} ms")
            raise ChainRefusal(f"refused: lock {body.name.decode()}: {outcome.reason}{lease}")
        return _outcome_json(body.name, outcome)
    raise _not_in_time(tx, timeout) if tx is not None else TimeoutError(f"no decision within {timeout:g} s")


def _own_token(running, sender: bytes, name: bytes) -> int:
    """The fencing token of this node's live lease on ``name`` (ChainRefusal if it holds none)."""
    state = running.ledger.state
    lease = state.locks.live_lease(name, state.time)
    if lease is None or lease.holder != sender:
        held = f" (held by {_peer(lease.holder)})" if lease is not None else ""
        raise ChainRefusal(f"refused: this node holds no live lease on {name.decode()}{held}")
    return lease.token


async def lock_acquire(node, name: str, ttl: float, timeout: float = COMMIT_TIMEOUT) -> dict:
    return await _lock_request(node, LockAcquire(os.urandom(REQUEST_ID_SIZE), _lock_name(name), _ttl_ms(ttl)),
                               timeout)


async def lock_renew(node, name: str, ttl: float, token: int | None = None, timeout: float = COMMIT_TIMEOUT) -> dict:
    raw = _lock_name(name)
    if token is None:
        token = _own_token(_chain(node), public_key_of(node.identity), raw)
    return await _lock_request(node, LockRenew(os.urandom(REQUEST_ID_SIZE), raw, token, _ttl_ms(ttl)), timeout)


async def lock_release(node, name: str, token: int | None = None, timeout: float = COMMIT_TIMEOUT) -> dict:
    raw = _lock_name(name)
    if token is None:
        token = _own_token(_chain(node), public_key_of(node.identity), raw)
    return await _lock_request(node, LockRelease(os.urandom(REQUEST_ID_SIZE), raw, token), timeout)


async def lock_show(node, name: str, proof: bool = False) -> dict:
    """The lock as the last certified state has it, checked here against its proof; with ``proof``, that
    proof, which anyone holding the chain's validator set can check offline: the commit certifying that
    state root and the Merkle proof of the lease (or of its absence), as ``/hm/ledger-query/1.0.0`` answers it
    (``ledger_query.verify_answer``)."""
    running = _chain(node)
    ledger = running.ledger
    raw = _lock_name(name)
    answer = QueryService(node.host, ledger).answer(lock_entry_key(raw))
    signers = ledger.state.last_validators  # the set that signed the last decided block, whose commit it is
    try:
        shown = describe_lock(verify_lock_answer(answer, raw, ledger.chain_id, signers))
    except QueryError as exc:
        raise ValueError(f"no proven state to show yet: {exc}") from None
    if proof:
        shown.update(chain_id=ledger.chain_id, proof=answer.hex(),
                     validators=[_trusted_validator(v) for v in signers.validators])
    return shown


def _trusted_validator(validator) -> dict:
    """A validator as an offline checker rebuilds it: peer ID, power and the consensus key it signs with."""
    shown = {"peer_id": _peer(validator.public_key), "power": validator.power}
    if validator.consensus_key is not None:
        shown["consensus_key"] = validator.consensus_key.to_json()
    return shown


OPERATIONS = {
    "chain.status": status,
    "chain.wait": wait,
    "chain.block": block,
    "chain.account": account,
    "chain.validators": validators,
    "chain.transfer": transfer,
    "chain.bond": bond,
    "chain.unbond": unbond,
    "chain.escrow_open": escrow_open,
    "chain.escrow_release": escrow_release,
    "chain.escrow_refund": escrow_refund,
    "lock.acquire": lock_acquire,
    "lock.renew": lock_renew,
    "lock.release": lock_release,
    "lock.show": lock_show,
}
