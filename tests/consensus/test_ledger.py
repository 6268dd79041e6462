"""The ledger application: accounts, signed transfers, genesis, blocks and the state root."""

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypermesh.consensus.genesis import GenesisError, account_of, genesis_to_json, parse_genesis, peer_id_of
from hypermesh.consensus.ledger import InvalidBlock, Ledger, decode_block
from hypermesh.consensus.ledger_tx import (
    MAX_AMOUNT,
    AmountOutOfRange,
    ForgedSignature,
    MalformedTransaction,
    Transfer,
    WrongChain,
    WrongNonce,
    decode_transaction,
    sign_transaction,
)
from hypermesh.consensus.merkle import ordered_root
from ledger_testkit import BALANCE, LEDGER_CHAIN, STAKE, USER_IDS, VALIDATOR_IDS, Chain, block_on, key, make_genesis

ALICE, BOB = USER_IDS[0], USER_IDS[1]


def assert_unchanged(ledger, root, supply):
    assert ledger.state.root() == root
    assert ledger.state.total_units() == supply


def test_genesis_round_trips_through_json_with_peer_ids_and_sets_the_initial_validators():
    genesis = make_genesis()
    parsed = parse_genesis(genesis_to_json(genesis))
    assert parsed == genesis
    assert account_of(str(ALICE.peer_id)) == key(ALICE)
    assert peer_id_of(key(ALICE)) == ALICE.peer_id
    ledger = Ledger(parsed)
    assert [v.public_key for v in ledger.validators.validators] == sorted(key(i) for i in VALIDATOR_IDS[:4])
    assert all(v.power == STAKE for v in ledger.validators.validators)
    assert ledger.state.total_units() == genesis.supply()


@pytest.mark.parametrize("change, reason", [
    (lambda d: d.update(chain_id=""), "chain_id"),
    (lambda d: d["bonds"][0].update(amount=9_999), "below the validator minimum"),
    (lambda d: d["accounts"][0].update(peer_id="QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"), "inline"),
    (lambda d: d["params"].update(epoch_length=0), "positive"),
    (lambda d: d["params"].update(surprise=1), "unknown parameters"),
    (lambda d: d["params"].update(unbonding_period=550), "must cover epoch_length"),
    (lambda d: d.update(bonds=[]), "at least one validator"),
])
def test_a_genesis_file_that_breaks_a_rule_is_refused_with_its_reason(change, reason):
    import json
    data = json.loads(genesis_to_json(make_genesis()))
    change(data)
    with pytest.raises(GenesisError, match=reason):
        parse_genesis(json.dumps(data))


def test_a_transfer_moves_units_and_bumps_the_nonce_in_a_certified_block():
    chain = Chain(make_genesis(), nodes=2)
    before = chain.ledger.state.root()
    chain.run(chain.tx(ALICE, Transfer(key(BOB), 250)))
    state = chain.ledger.state
    assert (state.balance(key(ALICE)), state.balance(key(BOB))) == (BALANCE - 250, BALANCE + 250)
    assert state.nonce(key(ALICE)) == 1 and state.height == 1
    assert state.root() != before
    assert chain.ledgers[1].state.root() == state.root()


def test_a_transfer_to_a_new_account_creates_it():
    chain = Chain(make_genesis())
    newcomer = key(VALIDATOR_IDS[0])[::-1]
    chain.run(chain.tx(ALICE, Transfer(newcomer, 7)))
    assert chain.ledger.state.balance(newcomer) == 7


def test_transaction_encoding_is_canonical_and_the_decoder_refuses_trailing_bytes_and_unknown_kinds():
    tx = sign_transaction(ALICE, LEDGER_CHAIN, 0, Transfer(key(BOB), 5))
    data = tx.encode()
    assert decode_transaction(data) == tx
    for bad in (data + b"\x00", data[:-1], data[:1] + b"\x7f" + data[2:], b"\x02" + data[1:]):
        with pytest.raises(MalformedTransaction):
            decode_transaction(bad)


