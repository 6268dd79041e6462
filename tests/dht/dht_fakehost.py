"""An in-memory host implementing the transport Host contract the DHT driver uses.

Streams are trio memory stream pairs; dialing takes a little (virtual) time
and fails like a real dial when the peer is gone or lacks the protocol.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio
import trio.testing
from multiaddr import Multiaddr

from hypermesh.transport.errors import TransportError
from hypermesh.transport.identity import Identity, PeerId

DIAL_LATENCY = 0.02


class FakeStream:
    def __init__(self, half, remote_peer: PeerId, remote_addr: str, protocol: str):
        self._half = half
        self.remote_peer = remote_peer
        self.remote_addr = remote_addr
        self.protocol = protocol
        self.was_reset = False
        # 0-RTT as a resumed dial's first stream sees it: opened early, and
        # confirmed by the first answer (QUIC's client completes its
        # handshake before it can read the server's answer).
        self.early = False
        self.handshake_confirmed = True

    async def send_all(self, data: bytes) -> None:
        try:
            await self._half.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise TransportError(f"stream broken: {exc}") from None

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            data = await self._half.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise TransportError(f"stream broken: {exc}") from None
        self.handshake_confirmed = self.handshake_confirmed or bool(data)
        return data

    async def wait_for_handshake(self, timeout: float) -> bool:
        await trio.lowlevel.checkpoint()
        return True

    async def send_eof(self) -> None:
        await self._half.send_stream.aclose()

    async def aclose(self) -> None:
        await self._half.aclose()

    async def reset(self) -> None:
        self.was_reset = True
        await self._half.aclose()


@dataclass(frozen=True)
class FakeConnection:
    remote_multiaddr: str


class FakePeerstore:
    def __init__(self, network: "FakeNetwork"):
        self._network = network
        self._addrs: dict[PeerId, list[str]] = {}

    def add_addrs(self, peer_id: PeerId, addrs, ttl: float = 3600.0) -> None:
        known = self._addrs.setdefault(peer_id, [])
        for addr in addrs:
            text = str(Multiaddr(addr))
            if text not in known:
                known.append(text)

    def addrs(self, peer_id: PeerId) -> list[str]:
        return list(self._addrs.get(peer_id, []))

    def protocols(self, peer_id: PeerId) -> set[str]:
        host = self._network.hosts.get(peer_id)
        if self._network.identify_never_finishes:
            return set()
        return set(host.handlers) if host is not None and host.online else set()


class FakeHost:
    def __init__(self, network: "FakeNetwork", seed: bytes, ip: str):
        self.identity = Identity.from_seed(seed)
        self.peer_id = self.identity.peer_id
        self.addr = f"/ip4/{ip}/udp/4001/quic-v1"
        # Where this host's connections are seen to come from; a host behind
        # NAT, or one that lies in identify, differs from what it advertises.
        self.source_addr = self.addr
        self.network = network
        self.peerstore = FakePeerstore(network)
        self.on_identified: list = []  # as transport.host.Host; the fake has no identify
        self.handlers: dict[str, object] = {}
        self.online = True
        self.reset_streams = 0
        self._connected: set[PeerId] = set()
        network.hosts[self.peer_id] = self

    def set_stream_handler(self, protocol: str, handler, early_data: bool = False, *, replay_safe: bool = True) -> None:
        self.handlers[protocol] = handler

    def remove_stream_handler(self, protocol: str) -> None:
        self.handlers.pop(protocol, None)

    def listen_addrs(self) -> list[str]:
        return [self.addr]

    def connected_peers(self) -> list[PeerId]:
        return [p for p in self._connected if self.network.hosts[p].online]

    def connections_to(self, peer_id: PeerId) -> list[FakeConnection]:
        remote = self.network.hosts.get(peer_id)
        if peer_id not in self._connected or remote is None or not remote.online:
            return []
        return [FakeConnection(remote.source_addr)]

    def connect_from(self, remote: "FakeHost") -> None:
        """``remote`` opens a connection to us (as before identify runs)."""
        self._connected.add(remote.peer_id)
        remote._connected.add(self.peer_id)

    async def new_stream(self, peer_id: PeerId, protocols: list[str], *, replay_safe: bool | None = None) -> FakeStream:
        await trio.sleep(DIAL_LATENCY)
        remote = self.network.hosts.get(peer_id)
        if remote is None or not remote.online or not self.peerstore.addrs(peer_id):
            raise TransportError(f"cannot dial {peer_id.short()}")
        protocol = next((p for p in protocols if p in remote.handlers), None)
        if protocol is None:
            raise TransportError("protocol not supported")
        ours, theirs = trio.testing.memory_stream_pair()
        self._connected.add(peer_id)
        remote._connected.add(self.peer_id)
        inbound = FakeStream(theirs, self.peer_id, self.source_addr, protocol)
        self.network.nursery.start_soon(remote._serve, inbound, protocol)
        stream = FakeStream(ours, peer_id, remote.source_addr, protocol)
        # Every stream the caller lets go early does (the server half is served as after a handshake).
        stream.early = bool(replay_safe)
        stream.handshake_confirmed = not stream.early
        return stream

    async def _serve(self, stream: FakeStream, protocol: str) -> None:
        try:
            await self.handlers[protocol](stream)
        except TransportError:
            pass
        finally:
            self.reset_streams += stream.was_reset
            await stream.aclose()


class FakeNetwork:
    def __init__(self, nursery: trio.Nursery):
        self.nursery = nursery
        self.hosts: dict[PeerId, FakeHost] = {}
        # Protocols stay unknown, as when requests arrive before identify finishes.
        self.identify_never_finishes = False

    def add_host(self, index: int) -> FakeHost:
        return FakeHost(self, b"host-%d" % index, f"20.0.{index // 250}.{index % 250 + 1}")
