"""What we know about other peers: addresses (with expiry), protocols, agent."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from .identity import PeerId
from .multiaddrs import MultiaddrError, multiaddr_text

# Bounds what a chatty or hostile peer can make us remember.
MAX_ADDRS_PER_PEER = 32
MAX_PROTOCOLS_PER_PEER = 128
MAX_PEERS = 100_000
PERMANENT = float("inf")


@dataclass
class PeerInfo:
    addrs: dict[str, float] = field(default_factory=dict)  # multiaddr text -> expiry
    protocols: set[str] = field(default_factory=set)
    agent_version: str = ""
    public_key: bytes | None = None


class Peerstore:
    def __init__(self) -> None:
        self._peers: dict[PeerId, PeerInfo] = {}

    def _info(self, peer_id: PeerId) -> PeerInfo:
        info = self._peers.get(peer_id)
        if info is None:
            if len(self._peers) >= MAX_PEERS:
                self._evict_one()
            info = self._peers[peer_id] = PeerInfo()
        return info

    def _evict_one(self) -> None:
        # Drop the peer whose addresses expire soonest: the least useful.
        victim = min(self._peers, key=lambda peer: max(self._peers[peer].addrs.values(), default=0))
        del self._peers[victim]

    def add_addrs(self, peer_id: PeerId, addrs, ttl: float = 3600.0) -> None:
        """Remember addresses (multiaddr text or bytes, without /p2p) for ``ttl`` seconds."""
        info = self._info(peer_id)
        expiry = trio.current_time() + ttl if ttl != PERMANENT else PERMANENT
        for addr in addrs:
            try:
                text = multiaddr_text(addr)
            except MultiaddrError:
                continue
            suffix = f"/p2p/{peer_id}"
            if text.endswith(suffix):
                text = text[: -len(suffix)]
            if text in info.addrs or len(info.addrs) < MAX_ADDRS_PER_PEER:
                info.addrs[text] = max(expiry, info.addrs.get(text, 0))

    def addrs(self, peer_id: PeerId) -> list[str]:
        info = self._peers.get(peer_id)
        if info is None:
            return []
        now = trio.current_time()
        for text in [text for text, expiry in info.addrs.items() if expiry < now]:
            del info.addrs[text]
        return list(info.addrs)

    def set_protocols(self, peer_id: PeerId, protocols) -> None:
        self._info(peer_id).protocols = set(list(protocols)[:MAX_PROTOCOLS_PER_PEER])

    def protocols(self, peer_id: PeerId) -> set[str]:
        info = self._peers.get(peer_id)
        return set(info.protocols) if info else set()

    def set_agent_version(self, peer_id: PeerId, agent: str) -> None:
        self._info(peer_id).agent_version = agent[:256]

    def agent_version(self, peer_id: PeerId) -> str:
        info = self._peers.get(peer_id)
        return info.agent_version if info else ""

    def peers(self) -> list[PeerId]:
        return list(self._peers)
