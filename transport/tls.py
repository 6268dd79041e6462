"""libp2p TLS 1.3 handshake certificates (libp2p/specs tls/tls.md).

Each side presents a self-signed certificate for an ephemeral key, carrying
the critical extension 1.3.6.1.4.1.53594.1.1 whose value is
``SignedKey ::= SEQUENCE { publicKey OCTET STRING, signature OCTET STRING }``:
the host's libp2p public key and its signature over
``"libp2p-tls-handshake:" || SubjectPublicKeyInfo(certificate key)``.
Verifying that binds the TLS session to the peer ID.
"""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, padding
from cryptography.x509.oid import ExtensionOID, NameOID

from .errors import CertificateError
from .identity import Identity, IdentityError, PeerId, verify_signature

LIBP2P_EXTENSION_OID = x509.ObjectIdentifier("1.3.6.1.4.1.53594.1.1")
SIGNATURE_PREFIX = b"libp2p-tls-handshake:"
ALPN = "libp2p"
# Backdated so that a peer whose clock is up to an hour fast still accepts us.
CLOCK_SKEW_ALLOWANCE = datetime.timedelta(hours=1)
CERTIFICATE_LIFETIME = datetime.timedelta(days=365)
# Critical extensions a libp2p certificate may legitimately carry besides ours.
ALLOWED_CRITICAL_EXTENSIONS = {
    LIBP2P_EXTENSION_OID,
    ExtensionOID.BASIC_CONSTRAINTS,
    ExtensionOID.KEY_USAGE,
    ExtensionOID.EXTENDED_KEY_USAGE,
}
# A SignedKey holds a public key (≤ 2 KB even for RSA) and a signature.
MAX_SIGNED_KEY_LENGTH = 4096


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der_tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(value)) + value


def encode_signed_key(public_key_proto: bytes, signature: bytes) -> bytes:
    return _der_tlv(0x30, _der_tlv(0x04, public_key_proto) + _der_tlv(0x04, signature))


def _read_der_tlv(data: bytes, offset: int, expected_tag: int) -> tuple[bytes, int]:
    """Strict DER: definite, minimal lengths. Returns (value, next offset)."""
    if offset + 2 > len(data) or data[offset] != expected_tag:
        raise CertificateError("libp2p extension is not a DER SignedKey")
    first = data[offset + 1]
    position = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 2 or position + count > len(data):
            raise CertificateError("libp2p extension has a bad DER length")
        length = int.from_bytes(data[position : position + count], "big")
        if length < 0x80 or (count == 2 and length < 0x100):
            raise CertificateError("libp2p extension DER length is not minimal")
        position += count
    end = position + length
    if end > len(data):
        raise CertificateError("libp2p extension is truncated")
    return data[position:end], end


def decode_signed_key(data: bytes) -> tuple[bytes, bytes]:
    if len(data) > MAX_SIGNED_KEY_LENGTH:
        raise CertificateError("libp2p extension is too large")
    body, end = _read_der_tlv(data, 0, 0x30)
    if end != len(data):
        raise CertificateError("trailing bytes after SignedKey")
    public_key, position = _read_der_tlv(body, 0, 0x04)
    signature, position = _read_der_tlv(body, position, 0x04)
    if position != len(body):
        raise CertificateError("trailing bytes inside SignedKey")
    return public_key, signature


def make_certificate(identity: Identity, now: datetime.datetime | None = None):
    """A fresh ephemeral P-256 key and a certificate binding it to ``identity``.

    Returns ``(certificate, private_key)`` ready for aioquic's configuration.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    cert_key = ec.generate_private_key(ec.SECP256R1())
    spki = cert_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signed_key = encode_signed_key(identity.public_key_proto, identity.sign(SIGNATURE_PREFIX + spki))
    # The subject carries nothing the peer relies on; a random serial keeps
    # certificates distinct, as x509 expects.
    name = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, str(identity.peer_id))])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(cert_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
        .not_valid_after(now + CERTIFICATE_LIFETIME)
        .add_extension(x509.UnrecognizedExtension(LIBP2P_EXTENSION_OID, signed_key), critical=True)
        .sign(cert_key, hashes.SHA256())
    )
    return certificate, cert_key


def _verify_self_signature(certificate: x509.Certificate) -> None:
    public_key = certificate.public_key()
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(
                certificate.signature,
                certificate.tbs_certificate_bytes,
                ec.ECDSA(certificate.signature_hash_algorithm),
            )
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(certificate.signature, certificate.tbs_certificate_bytes)
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(
                certificate.signature,
                certificate.tbs_certificate_bytes,
                padding.PKCS1v15(),
                certificate.signature_hash_algorithm,
            )
        else:
            raise CertificateError(f"unsupported certificate key type {type(public_key).__name__}")
    except InvalidSignature:
        raise CertificateError("certificate self-signature does not verify") from None
    except Exception as exc:
        if isinstance(exc, CertificateError):
            raise
        raise CertificateError(f"certificate self-signature cannot be checked: {exc}") from None


def verify_certificate_chain(
    chain: list[x509.Certificate], now: datetime.datetime | None = None
) -> PeerId:
    """Verify a peer's libp2p certificate; return the peer ID it proves.

    Raises :class:`CertificateError` naming the first check that failed.
    """
    if len(chain) != 1:
        raise CertificateError(f"expected exactly one certificate, got {len(chain)}")
    certificate = chain[0]
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise CertificateError(
            f"certificate is not valid now (valid {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} "
            f"to {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC)"
        )
    try:
        extensions = list(certificate.extensions)
    except (ValueError, x509.DuplicateExtension) as exc:
        raise CertificateError(f"certificate extensions are malformed: {exc}") from None
    signed_key_der = None
    for extension in extensions:
        if extension.critical and extension.oid not in ALLOWED_CRITICAL_EXTENSIONS:
            raise CertificateError(f"certificate has an unknown critical extension {extension.oid.dotted_string}")
        if extension.oid == LIBP2P_EXTENSION_OID:
            signed_key_der = extension.value.value
    if signed_key_der is None:
        raise CertificateError("certificate lacks the libp2p public key extension")
    _verify_self_signature(certificate)
    public_key_proto, signature = decode_signed_key(signed_key_der)
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        valid = verify_signature(public_key_proto, SIGNATURE_PREFIX + spki, signature)
    except IdentityError as exc:
        raise CertificateError(f"libp2p extension carries a bad host key: {exc}") from None
    if not valid:
        raise CertificateError("host key signature over the certificate key does not verify")
    return PeerId.from_public_key(public_key_proto)
