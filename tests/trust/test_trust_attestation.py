"""Signed attestations: the codec and the gate each refuse bad reviews with a clear reason."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypermesh.transport.identity import Identity, PeerId
from hypermesh.trust.attestation import (
    MAX_ATTESTATION_SIZE,
    SIGNING_DOMAIN,
    Attestation,
    AttestationError,
    AttestationGate,
    GateConfig,
    decode_attestation,
    sign_attestation,
)

ISSUER = Identity.from_seed(b"issuer")
SUBJECT = Identity.from_seed(b"subject").peer_id
NOW = 1_800_000_000.0


def review(sequence=1, issued_at=NOW, issuer=ISSUER, subject=SUBJECT, good=9, bad=1):
    return sign_attestation(issuer, subject, good, bad, int(issued_at * 1000), sequence)


def test_round_trip_keeps_every_field_and_verifies():
    attestation = review()
    decoded = decode_attestation(attestation.encode())
    assert decoded == attestation
    assert decoded.satisfaction == pytest.approx(10 / 12)


def test_forged_signature_is_refused():
    data = bytearray(review().encode())
    data[-1] ^= 1
    with pytest.raises(AttestationError, match="signature does not verify"):
        decode_attestation(bytes(data))


def test_altered_counts_are_refused():
    attestation = review(good=1, bad=9)
    data = bytearray(attestation.encode())
    body_end = len(data) - 64
    data[body_end - 24 : body_end - 20] = (9999).to_bytes(4, "big")  # good count
    with pytest.raises(AttestationError, match="signature"):
        decode_attestation(bytes(data))


def test_review_signed_by_someone_else_is_refused():
    genuine = review()
    impostor = Identity.from_seed(b"impostor")
    forged = sign_attestation(impostor, SUBJECT, 9, 1, genuine.issued_at_ms, 1)
    # Claim the genuine issuer but keep the impostor's signature.
    data = genuine.body() + forged.signature
    with pytest.raises(AttestationError, match="signature"):
        decode_attestation(data)


def test_oversized_attestation_is_refused_before_parsing():
    with pytest.raises(AttestationError, match="more than"):
        decode_attestation(review().encode() + b"\0" * MAX_ATTESTATION_SIZE)


def test_review_about_oneself_is_refused_at_signing_and_decoding():
    with pytest.raises(AttestationError, match="own issuer"):
        review(subject=ISSUER.peer_id)
    body = Attestation(ISSUER.peer_id, ISSUER.peer_id, 9, 0, int(NOW * 1000), 1).body()
    with pytest.raises(AttestationError, match="own issuer"):
        decode_attestation(body + ISSUER.sign(SIGNING_DOMAIN + body))


def test_sha256_issuer_without_a_key_cannot_attest():
    genuine = review()
    keyless = PeerId(bytes([0x12, 32]) + bytes(32))
    data = genuine.body().replace(ISSUER.peer_id.multihash, keyless.multihash, 1)
    data = data[:4] + bytes([len(keyless.multihash)]) + data[5:]
    with pytest.raises(AttestationError):
        decode_attestation(data + genuine.signature)


def test_gate_refuses_reviews_from_the_future():
    gate = AttestationGate()
    with pytest.raises(AttestationError, match="in the future"):
        gate.admit(review(issued_at=NOW + 3600), SUBJECT, NOW)


def test_gate_refuses_reviews_older_than_the_limit():
    gate = AttestationGate(GateConfig(max_age=3600))
    with pytest.raises(AttestationError, match="old"):
        gate.admit(review(issued_at=NOW - 7200), SUBJECT, NOW)


def test_gate_refuses_a_replayed_review_and_a_superseded_one():
    gate = AttestationGate()
    gate.admit(review(sequence=5), SUBJECT, NOW)
    with pytest.raises(AttestationError, match="replayed"):
        gate.admit(review(sequence=5), SUBJECT, NOW)
    with pytest.raises(AttestationError, match="replayed or superseded"):
        gate.admit(review(sequence=4), SUBJECT, NOW)
    gate.admit(review(sequence=6), SUBJECT, NOW)


def test_replay_protection_survives_a_restart_through_restore():
    gate = AttestationGate()
    gate.restore(ISSUER.peer_id, SUBJECT, 7)
    with pytest.raises(AttestationError, match="replayed"):
        gate.admit(review(sequence=7), SUBJECT, NOW)


def test_gate_rate_limits_each_sender():
    gate = AttestationGate(GateConfig(burst=3, rate=1.0))
    sender = Identity.from_seed(b"chatty").peer_id
    for sequence in range(1, 4):
        gate.admit(review(sequence=sequence), sender, NOW)
    with pytest.raises(AttestationError, match="over its attestation rate"):
        gate.admit(review(sequence=4), sender, NOW)
    gate.admit(review(sequence=5), sender, NOW + 1.0)  # one token back after a second
    gate.admit(review(sequence=6, subject=Identity.from_seed(b"x").peer_id), SUBJECT, NOW)  # others unaffected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=MAX_ATTESTATION_SIZE + 8))
def test_decoder_refuses_arbitrary_bytes_with_attestation_error_only(data):
    try:
        decode_attestation(data)
    except AttestationError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=180), st.integers(min_value=0, max_value=255))
def test_decoder_refuses_every_single_byte_change(position, value):
    data = bytearray(review().encode())
    position %= len(data)
    if data[position] == value:
        return
    data[position] = value
    with pytest.raises(AttestationError):
        decode_attestation(bytes(data))
