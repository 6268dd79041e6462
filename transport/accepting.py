"""Inbound connections: admission, the server's handshake, per-peer limits."""

from __future__ import annotations

import logging
from typing import Callable

import trio
from aioquic.quic.configuration import QuicConfiguration

from . import metrics
from .config import HostConfig
from .connection import QuicConnectionDriver
from .connection_table import ConnectionTable
from .endpoint import QuicEndpoint
from .quic_hooks import Libp2pQuicConnection, refusal_datagram
from .tickets import ServerTickets

log = logging.getLogger("hypermesh.transport")

# Reasons sent with CONNECTION_REFUSED; the client reports "peer refused: <reason>".
REFUSED_CONNECTION_LIMIT = "connection limit"
REFUSED_PEER_LIMIT = "connection limit per peer"
REFUSED_SHUTTING_DOWN = "shutting down"


class Acceptor:
    """The endpoints' callback for an Initial from an unknown connection."""

    def __init__(
        self,
        config: HostConfig,
        server_config: QuicConfiguration,
        table: ConnectionTable,
        spawn: Callable[..., None],
    ) -> None:
        self._config = config
        # The server's QUIC configuration (certificate, ALPN, idle timeout).
        self.configuration = server_config
        self._table = table
        self._spawn = spawn
        self._tickets = ServerTickets()
        self.closing = False

    def accept(self, endpoint: QuicEndpoint, data: bytes, addr: tuple, cid: bytes, version: int):
        if self.closing or self._table.is_full():
            # Refused at once and statelessly, so the client need not wait
            # out its handshake timeout.
            metrics.CONNECTIONS_TOTAL.labels("inbound", "refused").inc()
            refusal = refusal_datagram(data, REFUSED_SHUTTING_DOWN if self.closing else REFUSED_CONNECTION_LIMIT)
            if refusal is not None:
                endpoint.send_datagram(refusal, addr)
            return None
        quic = Libp2pQuicConnection(
            configuration=self.configuration,
            original_destination_connection_id=cid,
            server_ticket_lookup=self._tickets.lookup if self._config.enable_resumption else None,
            session_ticket_handler=lambda ticket: self._tickets.store(ticket, quic.remote_peer_id),
        )
        driver = self._table.new_driver(endpoint, quic, addr, is_client=False)
        endpoint.register_cid(cid, driver)
        self._spawn(self._await_handshake, driver, trio.current_time())
        return driver

    async def _await_handshake(self, driver: QuicConnectionDriver, started: float) -> None:
        if not await driver.wait_for_handshake(self._config.handshake_timeout):
            log.debug("inbound handshake from %s failed: %s", driver.remote_multiaddr, driver.handshake_error)
            driver.close("handshake failed")
            metrics.CONNECTIONS_TOTAL.labels("inbound", "failed").inc()
            return
        peer_id = driver.remote_peer_id
        if len(self._table.connections_to(peer_id)) >= self._config.max_connections_per_peer:
            driver.refuse(REFUSED_PEER_LIMIT)
            metrics.CONNECTIONS_TOTAL.labels("inbound", "refused").inc()
            return
        self._table.established(driver, "inbound", started)
