"""The lock state machine on the chain: fencing tokens, expiry by block time, idempotent retries, bad input."""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hypermesh.consensus.ledger import MAX_BLOCK_TIME_AHEAD_MS, Ledger, LedgerState, decode_block
from hypermesh.consensus.ledger_tx import (
    MAX_LOCK_NAME_SIZE,
    MAX_LOCK_TTL_MS,
    DuplicateRequest,
    LockAcquire,
    LockNameOutOfRange,
    LockRelease,
    LockRenew,
    MalformedTransaction,
    TtlOutOfRange,
    WrongNonce,
    decode_transaction,
    sign_transaction,
)
from hypermesh.consensus.linearizability import ACQUIRE, RELEASE, RENEW, Operation, check_lock_history, lease_overlaps
from hypermesh.consensus.lock_client import lock_result
from hypermesh.consensus.locks import Lease, LockOutcome, OutcomeCode, lock_entry_key
from hypermesh.consensus.merkle import verify_proof
from ledger_testkit import LEDGER_CHAIN, USER_IDS, Chain, block_on, key, make_genesis

ALICE, BOB, CAROL = USER_IDS[:3]
NAME = b"jobs/leader"
START_MS = 1_700_000_000_000


class Clock:
    """The proposer's clock in seconds, moved by the test."""

    def __init__(self, ms=START_MS):
        self.ms = ms

    def __call__(self):
        return self.ms / 1000


def rid():
    return os.urandom(16)


def lock_chain(nodes=1):
    chain = Chain(make_genesis(), nodes)
    clock = Clock()
    for ledger in chain.ledgers:
        ledger.clock = clock
    return chain, clock


def decide(chain, identity, body):
    """Commit ``body`` from ``identity`` in the next block; its outcome."""
    chain.run(chain.tx(identity, body))
    return chain.ledger.lock_outcome(key(identity), body.request_id)


def test_acquire_is_granted_with_a_token_and_a_block_time_expiry_and_refused_to_others_with_the_holder():
    chain, clock = lock_chain()
    granted = decide(chain, ALICE, LockAcquire(rid(), NAME, 5_000))
    assert granted == LockOutcome(OutcomeCode.GRANTED, 1, START_MS, 1, START_MS + 5_000, key(ALICE))
    clock.ms += 1_000
    refused = decide(chain, BOB, LockAcquire(rid(), NAME, 5_000))
    assert (refused.code, refused.holder, refused.token, refused.expiry) == (
        OutcomeCode.HELD, key(ALICE), 1, START_MS + 5_000)
    assert not refused.ok and refused.reason == "held by another lease"
    assert chain.ledger.state.locks.leases[NAME] == Lease(key(ALICE), 1, START_MS + 5_000)


def test_fencing_tokens_only_increase_across_release_and_expiry():
    chain, clock = lock_chain()
    first = decide(chain, ALICE, LockAcquire(rid(), NAME, 5_000))
    assert decide(chain, ALICE, LockRelease(rid(), NAME, first.token)).code is OutcomeCode.RELEASED
    assert NAME not in chain.ledger.state.locks.leases
    second = decide(chain, BOB, LockAcquire(rid(), NAME, 2_000))
    clock.ms += 2_000  # Bob's lease ends at this block's time: expired, not held
    third = decide(chain, CAROL, LockAcquire(rid(), NAME, 2_000))
    assert (first.token, second.token, third.token) == (1, 2, 3)
    assert third.ok and third.expiry == clock.ms + 2_000
    other = decide(chain, ALICE, LockAcquire(rid(), b"other", 1_000))
    assert other.token == 4  # one counter for every lock: never reused by any


def test_leases_expire_by_block_time_and_a_node_without_a_clock_reaches_the_same_state():
    chain, clock = lock_chain()
    follower = Ledger(chain.genesis)  # no clock: it only ever sees header times
    decide(chain, ALICE, LockAcquire(rid(), NAME, 3_000))
    clock.ms += 2_999
    chain.commit_block()
    assert NAME in chain.ledger.state.locks.leases
    clock.ms += 1
    chain.commit_block()
    assert NAME not in chain.ledger.state.locks.leases  # pruned at the end of the block that reached the expiry
    assert chain.ledger.prove_lock(NAME) is None
    for commit in chain.commits:
        follower.finalize(commit)
    assert follower.state.root() == chain.ledger.state.root()


