"""Confidential payloads: sealed to chosen recipients (X25519 + ML-KEM-768), ordered by validators unread."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypermesh.consensus.ledger import decode_block
from hypermesh.consensus.ledger_tx import MalformedTransaction, SealedNote, decode_transaction
from hypermesh.consensus.sealed import (
    MAX_RECIPIENTS,
    MalformedSealedPayload,
    NotARecipient,
    SealedPayloadError,
    SealingKey,
    TamperedPayload,
    decode_sealed,
    open_sealed,
    seal,
)
from ledger_testkit import USER_IDS, Chain, key, make_genesis

ALICE_KEY, BOB_KEY, EVE_KEY = (SealingKey.from_seed(b"sealing-%d" % i) for i in range(3))
SECRET = b"input of task 7: the model weights URL and the API token"


def test_every_chosen_recipient_opens_the_payload_and_nobody_else_can():
    sealed = seal(SECRET, [ALICE_KEY.public, BOB_KEY.public], b"context")
    assert SECRET not in sealed
    assert open_sealed(sealed, ALICE_KEY, b"context") == SECRET
    assert open_sealed(sealed, BOB_KEY, b"context") == SECRET
    with pytest.raises(NotARecipient):
        open_sealed(sealed, EVE_KEY, b"context")


def test_a_sealing_key_from_a_seed_is_the_same_key():
    assert SealingKey.from_seed(b"sealing-0").public == ALICE_KEY.public


@pytest.mark.parametrize("where", ["ciphertext", "tag", "wrapped_key", "kem_ciphertext", "ephemeral", "recipient_list"])
def test_a_sealed_payload_with_a_tampered_byte_is_rejected(where):
    sealed = bytearray(seal(SECRET, [ALICE_KEY.public, BOB_KEY.public]))
    payload = decode_sealed(bytes(sealed))
    header = len(payload.header())
    entry = 2 + 32  # Alice's entry is first or second; tamper with both entries' bytes to be sure
    offsets = {
        "ciphertext": header + 4 + 3,
        "tag": len(sealed) - 1,
        "wrapped_key": entry + 32 + 1088 + 5,
        "kem_ciphertext": entry + 32 + 100,
        "ephemeral": 1 + 7,
        "recipient_list": entry + 1168 + 32 + 50,  # the other recipient's entry: covered by the payload's AEAD
    }
    offset = offsets[where]
    sealed[offset] ^= 0x01
    if where in ("wrapped_key", "kem_ciphertext"):
        sealed[offset + 1168] ^= 0x01
    with pytest.raises(TamperedPayload):
        open_sealed(bytes(sealed), ALICE_KEY)


def test_other_associated_data_is_rejected():
    sealed = seal(SECRET, [ALICE_KEY.public], b"tx-1")
    with pytest.raises(TamperedPayload):
        open_sealed(sealed, ALICE_KEY, b"tx-2")


def test_malformed_sealed_payloads_are_refused_by_form():
    sealed = seal(SECRET, [ALICE_KEY.public])
    for bad in (b"", b"\x02" + sealed[1:], sealed[:-1], sealed + b"\x00", sealed[:33] + b"\x00" + sealed[34:]):
        with pytest.raises(MalformedSealedPayload):
            decode_sealed(bad)
    with pytest.raises(MalformedSealedPayload):
        seal(SECRET, [ALICE_KEY.public] * (MAX_RECIPIENTS + 1))
    with pytest.raises(MalformedSealedPayload):  # the same recipient twice
        decode_sealed(seal(SECRET, [ALICE_KEY.public, ALICE_KEY.public]))


def test_validators_order_a_sealed_note_they_cannot_read_and_its_recipient_reads_it_from_the_block():
    chain = Chain(make_genesis(), nodes=2)
    sender = USER_IDS[0]
    root = chain.ledger.state.root()
    tx = chain.tx(sender, SealedNote(seal(SECRET, [BOB_KEY.public])))
    chain.run(tx)
    block = decode_block(chain.commits[-1].value)
    assert block.transactions == (tx,)
    assert SECRET not in chain.commits[-1].value
    assert open_sealed(block.transactions[0].body.payload, BOB_KEY) == SECRET
    state = chain.ledger.state
    assert state.nonce(key(sender)) == 1 and state.total_units() == chain.genesis.supply()
    assert chain.ledgers[1].state.root() == state.root() != root


def test_a_transaction_with_a_malformed_sealed_note_is_refused_by_the_decoder():
    tx = Chain(make_genesis()).tx(USER_IDS[0], SealedNote(b"\x01" + b"\x00" * 40))
    with pytest.raises(MalformedTransaction):
        decode_transaction(tx.encode())


SEALED_FOR_ALICE = seal(SECRET, [ALICE_KEY.public, BOB_KEY.public])


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(SEALED_FOR_ALICE) - 1), st.integers(1, 255), st.integers(0, 3))
def test_any_changed_or_cut_sealed_payload_is_refused_with_a_typed_reason(position, flip, cut):
    changed = bytearray(SEALED_FOR_ALICE)
    changed[position] ^= flip
    data = bytes(changed[:len(changed) - cut])
    with pytest.raises(SealedPayloadError):
        open_sealed(data, ALICE_KEY)