def test_a_transfer_with_a_wrong_nonce_is_refused_and_nothing_moves():
    chain = Chain(make_genesis())
    ledger = chain.ledger
    chain.run(chain.tx(ALICE, Transfer(key(BOB), 1)))
    root, supply = ledger.state.root(), ledger.state.total_units()
    for nonce in (0, 2):  # replayed, and skipping ahead
        tx = sign_transaction(ALICE, LEDGER_CHAIN, nonce, Transfer(key(BOB), 1))
        with pytest.raises(WrongNonce):
            ledger.check(tx)
    with pytest.raises(WrongNonce):
        ledger.submit(sign_transaction(ALICE, LEDGER_CHAIN, 0, Transfer(key(BOB), 1)))
    assert_unchanged(ledger, root, supply)


def test_a_transfer_with_a_forged_signature_is_refused_and_nothing_moves():
    chain = Chain(make_genesis())
    ledger = chain.ledger
    root, supply = ledger.state.root(), ledger.state.total_units()
    genuine = sign_transaction(ALICE, LEDGER_CHAIN, 0, Transfer(key(BOB), 10))
    # Bob signs a transfer out of Alice's account; and Alice's signature on other terms.
    by_bob = sign_transaction(BOB, LEDGER_CHAIN, 0, Transfer(key(BOB), 10))
    forged = [
        decode_transaction(genuine.encode()[:-64] + by_bob.signature),
        decode_transaction(genuine.encode().replace((10).to_bytes(8, "big"), (11).to_bytes(8, "big"))),
    ]
    for tx in forged:
        with pytest.raises(ForgedSignature):
            ledger.check(tx)
        with pytest.raises(ForgedSignature):
            ledger.submit(tx.encode())
    assert ledger.mempool == {}
    assert_unchanged(ledger, root, supply)


# The identity point as an Ed25519 public key, and the "signature" (R = identity, S = 0) that satisfies
# RFC 8032's cofactorless check for it and every message: OpenSSL accepts it, libsodium does not.
SMALL_ORDER_KEY = bytes([1]) + bytes(31)
TRIVIAL_SIGNATURE = SMALL_ORDER_KEY + bytes(32)


def test_a_small_order_key_whose_one_signature_fits_every_message_is_refused():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from hypermesh.consensus.ledger_tx import Transaction, verify_signature
    from hypermesh.consensus.signing import Scheme
    from hypermesh.consensus.signing import verify_signature as verify_consensus_signature

    for message in (b"one message", b"and any other"):
        Ed25519PublicKey.from_public_bytes(SMALL_ORDER_KEY).verify(TRIVIAL_SIGNATURE, message)  # OpenSSL: "valid"
        assert not verify_consensus_signature(Scheme.ED25519, SMALL_ORDER_KEY, TRIVIAL_SIGNATURE, message)
    forged = Transaction(LEDGER_CHAIN, SMALL_ORDER_KEY, 0, Transfer(key(BOB), 10), TRIVIAL_SIGNATURE)
    with pytest.raises(ForgedSignature):
        verify_signature(forged)


def test_a_transaction_signed_for_another_chain_is_refused():
    ledger = Chain(make_genesis()).ledger
    with pytest.raises(WrongChain):
        ledger.submit(sign_transaction(ALICE, "other-chain", 0, Transfer(key(BOB), 1)))


def test_an_overflowing_amount_is_refused_and_nothing_is_created():
    chain = Chain(make_genesis())
    ledger = chain.ledger
    root, supply = ledger.state.root(), ledger.state.total_units()
    for amount in (MAX_AMOUNT + 1, (1 << 64) - 1):
        tx = sign_transaction(ALICE, LEDGER_CHAIN, 0, Transfer(key(BOB), amount))
        with pytest.raises(AmountOutOfRange):
            decode_transaction(tx.encode())
        with pytest.raises(AmountOutOfRange):
            ledger.check(tx)
    from hypermesh.consensus.ledger_tx import InsufficientFunds
    with pytest.raises(InsufficientFunds):
        ledger.check(sign_transaction(ALICE, LEDGER_CHAIN, 0, Transfer(key(BOB), BALANCE + 1)))
    assert_unchanged(ledger, root, supply)


