"""Inbound connections: admission, address validation, the server's handshake, per-peer limits.

An Initial from an unknown connection is refused statelessly when the node
is full; answered with a Retry (``retry.py`` tokens) when too many
handshakes are half open, so spoofed Initials cannot hold state; otherwise
it opens a connection.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

import trio
from aioquic.quic.configuration import QuicConfiguration

from . import metrics
from .config import HostConfig
from .connection import QuicConnectionDriver
from .connection_table import ConnectionTable
from .endpoint import QuicEndpoint
from .identity import PeerId
from .quic_hooks import (
    HOST_CID_LENGTH,
    Libp2pQuicConnection,
    invalid_token_datagram,
    parse_initial,
    refusal_datagram,
    retry_datagram,
)
from .retry import NOT_OURS, RetryTokens
from .tickets import ServerTickets

log = logging.getLogger("hypermesh.transport")

# Reasons sent with CONNECTION_REFUSED; the client reports "peer refused: <reason>".
REFUSED_CONNECTION_LIMIT = "connection limit"
REFUSED_PEER_LIMIT = "connection limit per peer"
REFUSED_SHUTTING_DOWN = "shutting down"
# An Initial to the ephemeral socket of a dial-only host (a CLI command, a
# client): it dials out and serves nobody, so whoever reached that port (a
# server's reachability probe of an observed address) learns it at once.
REFUSED_NOT_LISTENING = "not accepting connections (dial-only)"
# Sent to a peer the node's peer filter refuses (the trust layer's shun list).
REFUSED_BY_POLICY = "refused by policy"
# Half-open inbound handshakes beyond which new Initials get a Retry (as
# quic-go and quinn do), unless HostConfig.retry_threshold says otherwise.
DEFAULT_RETRY_THRESHOLD = 64


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
        self._retry_tokens = RetryTokens()
        self._retry_threshold = config.retry_threshold
        if self._retry_threshold is None:
            self._retry_threshold = min(DEFAULT_RETRY_THRESHOLD, max(1, config.max_connections // 4))
        self._half_open = 0
        self.closing = False
        # Host.set_peer_filter: a reason to refuse a peer, or None to accept it.
        self.peer_filter: Callable[[PeerId], str | None] | None = None

    @property
    def half_open(self) -> int:
        """Inbound handshakes in progress."""
        return self._half_open

    def accept(self, endpoint: QuicEndpoint, data: bytes, addr: tuple, cid: bytes, version: int):
        if self.closing or not endpoint.listening or self._table.is_full():
            # Refused at once and statelessly, so the client need not wait
            # out its handshake timeout.
            metrics.CONNECTIONS_TOTAL.labels("inbound", "refused").inc()
            reason = (REFUSED_SHUTTING_DOWN if self.closing else REFUSED_NOT_LISTENING if not endpoint.listening
                      else REFUSED_CONNECTION_LIMIT)
            refusal = refusal_datagram(data, reason)
            if refusal is not None:
                endpoint.send_datagram(refusal, addr)
            return None
        header = parse_initial(data)
        if header is None:
            metrics.DATAGRAMS_DROPPED.labels("bad_initial").inc()
            return None
        original_cid, retry_cid = cid, None
        token = self._retry_tokens.check(header.token, addr, cid, trio.current_time()) if header.token else NOT_OURS
        if token.valid:
            original_cid, retry_cid = token.original_cid, cid
        elif token.ours:
            # A Retry token of ours, but expired or from another address.
            metrics.DATAGRAMS_DROPPED.labels("invalid_token").inc()
            endpoint.send_datagram(invalid_token_datagram(header), addr)
            return None
        elif self._half_open >= self._retry_threshold:
            # A token from elsewhere (another server's NEW_TOKEN) is ignored.
            # Too many handshakes half open (perhaps spoofed Initials): make
            # this client prove its address before it gets any state.
            metrics.CONNECTIONS_TOTAL.labels("inbound", "retry").inc()
            new_cid = os.urandom(HOST_CID_LENGTH)
            token = self._retry_tokens.issue(addr, cid, new_cid, trio.current_time())
            endpoint.send_datagram(retry_datagram(header, new_cid, token), addr)
            return None
        quic = Libp2pQuicConnection(
            configuration=self.configuration,
            original_destination_connection_id=original_cid,
            retry_source_connection_id=retry_cid,
            server_ticket_lookup=self._tickets.lookup if self._config.enable_resumption else None,
            session_ticket_handler=lambda ticket: self._tickets.store(ticket, quic.remote_peer_id),
        )
        driver = self._table.new_driver(endpoint, quic, addr, is_client=False)
        endpoint.register_cid(cid, driver)
        self._half_open += 1
        self._spawn(self._await_handshake, driver, trio.current_time())
        return driver

    async def _await_handshake(self, driver: QuicConnectionDriver, started: float) -> None:
        try:
            completed = await driver.wait_for_handshake(self._config.handshake_timeout)
        finally:
            self._half_open -= 1
        if not completed:
            log.debug("inbound handshake from %s failed: %s", driver.remote_multiaddr, driver.handshake_error)
            driver.close("handshake failed")
            metrics.CONNECTIONS_TOTAL.labels("inbound", "failed").inc()
            return
        peer_id = driver.remote_peer_id
        reason = self.peer_filter(peer_id) if self.peer_filter is not None else None
        if reason is not None:
            log.info("refusing %s: %s", peer_id.short(), reason)
            driver.refuse(REFUSED_BY_POLICY)
            metrics.CONNECTIONS_TOTAL.labels("inbound", "refused").inc()
            return
        if len(self._table.connections_to(peer_id)) >= self._config.max_connections_per_peer:
            # A peer killed without a CONNECTION_CLOSE that comes back would
            # otherwise be refused until its old connections' idle timeout.
            await self._table.close_unresponsive(peer_id)
        if driver.closed:
            return
        if len(self._table.connections_to(peer_id)) >= self._config.max_connections_per_peer:
            driver.refuse(REFUSED_PEER_LIMIT)
            metrics.CONNECTIONS_TOTAL.labels("inbound", "refused").inc()
            return
        self._table.established(driver, "inbound", started)