def test_renew_extends_the_holders_lease_and_refuses_a_wrong_token_or_another_sender():
    chain, clock = lock_chain()
    lease = decide(chain, ALICE, LockAcquire(rid(), NAME, 1_000))
    clock.ms += 500
    renewed = decide(chain, ALICE, LockRenew(rid(), NAME, lease.token, 4_000))
    assert (renewed.code, renewed.token, renewed.expiry) == (OutcomeCode.GRANTED, lease.token, clock.ms + 4_000)
    assert decide(chain, ALICE, LockRenew(rid(), NAME, lease.token + 1, 4_000)).code is OutcomeCode.WRONG_TOKEN
    refused = decide(chain, BOB, LockRenew(rid(), NAME, lease.token, 4_000))
    assert (refused.code, refused.holder) == (OutcomeCode.NOT_HOLDER, key(ALICE))
    assert chain.ledger.state.locks.leases[NAME] == Lease(key(ALICE), lease.token, renewed.expiry)
    clock.ms = renewed.expiry
    late = decide(chain, ALICE, LockRenew(rid(), NAME, lease.token, 4_000))
    assert (late.code, late.holder) == (OutcomeCode.NOT_HOLDER, b"")  # expired: there is nothing to renew


def test_a_release_by_a_non_holder_is_refused_with_its_reason_and_the_lease_does_not_change():
    chain, _ = lock_chain()
    lease = decide(chain, ALICE, LockAcquire(rid(), NAME, 5_000))
    before = chain.ledger.prove_lock(NAME)
    refused = decide(chain, BOB, LockRelease(rid(), NAME, lease.token))
    assert refused.code is OutcomeCode.NOT_HOLDER and refused.reason == "the sender holds no live lease on this lock"
    assert chain.ledger.prove_lock(NAME).value == before.value
    assert decide(chain, ALICE, LockRelease(rid(), NAME, lease.token + 7)).code is OutcomeCode.WRONG_TOKEN
    assert chain.ledger.prove_lock(NAME).value == before.value


def test_a_retried_request_has_one_effect_and_the_same_answer_however_it_is_signed():
    chain, clock = lock_chain(nodes=2)
    request = LockAcquire(rid(), NAME, 5_000)
    first_copy = chain.tx(ALICE, request)
    second_copy = chain.tx(ALICE, request)  # re-signed with the next nonce: another transaction, the same request
    chain.run(first_copy, second_copy)  # both in one block (neither was decided when they were sent)
    assert len(decode_block(chain.commits[-1].value).transactions) == 2
    outcome = chain.ledger.lock_outcome(key(ALICE), request.request_id)
    assert outcome.token == 1 and chain.ledger.state.locks.last_token == 1
    clock.ms += 1_000
    retry = sign_transaction(ALICE, LEDGER_CHAIN, chain.ledger.state.nonce(key(ALICE)), request)
    with pytest.raises(DuplicateRequest, match="decided at height 1"):
        chain.ledger.submit(retry)
    # A proposer that includes it anyway changes nothing but the nonce; the answer stays the first one.
    scratch = chain.ledger.state.copy()
    scratch.time = clock.ms
    scratch.apply_transaction(retry)
    assert scratch.locks.leases == chain.ledger.state.locks.leases
    assert scratch.locks.outcome_of(key(ALICE), request.request_id) == outcome


def test_a_replayed_transaction_is_refused_and_nothing_changes():
    chain, _ = lock_chain()
    tx = chain.tx(ALICE, LockAcquire(rid(), NAME, 5_000))
    chain.run(tx)
    root = chain.ledger.state.root()
    with pytest.raises(WrongNonce, match="used already"):
        chain.ledger.submit(tx)
    replay = block_on(chain.ledger, 2, root, chain.commits[-1].certificate, (tx,), time=START_MS).encode()
    assert not chain.ledger.is_valid(2, replay)
    assert chain.ledger.state.root() == root