def test_the_proposer_leaves_out_transactions_that_would_fail_so_the_block_applies():
    chain = Chain(make_genesis())
    good = chain.tx(ALICE, Transfer(key(BOB), BALANCE))
    overspend = chain.tx(ALICE, Transfer(key(BOB), 1))  # next nonce, but nothing left
    chain.run(good, overspend)
    block = decode_block(chain.commits[-1].value)
    assert block.transactions == (good,)
    assert chain.ledger.state.balance(key(ALICE)) == 0


def test_a_block_with_a_failing_transaction_a_wrong_parent_root_or_another_chain_or_set_is_invalid():
    chain = Chain(make_genesis())
    ledger = chain.ledger
    root = ledger.state.root()
    overspend = sign_transaction(ALICE, LEDGER_CHAIN, 0, Transfer(key(BOB), BALANCE + 1))
    assert not ledger.is_valid(1, block_on(ledger, 1, root, None, (overspend,)).encode())
    assert not ledger.is_valid(1, block_on(ledger, 1, b"\x00" * 32).encode())
    assert not ledger.is_valid(2, block_on(ledger, 2, root).encode())
    assert not ledger.is_valid(1, block_on(ledger, 1, root, next_validators=bytes(32)).encode())
    assert not ledger.is_valid(1, block_on(ledger, 1, root, validators=bytes(32)).encode())
    assert not ledger.is_valid(1, block_on(ledger, 1, root, chain_id="another-chain").encode())
    assert not ledger.is_valid(1, b"\x01garbage")
    assert ledger.is_valid(1, block_on(ledger, 1, root).encode())
    with pytest.raises(InvalidBlock):
        decode_block(block_on(ledger, 1, root).encode() + b"\x00")


def test_a_block_whose_transactions_root_does_not_match_its_transactions_is_refused():
    ledger = Ledger(make_genesis())
    ledger.submit(sign_transaction(ALICE, LEDGER_CHAIN, 0, Transfer(key(BOB), 10)))
    block = decode_block(ledger.propose(1))
    encoded = bytearray(block.encode())
    start = encoded.index(block.transactions_root)
    encoded[start] ^= 1
    with pytest.raises(InvalidBlock, match="transactions root"):
        decode_block(bytes(encoded))
    assert block.transactions_root == ordered_root([tx.tx_id() for tx in block.transactions])


def test_a_block_must_carry_a_valid_certificate_of_its_parent():
    chain = Chain(make_genesis())
    chain.commit_block()
    ledger = chain.ledger
    certificate = chain.commits[-1].certificate
    root = ledger.state.root()
    assert ledger.is_valid(2, block_on(ledger, 2, root, certificate).encode())
    assert not ledger.is_valid(2, block_on(ledger, 2, root, None).encode())
    weak = type(certificate)(certificate.height, certificate.round, certificate.block_id, certificate.signatures[:2])
    assert not ledger.is_valid(2, block_on(ledger, 2, root, weak).encode())


def test_replaying_the_decided_blocks_from_genesis_gives_the_same_root_at_every_height():
    chain = Chain(make_genesis())
    for i in range(5):
        chain.run(chain.tx(ALICE, Transfer(key(BOB), 10 + i)), chain.tx(BOB, Transfer(key(ALICE), 3)))
    fresh = Ledger(make_genesis())
    for commit in chain.commits:
        fresh.apply_decided(commit.value, commit.certificate)
        assert fresh.roots[fresh.state.height] == chain.ledger.roots[fresh.state.height]
    assert fresh.roots == chain.ledger.roots


def test_a_proposal_stays_within_the_consensus_value_limit_and_the_rest_waits_for_the_next_block():
    from hypermesh.consensus.ledger_tx import SealedNote
    from hypermesh.consensus.sealed import MAX_PLAINTEXT, SealingKey, seal
    from hypermesh.consensus.wire import MAX_VALUE_SIZE
    chain = Chain(make_genesis())
    recipient = SealingKey.from_seed(b"big-notes").public
    notes = [chain.tx(ALICE, SealedNote(seal(b"\x00" * MAX_PLAINTEXT, [recipient]))) for _ in range(40)]
    assert sum(len(tx.encode()) for tx in notes) > MAX_VALUE_SIZE
    chain.run(*notes)
    first = chain.commits[-1].value
    assert len(first) <= MAX_VALUE_SIZE
    included = len(decode_block(first).transactions)
    assert 0 < included < 40
    chain.commit_block()
    assert len(decode_block(chain.commits[-1].value).transactions) == 40 - included
    assert chain.ledger.state.nonce(key(ALICE)) == 40


