"""Proven queries over the network: ``/hm/ledger-query/1.0.0``.

A client asks any node for one state entry (an account, a bond, an escrow …
by its state key) and checks the answer with nothing but the validator set
it trusts: the node answers from the state its last decided block's commit
certifies (that block's ``parent_root``), sending the commit and a Merkle
proof of the entry, or of its absence.

One varint-framed request per stream, ``key_len:u16 ‖ key``, and one framed
answer: ``0x00 ‖ len:u32 ‖ commit ‖ proof`` or ``0x01 ‖ reason``. A proof is
``0x01 ‖ len:u32 ‖ value ‖ merkle_proof`` (present) or ``0x02 ‖ neighbour? ‖
neighbour?`` (absent; each ``0x00`` or ``0x01 ‖ len:u16 ‖ key ‖ len:u32 ‖
value ‖ merkle_proof``), a Merkle proof being ``index:u64 ‖ leaf_count:u64
‖ count:u8 ‖ count × sibling:32``.
"""

from __future__ import annotations

import struct

from hypermesh.transport.identity import PeerId

from .ledger import Ledger, account_entry_key, certified_root, decode_account_entry
from .merkle import (
    MAX_KEY_SIZE,
    MAX_PROOF_DEPTH,
    AbsenceProof,
    MerkleProof,
    Neighbour,
    ProofError,
    verify_absence,
    verify_proof,
)
from .one_shot import OneShotError, ask, serve_one_request
from .validators import ValidatorSet
from .wire import MAX_MESSAGE_SIZE, Commit, WireError, decode_message, encode_message

LEDGER_QUERY_PROTOCOL = "/hm/ledger-query/1.0.0"
MAX_ENTRY_VALUE = 1 << 16
_MAX_ANSWER_SIZE = MAX_MESSAGE_SIZE + 4 * (MAX_KEY_SIZE + MAX_ENTRY_VALUE + 32 * MAX_PROOF_DEPTH)


class QueryError(ValueError):
    """No answer, a malformed one, or one that does not verify against the trusted validators."""


def _encode_merkle_proof(proof: MerkleProof) -> bytes:
    return struct.pack(">QQB", proof.index, proof.leaf_count, len(proof.siblings)) + b"".join(proof.siblings)


def _encode_neighbour(neighbour: Neighbour | None) -> bytes:
    if neighbour is None:
        return b"\x00"
    return (b"\x01" + struct.pack(">H", len(neighbour.key)) + neighbour.key + struct.pack(">I", len(neighbour.value))
            + neighbour.value + _encode_merkle_proof(neighbour.proof))


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.offset = data, 0

    def take(self, size: int) -> bytes:
        if self.offset + size > len(self.data):
            raise QueryError("truncated answer")
        chunk = self.data[self.offset:self.offset + size]
        self.offset += size
        return chunk

    def sized(self, fmt: str, limit: int) -> bytes:
        (size,) = struct.unpack(fmt, self.take(struct.calcsize(fmt)))
        if size > limit:
            raise QueryError("a field exceeds its bound")
        return self.take(size)

    def merkle_proof(self) -> MerkleProof:
        index, leaf_count, count = struct.unpack(">QQB", self.take(17))
        if count > MAX_PROOF_DEPTH:
            raise QueryError("proof too deep")
        return MerkleProof(index, leaf_count, tuple(self.take(32) for _ in range(count)))

    def neighbour(self) -> Neighbour | None:
        flag = self.take(1)
        if flag == b"\x00":
            return None
        if flag != b"\x01":
            raise QueryError("bad neighbour flag")
        key = self.sized(">H", MAX_KEY_SIZE)
        return Neighbour(key, self.sized(">I", MAX_ENTRY_VALUE), self.merkle_proof())


