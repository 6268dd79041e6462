"""A server refuses clients whose libp2p certificate is bad (real QUIC on [::1]).

A missing certificate and a valid certificate for another identity are
covered elsewhere; these are certificates that must not verify at all.
"""

import datetime

import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hypermesh.transport import ping
from hypermesh.transport.errors import HandshakeError
from hypermesh.transport.host import HostConfig, open_host
from hypermesh.transport.identity import KEY_TYPE_ECDSA, Identity, encode_public_key
from hypermesh.transport.tls import SIGNATURE_PREFIX, encode_signed_key

from .test_tls import NOW, certificate_with

V6 = "/ip6/::1/udp/0/quic-v1"
STEP = 10


def spki_of(cert_key):
    return cert_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def bad_extension_signature(identity, cert_key):
    # The host key signs a different certificate key than the one presented.
    other = spki_of(ec.generate_private_key(ec.SECP256R1()))
    signed_key = encode_signed_key(identity.public_key_proto, identity.sign(SIGNATURE_PREFIX + other))
    return certificate_with(identity, signed_key, cert_key=cert_key)


def wrong_key_type(identity, cert_key):
    # An Ed25519 host key and signature labelled as an ECDSA key.
    raw = identity.public_key_proto[-32:]
    signature = identity.sign(SIGNATURE_PREFIX + spki_of(cert_key))
    signed_key = encode_signed_key(encode_public_key(KEY_TYPE_ECDSA, raw), signature)
    return certificate_with(identity, signed_key, cert_key=cert_key)


def expired(identity, cert_key):
    return certificate_with(identity, not_after=NOW - datetime.timedelta(minutes=1), cert_key=cert_key)


@pytest.mark.parametrize("make_bad_certificate", [bad_extension_signature, wrong_key_type, expired])
async def test_server_refuses_a_client_with_a_bad_certificate(make_bad_certificate):
    config = HostConfig(enable_resumption=False)
    async with open_host(Identity.generate(), [V6]) as server, open_host(
        Identity.generate(), [V6], config
    ) as mallory, open_host(Identity.generate(), [V6]) as honest:
        cert_key = ec.generate_private_key(ec.SECP256R1())
        mallory.dialer.configuration.certificate = make_bad_certificate(mallory.identity, cert_key)
        mallory.dialer.configuration.private_key = cert_key
        with trio.fail_after(STEP):
            # The client may count its handshake done before the server has
            # checked its certificate; either way the server must end it.
            try:
                driver = await mallory.connect(server.listen_addrs()[0])
                await driver.closed_event.wait()
            except HandshakeError:
                pass
        assert not server.connections_to(mallory.peer_id)
        assert server.connected_peers() == []
        with trio.fail_after(STEP):
            await honest.connect(server.listen_addrs()[0])
            assert await ping.ping(honest, server.peer_id)
