"""The wire format: round trips, strict validation and hostile input."""

from hypothesis import given, strategies as st
from multiaddr import Multiaddr
import pytest

from dht_multiaddrs import JUNK_ADDRS, REAL_WORLD_ADDRS, UNUSABLE_ADDRS
from hypermesh.dht import kad_pb2
from hypermesh.dht.messages import (
    MAX_ADDRS_PER_PEER,
    MAX_MESSAGE_SIZE,
    MAX_PEERS_PER_LIST,
    DhtProtocolError,
    KadMessage,
    MessageType,
    PeerInfo,
    Record,
    decode_message,
    encode_message,
)
from hypermesh.transport.identity import Identity

PEER = Identity.from_seed(b"peer").peer_id
ADDR = Multiaddr("/ip4/1.2.3.4/udp/4001/quic-v1").to_bytes()


def test_round_trip_every_field():
    message = KadMessage(
        MessageType.GET_PROVIDERS,
        key=b"\x12\x20" + b"k" * 32,
        record=Record(b"/pk/x", b"value", "2024-01-01T00:00:00Z"),
        closer_peers=(PeerInfo(PEER, (ADDR,)),),
        provider_peers=(PeerInfo(PEER, (ADDR,)),),
    )
    assert decode_message(encode_message(message)) == message


def test_interoperable_field_numbers():
    # Field numbers from the libp2p kad-dht spec: a go or rust peer reads these.
    pb = kad_pb2.Message()
    pb.ParseFromString(encode_message(KadMessage(MessageType.FIND_NODE, key=b"abc", closer_peers=(PeerInfo(PEER, (ADDR,)),))))
    assert pb.type == 4 and pb.key == b"abc" and pb.closerPeers[0].id == PEER.multihash
    assert kad_pb2.Message.DESCRIPTOR.fields_by_name["clusterLevelRaw"].number == 10
    assert kad_pb2.Message.DESCRIPTOR.fields_by_name["providerPeers"].number == 9
    assert kad_pb2.Record.DESCRIPTOR.fields_by_name["timeReceived"].number == 5


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xff\xff",  # not protobuf
        b"\x08\x09",  # unknown message type 9
        b"\x12\xff\x7f",  # key length beyond the buffer
        bytes([0x42, 3, 0x0A, 1, 0x00]),  # closer peer with a 1-byte peer ID
    ],
)
def test_malformed_messages_raise_protocol_error(data):
    with pytest.raises(DhtProtocolError):
        decode_message(data)


def test_oversized_message_is_rejected():
    with pytest.raises(DhtProtocolError):
        decode_message(b"\x00" * (MAX_MESSAGE_SIZE + 1))


OTHER_PEER = Identity.from_seed(b"other").peer_id
THIRD_PEER = Identity.from_seed(b"third").peer_id


def test_unusable_addresses_are_dropped_one_by_one_and_the_rest_kept():
    for message_type, field in ((MessageType.FIND_NODE, "closerPeers"), (MessageType.GET_PROVIDERS, "providerPeers")):
        pb = kad_pb2.Message(type=int(message_type))
        mixed = [a for pair in zip(REAL_WORLD_ADDRS, UNUSABLE_ADDRS + [b""] * 2) for a in pair if a]
        getattr(pb, field).add(id=PEER.multihash, addrs=mixed)
        getattr(pb, field).add(id=OTHER_PEER.multihash, addrs=UNUSABLE_ADDRS)  # nothing left: dropped
        getattr(pb, field).add(id=THIRD_PEER.multihash)  # sent without addresses: kept, as before
        peers = getattr(decode_message(pb.SerializeToString()), "closer_peers" if field == "closerPeers" else "provider_peers")
        assert peers == (PeerInfo(PEER, tuple(REAL_WORLD_ADDRS)), PeerInfo(THIRD_PEER, ()))


KNOWN_ADDRS = st.sampled_from(REAL_WORLD_ADDRS + [ADDR])


FUZZ_PEERS = [Identity.from_seed(b"fuzz-%d" % i).peer_id for i in range(8)]


@given(st.lists(st.lists(st.one_of(KNOWN_ADDRS, JUNK_ADDRS), max_size=40), min_size=1, max_size=len(FUZZ_PEERS)))
def test_fuzz_decoder_keeps_exactly_the_usable_addresses(peers):
    pb = kad_pb2.Message(type=4)
    identities = FUZZ_PEERS[: len(peers)]
    for peer_id, addrs in zip(identities, peers):
        pb.closerPeers.add(id=peer_id.multihash, addrs=addrs)
    decoded = {info.peer_id: info.addrs for info in decode_message(pb.SerializeToString()).closer_peers}
    for peer_id, addrs in zip(identities, peers):
        read = addrs[:MAX_ADDRS_PER_PEER]
        usable = tuple(raw for raw in read if raw in REAL_WORLD_ADDRS + [ADDR])
        if read and not usable:
            assert peer_id not in decoded
        else:
            assert decoded[peer_id] == usable


def test_ten_thousand_closer_peers_cost_nothing():
    # The whole answer is far over the size limit: refused before parsing.
    pb = kad_pb2.Message(type=4)
    for i in range(10_000):
        pb.closerPeers.add(id=Identity.from_seed(b"%d" % (i % 50)).peer_id.multihash)
    data = pb.SerializeToString()
    assert len(data) > MAX_MESSAGE_SIZE
    with pytest.raises(DhtProtocolError):
        decode_message(data)


def test_many_closer_peers_within_the_size_limit_are_capped():
    pb = kad_pb2.Message(type=4)
    ids = [Identity.from_seed(b"%d" % i).peer_id for i in range(100)]
    for i in range(5_000):
        pb.closerPeers.add(id=ids[i % 100].multihash)
    message = decode_message(pb.SerializeToString())
    assert len(message.closer_peers) <= MAX_PEERS_PER_LIST


def test_oversized_outbound_message_is_refused():
    peers = tuple(PeerInfo(PEER, (ADDR,) * 32) for _ in range(2000))
    with pytest.raises(DhtProtocolError):
        encode_message(KadMessage(MessageType.FIND_NODE, closer_peers=peers))


@given(st.binary(max_size=2048))
def test_fuzz_arbitrary_bytes_only_raise_protocol_error(data):
    try:
        decode_message(data)
    except DhtProtocolError:
        pass


@given(
    st.integers(min_value=-5, max_value=10),
    st.binary(max_size=64),
    st.lists(st.tuples(st.binary(max_size=48), st.lists(st.binary(max_size=40), max_size=4)), max_size=6),
    st.text(max_size=10),
)
def test_fuzz_structured_protobuf_only_raises_protocol_error(message_type, key, peers, time_received):
    pb = kad_pb2.Message(type=message_type % 6 if message_type >= 0 else 0, key=key)
    pb.record.key = key
    pb.record.timeReceived = time_received
    for peer_id, addrs in peers:
        pb.closerPeers.add(id=peer_id, addrs=addrs)
        pb.providerPeers.add(id=PEER.multihash, addrs=addrs)
    data = pb.SerializeToString()
    if message_type < 0:
        data = data[: len(data) // 2]
    try:
        decode_message(data)
    except DhtProtocolError:
        pass
