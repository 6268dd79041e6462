"""``/ipfs/kad/1.0.0`` messages: typed values, strict decoding, bounded sizes.

The wire format is the libp2p kad-dht protobuf (kad.proto), each message
varint length-prefixed on its stream. Decoding is the trust boundary: every
peer ID must decode, addresses that are not well-formed multiaddrs (or use
protocols we do not know) are dropped one by one, a peer left without any is
dropped, and the number of peers and addresses we read from one response is
capped, so that a peer cannot make us do unbounded work or fill our tables
with one answer.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError
from multiaddr import Multiaddr

from hypermesh.transport.identity import IdentityError, PeerId

from . import kad_pb2

PROTOCOL_ID = "/ipfs/kad/1.0.0"

# go-libp2p-kad-dht reads messages of up to 4 MiB, but nothing legitimate comes
# close: 20 closer plus 20 provider peers with 32 addresses each is ~60 KiB, and
# our value records are capped at MAX_RECORD_VALUE_SIZE. 256 KiB leaves room for
# verbose peers while bounding what one message can cost us to buffer and parse.
MAX_MESSAGE_SIZE = 256 * 1024
# A value record (service-record set, public key) must fit well inside a message.
MAX_RECORD_VALUE_SIZE = 64 * 1024
# Record keys: /hm/service/<name> and /pk/<multihash> are far below this.
MAX_KEY_SIZE = 512
# Peers we read from one response list; any beyond are ignored unread. k = 20
# is all a correct peer ever sends; the slack tolerates implementations that
# return a few more.
MAX_PEERS_PER_LIST = 32
# Addresses kept per peer. kubo peers advertise 10-20 (TCP, QUIC, WebTransport,
# IPv4 and IPv6); more is noise or an attempt to make us dial junk.
MAX_ADDRS_PER_PEER = 32
MAX_ADDR_SIZE = 256
MAX_PEER_ID_SIZE = 64


class DhtProtocolError(Exception):
    """A peer sent a message that violates the protocol or our bounds."""


class MessageType(enum.IntEnum):
    PUT_VALUE = 0
    GET_VALUE = 1
    ADD_PROVIDER = 2
    GET_PROVIDERS = 3
    FIND_NODE = 4
    PING = 5


# Requests with no effect but their answer: the same request received twice
# (a replayed 0-RTT flight) changes nothing. They may be sent and answered
# in 0-RTT early data; PUT_VALUE and ADD_PROVIDER (writes) may not.
REPLAY_SAFE_TYPES = frozenset({MessageType.GET_VALUE, MessageType.GET_PROVIDERS, MessageType.FIND_NODE, MessageType.PING})


class ConnectionType(enum.IntEnum):
    NOT_CONNECTED = 0
    CONNECTED = 1
    CAN_CONNECT = 2
    CANNOT_CONNECT = 3


@dataclass(frozen=True, slots=True)
class PeerInfo:
    peer_id: PeerId
    addrs: tuple[bytes, ...] = ()
    connection: ConnectionType = ConnectionType.NOT_CONNECTED


@dataclass(frozen=True, slots=True)
class Record:
    key: bytes
    value: bytes
    time_received: str = ""


@dataclass(frozen=True, slots=True)
class KadMessage:
    type: MessageType
    key: bytes = b""
    record: Record | None = None
    closer_peers: tuple[PeerInfo, ...] = field(default=())
    provider_peers: tuple[PeerInfo, ...] = field(default=())


# Every answer repeats addresses we have seen (each FIND_NODE answer carries
# 20 peers), and parsing one twice with the multiaddr package costs ~50 µs:
# remember the verdicts on recent ones.
@functools.lru_cache(maxsize=8192)
def _is_canonical_multiaddr(raw: bytes) -> bool:
    # The multiaddr package accepts some truncated encodings, so the text form
    # must also encode back to exactly the same bytes.
    try:
        return Multiaddr(str(Multiaddr(raw))).to_bytes() == raw
    except Exception:  # the parser raises assorted types on junk input
        return False


def usable_multiaddrs(offered) -> tuple[bytes, ...]:
    """The well-formed multiaddrs of ``offered``, in order; the others are dropped one by one.

    Real peers advertise transports and protocol codes newer than our
    multiaddr table (or mangled ones): one such address must cost only itself.
    """
    return tuple(raw for raw in map(bytes, offered) if 0 < len(raw) <= MAX_ADDR_SIZE and _is_canonical_multiaddr(raw))


def _decode_peer(pb_peer) -> PeerInfo | None:
    """One peer of a list; None when it came with addresses and none is usable."""
    if len(pb_peer.id) > MAX_PEER_ID_SIZE:
        raise DhtProtocolError("peer ID too long")
    try:
        peer_id = PeerId.from_bytes(pb_peer.id)
    except IdentityError as exc:
        raise DhtProtocolError(f"bad peer ID: {exc}") from None
    offered = pb_peer.addrs[:MAX_ADDRS_PER_PEER]
    addrs = usable_multiaddrs(offered)
    if offered and not addrs:
        return None
    try:
        connection = ConnectionType(pb_peer.connection)
    except ValueError:
        connection = ConnectionType.NOT_CONNECTED
    return PeerInfo(peer_id, addrs, connection)


def _decode_peer_list(pb_peers) -> tuple[PeerInfo, ...]:
    peers = []
    seen = set()
    for pb_peer in pb_peers[:MAX_PEERS_PER_LIST]:
        info = _decode_peer(pb_peer)
        if info is not None and info.peer_id not in seen:
            seen.add(info.peer_id)
            peers.append(info)
    return tuple(peers)


def decode_message(data: bytes) -> KadMessage:
    """Parse and validate one message body (without its length prefix)."""
    if len(data) > MAX_MESSAGE_SIZE:
        raise DhtProtocolError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    pb = kad_pb2.Message()
    try:
        pb.ParseFromString(data)
    except (DecodeError, RecursionError, ValueError) as exc:
        raise DhtProtocolError(f"malformed protobuf: {exc}") from None
    try:
        message_type = MessageType(pb.type)
    except ValueError:
        raise DhtProtocolError(f"unknown message type {pb.type}") from None
    if len(pb.key) > MAX_KEY_SIZE:
        raise DhtProtocolError(f"key of {len(pb.key)} bytes exceeds {MAX_KEY_SIZE}")
    record = None
    if pb.HasField("record"):
        if len(pb.record.key) > MAX_KEY_SIZE or len(pb.record.value) > MAX_RECORD_VALUE_SIZE:
            raise DhtProtocolError("record key or value too large")
        record = Record(bytes(pb.record.key), bytes(pb.record.value), pb.record.timeReceived[:64])
    return KadMessage(
        type=message_type,
        key=bytes(pb.key),
        record=record,
        closer_peers=_decode_peer_list(pb.closerPeers),
        provider_peers=_decode_peer_list(pb.providerPeers),
    )


def _fill_peer(pb_peer, info: PeerInfo) -> None:
    pb_peer.id = info.peer_id.multihash
    pb_peer.addrs.extend(info.addrs[:MAX_ADDRS_PER_PEER])
    pb_peer.connection = int(info.connection)


def encode_message(message: KadMessage) -> bytes:
    pb = kad_pb2.Message()
    pb.type = int(message.type)
    if message.key:
        pb.key = message.key
    if message.record is not None:
        pb.record.key = message.record.key
        pb.record.value = message.record.value
        if message.record.time_received:
            pb.record.timeReceived = message.record.time_received
    for info in message.closer_peers:
        _fill_peer(pb.closerPeers.add(), info)
    for info in message.provider_peers:
        _fill_peer(pb.providerPeers.add(), info)
    data = pb.SerializeToString()
    if len(data) > MAX_MESSAGE_SIZE:
        raise DhtProtocolError(f"refusing to send a message of {len(data)} bytes")
    return data