@pytest.mark.parametrize("ttl", [0, -1, -5_000, MAX_LOCK_TTL_MS + 1, 1 << 63])
def test_a_ttl_out_of_range_is_refused_before_it_is_signed_and_on_the_wire(ttl):
    with pytest.raises(TtlOutOfRange, match="TTL"):
        sign_transaction(ALICE, LEDGER_CHAIN, 0, LockAcquire(rid(), NAME, ttl))
    with pytest.raises(TtlOutOfRange):
        sign_transaction(ALICE, LEDGER_CHAIN, 0, LockRenew(rid(), NAME, 1, ttl))
    if 0 <= ttl < 1 << 64:  # what a hostile client can put on the wire
        good = sign_transaction(ALICE, LEDGER_CHAIN, 0, LockAcquire(rid(), NAME, 1)).encode()
        wire = good[:-72] + ttl.to_bytes(8, "big") + good[-64:]
        with pytest.raises(TtlOutOfRange):
            decode_transaction(wire)


@pytest.mark.parametrize("name", [b"", b"x" * (MAX_LOCK_NAME_SIZE + 1), b"x" * 300])
def test_a_lock_name_out_of_range_is_refused(name):
    with pytest.raises(LockNameOutOfRange):
        sign_transaction(ALICE, LEDGER_CHAIN, 0, LockAcquire(rid(), name, 1_000))


def test_bad_lock_input_never_reaches_the_mempool_and_changes_nothing():
    chain, _ = lock_chain()
    root = chain.ledger.state.root()
    good = sign_transaction(ALICE, LEDGER_CHAIN, 0, LockAcquire(rid(), NAME, 1)).encode()
    name_at = 3 + len(LEDGER_CHAIN) + 32 + 8 + 16
    long_name = good[:name_at] + bytes([65]) + b"x" * 65 + good[-72:]
    for bad, reason in ((good[:-72] + bytes(8) + good[-64:], TtlOutOfRange),
                        (long_name, LockNameOutOfRange),
                        (good[:name_at - 1] + good[name_at:], MalformedTransaction)):  # a request ID a byte short
        with pytest.raises(reason):
            chain.ledger.submit(bad)
    assert not chain.ledger.mempool and chain.ledger.state.root() == root


def test_block_time_never_goes_back_and_a_block_too_far_ahead_of_the_validators_clock_is_refused():
    chain, clock = lock_chain()
    chain.commit_block()
    root, certificate = chain.ledger.state.root(), chain.commits[-1].certificate

    def at(time: int) -> bytes:
        return block_on(chain.ledger, 2, root, certificate, time=time).encode()
    assert not chain.ledger.is_valid(2, at(START_MS - 1))
    assert chain.ledger.is_valid(2, at(START_MS))
    ahead = START_MS + MAX_BLOCK_TIME_AHEAD_MS
    assert chain.ledger.is_valid(2, at(ahead))
    assert not chain.ledger.is_valid(2, at(ahead + 1))
    clock.ms -= 60_000  # a proposer whose clock is behind still moves block time forward only
    assert decode_block(chain.ledger.propose(2)).time == START_MS


def test_lock_state_is_under_the_state_root_and_survives_a_snapshot_round_trip():
    chain, _ = lock_chain()
    decide(chain, ALICE, LockAcquire(rid(), NAME, 5_000))
    state = chain.ledger.state
    proof = chain.ledger.prove_lock(NAME)
    verify_proof(state.root(), lock_entry_key(NAME), proof.value, proof.proof)
    assert Lease.decode(proof.value) == Lease(key(ALICE), 1, START_MS + 5_000)
    restored = LedgerState.from_entries(chain.genesis, state.entries())
    assert restored.root() == state.root() and restored.locks == state.locks and restored.time == state.time


