"""Varints, peer IDs, multiaddrs and multistream-select: the small codecs."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hypermesh.transport.identity import (
    Identity,
    IdentityError,
    PeerId,
    decode_public_key,
    encode_public_key,
    verify_signature,
)
from hypermesh.transport.multiaddrs import MultiaddrError, parse_quic_address
from hypermesh.transport.multistream import (
    HEADER,
    MAX_MESSAGE_LENGTH,
    Negotiator,
    encode_message,
)
from hypermesh.transport.errors import NegotiationError, ProtocolError
from hypermesh.transport.varint import VarintError, decode_uvarint, encode_uvarint


@given(st.integers(min_value=0, max_value=(1 << 63) - 1))
def test_varint_round_trips(value):
    encoded = encode_uvarint(value)
    assert decode_uvarint(encoded) == (value, len(encoded))


@given(st.binary(max_size=12))
def test_varint_decoder_never_raises_foreign_errors(data):
    try:
        decode_uvarint(data)
    except VarintError:
        pass


def test_varint_rejects_overlong_and_non_minimal():
    with pytest.raises(VarintError):
        decode_uvarint(b"\xff" * 10)
    with pytest.raises(VarintError):
        decode_uvarint(b"\x80\x00")
    assert decode_uvarint(b"\x80") is None


def test_ed25519_peer_id_is_inline_and_round_trips():
    identity = Identity.from_seed(b"alice")
    text = str(identity.peer_id)
    assert text.startswith("12D3KooW") and len(text) == 52
    assert PeerId.from_base58(text) == identity.peer_id
    assert identity.peer_id.inlined_public_key() == identity.public_key_proto


def test_signatures_verify_only_for_the_signed_message():
    identity = Identity.from_seed(b"bob")
    signature = identity.sign(b"message")
    assert verify_signature(identity.public_key_proto, b"message", signature)
    assert not verify_signature(identity.public_key_proto, b"massage", signature)


@given(st.binary(max_size=64))
def test_peer_id_decoder_rejects_garbage_cleanly(raw):
    try:
        PeerId.from_bytes(raw)
    except IdentityError:
        pass


@given(st.binary(max_size=80))
def test_public_key_decoder_rejects_garbage_cleanly(raw):
    try:
        decode_public_key(raw)
    except IdentityError:
        pass


def test_public_key_encoding_is_deterministic():
    assert encode_public_key(1, b"\x01" * 32) == b"\x08\x01\x12\x20" + b"\x01" * 32


def test_quic_multiaddr_parsing():
    peer = Identity.from_seed(b"x").peer_id
    address = parse_quic_address(f"/ip6/::1/udp/4001/quic-v1/p2p/{peer}")
    assert (address.host, address.port, address.kind, address.peer_id) == ("::1", 4001, "ip6", peer)
    assert parse_quic_address("/dns/example.org/udp/1/quic-v1").is_dns
    for bad in ["/ip4/1.2.3.4/tcp/1", "/ip6/zz/udp/1/quic-v1", "/ip4/1.2.3.4/udp/1/quic", "nonsense", "/ip4/1.2.3.4/udp/1/quic-v1/p2p/notapeer"]:
        with pytest.raises(MultiaddrError):
            parse_quic_address(bad)


def negotiate(dialer: Negotiator, listener: Negotiator):
    """Run a negotiation to completion in memory; bounded in rounds."""
    to_listener = dialer.initial_bytes()
    to_dialer = listener.initial_bytes()
    for _ in range(10):
        if to_listener:
            to_dialer += listener.receive_data(to_listener)
            to_listener = b""
        if to_dialer and dialer.result is None:
            to_listener += dialer.receive_data(to_dialer)
            to_dialer = b""
        if dialer.result and listener.result:
            return dialer.result, listener.result
    raise AssertionError("negotiation did not finish")


def test_multistream_picks_the_first_supported_protocol():
    dialer = Negotiator.dialer(["/a/2", "/a/1"])
    listener = Negotiator.listener({"/a/1"})
    ours, theirs = negotiate(dialer, listener)
    assert ours.protocol == theirs.protocol == "/a/1"


def test_multistream_hands_pipelined_data_to_the_protocol():
    listener = Negotiator.listener({"/echo"})
    listener.receive_data(encode_message(HEADER) + encode_message("/echo") + b"payload")
    assert listener.result.protocol == "/echo"
    assert listener.result.leftover == b"payload"


def test_multistream_fails_when_nothing_matches():
    dialer = Negotiator.dialer(["/x"])
    listener = Negotiator.listener({"/y"})
    with pytest.raises(NegotiationError):
        negotiate(dialer, listener)


def test_multistream_refuses_a_one_megabyte_protocol_name():
    listener = Negotiator.listener({"/y"})
    huge = encode_uvarint(1 << 20) + b"/" * 64
    with pytest.raises(ProtocolError, match="exceeds"):
        listener.receive_data(encode_message(HEADER) + huge)
    with pytest.raises(ValueError):
        Negotiator.dialer(["/" + "x" * MAX_MESSAGE_LENGTH])


def test_multistream_cuts_off_endless_proposals():
    listener = Negotiator.listener({"/y"})
    data = encode_message(HEADER) + b"".join(encode_message(f"/nope/{i}") for i in range(100))
    with pytest.raises(NegotiationError):
        listener.receive_data(data)


@given(st.binary(max_size=256))
def test_multistream_listener_survives_arbitrary_bytes(data):
    listener = Negotiator.listener({"/y"})
    try:
        listener.receive_data(data)
    except ProtocolError:
        pass


@pytest.mark.parametrize("text", [
    "/ip6/::1/udp/4001/quic-v1", "/ip4/10.1.2.3/udp/0/quic-v1", "/ip6/2001:db8::7/udp/65535/quic-v1",
])
def test_fast_quic_multiaddr_codec_agrees_with_the_multiaddr_library(text):
    import multiaddr

    from hypermesh.transport.multiaddrs import multiaddr_text, quic_address_bytes

    address = parse_quic_address(text)
    raw = quic_address_bytes(address.host, address.port)
    assert raw == multiaddr.Multiaddr(text).to_bytes()
    assert multiaddr_text(raw) == str(multiaddr.Multiaddr(raw)) == text


def test_fast_parser_falls_back_for_unusual_forms():
    peer = Identity.from_seed(b"y").peer_id
    for text in [f"/ip4/1.2.3.4/udp/1/quic-v1/p2p/{peer}", "/dns4/example.org/udp/1/quic-v1"]:
        assert parse_quic_address(text).port == 1
    for bad in ["/ip4/1.2.3.4/udp/99999/quic-v1", "/ip4/1.2.3/udp/1/quic-v1", "/ip6/::1/udp/-1/quic-v1"]:
        with pytest.raises(MultiaddrError):
            parse_quic_address(bad)