class QueryService:
    """Answers proven queries from ``ledger``'s certified state."""

    def __init__(self, host, ledger: Ledger):
        self.host = host
        self.ledger = ledger

    def start(self) -> None:
        self.host.set_stream_handler(LEDGER_QUERY_PROTOCOL, self._handle_stream)

    def stop(self) -> None:
        self.host.remove_stream_handler(LEDGER_QUERY_PROTOCOL)

    def answer(self, key: bytes) -> bytes:
        if self.ledger.certified is None:
            return b"\x01no block is decided yet"
        state, commit = self.ledger.certified
        tree = state.tree()
        found = tree.prove(key)
        if found is not None:
            value, proof = found
            encoded_proof = b"\x01" + struct.pack(">I", len(value)) + value + _encode_merkle_proof(proof)
        else:
            absence = tree.prove_absence(key)
            encoded_proof = b"\x02" + _encode_neighbour(absence.below) + _encode_neighbour(absence.above)
        encoded_commit = encode_message(commit)
        return b"\x00" + struct.pack(">I", len(encoded_commit)) + encoded_commit + encoded_proof

    async def _handle_stream(self, stream) -> None:
        await serve_one_request(stream, 2 + MAX_KEY_SIZE, self._answer_request)

    def _answer_request(self, request: bytes) -> bytes | None:
        if len(request) < 2 or struct.unpack(">H", request[:2])[0] != len(request) - 2:
            return None
        return self.answer(request[2:])


def verify_answer(answer: bytes, key: bytes, chain_id: str, validators: ValidatorSet) -> tuple[int, bytes | None]:
    """(height, value or None if absent) from an answer, checked against ``validators``; QueryError if not."""
    if not answer:
        raise QueryError("empty answer")
    if answer[0] != 0:
        raise QueryError(f"refused: {answer[1:200].decode(errors='replace')}")
    reader = _Reader(answer)
    reader.take(1)
    try:
        commit = decode_message(reader.sized(">I", MAX_MESSAGE_SIZE))
    except WireError as exc:
        raise QueryError(f"malformed commit: {exc}") from None
    if not isinstance(commit, Commit):
        raise QueryError("the certificate is not a commit")
    try:
        height, root = certified_root(commit, chain_id, validators)
        kind = reader.take(1)
        if kind == b"\x01":
            value = reader.sized(">I", MAX_ENTRY_VALUE)
            verify_proof(root, key, value, reader.merkle_proof())
        elif kind == b"\x02":
            value = None
            verify_absence(root, key, AbsenceProof(reader.neighbour(), reader.neighbour()))
        else:
            raise QueryError("unknown proof kind")
    except ProofError as exc:
        raise QueryError(str(exc)) from None
    if reader.offset != len(answer):
        raise QueryError("trailing bytes after the proof")
    return height, value


async def fetch_answer(host, peer: PeerId, key: bytes) -> bytes:
    """``peer``'s answer for one state entry, unchecked: keep it, and check it offline with :func:`verify_answer`."""
    if len(key) > MAX_KEY_SIZE:
        raise QueryError("key too long")
    try:
        return await ask(host, peer, LEDGER_QUERY_PROTOCOL, struct.pack(">H", len(key)) + key, _MAX_ANSWER_SIZE)
    except OneShotError as exc:
        raise QueryError(str(exc)) from None


async def query_state(host, peer: PeerId, key: bytes, chain_id: str,
                      validators: ValidatorSet) -> tuple[int, bytes | None]:
    """Ask ``peer`` for one state entry; (height, value or None), proven against ``validators``."""
    return verify_answer(await fetch_answer(host, peer, key), key, chain_id, validators)


async def query_account(host, peer: PeerId, account: bytes, chain_id: str,
                        validators: ValidatorSet) -> tuple[int, int, int]:
    """(height, balance, nonce) of ``account`` (0, 0 if it has no entry), proven."""
    height, value = await query_state(host, peer, account_entry_key(account), chain_id, validators)
    balance, nonce = decode_account_entry(value) if value is not None else (0, 0)
    return height, balance, nonce


__all__ = ["LEDGER_QUERY_PROTOCOL", "QueryError", "QueryService", "fetch_answer", "query_account", "query_state",
           "verify_answer"]