OPS = st.lists(st.tuples(st.integers(0, 2), st.sampled_from([ACQUIRE, RENEW, RELEASE]), st.integers(0, 3),
                         st.integers(0, 4_000), st.integers(1, 5_000), st.booleans()), min_size=1, max_size=30)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_the_chains_lock_outcomes_form_a_linearizable_history_without_overlapping_leases(ops):
    """Random requests, a few per block: what the chain decides replays on the checker's specification."""
    chain, clock = lock_chain()
    clients = [ALICE, BOB, CAROL]
    tokens = {}
    history, pending = [], []
    for index, (who, kind, name_index, advance, ttl, flush) in enumerate(ops):
        identity, name = clients[who], b"lock-%d" % name_index
        token = tokens.get((who, name), 1)
        body = {ACQUIRE: LockAcquire(rid(), name, ttl), RENEW: LockRenew(rid(), name, token, ttl),
                RELEASE: LockRelease(rid(), name, token)}[kind]
        chain.submit(chain.tx(identity, body))
        pending.append((index, identity, kind, body))
        if flush or index == len(ops) - 1:
            clock.ms += advance
            invoke = pending[0][0]
            chain.commit_block()
            for _, sender, op_kind, sent in pending:
                outcome = chain.ledger.lock_outcome(key(sender), sent.request_id)
                if op_kind == ACQUIRE and outcome.ok:
                    tokens[(clients.index(sender), sent.name)] = outcome.token
                history.append(Operation(key(sender), op_kind, sent.name, invoke, index, lock_result(outcome),
                                         getattr(sent, "ttl_ms", None), getattr(sent, "token", 0)))
            pending = []
    assert check_lock_history(history).ok is True
    assert not lease_overlaps(history)


LOCK_TX = sign_transaction(ALICE, LEDGER_CHAIN, 3, LockRenew(b"q" * 16, NAME, 9, 1_000)).encode()


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_mutated_lock_transaction_is_refused_with_a_typed_reason_or_decodes_canonically(data):
    from hypermesh.consensus.ledger_tx import LedgerError
    value = bytearray(LOCK_TX)
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(value) - 1))
        if data.draw(st.booleans()):
            value[position] ^= data.draw(st.integers(1, 255))
        else:
            del value[position:position + data.draw(st.integers(1, 20))]
    try:
        tx = decode_transaction(bytes(value))
    except LedgerError:
        return
    assert tx.encode() == bytes(value)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_lock_entries_and_outcome_answers_decode_or_are_refused_with_a_typed_reason(data):
    from hypermesh.consensus.ledger_outcome import OutcomeError, Undecided, decode_outcome_answer
    from hypermesh.consensus.locks import LockDecodeError
    for decode in (Lease.decode, LockOutcome.decode):
        try:
            decoded = decode(data)
        except LockDecodeError:
            continue
        assert decoded.encode() == data  # one encoding each (no holder is 32 zero bytes)
    try:
        answer = decode_outcome_answer(data)
    except OutcomeError:
        return
    assert isinstance(answer, (LockOutcome, Undecided))


async def test_the_outcome_service_waits_for_the_commit_that_decides_a_request(autojump_clock):
    import trio
    import trio.testing

    from hypermesh.consensus.ledger_outcome import OutcomeService, Undecided, decode_outcome_answer
    chain, _ = lock_chain()
    service = OutcomeService(None, chain.ledger)
    request = LockAcquire(rid(), NAME, 5_000)
    undecided = decode_outcome_answer(await service.answer(key(ALICE), request.request_id, 0, 0))
    assert undecided == Undecided(0, 0)
    chain.submit(chain.tx(ALICE, request))
    answers = []

    async def wait_for_it():
        answers.append(decode_outcome_answer(await service.answer(key(ALICE), request.request_id, 0, 3_000)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_it)
        await trio.testing.wait_all_tasks_blocked()  # the waiter is parked before the block is decided
        assert not answers
        chain.commit_block()
        service.on_commit()
    assert answers == [chain.ledger.lock_outcome(key(ALICE), request.request_id)] and answers[0].ok
    # A wait that no commit ends is bounded: the node answers "undecided" with the sender's next nonce.
    other = rid()
    with trio.fail_after(20):
        assert decode_outcome_answer(await service.answer(key(ALICE), other, 1, 60_000)) == Undecided(1, 1)
        # A transaction with a nonce the sender has used can never apply: no wait at all.
        before = trio.current_time()
        assert decode_outcome_answer(await service.answer(key(ALICE), other, 0, 60_000)) == Undecided(1, 1)
        assert trio.current_time() == before
