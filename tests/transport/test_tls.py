"""libp2p TLS certificates: generation and every verification rule."""

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from hypermesh.transport.errors import CertificateError
from hypermesh.transport.identity import Identity
from hypermesh.transport.tls import (
    LIBP2P_EXTENSION_OID,
    SIGNATURE_PREFIX,
    decode_signed_key,
    encode_signed_key,
    make_certificate,
    verify_certificate_chain,
)

NOW = datetime.datetime.now(datetime.timezone.utc)


def certificate_with(identity, signed_key=None, extra_critical=False, not_after=None, cert_key=None):
    cert_key = cert_key or ec.generate_private_key(ec.SECP256R1())
    spki = cert_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if signed_key is None:
        signed_key = encode_signed_key(identity.public_key_proto, identity.sign(SIGNATURE_PREFIX + spki))
    name = x509.Name([])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(cert_key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - datetime.timedelta(hours=1))
        .not_valid_after(not_after or NOW + datetime.timedelta(days=1))
        .add_extension(x509.UnrecognizedExtension(LIBP2P_EXTENSION_OID, signed_key), critical=True)
    )
    if extra_critical:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4.5"), b"\x05\x00"), critical=True
        )
    return builder.sign(cert_key, hashes.SHA256())


def test_generated_certificate_proves_the_host_peer_id():
    identity = Identity.generate()
    certificate, _ = make_certificate(identity)
    assert verify_certificate_chain([certificate]) == identity.peer_id


def test_certificate_key_signed_by_another_host_key_is_refused():
    alice, mallory = Identity.generate(), Identity.generate()
    cert_key = ec.generate_private_key(ec.SECP256R1())
    other_spki = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # Alice's key, but the signature covers a different certificate key.
    forged = encode_signed_key(alice.public_key_proto, alice.sign(SIGNATURE_PREFIX + other_spki))
    with pytest.raises(CertificateError, match="does not verify"):
        verify_certificate_chain([certificate_with(alice, forged, cert_key=cert_key)])
    # Mallory's signature claiming to be Alice's key.
    spki = cert_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claimed = encode_signed_key(alice.public_key_proto, mallory.sign(SIGNATURE_PREFIX + spki))
    with pytest.raises(CertificateError, match="does not verify"):
        verify_certificate_chain([certificate_with(alice, claimed, cert_key=cert_key)])


def test_unknown_critical_extension_is_refused():
    with pytest.raises(CertificateError, match="unknown critical extension"):
        verify_certificate_chain([certificate_with(Identity.generate(), extra_critical=True)])


def test_expired_certificate_is_refused():
    certificate = certificate_with(Identity.generate(), not_after=NOW - datetime.timedelta(minutes=1))
    with pytest.raises(CertificateError, match="not valid now"):
        verify_certificate_chain([certificate])


def test_chain_must_hold_exactly_one_certificate():
    certificate, _ = make_certificate(Identity.generate())
    with pytest.raises(CertificateError, match="exactly one"):
        verify_certificate_chain([certificate, certificate])
    with pytest.raises(CertificateError, match="exactly one"):
        verify_certificate_chain([])


def test_signed_key_round_trips_through_der():
    assert decode_signed_key(encode_signed_key(b"k" * 300, b"s" * 64)) == (b"k" * 300, b"s" * 64)


@given(st.binary(max_size=200))
def test_signed_key_decoder_rejects_garbage_cleanly(data):
    try:
        decode_signed_key(data)
    except CertificateError:
        pass
