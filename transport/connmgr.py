"""Keeping the number of open connections within bounds.

Every connection costs memory (about 110 KB with aioquic) and keepalive
traffic, and a DHT node meets new peers all the time. As in go-libp2p's
connection manager, once a host holds more than ``high_water`` connections
it closes some until ``low_water`` remain: the least recently used first,
never one that carries a stream, one younger than ``grace_period`` (it was
opened to be used) or one to a peer that a protocol has protected.

Sans-IO: the host describes its connections and closes what
:meth:`ConnectionManager.select_for_trim` returns.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from .identity import PeerId


@dataclass(frozen=True, slots=True)
class ConnectionManagerConfig:
    # go-libp2p's defaults are 160/192 for a desktop; a DHT server that
    # routes work for others keeps more (each costs ~110 KB here).
    low_water: int = 800
    high_water: int = 1000
    grace_period: float = 30.0
    # Trims come at most this often: each sorts every connection.
    silence_period: float = 10.0

    def __post_init__(self) -> None:
        if not 0 <= self.low_water <= self.high_water:
            raise ValueError("connection manager needs 0 <= low_water <= high_water")


@dataclass(frozen=True, slots=True)
class ConnectionState:
    """What the manager needs to know about one connection."""

    handle: Hashable  # given back by select_for_trim
    peer: PeerId | None
    opened_at: float
    open_streams: int
    last_stream_activity: float


class ConnectionManager:
    def __init__(self, config: ConnectionManagerConfig = ConnectionManagerConfig()):
        self.config = config
        self._protected: dict[PeerId, set[str]] = {}
        self._last_trim = float("-inf")

    def protect(self, peer: PeerId, tag: str) -> None:
        """Never trim connections to ``peer`` while any protection tag remains."""
        self._protected.setdefault(peer, set()).add(tag)

    def unprotect(self, peer: PeerId, tag: str) -> bool:
        """Drop one tag; returns whether the peer is still protected by others."""
        tags = self._protected.get(peer)
        if tags is None:
            return False
        tags.discard(tag)
        if not tags:
            del self._protected[peer]
        return bool(tags)

    def is_protected(self, peer: PeerId | None) -> bool:
        return peer in self._protected

    def wants_trim(self, connection_count: int, now: float) -> bool:
        return connection_count > self.config.high_water and now - self._last_trim >= self.config.silence_period

    def select_for_trim(self, connections: list[ConnectionState], now: float) -> list[Hashable]:
        """Handles of the connections to close to get down to ``low_water``."""
        self._last_trim = now
        excess = len(connections) - self.config.low_water
        if excess <= 0:
            return []
        candidates = [
            c
            for c in connections
            if c.open_streams == 0 and now - c.opened_at >= self.config.grace_period and not self.is_protected(c.peer)
        ]
        candidates.sort(key=lambda c: c.last_stream_activity)
        return [c.handle for c in candidates[:excess]]