def test_a_restarted_node_rebuilds_its_ledger_from_the_decisions_in_its_sqlite_store(tmp_path):
    from hypermesh.consensus.sqlite_store import SqliteConsensusStore
    from hypermesh.consensus.store import SavedState
    chain = Chain(make_genesis())
    store = SqliteConsensusStore(tmp_path)
    for i in range(4):
        chain.run(chain.tx(ALICE, Transfer(key(BOB), 5 + i)))
        # As the core saves a decision: with the (empty) signer state of the next height.
        store.save_commit(chain.commits[-1], SavedState(i + 2, 0, -1, None, -1, None, (0, -1, -1), ()))
    store.close()
    reopened = SqliteConsensusStore(tmp_path)
    restarted = Ledger(make_genesis())
    assert restarted.catch_up(reopened) == 4
    assert restarted.roots == chain.ledger.roots
    assert restarted.last_certificate == chain.commits[-1].certificate  # it can propose block 5
    reopened.close()


def test_the_mempool_is_bounded_in_size_and_in_how_far_ahead_a_nonce_may_be():
    from hypermesh.consensus.ledger import MAX_PENDING_PER_SENDER, MempoolFull
    ledger = Ledger(make_genesis(), max_mempool=3)
    with pytest.raises(WrongNonce):
        ledger.submit(sign_transaction(ALICE, LEDGER_CHAIN, MAX_PENDING_PER_SENDER, Transfer(key(BOB), 1)))
    for nonce in range(3):
        ledger.submit(sign_transaction(ALICE, LEDGER_CHAIN, nonce, Transfer(key(BOB), 1)))
    ledger.submit(sign_transaction(ALICE, LEDGER_CHAIN, 2, Transfer(key(BOB), 1)))  # the same again: no new entry
    with pytest.raises(MempoolFull):
        ledger.submit(sign_transaction(BOB, LEDGER_CHAIN, 0, Transfer(key(ALICE), 1)))
    assert len(ledger.mempool) == 3


def _valid_block_bytes():
    chain = Chain(make_genesis())
    chain.run(chain.tx(ALICE, Transfer(key(BOB), 3)))
    chain.submit(chain.tx(BOB, Transfer(key(ALICE), 1)))
    return chain.ledger, chain.ledger.propose(2)


LEDGER_AT_1, BLOCK_2 = _valid_block_bytes()


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_corrupted_proposal_is_judged_by_validity_without_an_exception_and_changes_nothing(data):
    value = bytearray(BLOCK_2)
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        position = data.draw(st.integers(0, len(value) - 1))
        if action == "flip":
            value[position] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del value[position:position + data.draw(st.integers(1, 40))]
        else:
            value[position:position] = data.draw(st.binary(min_size=1, max_size=8))
    valid = LEDGER_AT_1.is_valid(2, bytes(value))
    if valid and bytes(value) != BLOCK_2:  # only another quorum of the same certificate could still be valid
        assert decode_block(bytes(value)).transactions == decode_block(BLOCK_2).transactions
    assert LEDGER_AT_1.state.height == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_are_refused_as_a_transaction_with_a_typed_reason(data):
    from hypermesh.consensus.ledger_tx import LedgerError
    try:
        decode_transaction(data)
    except LedgerError:
        pass


