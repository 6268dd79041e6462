"""libp2p identify, ``/ipfs/id/1.0.0``: who a peer is and what it speaks.

On every new connection we ask the remote for its record and store its
listen addresses and protocols in the peerstore. The record is one
varint-prefixed protobuf sent by the listener, then the stream closes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import trio
from google.protobuf.message import DecodeError

from .errors import ProtocolError, TransportError
from .framing import BufferedReader, FramingError, write_frame
from .identify_pb2 import Identify
from .identity import IdentityError, PeerId
from .multiaddrs import MultiaddrError, multiaddr_text, parse_multiaddr, parse_quic_address, quic_address_bytes

log = logging.getLogger("hypermesh.transport")

PROTOCOL = "/ipfs/id/1.0.0"
PROTOCOL_VERSION = "ipfs/0.1.0"
# go-libp2p caps signed identify records at 8 KiB; allow headroom for many
# listen addresses and protocols, but no more.
MAX_IDENTIFY_SIZE = 64 << 10
IDENTIFY_TIMEOUT = 10.0
IDENTIFY_DELAY = 0.005


@dataclass
class IdentifyRecord:
    peer_id: PeerId
    protocol_version: str
    agent_version: str
    protocols: list[str]
    listen_addrs: list[str]
    observed_addr: str | None
    public_key: bytes = field(repr=False, default=b"")

    def to_json(self) -> dict:
        return {
            "peer_id": str(self.peer_id),
            "protocol_version": self.protocol_version,
            "agent_version": self.agent_version,
            "protocols": self.protocols,
            "listen_addrs": self.listen_addrs,
            "observed_addr": self.observed_addr,
        }


def build_record(host, stream) -> bytes:
    message = Identify(
        protocolVersion=PROTOCOL_VERSION,
        agentVersion=host.config.agent_version,
        publicKey=host.identity.public_key_proto,
        protocols=host.protocols,
    )
    for text in host.listen_addrs():
        message.listenAddrs.append(_to_bytes(text.rsplit("/p2p/", 1)[0]))
    try:
        message.observedAddr = _to_bytes(stream.remote_addr)
    except MultiaddrError:
        pass
    return message.SerializeToString()


def _to_bytes(text: str) -> bytes:
    address = parse_quic_address(text)
    if address.is_dns:
        return parse_multiaddr(text).to_bytes()
    return quic_address_bytes(address.host, address.port)


def decode_record(data: bytes, peer_id: PeerId) -> IdentifyRecord:
    """Decode and check a record: its public key must match the authenticated peer."""
    try:
        message = Identify.FromString(data)
    except DecodeError as exc:
        raise ProtocolError(f"malformed identify record: {exc}") from None
    if message.HasField("publicKey"):
        try:
            if not peer_id.matches_public_key(message.publicKey):
                raise ProtocolError("identify public key does not match the connection's peer")
        except IdentityError as exc:
            raise ProtocolError(f"identify public key invalid: {exc}") from None

    def addr_text(raw: bytes) -> str | None:
        try:
            return multiaddr_text(raw)
        except MultiaddrError:
            return None

    listen = [text for text in (addr_text(raw) for raw in message.listenAddrs) if text]
    return IdentifyRecord(
        peer_id=peer_id,
        protocol_version=message.protocolVersion,
        agent_version=message.agentVersion,
        protocols=list(message.protocols),
        listen_addrs=listen,
        observed_addr=addr_text(message.observedAddr) if message.HasField("observedAddr") else None,
        public_key=message.publicKey,
    )


async def handle_identify(host, stream) -> None:
    await write_frame(stream, build_record(host, stream))


async def identify(host, driver) -> IdentifyRecord:
    """Ask the peer on ``driver`` for its identify record and remember it."""
    stream = await host.open_stream_on(driver, [PROTOCOL])
    try:
        with trio.fail_after(IDENTIFY_TIMEOUT):
            try:
                data = await BufferedReader(stream).read_frame(MAX_IDENTIFY_SIZE)
            except FramingError as exc:
                raise ProtocolError(f"identify from {driver.remote_peer_id}: {exc}") from None
    finally:
        await stream.aclose()
    if data is None:
        raise ProtocolError(f"{driver.remote_peer_id} closed identify without a record")
    record = decode_record(data, driver.remote_peer_id)
    host.peerstore.add_addrs(record.peer_id, record.listen_addrs)
    host.peerstore.set_protocols(record.peer_id, record.protocols)
    host.peerstore.set_agent_version(record.peer_id, record.agent_version)
    for callback in host.on_identified:
        callback(record)
    return record


def install(host) -> None:
    async def handler(stream):
        await handle_identify(host, stream)

    async def identify_new_connection(driver):
        try:
            # Streams that arrived with the handshake (the reason the peer
            # connected) are served before we start our own exchange.
            await trio.sleep(IDENTIFY_DELAY)
            await identify(host, driver)
        except (TransportError, trio.TooSlowError) as exc:
            log.debug("identify of %s failed: %s", driver.remote_peer_id, exc)

    def on_connection(driver):
        host.start_soon(identify_new_connection, driver)

    host.set_stream_handler(PROTOCOL, handler, early_data=True)  # read-only: replaying it changes nothing
    host.on_connection.append(on_connection)
