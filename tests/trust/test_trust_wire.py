"""The /hm/trust/1.0.0 codec: bounded, strict, and fuzzed."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypermesh.transport.identity import Identity
from hypermesh.trust.wire import (
    MAX_ATTESTATIONS,
    MAX_MESSAGE_BYTES,
    Answer,
    Ask,
    Push,
    TrustProtocolViolation,
    decode_message,
    encode_answer,
    encode_ask,
    encode_push,
)

SUBJECT = Identity.from_seed(b"subject").peer_id


def test_each_message_round_trips():
    assert decode_message(encode_push([b"a" * 10, b"b" * 20])) == Push((b"a" * 10, b"b" * 20))
    assert decode_message(encode_ask(SUBJECT)) == Ask(SUBJECT)
    assert decode_message(encode_answer(3, 1)) == Answer(3, 1)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"\x09", "unknown message kind"),
        (bytes([1, MAX_ATTESTATIONS + 1]), "exceeds"),
        (bytes([1, 1, 0, 5, 1, 2]), "out of bounds"),
        (bytes([1, 1, 0, 1, 7, 7]), "trailing"),
        (bytes([2]), "no valid peer ID"),
        (bytes([2, 0x12, 3, 1, 2, 3]), "ask:"),
        (bytes([3, 1]), "3 bytes"),
        (bytes([1]) + bytes(MAX_MESSAGE_BYTES), "exceeds"),
    ],
)
def test_malformed_messages_are_refused_with_the_reason(data, reason):
    with pytest.raises(TrustProtocolViolation, match=reason):
        decode_message(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_decoder_raises_only_its_protocol_violation(data):
    try:
        decode_message(data)
    except TrustProtocolViolation:
        pass
