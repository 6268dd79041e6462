"""The host's live connections: creation, per-peer index, limits, closing.

Dialling (``dialing.py``) and accepting (``accepting.py``) both create their
connection drivers here and report each finished handshake, which starts
the connection's keep-alive and datagram-size probes and tells the host's
listeners.
"""

from __future__ import annotations

from typing import Callable

import trio

from . import metrics
from .config import HostConfig
from .connection import QuicConnectionDriver, QuicStream
from .errors import ResourceLimitError
from .identity import PeerId
from .mtu import PROBE_DELAY, REPROBE_AFTER_BLACK_HOLE, probe_datagram_size
from .multiaddrs import sockaddr_to_multiaddr

# A connection of a peer that connects again and does not answer a PING this
# soon is taken for one its crashed process left, and closed.
UNRESPONSIVE_PEER_TIMEOUT = 1.0


class ConnectionTable:
    def __init__(
        self,
        config: HostConfig,
        spawn: Callable[..., None],
        on_new_stream: Callable[[QuicStream], None],
        after_established: Callable[[], object],
    ) -> None:
        self._config = config
        self._spawn = spawn
        self._on_new_stream = on_new_stream
        self._after_established = after_established
        self._by_peer: dict[PeerId, list[QuicConnectionDriver]] = {}
        self._all: set[QuicConnectionDriver] = set()
        # Called with each new connection once its handshake is done.
        self.on_connection: list[Callable[[QuicConnectionDriver], None]] = []
        # Called with (peer, reason) when we close an authenticated peer's
        # connection for a QUIC protocol violation of its own.
        self.on_misbehaviour: list[Callable[[PeerId, str], None]] = []

    def __len__(self) -> int:
        return len(self._all)

    def all(self) -> set[QuicConnectionDriver]:
        return self._all

    def connected_peers(self) -> list[PeerId]:
        return [peer for peer, drivers in self._by_peer.items() if drivers]

    def connections_to(self, peer_id: PeerId) -> list[QuicConnectionDriver]:
        """The peer's live connections, oldest first."""
        # A connection either side has closed may take a few probe timeouts
        # to report it: it must neither be reused nor count against limits.
        return [driver for driver in self._by_peer.get(peer_id, []) if not (driver.closed or driver.quic.is_ending)]

    def newest_to(self, peer_id: PeerId) -> QuicConnectionDriver | None:
        """The connection to use for new streams: the newest live one. A peer that restarted after a crash
        comes back on a new connection while its old one, silent, lingers until the idle timeout."""
        live = self.connections_to(peer_id)
        return live[-1] if live else None

    async def close_unresponsive(self, peer_id: PeerId, timeout: float = UNRESPONSIVE_PEER_TIMEOUT,
                                 spare: QuicConnectionDriver | None = None) -> None:
        """Close those of ``peer_id``'s connections (but ``spare``) that answer no PING within ``timeout`` s."""

        async def check(driver: QuicConnectionDriver) -> None:
            if not await driver.answers_ping(timeout):
                driver.close("unresponsive")

        async with trio.open_nursery() as nursery:
            for driver in self.connections_to(peer_id):
                if driver is not spare:
                    nursery.start_soon(check, driver)

    def is_full(self) -> bool:
        return len(self._all) >= self._config.max_connections

    def check_limit(self) -> None:
        if self.is_full():
            raise ResourceLimitError(f"connection limit of {self._config.max_connections} reached")

    def new_driver(self, endpoint, quic, remote_addr, *, is_client: bool) -> QuicConnectionDriver:
        driver = QuicConnectionDriver(
            endpoint,
            quic,
            remote_addr,
            is_client=is_client,
            on_new_stream=self._on_new_stream,
            on_closed=self._on_closed,
            max_streams=self._config.max_streams_per_connection,
        )
        driver.remote_multiaddr = sockaddr_to_multiaddr(remote_addr)
        endpoint.register_cid(quic.host_cid, driver)
        self._all.add(driver)
        self._spawn(driver.run_timers)
        return driver

    def established(self, driver: QuicConnectionDriver, direction: str, started: float) -> None:
        peer_id = driver.remote_peer_id
        if self.connections_to(peer_id):
            # Connected again while we hold a connection: the peer may have
            # restarted, leaving that one dead; find out now, not at its idle timeout.
            self._spawn(self.close_unresponsive, peer_id, UNRESPONSIVE_PEER_TIMEOUT, driver)
        self._by_peer.setdefault(peer_id, []).append(driver)
        driver.user_data["direction"] = direction
        metrics.CONNECTIONS_OPEN.labels(direction).inc()
        metrics.CONNECTIONS_TOTAL.labels(direction, "established").inc()
        metrics.HANDSHAKE_SECONDS.labels(direction, str(driver.resumed).lower()).observe(
            trio.current_time() - started
        )
        self._spawn(driver.run_keepalive, self._config.idle_timeout, self._config.idle_connection_timeout)
        if self._config.probe_datagram_size:
            self._spawn(probe_datagram_size, driver)
            driver.on_path_changed.append(lambda moved: self._probe_again(moved, PROBE_DELAY))
            driver.on_datagram_size_reduced.append(lambda reduced: self._probe_again(reduced, REPROBE_AFTER_BLACK_HOLE))
        else:
            driver.probing_done.set()
        for callback in self.on_connection:
            callback(driver)
        self._after_established()

    def _probe_again(self, driver: QuicConnectionDriver, delay: float) -> None:
        if driver.probing_done.is_set():  # one probe run at a time
            driver.probing_done = trio.Event()
            self._spawn(probe_datagram_size, driver, delay)

    def _on_closed(self, driver: QuicConnectionDriver) -> None:
        self._all.discard(driver)
        driver.endpoint.unregister_connection(driver)
        peer_id = driver.remote_peer_id
        violation = driver.quic.peer_violation
        if violation is not None and peer_id is not None and driver.handshake_complete.is_set():
            metrics.PEER_VIOLATIONS.labels("quic").inc()
            for listener in self.on_misbehaviour:
                listener(peer_id, violation)
        drivers = self._by_peer.get(peer_id)
        if drivers and driver in drivers:
            drivers.remove(driver)
            metrics.CONNECTIONS_OPEN.labels(driver.user_data.get("direction", "inbound")).dec()
            if not drivers:
                del self._by_peer[peer_id]

    async def close_all(self, reason: str) -> None:
        async with trio.open_nursery() as nursery:
            for driver in list(self._all):
                nursery.start_soon(driver.aclose, reason)