def test_a_sender_holds_at_most_its_share_of_the_mempool_even_with_variants_of_one_nonce():
    from hypermesh.consensus.ledger import MAX_PENDING_PER_SENDER, SenderQueueFull
    ledger = Ledger(make_genesis())
    for amount in range(1, MAX_PENDING_PER_SENDER + 1):  # all at nonce 0: only one of them can ever apply
        ledger.submit(sign_transaction(ALICE, LEDGER_CHAIN, 0, Transfer(key(BOB), amount)))
    with pytest.raises(SenderQueueFull):
        ledger.submit(sign_transaction(ALICE, LEDGER_CHAIN, 1, Transfer(key(BOB), 1)))
    ledger.submit(sign_transaction(BOB, LEDGER_CHAIN, 0, Transfer(key(ALICE), 1)))  # others are still served
    assert len(ledger.mempool) == MAX_PENDING_PER_SENDER + 1


def test_a_full_block_takes_every_sender_in_turn_not_the_lowest_keys_first():
    from dataclasses import replace
    from hypermesh.consensus.genesis import LedgerParams
    senders = USER_IDS[:4]
    ledger = Ledger(make_genesis(params=replace(LedgerParams(), max_block_transactions=8)))
    for sender in senders:
        for nonce in range(10):
            ledger.submit(sign_transaction(sender, LEDGER_CHAIN, nonce, Transfer(key(ALICE if sender is not ALICE
                                                                                   else BOB), 1)))
    block = decode_block(ledger.propose(1))
    counts = {key(s): sum(tx.sender == key(s) for tx in block.transactions) for s in senders}
    assert sorted(counts.values()) == [2, 2, 2, 2]


def test_a_proposed_block_with_a_forged_transaction_is_invalid_though_the_mempool_holds_the_genuine_one():
    ledger = Ledger(make_genesis())
    genuine = sign_transaction(ALICE, LEDGER_CHAIN, 0, Transfer(key(BOB), 10))
    ledger.submit(genuine)  # its signature is checked once, here; blocks reuse that check
    by_bob = sign_transaction(BOB, LEDGER_CHAIN, 0, Transfer(key(BOB), 10))
    forged = decode_transaction(genuine.encode()[:-64] + by_bob.signature)
    honest = decode_block(ledger.propose(1))
    assert honest.transactions == (genuine,) and ledger.is_valid(1, honest.encode())
    tampered = dataclasses.replace(honest, transactions=(forged,))
    assert not ledger.is_valid(1, tampered.encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.lists(st.binary(max_size=40), max_size=5).map(
    lambda items: b"".join([len(items).to_bytes(2, "big")] + [len(i).to_bytes(4, "big") + i for i in items])))
def test_a_transaction_batch_decodes_to_what_was_encoded_or_is_refused_as_malformed(data):
    from hypermesh.consensus.ledger_service import MalformedBatch, decode_batch, encode_batch
    try:
        items = decode_batch(data)
    except MalformedBatch:
        return
    assert encode_batch(items) == data


def test_a_transaction_batch_over_its_count_bound_is_refused_before_reading_items():
    from hypermesh.consensus.ledger_service import MAX_BATCH, MalformedBatch, decode_batch
    with pytest.raises(MalformedBatch, match="at most"):
        decode_batch((MAX_BATCH + 1).to_bytes(2, "big"))


def test_a_block_reuses_the_mempool_s_decoded_transactions_and_decodes_the_rest_the_same_way():
    chain = Chain(make_genesis())
    alice, bob = USER_IDS[0], USER_IDS[1]
    held = chain.tx(alice, Transfer(key(bob), 5))
    other = chain.tx(bob, Transfer(key(alice), 7))
    chain.submit(held, other)
    value = chain.ledger.propose(1)
    mempool = {held.tx_id(): held}
    decoded = decode_block(value, mempool)
    assert decoded == decode_block(value)
    assert decoded.transactions[[tx.tx_id() for tx in decoded.transactions].index(held.tx_id())] is held
    with pytest.raises(InvalidBlock):
        decode_block(value + b"\x00", mempool)


def test_the_last_decided_block_is_kept_decoded_for_the_decision_s_listeners():
    chain = Chain(make_genesis())
    assert chain.ledger.last_block is None
    chain.run(chain.tx(USER_IDS[0], Transfer(key(USER_IDS[1]), 3)))
    assert chain.ledger.last_block == decode_block(chain.commits[-1].value)
    assert chain.ledger.last_block.height == chain.ledger.state.height
