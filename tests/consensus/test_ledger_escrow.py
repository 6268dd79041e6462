"""Escrow for compute (open, release by the client, refund after the deadline) and the ledger's
invariants over random transaction sequences: conservation, replay, no overspend or early unbonding."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hypermesh.consensus.genesis import Genesis, GenesisBond, LedgerParams
from hypermesh.consensus.ledger import Ledger, decode_block
from hypermesh.consensus.ledger_tx import (
    MAX_AMOUNT,
    BadDeadline,
    Bond,
    EscrowExpired,
    EscrowNotExpired,
    EscrowOpen,
    EscrowRefund,
    EscrowRelease,
    LedgerError,
    NotAProvider,
    NotEscrowClient,
    Role,
    Transfer,
    Unbond,
    UnknownEscrow,
    escrow_id_of,
    sign_transaction,
)
from hypermesh.consensus.merkle import MerkleTree
from hypermesh.consensus.wire import Kind, make_evidence, sign_vote
from ledger_testkit import BALANCE, LEDGER_CHAIN, STAKE, USER_IDS, VALIDATOR_IDS, Chain, key

CLIENT, OTHER, PROVIDER = USER_IDS[0], USER_IDS[1], USER_IDS[3]
TASK, RESULT = b"\x07" * 32, b"\x09" * 32
PARAMS = LedgerParams(unbonding_period=4, max_evidence_age=1, epoch_length=3)


def genesis_with_provider(params=LedgerParams()):
    everyone = VALIDATOR_IDS + USER_IDS
    return Genesis(LEDGER_CHAIN, params, {key(i): BALANCE for i in everyone},
                   tuple(GenesisBond(key(i), Role.VALIDATOR, STAKE) for i in VALIDATOR_IDS[:4])
                   + (GenesisBond(key(PROVIDER), Role.PROVIDER, STAKE),))


def open_escrow(chain, amount=700, deadline=5):
    tx = chain.tx(CLIENT, EscrowOpen(key(PROVIDER), amount, deadline, TASK))
    chain.run(tx)
    return escrow_id_of(key(CLIENT), tx.nonce)


def test_an_escrow_locks_the_clients_units_and_a_release_by_the_client_pays_the_provider():
    chain = Chain(genesis_with_provider())
    escrow_id = open_escrow(chain)
    state = chain.ledger.state
    assert state.balance(key(CLIENT)) == BALANCE - 700 and state.escrows[escrow_id].amount == 700
    assert state.total_units() == chain.genesis.supply()
    chain.run(chain.tx(CLIENT, EscrowRelease(escrow_id, RESULT)))
    state = chain.ledger.state
    assert escrow_id not in state.escrows
    assert state.balance(key(PROVIDER)) == BALANCE + 700
    assert decode_block(chain.commits[-1].value).transactions[0].body.result == RESULT


def test_releasing_someone_elses_escrow_is_refused_and_nothing_moves():
    chain = Chain(genesis_with_provider())
    escrow_id = open_escrow(chain)
    ledger = chain.ledger
    root, supply = ledger.state.root(), ledger.state.total_units()
    for intruder in (OTHER, PROVIDER):
        with pytest.raises(NotEscrowClient):
            ledger.check(chain.attempt(intruder, EscrowRelease(escrow_id, RESULT)))
        with pytest.raises(NotEscrowClient):
            ledger.check(chain.attempt(intruder, EscrowRefund(escrow_id)))
    with pytest.raises(UnknownEscrow):
        ledger.check(chain.attempt(CLIENT, EscrowRelease(b"\x00" * 32, RESULT)))
    assert ledger.state.root() == root and ledger.state.total_units() == supply
    assert ledger.state.escrows[escrow_id].amount == 700


def test_a_refund_waits_for_the_deadline_and_a_release_after_it_is_refused():
    chain = Chain(genesis_with_provider())
    escrow_id = open_escrow(chain, deadline=3)  # opened in block 1
    with pytest.raises(EscrowNotExpired):
        chain.ledger.check(chain.attempt(CLIENT, EscrowRefund(escrow_id)))
    chain.commit_block()
    chain.commit_block()  # height 3: the last block in which it can be released
    with pytest.raises(EscrowExpired):
        chain.ledger.check(chain.attempt(CLIENT, EscrowRelease(escrow_id, RESULT)))
    chain.run(chain.tx(CLIENT, EscrowRefund(escrow_id)))
    state = chain.ledger.state
    assert state.balance(key(CLIENT)) == BALANCE and not state.escrows


def test_an_escrow_needs_a_bonded_provider_a_future_deadline_and_the_funds():
    chain = Chain(genesis_with_provider())
    chain.commit_block()
    ledger = chain.ledger
    with pytest.raises(NotAProvider):
        ledger.check(chain.attempt(CLIENT, EscrowOpen(key(OTHER), 10, 9, TASK)))
    with pytest.raises(BadDeadline):
        ledger.check(chain.attempt(CLIENT, EscrowOpen(key(PROVIDER), 10, 2, TASK)))
    with pytest.raises(LedgerError):
        ledger.check(chain.attempt(CLIENT, EscrowOpen(key(PROVIDER), BALANCE + 1, 9, TASK)))
    assert not ledger.state.escrows


# ----------------------------------------------------------- properties

ACTORS = [USER_IDS[0], USER_IDS[1], USER_IDS[2], PROVIDER, VALIDATOR_IDS[4], VALIDATOR_IDS[0]]
AMOUNTS = st.one_of(st.sampled_from([1, 9_999, STAKE, 2 * STAKE, BALANCE, BALANCE + 1, MAX_AMOUNT]),
                    st.integers(1, 3 * STAKE))
OPERATION = st.tuples(
    st.sampled_from(["transfer", "bond", "unbond", "open", "release", "refund", "replay", "double_sign"]),
    st.integers(0, len(ACTORS) - 1), st.integers(0, len(ACTORS) - 1), AMOUNTS,
    st.sampled_from(list(Role)), st.integers(0, 6))


def _transaction(state, included, operation):
    kind, sender_index, other_index, amount, role, small = operation
    sender, other = ACTORS[sender_index], ACTORS[other_index]
    if kind == "replay":  # a transaction already in a block, sent again
        return included[small % len(included)] if included else None
    escrows = sorted(state.escrows)
    escrow_id = escrows[small % len(escrows)] if escrows else b"\x00" * 32
    if small % 2 == 0:  # half the time, what is likeliest to apply: the client's own escrow, the whole bond
        if kind in ("release", "refund") and escrows:
            sender = next(i for i in ACTORS if key(i) == state.escrows[escrow_id].client)
        amount = state.bonded(key(sender), role) if kind == "unbond" and state.bonded(key(sender), role) else amount
    body = {
        "transfer": lambda: Transfer(key(other), amount),
        "bond": lambda: Bond(role, amount),
        "unbond": lambda: Unbond(role, amount),
        "open": lambda: EscrowOpen(key(other), amount, state.height + small, TASK),
        "release": lambda: EscrowRelease(escrow_id, RESULT),
        "refund": lambda: EscrowRefund(escrow_id),
    }[kind]()
    return sign_transaction(sender, LEDGER_CHAIN, state.nonce(key(sender)), body)


def _double_sign(identity, height):
    votes = [sign_vote(identity, LEDGER_CHAIN, Kind.PRECOMMIT, height, 0, bytes([i]) * 32) for i in (1, 2)]
    return make_evidence(*votes)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(OPERATION, max_size=6), min_size=1, max_size=10))
def test_random_transaction_sequences_conserve_units_replay_to_the_same_roots_and_never_release_early(blocks):
    """With double-sign evidence mixed in (slashing burns); every refused transaction leaves the root as it was."""
    genesis = genesis_with_provider(PARAMS)
    chain = Chain(genesis)
    ledger = chain.ledger
    included, seen_ids = [], set()
    for operations in blocks:
        before = ledger.state
        scratch = before.copy()
        for operation in operations:
            if operation[0] == "double_sign":  # evidence from consensus against a validator, at the last height
                if before.height:
                    ledger.add_evidence(_double_sign(VALIDATOR_IDS[operation[1] % 5], before.height))
                continue
            tx = _transaction(scratch, included, operation)
            if tx is None:
                continue
            root = scratch.root()
            try:
                scratch.apply_transaction(tx)
            except LedgerError:
                assert scratch.root() == root  # refused: nothing created or lost
            try:
                ledger.submit(tx)
            except LedgerError:
                pass  # refused at the door (an amount out of range, a used nonce)
        chain.commit_block()
        state = ledger.state
        block = decode_block(chain.commits[-1].value)
        # The root kept up to date entry by entry is the root of the whole state built afresh.
        assert ledger.roots[state.height] == MerkleTree(state.entries()).root
        # Conservation, after every block.
        assert state.total_units() == genesis.supply() + state.minted
        # No overspend: nothing negative anywhere.
        assert all(balance >= 0 for balance, _ in state.accounts.values())
        assert all(amount > 0 for amount in state.bonds.values())
        assert all(escrow.amount > 0 for escrow in state.escrows.values())
        # No double spend: a transaction is in at most one block.
        for tx in block.transactions:
            assert tx.tx_id() not in seen_ids
            seen_ids.add(tx.tx_id())
        included.extend(block.transactions)
        # No early unbonding: what left the unbonding queue was due; what is in it is not.
        for (release, owner, role) in set(before.unbonding) - set(state.unbonding):
            assert release <= state.height
        assert all(release > state.height for release, _, _ in state.unbonding)
    replayed = Ledger(genesis)
    for commit in chain.commits:
        replayed.apply_decided(commit.value, commit.certificate)
        height = replayed.state.height
        assert replayed.roots[height] == ledger.roots[height]
